"""The base of the zoo's video processors: videos (files, arrays, tensors, frame lists) in, `pixel_values_videos`
(batch, frames, channels, height, width) out, through transformers' `BaseVideoProcessor` transforms. Each family's
processor sets its data convention (size, crop, resampling, mean / std, clip length) as class attributes."""

import numbers
import os

import numpy as np
import torch
from huggingface_hub.dataclasses import validate_typed_dict
from transformers.image_processing_utils import BatchFeature
from transformers.image_utils import ChannelDimension, PILImageResampling, SizeDict, validate_kwargs
from transformers.processing_utils import Unpack, VideosKwargs
from transformers.video_processing_utils import BaseVideoProcessor
from transformers.video_utils import VideoMetadata

from .video_decoding import (
    VIDEO_BACKENDS,
    as_video_list,
    as_video_tensor,
    clip_metadata,
    clip_positions,
    decoding_pool,
    read_video_file,
)


class ZooVideoProcessorKwargs(VideosKwargs, total=False):
    """frame_stride: step between consecutive sampled frames (replaced by `fps`, which needs the video's rate: read from
    the file, or given in `video_metadata`).
    sampling: "start" (consecutive frames from the first), "random" (consecutive frames from a random start, for
    training) or "uniform" (evenly spaced over the whole video).
    video_backend: decoder for video files: "pyav" (default), "torchcodec" or "decord".
    clip_seeds: one seed per video for its random clip (default: drawn from NumPy's global generator)."""

    frame_stride: int
    sampling: str
    video_backend: str
    clip_seeds: list[int]


