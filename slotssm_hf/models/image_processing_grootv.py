"""The image processor of GrootV models: transformers' ConvNeXt processor (the official GrootVL evaluation
transforms) taking its images through the zoo's input checks, so that a bad image is refused by name rather than
failing inside torchvision."""

import numpy as np
from transformers import ConvNextImageProcessor
from transformers.image_processing_backends import TorchvisionBackend
from transformers.image_utils import ChannelDimension, is_pil_image

from .video_decoding import as_video_tensor


class GrootVImageProcessor(ConvNextImageProcessor):
    r"""
    Turns images into `pixel_values` of shape (batch, 3, height, width): with `size={"shortest_edge": s}`, ConvNeXt's
    resize of the short side to s / crop_pct and centre crop to s (from s = 384 on, a warp to s x s); with
    `size={"height": h, "width": w}`, a warp to h x w (the official `build_transform` without TEST.CROP); then
    rescale to [0, 1] and normalise with `image_mean` / `image_std`.

    Images are paths or URLs, PIL images, or arrays / tensors (height, width, channels) or (channels, height, width)
    (`input_data_format` says which where the shape does not) with 1, 3 or 4 (RGBA, blended over white) channels and
    uint8 or [0, 1] floating-point pixels; one image, a list, or a 4-D batch. Each is checked and converted as the
    zoo's video processors convert a frame (`as_video_tensor`).
    """

    def _prepare_image_like_inputs(self, images, *args, expected_ndims: int = 3, **kwargs):
        """transformers' flat list of images (paths and URLs loaded), each through `process_image`, named by its
        position for the errors."""
        images = self._prepare_images_structure(images, expected_ndims=expected_ndims)
        if not images:
            raise ValueError("expected at least one image, got none")
        return [self.process_image(image, *args, name=f"image {i}", **kwargs) for i, image in enumerate(images)]

    def process_image(self, image, do_convert_rgb=None, input_data_format=None, device=None, name="image", **kwargs):
        """One image as a (3, height, width) uint8 tensor, or a `ValueError` naming it and what was expected."""
        if is_pil_image(image):  # as an array always (height, width, channels)
            image = np.array(image.convert("RGBA" if "A" in image.getbands() else "RGB"))
            input_data_format = ChannelDimension.LAST
        layout = None if input_data_format is None else ChannelDimension(input_data_format)
        channels_last = None if layout is None else layout == ChannelDimension.LAST
        image = as_video_tensor(image[None], name, channels_last, convert_rgb=do_convert_rgb is not False)[0]
        return image if device is None else image.to(device)

    def resize(self, image, size, resample, crop_pct: float = 224 / 256, **kwargs):
        """ConvNeXt's resize for a `shortest_edge` size; a warp to a `height` x `width` size, which ConvNeXt refuses."""
        if size.shortest_edge:
            return super().resize(image, size, resample, crop_pct, **kwargs)
        return TorchvisionBackend.resize(self, image, size, resample, **kwargs)


__all__ = ["GrootVImageProcessor"]
