"""Frame-by-frame inference with constant memory: the recurrent form of the zoo's video models."""

import itertools
import os
from collections.abc import Iterator

import torch

from .models.video_decoding import rgb_converter
from .models.video_processing_slotssm import SlotSSMVideoProcessor


def iter_video_frames(path) -> Iterator:
    """The frames of a video file, decoded one at a time with PyAV, as uint8 (H, W, 3) arrays."""
    import av

    to_rgb = rgb_converter()
    with av.open(os.fspath(path)) as container:
        stream = container.streams.video[0]
        for frame in container.decode(stream):
            yield to_rgb.reformat(frame, format="rgb24").to_ndarray()


@torch.no_grad()
def stream(model, video, processor: SlotSSMVideoProcessor | None = None, chunk_size: int = 1, **first_inputs) -> Iterator:
    """Run a video model of the zoo (SlotSSM, SAVi or STATM-SAVi: the backbone or any head) over `video`,
    `chunk_size` frames at a time, yielding the model's output for each chunk: per frame by default. Memory stays
    constant however long the video is: only the recurrent state is carried from one chunk to the next (the `cache`
    of models that have one, SAVi's slots predicted for the next frame otherwise).

    video: a file path, or any iterable of frames (uint8 (H, W, 3) arrays, PIL images, or tensors), e.g. a live
    camera feed. processor: prepares each chunk (resize, crop, normalise); the default processor otherwise.
    first_inputs: further inputs of the first chunk only, e.g. the first-frame `boxes` of conditional SAVi / STATM.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size}")
    processor = processor or SlotSSMVideoProcessor()
    frames = iter_video_frames(video) if isinstance(video, (str, os.PathLike)) else iter(video)
    parameter = next(model.parameters())
    cached = hasattr(model.config, "use_cache")
    state = {"use_cache": True} if cached else {}
    if clash := sorted(first_inputs.keys() & state.keys()):
        raise TypeError(
            f"stream() sets {', '.join(clash)} itself, to carry the state from chunk to chunk: leave "
            f"{', '.join(clash)} out of its arguments"
        )
    while chunk := list(itertools.islice(frames, chunk_size)):
        pixel_values = processor(chunk, do_sample_frames=False)["pixel_values_videos"]
        output = model(pixel_values.to(parameter.device, parameter.dtype), **first_inputs, **state)
        first_inputs = {}
        state = {"cache": output.cache, "use_cache": True} if cached else {"initial_slots": output.predicted_slots[:, -1]}
        yield output


__all__ = ["stream", "iter_video_frames"]
