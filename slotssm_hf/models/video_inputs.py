"""Checks of the video tensors the models of every family take."""

import torch


def check_pixel_values_videos(pixel_values_videos, config, name: str = "pixel_values_videos"):
    """Refuse anything but a floating (batch, frames, config.num_channels, config.image_size, config.image_size)
    tensor with at least one video and one frame, naming the expected shape."""
    expected = (config.num_channels, config.image_size, config.image_size)
    if (
        isinstance(pixel_values_videos, torch.Tensor)
        and pixel_values_videos.dim() == 5
        and tuple(pixel_values_videos.shape[2:]) == expected
        and pixel_values_videos.shape[0] > 0
        and pixel_values_videos.shape[1] > 0
        and pixel_values_videos.is_floating_point()
    ):
        return
    got = (
        f"{tuple(pixel_values_videos.shape)} of dtype {pixel_values_videos.dtype}"
        if isinstance(pixel_values_videos, torch.Tensor)
        else type(pixel_values_videos).__name__
    )
    raise ValueError(
        f"expected {name} of shape (batch, frames, {', '.join(map(str, expected))}) with at least one frame and a "
        f"floating dtype, got {got}"
    )
