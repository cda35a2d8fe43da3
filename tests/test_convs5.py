"""The ConvS5 family: configuration and official variants, the scan against a float64 step-by-step reference and
the single-step recurrence, the model against a float64 NumPy evaluation of the official model on a Flax parameter
tree (official module names and shapes), the converter on official-format checkpoint files, rollout and streaming,
the processor, and remote-code loading."""

import json
import math

import numpy as np
import pytest
import torch
from flax_format import write_flax_checkpoint
from transformers import AutoModelForPreTraining, AutoVideoProcessor

from slotssm_hf import (
    FAMILIES,
    ConvS5Config,
    ConvS5ForVideoPrediction,
    ConvS5Model,
    ConvS5VideoProcessor,
    stream,
)
from slotssm_hf.cli import main as cli
from slotssm_hf.conversion import convert_convs5
from slotssm_hf.conversion.convert_convs5 import convert_convs5_checkpoint, convert_params, infer_config
from slotssm_hf.conversion.conversion_utils import ConversionError
from slotssm_hf.conversion.references.convs5 import FlaxConvS5Reference
from slotssm_hf.models.convs5_scan import convs5_scan, convs5_scan_ref, convs5_step, discretize_zoh
from slotssm_hf.conversion.flax_checkpoint import flatten_tree
from slotssm_hf.training.metrics import video_prediction_metrics
from slotssm_hf.synthetic.moving_digits import bouncing_trajectory, moving_mnist

TINY = dict(
    image_size=16, encoder_depths=[8, 16], decoder_depths=[8, 16], resnet_num_groups=4, hidden_size=16,
    num_hidden_layers=2, ssm_size=16, ssm_num_groups=4, num_frames=8, num_context_frames=4,
)  # fmt: skip


def tiny_config(**overrides):
    return ConvS5Config(**{**TINY, **overrides})


def frames_like(config, batch=2, frames=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, frames, config.num_channels, config.image_size, config.image_size, generator=g) * 2 - 1


# Official-layout parameter trees, with the official module names and shapes (NVlabs/ConvSSM, noVQ model).


def official_params(rng, channels=1, depths=(32, 64), d_model=32, ssm_size=16, layers=2, k=3):
    def normal(*shape, scale=1.0):
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    def conv(cin, cout, size=3, bias=True):
        p = {"kernel": normal(size, size, cin, cout, scale=1 / math.sqrt(cin * size * size))}
        return {**p, "bias": normal(cout, scale=0.1)} if bias else p

    def norm(c):
        return {"scale": 1 + normal(c, scale=0.1), "bias": normal(c, scale=0.1)}

    def teco_block(cin, cout):
        block = {
            "GroupNorm_0": norm(cin), "Conv_0": conv(cin, cout), "GroupNorm_1": norm(cout),
            "Conv_1": conv(cout, cout, bias=False), "AddBias_0": {"bias": normal(cout, scale=0.1)},
        }  # fmt: skip
        return {**block, "skip": conv(cin, cout, size=1, bias=False)} if cin != cout else block

    p = ssm_size // 2

    def sequence_layer():
        return {
            "norm": norm(d_model),
            "seq": {
                # some positive real parts, which the forward pass clips
                "Lambda_re": rng.uniform(-0.6, 0.05, p).astype(np.float32),
                "Lambda_im": normal(p, scale=30.0),
                "log_step": rng.uniform(math.log(1e-3), math.log(0.1), (p, 1)).astype(np.float32),
                "B": normal(p, d_model * k * k, 2, scale=1 / math.sqrt(d_model * k * k)),
                "C": normal(k, k, p, d_model, 2, scale=1 / math.sqrt(p * k * k)),
                "C_D_conv": {"GroupNorm_0": norm(d_model), "Conv_0": conv(d_model, d_model, k),
                             "GroupNorm_1": norm(d_model), "Conv_1": conv(d_model, d_model, k)},
            },
        }  # fmt: skip

    widths = [depths[0], *reversed(depths)]
    return {
        "encoder": {
            "Conv_0": conv(channels, depths[0]),
            **{f"ResNetBlock_{i}": teco_block(depths[max(i - 1, 0)], d) for i, d in enumerate(depths)},
        },
        "action_embeds": {"embedding": normal(2, 1)},
        "action_conv": {"Conv_0": conv(depths[-1] + 1, d_model, size=1)},
        "sequence_model": {f"layers_{i}": sequence_layer() for i in range(layers)},
        "decoder": {
            "Conv_0": conv(d_model, depths[0]),
            **{f"ResNetBlock_{i}": teco_block(a, b) for i, (a, b) in enumerate(zip(widths, widths[1:]))},
            "LayerNorm_0": norm(depths[0]),
            "Dense_0": {"kernel": normal(depths[0], channels, scale=depths[0] ** -0.5), "bias": normal(channels)},
        },
    }


