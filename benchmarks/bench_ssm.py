"""CPU benchmark of the slotssm_hf Mamba mixers against transformers' pure-torch Mamba mixers.

What it measures. For each mixer, state size and sequence length T, both implementations run on the same
input of shape (48, T, 256) float32 (48 sequences = 8 videos x 6 slots) with the same weights (copied from
ours into the transformers module with `load_state_dict`, which works because the parameter names match;
the outputs are checked to agree before timing):

- mamba2: `slotssm_hf.models.mamba_mixers.Mamba2Mixer` (d_state 128, headdim 64) against
  `transformers.models.mamba2.modeling_mamba2.Mamba2Mixer`;
- mamba1-s16 / mamba1-s128: `slotssm_hf.models.mamba_mixers.Mamba1Mixer` (d_state 16 / 128) against
  `transformers.models.mamba.modeling_mamba.MambaMixer`.

On CPU transformers runs its reference torch path (no mamba_ssm kernels); its "falling back" warnings are
silenced. Three numbers per implementation:

- forward time, under `torch.no_grad()`;
- forward+backward time: `mixer(x).sum().backward()` with `x.requires_grad`, parameter gradients cleared
  before each call so every call does the same work;
- peak memory of forward+backward: a background thread reads the process's anonymous resident memory
  (resident minus shared pages in /proc/self/statm, so code pages of libraries touched for the first time do
  not count) about every millisecond; the figure is the peak minus the value just before the call, taken
  after `gc.collect()` and `malloc_trim(0)` (which hands freed heap memory back to the OS, so memory glibc
  kept from earlier calls does not hide the new call's use). It is process memory, so allocator
  fragmentation counts; it includes the parameter gradients. It is measured on the forward+backward warm-up
  call, not on the timed repeats, because the sampling and the trim slow a call down.

How. `torch.set_num_threads(--threads)`. For each row the implementations are interleaved: one timed warm-up
call of each, then `--repeats` rounds that call ours then transformers, and the median is reported. Where a
single call takes longer than `--baseline-budget` seconds (in practice only transformers' Mamba1, whose
backward through its per-step loop is extremely slow) that one call is the measurement, with no repeats; and
an implementation that exceeded the budget at some T is skipped at every larger T of that mixer, shown as
"skipped (> budget)". Memory grows with T (transformers' Mamba1 keeps (48, 512, T, d_state) tensors for its
backward), so at large T and d_state 128 a single call can exhaust the machine: an implementation is also
skipped, as "skipped (> memory)", where its peak at the previous T scaled by the ratio of the T's exceeds
MEMORY_HEADROOM of the memory the system reports available.

The machine matters: with 2 threads, a core taken by another process can slow the many small per-step
operations of the Mamba1 recurrences by up to 10x. Run it on an otherwise idle machine.
That projection only decides what to skip; every number printed was measured. Rows print as they complete.

Goals: Mamba2 forward+backward >= 5x faster than transformers at T=16 and >= 2x at T=256; Mamba1
forward+backward >= 3x faster at T=256; never slower than transformers at any T; peak memory no higher.

Usage: python benchmarks/bench_ssm.py [--threads 2] [--repeats 3] [--baseline-budget 120]
       [--seq-lens 16 64 256 1024] [--mixers mamba2 mamba1-s16 mamba1-s128]
"""

import argparse
import statistics
import time
from dataclasses import dataclass

import torch
import transformers
from measure import PeakAnonymousMemory, available_memory_bytes, environment_line
from transformers import Mamba2Config, MambaConfig
from transformers.models.mamba.modeling_mamba import MambaMixer as HFMamba1Mixer
from transformers.models.mamba2.modeling_mamba2 import Mamba2Mixer as HFMamba2Mixer

from slotssm_hf.models.mamba_mixers import Mamba1Mixer, Mamba2Mixer

