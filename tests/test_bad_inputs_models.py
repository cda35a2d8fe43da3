"""Bad and unusual inputs of the newer families, as rows of the bad-input table (`test_bad_inputs.BadInput`): the
caches STATM-SAVi and ConvS5 continue from, SAVi's boxes, GrootV's edge inputs and its image processor, loading a
folder whose weights do not fit its config, and `stream()`'s own arguments."""

import json

import numpy as np
import pytest
import torch
from saved_folders import TINY, inputs_for, tiny_config
from test_bad_inputs import CASES, FRAMES, BadInput, cache_of, processor
from test_bad_inputs import model as slotssm
from test_bad_inputs import test_bad_input as run_row  # the catalogue's runner of one row
from transformers import AutoModelForImageClassification, DynamicCache

from slotssm_hf import (
    ConvS5Config,
    ConvS5ForVideoPrediction,
    ConvS5Model,
    GrootVConfig,
    GrootVForImageClassification,
    GrootVModel,
    SAViForVideoReconstruction,
    SAViModel,
    STATMConfig,
    STATMModel,
    stream,
)
from slotssm_hf.conversion.convert_grootv import image_processor

IMAGENET_MEAN, IMAGENET_STD = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])


# Builders.
def build(model_class, case: str, **overrides):
    """A tiny model of `case` (`saved_folders.TINY`) with config `overrides`."""

    def builder(tmp_path):
        torch.manual_seed(0)
        return model_class(model_class.config_class(**{**TINY[case], **overrides})).eval()

    return builder


def saved(model_class, case: str, edit=None):
    """A folder saved from a tiny model of `case`, its config.json changed by `edit(config_dict)`."""

    def builder(tmp_path):
        torch.manual_seed(0)
        model_class(tiny_config(case)).save_pretrained(tmp_path / "model")
        if edit is not None:
            path = tmp_path / "model" / "config.json"
            values = json.loads(path.read_text())
            edit(values)
            path.write_text(json.dumps(values))
        return tmp_path / "model"

    return builder


def setting(**fields):
    return lambda values: values.update(fields)


def removing(field):
    return lambda values: values.pop(field)


# Inputs.
def forward(**kwargs):
    """The model on its family's seeded inputs (`saved_folders.inputs_for`), with `kwargs` on top."""

    def feed(model):
        with torch.no_grad():
            return model(**{**inputs_for(model.config), **kwargs})

    return feed


def statm_cache(**overrides):
    """The cache a STATM model of the tiny config with `overrides` returns after the seeded inputs of its config."""
    config = STATMConfig(**{**TINY["statm"], **overrides})
    other = STATMModel(config).eval()
    inputs = inputs_for(config)
    if config.num_boxes != inputs["boxes"].shape[1]:
        inputs["boxes"] = torch.zeros(2, config.num_boxes, 4)
    with torch.no_grad():
        return other(**inputs, use_cache=True).cache


def convs5_cache(batch=2, **overrides):
    config = ConvS5Config(**{**TINY["convs5"], **overrides})
    other = ConvS5Model(config).eval()
    with torch.no_grad():
        return other(inputs_for(config)["pixel_values_videos"][:batch], use_cache=True).cache


def boxes(*rows):
    """The same boxes for both videos of the seeded inputs."""
    return torch.tensor(rows, dtype=torch.float32).expand(2, -1, -1).contiguous()


def with_pixel(value, image=1):
    def feed(model):
        pixel_values = inputs_for(model.config)["pixel_values"]
        pixel_values[image, 2, 5, 7] = value
        with torch.no_grad():
            return model(pixel_values)

    return feed


def one_pixel_image_is_its_colour(result, processor):
    """A 1 x 1 RGB image resized is its colour everywhere, normalised with ImageNet's mean and std."""
    expected = (np.array([200, 40, 90]) / 255 - IMAGENET_MEAN) / IMAGENET_STD
    pixels = result["pixel_values"]
    assert pixels.shape == (1, 3, 224, 224)
    colour = torch.tensor(expected, dtype=torch.float32)[:, None, None]
    torch.testing.assert_close(pixels[0], colour.expand(3, 224, 224))


def loads_with_the_backbone_weights(result, folder):
    """The head is new; the backbone holds the folder's weights."""
    saved = type(result.base_model).from_pretrained(folder)
    for name, value in saved.state_dict().items():
        assert torch.equal(result.base_model.state_dict()[name], value), name