def converted(params, image_size=16):
    config = infer_config(flatten_tree(params), image_size=image_size)
    model = ConvS5ForVideoPrediction(config).eval()
    model.load_state_dict(convert_params(params, config), strict=True)
    return model


def official_checkpoint(path, params):
    """A file as flax.training.checkpoints writes the official TrainState (Adam moments as the optimizer state)."""
    def zeros(tree):
        return {k: zeros(v) if isinstance(v, dict) else np.zeros_like(v) for k, v in tree.items()}

    tree = {
        "step": np.int32(2000),
        "params": params,
        "opt_state": {"0": {"count": np.int32(2000), "mu": zeros(params), "nu": zeros(params)}, "1": {}},
        "model_state": {},
    }
    write_flax_checkpoint(tree, path)
    return path


def to_nhwc(video):
    return video.permute(0, 1, 3, 4, 2).double().numpy()


# Configuration


def test_defaults_are_the_official_moving_mnist_300_run():
    config = ConvS5Config()
    assert (config.image_size, config.num_channels, config.encoder_depths, config.decoder_depths) == (
        64, 1, [64, 128, 256], [64, 128, 256]
    )
    assert (config.hidden_size, config.num_hidden_layers, config.ssm_size, config.state_size) == (256, 8, 256, 128)
    assert (config.b_kernel_size, config.c_kernel_size, config.d_kernel_size, config.clip_eigs) == (3, 3, 3, True)
    assert (config.latent_size, config.layer_norm_eps, config.group_norm_eps, config.hidden_act) == (
        16, 1e-6, 1e-6, "gelu_pytorch_tanh"
    )
    assert (config.num_frames, config.num_context_frames, config.loss_weight) == (300, 100, 0.5)


@pytest.mark.parametrize(
    "variant, parameters", [("convs5-moving-mnist-300", 21_681_411), ("convs5-moving-mnist-600", 7_409_155)]
)
def test_official_variants_have_the_official_sizes(variant, parameters):
    with torch.device("meta"):
        model = ConvS5ForVideoPrediction(FAMILIES["convs5"].config(variant))
    assert sum(p.numel() for p in model.parameters()) == parameters


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"encoder_depths": [8, 10]}, "multiples of resnet_num_groups"),
        ({"decoder_depths": [8]}, "as many entries"),
        ({"image_size": 17}, "divisible by 2"),
        ({"b_kernel_size": 2}, "odd"),
        ({"ssm_size": 15}, "multiple of 2 \\* ssm_blocks"),
        ({"hidden_size": 18}, "ssm_num_groups"),
        ({"dt_min": 0.5}, "dt_min <= dt_max"),
        ({"num_hidden_layers": 0}, "positive"),
    ],
)
def test_invalid_configs_are_refused(overrides, message):
    with pytest.raises(Exception, match=message):
        tiny_config(**overrides)


# The scan


