"""The SlotSSM model: configuration, faithfulness to the official model (through an oracle assembled from torch and
transformers primitives), outputs, causality, Auto registration, save/load and remote-code loading; and its task
heads: losses against direct computations, the Trainer (label names, gradient accumulation), the
video-classification pipeline, and autoregressive rollout."""

import importlib
import json
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from huggingface_hub.errors import StrictDataclassError
from safetensors.torch import load_file, save_file
from slotssm_checkpoints import OFFICIAL_VARIANTS, official_configs
from slotssm_inputs import tiny_config, video
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForPreTraining,
    AutoModelForVideoClassification,
    Trainer,
    TrainingArguments,
    pipeline,
)
from videos import synthetic_frames, write_video

import slotssm_hf
from slotssm_hf import (
    FAMILIES,
    SlotSSMConfig,
    SlotSSMForVideoClassification,
    SlotSSMForVideoDepthEstimation,
    SlotSSMForVideoPrediction,
    SlotSSMForVideoReconstruction,
    SlotSSMModel,
    SlotSSMVideoProcessor,
    VideoCollator,
    video_folder_dataset,
)
from slotssm_hf.conversion.convert_slotssm import convert_official_config, convert_official_state_dicts
from slotssm_hf.conversion.references.slotssm import OfficialReference
from slotssm_hf.models.modeling_slotssm import SlotSSMAttention, scale_invariant_log_loss


def official_pair(encoder, slotssm, decoder):
    """An official-layout reference with random weights, and our converted model holding the same weights."""
    reference = OfficialReference(encoder, slotssm, decoder).eval()
    with torch.no_grad():  # move every tensor off its initial value, so no mapping error hides behind a constant
        for param in reference.parameters():
            param.add_(torch.randn_like(param) * 0.05)
    config = convert_official_config(encoder, slotssm, decoder)
    state = convert_official_state_dicts(
        config, reference.encoder.state_dict(), reference.slotssm.state_dict(), reference.decoder.state_dict()
    )
    model = SlotSSMForVideoReconstruction(config).eval()
    model.load_state_dict(state, strict=True)
    return reference, model


def assert_matches_reference(reference, model, frames, atol=1e-5, rtol=1e-5):
    """Float32 agreement: |ours - official| <= 1e-5 + 1e-5 |official| (slots reach magnitudes near 10, where one
    float32 rounding step is already about 1e-6)."""
    with torch.no_grad():
        recon, masks, slots, attentions = reference(frames)
        ours = model(frames, output_attentions=True)
    torch.testing.assert_close(ours.last_hidden_state, slots, rtol=rtol, atol=atol)
    torch.testing.assert_close(ours.reconstruction, recon, rtol=rtol, atol=atol)
    if masks is not None:
        torch.testing.assert_close(ours.masks, masks, rtol=rtol, atol=atol)
    for ref_map, our_map in zip(attentions, ours.attentions):
        if ref_map is not None:  # the reference (like the official code) shows only inverted-attention maps
            torch.testing.assert_close(our_map.flatten(0, 1), ref_map, rtol=rtol, atol=atol)


# Configuration


def test_defaults_are_the_official_training_run():
    config = SlotSSMConfig()
    assert (config.num_slots, config.hidden_size, config.num_hidden_layers) == (6, 256, 4)
    assert (config.mamba_version, config.mamba_d_state, config.mamba_d_conv, config.mamba_expand) == ("mamba2", 128, 4, 2)
    assert config.mamba_headdim == 64 and config.use_inverted_attention and config.cross_attention_num_heads == 1
    assert config.num_attention_heads == 4 and not config.use_ffn
    assert (config.encoder_type, config.encoder_num_layers, config.encoder_num_attention_heads) == ("vit", 6, 4)
    assert (config.patch_size, config.image_size, config.decoder_num_layers, config.decoder_num_attention_heads) == (8, 128, 4, 4)
    model = SlotSSMForVideoReconstruction(config)
    # The official model's parameter count (12,433,696 trainable; the decoder's position table is frozen).
    assert sum(p.numel() for p in model.parameters()) == 12_500_768
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == 12_433_696


