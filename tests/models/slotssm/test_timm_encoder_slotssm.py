"""timm image models as the frame encoder, and feature reconstruction (the DINOSAUR / VideoSAUR objective): token
shapes against timm's own features, freezing, save/load, training, processor settings and clear refusals."""


import pytest
import timm
import torch
import torch.nn.functional as F
from huggingface_hub.errors import StrictDataclassError
from safetensors.torch import load_file, save_file
from transformers import AutoConfig, AutoModelForPreTraining, Trainer, TrainingArguments

from slotssm_hf import (
    FAMILIES,
    SlotSSMForVideoClassification,
    SlotSSMForVideoDepthEstimation,
    SlotSSMForVideoPrediction,
    SlotSSMForVideoReconstruction,
    SlotSSMModel,
    SlotSSMVideoProcessor,
)
from slotssm_hf.models.timm_encoder import timm_video_processor_kwargs

# Tiny versions of timm families: a ViT with a CLS token, a DINOv3 ViT (CLS + 4 register tokens, RoPE tables that
# are non-persistent buffers), and a CNN read at its stride-8 stage.
VIT = {
    "timm_model_name": "vit_tiny_patch16_224",
    "timm_model_kwargs": {"patch_size": 8, "embed_dim": 48, "depth": 2, "num_heads": 2},
}
DINOV3 = {
    "timm_model_name": "vit_small_patch16_dinov3",
    "timm_model_kwargs": {"patch_size": 8, "embed_dim": 32, "depth": 1, "num_heads": 2},
}
RESNET = {"timm_model_name": "resnet18", "timm_feature_index": 2}
BACKBONES = {"vit": VIT, "dinov3": DINOV3, "resnet": RESNET}


def timm_config(backbone=VIT, **overrides):
    fields = {"encoder_type": "timm", "timm_pretrained": False, "decoder_initial_size": 4, **backbone, **overrides}
    return FAMILIES["slotssm"].config("vit-tiny", **fields)


def video(config, batch=2, frames=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, frames, config.num_channels, config.image_size, config.image_size, generator=g)


# Tokens


@pytest.mark.parametrize("backbone", BACKBONES)
def test_tokens_are_timms_features_without_prefix_tokens(backbone):
    config = timm_config(BACKBONES[backbone])
    encoder = SlotSSMModel(config).encoder.eval()
    frames = video(config).flatten(0, 1)
    with torch.no_grad():
        tokens, _, features = encoder(frames)
        # The oracle: timm's final features of the pruned backbone (its final norm is pruned away) without the
        # prefix tokens, or the CNN's last stage, row-major.
        oracle = encoder.backbone.forward_features(frames)
    if backbone == "resnet":
        oracle = oracle.flatten(2).transpose(1, 2)
    else:
        oracle = oracle[:, encoder.backbone.num_prefix_tokens :]
    grid, width = {"vit": (4, 48), "dinov3": (4, 32), "resnet": (4, 128)}[backbone]
    assert config.num_tokens == grid**2
    assert features.shape == (6, width, grid, grid)
    assert tokens.shape == (6, config.num_tokens, config.encoder_output_size)
    torch.testing.assert_close(features.flatten(2).transpose(1, 2), oracle, rtol=0, atol=1e-6)
    torch.testing.assert_close(tokens, encoder.output_proj(oracle), rtol=0, atol=1e-6)


def test_a_projection_only_where_the_widths_differ():
    assert isinstance(SlotSSMModel(timm_config(encoder_output_size=48)).encoder.output_proj, torch.nn.Identity)
    projection = SlotSSMModel(timm_config()).encoder.output_proj
    assert (projection.in_features, projection.out_features) == (48, 32)


def test_the_chosen_feature_map_is_read_and_later_blocks_pruned():
    config = timm_config(timm_feature_index=0)
    encoder = SlotSSMModel(config).encoder
    assert len(encoder.backbone.blocks) == 1
    full = timm.create_model("vit_tiny_patch16_224", img_size=32, **VIT["timm_model_kwargs"]).eval()
    full.load_state_dict(encoder.backbone.state_dict(), strict=False)
    frames = video(config).flatten(0, 1)
    with torch.no_grad():
        (expected,) = full.forward_intermediates(frames, indices=[0], intermediates_only=True)
        torch.testing.assert_close(encoder(frames).feature_map, expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    "head", [SlotSSMForVideoClassification, SlotSSMForVideoPrediction, SlotSSMForVideoDepthEstimation]
)
def test_every_head_runs_on_a_timm_encoder(head):
    config = timm_config(num_labels=2)
    frames = video(config)
    labels = torch.tensor([0, 1]) if head is SlotSSMForVideoClassification else None
    labels = torch.rand(2, 3, 1, 32, 32) if head is SlotSSMForVideoDepthEstimation else labels
    assert head(config)(frames, labels=labels).loss.isfinite()


