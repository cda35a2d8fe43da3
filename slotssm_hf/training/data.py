"""Video datasets for the Trainer: a folder of video files as a `datasets.Dataset`, and the collator that turns
rows into model inputs with a family's video processor (`SlotSSMVideoProcessor` by default); the data of the train
jobs (built-in bouncing shapes, `--data` folders), which the leaderboard and the benchmarks evaluate on too.

The video column is named `pixel_values_videos` and the label column `labels`, the model's own argument names,
so the Trainer's default `remove_unused_columns=True` keeps them: rows hold file paths (or arrays), and the
collator decodes and processes them only when a batch is built.
"""

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from transformers import TrainerCallback

from ..models.video_processing_slotssm import SlotSSMVideoProcessor

VIDEO_EXTENSIONS = (".mp4", ".webm", ".avi", ".mkv", ".mov", ".gif", ".m4v", ".mpg", ".mpeg")
VIDEO_COLUMN = "pixel_values_videos"
LABEL_COLUMN = "labels"
CLIP_SEED_COLUMN = "clip_seed"
CLIP_FRAMES_COLUMN = "clip_frames"


def video_folder_dataset(folder, extensions=VIDEO_EXTENSIONS):
    """Every video file under `folder` (recursively, sorted) as a `datasets.Dataset` with a `pixel_values_videos`
    column of paths. When every video sits in a sub-folder of `folder` (`folder/<class>/<video>`), the sub-folder
    names become a `labels` ClassLabel column (classes in sorted order)."""
    import datasets

    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"video folder not found: {folder}")
    paths = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in extensions)
    if not paths:
        raise ValueError(f"no video files ({', '.join(extensions)}) under {folder}")
    columns = {VIDEO_COLUMN: [str(p) for p in paths]}
    features = {VIDEO_COLUMN: datasets.Value("string")}
    class_names = [p.relative_to(folder).parts[0] if len(p.relative_to(folder).parts) > 1 else None for p in paths]
    if all(class_names):
        names = sorted(set(class_names))
        columns[LABEL_COLUMN] = [names.index(name) for name in class_names]
        features[LABEL_COLUMN] = datasets.ClassLabel(names=names)
    return datasets.Dataset.from_dict(columns, features=datasets.Features(features))


class SeededClips(torch.utils.data.Dataset):
    """`dataset` (map-style) with a `clip_seed` added to every row: a function of `seed`, the epoch and the row's
    index only, which `VideoCollator` hands to the processor for that row's random clip.

    A clip drawn from a global generator depends on when its batch is built, and the Trainer builds batches ahead
    of the step that uses them: a run resumed from a checkpoint builds its first batch after another draw than the
    uninterrupted run did, so its clips, hence its weights, differ. `set_epoch` (called by `EpochCallback`) gives
    every epoch new clips. With `clip_frames` (e.g. a `ClipCurriculum`), every row also carries the length of its
    clip in this epoch as `clip_frames`.
    """

    def __init__(self, dataset, seed: int, clip_frames=None):
        self.dataset, self.seed, self.epoch, self.clip_frames = dataset, seed, 0, clip_frames

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        entropy = np.random.SeedSequence([self.seed, self.epoch, int(index)])
        row = {**self.dataset[index], CLIP_SEED_COLUMN: int(entropy.generate_state(1)[0])}
        if self.clip_frames is not None:
            row[CLIP_FRAMES_COLUMN] = self.clip_frames(self.epoch)
        return row

    def set_epoch(self, epoch: int):
        self.epoch = epoch


@dataclass(frozen=True)
class ClipCurriculum:
    """Frames per training clip by epoch: `start` in the first, lengthened evenly to `end` at epoch `ramp_epochs`,
    then `end`. A recurrent video model trained on whole clips from the start sees, in every frame after the first
    few, slots its untrained transition has already lost; clips that grow as it learns keep its inputs meaningful."""

    start: int
    end: int
    ramp_epochs: int

    def __call__(self, epoch: int) -> int:
        if epoch >= self.ramp_epochs:
            return self.end
        return self.start + (self.end - self.start) * epoch // self.ramp_epochs


class EpochCallback(TrainerCallback):
    """Tells `dataset` (e.g. `SeededClips`) the epoch the Trainer starts, before it builds the epoch's first batch
    (accelerate's data loader forwards `set_epoch` to its sampler only)."""

    def __init__(self, dataset):
        self.dataset = dataset

    def on_epoch_begin(self, args, state, control, **kwargs):
        # state.epoch is the fractional epoch reached so far (that of the checkpoint when resuming).
        self.dataset.set_epoch(int(state.epoch or 0))