BATCH = 48  # 8 videos x 6 slots
D_MODEL = 256
MIXERS = ("mamba2", "mamba1-s16", "mamba1-s128")
IMPLEMENTATIONS = ("ours", "hf")
OVER_BUDGET = "skipped (> budget)"
OVER_MEMORY = "skipped (> memory)"
MEMORY_HEADROOM = 0.8  # fraction of the available memory one call may be projected to use


def build_pair(mixer_name: str):
    """(d_state, {"ours": ..., "hf": ...}) for `mixer_name`, ours' weights copied into transformers' mixer."""
    torch.manual_seed(0)
    if mixer_name == "mamba2":
        d_state = 128
        ours = Mamba2Mixer(d_model=D_MODEL, d_state=d_state, d_conv=4, expand=2, headdim=64)
        config = Mamba2Config(
            hidden_size=D_MODEL,
            state_size=d_state,
            expand=2,
            head_dim=64,
            num_heads=8,
            n_groups=1,
            conv_kernel=4,
            chunk_size=256,
            layer_norm_epsilon=1e-5,
            num_hidden_layers=1,
        )
        theirs = HFMamba2Mixer(config, layer_idx=0)
    else:
        d_state = int(mixer_name.removeprefix("mamba1-s"))
        ours = Mamba1Mixer(d_model=D_MODEL, d_state=d_state, expand=2)
        config = MambaConfig(
            hidden_size=D_MODEL,
            state_size=d_state,
            expand=2,
            intermediate_size=2 * D_MODEL,
            time_step_rank=16,
            conv_kernel=4,
            num_hidden_layers=1,
        )
        theirs = HFMamba1Mixer(config, layer_idx=0)
    theirs.load_state_dict(ours.state_dict())
    check = torch.randn(2, 32, D_MODEL)
    with torch.no_grad():
        torch.testing.assert_close(ours(check), theirs(check), atol=1e-4, rtol=1e-4)
    return d_state, {"ours": ours, "hf": theirs}


def run_forward(mixer, x):
    with torch.no_grad():
        mixer(x)


def run_forward_backward(mixer, x):
    mixer.zero_grad(set_to_none=True)
    mixer(x.detach().requires_grad_()).sum().backward()


@dataclass
class Measurement:
    seconds: float
    peak_bytes: int | None = None


def timed_call(step, mixer, x, track_memory: bool = False) -> Measurement:
    if not track_memory:
        start = time.perf_counter()
        step(mixer, x)
        return Measurement(time.perf_counter() - start)
    with PeakAnonymousMemory() as memory:
        start = time.perf_counter()
        step(mixer, x)
        seconds = time.perf_counter() - start
    return Measurement(seconds, memory.peak_bytes)


def measure_interleaved(step, mixers: dict, x, repeats: int, budget_s: float, track_memory: bool = False):
    """Per implementation: median seconds of `step`, and the peak memory of its warm-up call.

    One timed warm-up call each, then `repeats` rounds alternating the implementations. An implementation
    whose warm-up took longer than `budget_s` keeps that single call as its measurement.
    """
    warmups = {name: timed_call(step, mixer, x, track_memory) for name, mixer in mixers.items()}
    repeated = {name: [] for name in mixers}
    for _ in range(repeats):
        for name, mixer in mixers.items():
            if warmups[name].seconds <= budget_s:
                repeated[name].append(timed_call(step, mixer, x).seconds)
    return {
        name: Measurement(statistics.median(repeated[name] or [warmups[name].seconds]), warmups[name].peak_bytes)
        for name in mixers
    }


VALUE_WIDTH = len(OVER_BUDGET)
COLUMNS = (  # (header, width)
    ("mixer", 11),
    ("d_state", 7),
    ("T", 5),
    ("ours fwd ms", VALUE_WIDTH),
    ("hf fwd ms", VALUE_WIDTH),
    ("fwd x", 7),
    ("ours fwd+bwd ms", VALUE_WIDTH),
    ("hf fwd+bwd ms", VALUE_WIDTH),
    ("fwd+bwd x", 9),
    ("ours peak MB", VALUE_WIDTH),
    ("hf peak MB", VALUE_WIDTH),
    ("mem hf/ours", 11),
)


