"""The ConvS5 family: configuration and official variants, the scan against a float64 step-by-step reference and
the single-step recurrence, the model against a float64 NumPy evaluation of the official model on a Flax parameter
tree (official module names and shapes), rollout and streaming, and bad inputs."""

import math

import numpy as np
import pytest
import torch
from convs5_checkpoints import frames_like, official_params, to_nhwc

from slotssm_hf import FAMILIES, ConvS5Config, ConvS5ForVideoPrediction, ConvS5Model, ConvS5VideoProcessor, stream
from slotssm_hf.conversion.convert_convs5 import convert_params, infer_config
from slotssm_hf.conversion.flax_checkpoint import flatten_tree
from slotssm_hf.conversion.references.convs5 import FlaxConvS5Reference
from slotssm_hf.models.convs5_scan import convs5_scan, convs5_scan_ref, convs5_step, discretize_zoh

TINY = dict(
    image_size=16, encoder_depths=[8, 16], decoder_depths=[8, 16], resnet_num_groups=4, hidden_size=16,
    num_hidden_layers=2, ssm_size=16, ssm_num_groups=4, num_frames=8, num_context_frames=4,
)  # fmt: skip


def tiny_config(**overrides):
    return ConvS5Config(**{**TINY, **overrides})


def converted(params, image_size=16):
    config = infer_config(flatten_tree(params), image_size=image_size)
    model = ConvS5ForVideoPrediction(config).eval()
    model.load_state_dict(convert_params(params, config), strict=True)
    return model


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