class VideoCollator:
    """Builds a batch from dataset rows: the processor turns the `pixel_values_videos` entries (paths, arrays or
    frame lists) into `pixel_values_videos` (batch, frames, 3, H, W); `labels` and the `extra_columns` (e.g.
    ground-truth `instance_masks`), when every row has them, are stacked into tensors. Rows that all carry a
    `clip_seed` (see `SeededClips`) take their random clips from it, and rows that carry `clip_frames` clips of that
    many frames.

    With `num_boxes`, each row's first-frame `boxes` (n, 4) (ymin, xmin, ymax, xmax) in [0, 1], as conditional SAVi
    takes them, are padded with zero rows to `boxes` (batch, num_boxes, 4) float32 plus `boxes_mask` (batch,
    num_boxes) bool, True for real boxes. Boxes are in the frames' normalised coordinates and are not moved by the
    processor, so they fit square videos (resize only) as given.

    processor_kwargs are handed to the processor on every call, e.g. `sampling="random"` for training.
    """

    def __init__(self, processor: SlotSSMVideoProcessor | None = None, extra_columns=(), num_boxes: int | None = None,
                 **processor_kwargs):  # fmt: skip
        self.processor = processor or SlotSSMVideoProcessor()
        self.stacked_columns = (LABEL_COLUMN, *extra_columns)
        self.num_boxes = num_boxes
        self.processor_kwargs = processor_kwargs

    def __call__(self, rows: list[dict]) -> dict:
        missing = [i for i, row in enumerate(rows) if VIDEO_COLUMN not in row]
        if missing:
            raise ValueError(f"rows {missing} have no '{VIDEO_COLUMN}' entry (a video path, array or frame list)")
        videos = [self._as_video(row[VIDEO_COLUMN], i) for i, row in enumerate(rows)]
        seeded = all(CLIP_SEED_COLUMN in row for row in rows)
        clip = {"clip_seeds": [row[CLIP_SEED_COLUMN] for row in rows]} if seeded else {}
        lengths = {row[CLIP_FRAMES_COLUMN] for row in rows if CLIP_FRAMES_COLUMN in row}
        if len(lengths) > 1:
            raise ValueError(f"the rows of a batch ask for clips of different lengths ({sorted(lengths)} frames): "
                             "expected one 'clip_frames' per batch")  # fmt: skip
        if lengths:
            clip["num_frames"] = int(lengths.pop())
        batch = {VIDEO_COLUMN: self.processor(videos, **{**self.processor_kwargs, **clip})[VIDEO_COLUMN]}
        for column in self.stacked_columns:
            if all(column in row for row in rows):
                batch[column] = torch.as_tensor(np.stack([np.asarray(row[column]) for row in rows]))
        if self.num_boxes is not None:
            batch["boxes"], batch["boxes_mask"] = self._padded_boxes(rows)
        return batch

    def _padded_boxes(self, rows):
        boxes = torch.zeros(len(rows), self.num_boxes, 4)
        mask = torch.zeros(len(rows), self.num_boxes, dtype=torch.bool)
        for i, row in enumerate(rows):
            if "boxes" not in row:
                raise ValueError(f"row {i} has no 'boxes' entry (first-frame boxes (n, 4)), which num_boxes asks for")
            row_boxes = np.asarray(row["boxes"], dtype=np.float32)
            row_boxes = row_boxes.reshape(0, 4) if row_boxes.size == 0 else row_boxes
            if row_boxes.ndim != 2 or row_boxes.shape[1] != 4:
                raise ValueError(
                    f"row {i}: expected boxes of shape (n, 4) (ymin, xmin, ymax, xmax), got {row_boxes.shape}"
                )
            if len(row_boxes) > self.num_boxes:
                raise ValueError(
                    f"row {i} has {len(row_boxes)} boxes, more than num_boxes={self.num_boxes} (the model's slots for "
                    "objects); raise num_boxes or drop objects"
                )
            boxes[i, : len(row_boxes)] = torch.from_numpy(row_boxes)
            mask[i, : len(row_boxes)] = True
        return boxes, mask

    @staticmethod
    def _as_video(value, index: int):
        """Paths, tensors and arrays of pixels pass through. datasets hands a stored uint8 video back as nested lists
        of numbers (its default format) or an int64 array (its numpy format): integer pixels become uint8 again."""
        if isinstance(value, (str, os.PathLike, torch.Tensor)):
            return value
        array = np.asarray(value)
        if array.dtype.kind not in "iu" or array.dtype == np.uint8:
            return array
        if array.size and (array.min() < 0 or array.max() > 255):
            raise ValueError(
                f"row {index}: expected integer pixels in [0, 255], got values from {array.min()} to {array.max()}"
            )
        return array.astype(np.uint8)


