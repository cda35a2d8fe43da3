"""The colour-probe benchmark (benchmarks/colour_probes.py): its probe scores a linear relation 1 and noise about 0,
and a tiny run prints a complete table."""

import math
import subprocess
import sys

import pytest
import torch
from repository import REPO

BENCHMARKS = REPO / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))
from colour_probes import probe_r2


def test_probe_scores_a_linear_relation_one_and_noise_about_zero():
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(400, 16, generator=generator)
    colors = features[:, :3] @ torch.randn(3, 3, generator=generator) + 0.5
    assert probe_r2(features, colors) == pytest.approx(1.0, abs=1e-4)  # the ridge term costs about 1e-6
    # Features unrelated to the colours: what the fit learns from one half does not carry to the other, and its 17
    # parameters fitted to 200 examples overfit a little (R^2 from -0.19 to -0.02 over 20 draws).
    assert -0.3 < probe_r2(torch.randn(400, 16, generator=generator), colors) < 0.05


def test_a_tiny_run_prints_every_row():
    # In its own process, as users run it: the script sets torch's thread count.
    command = [sys.executable, str(BENCHMARKS / "colour_probes.py"), "--steps", "2", "--eval-every", "1",
               "--train-videos", "8", "--held-out-videos", "6", "--threads", "1"]  # fmt: skip
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    rows = [line for line in output.splitlines() if line.startswith("| ") and line[2].isdigit()]
    assert [row.split("|")[1].strip() for row in rows] == ["0", "1", "2"]
    for row in rows:
        token_r2, slot_r2, psnr, fg_ari, miou = (float(cell) for cell in row.split("|")[2:7])
        assert token_r2 <= 1 and slot_r2 <= 1 and math.isfinite(psnr) and -1 <= fg_ari <= 1 and 0 <= miou <= 1
