"""The whole-model benchmark's profiler (benchmarks/bench_model.py): every part's forward and backward are
attributed to it, so each part's backward runs twice its forward's multiply-adds (gradients for the inputs and
for the weights), and the parts' flop add up to the whole step's as torch's own counter counts it."""

import sys

import pytest
from repository import REPO
from slotssm_inputs import tiny_config, video
from torch.utils.flop_counter import FlopCounterMode

from slotssm_hf import SlotSSMForVideoReconstruction

sys.path.insert(0, str(REPO / "benchmarks"))
from bench_model import PARTS, StepProfiler


@pytest.fixture
def profiled():
    """A tiny ViT model (eager attention, which torch's flop counter counts) after one profiled, counted step."""
    config = tiny_config(use_ffn=True)
    model = SlotSSMForVideoReconstruction._from_config(config, attn_implementation="eager").train()
    frames = video(config, batch=2, frames=3)
    profiler = StepProfiler(model)
    profiler.step(model, frames)
    profiler.count_flops(model, frames)
    profiler.remove()
    return model, frames, profiler


@pytest.mark.parametrize("part", ["cross-attention", "self-attention", "MLP", "decoder"])
def test_backward_of_a_part_is_attributed_to_it(profiled, part):
    _, _, profiler = profiled
    assert profiler.flop[part, "forward"] > 0
    assert profiler.flop[part, "backward"] == 2 * profiler.flop[part, "forward"]


def test_parts_add_up_to_the_step(profiled):
    model, frames, profiler = profiled
    assert set(part for part, _ in profiler.seconds) <= set(PARTS)
    phases = ("forward", "backward")
    assert all(profiler.seconds[part, phase] > 0 for part in ("encoder", "decoder") for phase in phases)
    model.zero_grad(set_to_none=True)
    with FlopCounterMode(display=False) as counter:
        model(frames).loss.backward()
    assert sum(profiler.flop.values()) == counter.get_total_flops()
    assert not model._forward_pre_hooks and not model.decoder._backward_hooks  # removed