def random_system(states=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    lambda_re = -torch.rand(states, generator=g) * 0.8
    lambda_im = torch.randn(states, generator=g) * 2e3  # |Δ Im Λ| up to hundreds of radians per step
    log_step = torch.empty(states).uniform_(math.log(1e-3), math.log(0.1), generator=g)
    return lambda_re, lambda_im, log_step


def test_discretisation_is_the_zero_order_hold():
    lambda_re, lambda_im, log_step = random_system()
    b_real, b_imag = torch.randn(2, 12, 3, 3, 3).unbind(0)
    dt_lambda, b_bar = discretize_zoh(lambda_re, lambda_im, log_step, b_real, b_imag, clip_eigs=False)
    lam = lambda_re.double().numpy() + 1j * lambda_im.double().numpy()
    step = np.exp(log_step.double().numpy())
    expected_b = ((np.exp(lam * step) - 1) / lam)[:, None, None, None] * (b_real.numpy() + 1j * b_imag.numpy())
    np.testing.assert_allclose(dt_lambda.numpy(), lam * step, rtol=1e-12)
    np.testing.assert_allclose(b_bar[:12].numpy(), expected_b.real, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(b_bar[12:].numpy(), expected_b.imag, rtol=1e-5, atol=1e-6)


def test_eigenvalue_clipping_is_applied_in_the_forward_pass_only():
    lambda_re = torch.tensor([0.3, -0.2])
    dt_lambda, _ = discretize_zoh(lambda_re, torch.zeros(2), torch.zeros(2), torch.ones(2, 1, 1, 1),
                                  torch.zeros(2, 1, 1, 1), clip_eigs=True)  # fmt: skip
    np.testing.assert_allclose(dt_lambda.real.numpy(), [-1e-4, -0.2])


@pytest.mark.parametrize("chunk_size", [None, 1, 4, 7, 50])
@pytest.mark.parametrize("with_state", [False, True])
def test_scan_equals_float64_step_by_step_reference(chunk_size, with_state):
    lambda_re, lambda_im, log_step = random_system()
    no_b = torch.zeros(12, 1, 1, 1)
    dt_lambda, _ = discretize_zoh(lambda_re, lambda_im, log_step, no_b, no_b, clip_eigs=True)
    g = torch.Generator().manual_seed(1)
    bu = torch.randn(3, 23, 2, 12, 5, generator=g)
    state = torch.randn(3, 2, 12, 5, generator=g) if with_state else None
    expected = convs5_scan_ref(bu, dt_lambda, state)
    torch.testing.assert_close(convs5_scan(bu, dt_lambda, state, chunk_size).double(), expected, rtol=1e-5, atol=2e-5)
    stepped, x = [], state
    for t in range(bu.shape[1]):
        x = convs5_step(bu[:, t], dt_lambda, x)
        stepped.append(x)
    torch.testing.assert_close(torch.stack(stepped, 1).double(), expected, rtol=1e-5, atol=2e-5)


def test_scan_stays_finite_and_exact_on_long_clips():
    # Slow and fast decays side by side over 2000 steps: powers as large as Λ̄^2000 never overflow or divide.
    lambda_re = torch.tensor([-1e-4, -5.0, -0.3, -1e-4])
    dt_lambda = torch.complex(lambda_re, torch.tensor([0.0, 3.0, 700.0, 1e4])).to(torch.complex128) * 0.05
    bu = torch.randn(1, 2000, 2, 4, 3)
    scanned = convs5_scan(bu, dt_lambda)
    assert torch.isfinite(scanned).all()
    torch.testing.assert_close(scanned.double(), convs5_scan_ref(bu, dt_lambda), rtol=1e-4, atol=1e-3)


def test_scan_gradients_match_the_reference():
    lambda_re, lambda_im, log_step = random_system(states=4)
    params = [p.double().requires_grad_() for p in (lambda_re, lambda_im, log_step)]
    bu = torch.randn(2, 9, 2, 4, 3, dtype=torch.float64, requires_grad=True)
    zeros = torch.zeros(4, 1, 1, 1, dtype=torch.float64)

    def grads(scan):
        dt_lambda, _ = discretize_zoh(*params, zeros, zeros, True)
        return torch.autograd.grad(scan(bu, dt_lambda).square().sum(), [bu, *params])

    for ours, expected in zip(grads(lambda b, d: convs5_scan(b, d, chunk_size=3)), grads(convs5_scan_ref)):
        torch.testing.assert_close(ours, expected, rtol=1e-8, atol=1e-8)


# The model against the official model evaluated on its Flax parameters


def test_teacher_forced_predictions_and_rollout_match_the_official_model():
    params = official_params(np.random.default_rng(0))
    model = converted(params)
    video = frames_like(model.config, batch=2, frames=5)
    reference = FlaxConvS5Reference(params)
    with torch.no_grad():
        predictions = model(video).predictions
        rollout = model.rollout(video[:, :3], 4)
    np.testing.assert_allclose(to_nhwc(predictions), reference.predict(to_nhwc(video)), atol=5e-5)
    np.testing.assert_allclose(to_nhwc(rollout), reference.rollout(to_nhwc(video[:, :3]), 4), atol=5e-5)


def test_loss_is_the_official_teacher_forced_loss():
    model = ConvS5ForVideoPrediction(tiny_config(loss_weight=0.3)).eval()
    video = frames_like(model.config, frames=4)
    with torch.no_grad():
        outputs = model(video)
    error = (outputs.predictions[:, :-1] - video[:, 1:]).double().numpy()
    # The official loss sums over (width, channel) of channels-last frames and averages over the rest.
    error = error.transpose(0, 1, 3, 4, 2)
    expected = 0.3 * (error**2).sum(axis=(-2, -1)).mean() + 0.7 * np.abs(error).sum(axis=(-2, -1)).mean()
    np.testing.assert_allclose(outputs.loss.item(), expected, rtol=1e-5)
    with torch.no_grad():
        assert model(video[:, :1]).loss is None
        labelled = model(video[:, :3], labels=video[:, 1:])
    np.testing.assert_allclose(labelled.loss.item(), expected, rtol=1e-5)


def test_training_step_reaches_every_parameter():
    model = ConvS5ForVideoPrediction(tiny_config()).train()
    model(frames_like(model.config)).loss.backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []


def test_activation_checkpointing_gives_the_same_gradients():
    model = ConvS5ForVideoPrediction(tiny_config()).train()
    video = frames_like(model.config)
    model(video).loss.backward()
    expected = {name: p.grad.clone() for name, p in model.named_parameters()}
    model.zero_grad()
    model.activation_checkpointing_enable()
    model(video).loss.backward()
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.grad, expected[name], rtol=1e-5, atol=1e-6, msg=name)


# Rollout and streaming


def test_rollout_feeds_each_prediction_back():
    model = ConvS5ForVideoPrediction(tiny_config()).eval()
    context = frames_like(model.config, frames=3)
    with torch.no_grad():
        rollout = model.rollout(context, 3)
        frames = context
        for _ in range(3):  # the whole clip so far through the parallel scan, from scratch each time
            frames = torch.cat([frames, model(frames).predictions[:, -1:]], dim=1)
        generated = model.generate(context, 3)
    torch.testing.assert_close(rollout, frames[:, 3:], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(generated, frames, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("pieces", [[(0, 1)] + [(t, t + 1) for t in range(1, 7)], [(0, 3), (3, 4), (4, 7)]])
def test_cached_pieces_continue_the_video(pieces):
    model = ConvS5ForVideoPrediction(tiny_config()).eval()
    video = frames_like(model.config, frames=7)
    with torch.no_grad():
        full = model(video)
        cache, outputs = None, []
        for start, stop in pieces:
            out = model(video[:, start:stop], cache=cache, use_cache=True)
            assert cache is None or out.cache is cache  # updated in place, never grown
            cache = out.cache
            outputs.append(out.predictions)
    torch.testing.assert_close(torch.cat(outputs, dim=1), full.predictions, rtol=1e-4, atol=1e-5)
    state = cache.layers[0].recurrent_states[0]
    assert state.shape == (2, 2, model.config.state_size, model.config.latent_size, model.config.latent_size)


def test_stream_runs_frames_through_the_recurrence():
    model = ConvS5ForVideoPrediction(tiny_config()).eval()
    frames = np.random.default_rng(0).integers(0, 256, (5, 16, 16, 3), dtype=np.uint8)
    processor = ConvS5VideoProcessor(size={"shortest_edge": 16}, crop_size={"height": 16, "width": 16})
    pieces = [out.predictions for out in stream(model, list(frames), processor=processor, chunk_size=2)]
    with torch.no_grad():
        full = model(processor(frames, num_frames=5)["pixel_values_videos"]).predictions
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, rtol=1e-4, atol=1e-5)


def test_no_cache_is_returned_unless_asked():
    model = ConvS5Model(tiny_config()).eval()
    with torch.no_grad():
        assert model(frames_like(model.config)).cache is None


def test_outputs_and_tuples():
    model = ConvS5ForVideoPrediction(tiny_config()).eval()
    video = frames_like(model.config, frames=3)
    with torch.no_grad():
        outputs = model(video, output_hidden_states=True)
        as_tuple = model(video, return_dict=False)
    assert outputs.predictions.shape == video.shape and outputs.predictions.abs().max() <= 1
    assert outputs.last_hidden_state.shape == (2, 3, 16, 8, 8) and len(outputs.hidden_states) == 3
    torch.testing.assert_close(as_tuple[0], outputs.loss)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda v: v[0], "batch, frames, 1, 16, 16"),
        (lambda v: v[:, :, :, :8], "batch, frames, 1, 16, 16"),
        (lambda v: (v * 127.5 + 127.5).to(torch.uint8), "floating dtype"),
        (lambda v: v * 127.5 + 127.5, r"in \[-1, 1\]"),
    ],
)
def test_bad_inputs_are_refused(make, message):
    model = ConvS5Model(tiny_config())
    with pytest.raises(ValueError, match=message):
        model(make(frames_like(model.config)))


