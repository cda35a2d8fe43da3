"""The SAVi video processor: `ZooVideoProcessor` with the official SAVi data convention as its defaults."""

from transformers.image_utils import PILImageResampling

from .video_processing import ZooVideoProcessor, ZooVideoProcessorKwargs


class SAViVideoProcessorKwargs(ZooVideoProcessorKwargs, total=False):
    """`ZooVideoProcessorKwargs`, under the name transformers gives a processor's options (`<Processor>Kwargs`)."""


class SAViVideoProcessor(ZooVideoProcessor):
    r"""
    Turns videos into what SAVi takes: `pixel_values_videos` (batch, frames, 3, 64, 64) with values in [0, 1] and no
    mean / std normalisation (the official pipeline's `convert_image_dtype`), 6 consecutive frames (the official
    training window; evaluation uses 24), bilinear short-side resize (the official `resize_small`) and centre crop.
    Everything else (inputs, sampling, decoding) is `ZooVideoProcessor`'s; `size`, `crop_size` and
    `num_frames` set other model sizes and clip lengths, e.g. `SAViVideoProcessor.for_config(config)`.
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


__all__ = ["SAViVideoProcessor"]
