"""Folder-of-videos datasets and the collator, used by the Trainer with its default settings."""

import numpy as np
import pytest
import torch
from slotssm_inputs import tiny_config
from transformers import Trainer, TrainingArguments
from videos import synthetic_frames, write_video

from slotssm_hf import SlotSSMForVideoReconstruction, SlotSSMVideoProcessor, VideoCollator, video_folder_dataset

SMALL = {"size": {"shortest_edge": 32}, "crop_size": {"height": 32, "width": 32}, "num_frames": 4}


def test_class_sub_folders_become_labels(tmp_path):
    for name, count in [("walking", 2), ("jumping", 1)]:
        (tmp_path / name).mkdir()
        for i in range(count):
            write_video(tmp_path / name / f"{i}.mp4", synthetic_frames(6, 48, 48, seed=i))
    (tmp_path / "notes.txt").write_text("not a video")
    dataset = video_folder_dataset(tmp_path)
    assert dataset.features["labels"].names == ["jumping", "walking"]
    assert [(p.split("/")[-2], label) for p, label in zip(dataset["pixel_values_videos"], dataset["labels"])] == [
        ("jumping", 0), ("walking", 1), ("walking", 1),
    ]  # fmt: skip
    batch = VideoCollator(SlotSSMVideoProcessor(**SMALL))(list(dataset))
    assert batch["pixel_values_videos"].shape == (3, 4, 3, 32, 32)
    assert batch["labels"].tolist() == [0, 1, 1]


def test_flat_folder_has_no_labels_and_bad_folders_are_named(tmp_path):
    write_video(tmp_path / "a.mp4", synthetic_frames(6, 48, 48))
    assert video_folder_dataset(tmp_path).column_names == ["pixel_values_videos"]
    with pytest.raises(ValueError, match="video folder not found"):
        video_folder_dataset(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"no video files \(.mp4, .*\) under .*empty"):
        video_folder_dataset(tmp_path / "empty")


def test_collator_takes_array_rows_and_names_missing_columns():
    collator = VideoCollator(SlotSSMVideoProcessor(**SMALL))
    frames = synthetic_frames(5, 32, 32)
    batch = collator([{"pixel_values_videos": frames.tolist(), "labels": 1}, {"pixel_values_videos": frames, "labels": 0}])
    assert torch.equal(batch["pixel_values_videos"][0], batch["pixel_values_videos"][1])
    with pytest.raises(ValueError, match=r"rows \[1\] have no 'pixel_values_videos' entry"):
        collator([{"pixel_values_videos": frames}, {"video": frames}])


def test_collator_takes_uint8_videos_as_datasets_numpy_format_returns_them():
    """datasets' numpy format hands a stored uint8 video back as int64: the collator reads it as the uint8 video it
    was (the same batch as from the stored rows) and refuses integers that are no pixels, naming the row."""
    import datasets

    frames, reversed_frames = synthetic_frames(5, 32, 32), np.ascontiguousarray(synthetic_frames(5, 32, 32)[::-1])
    stored = datasets.Dataset.from_dict(
        {"pixel_values_videos": [frames, reversed_frames]},
        features=datasets.Features({"pixel_values_videos": datasets.Array4D((5, 32, 32, 3), "uint8")}),
    )
    rows = list(stored.with_format("numpy"))
    assert rows[0]["pixel_values_videos"].dtype == np.int64
    collator = VideoCollator(SlotSSMVideoProcessor(**SMALL))
    expected = collator([{"pixel_values_videos": frames}, {"pixel_values_videos": reversed_frames}])
    torch.testing.assert_close(collator(rows)["pixel_values_videos"], expected["pixel_values_videos"], rtol=0, atol=0)
    with pytest.raises(ValueError, match=r"row 1: expected integer pixels in \[0, 255\], got values from -1 to \d+"):
        collator([rows[0], {"pixel_values_videos": rows[1]["pixel_values_videos"] - 1}])


def test_trainer_runs_on_a_video_folder_with_default_arguments(tmp_path):
    (tmp_path / "videos").mkdir()
    for i in range(4):
        write_video(tmp_path / "videos" / f"{i}.mp4", synthetic_frames(8, 40, 40, seed=i))
    model = SlotSSMForVideoReconstruction(tiny_config())
    args = TrainingArguments(tmp_path / "out", max_steps=2, per_device_train_batch_size=2, report_to=[], use_cpu=True)
    collator = VideoCollator(SlotSSMVideoProcessor(**SMALL), sampling="random")
    trainer = Trainer(model=model, args=args, train_dataset=video_folder_dataset(tmp_path / "videos"), data_collator=collator)
    result = trainer.train()
    assert result.global_step == 2 and np.isfinite(result.training_loss)
