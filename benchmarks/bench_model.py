"""Whole-model CPU speed of the default SlotSSM (the official training run's architecture), float32.

The model is `SlotSSMForVideoReconstruction(SlotSSMConfig())`: ViT encoder (6 layers, width 256) and ViT decoder
(4 layers) at 128 px with patch 8, 6 slots of width 256, 4 slot blocks with Mamba2. The official model is
`slotssm_hf.conversion.references.slotssm.OfficialReference` built from the official run's config.json dicts (torch's
`nn.TransformerEncoder` encoder and decoder, transformers' own pure-torch `Mamba2Mixer`); our model holds the same
weights, converted with `convert_official_state_dicts`, and the two outputs are checked to agree before timing.

Three tables, all from one run:

(a) Profile of one training step of ours (`--profile-shape`, default 1 clip x 8 frames): forward and backward time
    of each part (module hooks mark where each part's forward and backward start and end; the backward is
    attributed by `register_full_backward_pre_hook` / `register_full_backward_hook`), its share of the step, the
    floating-point operations it ran (matrix multiplies, convolutions and attention, counted per part with
    torch's flop formulas in a second step, whose time is not used) and the rate it reached, against a roofline
    measured in the same run: forward+backward of a 256 -> 1024 `nn.Linear` (the encoder MLP's shape) on as
    many tokens as the encoder sees. Parts that run no matrix multiply show "-".
(b) Training step (forward, reconstruction loss, backward; no optimizer update) at `--train-shape` (default
    4 x 16): official reference and ours, interleaved, median of `--repeats` after one warm-up whose peak memory
    is recorded (anonymous resident memory, see `measure.py`). A third row runs ours under bfloat16 autocast,
    which is not float32 numerics (the note under the table gives its deviation): it shows what bfloat16 matrix
    multiplies give on a CPU with AVX512-BF16 instructions, where reduced precision is acceptable.
(c) Inference (`torch.no_grad`, backbone and decoder) over `--inference-frames` frames: batch 1 as one clip,
    batch 1 streamed frame by frame with the recurrent cache (ours only: the official model has no recurrent
    state API), and batch 8 as one clip; frames/s and the peak memory of the warm-up call.

Run it with no more threads than free cores: on a machine shared with other jobs, threads wait for descheduled
ones at every parallel region, and the timings then show the contention rather than the models.

Usage: python benchmarks/bench_model.py [--threads 1] [--repeats 2] [--profile-shape 1x8] [--train-shape 4x16]
       [--inference-frames 16] [--no-bf16]
"""

import argparse
import statistics
import time
from collections import defaultdict

import torch
import torch.nn.functional as F
import transformers
from measure import PeakAnonymousMemory, environment_line
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry, sdpa_backward_flop_count, sdpa_flop_count

from slotssm_hf import SlotSSMForVideoReconstruction
from slotssm_hf.conversion.convert_slotssm import convert_official_config, convert_official_state_dicts
from slotssm_hf.models.modeling_slotssm import decode_frames
from slotssm_hf.conversion.references.slotssm import OfficialReference

# The official training run's config.json dicts (encoder, slotssm, decoder sub-models).
OFFICIAL_CONFIGS = (
    {
        "model_type": "vit_encoder", "image_size": 128, "patch_size": 8, "num_channels": 3, "hidden_size": 256,
        "num_hidden_layers": 6, "num_attention_heads": 4, "output_size": 256, "intermediate_size": None,
        "hidden_act": "gelu", "hidden_dropout_prob": 0.0, "num_cls_tokens": 1, "learn_initial_cls_tokens": True,
        "initializer_range": 0.02, "image_norm_mode": "zero_one", "output_dim": 256,
    },
    {
        "model_type": "slot_ssm", "num_slots": 6, "num_blocks": 4, "d_model": 256, "use_cross_attn": True,
        "space_attn_num_heads": 4, "input_d_model": 256, "use_inverted_attention": True, "encoder_attn_num_heads": 1,
        "use_ffn": False, "mamba_version": "mamba2", "attn_impl": "flash_attention_2", "mamba_d_state": 128,
        "mamba_d_conv": 4, "mamba_expand": 2, "mamba_headdim": 64,
    },
    {
        "model_type": "vit_decoder", "input_size": 256, "hidden_size": 256, "num_hidden_layers": 4,
        "num_attention_heads": 4, "intermediate_size": None, "hidden_act": "relu", "hidden_dropout_prob": 0.0,
        "image_size": 128, "patch_size": 8, "num_channels": 3, "num_cls_tokens": 6,
    },
)  # fmt: skip

