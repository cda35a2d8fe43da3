"""The SlotSSM video processor: the official SlotSSM data pipeline as the defaults of `ZooVideoProcessor`."""

from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, PILImageResampling

from .video_processing import ZooVideoProcessor, ZooVideoProcessorKwargs


class SlotSSMVideoProcessorKwargs(ZooVideoProcessorKwargs, total=False):
    """`ZooVideoProcessorKwargs`, under the name transformers gives a processor's options (`<Processor>Kwargs`)."""


class SlotSSMVideoProcessor(ZooVideoProcessor):
    r"""
    Turns videos into `pixel_values_videos` of shape (batch, frames, 3, crop height, crop width). The defaults follow
    the official SlotSSM data pipeline: 16 consecutive frames, short-side bicubic resize to 128, centre crop 128,
    rescale to [0, 1], ImageNet mean / std. Inputs, sampling and decoding are `ZooVideoProcessor`'s: file paths,
    arrays, tensors or lists of frames; `sampling="random"` for training clips; short videos padded by repeating
    their last frame (`padded_frames` counts them).
    """

    valid_kwargs = SlotSSMVideoProcessorKwargs
    resample = PILImageResampling.BICUBIC
    image_mean = IMAGENET_DEFAULT_MEAN
    image_std = IMAGENET_DEFAULT_STD
    size = {"shortest_edge": 128}
    crop_size = {"height": 128, "width": 128}
    num_frames = 16


__all__ = ["SlotSSMVideoProcessor"]
