"""MOVi (Kubric's Multi-Object Video datasets A-F, `challenges/movi/movi_{a..f}.py`) with its meaning applied, on top
of the TFDS reader: no TensorFlow needed.

What `movi_example` does to a decoded example (the builders' docstrings and the official SAVi pipeline,
`savi/lib/preprocessing.py`, are the references):

- `depth`, `forward_flow`, `backward_flow` are stored as uint16 spanning `metadata/<name>_range`; they come out as
  float32 `v / 65535 * (max - min) + min`, computed in float32 as the official pipeline does.
- `boxes` (T, max_instances, 4): each instance's box [ymin, xmin, ymax, xmax] (normalised) in the frames listed by its
  `instances/bbox_frames`, zeros elsewhere (SAVi's "no track" box); `boxes_mask` (T, max_instances) says which boxes
  are real, and `instance_mask` (max_instances,) which instance slots hold an instance at all.
- `segmentations` (T, H, W, 1) uint8 keep their ids: 0 is the background and k is instance k - 1. As in SAVi, ids of
  instances beyond `max_instances` become background.
- `video` stays uint8; `instances` (with ClassLabel names from the folder's labels files), `camera`, `events`,
  `metadata` and every other feature (MOVi-C/E `background`, MOVi-E camera motion) pass through unchanged; `normal` and
  `object_coordinates` stay uint16 (the builders give no range for them).
"""

import numpy as np

from .tfds import TFDSFolder, TFDSFormatError, generate_examples, hf_features

QUANTISED = {"depth": "depth_range", "forward_flow": "forward_flow_range", "backward_flow": "backward_flow_range"}
BOX_COLUMNS = ("boxes", "boxes_mask", "instance_mask")
MAX_INSTANCES = 23  # the official SAVi configs for MOVi (`sparse_to_dense_annotation(max_instances=23)`)


def dequantize(values: np.ndarray, value_range) -> np.ndarray:
    """uint16 `values` spanning `value_range` (min, max) as float32: values / 65535 * (max - min) + min."""
    low, high = np.float32(value_range[0]), np.float32(value_range[1])
    return values.astype(np.float32) / np.float32(65535) * (high - low) + low


