"""The efficiency study's baselines (benchmarks/baselines.py): the slot Transformer and the slot RNN stream exactly
what a full pass computes, and the Transformer is causal."""

import sys

import pytest
import torch
from repository import REPO
from slotssm_inputs import tiny_config, video

sys.path.insert(0, str(REPO / "benchmarks"))
from baselines import CausalTimeAttention, build_slot_model, cache_state_bytes, new_cache

BASELINES = ("transformer", "rnn")


def stream_in_pieces(model, config, frames, pieces, temporal_model):
    """Run `frames` (batch, T, ...) as consecutive (start, stop) pieces through one cache; the slots of every frame."""
    cache, outputs = new_cache(config, temporal_model), []
    for start, stop in pieces:
        out = model(frames[:, start:stop], cache=cache, use_cache=True)
        assert out.cache is cache
        outputs.append(out.last_hidden_state)
    return torch.cat(outputs, dim=1), cache


@pytest.mark.parametrize("temporal_model", BASELINES)
@pytest.mark.parametrize("prefix", [1, 4])
def test_prefix_then_single_frames_equals_full_pass(temporal_model, prefix):
    config = tiny_config()
    model = build_slot_model(config, temporal_model).eval()
    frames = video(config, frames=8)
    pieces = [(0, prefix)] + [(t, t + 1) for t in range(prefix, 8)]
    with torch.no_grad():
        full = model(frames).last_hidden_state
        streamed, _ = stream_in_pieces(model, config, frames, pieces, temporal_model)
    torch.testing.assert_close(streamed, full, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("temporal_model", BASELINES)
def test_chunks_of_several_frames_continue_the_video(temporal_model):
    config = tiny_config()
    model = build_slot_model(config, temporal_model).eval()
    frames = video(config, frames=9)
    with torch.no_grad():
        full = model(frames).last_hidden_state
        streamed, _ = stream_in_pieces(model, config, frames, [(0, 3), (3, 4), (4, 7), (7, 9)], temporal_model)
    torch.testing.assert_close(streamed, full, rtol=1e-4, atol=1e-5)


def test_transformer_is_causal():
    config = tiny_config()
    model = build_slot_model(config, "transformer").eval()
    frames = video(config, frames=7)
    changed = frames.clone()
    changed[:, 4:] = torch.randn_like(changed[:, 4:])
    with torch.no_grad():
        before, after = model(frames).last_hidden_state, model(changed).last_hidden_state
    torch.testing.assert_close(after[:, :4], before[:, :4], rtol=0, atol=0)
    assert not torch.allclose(after[:, 4:], before[:, 4:])


def test_transformer_mixer_attends_to_every_earlier_frame():
    # Each output depends on all earlier inputs (not a window) and no later one: the gradient of output t with
    # respect to the inputs is non-zero exactly at frames <= t.
    mixer = CausalTimeAttention(d_model=16, num_heads=2)
    inputs = torch.randn(1, 6, 16, requires_grad=True)
    mixer(inputs)[0, 3].sum().backward()
    touched = inputs.grad[0].abs().sum(dim=-1) > 0
    assert touched.tolist() == [True, True, True, True, False, False]


def test_transformer_cache_grows_by_a_frame_and_the_rnn_state_stays_constant():
    config = tiny_config()
    frames = video(config, frames=6)
    sizes = {}
    for temporal_model in BASELINES:
        model = build_slot_model(config, temporal_model).eval()
        with torch.no_grad():
            _, cache = stream_in_pieces(model, config, frames, [(0, 2), (2, 3)], temporal_model)
            after_three = cache_state_bytes(cache, config.num_hidden_layers)
            model(frames[:, 3:6], cache=cache, use_cache=True)
        sizes[temporal_model] = (after_three, cache_state_bytes(cache, config.num_hidden_layers))
    assert sizes["transformer"][1] == 2 * sizes["transformer"][0]
    assert sizes["rnn"][1] == sizes["rnn"][0] > 0

