"""Efficiency of SlotSSM against a slot Transformer and a slot RNN on the CPU: training and streaming vs length.

What is compared. Three `SlotSSMModel`s that differ only in the model over time inside every slot block
(benchmarks/baselines.py): "slotssm" (the library's Mamba2 mixer), "transformer" (causal self-attention over time
per slot, rotary positions, a KV cache for streaming) and "rnn" (a GRU over time per slot, SAVi-style). Everything
else is the same code: cross-attention from the slots to the frame's tokens, slot self-attention, the residuals.
The size is small so the whole study runs in minutes on two cores: 4 slots of width 128, 2 slot blocks, 4 heads
of slot self-attention (also the Transformer's heads over time), Mamba2 with d_state 128 and headdim 64 (the
official values), inverted cross-attention, float32, 4 videos per batch (16 slot sequences).

The image encoder is left out: it costs the same per frame for all three and would hide the temporal model. The
inputs are precomputed encoder feature maps, (batch, T, 64, 4, 4): 16 tokens of width 64 per frame, as a small CNN
gives for a 32 px frame. The model's encoder is replaced by `FeatureMapTokens`, which only flattens each map into
tokens, so the rest of `SlotSSMModel.forward` (and its cache handling) runs unchanged.

What is measured.
- Training step: forward over T frames, the loss `mean(slots ** 2)`, backward (no optimizer update). Time is the
  median of `--repeats` steps after a warm-up step; peak memory is the anonymous resident memory above its value
  before the warm-up step (sampled every millisecond, see `measure.py`), gradients and activations included. An
  implementation whose warm-up step took longer than `--budget` seconds keeps that step as its time and is skipped
  at larger T.
- Streaming: each model first takes T frames in one prefix pass with `use_cache=True` (the state equals that of T
  single steps; tests/test_baselines.py), then single frames continue from the cache. Latency is the median time of
  one single-frame step (frames T+2 .. T+1+`--stream-repeats`; the Transformer's cache grows by one frame per step,
  a negligible change). "state MB" is the size of the tensors the cache carries from frame to frame after T frames
  (SlotSSM: conv and SSM states; Transformer: keys and values of every frame; RNN: the GRU hidden state); "step
  peak MB" is the process memory peak of the first step (frame T+1) above its value before the step.

Every training row measures all three implementations interleaved (warm-ups one after the other, then rounds
calling each once), so ratios within a row share the machine's conditions; the streaming rounds step every
(T, implementation) pair once, so the streaming rows share them too. An implementation whose projected training
peak (its previous row's peak scaled by T) exceeds half the memory the system reports available is skipped ("over
memory"). Shared machines inflate small-op timings several-fold: the script first waits until the CPUs are at
least `--min-idle` idle and prints the idle share it started at; every training row and the streaming table print
the share of the CPUs other processes used while they ran, and one where that exceeded `--max-others` is measured
again after another wait (at most `--retries` times; all waits together at most `--max-wait` seconds).

Memory allocation. By default glibc serves blocks over 32 MB with fresh pages that the kernel faults in and zeroes
at every step; tensors reach that size around T=1024 here, and with the three models interleaved SlotSSM's step
time at T=1024 was 7.9x that at T=256 instead of ~4.4x. So the script first makes glibc keep freed memory for reuse
(`measure.keep_freed_memory`, as a caching allocator would; shown on the environment line); `--default-malloc`
measures with glibc's defaults.

Goals: SlotSSM's training time at T=1024 at most 4.4x that at T=256 (linear in T); its per-frame streaming
latency and state memory after 4096 frames at most 1.1x those after 16 (constant), while the Transformer's grow;
SlotSSM trains faster than the slot RNN at every T >= 256.

Usage: python benchmarks/bench_efficiency.py [--threads 2] [--train-lens 16 64 256 1024 4096]
       [--stream-lens 16 256 1024 4096] [--repeats 3] [--stream-repeats 21] [--budget 60] [--plot efficiency.png]
       [--min-idle 0.9] [--max-wait 1200] [--max-others 0.1] [--retries 2] [--default-malloc]
"""

import argparse
import functools
import os
import statistics
import time

import torch
import transformers
from baselines import TEMPORAL_MODELS, build_slot_model, cache_state_bytes, new_cache
from measure import PeakAnonymousMemory, available_memory_bytes, environment_line, keep_freed_memory
from torch import nn

from slotssm_hf import SlotSSMConfig