# Profile rows, in order; slot-block sub-modules map to their part by attribute name.
PARTS = (
    "encoder", "cross-attention", "SSM", "self-attention", "MLP", "block residuals, layout", "decoder", "loss", "other"
)
BLOCK_PARTS = {
    "cross_attention_input_proj": "cross-attention",
    "cross_attention_input_norm": "cross-attention",
    "cross_attention_slot_norm": "cross-attention",
    "cross_attention": "cross-attention",
    "time_mixer_norm": "SSM",
    "time_mixer": "SSM",
    "self_attention_norm": "self-attention",
    "self_attention": "self-attention",
    "mlp_norm": "MLP",
    "mlp": "MLP",
}
ROOFLINE_IN, ROOFLINE_OUT = 256, 1024


def build_models():
    """(official reference, ours) with the same random weights, in training mode."""
    torch.manual_seed(0)
    reference = OfficialReference(*OFFICIAL_CONFIGS)
    config = convert_official_config(*OFFICIAL_CONFIGS)
    state = convert_official_state_dicts(
        config, reference.encoder.state_dict(), reference.slotssm.state_dict(), reference.decoder.state_dict()
    )
    ours = SlotSSMForVideoReconstruction(config)
    ours.load_state_dict(state, strict=True)
    clip = torch.randn(1, 2, 3, 128, 128)
    with torch.no_grad():
        difference = (ours(clip).reconstruction - reference(clip)[0]).abs().max().item()
    if difference > 1e-4:
        raise RuntimeError(f"ours and the official reference disagree by {difference:.2e}")
    return reference.train(), ours.train()


def clip_of(batch: int, frames: int):
    return torch.randn(batch, frames, 3, 128, 128, generator=torch.Generator().manual_seed(batch * 1000 + frames))


def ours_step(model, clip):
    model.zero_grad(set_to_none=True)
    model(clip).loss.backward()


def ours_bf16_step(model, clip):
    model.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(clip).loss
    loss.backward()


def reference_step(model, clip):
    model.zero_grad(set_to_none=True)
    F.mse_loss(model(clip)[0], clip).backward()


def timed(function, *args) -> float:
    start = time.perf_counter()
    function(*args)
    return time.perf_counter() - start


def matmul_roofline(tokens: int, repeats: int = 5) -> float:
    """GFLOP/s of forward+backward of a 256 -> 1024 linear layer on `tokens` tokens (best of `repeats`)."""
    layer = torch.nn.Linear(ROOFLINE_IN, ROOFLINE_OUT)
    inputs = torch.randn(tokens, ROOFLINE_IN, requires_grad=True)
    flop = 3 * 2 * tokens * ROOFLINE_IN * ROOFLINE_OUT
    best = min(timed(lambda: layer(inputs).sum().backward()) for _ in range(repeats + 1))
    return flop / best / 1e9


class StepProfiler:
    """Attributes the time (and, inside `count_flops`, the flop) of a training step of ours to `PARTS`, separately
    for forward and backward, through module hooks. Everything outside a hooked module goes to "other"."""

    def __init__(self, model):
        self.seconds = defaultdict(float)
        self.flop = defaultdict(int)
        self.stack, self.phase, self.last = ["other"], "forward", time.perf_counter()
        self.handles = []
        self.hook(model, "loss", backward=False)  # the head's own forward: loss and output assembly
        self.hook(model.slotssm, "other", backward=False)
        # The encoder runs last in the backward pass, and its input needs no gradient (so transformers' full
        # backward hook would fire as soon as its output's gradient arrives): it holds the rest of the step.
        self.hook(model.slotssm.encoder, "encoder", backward_end=False)
        for block in model.slotssm.layers:
            self.hook(block, "block residuals, layout")
            for name, part in BLOCK_PARTS.items():
                if getattr(block, name, None) is not None:  # no MLP without use_ffn
                    self.hook(getattr(block, name), part)
        self.hook(model.decoder, "decoder")

    def hook(self, module, part: str, backward: bool = True, backward_end: bool = True):
        self.handles.append(module.register_forward_pre_hook(lambda *_: self.enter(part)))
        self.handles.append(module.register_forward_hook(lambda *_: self.leave()))
        if backward:
            self.handles.append(module.register_full_backward_pre_hook(lambda *_: self.enter(part)))
        if backward and backward_end:
            self.handles.append(module.register_full_backward_hook(lambda *_: self.leave()))

    def key(self):
        return self.stack[-1], self.phase

    def switch(self):
        now = time.perf_counter()
        self.seconds[self.key()] += now - self.last
        self.last = now

    def enter(self, part: str):
        self.switch()
        if self.stack[-1] == "loss" and self.phase == "backward":
            self.stack.pop()  # the loss's backward ends where the first module's backward begins
        self.stack.append(part)

    def leave(self):
        self.switch()
        self.stack.pop()

    def step(self, model, clip):
        model.zero_grad(set_to_none=True)
        self.stack, self.phase, self.last = ["other"], "forward", time.perf_counter()
        loss = model(clip).loss
        self.switch()
        self.stack, self.phase = ["other", "loss"], "backward"
        loss.backward()
        self.switch()

    def count_flops(self, model, clip):
        seconds = dict(self.seconds)
        with CountFlops(self):
            self.step(model, clip)
        self.seconds = defaultdict(float, seconds)

    def remove(self):
        for handle in self.handles:
            handle.remove()


