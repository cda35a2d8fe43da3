"""CPU benchmark of the GrootV tree scan (`slotssm_hf.models.tree_scan`) against its O(L^2) dense form and a 1-D selective
scan of the same size.

What it measures, per square grid of side 14 ... 56 (L = side^2 pixels), on `--batch` maps of `--channels` channels,
float32, random inputs u, weights w in (0, 1) and features for the tree:

- tree: building the tree (cosine edge costs, Borůvka MST, BFS levels; no gradients, as in GrootV) and its depth;
- tree scan: `tree_scan` (two level-synchronous passes, hand-written backward), forward and forward+backward;
- dense: `tree_scan_ref`, the same operator as y = M^T diag(1 - w^2) M u with a dense (L, L) matrix M of path
  products per channel, through autograd: O(L^2) time and memory per channel; skipped (as "skipped (> budget)")
  where four (channels, L, L) float32 matrices would exceed `--dense-budget-gb`;
- 1-D scan: `slotssm_hf.models.mamba_scans.selective_scan` (the Mamba1 recurrence with its hand-written backward, d_state 1) over
  the L pixels in raster order, the fixed-order scan the tree replaces: the same number of elements, a chain of L
  steps instead of 2 x depth levels.

Times are medians over `--repeats` calls after one warm-up call; peak memory is the process's anonymous resident
memory during the warm-up forward+backward call, above its value before (see benchmarks/measure.py). The scan
inputs are created outside the timed region. Rows print as they complete. Two threads by default; other processes
on the machine slow the many small per-level operations down, so run it on an otherwise idle machine.

    python benchmarks/bench_treescan.py [--batch 1] [--channels 32] [--sides 14 28 42 56]
"""

import argparse
import statistics
import time

import torch
from measure import PeakAnonymousMemory, environment_line

from slotssm_hf.models.mamba_scans import selective_scan
from slotssm_hf.models.tree_scan import grid_tree, tree_scan, tree_scan_ref


def timed(function, repeats: int) -> tuple[float, int]:
    """Median seconds of `function()` over `repeats` calls, and the peak memory of a warm-up call."""
    with PeakAnonymousMemory() as memory:
        function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times), memory.peak_bytes


def forward_backward(scan, *inputs):
    def run():
        leaves = [t.detach().requires_grad_() for t in inputs]
        scan(*leaves).sum().backward()

    return run


def forward(scan, *inputs):
    def run():
        with torch.no_grad():
            scan(*inputs)

    return run


def row(side: int, args) -> list[str]:
    g = torch.Generator().manual_seed(side)
    batch, channels, length = args.batch, args.channels, side * side
    features = torch.randn(batch, side, side, channels, generator=g)
    u = torch.randn(batch, length, channels, generator=g)
    w = torch.rand(batch, length, channels, generator=g)
    build_s, _ = timed(lambda: grid_tree(features), args.repeats)
    tree = grid_tree(features)
    cells = [f"{side}x{side}", str(tree.depth), f"{build_s * 1e3:.1f}"]

    def scan(u, w):
        return tree_scan(u, w, tree)

    def dense(u, w):
        return tree_scan_ref(u, w, tree)

    # The 1-D scan: u, delta and the decay exp(delta A) = w per pixel and channel, one state (B = C = 1).
    delta = torch.rand(batch, length, channels, generator=g) + 0.1
    a = torch.full((channels, 1), -1.0)
    ones = torch.ones(batch, length, 1)

    def linear(u, delta):
        return selective_scan(u, delta, a, ones, ones)[0]

    dense_bytes = 4 * channels * (batch * length) ** 2 * 4
    for name, function, inputs in (("tree", scan, (u, w)), ("dense", dense, (u, w)), ("1-D", linear, (u, delta))):
        if name == "dense" and dense_bytes > args.dense_budget_gb * 2**30:
            cells += ["skipped (> budget)"] * 3
            continue
        fwd_s, _ = timed(forward(function, *inputs), args.repeats)
        both_s, peak = timed(forward_backward(function, *inputs), args.repeats)
        cells += [f"{fwd_s * 1e3:.1f}", f"{both_s * 1e3:.1f}", f"{peak / 2**20:.0f}"]
    return cells


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--channels", type=int, default=32)
    parser.add_argument("--sides", type=int, nargs="+", default=[14, 28, 42, 56])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--dense-budget-gb", type=float, default=2.0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(environment_line())
    print(
        f"batch {args.batch}, channels {args.channels}, float32; times in ms (median of {args.repeats}), memory in MiB"
    )
    header = ["grid", "depth", "build"]
    for name in ("tree", "dense", "1-D"):
        header += [f"{name} fwd", f"{name} fwd+bwd", f"{name} MiB"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for side in args.sides:
        print("| " + " | ".join(row(side, args)) + " |", flush=True)


if __name__ == "__main__":
    main()