__all__ = ["video_folder_dataset", "SeededClips", "ClipCurriculum", "EpochCallback", "VideoCollator"]


# The train jobs' data: what `slotssm-hf train`, the leaderboard and the benchmarks read and evaluate on.


def builtin_datasets(args, extra_columns: tuple[str, ...] = ()):
    """Bouncing shapes, 3 or 4 objects per video: training videos, and held-out evaluation videos (another seed) with
    instance masks, first-frame boxes and `extra_columns` of `synthetic.bouncing_shapes`."""
    from ..synthetic import bouncing_shapes

    def load(num_videos, seed):
        data = bouncing_shapes(
            num_videos=num_videos, num_frames=args.num_frames, image_size=args.image_size, min_objects=3, seed=seed
        )
        return data.select_columns(["video", "masks", "boxes", *extra_columns]).rename_columns(
            {"video": "pixel_values_videos", "masks": "instance_masks"}
        )

    return load(args.train_videos, args.seed), load(args.eval_videos, args.seed + 10_000)


def load_datasets(args):
    """(train, eval, label names or None) for `--data`: builtin, a `save_to_disk` folder, or a folder of videos."""
    import datasets

    if args.data == "builtin":
        return (*builtin_datasets(args), None)
    path = Path(args.data)
    if (path / "dataset_info.json").is_file() or (path / "dataset_dict.json").is_file():
        data = datasets.load_from_disk(str(path))
        if isinstance(data, datasets.DatasetDict):
            train = data["train"]
            held_out = next((data[name] for name in ("validation", "test") if name in data), None)
        else:
            train, held_out = data, None
        if "video" in train.column_names and VIDEO_COLUMN not in train.column_names:
            train = train.rename_column("video", VIDEO_COLUMN)
            held_out = held_out.rename_column("video", VIDEO_COLUMN) if held_out is not None else None
        if VIDEO_COLUMN not in train.column_names:
            raise ValueError(f"{path}: expected a '{VIDEO_COLUMN}' or 'video' column, found {train.column_names}")
    elif path.is_dir():
        train, held_out = video_folder_dataset(path), None
    else:
        raise ValueError(f"--data must be 'builtin', a folder of videos or a dataset saved with save_to_disk: {path}")
    if held_out is None:
        split = train.train_test_split(test_size=max(1, len(train) // 10), seed=args.seed)
        train, held_out = split["train"], split["test"]
    label_feature = train.features.get(LABEL_COLUMN)
    names = getattr(label_feature, "names", None)
    return train, held_out, names


def boxes_per_video(config) -> int | None:
    """How many first-frame boxes the model starts its slots from (conditional SAVi / STATM), else None."""
    return config.num_boxes if getattr(config, "initializer_type", None) == "conditional" else None


def training_collator(processor, config):
    """The collator of training batches: random clips (seeded by `SeededClips`, which may also set their length),
    instance masks, and the boxes the model needs. Boxes are the video's first frame's, so a conditional model's
    clips start there."""
    num_boxes = boxes_per_video(config)
    sampling = "start" if num_boxes else "random"
    return VideoCollator(processor, sampling=sampling, extra_columns=("instance_masks",), num_boxes=num_boxes)


def held_out_collator(processor, config):
    """The collator of evaluation batches: whole clips, instance masks, and the boxes the model needs."""
    return VideoCollator(processor, extra_columns=("instance_masks",), num_boxes=boxes_per_video(config))


def model_inputs(model, batch: dict) -> dict:
    """What a model of the train jobs takes from a collated batch (the frames, and the boxes of conditional
    models), on the model's device, the frames in its dtype."""
    parameter = next(model.parameters())
    inputs = {"pixel_values_videos": batch["pixel_values_videos"].to(parameter.device, parameter.dtype)}
    if "boxes" in batch:
        inputs["boxes"] = batch["boxes"].to(parameter.device)
    return inputs