def test_processor_defaults_give_the_official_frames():
    rng = np.random.default_rng(0)
    video = rng.integers(0, 256, (6, 64, 64), dtype=np.uint8)
    pixels = ConvS5VideoProcessor()(np.repeat(video[..., None], 3, -1), num_frames=6)["pixel_values_videos"]
    assert pixels.shape == (1, 6, 1, 64, 64)
    torch.testing.assert_close(pixels[0, :, 0], torch.from_numpy(2 * (video / 255.0) - 1).float(), atol=1e-6, rtol=0)


# Conversion


def test_converter_maps_every_layout_change():
    params = official_params(np.random.default_rng(1), channels=3, depths=(32, 32, 64), d_model=64, ssm_size=32, k=5)
    config = infer_config(flatten_tree(params), image_size=16)
    assert (config.num_channels, config.encoder_depths, config.hidden_size) == (3, [32, 32, 64], 64)
    assert config.state_size == 16
    assert (config.b_kernel_size, config.c_kernel_size, config.d_kernel_size) == (5, 5, 5)
    state = convert_params(params, config)
    seq = params["sequence_model"]["layers_1"]["seq"]
    p, u, i, j = 4, 7, 1, 3  # B row p, input channel u, kernel tap (i, j)
    assert state["convs5.layers.1.ssm.B_imag"][p, u, i, j] == seq["B"][p, u * 25 + i * 5 + j, 1]
    assert state["convs5.layers.1.ssm.C_real"][u, p, i, j] == seq["C"][i, j, p, u, 0]
    assert torch.equal(state["convs5.layers.1.ssm.log_step"], torch.from_numpy(seq["log_step"][:, 0]))
    kernel = params["encoder"]["ResNetBlock_2"]["skip"]["kernel"]
    assert torch.equal(state["convs5.encoder.blocks.2.skip.weight"], torch.from_numpy(kernel).permute(3, 2, 0, 1))
    dense = params["decoder"]["Dense_0"]["kernel"]
    assert torch.equal(state["decoder.proj.weight"], torch.from_numpy(dense).T)
    assert torch.equal(state["decoder.norm.weight"], torch.from_numpy(params["decoder"]["LayerNorm_0"]["scale"]))


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda p: p["encoder"].update(Extra_0={"kernel": np.zeros(3, np.float32)}), "does not have.*Extra_0"),
        (lambda p: p["decoder"].pop("LayerNorm_0"), "missing.*decoder.norm.weight"),
        (lambda p: p["sequence_model"]["layers_1"]["seq"].update(Lambda_im=np.zeros(5, np.float32)), "wrong shape"),
    ],
)
def test_ledger_refuses_checkpoints_that_do_not_fit(edit, message):
    params = official_params(np.random.default_rng(0))
    edit(params)
    config = infer_config(flatten_tree(params), image_size=16)
    with pytest.raises(ConversionError, match=message):
        convert_params(params, config)


