"""Checks of the inputs the models of every family take: video tensors and the recurrent state (`cache`) of earlier
calls."""

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


def cache_error(problem: str, start: str) -> ValueError:
    """The error for a `cache` this model cannot continue from; `start`: how to make an empty one."""
    return ValueError(
        "the cache must come from a previous call of this model with use_cache=True on the same videos (or be "
        f"{start} to start); {problem}"
    )


def check_cache_state(state: torch.Tensor | None, needed: tuple, what: str, start: str):
    """Refuse a cache's `state` (None before the first frame) whose shape is not `needed`, the batch first; a
    string in `needed` names a size that may be any (e.g. the frames a memory holds)."""
    if state is None:
        return
    got = tuple(state.shape)
    if len(got) != len(needed) or any(isinstance(n, int) and g != n for g, n in zip(got, needed)):
        raise cache_error(f"its {what} has shape {got}; {needed[0]} videos need ({', '.join(map(str, needed))})", start)
