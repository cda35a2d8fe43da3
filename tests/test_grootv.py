"""GrootV: published parameter counts, the TreeSSM against a float64 restatement of the official computation, the
transformers classes (Auto, save/load, remote code, pipeline), the timm models (same weights, features,
SlotSSM's frame encoder) and the converter of official `.pth` checkpoints."""

import functools
import math
import os
import sys
import types

import numpy as np
import pytest
import scipy.sparse
import scipy.sparse.csgraph
import timm
import torch
import torch.nn.functional as F
from huggingface_hub.errors import StrictDataclassError
from PIL import Image
from test_tree_scan import path_product_oracle
from transformers import AutoConfig, AutoImageProcessor, AutoModel, AutoModelForImageClassification, pipeline

from slotssm_hf import (
    FAMILIES,
    GrootVConfig,
    GrootVForImageClassification,
    GrootVModel,
    SlotSSMConfig,
    SlotSSMForVideoReconstruction,
)
from slotssm_hf.cli import main as cli
from slotssm_hf.conversion.convert_grootv import config_from_state_dict, convert_checkpoint, image_processor
from slotssm_hf.conversion.conversion_utils import ConversionError
from slotssm_hf.hub.model_card import render_model_card
from slotssm_hf.models.modeling_grootv import GrootVTreeSSM, init_grootv_weights
from slotssm_hf.models.tree_scan import grid_edges

TINY = {"embed_dim": 16, "depths": [1, 2, 1, 1], "num_labels": 5}
# GrootV-T/S/B as built here; the paper and README give 30M / 51M / 91M.
PUBLISHED_PARAMETERS = {"tiny": 29_958_600, "small": 51_331_624, "base": 90_597_096}


def images(batch=2, size=64, seed=0):
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