class CountFlops(TorchDispatchMode):
    """Adds every operation's flop (torch's formulas, plus the CPU flash attention's) to the profiler's part."""

    def __init__(self, profiler: StepProfiler):
        super().__init__()
        self.profiler = profiler

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        packet = func._overloadpacket
        if packet is torch.ops.aten._scaled_dot_product_flash_attention_for_cpu:
            count = sdpa_flop_count(*(tensor.shape for tensor in args[:3]))
        elif packet is torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward:
            count = sdpa_backward_flop_count(*(tensor.shape for tensor in args[:4]))
        elif packet in flop_registry:
            count = flop_registry[packet](*args, **kwargs, out_val=out)
        else:
            count = 0
        self.profiler.flop[self.profiler.key()] += count
        return out


def profile_table(model, batch: int, frames: int):
    clip = clip_of(batch, frames)
    ours_step(model, clip)
    plain = timed(ours_step, model, clip)
    roofline = matmul_roofline(batch * frames * 257)
    profiler = StepProfiler(model)
    profiler.step(model, clip)  # warm-up of the hooks
    profiler.seconds.clear()
    profiler.step(model, clip)
    profiler.count_flops(model, clip)
    profiler.remove()

    total = sum(profiler.seconds.values())
    print(
        f"(a) profile of one training step of ours, {batch} x {frames} frames: {total:.2f} s with the hooks, "
        f"{plain:.2f} s without; fp32 matmul roofline (Linear {ROOFLINE_IN}->{ROOFLINE_OUT} fwd+bwd on "
        f"{batch * frames * 257} tokens, same run): {roofline:.1f} GFLOP/s"
    )
    header = (
        f"{'part':<24}  {'fwd ms':>8}  {'bwd ms':>8}  {'share':>6}  {'GFLOP':>7}  {'GFLOP/s':>8}  {'of roofline':>11}"
    )
    print(header)
    print("-" * len(header))
    rows = [(part, (part,)) for part in PARTS] + [("total", PARTS)]
    for label, parts in rows:
        forward = sum(profiler.seconds[part, "forward"] for part in parts)
        backward = sum(profiler.seconds[part, "backward"] for part in parts)
        if forward + backward == 0:  # a part this configuration lacks
            continue
        flop = sum(profiler.flop[part, phase] for part in parts for phase in ("forward", "backward"))
        rate = flop / (forward + backward) / 1e9
        rates = f"{rate:>8.1f}  {rate / roofline:>11.0%}" if flop else f"{'-':>8}  {'-':>11}"
        print(
            f"{label:<24}  {forward * 1e3:>8.0f}  {backward * 1e3:>8.0f}  {(forward + backward) / total:>6.1%}  "
            f"{flop / 1e9:>7.2f}  {rates}"
        )
    print()


