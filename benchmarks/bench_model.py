"""Training-step throughput and peak memory of the default SlotSSM reconstruction model on the CPU.

The model is `SlotSSMForVideoReconstruction(SlotSSMConfig())`: the official training run's architecture (ViT
encoder and decoder at 128 px, 6 slots of width 256, 4 slot blocks with Mamba2). One training step is a
forward pass, the reconstruction loss and its backward pass (no optimizer update), in float32. Rows are
(batch, frames): 8 x 16 as in the official run, then 2 x 64 and 1 x 256, i.e. 128 to 256 frames per step.

For each row: one warm-up step, whose peak memory is recorded (anonymous resident memory above its value before
the step, sampled every millisecond, see `measure.py`), then the median time of `--repeats` steps. The table
shows seconds per step, clips/s, frames/s, and the frames/s relative to the first row: the per-frame cost of
longer clips (1.0 = the same per-frame cost; the image encoder and decoder are per frame, only the SSM sees
time, so this stays near 1 when the temporal model scales linearly).

Usage: python benchmarks/bench_model.py [--threads 2] [--repeats 2] [--rows 8x16 2x64 1x256]
"""

import argparse
import statistics
import time

import torch
import transformers
from measure import PeakAnonymousMemory, environment_line

from slotssm_hf import SlotSSMConfig, SlotSSMForVideoReconstruction


def training_step(model, clip):
    model.zero_grad(set_to_none=True)
    model(clip).loss.backward()


def measure(model, batch: int, frames: int, repeats: int):
    """(median seconds per step, peak bytes of the warm-up step)."""
    clip = torch.randn(batch, frames, 3, 128, 128, generator=torch.Generator().manual_seed(frames))
    with PeakAnonymousMemory() as memory:
        training_step(model, clip)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        training_step(model, clip)
        times.append(time.perf_counter() - start)
    return statistics.median(times), memory.peak_bytes


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--rows", nargs="+", default=["8x16", "2x64", "1x256"], metavar="BATCHxFRAMES")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    transformers.logging.set_verbosity_error()
    torch.manual_seed(0)
    model = SlotSSMForVideoReconstruction(SlotSSMConfig()).train()

    print(environment_line())
    print(f"default SlotSSM reconstruction model, float32, 128 px; median of {args.repeats} steps after 1 warm-up")
    header = f"{'batch':>5}  {'frames':>6}  {'s/step':>7}  {'clips/s':>8}  {'frames/s':>8}  {'per-frame vs first':>18}  {'peak MB':>8}"
    print(header)
    print("-" * len(header))
    first_rate = None
    for row in args.rows:
        batch, frames = map(int, row.split("x"))
        seconds, peak = measure(model, batch, frames, args.repeats)
        rate = batch * frames / seconds
        first_rate = first_rate or rate
        print(
            f"{batch:>5}  {frames:>6}  {seconds:>7.2f}  {batch / seconds:>8.3f}  {rate:>8.1f}  "
            f"{rate / first_rate:>18.2f}  {peak / 2**20:>8.0f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
