"""The example scripts run as documented, on tiny checkpoints and videos made here."""

import subprocess
import sys
from pathlib import Path

import pytest
from test_modeling import tiny_config
from test_video_processing import synthetic_frames, write_video

from slotssm_hf import SlotSSMForVideoPrediction, SlotSSMForVideoReconstruction, SlotSSMVideoProcessor

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def run(script, *args):
    result = subprocess.run([sys.executable, str(EXAMPLES / script), *map(str, args)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


@pytest.fixture
def checkpoint(tmp_path):
    def save(head, **overrides):
        folder = tmp_path / head.__name__
        head(tiny_config(**overrides)).save_pretrained(folder)
        SlotSSMVideoProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(folder)
        return folder

    return save


@pytest.mark.parametrize("decoder", ["spatial_broadcast", "vit"])
def test_visualize_slots(tmp_path, checkpoint, decoder):
    folder = checkpoint(SlotSSMForVideoReconstruction, decoder_type=decoder, decoder_initial_size=4)
    video = write_video(tmp_path / "clip.mp4", synthetic_frames(8, 48, 64))
    printed = run("visualize_slots.py", folder, video, tmp_path / "slots", "--num-frames", "6").split()
    assert printed == [str(tmp_path / "slots.png"), str(tmp_path / "slots.gif")]
    assert all(Path(p).stat().st_size > 0 for p in printed)


def test_predict_future_frames(tmp_path, checkpoint):
    folder = checkpoint(SlotSSMForVideoPrediction)
    video = write_video(tmp_path / "clip.mp4", synthetic_frames(9, 48, 64))
    printed = run("predict_future_frames.py", folder, video, tmp_path / "future", "--context", "4", "--steps", "6")
    assert "mean squared error of the first 5 predicted frames" in printed
    assert (tmp_path / "future.png").stat().st_size > 0


def test_finetune_classification_from_a_reconstruction_checkpoint(tmp_path, checkpoint):
    folder = checkpoint(SlotSSMForVideoReconstruction)
    for name in ["a", "b"]:
        (tmp_path / "videos" / name).mkdir(parents=True)
        for i in range(3):
            write_video(tmp_path / "videos" / name / f"{i}.mp4", synthetic_frames(5, 40, 40, seed=i + 10 * (name == "a")))
    printed = run("finetune_classification.py", tmp_path / "videos", tmp_path / "out", "--init-from", folder,
                  "--steps", "2", "--batch-size", "2")  # fmt: skip
    assert "eval_accuracy" in printed
    assert (tmp_path / "out" / "model.safetensors").is_file() and (tmp_path / "out" / "video_preprocessor_config.json").is_file()