def perturbed(model):
    """`model` with every parameter and BatchNorm statistic moved off its initial value, so no mapping error hides
    behind a constant."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if tensor.is_floating_point():
                # (running variances stay positive)
                noise = torch.rand if "running_var" in name else torch.randn
                tensor.add_(0.1 * noise(tensor.shape, generator=g))
    return model


# Sizes


@pytest.mark.parametrize("variant,published", [("tiny", 30), ("small", 51), ("base", 91)])
def test_variants_have_the_published_parameter_counts(variant, published):
    with torch.device("meta"):
        model = GrootVForImageClassification(FAMILIES["grootv"].config(variant, num_labels=1000))
    count = model.num_parameters()
    assert count == PUBLISHED_PARAMETERS[variant] and round(count / 1e6) == published


def official_shapes(embed_dim: int, depths: list[int], num_classes: int) -> dict:
    """The parameter and buffer shapes of the official GrootV (`models/grootv.py`, `models/tree_scanning.py`) by
    name, written out from the official code's structure (norms wrapped in nn.Sequential with layout permutations,
    TreeSSM with stacked x_proj / dt_projs parameters, d_state 1)."""
    shapes = {
        "patch_embed.conv1.weight": (embed_dim // 2, 3, 3, 3), "patch_embed.conv1.bias": (embed_dim // 2,),
        "patch_embed.norm1.1.weight": (embed_dim // 2,), "patch_embed.norm1.1.bias": (embed_dim // 2,),
        "patch_embed.conv2.weight": (embed_dim, embed_dim // 2, 3, 3), "patch_embed.conv2.bias": (embed_dim,),
        "patch_embed.norm2.1.weight": (embed_dim,), "patch_embed.norm2.1.bias": (embed_dim,),
    }  # fmt: skip
    for i, depth in enumerate(depths):
        d, rank = embed_dim * 2**i, math.ceil(embed_dim * 2**i / 16)
        for j in range(depth):
            p = f"levels.{i}.blocks.{j}."
            shapes.update({
                p + "norm1.0.weight": (d,), p + "norm1.0.bias": (d,),
                p + "TreeSSM.in_proj.weight": (4 * d, d), p + "TreeSSM.conv2d.weight": (2 * d, 1, 3, 3),
                p + "TreeSSM.x_proj_weight": (1, rank + 2, 2 * d), p + "TreeSSM.dt_projs_weight": (1, 2 * d, rank),
                p + "TreeSSM.dt_projs_bias": (1, 2 * d), p + "TreeSSM.A_logs": (2 * d, 1), p + "TreeSSM.Ds": (2 * d,),
                p + "TreeSSM.out_norm.weight": (2 * d,), p + "TreeSSM.out_norm.bias": (2 * d,),
                p + "TreeSSM.h_norm.weight": (2 * d,), p + "TreeSSM.h_norm.bias": (2 * d,),
                p + "TreeSSM.out_proj.weight": (d, 2 * d),
                p + "norm2.0.weight": (d,), p + "norm2.0.bias": (d,),
                p + "mlp.fc1.weight": (4 * d, d), p + "mlp.fc1.bias": (4 * d,),
                p + "mlp.fc2.weight": (d, 4 * d), p + "mlp.fc2.bias": (d,),
            })  # fmt: skip
        shapes[f"levels.{i}.norm.0.weight"] = shapes[f"levels.{i}.norm.0.bias"] = (d,)
        if i < len(depths) - 1:
            shapes[f"levels.{i}.downsample.conv.weight"] = (2 * d, d, 3, 3)
            shapes[f"levels.{i}.downsample.norm.1.weight"] = shapes[f"levels.{i}.downsample.norm.1.bias"] = (2 * d,)
    features = embed_dim * 2 ** (len(depths) - 1)
    head = int(features * 1.5)
    shapes["conv_head.0.weight"] = (head, features, 1, 1)
    for name in ("weight", "bias", "running_mean", "running_var"):
        shapes[f"conv_head.1.0.{name}"] = (head,)
    shapes["head.weight"], shapes["head.bias"] = (num_classes, head), (num_classes,)
    return shapes


def official_state_dict(embed_dim: int, depths: list[int], num_classes: int, seed: int = 0) -> dict:
    """Random weights in the official layout."""
    g = torch.Generator().manual_seed(seed)
    state = {
        k: torch.rand(s, generator=g) if "running_var" in k else 0.1 * torch.randn(s, generator=g)
        for k, s in official_shapes(embed_dim, depths, num_classes).items()
    }
    state["conv_head.1.0.num_batches_tracked"] = torch.tensor(1000)
    return state


def test_official_layout_has_the_same_parameter_count():
    shapes = official_shapes(80, [2, 2, 9, 2], 1000)
    count = sum(math.prod(s) for k, s in shapes.items() if "running" not in k)
    assert count == PUBLISHED_PARAMETERS["tiny"]


# The TreeSSM against the official computation, restated in float64


def official_tree_ssm(module: GrootVTreeSSM, x: torch.Tensor) -> torch.Tensor:
    """The official Tree_SSM forward as its code reads (channel-first einsums, the MST from SciPy on exp(-cos), the
    scan as brute-force path products), in float64."""
    p = {k: v.double() for k, v in module.state_dict().items()}
    x = x.double()
    batch, height, width, _ = x.shape
    xz = x @ p["in_proj.weight"].T
    xs, z = xz.chunk(2, dim=-1)
    xs = F.silu(F.conv2d(xs.permute(0, 3, 1, 2), p["conv2d.weight"], padding=1, groups=xs.shape[-1]))  # b d h w
    inner, length = xs.shape[1], height * width
    flat = xs.reshape(batch, inner, length)
    x_dbl = torch.einsum("bdl,cd->bcl", flat, p["x_proj_weight"][0])
    rank = p["dt_projs_weight"].shape[-1]
    dts, bs, cs = torch.split(x_dbl, [rank, 1, 1], dim=1)
    dts = F.softplus(torch.einsum("brl,dr->bdl", dts, p["dt_projs_weight"][0]) + p["dt_projs_bias"][0][None, :, None])
    weights = torch.exp(dts * -torch.exp(p["A_logs"]))  # b d l
    inputs = dts * bs * flat
    first, second = grid_edges(height, width)
    mask = torch.zeros(batch, len(first), dtype=torch.bool)
    for b in range(batch):
        cost = torch.exp(-F.cosine_similarity(flat[b][:, first], flat[b][:, second], dim=0))
        graph = scipy.sparse.coo_matrix((cost.numpy(), (first.numpy(), second.numpy())), shape=(length, length))
        tree = scipy.sparse.csgraph.minimum_spanning_tree(graph).tocoo()
        chosen = set(zip(tree.row.tolist(), tree.col.tolist()))
        mask[b] = torch.tensor([(a, c) in chosen for a, c in zip(first.tolist(), second.tolist())])
    scanned = path_product_oracle(inputs.transpose(1, 2), weights.transpose(1, 2), mask, height, width)  # b l d
    y = F.layer_norm(scanned, (inner,), p["h_norm.weight"], p["h_norm.bias"]) * cs.transpose(1, 2)
    y = y + p["Ds"] * flat.transpose(1, 2)
    y = F.layer_norm(y, (inner,), p["out_norm.weight"], p["out_norm.bias"]).view(batch, height, width, inner)
    return (y * F.silu(z)) @ p["out_proj.weight"].T


def test_tree_ssm_computes_what_the_official_code_computes():
    module = GrootVTreeSSM(dim=8, expand=2, conv_kernel=3)
    module.apply(functools.partial(init_grootv_weights, initializer_range=0.02))
    perturbed(module)
    x = torch.randn(2, 3, 4, 8)
    torch.testing.assert_close(module(x).double(), official_tree_ssm(module, x), rtol=1e-4, atol=1e-5)


# transformers classes


def test_backbone_outputs_every_level_channels_first():
    config = GrootVConfig(**TINY)
    out = GrootVModel(config).eval()(images(), output_hidden_states=True)
    assert out.last_hidden_state.shape == (2, 128, 2, 2)
    assert out.pooler_output.shape == (2, 192)
    assert [tuple(h.shape) for h in out.hidden_states] == [
        (2, 16, 16, 16), (2, 16, 16, 16), (2, 32, 8, 8), (2, 64, 4, 4), (2, 128, 2, 2)
    ]  # fmt: skip
    assert torch.equal(out.hidden_states[-1], out.last_hidden_state)


def test_classifier_trains_every_weight():
    model = GrootVForImageClassification(GrootVConfig(**TINY)).train()
    # 64 px: the last level's map is 2 x 2; on a single pixel (the root) the edge weights, so A, would be unused.
    out = model(images(size=64), labels=torch.tensor([0, 3]))
    assert out.logits.shape == (2, 5) and out.loss.ndim == 0
    out.loss.backward()
    untouched = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not untouched


def test_activation_checkpointing_gives_the_same_gradients():
    model = perturbed(GrootVForImageClassification(GrootVConfig(**TINY))).train()
    x, labels = images(), torch.tensor([1, 4])
    torch.manual_seed(0)
    plain = torch.autograd.grad(model(x, labels=labels).loss, list(model.parameters()))
    model.activation_checkpointing_enable()
    torch.manual_seed(0)  # the same drop-path draws
    checkpointed = torch.autograd.grad(model(x, labels=labels).loss, list(model.parameters()))
    for ours, expected in zip(checkpointed, plain):
        torch.testing.assert_close(ours, expected)


@pytest.mark.parametrize(
    "overrides,message",
    [
        ({"embed_dim": 15}, "embed_dim must be even"),
        ({"depths": [2, 0, 2, 2]}, "depths must be a non-empty list of positive integers"),
        ({"ssm_conv_kernel": 4}, "ssm_conv_kernel must be odd"),
        ({"drop_path_rate": 1.0}, r"drop_path_rate must be in \[0, 1\)"),
    ],
)
def test_invalid_configuration_names_the_field(overrides, message):
    with pytest.raises(StrictDataclassError, match=message):
        GrootVConfig(**overrides)
    with pytest.raises(ValueError, match="grootv has no variant 'huge'; its variants: \\['base', 'small', 'tiny'\\]"):
        FAMILIES["grootv"].config("huge")


@pytest.mark.parametrize(
    "pixel_values,message",
    [
        (torch.randn(3, 32, 32), r"\(batch, 3, height, width\)"),
        (torch.zeros(1, 3, 32, 32, dtype=torch.uint8), "floating-point"),
        (torch.randn(1, 1, 32, 32), "3 channels"),
    ],
)
def test_bad_pixel_values_name_the_expected_shape(pixel_values, message):
    with pytest.raises(ValueError, match=message):
        GrootVModel(GrootVConfig(**TINY))(pixel_values)


def test_auto_classes_save_and_load_give_identical_outputs(tmp_path):
    model = perturbed(GrootVForImageClassification(GrootVConfig(**TINY))).eval()
    model.save_pretrained(tmp_path)
    assert AutoConfig.from_pretrained(tmp_path).model_type == "grootv"
    loaded = AutoModelForImageClassification.from_pretrained(tmp_path).eval()
    backbone = AutoModel.from_pretrained(tmp_path).eval()
    assert type(loaded) is GrootVForImageClassification and type(backbone) is GrootVModel
    x = images()
    with torch.no_grad():
        assert torch.equal(loaded(x).logits, model(x).logits)
        assert torch.equal(backbone(x).pooler_output, model.grootv(x).pooler_output)


def test_half_precision_loading_keeps_a_logs_in_float32_and_runs(tmp_path):
    GrootVForImageClassification(GrootVConfig(**TINY)).save_pretrained(tmp_path)
    model = GrootVForImageClassification.from_pretrained(tmp_path, dtype=torch.bfloat16).eval()
    ssm = model.grootv.levels[0].blocks[0].tree_ssm
    assert ssm.A_logs.dtype == torch.float32 and ssm.in_proj.weight.dtype == torch.bfloat16
    with torch.no_grad():
        logits = model(images().to(torch.bfloat16)).logits
    assert logits.dtype == torch.bfloat16 and bool(logits.isfinite().all())


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


def test_image_classification_pipeline_runs_a_saved_folder(tmp_path):
    config = GrootVConfig(**TINY, id2label={i: f"class {i}" for i in range(5)})
    GrootVForImageClassification(config).save_pretrained(tmp_path)
    image_processor(config).save_pretrained(tmp_path)
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (240, 320, 3), dtype=np.uint8))
    result = pipeline("image-classification", model=str(tmp_path))(image, top_k=5)
    assert sorted(r["label"] for r in result) == [f"class {i}" for i in range(5)]
    assert sum(r["score"] for r in result) == pytest.approx(1, abs=1e-5)


# timm


def test_timm_variants_are_registered_with_the_official_data_settings():
    assert {"grootv_tiny", "grootv_small", "grootv_base"} <= set(timm.list_models("grootv_*"))
    with torch.device("meta"):
        model = timm.create_model("grootv_tiny")
    assert sum(p.numel() for p in model.parameters()) == PUBLISHED_PARAMETERS["tiny"]
    data = timm.data.resolve_data_config(model=model)
    assert data["interpolation"] == "bicubic" and data["crop_pct"] == 0.875 and data["input_size"] == (3, 224, 224)


def test_timm_model_loads_a_converted_checkpoint_and_matches_the_transformers_model(tmp_path):
    model = perturbed(GrootVForImageClassification(GrootVConfig(**TINY))).eval()
    model.save_pretrained(tmp_path)
    overlay = {"file": str(tmp_path / "model.safetensors"), "num_classes": 5}
    backbone = timm.create_model(
        "grootv_tiny", pretrained=True, pretrained_cfg_overlay=overlay, embed_dim=16, depths=(1, 2, 1, 1), num_classes=5
    ).eval()
    x = images()
    with torch.no_grad():
        expected = model(x, output_hidden_states=True)
        assert torch.equal(backbone(x), expected.logits)
        final, intermediates = backbone.forward_intermediates(x)
        assert torch.equal(final, expected.hidden_states[-1])
        for ours, theirs in zip(intermediates, expected.hidden_states[1:]):
            assert torch.equal(ours, theirs)


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


def test_timm_features_only_gives_every_level():
    features = timm.create_model("grootv_tiny", features_only=True, embed_dim=16, depths=(1, 1, 1, 1)).eval()
    assert features.feature_info.channels() == [16, 32, 64, 128]
    assert features.feature_info.reduction() == [4, 8, 16, 32]
    with torch.no_grad():
        maps = features(images())
    assert [tuple(m.shape) for m in maps] == [(2, 16, 16, 16), (2, 32, 8, 8), (2, 64, 4, 4), (2, 128, 2, 2)]


def test_slotssm_reads_grootv_features_through_its_timm_encoder():
    config = SlotSSMConfig(
        image_size=32, hidden_size=64, num_hidden_layers=1, num_slots=3, num_attention_heads=2, mamba_d_state=16,
        mamba_headdim=32, encoder_output_size=32, decoder_hidden_size=32, decoder_num_layers=1,
        decoder_num_attention_heads=2, decoder_initial_size=4, encoder_type="timm", timm_pretrained=False,
        timm_model_name="grootv_tiny", timm_model_kwargs={"embed_dim": 16, "depths": [1, 1, 1, 1]},
        timm_feature_index=1, patch_size=8,
    )  # fmt: skip
    assert config.num_tokens == 16  # stride-8 features of 32 px frames
    model = SlotSSMForVideoReconstruction(config).eval()
    assert len(model.slotssm.encoder.backbone.levels) == 2  # the later levels are pruned away
    with torch.no_grad():
        out = model(torch.randn(1, 2, 3, 32, 32))
    assert out.reconstruction.shape == (1, 2, 3, 32, 32)


# Conversion of official checkpoints


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
        "README.md", "config.json", "configuration_grootv.py", "model.safetensors", "modeling_grootv.py",
        "preprocessor_config.json", "pretrained.py", "tree_scan.py",
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
