"""Converting official GrootV `.pth` checkpoints: the official layout's size, the image processor of the official
evaluation, key-by-key conversion (EMA or not) with its card, timm reading the same official state dict, refusals
that name what does not fit, and the command line."""

import math
import os
import sys
import types

import numpy as np
import pytest
import timm
import torch
from grootv_checkpoints import PUBLISHED_PARAMETERS, images, official_shapes, official_state_dict
from PIL import Image
from transformers import AutoImageProcessor, AutoModelForImageClassification

from slotssm_hf import GrootVConfig, GrootVForImageClassification
from slotssm_hf.cli import main as cli
from slotssm_hf.conversion.conversion_utils import ConversionError
from slotssm_hf.conversion.convert_grootv import config_from_state_dict, convert_checkpoint, image_processor
from slotssm_hf.hub.model_card import render_model_card


def test_official_layout_has_the_same_parameter_count():
    shapes = official_shapes(80, [2, 2, 9, 2], 1000)
    count = sum(math.prod(s) for k, s in shapes.items() if "running" not in k)
    assert count == PUBLISHED_PARAMETERS["tiny"]


def test_image_processor_is_the_official_evaluation_pipeline(tmp_path):
    processor = image_processor(GrootVConfig())
    processor.save_pretrained(tmp_path)
    loaded = AutoImageProcessor.from_pretrained(tmp_path)
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (300, 400, 3), dtype=np.uint8))
    pixels = loaded(images=image, return_tensors="pt")["pixel_values"]
    assert pixels.shape == (1, 3, 224, 224)
    # The reference: PIL's bicubic resize of the short side to 256, centre crop 224, ImageNet mean / std.
    resized = np.asarray(image.resize((341, 256), Image.BICUBIC), dtype=np.float32)[16:240, 58:282] / 255
    expected = (resized - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
    torch.testing.assert_close(pixels[0], torch.from_numpy(expected.transpose(2, 0, 1)).float(), atol=0.05, rtol=0)


def test_timm_reads_an_official_state_dict_as_the_converter_does(official_pth, tmp_path):
    source, official = official_pth()
    converted = GrootVForImageClassification.from_pretrained(
        convert_checkpoint(source, tmp_path / "out", log=lambda *_: None)
    ).eval()
    torch.save({"model": official}, tmp_path / "official.pth")
    overlay = {"file": str(tmp_path / "official.pth")}
    backbone = timm.create_model(
        "grootv_tiny", pretrained=True, pretrained_cfg_overlay=overlay, embed_dim=16, depths=(1, 2, 1, 1)
    ).eval()
    x = images()
    with torch.no_grad():
        assert torch.equal(backbone(x), converted(x).logits)


class CfgNode(dict):
    """A stand-in for yacs' CfgNode, pickled under yacs' name: a dict subclass with bookkeeping attributes."""


@pytest.fixture
def official_pth(tmp_path, monkeypatch):
    """An official-layout GrootV checkpoint: model, model_ema, optimizer state, epoch and a yacs config."""

    def write(name="ckpt.pth", state=None, **extra):
        yacs = types.ModuleType("yacs")
        yacs.config = types.ModuleType("yacs.config")
        yacs.config.CfgNode = CfgNode
        with monkeypatch.context() as patch:  # pickle records the class as yacs.config.CfgNode
            patch.setattr(CfgNode, "__module__", "yacs.config")
            patch.setitem(sys.modules, "yacs", yacs)
            patch.setitem(sys.modules, "yacs.config", yacs.config)
            config = CfgNode(MODEL=CfgNode(TYPE="grootv", DROP_PATH_RATE=0.1))
            config.__dict__.update({"__immutable__": True, "__deprecated_keys__": set(), "__new_allowed__": False})
            model = official_state_dict(16, [1, 2, 1, 1], 1000) if state is None else state
            checkpoint = {
                "model": model, "model_ema": {k: v + 1 if v.is_floating_point() else v for k, v in model.items()},
                "optimizer": {"state": {}, "param_groups": [{"lr": 1e-3, "params": [0, 1]}]}, "epoch": 299,
                "max_accuracy": 83.4, "config": config, **extra,
            }  # fmt: skip
            torch.save(checkpoint, tmp_path / name)
        return tmp_path / name, model

    return write


@pytest.mark.parametrize("ema", [False, True])
def test_official_checkpoint_converts_key_by_key(official_pth, tmp_path, ema):
    source, official = official_pth()
    output = convert_checkpoint(source, tmp_path / "out", ema=ema, log=lambda *_: None)
    model = AutoModelForImageClassification.from_pretrained(output)
    config = model.config
    assert (config.embed_dim, config.depths, config.num_labels) == (16, [1, 2, 1, 1], 1000)
    assert config.id2label[0] == "tench, Tinca tinca"  # ImageNet-1k class names
    state, shift = model.state_dict(), 1 if ema else 0
    pairs = {
        "patch_embed.norm1.1.weight": "grootv.stem.norm1.weight",
        "levels.1.blocks.1.TreeSSM.A_logs": "grootv.levels.1.blocks.1.tree_ssm.A_logs",
        "levels.2.downsample.norm.1.bias": "grootv.levels.2.downsample.norm.bias",
        "conv_head.1.0.running_var": "grootv.conv_head.norm.running_var",
        "head.weight": "classifier.weight",
    }
    for theirs, ours in pairs.items():
        assert torch.equal(state[ours], official[theirs] + shift), theirs
    assert sorted(os.listdir(output)) == [
        "README.md", "config.json", "configuration_grootv.py", "image_processing_grootv.py", "model.safetensors",
        "modeling_grootv.py", "preprocessor_config.json", "pretrained.py", "tree_scan.py", "video_decoding.py",
    ]  # fmt: skip
    card = (output / "README.md").read_text()
    assert "pipeline_tag: image-classification" in card and "reimplementation" in card


def test_published_size_is_recognised_and_carded():
    state = {k: torch.empty(s) for k, s in official_shapes(80, [2, 2, 9, 2], 1000).items()}
    config = config_from_state_dict(state, "grootv_t.pth")
    assert (config.embed_dim, config.depths, config.mlp_ratio, config.drop_path_rate) == (80, [2, 2, 9, 2], 4.0, 0.1)
    with torch.device("meta"):
        model = GrootVForImageClassification(config)
    card = str(render_model_card(model, "org/grootv-tiny", "Converted from grootv_t.pth (EMA weights)."))
    assert "GrootV-T" in card and "83.4%" in card and "29,958,600" in card and "EMA weights" in card
    assert "license: other" in card and "pipeline_tag: image-classification" in card


@pytest.mark.parametrize(
    "change,message",
    [
        (lambda s: s.update({"levels.0.blocks.0.TreeSSM.extra": torch.zeros(1)}), "levels.0.blocks.0.TreeSSM.extra"),
        (lambda s: s.pop("levels.1.blocks.0.TreeSSM.Ds"), r"missing: \['grootv.levels.1.blocks.0.tree_ssm.Ds'\]"),
        (lambda s: s.update({"head.bias": torch.zeros(7)}), r"classifier.bias: \(7,\) instead of \(1000,\)"),
        (lambda s: s.pop("patch_embed.conv2.weight"), "official GrootV layout has patch_embed.conv2.weight"),
    ],
)
def test_a_checkpoint_that_does_not_fit_is_refused_by_name_and_leaves_nothing(official_pth, tmp_path, change, message):
    state = official_state_dict(16, [1, 2, 1, 1], 1000)
    change(state)
    source, _ = official_pth(state=state)
    with pytest.raises(ConversionError, match=message):
        convert_checkpoint(source, tmp_path / "out", log=lambda *_: None)
    assert sorted(os.listdir(tmp_path)) == ["ckpt.pth"]


def test_a_pickle_that_would_run_code_is_refused(official_pth, tmp_path):
    source, _ = official_pth(hook=types.SimpleNamespace(command="echo"))
    with pytest.raises(ConversionError, match="refused"):
        convert_checkpoint(source, tmp_path / "out", log=lambda *_: None)
    with pytest.raises(ConversionError, match="has no model_ema"):
        torch.save({"model": official_state_dict(16, [1, 2, 1, 1], 10)}, tmp_path / "plain.pth")
        convert_checkpoint(tmp_path / "plain.pth", tmp_path / "out", ema=True, log=lambda *_: None)


def test_command_line_converts_and_keeps_an_existing_output(official_pth, tmp_path, capsys):
    source, _ = official_pth()
    assert cli(["convert-grootv", str(source), str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "model.safetensors").is_file()
    before = (tmp_path / "out" / "model.safetensors").stat().st_mtime_ns
    assert cli(["convert-grootv", str(source), str(tmp_path / "out")]) == 2
    assert "already exists" in capsys.readouterr().err
    assert (tmp_path / "out" / "model.safetensors").stat().st_mtime_ns == before
    assert cli(["convert-grootv", str(source), str(tmp_path / "out"), "--ema", "--overwrite"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.pth", "out"]


def official_yaml(path, **changes):
    """The run's YAML as the official configs are written (config/grootv_t_1k_224.yaml), for the tiny test model, with
    `changes` ({"DATA": {"IMG_SIZE": 64}}) merged into its sections."""
    import yaml

    values = {"DATA": {"IMG_ON_MEMORY": False}, "MODEL": {"TYPE": "grootv", "DROP_PATH_RATE": 0.1, "GROOTV": {
        "DEPTHS": [1, 2, 1, 1], "GROUPS": [4, 8, 16, 32], "CHANNELS": 16, "OFFSET_SCALE": 1.0, "MLP_RATIO": 4.0}},
        "TRAIN": {"EMA": {"ENABLE": True, "DECAY": 0.9999}}}  # fmt: skip
    for section, fields in changes.items():
        target = values.setdefault(section, {})
        for name, value in fields.items():
            if isinstance(value, dict):
                target.setdefault(name, {}).update(value)
            else:
                target[name] = value
    path.write_text(yaml.safe_dump(values))
    return path


# Settings the weights cannot show, each set in turn: (YAML changes, what the converted folder holds).
RUN_FIELDS = {
    "DATA.IMG_SIZE": ({"DATA": {"IMG_SIZE": 64}}, lambda c, p: (c.image_size, p.size["shortest_edge"]) == (64, 64)),
    "MODEL.DROP_PATH_RATE": ({"MODEL": {"DROP_PATH_RATE": 0.25}}, lambda c, p: c.drop_path_rate == 0.25),
    "TEST.CROP": ({"TEST": {"CROP": False}}, lambda c, p: p.size == {"height": 224, "width": 224}),
    "DATA.INTERPOLATION": ({"DATA": {"INTERPOLATION": "bilinear"}}, lambda c, p: p.resample == 2),
    "AUG.MEAN": ({"AUG": {"MEAN": [0.5, 0.5, 0.5], "STD": [0.25, 0.25, 0.25]}},
                 lambda c, p: (list(p.image_mean), list(p.image_std)) == ([0.5] * 3, [0.25] * 3)),
}  # fmt: skip


@pytest.mark.parametrize("field", RUN_FIELDS)
def test_a_run_configuration_the_weights_cannot_show_converts_exactly(official_pth, tmp_path, field):
    from slotssm_hf.conversion.references.grootv import GrootVReference

    changes, holds = RUN_FIELDS[field]
    source, official = official_pth()
    config = official_yaml(tmp_path / "grootv_t_1k_224.yaml", **changes)
    assert cli(["convert-grootv", str(source), str(tmp_path / "out"), "--config", str(config), "--verify"]) == 0
    model = AutoModelForImageClassification.from_pretrained(tmp_path / "out").eval()
    assert holds(model.config, AutoImageProcessor.from_pretrained(tmp_path / "out"))
    x = images(batch=1)
    with torch.no_grad():
        torch.testing.assert_close(model(x).logits.double(), GrootVReference(official)(x), rtol=0, atol=1e-4)
    assert "read from the run's configuration (`grootv_t_1k_224.yaml` over the official defaults)" in (
        tmp_path / "out" / "README.md").read_text()  # fmt: skip


def test_the_configuration_saved_in_the_checkpoint_is_used_and_what_it_lacks_is_guessed(official_pth, tmp_path):
    source, _ = official_pth()  # its config records MODEL.TYPE and MODEL.DROP_PATH_RATE only
    lines = []
    convert_checkpoint(source, tmp_path / "out", log=lines.append)
    assert "configuration: the `config` saved in `ckpt.pth`" in lines
    warning = next(line for line in lines if line.startswith("warning: the run's configuration does not record"))
    assert "DATA.IMG_SIZE=224" in warning and "MODEL.DROP_PATH_RATE" not in warning
    card = (tmp_path / "out" / "README.md").read_text()
    assert "it does not record `DATA.IMG_SIZE` = 224" in card and "License of the weights: unclear" in card


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"MODEL": {"GROOTV": {"CHANNELS": 32}}}, "MODEL.GROOTV.CHANNELS is 32 in the run's configuration, but "
                                                  "ckpt.pth's weights have 16"),
        ({"MODEL": {"GROOTV": {"DEPTHS": [2, 2, 9, 2]}}}, r"MODEL.GROOTV.DEPTHS is \[2, 2, 9, 2\]"),
        ({"MODEL": {"NUM_CLASSES": 10}}, "MODEL.NUM_CLASSES is 10"),
        ({"MODEL": {"GROOTV": {"POST_NORM": True}}}, "MODEL.GROOTV.POST_NORM: True cannot be converted"),
        ({"MODEL": {"GROOTV": {"LAYER_SCALE": 1e-6}}}, "MODEL.GROOTV.LAYER_SCALE: 1e-06 cannot be converted"),
        ({"MODEL": {"DROP_PATH_TYPE": "uniform"}}, "MODEL.DROP_PATH_TYPE: 'uniform' cannot be converted"),
    ],
)  # fmt: skip
def test_a_configuration_that_disagrees_with_the_weights_or_cannot_be_converted_is_refused(official_pth, tmp_path,
                                                                                           capsys, changes, message):
    import re

    source, _ = official_pth()
    config = official_yaml(tmp_path / "run.yaml", **changes)
    assert cli(["convert-grootv", str(source), str(tmp_path / "out"), "--config", str(config)]) == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith("error: ") and re.search(message, line), line
    assert not (tmp_path / "out").exists()


def test_verification_catches_a_conversion_mistake(official_pth, tmp_path, monkeypatch):
    from slotssm_hf.conversion import convert_grootv

    source, _ = official_pth()
    rename = convert_grootv.rename_keys

    def swapped(*arguments):  # a block's two norms exchanged: it loads, and computes something else
        state = rename(*arguments)
        prefix = "grootv.levels.0.blocks.0."
        state[prefix + "norm1.weight"], state[prefix + "norm2.weight"] = (
            state[prefix + "norm2.weight"], state[prefix + "norm1.weight"])  # fmt: skip
        return state

    monkeypatch.setattr(convert_grootv, "rename_keys", swapped)
    with pytest.raises(ConversionError, match="verification failed"):
        convert_checkpoint(source, tmp_path / "out", verify=True, log=lambda *_: None)
    assert not (tmp_path / "out").exists()
