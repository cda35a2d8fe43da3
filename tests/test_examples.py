"""The example scripts run as documented, on tiny checkpoints and videos made here."""

import math
import runpy
import shutil
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
import saved_folders
import torch
from PIL import Image
from repository import REPO
from safetensors.torch import load_file
from slotssm_inputs import tiny_config
from transformers import AutoImageProcessor, ConvNextImageProcessor
from videos import synthetic_frames, write_video

from slotssm_hf import (
    FAMILIES,
    ConvS5ForVideoPrediction,
    ConvS5VideoProcessor,
    GrootVForImageClassification,
    SAViForVideoReconstruction,
    SAViVideoProcessor,
    SlotSSMForVideoPrediction,
    SlotSSMForVideoReconstruction,
    SlotSSMVideoProcessor,
)

EXAMPLES = REPO / "examples"


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


def write_class_folders(folder, num_frames: int):
    """Two classes of three 40 x 40 videos each, as the example reads them: folder/a/*.mp4 and folder/b/*.mp4."""
    for name in ["a", "b"]:
        (folder / name).mkdir(parents=True)
        for i in range(3):
            write_video(folder / name / f"{i}.mp4", synthetic_frames(num_frames, 40, 40, seed=i + 10 * (name == "a")))
    return folder


def test_finetune_classification_from_a_reconstruction_checkpoint(tmp_path, checkpoint):
    folder = checkpoint(SlotSSMForVideoReconstruction)
    printed = run("finetune_classification.py", write_class_folders(tmp_path / "videos", 5), tmp_path / "out",
                  "--init-from", folder, "--steps", "2", "--batch-size", "2")  # fmt: skip
    assert "eval_accuracy" in printed
    assert (tmp_path / "out" / "model.safetensors").is_file() and (tmp_path / "out" / "video_preprocessor_config.json").is_file()


def test_finetune_classification_resumed_ends_with_the_weights_of_an_uninterrupted_run(tmp_path, checkpoint):
    # 4 training videos in batches of 2: 2 steps an epoch; the run is cut after step 3, in the middle of the second
    # epoch, whose clips differ from the first's (the processor's 16 frames from a random start in 24).
    videos = write_class_folders(tmp_path / "videos", 24)
    flags = ["--init-from", checkpoint(SlotSSMForVideoReconstruction), "--steps", "4", "--batch-size", "2"]
    run("finetune_classification.py", videos, tmp_path / "whole", *flags)
    shutil.copytree(tmp_path / "whole" / "checkpoint-3", tmp_path / "resumed" / "checkpoint-3")
    run("finetune_classification.py", videos, tmp_path / "resumed", *flags, "--resume-from-checkpoint", "last")
    whole, resumed = (load_file(tmp_path / name / "model.safetensors") for name in ("whole", "resumed"))
    assert whole.keys() == resumed.keys()
    for key in whole:
        torch.testing.assert_close(resumed[key], whole[key], rtol=0, atol=0, msg=key)


# The three examples below run the SAVi, ConvS5 and GrootV families on tiny models built here (the families' tiny
# sizes of tests/utils/saved_folders.py; GrootV's without its label count), checked against what the same model
# computes in the test.

GROOTV_TINY = {"embed_dim": 16, "depths": [1, 2, 1, 1]}


def write_clip(path, num_frames, height, width):
    """A square moving down-right over a dark background, as an H.264 file."""
    frames = np.full((num_frames, height, width, 3), 30, np.uint8)
    for t in range(num_frames):
        frames[t, 2 + t : 10 + t, 4 + t : 12 + t] = (230, 60, 40)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("h264", rate=8)
        stream.height, stream.width, stream.pix_fmt = height, width, "yuv420p"
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return path


def grid_cells(picture, rows, columns, side, scale=1, gap=2):
    """A grid picture cut back into its (rows, columns, side, side, 3) cells (`visualize.grid_image`'s layout)."""
    pixels = np.asarray(picture.convert("RGB"))[::scale, ::scale].astype(np.int16)
    assert pixels.shape == (rows * (side + gap) - gap, columns * (side + gap) - gap, 3)
    step = side + gap
    return np.stack([np.stack([pixels[r * step : r * step + side, t * step : t * step + side] for t in range(columns)])
                     for r in range(rows)])  # fmt: skip