def print_line(cells):
    print("  ".join(str(cell).rjust(width) for cell, (_, width) in zip(cells, COLUMNS)), flush=True)


def compare(ours, hf) -> tuple:
    """Cells (ours, hf, hf / ours) for two measured floats; a skipped side is its reason and the ratio '-'."""
    if isinstance(ours, str) or isinstance(hf, str):
        cells = [value if isinstance(value, str) else f"{value:.1f}" for value in (ours, hf)]
        return (*cells, "-")
    return f"{ours:.1f}", f"{hf:.1f}", f"{hf / ours:.2f}x" if ours > 0 else "n/a"


def format_row(mixer_name, d_state, seq_len, forward, backward, skipped):
    def values(results, field, scale):
        return [
            skipped[name] if name in skipped else getattr(results[name], field) * scale for name in IMPLEMENTATIONS
        ]

    return (
        mixer_name,
        d_state,
        seq_len,
        *compare(*values(forward, "seconds", 1e3)),
        *compare(*values(backward, "seconds", 1e3)),
        *compare(*values(backward, "peak_bytes", 2**-20)),
    )


def benchmark_mixer(mixer_name: str, seq_lens, repeats: int, budget_s: float):
    """Measure `mixer_name` at each T in increasing order, printing one row per T."""
    d_state, pair = build_pair(mixer_name)
    skipped = {}  # implementation -> reason, kept for every larger T
    previous = None  # (T, {implementation: peak bytes}) of the last measured row
    for seq_len in sorted(seq_lens):
        if previous is not None:
            previous_len, previous_peaks = previous
            for name, peak_bytes in previous_peaks.items():
                if peak_bytes * seq_len / previous_len > MEMORY_HEADROOM * available_memory_bytes():
                    skipped[name] = OVER_MEMORY
        mixers = {name: mixer for name, mixer in pair.items() if name not in skipped}
        x = torch.randn(BATCH, seq_len, D_MODEL, generator=torch.Generator().manual_seed(seq_len))
        forward = measure_interleaved(run_forward, mixers, x, repeats, budget_s)
        backward = measure_interleaved(run_forward_backward, mixers, x, repeats, budget_s, track_memory=True)
        print_line(format_row(mixer_name, d_state, seq_len, forward, backward, skipped))
        for name in mixers:
            if max(forward[name].seconds, backward[name].seconds) > budget_s:
                skipped[name] = OVER_BUDGET
        previous = (seq_len, {name: backward[name].peak_bytes for name in mixers})


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2)")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls after the warm-up (default 3)")
    parser.add_argument(
        "--baseline-budget",
        type=float,
        default=120.0,
        metavar="SECONDS",
        help="a single call slower than this is measured once, and larger T are skipped (default 120)",
    )
    parser.add_argument("--seq-lens", type=int, nargs="+", default=[16, 64, 256, 1024], metavar="T")
    parser.add_argument("--mixers", nargs="+", choices=MIXERS, default=list(MIXERS))
    return parser.parse_args()


def main():
    args = parse_args()
    torch.set_num_threads(args.threads)
    transformers.logging.set_verbosity_error()
    print(environment_line())
    print(
        f"input ({BATCH}, T, {D_MODEL}) float32; median of {args.repeats} after 1 warm-up; baseline budget "
        f"{args.baseline_budget:g} s; x = hf / ours; peak = anonymous RSS above its pre-call value (warm-up call)"
    )
    print_line(header for header, _ in COLUMNS)
    print_line("-" * width for _, width in COLUMNS)
    for mixer_name in args.mixers:
        benchmark_mixer(mixer_name, args.seq_lens, args.repeats, args.baseline_budget)


if __name__ == "__main__":
    main()
