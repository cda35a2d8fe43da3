"""Unsupervised video object discovery on MOVi, the protocol of SAVi's results table (google-research/
slot-attention-video: `savi/lib/evaluator.py`, `savi/lib/metrics.py`, `savi/configs/movi/*.py`), for every
object-centric family (SlotSSM, SAVi / SAVi++, STATM-SAVi).

The protocol, step by step:

1. Each validation video goes through the official evaluation preprocessing: the family's video processor's
   `preprocess_examples` (SAVi / STATM-SAVi: `video_from_tfds`, `sparse_to_dense_annotation(max_instances)`,
   `temporal_crop_or_pad(24)`, `resize_small(image_size)`, for a model that reconstructs depth (SAVi++)
   `transform_depth(transform='log_plus')`, `flow_to_rgb()`, tensor for tensor; SlotSSM: its own resize and crop,
   the segmentations resized alike, nearest).
2. The model runs on temporal slices of `slice_size` frames (SAVi: 6, `eval_slice_size`), the recurrent state
   carried from one slice to the next: the first slice starts from the initialiser (a conditional model from the
   first frame's boxes, the no-track box (0, 0, 0, 0) for absent objects, as the official evaluator conditions
   on `boxes`), each further slice from the previous slice's last predicted slots (`initial_slots`; the official
   `eval_continued_step` with `states_pred`). STATM-SAVi's memory buffer restarts with every slice as in the
   official code; its paper evaluates with slices of 24 frames, its default here. SlotSSM carries its whole
   recurrent state (`cache`), so slicing does not change its results. The official evaluator zero-pads the last
   slice and drops the padded frames' predictions; the models are causal, so running the shorter last slice gives
   the same predictions.
3. The predicted segmentation is, per pixel, the slot whose decoder alpha mask is largest (SlotSSM without alpha
   masks: its last block's cross-attention, upsampled nearest to the frame; `slot_masks`).
4. Metrics per video over all its frames (`slotssm_hf.evaluation.metrics`), counting only pixels where the padding
   mask is 1, then the mean over videos:

   - `ari`: ARI over all pixels (the official `ari`);
   - `fg_ari`: FG-ARI, ARI over the pixels whose true id is not background (the official `ari_nobg`; the number
     of SAVi's table, "evaluated on all frames of the video (incl. the first frame)"; a video with no foreground
     scores 1.0 as in the official metric);
   - `fg_ari_first_excluded`, `ari_first_excluded`: the same without the first frame, whose boxes condition the
     model (the SAVi ICLR 2022 paper's setup);
   - `mbo`: mean best overlap (VideoSAUR), each object's best IoU with any slot over the video;
   - `miou`: mIoU with one-to-one Hungarian matching of objects to slots over the video.

   mBO and mIoU leave out videos without objects (VideoSAUR's convention).

   SAVi / SAVi++ and STATM-SAVi also get `loss`, as their official evaluators log `eval_loss`: the model's training
   objective on the video (`video_loss`): its decoded targets (`config.targets`: the flow rendered as RGB, SAVi++'s
   log(1 + depth), or the frames) against the preprocessed ones, the squared error summed over all frames (padded
   ones too, as the official loss), pixels and channels. The mean over videos is the official `eval_loss` (a mean
   of batch means there: the same when every batch is full). Left out where the data lacks a target's field.
"""

import math
from dataclasses import dataclass

import numpy as np
import torch

from .metrics import hungarian_miou, mean_best_overlap, video_ari

METRICS = ("fg_ari", "ari", "fg_ari_first_excluded", "ari_first_excluded", "mbo", "miou")
METRIC_NAMES = {
    "fg_ari": "FG-ARI", "ari": "ARI", "fg_ari_first_excluded": "FG-ARI (first frame excluded)",
    "ari_first_excluded": "ARI (first frame excluded)", "mbo": "mBO", "miou": "mIoU (Hungarian)",
    "loss": "Evaluation loss",
}  # fmt: skip
# The official evaluation slice of each family (None: the whole video at once).
SLICE_SIZES = {"savi": 6, "statm": 24, "slotssm": None}
# The families whose official evaluator logs the evaluation loss beside ARI and FG-ARI (`eval_metrics_spec`'s
# "eval_loss" in savi/configs/movi/*.py and jax-statm/statm/configs/movi/*.py).
LOSS_FAMILIES = ("savi", "statm")


@dataclass
class ObjectDiscoveryProtocol:
    """The settings of one object-discovery evaluation. num_frames: `temporal_crop_or_pad`'s length (24); slice_size:
    frames per model call, the state carried across calls (None: the family's official value, `SLICE_SIZES`);
    max_instances: `sparse_to_dense_annotation`'s (None: the model's `num_boxes` for a conditional model, else 23)."""

    num_frames: int = 24
    slice_size: int | None = None
    max_instances: int | None = None
    name: str = "movi-object-discovery"

    def settings_for(self, config) -> dict:
        slice_size = self.slice_size or SLICE_SIZES.get(config.model_type) or self.num_frames
        max_instances = self.max_instances or getattr(config, "num_boxes", None) or 23
        return {"num_frames": self.num_frames, "slice_size": slice_size, "max_instances": max_instances}