MODEL_CASES = [
    # STATM-SAVi's cache (a STATMCache of this model for these videos)
    BadInput("statm-cache-empty-dynamic-cache", build(STATMModel, "statm"), forward(cache=DynamicCache()), ValueError,
             r"the cache must come from a previous call of this model .*STATMCache\(config.memory_size\).*got a "
             "DynamicCache"),
    BadInput("statm-cache-from-slotssm", build(STATMModel, "statm"), forward(cache=cache_of(batch=2)), ValueError,
             "the cache must come from a previous call of this model .*got a DynamicCache"),
    BadInput("statm-cache-tuple", build(STATMModel, "statm"), forward(cache=(torch.zeros(2),)), ValueError,
             "the cache must come from a previous call of this model .*got a tuple"),
    BadInput("statm-cache-other-slot-count", build(STATMModel, "statm"), forward(cache=statm_cache(num_slots=5)),
             ValueError, r"the cache must come from .*its memory has shape \(2, 3, 5, 16\); 2 videos need "
             r"\(2, frames, 4, 16\)"),
    # ConvS5's cache (a DynamicCache with one linear-attention layer per ConvS5 layer)
    BadInput("convs5-cache-empty-dynamic-cache", build(ConvS5Model, "convs5"), forward(cache=DynamicCache()),
             ValueError, r"the cache must come from a previous call of this model .*DynamicCache\(config=model.config\)"
             r".*got a DynamicCache with layers \[\], where this model needs 2 linear-attention layers"),
    BadInput("convs5-cache-from-slotssm", build(ConvS5Model, "convs5"), forward(cache=cache_of(batch=2)), ValueError,
             r"the cache must come from .*its layer 0's state \(real and imaginary parts\) has shape "
             r"\(6, 4, 32, 16\); 2 videos need \(2, 2, 8, 8, 8\)"),
    BadInput("convs5-cache-from-statm", build(ConvS5Model, "convs5"), forward(cache=statm_cache()), ValueError,
             "the cache must come from a previous call of this model .*got a STATMCache"),
    BadInput("convs5-cache-other-batch-size", build(ConvS5Model, "convs5"), forward(cache=convs5_cache(batch=1)),
             ValueError, r"its layer 0's state .* has shape \(1, 2, 8, 8, 8\); 2 videos need \(2, 2, 8, 8, 8\)"),
    BadInput("convs5-cache-other-ssm-size", build(ConvS5Model, "convs5"), forward(cache=convs5_cache(ssm_size=32)),
             ValueError, r"its layer 0's state .* has shape \(2, 2, 16, 8, 8\); 2 videos need \(2, 2, 8, 8, 8\)"),
    # SAVi's boxes
    BadInput("savi-boxes-ymin-above-ymax", build(SAViModel, "savi"),
             forward(boxes=boxes([0.1, 0.1, 0.5, 0.6], [0.9, 0.3, 0.4, 0.8], [0, 0, 0, 0])), ValueError,
             r"boxes are \(ymin, xmin, ymax, xmax\) with ymin <= ymax and xmin <= xmax; box 1 of video 0 is "
             r"\[0.9, 0.3, 0.4, 0.8\] \(2 such boxes in all\)"),
    BadInput("savi-boxes-xmin-above-xmax", build(SAViModel, "savi"),
             forward(boxes=boxes([0.1, 0.7, 0.5, 0.6], [0, 0, 0, 0], [0, 0, 0, 0])), ValueError,
             r"ymin <= ymax and xmin <= xmax; box 0 of video 0 is \[0.1, 0.7, 0.5, 0.6\]"),
    BadInput("savi-unconditional-given-boxes", build(SAViModel, "savi", initializer_type="gaussian"), forward(),
             ValueError, "this model starts its slots from its gaussian initialiser and takes no boxes"),
    BadInput("savi-unconditional-given-boxes-of-another-shape",
             build(SAViForVideoReconstruction, "savi", initializer_type="learned"), forward(boxes=torch.rand(2, 7)),
             ValueError, "from its learned initialiser and takes no boxes"),
    BadInput("savi-unconditional-given-pixel-boxes", build(SAViModel, "savi", initializer_type="gaussian"),
             forward(boxes=boxes([3, 3, 10, 12]) * 255), ValueError, "takes no boxes"),
    # GrootV's inputs
    BadInput("grootv-batch-of-zero", build(GrootVModel, "grootv"), lambda m: m(torch.zeros(0, 3, 64, 64)), ValueError,
             r"pixel_values must hold at least one image of at least 1 x 1 pixels, got shape \(0, 3, 64, 64\)"),
    BadInput("grootv-zero-by-zero-image", build(GrootVForImageClassification, "grootv"),
             lambda m: m(torch.zeros(2, 3, 0, 0)), ValueError, r"at least 1 x 1 pixels, got shape \(2, 3, 0, 0\)"),
    BadInput("grootv-nan-pixel", build(GrootVModel, "grootv"), with_pixel(float("nan")), ValueError,
             r"pixel_values hold NaN or infinite values in images \[1\] \(of 2\)"),
    BadInput("grootv-inf-pixel", build(GrootVForImageClassification, "grootv"), with_pixel(float("-inf"), image=0),
             ValueError, r"pixel_values hold NaN or infinite values in images \[0\]"),
    # GrootV's image processor (the one a converted folder holds)
    BadInput("grootv-processor-empty-list", lambda t: image_processor(GrootVConfig()), lambda p: p([]), ValueError,
             "expected at least one image, got none"),
    BadInput("grootv-processor-one-pixel-image", lambda t: image_processor(GrootVConfig()),
             lambda p: p(np.array([[[200, 40, 90]]], dtype=np.uint8), return_tensors="pt"),
             check=one_pixel_image_is_its_colour),
    # Loading a folder whose weights do not fit its config.json
    BadInput("load-convs5-config-with-more-layers-than-the-weights",
             saved(ConvS5ForVideoPrediction, "convs5", setting(num_hidden_layers=3)),
             lambda f: ConvS5ForVideoPrediction.from_pretrained(f), ValueError,
             r"the checkpoint \(.*model\) does not fit ConvS5ForVideoPrediction with this ConvS5Config: missing keys "
             r"\['convs5.layers.2.norm.bias', .*\] and 9 more, unexpected keys \[\]; the backbone and every head"),
    BadInput("load-grootv-depths-changed", saved(GrootVForImageClassification, "grootv", setting(depths=[1, 1, 1, 1])),
             lambda f: AutoModelForImageClassification.from_pretrained(f), ValueError,
             r"does not fit GrootVForImageClassification .*missing keys \[\], unexpected keys "
             r"\['grootv.levels.1.blocks.1.mlp.fc1.bias'"),
    BadInput("load-grootv-depths-removed", saved(GrootVForImageClassification, "grootv", removing("depths")),
             lambda f: GrootVModel.from_pretrained(f), ValueError,
             r"does not fit GrootVModel .*missing keys \['levels.0.blocks.1.mlp.fc1.bias'"),
    BadInput("load-savi-folder-relabelled-grootv",
             saved(SAViForVideoReconstruction, "savi", setting(model_type="grootv")),
             lambda f: AutoModelForImageClassification.from_pretrained(f), ValueError,
             r"does not fit GrootVForImageClassification .*missing keys \['grootv.conv_head.conv.weight', .*\] and 323 "
             "more"),
    # What transformers allows stays allowed (right before too): a new head on a saved backbone, with its report.
    BadInput("load-new-convs5-head-on-a-saved-backbone", saved(ConvS5Model, "convs5"),
             lambda f: ConvS5ForVideoPrediction.from_pretrained(f), check=loads_with_the_backbone_weights),
    BadInput("load-new-grootv-classifier-on-a-saved-backbone", saved(GrootVModel, "grootv"),
             lambda f: GrootVForImageClassification.from_pretrained(f), check=loads_with_the_backbone_weights),
    # stream()'s own arguments
    BadInput("stream-use-cache-passed", slotssm,
             lambda m: next(stream(m, list(FRAMES[:2]), processor(None), use_cache=False)), TypeError,
             r"^stream\(\) sets use_cache itself, to carry the state from chunk to chunk: leave use_cache out of its "
             "arguments$"),
]  # fmt: skip


def test_case_ids_are_unique_across_the_catalogue():
    ids = [case.id for case in [*CASES, *MODEL_CASES]]
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize("case", MODEL_CASES, ids=lambda case: case.id)
def test_bad_input(case, tmp_path):
    run_row(case, tmp_path)
