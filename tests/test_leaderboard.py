"""`slotssm-hf benchmark --quick`: every entry trained and evaluated, the table whole and well-formed, the same table
again from the same seed."""

import json
import math
from pathlib import Path

import pytest
from PIL import Image

from slotssm_hf.cli import main as cli
from slotssm_hf.training.leaderboard import COLUMNS, ENTRIES, GRID_REFERENCE, main, parse_args, runs
from slotssm_hf.training.train import parse_args as train_args

QUALITY = ("fg_ari", "miou", "psnr", "object_psnr")


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("leaderboard")
    assert cli(["benchmark", "--quick", "--output-dir", str(output_dir)]) == 0
    return output_dir


def test_quick_run_writes_a_complete_table_chart_and_pictures(quick_run):
    lines = (quick_run / "leaderboard.md").read_text().splitlines()
    cells = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[: 3 + len(ENTRIES)]]
    assert cells[0] == ["model", *(title for title, _ in COLUMNS.values())]
    assert [row[0] for row in cells[2:]] == [GRID_REFERENCE] + [entry.name for entry in ENTRIES]
    assert cells[2][3:] == ["—"] * (len(COLUMNS) - 2)  # the grid has FG-ARI and mIoU only
    assert all(math.isfinite(float(value)) for row in cells[3:] for value in row[1:])
    assert "slotssm-hf benchmark --quick" in lines[-1]

    rows = json.loads((quick_run / "leaderboard.json").read_text())["rows"]
    assert list(rows) == [entry.name for entry in ENTRIES]
    for row in rows.values():
        assert set(row) == set(COLUMNS)
        assert -1 <= row["fg_ari"] <= 1 and 0 <= row["miou"] <= 1 and row["psnr"] > 0 and row["object_psnr"] > 0
        assert row["train_frames_per_second"] > 0 and row["stream_ms_per_frame"] > 0

    with Image.open(quick_run / "leaderboard.png") as chart:
        assert chart.width > chart.height > 0
    entry_widths = []
    for entry in ENTRIES:
        with Image.open(quick_run / entry.folder / "slots.png") as picture:
            entry_widths.append(picture.width)
    with Image.open(quick_run / "slots.png") as side_by_side:
        assert side_by_side.width > sum(entry_widths)  # every entry's picture, each under its name


def test_the_grid_reference_is_the_fixed_quadrants_scored_by_brute_force(quick_run):
    """Against an independent computation on the held-out masks: scikit-learn's ARI over each video's object pixels,
    and the best one-to-one assignment of objects to the four quadrants found by trying every one."""
    import itertools

    import numpy as np
    from sklearn.metrics import adjusted_rand_score

    from slotssm_hf.training.data import builtin_datasets

    reference = json.loads((quick_run / "leaderboard.json").read_text())["grid_reference"]
    _, held_out = builtin_datasets(parse_args(["--quick"]))
    aris, ious = [], []
    for masks in held_out.with_format("numpy")["instance_masks"]:
        height, width = masks.shape[-2:]
        quadrant = np.add.outer((np.arange(height) >= height / 2) * 2, np.arange(width) >= width / 2)
        quadrants = np.broadcast_to(quadrant, masks.shape)
        objects = [k for k in np.unique(masks) if k != 0]
        if not objects:
            continue
        aris.append(adjusted_rand_score(masks[masks > 0], quadrants[masks > 0]))
        iou = [[((masks == k) & (quadrants == q)).sum() / ((masks == k) | (quadrants == q)).sum() for q in range(4)]
               for k in objects]  # fmt: skip
        best = max(sum(iou[i][q] for i, q in zip(range(len(objects)), cells) if q is not None)
                   for cells in itertools.permutations([0, 1, 2, 3, *[None] * len(objects)], len(objects)))  # fmt: skip
        ious.append(best / len(objects))
    assert reference["fg_ari"] == pytest.approx(np.mean(aris), abs=1e-9)
    assert reference["miou"] == pytest.approx(np.mean(ious), abs=1e-9)


def test_the_same_seed_gives_the_same_table(quick_run, tmp_path):
    # One entry with learned slots, one with slots drawn at random: both must come out the same.
    again = ["slotssm-tiny", "savi-tiny-unconditional"]
    assert main(["--quick", "--output-dir", str(tmp_path), "--entries", *again]) == 0
    first = json.loads((quick_run / "leaderboard.json").read_text())["rows"]
    second = json.loads((tmp_path / "leaderboard.json").read_text())["rows"]
    names = [entry.name for entry in ENTRIES if entry.folder in again]
    assert list(second) == names
    for name in names:
        assert {key: second[name][key] for key in QUALITY} == {key: first[name][key] for key in QUALITY}, name


def test_official_recipes_scale_the_warm_up_to_the_budget(tmp_path):
    """Each family's official optimisation (SAVi's and STATM-SAVi's configs: 2e-4, clipping 0.05, 2500 warm-up steps
    of 100k; SlotSSM's train.py: 3e-4, clipping 1.0) reaches its train job, the warm-up 2.5 % of the budget."""
    args = parse_args(["--steps", "800", "--recipes", "shared", "official", "--output-dir", str(tmp_path)])
    rows = {run.name: train_args(run.train_arguments) for run in runs(args)}
    assert list(rows) == [name for entry in ENTRIES for name in (entry.name, entry.name + ", official recipe")]
    expected = {"slotssm": (3e-4, 1.0), "savi": (2e-4, 0.05), "statm": (2e-4, 0.05)}
    for entry in ENTRIES:
        shared, official = rows[entry.name], rows[entry.name + ", official recipe"]
        assert (shared.learning_rate, shared.max_grad_norm, shared.warmup_steps) == (1e-3, 1.0, None)
        assert (official.learning_rate, official.max_grad_norm) == expected[entry.model]
        assert official.warmup_steps == 20 and official.steps == shared.steps == 800
        assert Path(official.output_dir).name == entry.folder + "-official"