@pytest.mark.parametrize(
    "overrides,message",
    [
        ({"hidden_size": 250}, r"hidden_size \(250\) must be a multiple of num_attention_heads \(4\)"),
        ({"cross_attention_num_heads": 3}, r"hidden_size \(256\) must be a multiple of cross_attention_num_heads \(3\)"),
        ({"image_size": 100}, r"image_size \(100\) must be a multiple of patch_size \(8\)"),
        ({"encoder_num_attention_heads": 3}, r"encoder_hidden_size \(256\) must be a multiple of encoder_num_attention_heads"),
        ({"decoder_num_attention_heads": 3}, r"decoder_hidden_size \(256\) must be a multiple of decoder_num_attention_heads"),
        ({"num_slots": 0}, r"num_slots must be a positive integer"),
        ({"mamba_headdim": 48}, r"must be a multiple of mamba_headdim \(48\)"),
        ({"decoder_type": "spatial_broadcast", "image_size": 96}, r"image_size \(96\) must be 8 or 16 times decoder_initial_size"),
        ({"encoder_type": "cnn", "cnn_downsampling_ratio": 3}, r"image_size \(128\) must be a multiple of cnn_downsampling_ratio"),
        ({"encoder_type": "transformer"}, r"encoder_type"),
        ({"hidden_size": "256"}, r"hidden_size"),
        ({"decoder_slot_color": True}, r"decoder_slot_color .* needs decoder_type='spatial_broadcast'"),
        ({"cnn_position_in_keys": False}, r"cnn_position_in_keys=False .* needs encoder_type='cnn' and cnn_position_embedding=True, got 'vit' and False"),
        ({"encoder_type": "cnn", "cnn_position_in_keys": False}, r"needs encoder_type='cnn' and cnn_position_embedding=True, got 'cnn' and False"),
        ({"num_slot_attention_iterations": 0}, r"num_slot_attention_iterations must be a positive integer"),
    ],
)  # fmt: skip
def test_invalid_configuration_names_field_and_reason(overrides, message):
    with pytest.raises(StrictDataclassError, match=message):
        SlotSSMConfig(**overrides)


def test_config_round_trips_through_json(tmp_path):
    config = tiny_config(encoder_type="cnn", decoder_type="spatial_broadcast", decoder_initial_size=4)
    config.save_pretrained(tmp_path)
    loaded = AutoConfig.from_pretrained(tmp_path)
    assert isinstance(loaded, SlotSSMConfig)
    assert loaded.to_diff_dict() == config.to_diff_dict()


