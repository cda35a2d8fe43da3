"""The decoder-ceiling benchmark (benchmarks/decoder_ceiling.py): its ground-truth slots describe the videos they
come from, and a tiny run prints a complete table."""

import math
import subprocess
import sys

import numpy as np
import pytest
from repository import REPO

BENCHMARKS = REPO / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))
from decoder_ceiling import TRUTH_SIZE, slots_from_truth

from slotssm_hf.synthetic.shapes import SHAPES, bouncing_shapes


def test_ground_truth_slots_describe_their_video(tmp_path):
    data = bouncing_shapes(num_videos=4, num_frames=5, image_size=32, min_objects=3, seed=7, cache_dir=str(tmp_path))
    rows, columns = np.mgrid[0:32, 0:32] + 0.5  # pixel centres, as the generator places them
    for example in data:
        video, masks = np.asarray(example["video"]), np.asarray(example["masks"])
        slots = slots_from_truth(example, num_slots=6, image_size=32)
        num_objects = example["num_objects"]
        assert slots.shape == (5, 6, TRUTH_SIZE)
        assert slots[:, 0].tolist() == [[0.0] * (TRUTH_SIZE - 1) + [1.0]] * 5
        assert not slots[:, num_objects + 1 :].any()
        for k in range(1, num_objects + 1):
            slot = slots[:, k]
            assert slot[:, -1].eq(0).all() and slot[:, 6 : 6 + len(SHAPES)].sum(-1).eq(1).all()
            for t in range(5):
                visible = masks[t] == k
                if not visible.any():
                    continue
                # Every visible pixel has the slot's colour ...
                assert (video[t][visible] == np.round(slot[t, :3].numpy() * 255)).all()
                # ... and the pixel's centre lies in the square of half-width radius around the slot's centre.
                center, radius = slot[t, 3:5].numpy() * 32, slot[t, 5].item() * 32
                offsets = np.stack([rows[visible] - center[0], columns[visible] - center[1]])
                assert np.abs(offsets).max() <= radius + 1e-4


def test_too_few_slots_for_a_video_is_an_error(tmp_path):
    example = bouncing_shapes(num_videos=1, num_frames=2, image_size=32, min_objects=3, cache_dir=str(tmp_path))[0]
    needed = example["num_objects"] + 1
    with pytest.raises(ValueError, match=f"with {needed - 1} objects needs {needed} slots, the decoder has 3"):
        slots_from_truth(example, num_slots=3, image_size=32)


def test_a_tiny_run_prints_every_row():
    # In its own process, as users run it: the script sets torch's thread count.
    command = [sys.executable, str(BENCHMARKS / "decoder_ceiling.py"), "--steps", "2", "--eval-every", "1",
               "--train-videos", "8", "--threads", "1"]  # fmt: skip
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    rows = [line for line in output.splitlines() if line.startswith("| ") and line[2].isdigit()]
    assert [row.split("|")[1].strip() for row in rows] == ["1", "2"]
    for row in rows:
        fg_ari, miou, loss = (float(cell) for cell in row.split("|")[2:5])
        assert -1 <= fg_ari <= 1 and 0 <= miou <= 1 and math.isfinite(loss) and loss > 0