def test_cli_converts_an_official_checkpoint_and_verifies_it(tmp_path):
    params = official_params(np.random.default_rng(2))
    run = tmp_path / "run"  # the official training's checkpoint folder
    run.mkdir()
    official_checkpoint(run / "checkpoint_2000", params)
    official_checkpoint(run / "checkpoint_1000", official_params(np.random.default_rng(3)))
    assert cli(["convert-convs5", str(run), str(tmp_path / "out"), "--verify", "--image-size", "16"]) == 0
    model = AutoModelForPreTraining.from_pretrained(tmp_path / "out").eval()
    assert isinstance(model, ConvS5ForVideoPrediction)
    video = frames_like(model.config, frames=3)
    with torch.no_grad():  # the highest step was converted
        np.testing.assert_allclose(
            to_nhwc(model(video).predictions), FlaxConvS5Reference(params).predict(to_nhwc(video)), atol=5e-5
        )
    card = (tmp_path / "out" / "README.md").read_text()
    assert "non-commercial" in card and "checkpoint_2000" in card
    assert isinstance(AutoVideoProcessor.from_pretrained(tmp_path / "out"), ConvS5VideoProcessor)


def test_failed_conversions_leave_nothing_behind(tmp_path, capsys):
    params = official_params(np.random.default_rng(0))
    params["decoder"].pop("Dense_0")
    official_checkpoint(tmp_path / "checkpoint_1", params)
    (tmp_path / "not_a_checkpoint").write_bytes(b"\x00\x01garbage")
    assert cli(["convert-convs5", str(tmp_path / "checkpoint_1"), str(tmp_path / "out"), "--image-size", "16"]) == 2
    assert "decoder.proj.weight" in capsys.readouterr().err
    with pytest.raises(ConversionError, match="not a Flax msgpack checkpoint|not the map"):
        convert_convs5_checkpoint(tmp_path / "not_a_checkpoint", tmp_path / "out")
    with pytest.raises(ConversionError, match="(?i)no flax checkpoint"):
        convert_convs5_checkpoint(tmp_path / "out", tmp_path / "out2")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint_1", "not_a_checkpoint"]