def dense_boxes(bboxes, bbox_frames, num_frames: int, max_instances: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame boxes (num_frames, max_instances, 4) float32 and their mask (num_frames, max_instances) bool from the
    ragged per-instance `bboxes` (k_i, 4) and `bbox_frames` (k_i,); instances past `max_instances` are dropped."""
    boxes = np.zeros((num_frames, max_instances, 4), np.float32)
    mask = np.zeros((num_frames, max_instances), bool)
    for index, (box, frames) in enumerate(zip(bboxes[:max_instances], bbox_frames[:max_instances])):
        box, frames = np.asarray(box, np.float32).reshape(-1, 4), np.asarray(frames, np.int64).reshape(-1)
        if len(box) != len(frames):
            raise ValueError(f"instance {index} has {len(box)} bboxes but {len(frames)} bbox_frames")
        if frames.size and (frames.min() < 0 or frames.max() >= num_frames):
            raise ValueError(f"instance {index} has bbox_frames {frames.tolist()} outside the {num_frames} frames")
        boxes[frames, index], mask[frames, index] = box, True
    return boxes, mask


def movi_example(example: dict, max_instances: int = MAX_INSTANCES) -> dict:
    """A decoded MOVi example (`read_tfds` / `TFDSFolder.examples`) with MOVi's meaning (see the module docstring)."""
    out = dict(example)
    metadata = example.get("metadata", {})
    for name, range_key in QUANTISED.items():
        if name in example:
            if range_key not in metadata:
                raise ValueError(f"'{name}' is stored quantised but metadata/{range_key} is missing")
            out[name] = dequantize(np.asarray(example[name]), metadata[range_key])
    instances = example.get("instances", {})
    if "bboxes" in instances and "bbox_frames" in instances:
        num_frames = len(example["video"]) if "video" in example else int(metadata["num_frames"])
        out["boxes"], out["boxes_mask"] = dense_boxes(instances["bboxes"], instances["bbox_frames"], num_frames,
                                                      max_instances)  # fmt: skip
        count = len(instances["bboxes"])
        out["instance_mask"] = np.arange(max_instances) < count
        if "segmentations" in example and count > max_instances:
            segmentations = np.asarray(example["segmentations"])
            out["segmentations"] = np.where(segmentations > max_instances, 0, segmentations).astype(segmentations.dtype)
    return out


def movi_features(features, max_instances: int = MAX_INSTANCES):
    """The `datasets.Features` of `movi_example`'s output, from those of its input (`features`, e.g. a folder's
    `hf_features()` or an exported copy's): de-quantised features as float32, the box columns added when the input
    has `instances/bboxes` and `bbox_frames`."""
    import datasets

    def as_float32(feature):
        if isinstance(feature, (datasets.Array2D, datasets.Array3D, datasets.Array4D, datasets.Array5D)):
            return type(feature)(shape=feature.shape, dtype="float32")
        if isinstance(feature, datasets.List):
            return datasets.List(as_float32(feature.feature), length=feature.length)
        return datasets.Value("float32")

    out = dict(features)
    for name in QUANTISED:
        if name in out:
            out[name] = as_float32(out[name])
    instances = features.get("instances", {})
    if "bboxes" in instances and "bbox_frames" in instances:
        video = features.get("video")
        frames = video.shape[0] if isinstance(video, datasets.Array4D) else None
        out["boxes"] = datasets.Array3D(shape=(frames, max_instances, 4), dtype="float32")
        out["boxes_mask"] = datasets.Array2D(shape=(frames, max_instances), dtype="bool")
        out["instance_mask"] = datasets.List(datasets.Value("bool"), length=max_instances)
    return datasets.Features(out)


def generate_movi_examples(shards, columns: tuple, max_instances: int, outputs: tuple | None):
    """`movi_example` over `generate_examples`, keeping the `outputs` columns (all when None)."""
    for example in generate_examples(shards, columns):
        example = movi_example(example, max_instances)
        yield example if outputs is None else {name: example[name] for name in outputs}


def _check_movi(folder: TFDSFolder) -> None:
    paths = {column.key for column in folder.columns}
    missing = [key for key in ("video", "metadata/num_instances") if key not in paths]
    missing += [f"metadata/{r}" for name, r in QUANTISED.items() if name in paths and f"metadata/{r}" not in paths]
    if missing:
        raise TFDSFormatError(f"{folder.folder} is not a MOVi folder: its features.json lacks {', '.join(missing)}")


class MOVi:
    """A MOVi TFDS folder read with MOVi's meaning: `columns` names the output features wanted (top-level names,
    including the derived `boxes`, `boxes_mask`, `instance_mask`; all when None); only what they need is decoded."""

    def __init__(self, folder, columns=None, max_instances: int = MAX_INSTANCES):
        self.tfds = TFDSFolder(folder)
        _check_movi(self.tfds)
        if max_instances < 1:
            raise ValueError(f"max_instances must be at least 1, got {max_instances}")
        self.max_instances = max_instances
        top = list(dict.fromkeys(column.path[0] for column in self.tfds.columns))
        has_boxes = {"instances/bboxes", "instances/bbox_frames"} <= {column.key for column in self.tfds.columns}
        available = top + (list(BOX_COLUMNS) if has_boxes else [])
        self.outputs = tuple(available if columns is None else columns)
        unknown = [name for name in self.outputs if name not in available]
        if unknown:
            raise TFDSFormatError(
                f"{self.tfds.folder}: no MOVi feature {', '.join(unknown)}; it has: {', '.join(available)}"
            )
        # What decoding them takes: the metadata (ranges, counts) and, for the boxes, the instances' boxes and frames.
        needed = {"metadata", *(name for name in self.outputs if name not in BOX_COLUMNS)}
        if set(self.outputs) & set(BOX_COLUMNS):
            needed |= {"instances/bboxes", "instances/bbox_frames"}
        self.columns = tuple(self.tfds.select(sorted(needed)))

    def features(self):
        """The `datasets.Features` of the output."""
        raw = hf_features([*self.columns, *self.tfds.select(["video"])])
        features = movi_features(raw, self.max_instances)
        return type(features)({name: features[name] for name in self.outputs})

    def examples(self, split: str):
        yield from generate_movi_examples(self.tfds.shards(split), self.columns, self.max_instances, self.outputs)

    def generator_kwargs(self, split: str) -> dict:
        """The generator and its kwargs for `datasets.(Iterable)Dataset.from_generator` (shards as a list, so
        `datasets` can divide them)."""
        return {"shards": self.tfds.shards(split), "columns": self.columns, "max_instances": self.max_instances,
                "outputs": self.outputs}  # fmt: skip

    def dataset(self, split: str):
        import datasets

        return datasets.IterableDataset.from_generator(generate_movi_examples, features=self.features(),
                                                       gen_kwargs=self.generator_kwargs(split),
                                                       split=datasets.NamedSplit(split))  # fmt: skip


def load_movi(source, split: str | None = None, columns=None, max_instances: int = MAX_INSTANCES):
    """MOVi with its meaning applied, as a streaming `datasets.IterableDataset`.

    `source` is a MOVi TFDS folder (e.g. `movi_a/128x128/1.0.0`, or `movi_a/128x128` holding one version) read with
    `split`, or a `datasets.Dataset` / `IterableDataset` holding the decoded TFDS content (an export made without
    `movi=True`, from disk or the Hub). `columns` picks the output features (see `MOVi`). Example::

        dataset = load_movi("movi_a/128x128", "validation", columns=["video", "segmentations", "boxes"])
        example = next(iter(dataset))  # video (24, 128, 128, 3) uint8, boxes (24, 23, 4) float32
    """
    import datasets

    if isinstance(source, (datasets.Dataset, datasets.IterableDataset)):
        if isinstance(source, datasets.Dataset):
            source = source.to_iterable_dataset()
        features = movi_features(source.features, max_instances) if source.features else None
        mapped = source.map(movi_example, fn_kwargs={"max_instances": max_instances}, features=features,
                            remove_columns=list(source.column_names or []))  # fmt: skip
        return mapped.select_columns(list(columns)) if columns is not None else mapped
    if split is None:
        raise ValueError("load_movi needs the split to read from a TFDS folder, e.g. split='train'")
    return MOVi(source, columns, max_instances).dataset(split)