def test_savi_with_boxes(tmp_path, monkeypatch, capsys):
    config = FAMILIES["savi"].config_class(**saved_folders.TINY["savi"], targets={"video": 3})
    folder = tmp_path / "savi"
    SAViForVideoReconstruction(config).save_pretrained(folder)
    SAViVideoProcessor.for_config(config).save_pretrained(folder)
    video = write_clip(tmp_path / "clip.mp4", 6, 24, 32)
    given = [[0.1, 0.25, 0.6, 0.75], [0.0, 0.0, 1.0, 1.0]]
    out = tmp_path / "pictures" / "savi"
    printed = run("savi_with_boxes.py", folder, video, out, *[f"--box={','.join(map(str, b))}" for b in given],
                  "--num-frames", "4").split()  # fmt: skip
    assert printed == [f"{out}.png", f"{out}.gif"]

    # What the script should have run: the given boxes, then a zero row for the third box slot.
    model = SAViForVideoReconstruction.from_pretrained(folder).eval()
    pixels = SAViVideoProcessor.from_pretrained(folder)(str(video), num_frames=4)["pixel_values_videos"]

    def expected_rows(boxes):
        with torch.no_grad():
            output = model(pixels, boxes=boxes)
        frames = pixels[0].permute(0, 2, 3, 1) * 255
        masks = output.masks[0, :, :, 0, :, :, None]  # (frames, slots, H, W, 1)
        slots = frames[:, None] * masks + 255 * (1 - masks)
        reconstruction = output.reconstruction[0, None].permute(0, 1, 3, 4, 2).clamp(0, 1) * 255
        return torch.cat([reconstruction, slots.transpose(0, 1)])  # (rows, frames, H, W, 3)

    boxes = torch.tensor([given + [[0.0] * 4]])
    expected = expected_rows(boxes).numpy()
    # PNG: frames, reconstruction, segmentation, one row per slot; 4 columns; drawn at twice the size.
    cells = grid_cells(Image.open(f"{out}.png"), 3 + config.num_slots, 4, 16, scale=2)
    drawn = np.concatenate([cells[1:2], cells[3:]])  # the reconstruction and slot rows
    # Frame 0 carries the box outlines (in each box's slot colour), so compare the later frames.
    assert np.abs(drawn[:, 1:] - expected[:, 1:]).max() <= 2
    assert np.abs(expected_rows(torch.zeros_like(boxes)).numpy()[:, 1:] - expected[:, 1:]).max() > 10  # boxes matter
    # Frame 0 shows each box outlined in its slot's colour (slots 1 and 2: the first two after the background's).
    assert tuple(cells[0, 0, 1, 4]) == (60, 180, 75) and tuple(cells[0, 0, 0, 0]) == (255, 225, 25)
    assert Image.open(f"{out}.gif").n_frames == 4

    # Refusals name what was expected (run in-process: argparse exits before anything is written).
    def refused(*boxes):
        monkeypatch.setattr(sys, "argv", ["savi_with_boxes.py", str(folder), str(video), str(tmp_path / "no"),
                                          *[f"--box={b}" for b in boxes]])  # fmt: skip
        with pytest.raises(SystemExit) as exit_info:
            runpy.run_path(str(EXAMPLES / "savi_with_boxes.py"), run_name="__main__")
        assert exit_info.value.code == 2
        return capsys.readouterr().err

    assert "must lie in [0, 1]" in refused("0.1,0.2,0.5,1.5")
    assert "ymin <= ymax and xmin <= xmax" in refused("0.6,0.2,0.5,0.9")
    assert "four comma-separated numbers" in refused("0.1,0.2,0.5")
    assert "4 boxes given, but this checkpoint takes at most 3 (4 slots, one of them the background)" in refused(
        *["0,0,1,1"] * 4
    )
    assert "give 1 to 3 --box" in refused()
    assert not list(tmp_path.glob("no*"))