def test_the_model_returns_the_encoder_features():
    config = timm_config()
    out = SlotSSMModel(config)(video(config), output_attentions=True)
    assert out.encoder_features.shape == (2, 3, 48, 4, 4)
    assert out.attentions[0].shape == (2, 3, 1, 3, config.num_tokens)


def test_config_round_trips_through_json(tmp_path):
    config = timm_config(DINOV3, timm_feature_index=-1, timm_frozen=False, reconstruction_target="features")
    config.save_pretrained(tmp_path)
    loaded = AutoConfig.from_pretrained(tmp_path)
    assert loaded.to_diff_dict() == config.to_diff_dict()
    assert loaded.timm_model_kwargs == DINOV3["timm_model_kwargs"] and loaded.num_tokens == config.num_tokens == 16


# Freezing


def test_a_frozen_backbone_gets_no_gradients_and_no_optimizer_state(tmp_path):
    config = timm_config(reconstruction_target="features", decoder_type="spatial_broadcast")
    model = SlotSSMForVideoReconstruction(config).train()
    backbone = model.slotssm.encoder.backbone
    assert not backbone.training and not any(p.requires_grad for p in backbone.parameters())
    before = {name: p.clone() for name, p in backbone.named_parameters()}
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-2)
    model(video(config)).loss.backward()
    assert all(p.grad is None for p in backbone.parameters())
    assert all(p.grad is not None for p in trainable)
    optimizer.step()
    frozen = {id(p) for p in backbone.parameters()}
    assert optimizer.state and not frozen & {id(p) for p in optimizer.state}
    assert all(torch.equal(p, before[name]) for name, p in backbone.named_parameters())
    trainer = Trainer(model=model, args=TrainingArguments(output_dir=str(tmp_path), report_to=[]))
    trainer.create_optimizer()
    assert not frozen & {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}


def test_an_unfrozen_backbone_trains_and_every_weight_is_used():
    config = timm_config(timm_frozen=False)
    model = SlotSSMForVideoReconstruction(config).train()
    assert model.slotssm.encoder.backbone.training
    model(video(config)).loss.backward()
    assert [name for name, p in model.named_parameters() if p.requires_grad and p.grad is None] == []


# Weights: timm's pretrained weights, save and load


def test_pretrained_weights_come_through_timm_and_survive_initialisation(tmp_path):
    source = timm.create_model("vit_tiny_patch16_224", img_size=32, **VIT["timm_model_kwargs"])
    save_file(source.state_dict(), tmp_path / "weights.safetensors")
    overlay = {"file": str(tmp_path / "weights.safetensors"), "custom_load": False}  # a local "pretrained" tag
    kwargs = {**VIT["timm_model_kwargs"], "pretrained_cfg_overlay": overlay}
    model = SlotSSMForVideoReconstruction(timm_config(timm_pretrained=True, timm_model_kwargs=kwargs))
    for name, param in model.slotssm.encoder.backbone.named_parameters():
        assert torch.equal(param, source.get_parameter(name)), name


@pytest.mark.parametrize("backbone", ["vit", "dinov3"])
def test_save_and_load_give_identical_outputs_from_one_file(tmp_path, backbone):
    config = timm_config(BACKBONES[backbone], reconstruction_target="features", decoder_type="spatial_broadcast")
    model = SlotSSMForVideoReconstruction(config).eval()
    model.config.timm_pretrained = True  # loading must not fetch timm's weights: the file holds them
    model.save_pretrained(tmp_path)
    weights = load_file(tmp_path / "model.safetensors")
    backbone_keys = {f"slotssm.encoder.backbone.{name}" for name in model.slotssm.encoder.backbone.state_dict()}
    assert backbone_keys <= set(weights)
    frames = video(config)
    loaded = AutoModelForPreTraining.from_pretrained(tmp_path).eval()
    assert not any(p.requires_grad for p in loaded.slotssm.encoder.backbone.parameters())
    with torch.no_grad():
        expected, out = model(frames), loaded(frames)
    assert torch.equal(out.reconstruction, expected.reconstruction)
    assert torch.equal(out.masks, expected.masks)


# Feature reconstruction


@pytest.mark.parametrize("decoder_type", ["spatial_broadcast", "vit"])
def test_feature_reconstruction_decodes_the_feature_map(decoder_type):
    config = timm_config(reconstruction_target="features", decoder_type=decoder_type)
    out = SlotSSMForVideoReconstruction(config)(video(config))
    assert out.reconstruction.shape == (2, 3, 48, 4, 4)
    if decoder_type == "spatial_broadcast":
        assert out.masks.shape == (2, 3, 3, 1, 32, 32)
        torch.testing.assert_close(out.masks.sum(dim=2), torch.ones(2, 3, 1, 32, 32))
    else:
        assert out.masks is None


