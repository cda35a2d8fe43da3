"""GrootV: published parameter counts, the TreeSSM against a float64 restatement of the official computation, the
transformers classes (Auto, save/load, pipeline), and the timm models (registration, same weights, features,
SlotSSM's frame encoder)."""

import functools

import numpy as np
import pytest
import scipy.sparse
import scipy.sparse.csgraph
import timm
import torch
import torch.nn.functional as F
from grootv_checkpoints import PUBLISHED_PARAMETERS, images
from huggingface_hub.errors import StrictDataclassError
from PIL import Image
from transformers import AutoConfig, AutoModel, AutoModelForImageClassification, pipeline
from tree_scan_oracle import path_product_oracle

from slotssm_hf import (
    FAMILIES,
    GrootVConfig,
    GrootVForImageClassification,
    GrootVModel,
    SlotSSMConfig,
    SlotSSMForVideoReconstruction,
)
from slotssm_hf.conversion.convert_grootv import image_processor
from slotssm_hf.models.modeling_grootv import GrootVTreeSSM, init_grootv_weights
from slotssm_hf.models.tree_scan import grid_edges

TINY = {"embed_dim": 16, "depths": [1, 2, 1, 1], "num_labels": 5}


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
