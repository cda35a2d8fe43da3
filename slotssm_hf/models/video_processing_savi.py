"""The SAVi video processor: `ZooVideoProcessor` with the official SAVi data convention as its defaults, and the
official MOVi evaluation pipeline (`preprocess_examples`)."""

import math

import numpy as np
import torch
from transformers.image_processing_utils import BatchFeature
from transformers.image_utils import PILImageResampling

from .video_processing import ZooVideoProcessor, ZooVideoProcessorKwargs

# The official MOVi evaluation (savi/configs/movi/*.py `preproc_eval`): 24 frames, up to 23 instances.
OFFICIAL_EVAL_FRAMES = 24
OFFICIAL_MAX_INSTANCES = 23
FLOW_SCALING_FACTOR = 50.0  # `flow_tensor_to_rgb_tensor`'s default
# What each decoder target (`config.targets`) is made from: the example's field, and the output that holds it.
TARGET_FIELDS = {"video": "video", "flow": "backward_flow", "depth": "depth"}
TARGET_OUTPUTS = {"video": "pixel_values_videos", "flow": "flow", "depth": "depth"}


class SAViVideoProcessorKwargs(ZooVideoProcessorKwargs, total=False):
    """`ZooVideoProcessorKwargs`, under the name transformers gives a processor's options (`<Processor>Kwargs`)."""


def resize_small_shape(height: int, width: int, size: int) -> tuple[int, int]:
    """The official `resize_small(size)` output size: the short side becomes `size`, the long side
    `round(long * size / short)`, computed in float32 and rounded half to even as TensorFlow's `tf.round`."""
    ratio = np.float32(size) / np.float32(min(height, width))
    return int(np.round(np.float32(height) * ratio)), int(np.round(np.float32(width) * ratio))


def _source_coordinates(out_size: int, in_size: int) -> torch.Tensor:
    """Half-pixel-centre source coordinates (out_size,) float32 of TensorFlow's resize kernels: (i + 0.5) * scale."""
    scale = torch.tensor(in_size / out_size, dtype=torch.float32)
    return (torch.arange(out_size, dtype=torch.float32) + 0.5) * scale