def test_verification_catches_a_layout_mistake(tmp_path, monkeypatch):
    official_checkpoint(tmp_path / "checkpoint_1", official_params(np.random.default_rng(0)))
    c_kernel = convert_convs5.LAYOUT_CHANGES["c_kernel"]
    # C taken as a convolution kernel (flipped) instead of a cross-correlation kernel: shapes fit, numbers do not.
    flipped = lambda array, key, config: [k[..., ::-1, ::-1] for k in c_kernel(array, key, config)]  # noqa: E731
    monkeypatch.setitem(convert_convs5.LAYOUT_CHANGES, "c_kernel", flipped)
    with pytest.raises(ConversionError, match="verification failed"):
        convert_convs5_checkpoint(tmp_path / "checkpoint_1", tmp_path / "out", verify=True, image_size=16,
                                  log=lambda *_: None)  # fmt: skip
    assert not (tmp_path / "out").exists()


# Data, metrics and the training job


def test_moving_mnist_is_seeded_and_bounces_like_the_official_generator(tmp_path):
    small = moving_mnist(num_videos=2, num_frames=12, image_size=32, digit_size=12, seed=3, cache_dir=str(tmp_path))
    large = moving_mnist(num_videos=3, num_frames=12, image_size=32, digit_size=12, seed=3, cache_dir=str(tmp_path))
    videos = np.asarray(large.with_format("numpy")["video"], dtype=np.uint8)
    assert videos.shape == (3, 12, 32, 32, 1) and videos.max() > 127
    np.testing.assert_array_equal(np.asarray(small.with_format("numpy")["video"]), videos[:2])
    assert not np.array_equal(videos[0], videos[1])
    corners = bouncing_trajectory(np.random.default_rng(0), 400, 36)
    steps = np.abs(np.diff(corners, axis=0))
    assert corners.min() >= 0 and corners.max() <= 36 and (corners == 0).any() and (corners == 36).any()
    assert steps.max() <= math.ceil(0.15 * 36)  # the official step: 0.15 of the free canvas per frame