def test_convs5_rollout(tmp_path):
    folder = tmp_path / "convs5"
    ConvS5ForVideoPrediction(saved_folders.tiny_config("convs5")).save_pretrained(folder)
    ConvS5VideoProcessor(size={"shortest_edge": 16}, crop_size={"height": 16, "width": 16}).save_pretrained(folder)
    video = write_clip(tmp_path / "clip.mp4", 8, 20, 20)
    printed = run("convs5_rollout.py", folder, video, tmp_path / "future", "--context", "4", "--steps", "6")
    lines = printed.splitlines()
    assert lines[-1] == str(tmp_path / "future.png")

    model = ConvS5ForVideoPrediction.from_pretrained(folder).eval()
    pixels = ConvS5VideoProcessor.from_pretrained(folder)(str(video), num_frames=10)["pixel_values_videos"]
    with torch.no_grad():
        predicted = model.rollout(pixels[:, :4], 6)
    # The video has 8 frames: 4 of the 6 predicted frames have a true one, compared on frames mapped to [0, 1].
    prefix = "mean squared error of the first 4 predicted frames (in [0, 1]): "
    assert lines[0].startswith(prefix)
    error = float(lines[0].removeprefix(prefix))
    expected = ((predicted[0, :4] - pixels[0, 4:8]) / 2).pow(2).mean().item()
    assert math.isfinite(error) and error == pytest.approx(expected, abs=2e-6)

    # Row 1: the 4 context frames then the 6 predictions; row 2: the 4 true frames under the first predictions.
    cells = grid_cells(Image.open(tmp_path / "future.png"), 2, 10, 16)

    def uint8(frames):  # [-1, 1] -> 0..255, the one grey channel
        return ((frames[:, 0] + 1) * 127.5).round().numpy()

    assert (cells[..., 0] == cells[..., 1]).all() and (cells[..., 0] == cells[..., 2]).all()  # grey as RGB
    assert np.array_equal(cells[0, :4, :, :, 0], uint8(pixels[0, :4]))
    assert np.array_equal(cells[1, 4:8, :, :, 0], uint8(pixels[0, 4:8]))
    difference = np.abs(cells[0, 4:, :, :, 0] - uint8(predicted[0]))
    assert difference.max() <= 1 and difference.mean() < 0.01  # rounding of floats computed in another process
    assert (cells[1, :4] == 255).all() and (cells[1, 8:] == 255).all()


def test_grootv_backbone(tmp_path):
    labels = {i: f"class {i}" for i in range(7)}
    config = FAMILIES["grootv"].config_class(**GROOTV_TINY, image_size=64, id2label=labels)
    folder = tmp_path / "grootv"
    GrootVForImageClassification(config).save_pretrained(folder)
    ConvNextImageProcessor(size={"shortest_edge": 64}, crop_pct=0.875).save_pretrained(folder)
    rng = np.random.default_rng(0)
    paths = [tmp_path / "a.png", tmp_path / "b.png"]
    Image.fromarray(rng.integers(0, 256, (50, 70, 3), dtype=np.uint8)).save(paths[0])
    Image.fromarray(rng.integers(0, 256, (64, 64), dtype=np.uint8)).save(paths[1])  # greyscale
    printed = run("grootv_backbone.py", folder, *paths, "--timm").splitlines()

    model = GrootVForImageClassification.from_pretrained(folder).eval()
    images = [Image.open(path).convert("RGB") for path in paths]
    with torch.no_grad():
        output = model(AutoImageProcessor.from_pretrained(folder)(images, return_tensors="pt")["pixel_values"],
                       output_hidden_states=True)  # fmt: skip
    shapes = " ".join(str(tuple(level.shape[1:])) for level in output.hidden_states[1:])
    assert shapes == "(16, 16, 16) (32, 8, 8) (64, 4, 4) (128, 2, 2)"
    # Per image: its path, the top 5 of the 7 classes, the four feature map shapes.
    assert len(printed) == 2 * 7 + 1
    for index, path in enumerate(paths):
        block = printed[7 * index : 7 * index + 7]
        assert block[0] == str(path)
        scores, classes = output.logits[index].softmax(-1).topk(5)
        top = [line.split("  ")[1:] for line in block[1:6]]  # "  0.1588  class 5"
        assert [label for _, label in top] == [f"class {c}" for c in classes.tolist()]
        assert [float(score) for score, _ in top] == pytest.approx(scores.tolist(), abs=1e-4)
        assert block[6] == f"  feature maps (channels, height, width): {shapes}"
    # The same weights as a timm features_only model give the same maps.
    prefix = f"timm features_only: {shapes} max abs difference "
    assert printed[-1].startswith(prefix) and float(printed[-1].removeprefix(prefix)) < 1e-5