BATCH = 4
GRID = 4  # feature-map side: GRID**2 tokens per frame
TOKEN_WIDTH = 64
IDLE_POLL_S = 5.0
OVER_BUDGET = "over budget"
OVER_MEMORY = "over memory"
MEMORY_HEADROOM = 0.5  # fraction of the available memory a training step may be projected to use


class FeatureMapTokens(nn.Module):
    """Precomputed feature maps (frames, TOKEN_WIDTH, GRID, GRID) -> tokens (frames, GRID**2, TOKEN_WIDTH),
    row-major, as the CNN encoder hands them to the slots."""

    def forward(self, feature_maps):
        return feature_maps.flatten(2).transpose(1, 2)


def bench_config() -> SlotSSMConfig:
    # The "frames" the model checks are the feature maps: image_size GRID with TOKEN_WIDTH channels. The encoder
    # fields only need to be valid, as the encoder is replaced.
    return SlotSSMConfig(
        image_size=GRID,
        num_channels=TOKEN_WIDTH,
        encoder_type="cnn",
        cnn_downsampling_ratio=1,
        encoder_hidden_size=8,
        encoder_num_layers=1,
        cnn_blocks_per_stage=1,
        encoder_output_size=TOKEN_WIDTH,
        patch_size=GRID,
        num_slots=4,
        hidden_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        mamba_d_state=128,
        mamba_headdim=64,
    )


def build_models(config) -> dict:
    models = {}
    for name in TEMPORAL_MODELS:
        torch.manual_seed(0)
        model = build_slot_model(config, name)
        model.encoder = FeatureMapTokens()
        models[name] = model
    return models


def feature_maps(frames: int, seed: int) -> torch.Tensor:
    return torch.randn(BATCH, frames, TOKEN_WIDTH, GRID, GRID, generator=torch.Generator().manual_seed(seed))


class CpuShare:
    """CPU time of the whole machine from /proc/stat, and this process's own from /proc/self/stat, so that the share
    of the machine other processes used since the last call can be reported."""

    def __init__(self):
        self._last = self._read()

    @staticmethod
    def _read():
        with open("/proc/stat") as stat:
            fields = [int(value) for value in stat.readline().split()[1:9]]
        idle = fields[3] + fields[4]  # idle + iowait
        with open("/proc/self/stat") as stat:
            own = sum(int(value) for value in stat.read().rsplit(")", 1)[1].split()[11:15])  # utime..cstime
        return sum(fields), idle, own

    def since_last(self) -> tuple[float, float]:
        """(idle share, share used by other processes) of all CPU time since the previous call."""
        total, idle, own = self._read()
        last_total, last_idle, last_own = self._last
        self._last = (total, idle, own)
        elapsed = max(total - last_total, 1)
        others = (elapsed - (idle - last_idle) - (own - last_own)) / elapsed
        return (idle - last_idle) / elapsed, max(others, 0.0)


class QuietMachine:
    """How measurements avoid other processes' load: wait for the CPUs to be `min_idle` idle before starting, and
    measure a row again after such a wait, at most `retries` times, when other processes used more than
    `max_others` of the CPUs while it ran. All waits together last at most `max_wait_s`."""

    def __init__(self, min_idle: float, max_wait_s: float, max_others: float, retries: int):
        self.min_idle, self.wait_left_s, self.max_others, self.retries = min_idle, max_wait_s, max_others, retries
        self.monitor = CpuShare()
        self.disturbed = []  # rows whose final measurement still ran beside more than max_others

    def wait(self) -> float:
        """Poll every IDLE_POLL_S seconds until the idle share reaches `min_idle` or the waiting time is spent;
        returns the idle share of the last poll."""
        polls = CpuShare()
        while True:
            start = time.monotonic()
            time.sleep(IDLE_POLL_S)
            self.wait_left_s -= time.monotonic() - start
            idle, _ = polls.since_last()
            if idle >= self.min_idle or self.wait_left_s <= 0:
                return idle
            print(f"waiting for a quiet machine: idle {idle:.0%} ({max(self.wait_left_s, 0):.0f} s left)", flush=True)


def training_step(model, inputs):
    model.zero_grad(set_to_none=True)
    model(inputs).last_hidden_state.square().mean().backward()


def stream_step(model, frames, cache):
    model(frames, cache=cache, use_cache=True)


def timed(call, *args) -> float:
    start = time.perf_counter()
    call(*args)
    return time.perf_counter() - start


