"""The long-context benchmark script (benchmarks/long_context.py): its per-frame labels, the causality of its
model, and a tiny end-to-end run."""

import subprocess
import sys

import torch
from repository import REPO

BENCHMARKS = REPO / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))
from long_context import NOT_FLASHED, BallColorModel, load_split, model_config, normalize


def test_labels_follow_the_flashes_of_every_video(tmp_path):
    split = load_split(num_videos=6, frames=10, seed=3, cache_dir=str(tmp_path))
    from slotssm_hf.synthetic import blinking_color_balls

    data = blinking_color_balls(num_videos=6, num_context_frames=10, seed=3, cache_dir=str(tmp_path))
    for video, example in enumerate(data):
        first, last = {}, {}
        for t, (ball, color) in enumerate(zip(example["blink_balls"], example["blink_colors"])):
            first.setdefault(ball, color)
            last[ball] = color
            expected = [first.get(b, NOT_FLASHED) for b in range(4)]
            assert split["earliest_so_far"][video, t].tolist() == expected
        assert split["colors"][video].tolist() == [first[b] for b in range(4)]
        assert split["last_colors"][video].tolist() == [last[b] for b in range(4)]


def test_colour_logits_at_a_frame_depend_only_on_earlier_frames(tmp_path):
    torch.manual_seed(0)
    split = load_split(num_videos=2, frames=8, seed=0, cache_dir=str(tmp_path))
    model = BallColorModel(model_config()).eval()
    pixels = normalize(split["pixels"])
    changed = pixels.clone()
    changed[:, 5:] = torch.randn_like(changed[:, 5:])
    with torch.no_grad():
        logits, logits_changed = model(pixels, split["centers"]), model(changed, split["centers"])
    torch.testing.assert_close(logits[:, :5], logits_changed[:, :5])
    assert not torch.allclose(logits[:, 5:], logits_changed[:, 5:])


def test_script_trains_through_the_curriculum_and_reports():
    command = [
        sys.executable, str(BENCHMARKS / "long_context.py"), "--frames", "8", "--start-frames", "4", "--steps", "100",
        "--advance-loss", "100", "--train-videos", "16", "--test-videos", "8", "--batch-size", "4", "--threads", "1",
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "step 50: 4 frames" in result.stdout and "step 100: 8 frames" in result.stdout
    assert "held-out per-ball colour accuracy after 8 frames:" in result.stdout
