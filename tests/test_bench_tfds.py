"""The TFDS reading benchmark (benchmarks/bench_tfds.py): the shards it writes read back as written, its equality
check names a difference, and a quick run without tensorflow-datasets prints every row of its table."""

import subprocess
import sys

import numpy as np
from repository import REPO

BENCHMARKS = REPO / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))
from bench_tfds import canonical, compare
from movi_shards import render_video, write_movi_folder

from slotssm_hf.data.tfds import TFDSFolder


def test_the_benchmark_shards_read_back_as_written(tmp_path):
    folder = write_movi_folder(tmp_path / "movi", videos=3, shards=2, frames=3, size=16, seed=5)
    rng = np.random.default_rng(5)  # the writer's draws, video after video
    written = [render_video(rng, index, 3, 16, 16) for index in range(3)]
    decoded = list(TFDSFolder(folder).examples("train"))
    assert len(decoded) == 3
    for values, example in zip(written, decoded):
        for key in ("video", "segmentations", "depth", "normal", "object_coordinates", "forward_flow",
                    "backward_flow"):  # fmt: skip
            assert example[key].dtype == values[key].dtype and np.array_equal(example[key], values[key]), key
        assert example["metadata"]["video_name"] == values["metadata"]["video_name"]
        for mine, theirs in zip(example["instances"]["bboxes"], values["instances"]["bboxes"]):
            assert np.array_equal(mine, theirs)
        assert np.array_equal(example["instances"]["shape_label"], values["instances"]["shape_label"])


def test_the_equality_check_names_the_first_difference():
    arrays = {"video": np.zeros((2, 4, 4, 3), np.uint8), "metadata/video_name": "a", "bboxes": [np.ones((1, 4))]}
    ours = {"digests": {"a": {key: canonical(value) for key, value in arrays.items()}}}
    theirs = {"digests": {"a": {**ours["digests"]["a"], "metadata/video_name": canonical(b"a")}}}
    assert compare(ours, theirs) == (True, "identical: 1 videos, 3 arrays (every key of every video)")
    theirs["digests"]["a"]["video"] = canonical(np.zeros((2, 4, 4, 3), np.int32))
    equal, summary = compare(ours, theirs)
    assert not equal and "a video: ours ['|u1', [2, 4, 4, 3]" in summary and "tfds ['<i4'" in summary


def test_a_quick_run_prints_every_row_of_the_table():
    # In its own process, as users run it: the readers run in processes pinned to a CPU.
    command = [sys.executable, str(BENCHMARKS / "bench_tfds.py"), "--quick"]
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    rows = {line.split("|")[1].strip(): line.split("|")[2:-1] for line in output.splitlines() if line.startswith("| ")}
    for label in ("all features, 1 core", "SAVi's features, 1 core", "all features, 1 core, NumPy PNG fallback"):
        ours, tfds, ratio = (cell.strip() for cell in rows[label])
        assert float(ours.removesuffix(" frames/s")) > 0
        assert tfds == "not run: no --tfds-python given" and ratio == "-"
    loader, step, ratio = (cell.strip() for cell in rows["DataLoader, 2 workers, SAVi's features"])
    assert "videos/s" in loader and "clips/s: SAVi tiny training step" in step and float(ratio.removesuffix("x")) > 0
    assert "same arrays as tensorflow-datasets (all features, stored values): not checked" in output