def test_the_loss_is_the_mse_to_the_detached_encoder_features():
    config = timm_config(reconstruction_target="features", decoder_type="spatial_broadcast", timm_frozen=False)
    model = SlotSSMForVideoReconstruction(config)
    weight = model.slotssm.encoder.backbone.patch_embed.proj.weight
    frames = video(config)
    out = model(frames)
    features = model.slotssm(frames).encoder_features  # the same features, still attached to the backbone
    torch.testing.assert_close(out.loss, F.mse_loss(out.reconstruction, features))
    (through_slots,) = torch.autograd.grad(out.loss, weight)
    (through_both,) = torch.autograd.grad(model(frames, labels=features).loss, weight)
    assert through_slots.abs().sum() > 0 and not torch.allclose(through_slots, through_both)
    with pytest.raises(ValueError, match=r"expected labels of shape \(2, 3, 48, 4, 4\) \(the encoder features"):
        model(frames, labels=torch.zeros(2, 3, 3, 32, 32))


def test_a_few_steps_lower_the_feature_reconstruction_loss():
    torch.manual_seed(0)
    config = timm_config(reconstruction_target="features", decoder_type="spatial_broadcast")
    model = SlotSSMForVideoReconstruction(config).train()
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    frames = video(config, batch=2, frames=2)
    losses = []
    for _ in range(8):
        loss = model(frames).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.9 * losses[0], losses


# Processor settings


def test_processor_settings_come_from_timms_pretrained_config():
    config = timm_config()  # vit_tiny_patch16_224's default weights: mean = std = 0.5, bicubic, crop_pct 0.9
    kwargs = timm_video_processor_kwargs(config)
    assert kwargs["image_mean"] == [0.5] * 3 and kwargs["image_std"] == [0.5] * 3
    assert kwargs["size"] == {"shortest_edge": 35} and kwargs["crop_size"] == {"height": 32, "width": 32}
    processor = SlotSSMVideoProcessor(**kwargs, num_frames=2)
    white = torch.full((2, 48, 64, 3), 255, dtype=torch.uint8).numpy()
    pixels = processor(white)["pixel_values_videos"]
    assert pixels.shape == (1, 2, 3, 32, 32)
    torch.testing.assert_close(pixels, torch.ones_like(pixels))  # (1 - 0.5) / 0.5


# Refusals


def test_an_unknown_timm_model_is_refused_by_name():
    with pytest.raises(ValueError, match=r"timm_model_name 'vit_nonexistent_patch3' is not a model timm"):
        SlotSSMModel(timm_config({"timm_model_name": "vit_nonexistent_patch3"}))


class FeaturelessNet(torch.nn.Module):
    """A model registered with timm that offers no feature API."""

    def __init__(self, in_chans=3, **kwargs):
        super().__init__()
        self.conv = torch.nn.Conv2d(in_chans, 8, 3)


@timm.models.register_model
def slotssm_test_featureless_net(pretrained=False, **kwargs):
    return FeaturelessNet(**kwargs)


def test_a_model_without_the_feature_api_is_refused_by_name():
    with pytest.raises(ValueError, match=r"'slotssm_test_featureless_net' \(FeaturelessNet\) has no forward_intermediates"):  # fmt: skip
        SlotSSMModel(timm_config({"timm_model_name": "slotssm_test_featureless_net"}))


@pytest.mark.parametrize(
    "overrides,message",
    [
        ({"timm_feature_index": 5}, r"timm_feature_index \(5\) is out of range for 'vit_tiny_patch16_224', which offers 2"),
        ({"image_size": 36, "decoder_type": "vit", "patch_size": 4}, r"image_size \(36\) must be a multiple of the stride \(8\)"),
    ],
)  # fmt: skip
def test_a_feature_map_that_cannot_be_read_is_refused_when_built(overrides, message):
    with pytest.raises(ValueError, match=message):
        SlotSSMModel(timm_config(**overrides))


@pytest.mark.parametrize(
    "overrides,message",
    [
        ({"timm_model_name": None}, r"timm_model_name must name a timm image model"),
        ({"timm_model_kwargs": {"pretrained": True}}, r"timm_model_kwargs may not set \['pretrained'\]: .*timm_pretrained"),
        ({"encoder_type": "vit"}, r"reconstruction_target='features' decodes the features of a timm encoder"),
    ],
)  # fmt: skip
def test_invalid_timm_configuration_names_field_and_reason(overrides, message):
    with pytest.raises(StrictDataclassError, match=message):
        timm_config(**{"reconstruction_target": "features", **overrides})