def measure_training(models: dict, frames: int, repeats: int, budget_s: float) -> dict:
    """{name: (median seconds, peak bytes, warm-up seconds)} of one training step at `frames` for each model in
    `models`, interleaved. A warm-up slower than `budget_s` is the single measurement."""
    inputs = feature_maps(frames, seed=frames)
    results = {}
    for name, model in models.items():
        with PeakAnonymousMemory() as memory:
            seconds = timed(training_step, model, inputs)
        results[name] = ([seconds], memory.peak_bytes)
    for _ in range(repeats):
        for name, model in models.items():
            if results[name][0][0] <= budget_s:
                results[name][0].append(timed(training_step, model, inputs))
    return {name: (statistics.median(times[1:] or times), peak, times[0]) for name, (times, peak) in results.items()}


@torch.no_grad()
def measure_streaming(models: dict, config, lens, repeats: int) -> dict:
    """{T: {name: (median seconds of a one-frame step after T frames, state bytes after T frames, first step's peak
    bytes)}}. Every (T, model) pair gets its own cache; the timed rounds step every pair once, so rows with
    different T are measured under the same conditions, as the goals compare them."""
    inputs = {frames: feature_maps(frames + 1 + repeats, seed=frames) for frames in lens}
    caches, results = {}, {}
    for frames in lens:
        for name, model in models.items():
            cache = caches[frames, name] = new_cache(config, name)
            model(inputs[frames][:, :frames], cache=cache, use_cache=True)
            state_bytes = cache_state_bytes(cache, config.num_hidden_layers)
            with PeakAnonymousMemory() as memory:
                stream_step(model, inputs[frames][:, frames : frames + 1], cache)
            results[frames, name] = ([], state_bytes, memory.peak_bytes)
    for step in range(1, 1 + repeats):
        for frames in lens:
            for name, model in models.items():
                frame = inputs[frames][:, frames + step : frames + step + 1]
                results[frames, name][0].append(timed(stream_step, model, frame, caches[frames, name]))
    return {
        frames: {name: (statistics.median(results[frames, name][0]), *results[frames, name][1:]) for name in models}
        for frames in lens
    }


def measure_quietly(measure, quiet: QuietMachine, what: str):
    """`measure()`, repeated after waiting for a quiet machine while other processes used more than
    quiet.max_others of the CPUs during it (at most quiet.retries times); returns (result, others' share)."""
    for attempt in range(quiet.retries + 1):
        quiet.monitor.since_last()
        result = measure()
        others = quiet.monitor.since_last()[1]
        if others <= quiet.max_others:
            return result, others
        if attempt == quiet.retries:
            quiet.disturbed.append(what)
            return result, others
        print(f"  ({what}: other processes used {others:.0%} of the CPUs; measuring again when quiet)", flush=True)
        quiet.wait()


def print_row(cells, widths):
    print("  ".join(str(c).rjust(w) for c, w in zip(cells, widths)), flush=True)


def cell(value, scale, digits=1) -> str:
    return value if isinstance(value, str) else f"{value * scale:.{digits}f}"


def ratio(numerator, denominator) -> str:
    if isinstance(numerator, str) or isinstance(denominator, str) or denominator <= 0:
        return "-"
    return f"{numerator / denominator:.2f}"


def run_training(models, lens, repeats, budget_s, quiet) -> dict:
    """Measure and print the training table; {T: {name: (seconds, peak bytes)}}, a skipped cell its reason."""
    headers = ["T"] + [f"{n} ms" for n in TEMPORAL_MODELS] + ["tf/ssm", "rnn/ssm"]
    headers += [f"{n} MB" for n in TEMPORAL_MODELS] + ["others CPU"]
    widths = [max(len(h), len(OVER_MEMORY)) for h in headers]
    print_row(headers, widths)
    print_row(["-" * w for w in widths], widths)
    skipped, previous, table = {}, {}, {}  # previous: name -> (T, peak bytes) of its last measured row
    for frames in sorted(lens):
        for name, (previous_frames, peak) in previous.items():
            if name not in skipped and peak * frames / previous_frames > MEMORY_HEADROOM * available_memory_bytes():
                skipped[name] = OVER_MEMORY
        active = {name: model for name, model in models.items() if name not in skipped}
        measure = functools.partial(measure_training, active, frames, repeats, budget_s)
        measured, others = measure_quietly(measure, quiet, f"training T={frames}")
        row = {name: (skipped[name], skipped[name]) for name in skipped}
        for name, (seconds, peak, warmup_seconds) in measured.items():
            row[name] = (seconds, peak)
            previous[name] = (frames, peak)
            if warmup_seconds > budget_s:
                skipped[name] = OVER_BUDGET
        table[frames] = row
        cells = [frames] + [cell(row[name][0], 1e3) for name in TEMPORAL_MODELS]
        cells += [ratio(row["transformer"][0], row["slotssm"][0]), ratio(row["rnn"][0], row["slotssm"][0])]
        cells += [cell(row[name][1], 2**-20, 0) for name in TEMPORAL_MODELS] + [f"{others:.0%}"]
        print_row(cells, widths)
    return table