def resize_bilinear(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """TensorFlow's `tf.image.resize(method="bilinear")` without antialiasing, in float32 with its order of operations
    (`resize_bilinear` with half-pixel centres): images (..., H, W) float -> (..., height, width)."""
    images = images.float()

    def axis(out_size, in_size):
        position = _source_coordinates(out_size, in_size) - 0.5
        floor = torch.floor(position)
        low = floor.clamp(min=0).long()
        high = torch.ceil(position).clamp(max=in_size - 1).long()
        return low, high, position - floor

    (top, bottom, y_lerp), (left, right, x_lerp) = axis(size[0], images.shape[-2]), axis(size[1], images.shape[-1])
    rows_top, rows_bottom = images[..., top, :], images[..., bottom, :]
    top_row = rows_top[..., left] + (rows_top[..., right] - rows_top[..., left]) * x_lerp
    bottom_row = rows_bottom[..., left] + (rows_bottom[..., right] - rows_bottom[..., left]) * x_lerp
    return top_row + (bottom_row - top_row) * y_lerp[:, None]


def resize_nearest(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """TensorFlow's `tf.image.resize(method="nearest")` (half-pixel centres): the source pixel of output pixel i is
    min(floor((i + 0.5) * in / out), in - 1). Any dtype: images (..., H, W) -> (..., height, width)."""
    rows = torch.floor(_source_coordinates(size[0], images.shape[-2])).long().clamp(max=images.shape[-2] - 1)
    columns = torch.floor(_source_coordinates(size[1], images.shape[-1])).long().clamp(max=images.shape[-1] - 1)
    return images[..., rows, :][..., columns]


def flow_to_rgb(flow: torch.Tensor) -> torch.Tensor:
    """The official `flow_to_rgb()` (`flow_tensor_to_rgb_tensor` then `convert_image_dtype` to uint8 and back):
    flow (..., H, W, >=2) float32, channel 0 read as x and 1 as y -> RGB (..., H, W, 3) float32 in [0, 1]. The hue is
    the flow's angle, the saturation its magnitude times 50 / hypot(H, W) clipped to 1, the value 1; quantised to
    uint8 (x * 255.5, truncated) and back (times float32(1 / 255))."""
    flow = flow.float()
    height, width = flow.shape[-3:-1]
    scaling = torch.tensor(FLOW_SCALING_FACTOR / (height**2.0 + width**2.0) ** 0.5, dtype=torch.float32)
    x, y = flow[..., 0], flow[..., 1]
    hue = (torch.atan2(y, x) / torch.tensor(math.pi, dtype=torch.float32) + 1.0) / 2.0
    saturation = torch.clamp((y**2.0 + x**2.0) ** 0.5 * scaling, 0.0, 1.0)
    # tf.image.hsv_to_rgb with value 1: each channel (1 - s) + s * ramp(6 h).
    hue6 = hue * 6.0
    ramps = [((hue6 - 3.0).abs() - 1.0), (2.0 - (hue6 - 2.0).abs()), (2.0 - (hue6 - 4.0).abs())]
    rgb = torch.stack([(1.0 - saturation) + saturation * ramp.clamp(0.0, 1.0) for ramp in ramps], dim=-1)
    quantised = (rgb * 255.5).to(torch.uint8)
    return quantised.float() * torch.tensor(1.0 / 255, dtype=torch.float32)


def log_plus_depth(depth: torch.Tensor) -> torch.Tensor:
    """The official `transform_depth(transform='log_plus')` of SAVi++'s depth target: log(1 + depth), in float32
    with its order of operations (the add, then the log; not log1p)."""
    return torch.log(1.0 + depth.float())


def dense_first_frame_boxes(example: dict, max_instances: int) -> torch.Tensor:
    """The first frame's boxes (max_instances, 4) float32 of the official `sparse_to_dense_annotation`: instance k's box
    where frame 0 is among its `bbox_frames`, the no-track box (0, 0, 0, 0) where it is not, zero rows past the
    instance count, instances beyond `max_instances` dropped. From `boxes` (T, N, 4), as `load_movi` densifies them,
    or from the stored `instances` (`bboxes`, `bbox_frames`)."""
    boxes = torch.zeros(max_instances, 4, dtype=torch.float32)
    if "boxes" in example:
        first = torch.as_tensor(np.asarray(example["boxes"], np.float32))[0]
        count = min(len(first), max_instances)
        boxes[:count] = first[:count]
    else:
        instances = example["instances"]
        for index, (box, frames) in enumerate(zip(instances["bboxes"][:max_instances],
                                                  instances["bbox_frames"][:max_instances])):  # fmt: skip
            frames = np.asarray(frames).reshape(-1)
            if (frames == 0).any():
                boxes[index] = torch.as_tensor(np.asarray(box, np.float32).reshape(-1, 4)[np.argmax(frames == 0)])
    return boxes


class SAViVideoProcessor(ZooVideoProcessor):
    r"""
    Turns videos into what SAVi takes: `pixel_values_videos` (batch, frames, 3, 64, 64) with values in [0, 1] and no
    mean / std normalisation (the official pipeline's `convert_image_dtype`), 6 consecutive frames (the official
    training window; evaluation uses 24), bilinear short-side resize (the official `resize_small`) and centre crop.
    Everything else (inputs, sampling, decoding) is `ZooVideoProcessor`'s; `size`, `crop_size` and
    `num_frames` set other model sizes and clip lengths, e.g. `SAViVideoProcessor.for_config(config)`.

    `preprocess_examples` is the official evaluation pipeline on MOVi records, tensor for tensor.
    """

    valid_kwargs = SAViVideoProcessorKwargs
    resample = PILImageResampling.BILINEAR
    image_mean = [0.0, 0.0, 0.0]
    image_std = [1.0, 1.0, 1.0]
    do_normalize = False
    size = {"shortest_edge": 64}
    crop_size = {"height": 64, "width": 64}
    num_frames = 6

    @classmethod
    def for_config(cls, config) -> "SAViVideoProcessor":
        """The processor for a `SAViConfig`: its frame size and training clip length."""
        size = config.image_size
        crop_size = {"height": size, "width": size}
        return cls(size={"shortest_edge": size}, crop_size=crop_size, num_frames=config.num_frames)

    def preprocess_examples(self, examples, num_frames: int | None = OFFICIAL_EVAL_FRAMES,
                            max_instances: int = OFFICIAL_MAX_INSTANCES,
                            targets: dict[str, int] | None = None) -> BatchFeature:  # fmt: skip
        """MOVi examples through the official SAVi evaluation pipeline (savi/configs/movi/*.py `preproc_eval`,
        savi/lib/preprocessing.py), giving the tensors it gives:

        1. `video_from_tfds`: frames uint8 -> float32 times float32(1 / 255); the flow target is the *backward* flow
           (`backward_flow`, de-quantised as `load_movi` does); `padding_mask` 1 everywhere.
        2. `sparse_to_dense_annotation(max_instances)`: segmentation ids above `max_instances` become background;
           boxes per frame, padded with the no-track box (0, 0, 0, 0) (`dense_first_frame_boxes`).
        3. `temporal_crop_or_pad(num_frames)`: cut, or padded with zeros (frames, flow, segmentations, padding
           mask, boxes).
        4. `resize_small(size["shortest_edge"])`: short side to that size (`resize_small_shape`); frames, flow and
           depth bilinear without antialiasing, segmentations and the padding mask nearest, both with
           TensorFlow's half-pixel centres (`resize_bilinear`, `resize_nearest`); flow channels 0 and 1 scaled by
           new_height / height and new_width / width. No crop: non-square frames stay non-square.
        5. `transform_depth(transform='log_plus')`, only for a model that reconstructs depth (`targets` holds
           `"depth"`, as the official SAVi++ and STATM-SAVi++ configs): depth becomes log(1 + depth)
           (`log_plus_depth`), after the resize.
        6. `flow_to_rgb()`: the flow as an RGB picture (`flow_to_rgb`).

        examples: a dict or a list of dicts as `slotssm_hf.data.load_movi` yields (`video` (T, H, W, 3) uint8,
            `segmentations` (T, H, W, 1), `boxes` (T, N, 4) or the stored `instances`, and optionally
            `backward_flow` (T, H, W, 2) float32, `depth` (T, H, W, 1) float32).
        num_frames: the length of `temporal_crop_or_pad` (24, the official value; None keeps the longest video's).
        max_instances: `sparse_to_dense_annotation`'s: 23 in the official configs; give a conditional model the
            number of boxes it takes (`config.num_boxes`, i.e. `num_slots - 1`).
        targets: what the model reconstructs (`config.targets`, e.g. `{"flow": 3, "depth": 1}` for SAVi++): its
            depth target is transformed (step 5) and `labels` holds the targets, which every example must hold
            (`video`; `backward_flow` for flow; `depth`). None: no depth transform, no `labels`.

        Returns a `BatchFeature`: `pixel_values_videos` (batch, frames, 3, h, w), `boxes` (batch, max_instances, 4)
        the first frame's (what the conditional model takes), `padding_mask` (batch, frames, h, w) bool,
        `segmentations` (batch, frames, h, w) int64, and where the examples hold them `flow` (batch, frames, 3, h, w)
        (the RGB flow target) and `depth` (batch, frames, 1, h, w); with `targets`, `labels` (batch, frames,
        channels, h, w): the targets concatenated along channels in `targets` order, what the model's loss compares
        its `reconstruction` with.
        """
        examples = [examples] if isinstance(examples, dict) else list(examples)
        length = num_frames or max(len(example["video"]) for example in examples)
        size = self.size["shortest_edge"] if "shortest_edge" in self.size else min(self.size.values())
        fields = {}
        for index, example in enumerate(examples):
            values = official_eval_example(example, index, length, size, max_instances, targets)
            for name, value in values.items():
                fields.setdefault(name, []).append(value)
        for name, values in fields.items():
            if len(values) != len(examples):
                raise ValueError(f"field '{name}' is in some examples but not in all")
            shapes = {tuple(value.shape) for value in values}
            if len(shapes) > 1:
                raise ValueError(f"the examples' frames differ in size after resize_small({size}): {sorted(shapes)}")
        return BatchFeature({name: torch.stack(values) for name, values in fields.items()})


def official_eval_example(example: dict, index: int, length: int, size: int, max_instances: int,
                          targets: dict[str, int] | None = None) -> dict:  # fmt: skip
    """One example through `SAViVideoProcessor.preprocess_examples`' steps; channels first."""

    def field(name):
        return torch.as_tensor(np.asarray(example[name]))

    targets = dict(targets or {})
    for name in targets:
        if name not in TARGET_FIELDS:
            raise ValueError(f"targets must be some of {list(TARGET_FIELDS)} (config.targets), got {targets}")
        if TARGET_FIELDS[name] not in example:
            raise ValueError(f"example {index}: the model reconstructs {name} (targets {targets}), but the "
                             f"example has no field '{TARGET_FIELDS[name]}'")  # fmt: skip

    video = field("video")
    if video.dtype != torch.uint8 or video.dim() != 4 or video.shape[-1] != 3:
        raise ValueError(f"example {index}: field 'video' must be (frames, height, width, 3) uint8 frames as MOVi "
                         f"stores them, got {tuple(video.shape)} {video.dtype}")  # fmt: skip
    frames, height, width = video.shape[:3]
    out = {"pixel_values_videos": video.float() * torch.tensor(1.0 / 255, dtype=torch.float32)}
    if "segmentations" in example:
        ids = field("segmentations").long()
        ids = ids[..., 0] if ids.dim() == 4 else ids
        if tuple(ids.shape) != (frames, height, width):
            raise ValueError(f"example {index}: field 'segmentations' has shape {tuple(ids.shape)}, the frames "
                             f"{(frames, height, width)}")  # fmt: skip
        out["segmentations"] = torch.where(ids <= max_instances, ids, 0)
    out["padding_mask"] = torch.ones(frames, height, width, dtype=torch.uint8)
    for name, target in (("backward_flow", "flow"), ("depth", "depth")):
        if name in example:
            value = field(name)
            if not value.is_floating_point():
                raise ValueError(f"example {index}: field '{name}' is still quantised ({value.dtype}); read MOVi with "
                                 "slotssm_hf.data.load_movi, which de-quantises it")  # fmt: skip
            if tuple(value.shape[:3]) != (frames, height, width):
                raise ValueError(f"example {index}: field '{name}' has shape {tuple(value.shape)}, the frames "
                                 f"{(frames, height, width)}")  # fmt: skip
            out[target] = value.float()
    boxes = dense_first_frame_boxes(example, max_instances) if ("boxes" in example or "instances" in example) else None

    # temporal_crop_or_pad: zeros after the end (the padding mask too, so padded frames do not count).
    for name, value in out.items():
        value = value[:length]
        if len(value) < length:
            value = torch.cat([value, value.new_zeros(length - len(value), *value.shape[1:])])
        out[name] = value

    new_size = resize_small_shape(height, width, size)
    if new_size != (height, width):
        out["pixel_values_videos"] = resize_bilinear(out["pixel_values_videos"].permute(0, 3, 1, 2), new_size)
        for name in ("segmentations", "padding_mask"):
            if name in out:
                out[name] = resize_nearest(out[name], new_size)
        if "depth" in out:
            out["depth"] = resize_bilinear(out["depth"].permute(0, 3, 1, 2), new_size)
        if "flow" in out:
            flow = resize_bilinear(out["flow"].permute(0, 3, 1, 2), new_size)
            scale = torch.tensor(new_size, dtype=torch.float32) / torch.tensor((height, width), dtype=torch.float32)
            scale = scale.repeat(flow.shape[1] // 2)
            out["flow"] = flow * scale[:, None, None]
    else:
        out["pixel_values_videos"] = out["pixel_values_videos"].permute(0, 3, 1, 2)
        for name in ("depth", "flow"):
            if name in out:
                out[name] = out[name].permute(0, 3, 1, 2)
    if "depth" in targets:
        out["depth"] = log_plus_depth(out["depth"])
    if "flow" in out:
        out["flow"] = flow_to_rgb(out["flow"].permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
    out["padding_mask"] = out["padding_mask"].bool()
    if boxes is not None:
        out["boxes"] = boxes
    if targets:
        for name, channels in targets.items():
            if out[TARGET_OUTPUTS[name]].shape[1] != channels:
                raise ValueError(f"the model reconstructs {name} with {channels} channels (config.targets); the "
                                 f"official pipeline gives {out[TARGET_OUTPUTS[name]].shape[1]}")  # fmt: skip
        out["labels"] = torch.cat([out[TARGET_OUTPUTS[name]] for name in targets], dim=1)
    return out


__all__ = ["SAViVideoProcessor"]