def video_metrics(true_ids, pred_ids, valid) -> dict:
    """The protocol's metrics of one video: true_ids, pred_ids (frames, H, W) integer ids; valid (frames, H, W) the
    padding mask."""
    valid = torch.as_tensor(valid).bool()
    later = valid.clone()
    later[0] = False
    return {
        "fg_ari": video_ari(true_ids, pred_ids, valid, ignore_background=True),
        "ari": video_ari(true_ids, pred_ids, valid),
        "fg_ari_first_excluded": video_ari(true_ids, pred_ids, later, ignore_background=True),
        "ari_first_excluded": video_ari(true_ids, pred_ids, later),
        "mbo": mean_best_overlap(true_ids, pred_ids, valid),
        "miou": hungarian_miou(true_ids, pred_ids, valid),
    }


def video_loss(reconstruction, labels) -> float:
    """The evaluation loss of one video: reconstruction and labels (frames, channels, H, W), the squared error summed
    over every frame (padded ones too), pixel and channel, each target's sum added (the official `recon` loss with
    reduction "sum", one term per target). It is the models' own loss of a batch of this one video."""
    return float((torch.as_tensor(reconstruction).double() - torch.as_tensor(labels).double()).square().sum())


def mean_metrics(per_video: list[dict]) -> dict:
    """Means over videos; nan entries (mBO / mIoU of a video without objects) are left out, and the loss where no
    video has one."""
    means = {}
    for key in (*METRICS, "loss"):
        values = [row[key] for row in per_video if key in row and not math.isnan(row[key])]
        if values or key in METRICS:
            means[key] = float(np.mean(values)) if values else float("nan")
    return means


def slot_masks(output, frame_size) -> torch.Tensor:
    """Per-slot masks (batch, frames, num_slots, H, W) of a model output, for the metrics and the pictures: the
    decoder's alpha masks, else the last slot block's cross-attention (each token's weight per slot, mean over
    heads) upsampled nearest from the token grid to `frame_size` (run the model with `output_attentions=True`)."""
    if getattr(output, "masks", None) is not None:
        return output.masks[:, :, :, 0]
    if not getattr(output, "attentions", None):
        raise ValueError("the model output has neither per-slot masks nor attention maps to segment frames with; run "
                         "the model with output_attentions=True")  # fmt: skip
    attention = output.attentions[-1].mean(dim=-3)  # (batch, frames, num_slots, tokens)
    side = math.isqrt(attention.shape[-1])
    grid = attention.unflatten(-1, (side, side))
    return torch.nn.functional.interpolate(grid.flatten(0, 1), size=frame_size, mode="nearest").unflatten(
        0, grid.shape[:2]
    )


@torch.no_grad()
def run_in_slices(model, pixel_values_videos, boxes=None, slice_size: int | None = None, generator=None):
    """The model over whole videos in temporal slices of `slice_size` frames, the recurrent state carried across
    slices as the official evaluator carries it (see the module docstring). Returns the per-slot masks (batch,
    frames, num_slots, H, W) and the decoded targets (batch, frames, channels, H, W) of a model that decodes them
    (`reconstruction`), else None."""
    model_type = model.config.model_type
    frames = pixel_values_videos.shape[1]
    slice_size = slice_size or frames
    masks, reconstructions, carried = [], [], None
    for start in range(0, frames, slice_size):
        chunk = pixel_values_videos[:, start : start + slice_size]
        if model_type in ("savi", "statm"):
            kwargs = {"initial_slots": carried} if carried is not None else {"boxes": boxes, "generator": generator}
            output = model(chunk, **kwargs)
            carried = output.predicted_slots[:, -1]
        elif model_type == "slotssm":
            needs_attention = getattr(model.config, "decoder_type", None) != "spatial_broadcast"
            output = model(chunk, cache=carried, use_cache=True, output_attentions=needs_attention)
            carried = output.cache
        else:
            raise ValueError(f"object discovery is not defined for {model_type} models")
        masks.append(slot_masks(output, chunk.shape[-2:]).float())
        if getattr(output, "reconstruction", None) is not None:
            reconstructions.append(output.reconstruction)
    return torch.cat(masks, dim=1), torch.cat(reconstructions, dim=1) if reconstructions else None


def check_frame_size(pixel_values_videos, config, where: str, resize: str) -> None:
    """A clear error when preprocessed frames are not the size the model takes: names `where` the frames came from."""
    expected = getattr(config, "image_size", None)
    height, width = pixel_values_videos.shape[-2:]
    if expected is not None and (height, width) != (expected, expected):
        raise ValueError(
            f"{where}: field 'video' gives frames of {height} x {width} after {resize}; the model takes "
            f"{expected} x {expected} frames (config.image_size). Evaluate a model made for this data's frame size "
            "(MOVi's short side goes to the model's size; non-square frames stay non-square, as in the official "
            "pipeline)"
        )


__all__ = ["METRICS", "METRIC_NAMES", "ObjectDiscoveryProtocol", "mean_metrics", "run_in_slices", "slot_masks",
           "video_loss", "video_metrics"]  # fmt: skip