def run_streaming(models, config, lens, repeats, quiet) -> dict:
    """Measure and print the streaming table; {T: {name: (seconds, state bytes, step peak bytes)}}."""
    headers = ["T"] + [f"{n} ms" for n in TEMPORAL_MODELS] + ["tf/ssm"]
    headers += [f"{n} state MB" for n in TEMPORAL_MODELS] + [f"{n} step peak MB" for n in TEMPORAL_MODELS]
    measure = functools.partial(measure_streaming, models, config, sorted(lens), repeats)
    table, others = measure_quietly(measure, quiet, "streaming")
    widths = [len(h) for h in headers]
    print_row(headers, widths)
    print_row(["-" * w for w in widths], widths)
    for frames, row in table.items():
        cells = [frames] + [cell(row[name][0], 1e3, 2) for name in TEMPORAL_MODELS]
        cells += [ratio(row["transformer"][0], row["slotssm"][0])]
        cells += [cell(row[name][1], 2**-20, 2) for name in TEMPORAL_MODELS]
        cells += [cell(row[name][2], 2**-20, 1) for name in TEMPORAL_MODELS]
        print_row(cells, widths)
    print(f"other processes used {others:.0%} of the CPUs during the streaming measurement")
    return table


def report_goals(training: dict, streaming: dict, disturbed: list):
    """Print each goal with its numbers and whether it is met (or why it could not be checked)."""

    def train_seconds(frames, name):
        value = training.get(frames, {}).get(name, (None,))[0]
        return value if isinstance(value, float) else None

    print("\ngoals")
    if disturbed:
        print(f"  (measured beside other processes' load, so less reliable: {', '.join(disturbed)})")
    ssm_256, ssm_1024 = train_seconds(256, "slotssm"), train_seconds(1024, "slotssm")
    if ssm_256 and ssm_1024:
        growth = ssm_1024 / ssm_256
        print(f"  SlotSSM training time T=1024 / T=256 = {growth:.2f} (goal <= 4.4): {'met' if growth <= 4.4 else 'NOT met'}")
    else:
        print("  SlotSSM training time T=1024 / T=256: not measured (needs --train-lens 256 1024)")

    lens = sorted(streaming)
    if len(lens) >= 2:
        first, last = lens[0], lens[-1]
        for index, what in ((0, "per-frame latency"), (1, "state memory")):
            ours = streaming[last]["slotssm"][index] / streaming[first]["slotssm"][index]
            theirs = streaming[last]["transformer"][index] / streaming[first]["transformer"][index]
            verdict = "met" if ours <= 1.1 and theirs > 1.1 else "NOT met"
            print(
                f"  streaming {what} after {last} / after {first} frames: SlotSSM {ours:.2f} (goal <= 1.1), "
                f"Transformer {theirs:.2f} (should grow): {verdict}"
            )
    else:
        print("  streaming: needs at least two --stream-lens")

    long_rows = [frames for frames in sorted(training) if frames >= 256]
    verdicts = []
    for frames in long_rows:
        ssm, rnn = train_seconds(frames, "slotssm"), train_seconds(frames, "rnn")
        if ssm is not None and rnn is not None:
            verdicts.append((frames, rnn / ssm))
    if verdicts:
        all_met = all(speedup > 1 for _, speedup in verdicts)
        listed = ", ".join(f"T={frames}: {speedup:.2f}x" for frames, speedup in verdicts)
        print(f"  SlotSSM trains faster than the slot RNN for T >= 256 (RNN time / SlotSSM time: {listed}): "
              f"{'met' if all_met else 'NOT met'}")
    else:
        print("  SlotSSM vs slot RNN for T >= 256: not measured")