class ZooVideoProcessor(BaseVideoProcessor):
    r"""
    Turns videos into `pixel_values_videos` of shape (batch, frames, 3, crop height, crop width): a clip of
    `num_frames` frames, short-side resize to `size`, centre crop to `crop_size`, rescale to [0, 1] and normalise
    with `image_mean` / `image_std` (a subclass sets these to its family's data convention). `sampling="random"`
    takes the clip from a random start (training); the default `"start"` takes it from the first frame,
    `"uniform"` spreads it over the whole video.

    Videos are file paths (mp4, webm, avi, gif, ...; decoded with PyAV unless `video_backend` says otherwise),
    arrays or tensors of shape (T, H, W, C) or (T, C, H, W) with uint8 or [0, 1] float pixels, or lists of frames
    (PIL images or arrays); one video or a list of them. A video shorter than the clip is padded by repeating its
    last frame, and `padded_frames` (batch,) in the output counts the repeated frames of each clip.
    """

    valid_kwargs = ZooVideoProcessorKwargs
    model_input_names = ["pixel_values_videos"]
    default_to_square = False
    do_resize = True
    do_center_crop = True
    do_rescale = True
    rescale_factor = 1 / 255
    do_normalize = True
    do_sample_frames = True
    do_convert_rgb = True
    fps = None
    frame_stride = 1
    sampling = "start"
    video_backend = "pyav"

    def __init__(self, **kwargs: Unpack[ZooVideoProcessorKwargs]):
        super().__init__(**kwargs)

    def preprocess(self, videos, **kwargs: Unpack[ZooVideoProcessorKwargs]) -> BatchFeature:
        valid_keys = [*self.valid_kwargs.__annotations__, "return_tensors"]
        validate_kwargs(captured_kwargs=kwargs.keys(), valid_processor_keys=valid_keys)
        validate_typed_dict(self.valid_kwargs, kwargs)
        options = {name: kwargs.get(name, getattr(self, name, None)) for name in self.valid_kwargs.__annotations__}
        if options["video_backend"] not in VIDEO_BACKENDS:
            raise ValueError(f"video_backend must be one of {VIDEO_BACKENDS}, got {options['video_backend']!r}")
        if options["do_sample_frames"]:
            for name in ("num_frames", "frame_stride"):
                value = options[name]
                if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value <= 0:
                    raise ValueError(f"{name} must be a positive integer, got {value!r}")
            if options["fps"] is not None and not options["fps"] > 0:
                raise ValueError(f"fps must be a positive number (or None), got {options['fps']!r}")
        transforms = self._standardize_kwargs(**options)
        self._validate_preprocess_kwargs(**transforms)
        for unused in ("data_format", "return_tensors", "return_metadata", "video_metadata", "device"):
            transforms.pop(unused, None)

        videos = as_video_list(videos)
        cores = os.cpu_count() or 1
        # libavcodec's own threads only where the batch leaves cores idle: with a video per core they mostly
        # wait, and cost CPU time the other videos' decoding needs.
        decoder_threads = 1 if len(videos) >= cores else 0

        metadata = kwargs.get("video_metadata")
        if metadata is None:
            metadata = [None] * len(videos)
        elif len(metadata) != len(videos):
            raise ValueError(f"video_metadata must hold one entry per video ({len(videos)}), got {len(metadata)}")

        def process(position: int, video, seed: int) -> tuple[torch.Tensor, VideoMetadata]:
            given = metadata[position]
            given = given[0] if isinstance(given, (list, tuple)) else given  # transformers nests one per video
            clip, info = self._read_video(position, video, seed, given, options, decoder_threads)
            return self._preprocess(videos=[clip], **transforms)["pixel_values_videos"][0], info

        # Each video is decoded and transformed on its own thread, so one video's decoding overlaps another's
        # tensor work (PyAV and torch release the GIL). One seed per video, given or drawn in order from the global
        # generator, keeps random clips reproducible under transformers' set_seed.
        seeds = options["clip_seeds"]
        if seeds is None:
            seeds = np.random.randint(0, 2**31, size=len(videos))
        elif len(seeds) != len(videos):
            raise ValueError(f"clip_seeds must hold one seed per video ({len(videos)}), got {len(seeds)}")
        results = list(decoding_pool(os.getpid()).map(process, range(len(videos)), videos, seeds))
        pixel_values = [pixels for pixels, _ in results]
        batch = BatchFeature({"pixel_values_videos": pixel_values}, tensor_type=kwargs.get("return_tensors", "pt"))
        batch["padded_frames"] = torch.tensor([info.padded_frames for _, info in results])
        if kwargs.get("return_metadata"):
            batch["video_metadata"] = [info for _, info in results]
        return batch

    def preprocess_examples(self, examples, num_frames: int | None = None) -> BatchFeature:
        """Dataset examples in, model inputs and the aligned ground truth out: what an evaluation protocol feeds.

        examples: one example or a list; each a dict with `video` (T, H, W, C) uint8 frames (as
            `slotssm_hf.data.load_movi` yields them) and optionally `segmentations` (T, H, W[, 1]) integer instance
            ids, or the video itself (e.g. a Moving-MNIST sequence (T, H, W)).
        num_frames: every video is cut or padded to this many frames from its first (default: the longest video).

        Returns a `BatchFeature` with `pixel_values_videos` (batch, num_frames, C, height, width), this processor's
        own transforms of all the frames (a shorter video is padded by repeating its last frame, as `preprocess`
        pads), `padding_mask` (batch, num_frames, height, width) bool, False on padded frames, and, when the
        examples hold them, `segmentations` (batch, num_frames, height, width) int64: resized (nearest, pixel
        centres) and cropped like the frames, 0 on padded frames.
        """
        examples = [examples] if isinstance(examples, dict) or not isinstance(examples, (list, tuple)) else examples
        examples = [example if isinstance(example, dict) else {"video": example} for example in examples]
        videos = [as_video_tensor(example["video"], f"example {i}: field 'video'", convert_rgb=False)
                  for i, example in enumerate(examples)]  # fmt: skip
        length = num_frames or max(len(video) for video in videos)
        pixels, masks, segmentations = [], [], []
        size, crop = (value if isinstance(value, SizeDict) else SizeDict(**value)
                      for value in (self.size, self.crop_size))  # fmt: skip
        for index, (example, video) in enumerate(zip(examples, videos)):
            kept = min(len(video), length)
            positions = np.minimum(np.arange(length), len(video) - 1)
            pixels.append(self.preprocess([video[positions]], do_sample_frames=False)["pixel_values_videos"][0])
            if "segmentations" not in example:
                continue
            ids = torch.as_tensor(np.asarray(example["segmentations"]))
            ids = ids[..., 0] if ids.dim() == 4 else ids
            if ids.shape != (len(video), *video.shape[-2:]):
                raise ValueError(
                    f"example {index}: field 'segmentations' has shape {tuple(ids.shape)}; the video's frames need "
                    f"({len(video)}, {video.shape[-2]}, {video.shape[-1]})"
                )
            # Ids as float32 (exact below 2**24) through the same resize and crop as the frames, nearest pixel.
            ids = ids[:kept, None].float()
            if self.do_resize:
                ids = self.resize(ids, size=size, resample=PILImageResampling.NEAREST)  # nearest-exact
            if self.do_center_crop:
                ids = self.center_crop(ids, crop)
            ids = ids[:, 0].long()
            segmentations.append(torch.cat([ids, ids.new_zeros(length - kept, *ids.shape[1:])]))
        height, width = pixels[0].shape[-2:]
        for video in videos:
            valid = torch.zeros(length, height, width, dtype=torch.bool)
            valid[: min(len(video), length)] = True
            masks.append(valid)
        batch = {"pixel_values_videos": torch.stack(pixels), "padding_mask": torch.stack(masks)}
        if segmentations:
            if len(segmentations) != len(examples):
                raise ValueError("either every example or none must hold 'segmentations'")
            batch["segmentations"] = torch.stack(segmentations)
        return BatchFeature(batch)

    def sample_frames(
        self,
        metadata: VideoMetadata,
        num_frames: int | None = None,
        fps: float | None = None,
        frame_stride: int | None = None,
        sampling: str | None = None,
        rng=np.random,
        **kwargs,
    ) -> np.ndarray:
        """Positions of the clip's frames in a video of `metadata.total_num_frames` frames (transformers' sampling
        hook): `num_frames` frames, `frame_stride` apart, or as many apart as the video's rate over `fps` (which then
        needs `metadata.fps`); from the start, a random start (drawn with `rng`) or spread uniformly (`sampling`).
        Positions past the end mean the video is shorter than the clip: they repeat the last frame."""
        num_frames, fps = num_frames or self.num_frames, fps or self.fps
        stride, sampling = frame_stride or self.frame_stride, sampling or self.sampling
        if fps:
            if not metadata.fps:
                raise ValueError(
                    f"sampling at fps={fps} needs the video's frame rate; it is unknown for this video: pass "
                    "video_metadata with its fps, or use frame_stride"
                )
            stride = max(1, round(metadata.fps / fps))
        return clip_positions(metadata.total_num_frames, num_frames, stride, sampling, rng)

    def _read_video(
        self, position: int, video, seed: int, metadata, options: dict, decoder_threads: int
    ) -> tuple[torch.Tensor, VideoMetadata]:
        """Decode or convert one video to (T, 3, H, W) and take its clip: the sampled frames, padded. `metadata`:
        what the caller said of the video (its fps), or None."""
        rng = np.random.RandomState(seed)
        given_fps = (metadata.get("fps") if isinstance(metadata, dict) else getattr(metadata, "fps", None))
        layout = options["input_data_format"]
        channels_last = None if layout is None else ChannelDimension(layout) == ChannelDimension.LAST

        def positions_for(total: int, video_fps: float | None) -> np.ndarray:
            if not options["do_sample_frames"]:
                return np.arange(total)
            metadata = VideoMetadata(total_num_frames=total, fps=video_fps or given_fps)
            return self.sample_frames(metadata, options["num_frames"], options["fps"], options["frame_stride"],
                                      options["sampling"], rng)  # fmt: skip

        if isinstance(video, (str, os.PathLike)):
            frames, info = read_video_file(os.fspath(video), options["video_backend"], positions_for, decoder_threads)
            clip = as_video_tensor(frames, os.fspath(video), convert_rgb=options["do_convert_rgb"])
        else:
            frames = as_video_tensor(video, f"video {position}", channels_last, options["do_convert_rgb"])
            info = clip_metadata(positions_for(len(frames), None), len(frames), None, None)
            clip = frames[info.frames_indices]
        info.height, info.width = clip.shape[-2:]
        return clip, info


__all__ = ["ZooVideoProcessor"]
