"""The video processor of ConvS5 models: grayscale frames in [-1, 1], as the official Moving-MNIST pipeline."""

import torch
from transformers.image_utils import PILImageResampling

from .video_processing import ZooVideoProcessor, ZooVideoProcessorKwargs

# ITU-R BT.601 luma, which turns colour frames into the single channel of the official models.
LUMA_WEIGHTS = (0.299, 0.587, 0.114)


class ConvS5VideoProcessorKwargs(ZooVideoProcessorKwargs, total=False):
    """`ZooVideoProcessorKwargs`, under the name transformers gives a processor's options (`<Processor>Kwargs`)."""


class ConvS5VideoProcessor(ZooVideoProcessor):
    r"""
    Turns videos into `pixel_values_videos` of shape (batch, frames, 1, 64, 64) with values 2 * uint8 / 255 - 1, as
    the official ConvS5 data pipeline: 300 consecutive frames by default (the Moving-MNIST-300 training clips), a
    short-side resize and centre crop to 64 (no change for 64 x 64 frames), and colour frames reduced to luma.
    Accepts everything `ZooVideoProcessor` does (file paths, arrays, tensors, lists of frames).
    """

    valid_kwargs = ConvS5VideoProcessorKwargs
    resample = PILImageResampling.BILINEAR
    image_mean = [0.5, 0.5, 0.5]
    image_std = [0.5, 0.5, 0.5]
    size = {"shortest_edge": 64}
    crop_size = {"height": 64, "width": 64}
    num_frames = 300

    def _preprocess(self, videos: list[torch.Tensor], **kwargs):
        batch = super()._preprocess(videos, **kwargs)
        # (x - 0.5) / 0.5 is the same for every channel, so the luma of normalised values is the normalised luma.
        weights = torch.tensor(LUMA_WEIGHTS)[:, None, None]
        batch["pixel_values_videos"] = [
            (video * weights.to(video.dtype)).sum(dim=-3, keepdim=True) for video in batch["pixel_values_videos"]
        ]
        return batch


__all__ = ["ConvS5VideoProcessor"]