def training_table(reference, ours, batch: int, frames: int, repeats: int, bf16: bool):
    clip = clip_of(batch, frames)
    rows = {"official reference": (reference_step, reference), "ours": (ours_step, ours)}
    if bf16:
        rows["ours, bf16 autocast"] = (ours_bf16_step, ours)
    peaks, times = {}, defaultdict(list)
    for name, (step, model) in rows.items():
        with PeakAnonymousMemory() as memory:
            step(model, clip)
        peaks[name] = memory.peak_bytes
    for _ in range(repeats):
        for name, (step, model) in rows.items():
            times[name].append(timed(step, model, clip))

    print(f"(b) training step, {batch} x {frames} frames at 128 px, median of {repeats} after 1 warm-up")
    header = f"{'model':<22}  {'s/step':>7}  {'frames/s':>8}  {'speed-up vs official':>20}  {'peak MB':>8}"
    print(header)
    print("-" * len(header))
    official = statistics.median(times["official reference"])
    for name in rows:
        seconds = statistics.median(times[name])
        print(
            f"{name:<22}  {seconds:>7.2f}  {batch * frames / seconds:>8.2f}  {official / seconds:>20.2f}  "
            f"{peaks[name] / 2**20:>8.0f}"
        )
    if bf16:
        with torch.no_grad():
            exact = ours(clip[:1]).reconstruction
            with torch.autocast("cpu", dtype=torch.bfloat16):
                rounded = ours(clip[:1]).reconstruction.float()
        print(
            f"bf16 autocast is not float32 numerics: its reconstruction differs from float32 by up to "
            f"{(rounded - exact).abs().max().item():.1e} (values of magnitude {exact.abs().max().item():.1f})"
        )
    print()


@torch.no_grad()
def ours_whole(model, clip):
    decode_frames(model.decoder, model.slotssm(clip).last_hidden_state)


@torch.no_grad()
def ours_streamed(model, clip):
    cache = None
    for t in range(clip.shape[1]):
        output = model.slotssm(clip[:, t : t + 1], cache=cache, use_cache=True)
        cache = output.cache
        decode_frames(model.decoder, output.last_hidden_state)


@torch.no_grad()
def reference_whole(model, clip):
    model(clip)


def inference_table(reference, ours, frames: int, repeats: int):
    reference.eval(), ours.eval()
    rows = [
        ("batch 1, whole clip", 1, {"official reference": (reference_whole, reference), "ours": (ours_whole, ours)}),
        ("batch 1, streamed", 1, {"ours": (ours_streamed, ours)}),
        ("batch 8, whole clip", 8, {"official reference": (reference_whole, reference), "ours": (ours_whole, ours)}),
    ]
    print(f"(c) inference, backbone + decoder, {frames} frames at 128 px, median of {repeats} after 1 warm-up")
    header = (
        f"{'input':<20}  {'official frames/s':>17}  {'ours frames/s':>13}  {'speed-up':>8}  "
        f"{'official peak MB':>16}  {'ours peak MB':>12}"
    )
    print(header)
    print("-" * len(header))
    for label, batch, runs in rows:
        clip = clip_of(batch, frames)
        peak = {}
        for name, (function, model) in runs.items():
            with PeakAnonymousMemory() as memory:
                function(model, clip)
            peak[name] = memory.peak_bytes / 2**20
        times = defaultdict(list)
        for _ in range(repeats):
            for name, (function, model) in runs.items():
                times[name].append(timed(function, model, clip))
        rate = {name: batch * frames / statistics.median(seconds) for name, seconds in times.items()}
        official = rate.get("official reference")
        cells = (
            f"{official:>17.2f}" if official else f"{'-':>17}",
            f"{rate['ours']:>13.2f}",
            f"{rate['ours'] / official:>8.2f}" if official else f"{'-':>8}",
            f"{peak['official reference']:>16.0f}" if official else f"{'-':>16}",
            f"{peak['ours']:>12.0f}",
        )
        print(f"{label:<20}  " + "  ".join(cells))
    reference.train(), ours.train()
    print()


def shape(text: str) -> tuple[int, int]:
    batch, frames = text.split("x")
    return int(batch), int(frames)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--profile-shape", type=shape, default=(1, 8), metavar="BATCHxFRAMES")
    parser.add_argument("--train-shape", type=shape, default=(4, 16), metavar="BATCHxFRAMES")
    parser.add_argument("--inference-frames", type=int, default=16)
    parser.add_argument("--no-bf16", dest="bf16", action="store_false", help="skip the bfloat16 autocast row")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    transformers.logging.set_verbosity_error()
    reference, ours = build_models()

    print(environment_line())
    print(f"default SlotSSM reconstruction model (official architecture), float32, 128 px, {args.threads} thread(s)\n")
    profile_table(ours, *args.profile_shape)
    training_table(reference, ours, *args.train_shape, args.repeats, args.bf16)
    inference_table(reference, ours, args.inference_frames, args.repeats)


if __name__ == "__main__":
    main()