def ssim_by_windows(x, y, size=11, sigma=1.5, c1=0.01**2, c2=0.03**2):
    """SSIM of two 2-D images from its definition: weighted statistics of every whole 11 x 11 window."""
    taps = np.exp(-0.5 * ((np.arange(size) - size // 2) / sigma) ** 2)
    weights = np.outer(taps, taps) / taps.sum() ** 2
    values = []
    for i in range(x.shape[0] - size + 1):
        for j in range(x.shape[1] - size + 1):
            a, b = x[i : i + size, j : j + size], y[i : i + size, j : j + size]
            mean_a, mean_b = (weights * a).sum(), (weights * b).sum()
            var_a, var_b = (weights * (a - mean_a) ** 2).sum(), (weights * (b - mean_b) ** 2).sum()
            cov = (weights * (a - mean_a) * (b - mean_b)).sum()
            values.append(
                (2 * mean_a * mean_b + c1) * (2 * cov + c2) / ((mean_a**2 + mean_b**2 + c1) * (var_a + var_b + c2))
            )
    return np.mean(values)


def test_video_prediction_metrics_follow_their_definitions():
    g = torch.Generator().manual_seed(0)
    targets = torch.rand(2, 3, 2, 16, 16, generator=g) * 2 - 1
    predictions = (targets + 0.3 * torch.randn(targets.shape, generator=g)).clamp(-1, 1)
    metrics = video_prediction_metrics(predictions, targets)
    x, y = ((predictions.double() + 1) / 2).numpy(), ((targets.double() + 1) / 2).numpy()
    per_frame_mse = ((x - y) ** 2).mean(axis=(2, 3, 4))
    expected_ssim = np.mean([ssim_by_windows(x[b, t, c], y[b, t, c]) for b in range(2) for t in range(3) for c in range(2)])
    np.testing.assert_allclose(metrics["mse"], per_frame_mse.mean(), rtol=1e-10)
    np.testing.assert_allclose(metrics["psnr"], (-10 * np.log10(per_frame_mse)).mean(), rtol=1e-10)
    np.testing.assert_allclose(metrics["ssim"], expected_ssim, rtol=1e-10)
    assert video_prediction_metrics(targets, targets)["ssim"] == pytest.approx(1.0)


def test_training_job_improves_the_rollouts(tmp_path, capsys):
    arguments = ["train", "--model", "convs5", "--image-size", "32", "--num-frames", "6", "--context-frames", "3",
                 "--steps", "6", "--train-videos", "4", "--eval-videos", "2", "--batch-size", "2",
                 "--output-dir", str(tmp_path)]  # fmt: skip
    assert cli(arguments) == 0
    results = json.loads((tmp_path / "final" / "eval_results.json").read_text())
    assert results["trained"]["eval_loss"] < results["untrained"]["untrained_loss"]
    assert results["trained"]["eval_rollout_mse"] < results["untrained"]["untrained_rollout_mse"]
    assert {"eval_rollout_psnr", "eval_rollout_ssim"} <= set(results["trained"])
    model = ConvS5ForVideoPrediction.from_pretrained(tmp_path / "final")
    assert model.config.image_size == 32 and model.config.num_frames == 6
    assert isinstance(ConvS5VideoProcessor.from_pretrained(tmp_path / "final"), ConvS5VideoProcessor)


# Loading