@pytest.mark.parametrize("encoder_type", ["vit", "cnn"])
@pytest.mark.parametrize("decoder_type", ["vit", "spatial_broadcast"])
@pytest.mark.parametrize("mamba_version", ["mamba1", "mamba2"])
def test_every_variant_trains(encoder_type, decoder_type, mamba_version):
    config = tiny_config(
        encoder_type=encoder_type, cnn_downsampling_ratio=4, decoder_type=decoder_type, decoder_initial_size=4,
        mamba_version=mamba_version, use_ffn=mamba_version == "mamba1",
        use_inverted_attention=encoder_type == "vit", cross_attention_num_heads=2,
    )  # fmt: skip
    model = SlotSSMForVideoReconstruction(config)
    frames = video(config, frames=3)
    out = model(frames)
    assert out.reconstruction.shape == frames.shape
    assert (out.masks is not None) == (decoder_type == "spatial_broadcast")
    out.loss.backward()
    unused = [name for name, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert unused == []


# Faithfulness to the official model


@pytest.mark.slow
def test_default_model_matches_official_reference_on_sixteen_frames():
    reference, model = official_pair(*official_configs())
    assert_matches_reference(reference, model, torch.randn(1, 16, 3, 128, 128))


def test_default_model_matches_official_reference():
    reference, model = official_pair(*official_configs())
    assert_matches_reference(reference, model, torch.randn(2, 3, 3, 128, 128))


@pytest.mark.parametrize("variant", OFFICIAL_VARIANTS)
def test_variant_matches_official_reference(variant):
    reference, model = official_pair(*official_configs(**OFFICIAL_VARIANTS[variant]))
    size = model.config.image_size
    assert_matches_reference(reference, model, torch.randn(2, 4, 3, size, size))


def test_each_module_matches_its_official_counterpart():
    reference, model = official_pair(*official_configs(**OFFICIAL_VARIANTS["nine-slots-96px"]))
    frames = torch.randn(6, 3, 96, 96)
    with torch.no_grad():
        tokens = model.slotssm.encoder(frames).tokens
        torch.testing.assert_close(tokens, reference.encoder(frames), rtol=0, atol=1e-5)
        slots = torch.randn(2, 3, 9, 128)
        tokens = tokens.view(2, 3, *tokens.shape[1:])
        for ours, official in zip(model.slotssm.layers, reference.slotssm.blocks):
            torch.testing.assert_close(ours(slots, tokens)[0], official(slots, tokens)[0], rtol=0, atol=1e-5)
        flat = slots.flatten(0, 1)
        torch.testing.assert_close(model.decoder(flat), reference.decoder(flat), rtol=0, atol=1e-5)


@pytest.mark.parametrize("implementation", ["eager", "sdpa"])
def test_self_attention_matches_torch_multihead_attention(implementation):
    config = tiny_config()
    config._attn_implementation = implementation
    ours = SlotSSMAttention(config, 64, 4).eval()
    oracle = torch.nn.MultiheadAttention(64, 4, batch_first=True).eval()
    with torch.no_grad():
        oracle.in_proj_weight.copy_(torch.cat([ours.q_proj.weight, ours.k_proj.weight, ours.v_proj.weight]))
        oracle.in_proj_bias.copy_(torch.cat([ours.q_proj.bias, ours.k_proj.bias, ours.v_proj.bias]))
        oracle.out_proj.load_state_dict(ours.o_proj.state_dict())
    x, memory, keys = torch.randn(5, 7, 64), torch.randn(5, 11, 64), torch.randn(5, 11, 64)
    torch.testing.assert_close(ours(x)[0], oracle(x, x, x)[0], rtol=0, atol=1e-5)
    torch.testing.assert_close(ours(x, memory)[0], oracle(x, memory, memory)[0], rtol=0, atol=1e-5)
    torch.testing.assert_close(ours(x, memory, keys)[0], oracle(x, keys, memory)[0], rtol=0, atol=1e-5)


def test_eager_and_sdpa_give_the_same_model_output():
    config = tiny_config(use_inverted_attention=False, cross_attention_num_heads=2)
    eager = SlotSSMForVideoReconstruction._from_config(config, attn_implementation="eager").eval()
    sdpa = SlotSSMForVideoReconstruction._from_config(config, attn_implementation="sdpa").eval()
    sdpa.load_state_dict(eager.state_dict())
    frames = video(config)
    with torch.no_grad():
        torch.testing.assert_close(eager(frames).reconstruction, sdpa(frames).reconstruction, rtol=0, atol=1e-5)


# Behaviour


def test_slots_at_a_frame_depend_only_on_frames_up_to_it():
    config = tiny_config(mamba_chunk_size=2)
    model = SlotSSMModel(config).eval()
    frames = video(config, frames=6)
    changed = frames.clone()
    changed[:, 3:] = torch.randn_like(changed[:, 3:])
    with torch.no_grad():
        slots, slots_changed = model(frames).last_hidden_state, model(changed).last_hidden_state
    torch.testing.assert_close(slots[:, :3], slots_changed[:, :3], rtol=0, atol=1e-6)
    assert (slots[:, 3] - slots_changed[:, 3]).abs().max() > 1e-3


def test_outputs_hold_every_block_and_attention_map():
    config = tiny_config()
    out = SlotSSMModel(config)(video(config), output_hidden_states=True, output_attentions=True)
    assert out.last_hidden_state.shape == (2, 5, 3, 64)
    assert len(out.hidden_states) == config.num_hidden_layers + 1
    assert torch.equal(out.hidden_states[-1], out.last_hidden_state)
    tokens = (32 // 8) ** 2
    assert [a.shape for a in out.attentions] == [(2, 5, 1, 3, tokens)] * config.num_hidden_layers
    # Inverted attention: every token's weights form a distribution over the slots.
    torch.testing.assert_close(out.attentions[0].sum(dim=3), torch.ones(2, 5, 1, tokens))


def test_tuple_outputs_and_loss_against_input_or_labels():
    config = tiny_config()
    model = SlotSSMForVideoReconstruction(config)
    frames = video(config)
    out = model(frames)
    torch.testing.assert_close(out.loss, F.mse_loss(out.reconstruction, frames))
    labels = torch.zeros_like(frames)
    torch.testing.assert_close(model(frames, labels=labels).loss, out.reconstruction.pow(2).mean())
    as_tuple = model(frames, return_dict=False)
    torch.testing.assert_close(as_tuple[0], out.loss)
    with pytest.raises(ValueError, match=r"expected labels of shape \(2, 5, 3, 32, 32\) \(the frames to reconstruct\), got \(2, 5, 3, 16, 16\)"):
        model(frames, labels=torch.zeros(2, 5, 3, 16, 16))


def test_spatial_broadcast_masks_are_a_distribution_over_slots():
    config = tiny_config(decoder_type="spatial_broadcast", decoder_initial_size=4)
    out = SlotSSMForVideoReconstruction(config)(video(config))
    assert out.masks.shape == (2, 5, 3, 1, 32, 32)
    torch.testing.assert_close(out.masks.sum(dim=2), torch.ones(2, 5, 1, 32, 32))


def test_slot_colors_add_each_slots_linear_colour_under_its_mask():
    """With `decoder_slot_color`, slot k's colour map is the upsampling path's map plus W norm(slot_k) + b: with W = 0
    the model is the one without it (same other weights), and since the masks sum to 1 over the slots, a bias c adds c
    to every pixel of the reconstruction."""
    config = tiny_config(decoder_type="spatial_broadcast", decoder_initial_size=4)
    plain = SlotSSMForVideoReconstruction(config).eval()
    config.decoder_slot_color = True
    colored = SlotSSMForVideoReconstruction(config).eval()
    missing, unexpected = colored.load_state_dict(plain.state_dict(), strict=False)
    assert sorted(missing) == ["decoder.slot_color.bias", "decoder.slot_color.weight"] and not unexpected
    frames = video(config)
    with torch.no_grad():
        colored.decoder.slot_color.weight.zero_()
        colored.decoder.slot_color.bias.copy_(torch.tensor([0.5, -1.0, 2.0]))
        expected = plain(frames).reconstruction + torch.tensor([0.5, -1.0, 2.0])[:, None, None]
        torch.testing.assert_close(colored(frames).reconstruction, expected, rtol=1e-5, atol=1e-5)


def cnn_config(**overrides):
    return FAMILIES["slotssm"].config("tiny", image_size=32, decoder_initial_size=2, **overrides)


def test_content_keys_are_the_cnn_features_without_position():
    """With `cnn_position_in_keys=False` the values are the tokens of the model with position in the keys, and the keys
    are the tokens of the model without a position embedding, each built on its own with the same weights; with the
    position embedding zeroed, keys and values coincide and the whole model is the one with position in the keys."""
    content = SlotSSMForVideoReconstruction(cnn_config(cnn_position_in_keys=False)).eval()
    with_position = SlotSSMForVideoReconstruction(cnn_config(cnn_position_in_keys=True)).eval()
    without_position = SlotSSMForVideoReconstruction(
        cnn_config(cnn_position_in_keys=True, cnn_position_embedding=False)
    ).eval()
    with_position.load_state_dict(content.state_dict())
    missing, unexpected = without_position.load_state_dict(content.state_dict(), strict=False)
    assert not missing and sorted(unexpected) == [
        "slotssm.encoder.position_embedding.dense.bias", "slotssm.encoder.position_embedding.dense.weight"
    ]  # fmt: skip
    frames = torch.randn(6, 3, 32, 32)
    with torch.no_grad():
        encoded = content.slotssm.encoder(frames)
        expected_keys = without_position.slotssm.encoder(frames).tokens
        torch.testing.assert_close(encoded.tokens, with_position.slotssm.encoder(frames).tokens, rtol=0, atol=1e-6)
        torch.testing.assert_close(encoded.key_tokens, expected_keys, rtol=0, atol=1e-6)
        assert with_position.slotssm.encoder(frames).key_tokens is None
        assert not torch.allclose(encoded.tokens, encoded.key_tokens, atol=1e-3)

        for model in (content, with_position):
            for param in model.slotssm.encoder.position_embedding.parameters():
                param.zero_()
        videos = video(content.config, frames=3)
        expected = with_position(videos).reconstruction
        torch.testing.assert_close(content(videos).reconstruction, expected, rtol=0, atol=1e-6)


def slot_attention_step(attention, slot_norm, slots, values, keys):
    """One residual update of single-head inverted cross-attention in float64, from the slot attention equations:
    each token's softmax over the slots, then every slot's weighted mean of the values."""
    linear = lambda layer, x: F.linear(x, layer.weight.double(), layer.bias.double())  # noqa: E731
    normed = F.layer_norm(slots, slots.shape[-1:], slot_norm.weight.double(), slot_norm.bias.double(), slot_norm.eps)
    logits = linear(attention.q_proj, normed) @ linear(attention.k_proj, keys).transpose(-1, -2) * attention.scaling
    weights = logits.softmax(dim=-2)
    normalized = weights / (weights.sum(dim=-1, keepdim=True) + 1e-5)
    return slots + linear(attention.o_proj, normalized @ linear(attention.v_proj, values)), weights


@pytest.mark.parametrize("content_keys", [False, True])
def test_slot_attention_iterations_repeat_the_first_blocks_cross_attention(content_keys):
    """A first block with k iterations is a one-iteration block applied to the slots after k - 1 residual
    cross-attention updates (computed in float64 from the equations), and reports the last update's weights; the later
    blocks attend once."""
    iterated = SlotSSMModel(cnn_config(num_slot_attention_iterations=3)).eval()
    once = SlotSSMModel(cnn_config(num_slot_attention_iterations=1))
    once.load_state_dict(iterated.state_dict())
    assert [layer.num_cross_attention_steps for layer in iterated.layers] == [3, 1]
    block, single = iterated.layers[0].double(), once.layers[0].double()
    slots, tokens = torch.randn(2, 3, 5, 64, dtype=torch.float64), torch.randn(2, 3, 256, 32, dtype=torch.float64)
    key_tokens = torch.randn_like(tokens) if content_keys else None

    def embed(states):
        projected = F.linear(states, block.cross_attention_input_proj.weight, block.cross_attention_input_proj.bias)
        norm = block.cross_attention_input_norm
        return F.layer_norm(projected, projected.shape[-1:], norm.weight, norm.bias, norm.eps)

    values = embed(tokens)
    keys = values if key_tokens is None else embed(key_tokens)
    with torch.no_grad():
        expected = slots
        for _ in range(3):
            before, (expected, weights) = expected, slot_attention_step(
                block.cross_attention, block.cross_attention_slot_norm, expected, values, keys
            )
        output, reported = block(slots, tokens, None, key_tokens)
        torch.testing.assert_close(output, single(before, tokens, None, key_tokens)[0], rtol=0, atol=1e-10)
        torch.testing.assert_close(reported[:, :, 0], weights, rtol=0, atol=1e-10)
        assert not torch.allclose(output, single(slots, tokens, None, key_tokens)[0], atol=1e-3)


def test_activation_checkpointing_gives_the_same_gradients():
    config = tiny_config()
    model = SlotSSMForVideoReconstruction(config).train()
    frames = video(config)
    model(frames).loss.backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    model.activation_checkpointing_enable()
    assert all(layer.gradient_checkpointing for layer in model.slotssm.layers)
    model(frames).loss.backward()
    for name, p in model.named_parameters():
        if name in grads:
            torch.testing.assert_close(p.grad, grads[name], rtol=1e-5, atol=1e-6, msg=name)


@pytest.mark.parametrize(
    "shape,dtype",
    [
        ((2, 3, 32, 32), torch.float32),  # a batch of images, no frame axis
        ((2, 5, 1, 32, 32), torch.float32),  # wrong channel count
        ((2, 5, 3, 64, 64), torch.float32),  # another resolution
        ((2, 0, 3, 32, 32), torch.float32),  # no frames
        ((2, 5, 3, 32, 32), torch.uint8),  # raw pixels
    ],
    ids=["rank", "channels", "size", "no-frames", "integer"],
)
def test_bad_video_names_the_expected_shape(shape, dtype):
    model = SlotSSMModel(tiny_config())
    bad = torch.zeros(shape, dtype=dtype)
    with pytest.raises(ValueError, match=r"expected pixel_values_videos of shape \(batch, frames, 3, 32, 32\)") as error:
        model(bad)
    assert str(tuple(shape)) in str(error.value)


# Registration, saving and loading


def test_auto_classes_resolve_and_registration_is_idempotent():
    importlib.reload(slotssm_hf)
    config = AutoConfig.for_model("slotssm", **FAMILIES["slotssm"].variants["vit-tiny"])
    assert type(AutoModel.from_config(config)).__name__ == "SlotSSMModel"
    assert type(AutoModelForPreTraining.from_config(config)).__name__ == "SlotSSMForVideoReconstruction"


def test_save_and_load_give_identical_outputs(tmp_path):
    config = tiny_config()
    model = SlotSSMForVideoReconstruction(config).eval()
    model.save_pretrained(tmp_path)
    files = set(os.listdir(tmp_path))
    assert {"config.json", "model.safetensors"} <= files
    assert not any(name.endswith((".bin", ".pt", ".pth", ".pkl")) for name in files)
    auto_map = json.loads((tmp_path / "config.json").read_text())["auto_map"]
    assert set(auto_map) == {"AutoConfig", "AutoModel", "AutoModelForPreTraining", "AutoModelForVideoClassification"}
    frames = video(config)
    with torch.no_grad():
        expected = model(frames)
        loaded = AutoModelForPreTraining.from_pretrained(tmp_path).eval()
        assert torch.equal(loaded(frames).reconstruction, expected.reconstruction)
        backbone = AutoModel.from_pretrained(tmp_path).eval()
        assert torch.equal(backbone(frames).last_hidden_state, expected.last_hidden_state)


def test_a_new_head_on_a_saved_backbone_loads(tmp_path):
    model = SlotSSMModel(tiny_config())
    model.save_pretrained(tmp_path)
    head = SlotSSMForVideoReconstruction.from_pretrained(tmp_path)
    assert torch.equal(head.slotssm.initial_slots, model.initial_slots)


def test_a_checkpoint_that_does_not_fit_is_refused_by_name(tmp_path):
    SlotSSMForVideoReconstruction(tiny_config()).save_pretrained(tmp_path)
    weights = load_file(tmp_path / "model.safetensors")
    weights.pop("slotssm.layers.1.time_mixer.A_log")
    weights["slotssm.layers.1.surprise.weight"] = torch.zeros(2)
    save_file(weights, tmp_path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match=r"missing keys \['slotssm.layers.1.time_mixer.A_log'\], "
                       r"unexpected keys \['slotssm.layers.1.surprise.weight'\]"):  # fmt: skip
        SlotSSMForVideoReconstruction.from_pretrained(tmp_path)
    _, info = SlotSSMForVideoReconstruction.from_pretrained(tmp_path, output_loading_info=True)
    assert info["missing_keys"] == {"slotssm.layers.1.time_mixer.A_log"}


def test_a_mis_shaped_weight_is_refused_unless_ignored(tmp_path):
    SlotSSMForVideoReconstruction(tiny_config()).save_pretrained(tmp_path)
    weights = load_file(tmp_path / "model.safetensors")
    weights["slotssm.initial_slots"] = torch.zeros(1, 1, 4, 64)
    save_file(weights, tmp_path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(RuntimeError, match="ignore_mismatched_sizes"):
        SlotSSMForVideoReconstruction.from_pretrained(tmp_path)
    model = SlotSSMForVideoReconstruction.from_pretrained(tmp_path, ignore_mismatched_sizes=True)
    assert model.slotssm.initial_slots.shape == (1, 1, 3, 64)


def test_half_precision_loading_keeps_a_log_in_float32(tmp_path):
    SlotSSMForVideoReconstruction(tiny_config()).save_pretrained(tmp_path)
    model = SlotSSMForVideoReconstruction.from_pretrained(tmp_path, dtype=torch.bfloat16)
    assert model.slotssm.layers[0].time_mixer.A_log.dtype == torch.float32
    assert model.slotssm.layers[0].time_mixer.in_proj.weight.dtype == torch.bfloat16
    out = model(video(model.config).to(torch.bfloat16))
    assert out.reconstruction.dtype == torch.bfloat16 and bool(out.reconstruction.isfinite().all())


@pytest.mark.parametrize("dim, grid_size, num_prefix_rows", [(16, 3, 1), (64, 5, 6), (256, 16, 1)])
def test_sincos_position_table_is_the_documented_formula_and_the_official_table(dim, grid_size, num_prefix_rows):
    import math

    from slotssm_hf.models.modeling_slotssm import sincos_position_table
    from slotssm_hf.conversion.references.slotssm import mae_sincos_table

    table = sincos_position_table(dim, grid_size, num_prefix_rows)
    assert table.shape == (1, num_prefix_rows + grid_size**2, dim) and table.dtype == torch.float32
    # Element by element from the docstring: patch (r, c) at row num_prefix_rows + r * grid_size + c, channels
    # [sin(c w_k), cos(c w_k), sin(r w_k), cos(r w_k)] with w_k = 10000^(-k / (dim / 4)); prefix rows zero.
    quarter = dim // 4
    expected = torch.zeros(num_prefix_rows + grid_size**2, dim, dtype=torch.float64)
    for r in range(grid_size):
        for c in range(grid_size):
            row = expected[num_prefix_rows + r * grid_size + c]
            for k in range(quarter):
                w = 10000 ** (-k / quarter)
                row[k], row[quarter + k] = math.sin(c * w), math.cos(c * w)
                row[2 * quarter + k], row[3 * quarter + k] = math.sin(r * w), math.cos(r * w)
    # float64 formula vs float32 table: at most half a float32 ulp of values in [-1, 1].
    torch.testing.assert_close(table[0].double(), expected, rtol=0, atol=6e-8)
    # The official code's construction (MAE's numpy helper, meshgrid with the width axis first).
    torch.testing.assert_close(table, mae_sincos_table(dim, grid_size, num_prefix_rows), rtol=0, atol=0)


# Task heads

SMALL = {"size": {"shortest_edge": 32}, "crop_size": {"height": 32, "width": 32}, "num_frames": 4}


@pytest.mark.parametrize(
    "problem_type,labels,loss_fn",
    [
        ("single_label_classification", torch.tensor([2, 0]), lambda logits, y: F.cross_entropy(logits, y)),
        ("multi_label_classification", torch.tensor([[1.0, 0, 1], [0, 1, 0]]), F.binary_cross_entropy_with_logits),
        ("regression", torch.randn(2, 3), F.mse_loss),
    ],
)
def test_classification_losses(problem_type, labels, loss_fn):
    model = SlotSSMForVideoClassification(tiny_config(num_labels=3, problem_type=problem_type))
    out = model(video(model.config), labels=labels)
    assert out.logits.shape == (2, 3)
    torch.testing.assert_close(out.loss, loss_fn(out.logits, labels))


@pytest.mark.parametrize("pooling", ["last", "mean"])
def test_classifier_reads_the_configured_frames(pooling):
    model = SlotSSMForVideoClassification(tiny_config(num_labels=4, classifier_pooling=pooling)).eval()
    frames = video(model.config)
    with torch.no_grad():
        out = model(frames, output_hidden_states=True)
        slots = out.hidden_states[-1]
        pooled = slots[:, -1] if pooling == "last" else slots.mean(1)
        torch.testing.assert_close(out.logits, model.classifier(model.norm(pooled).mean(1)))


def test_gradient_accumulation_matches_a_larger_batch(tmp_path):
    """Two micro-batches of 2 with accumulation give the update of one batch of 4 (mean losses, equal sizes)."""
    rows = [{"pixel_values_videos": np.random.default_rng(i).random((3, 32, 32, 3), dtype=np.float32), "labels": i % 3} for i in range(4)]
    collator = VideoCollator(SlotSSMVideoProcessor(**SMALL))
    torch.manual_seed(0)
    initial = SlotSSMForVideoClassification(tiny_config(num_labels=3)).state_dict()
    trained = []
    for batch_size, accumulation in [(4, 1), (2, 2)]:
        model = SlotSSMForVideoClassification(tiny_config(num_labels=3))
        model.load_state_dict(initial)
        args = TrainingArguments(
            tmp_path / f"run{batch_size}", max_steps=1, per_device_train_batch_size=batch_size,
            gradient_accumulation_steps=accumulation, learning_rate=0.1, optim="sgd", lr_scheduler_type="constant",
            report_to=[], use_cpu=True, dataloader_drop_last=False, data_seed=0, seed=0,
        )  # fmt: skip
        Trainer(model=model, args=args, train_dataset=rows, data_collator=collator).train()
        trained.append(model.state_dict())
    changed = [k for k in initial if not torch.equal(initial[k], trained[0][k])]
    assert changed
    for key in changed:
        torch.testing.assert_close(trained[0][key], trained[1][key], rtol=1e-4, atol=1e-6, msg=key)


def test_trainer_finds_labels_and_the_pipeline_classifies_a_file(tmp_path):
    for name in ["left", "right"]:
        (tmp_path / "data" / name).mkdir(parents=True)
        for i in range(2):
            write_video(tmp_path / "data" / name / f"{i}.mp4", synthetic_frames(6, 40, 40, seed=i + 5 * (name == "left")))
    dataset = video_folder_dataset(tmp_path / "data")
    names = dataset.features["labels"].names
    config = tiny_config(num_labels=2, id2label=dict(enumerate(names)), label2id={n: i for i, n in enumerate(names)}, num_frames=4)
    model = SlotSSMForVideoClassification(config)
    processor = SlotSSMVideoProcessor(**SMALL)
    args = TrainingArguments(tmp_path / "out", max_steps=2, per_device_train_batch_size=2, report_to=[], use_cpu=True)
    trainer = Trainer(model=model, args=args, train_dataset=dataset, eval_dataset=dataset, data_collator=VideoCollator(processor))
    trainer.train()
    assert "eval_loss" in trainer.evaluate()
    model.save_pretrained(tmp_path / "model")
    processor.save_pretrained(tmp_path / "model")
    assert type(AutoModelForVideoClassification.from_pretrained(tmp_path / "model")).__name__ == "SlotSSMForVideoClassification"
    classify = pipeline("video-classification", model=str(tmp_path / "model"))
    result = classify(dataset[0]["pixel_values_videos"])
    assert sorted(r["label"] for r in result) == ["left", "right"]
    assert sum(r["score"] for r in result) == pytest.approx(1.0, abs=1e-5)


def test_prediction_is_teacher_forced_on_the_clip():
    model = SlotSSMForVideoPrediction(tiny_config())
    frames = video(model.config, frames=4)
    out = model(frames)
    assert out.predictions.shape == frames.shape
    torch.testing.assert_close(out.loss, F.mse_loss(out.predictions[:, :-1], frames[:, 1:]))
    nxt = torch.randn_like(frames)
    torch.testing.assert_close(model(frames, labels=nxt).loss, F.mse_loss(out.predictions, nxt))
    assert model(frames[:, :1]).loss is None


def test_rollout_feeds_each_prediction_back():
    model = SlotSSMForVideoPrediction(tiny_config(decoder_type="spatial_broadcast", decoder_initial_size=4)).eval()
    context = video(model.config, frames=3)
    rolled = model.rollout(context, num_steps=4)
    assert rolled.shape == (2, 4, 3, 32, 32)
    with torch.no_grad():  # the same thing through full passes over the growing clip
        clip = context
        for step in range(4):
            prediction = model(clip).predictions[:, -1:]
            torch.testing.assert_close(rolled[:, step : step + 1], prediction, rtol=1e-4, atol=1e-5)
            clip = torch.cat([clip, prediction], dim=1)


def test_depth_losses():
    model = SlotSSMForVideoDepthEstimation(tiny_config(num_dense_channels=2))
    frames = video(model.config, frames=3)
    depth = torch.rand(2, 3, 2, 32, 32) + 0.1
    out = model(frames, labels=depth)
    assert out.predicted_depth.shape == depth.shape
    torch.testing.assert_close(out.loss, F.mse_loss(out.predicted_depth, depth))
    with pytest.raises(ValueError, match=r"expected labels of shape \(2, 3, 2, 32, 32\) \(a map per frame\)"):
        model(frames, labels=depth[:, :, :1])

    log_model = SlotSSMForVideoDepthEstimation(tiny_config(dense_loss="scale_invariant"))
    depth = torch.rand(2, 3, 1, 32, 32) + 0.1
    depth[0, 0, 0, :4] = 0  # invalid pixels are ignored
    out = log_model(frames, labels=depth)
    log_prediction = out.predicted_depth.log()
    valid = depth > 0
    d = (log_prediction - depth.clamp_min(1e-12).log())[valid]
    torch.testing.assert_close(out.loss, (d**2).mean() - 0.5 * d.mean() ** 2, rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="no pixel of the labels is positive"):
        scale_invariant_log_loss(torch.zeros(4), torch.zeros(4))