def plot(training: dict, streaming: dict, path: str):
    """The efficiency figure: training time and memory, streaming latency and state memory, each against T."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [
        (training, 0, 1.0, "training step (fwd+bwd), s"),
        (training, 1, 2**-20, "training peak memory, MB"),
        (streaming, 0, 1e3, "streaming: one-frame step after T frames, ms"),
        (streaming, 1, 2**-20, "streaming: carried state, MB"),
    ]
    labels = {"slotssm": "SlotSSM (Mamba2)", "transformer": "slot Transformer (KV cache)", "rnn": "slot RNN (GRU)"}
    figure, axes = plt.subplots(2, 2, figsize=(11, 8))
    for axis, (table, index, scale, title) in zip(axes.flat, panels):
        for name in TEMPORAL_MODELS:
            points = [(frames, row[name][index]) for frames, row in sorted(table.items())]
            points = [(frames, value * scale) for frames, value in points if not isinstance(value, str)]
            if points:
                axis.plot(*zip(*points), marker="o", label=labels[name])
        axis.set_xscale("log", base=2)
        axis.set_yscale("log")
        axis.set_xlabel("sequence length T (frames)")
        axis.set_title(title)
        axis.grid(True, which="both", alpha=0.3)
    axes[0, 0].legend()
    figure.suptitle(f"SlotSSM vs slot Transformer vs slot RNN on CPU ({torch.get_num_threads()} threads, float32)")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    print(f"\nplot written to {os.path.abspath(path)}")


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2)")
    parser.add_argument("--train-lens", type=int, nargs="+", default=[16, 64, 256, 1024, 4096], metavar="T")
    parser.add_argument("--stream-lens", type=int, nargs="+", default=[16, 256, 1024, 4096], metavar="T")
    parser.add_argument("--repeats", type=int, default=3, help="timed training steps after the warm-up (default 3)")
    parser.add_argument("--stream-repeats", type=int, default=21, help="timed streaming steps (default 21)")
    parser.add_argument(
        "--budget", type=float, default=60.0, metavar="SECONDS",
        help="a training step slower than this is measured once and larger T are skipped (default 60)",
    )  # fmt: skip
    parser.add_argument("--plot", default="efficiency.png", metavar="PATH", help="where to write the figure")
    parser.add_argument("--min-idle", type=float, default=0.9, help="idle share to wait for before measuring")
    parser.add_argument(
        "--max-wait", type=float, default=1200.0, metavar="SECONDS",
        help="longest total wait for a quiet machine, before the run and before re-measured rows (default 1200)",
    )  # fmt: skip
    parser.add_argument(
        "--max-others", type=float, default=0.1,
        help="a row during which other processes used more than this share of the CPUs is measured again",
    )  # fmt: skip
    parser.add_argument("--retries", type=int, default=2, help="at most this many re-measurements per row")
    parser.add_argument("--default-malloc", action="store_true", help="keep glibc's allocation defaults")
    return parser.parse_args()


def main():
    args = parse_args()
    if not args.default_malloc:
        keep_freed_memory()
    torch.set_num_threads(args.threads)
    transformers.logging.set_verbosity_error()
    config = bench_config()
    models = build_models(config)
    with torch.no_grad():  # first calls load code and allocate lazily; keep that out of the first row
        for name, model in models.items():
            model(feature_maps(4, seed=0), cache=new_cache(config, name), use_cache=True)
    for model in models.values():
        training_step(model, feature_maps(4, seed=0))

    quiet = QuietMachine(args.min_idle, args.max_wait, args.max_others, args.retries)
    idle = quiet.wait()
    print(environment_line())
    print(f"machine idle share at start: {idle:.0%} (over the last {IDLE_POLL_S:g} s)")
    parameters = {name: sum(p.numel() for p in model.layers.parameters()) for name, model in models.items()}
    print(
        f"{BATCH} videos x {config.num_slots} slots of width {config.hidden_size}, {config.num_hidden_layers} slot "
        f"blocks, inputs: precomputed feature maps ({GRID**2} tokens of width {TOKEN_WIDTH} per frame), float32; "
        "slot-block parameters: " + ", ".join(f"{name} {count / 1e3:.0f}k" for name, count in parameters.items())
    )
    print(
        f"\ntraining step (forward + backward over T frames): median of {args.repeats} after 1 warm-up; "
        "MB = peak memory of the warm-up step; ratios = time / SlotSSM time; others CPU = share of the machine "
        "used by other processes during the row"
    )
    training = run_training(models, args.train_lens, args.repeats, args.budget, quiet)
    print(
        f"\nstreaming (one frame after a T-frame prefix, no grad): median of {args.stream_repeats} steps; state MB = "
        "bytes carried in the cache after T frames; step peak MB = process memory peak of one step"
    )
    streaming = run_streaming(models, config, args.stream_lens, args.stream_repeats, quiet)
    report_goals(training, streaming, quiet.disturbed)
    plot(training, streaming, args.plot)


if __name__ == "__main__":
    main()
