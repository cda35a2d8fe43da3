"""SlotSSM video processor: video files, arrays or frame lists -> `pixel_values_videos` (batch, frames, 3, H, W)."""

import bisect
import functools
import heapq
import numbers
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from huggingface_hub.dataclasses import validate_typed_dict
from transformers.image_processing_utils import BatchFeature
from transformers.image_utils import (
    IMAGENET_DEFAULT_MEAN,
    IMAGENET_DEFAULT_STD,
    ChannelDimension,
    PILImageResampling,
    validate_kwargs,
)
from transformers.processing_utils import Unpack, VideosKwargs
from transformers.video_processing_utils import BaseVideoProcessor
from transformers.video_utils import VideoMetadata, convert_to_rgb

SAMPLING_MODES = ("start", "random", "uniform")
CHANNEL_COUNTS = (1, 3, 4)
VIDEO_BACKENDS = ("pyav", "torchcodec", "decord")


class SlotSSMVideoProcessorKwargs(VideosKwargs, total=False):
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


def clip_positions(total_frames: int, num_frames: int, stride: int, sampling: str, rng=np.random) -> np.ndarray:
    """Positions of a clip's frames in a video of `total_frames`; positions past the end mean the video is
    shorter than the clip (they become repeats of the last frame). `rng` draws the random start."""
    if sampling not in SAMPLING_MODES:
        raise ValueError(f"sampling must be one of {SAMPLING_MODES}, got {sampling!r}")
    if sampling == "uniform" and total_frames >= num_frames:
        return np.linspace(0, total_frames - 1, num_frames).round().astype(np.int64)
    span = (num_frames - 1) * stride + 1
    start = rng.randint(0, total_frames - span + 1) if sampling == "random" and total_frames > span else 0
    return start + np.arange(num_frames) * stride


def clip_metadata(positions: np.ndarray, total_frames: int, fps: float | None, backend: str | None) -> VideoMetadata:
    """Metadata of a clip whose `positions` were asked of a video of `total_frames`; `padded_frames` counts the
    positions past the end, which repeat the last frame."""
    metadata = VideoMetadata(total_num_frames=total_frames, fps=fps, video_backend=backend)
    metadata.frames_indices = np.minimum(positions, total_frames - 1).tolist()
    metadata.padded_frames = int((positions >= total_frames).sum())
    return metadata


# Codecs whose packets each hold one shown frame, so that the packets' timestamps, sorted, number the frames.
FRAME_PER_PACKET_CODECS = ("h264", "hevc", "vp9", "av1")
# Decoders that read `skip_frame` anew for every packet (libdav1d reads it once, when opened).
PER_PACKET_SKIP_DECODERS = ("h264", "hevc", "vp9")


def stream_fps(stream) -> float | None:
    return float(stream.average_rate) if stream.average_rate else None


def seek_segments(targets: list[int], keyframes: list[int]) -> list[tuple[int, list[int]]]:
    """Split the sorted frame numbers `targets` into runs, each decoded from one keyframe: a target starts a new
    run, from the last keyframe at or before it, when that keyframe comes after the previous target, so the frames
    in between are never decoded. `keyframes`: sorted numbers of the frames decoding can start from, 0 first."""
    segments = []
    for target in targets:
        start = keyframes[bisect.bisect_right(keyframes, target) - 1]
        if segments and start <= segments[-1][1][-1]:
            segments[-1][1].append(target)
        else:
            segments.append((start, [target]))
    return segments


def frame_table(container, stream, last: int | None) -> tuple[list[int], list[int]] | None:
    """The timestamps of a stream's frames in display order and the numbers of the frames decoding can start from,
    from its packets (no decoding): up to frame `last`, or all of them when `last` is None. None when the packets
    cannot number the frames. Packets the container marks discarded (before an edit list's start) are decoded but
    never shown: they get no number, and a discarded keyframe makes the next shown frame a starting point."""
    timestamps, keyframes, pending = [], [], []  # pending: a heap of (pts, keyframe, discarded) not numbered yet
    carried_keyframe = False

    def number(pts, keyframe, discarded):
        nonlocal carried_keyframe
        if discarded:
            carried_keyframe |= keyframe
            return
        if keyframe or carried_keyframe:
            keyframes.append(len(timestamps))
        timestamps.append(pts)
        carried_keyframe = False

    for packet in container.demux(stream):
        if not packet.size:  # the demuxer's closing empty packet
            continue
        if packet.pts is None:
            return None
        heapq.heappush(pending, (packet.pts, packet.is_keyframe, packet.is_discard))
        # Later packets are decoded later, so none is shown before this one's decoding time: every frame shown
        # up to then has been read, and can be numbered.
        while pending and packet.dts is not None and pending[0][0] <= packet.dts:
            number(*heapq.heappop(pending))
        if last is not None and len(timestamps) > last:
            break
    else:
        for entry in sorted(pending):
            number(*entry)
    if len(set(timestamps)) < len(timestamps) or not keyframes or keyframes[0] != 0:
        return None
    if last is not None and len(timestamps) <= last:  # fewer frames than the container said
        return None
    return timestamps, keyframes


def decode_packets(container, stream, needed=None):
    """The frames of `stream` from the container's position on, as `container.decode(stream)` gives them; with
    `needed(pts)`, a packet whose frame is not needed is decoded only if other frames refer to it."""
    for packet in container.demux(stream):
        if needed is not None:
            stream.codec_context.skip_frame = "DEFAULT" if needed(packet.pts) else "NONREF"
        yield from packet.decode()


def decode_from_keyframes(container, stream, positions_for) -> tuple[np.ndarray, VideoMetadata] | None:
    """Decode a clip seeking to a keyframe wherever that skips frames, and (where the decoder allows) not decoding
    the frames that are neither wanted nor referred to by others. None when the packets cannot number the frames,
    or the decoder does not return the frames they announce (e.g. a packet without a frame)."""
    fps = stream_fps(stream)
    if stream.frames > 0:  # packets are read only as far as the clip's last frame
        metadata = clip_metadata(positions_for(stream.frames, fps), stream.frames, fps, "pyav")
        table = frame_table(container, stream, max(metadata.frames_indices))
    else:  # some webm: the packets tell the length, without decoding the whole file
        table = frame_table(container, stream, None)
        if table is not None:
            metadata = clip_metadata(positions_for(len(table[0]), fps), len(table[0]), fps, "pyav")
    if table is None:
        return None
    timestamps, keyframes = table
    wanted = set(metadata.frames_indices)
    number = {pts: i for i, pts in enumerate(timestamps)}
    skipping = stream.codec_context.codec.name in PER_PACKET_SKIP_DECODERS
    to_rgb, kept = rgb_converter(), {}
    for start, targets in seek_segments(sorted(wanted), keyframes):
        container.seek(timestamps[start], stream=stream)
        expected = start  # the next frame to come; only unwanted ones may be missing
        for frame in decode_packets(container, stream, (lambda pts: number.get(pts) in wanted) if skipping else None):
            i = number.get(frame.pts)
            if i is None:
                return None
            if i < start:  # shown before the keyframe, decoded without what it refers to: not ours
                continue
            if i < expected or wanted.intersection(range(expected, i)):
                return None
            if i in wanted:
                kept[i] = to_rgb.reformat(frame, format="rgb24").to_ndarray()
            if i == targets[-1]:
                break
            expected = i + 1
        if targets[-1] not in kept:
            return None
    return np.stack([kept[i] for i in metadata.frames_indices]), metadata


def decode_in_order(container, stream, positions_for) -> tuple[np.ndarray, VideoMetadata]:
    """Decode a clip from the first frame on, stopping after the last one needed."""
    fps = stream_fps(stream)
    # Containers without a frame count (some webm / gif) are decoded whole to learn their length.
    positions = positions_for(stream.frames, fps) if stream.frames > 0 else None
    wanted = None if positions is None else set(np.minimum(positions, stream.frames - 1).tolist())
    to_rgb, kept, last = rgb_converter(), {}, -1
    for last, frame in enumerate(container.decode(stream)):
        if wanted is None or last in wanted:
            kept[last] = to_rgb.reformat(frame, format="rgb24").to_ndarray()
        if wanted is not None and last == max(wanted):
            break
    if last < 0:
        raise ValueError("it holds no video frames")
    # The frame count may be missing or overstated: the frames decoded are the truth.
    total = stream.frames if positions is not None and last == max(wanted) else last + 1
    if positions is None:
        positions = positions_for(total, fps)
    metadata = clip_metadata(positions, total, fps, "pyav")
    return np.stack([kept[i] for i in metadata.frames_indices]), metadata


def rgb_converter():
    """One converter for a whole clip: each frame's own would set up a new libswscale context, which costs
    several times the conversion itself."""
    from av.video.reformatter import VideoReformatter

    return VideoReformatter()


def decode_with_pyav(path: str, positions_for, threads: int = 0) -> tuple[np.ndarray, VideoMetadata]:
    """Decode the frames at `positions_for(total_frames, fps)` with PyAV; `threads`: libavcodec's threads for the
    file (0: its own choice). Returns the clip's frames, uint8 (T, H, W, 3), and its metadata."""
    import av

    def video_stream(container):
        if not container.streams.video:
            raise ValueError("it holds no video stream")
        stream = container.streams.video[0]
        stream.codec_context.thread_count = threads
        return stream

    with av.open(path) as container:
        stream = video_stream(container)
        if stream.codec_context.codec.canonical_name not in FRAME_PER_PACKET_CODECS:
            return decode_in_order(container, stream, positions_for)
        clip = decode_from_keyframes(container, stream, positions_for)
    if clip is not None:
        return clip
    with av.open(path) as container:  # the packets did not number the frames: start again, in order
        return decode_in_order(container, video_stream(container), positions_for)


def read_with_transformers(path: str, backend: str, positions_for) -> tuple[np.ndarray, VideoMetadata]:
    """Decode with transformers' torchcodec / decord readers."""
    from transformers.video_utils import load_video

    asked = {}

    def sample_indices_fn(metadata, **kwargs):
        asked["positions"] = positions_for(metadata.total_num_frames, metadata.fps)
        asked["metadata"] = clip_metadata(asked["positions"], metadata.total_num_frames, metadata.fps, backend)
        return np.asarray(asked["metadata"].frames_indices)

    frames, _ = load_video(path, backend=backend, sample_indices_fn=sample_indices_fn)
    return np.asarray(frames), asked["metadata"]


@functools.cache
def decoding_pool(pid: int) -> ThreadPoolExecutor:
    """The threads that decode and transform videos, one per core, kept for the whole process (`pid`: a forked
    DataLoader worker makes its own, since threads do not survive a fork). Fresh threads for every batch made
    batches of 8 short clips 10-20% slower."""
    return ThreadPoolExecutor(max_workers=os.cpu_count() or 1, thread_name_prefix="slotssm-video")


def as_video_list(videos) -> list:
    """One video (a path, a 4-D array / tensor, a list of frames) or a batch of them, as a list of videos."""
    if isinstance(videos, (str, os.PathLike)):
        return [videos]
    if isinstance(videos, (np.ndarray, torch.Tensor)):
        return list(videos) if videos.ndim == 5 else [videos]
    if isinstance(videos, (list, tuple)):
        if not videos:
            raise ValueError("expected at least one video, got an empty list")
        first = videos[0]
        if isinstance(first, (str, os.PathLike, list, tuple)) or getattr(first, "ndim", 0) == 4:
            return list(videos)
        return [videos]  # the frames of one video
    raise ValueError(f"expected a video path, an array or tensor, or a list of frames, got {type(videos).__name__}")


def as_video_tensor(video, name: str, channels_last: bool | None = None, convert_rgb: bool = True) -> torch.Tensor:
    """A video as a (T, 3, H, W) uint8 tensor; floating-point pixels must be in [0, 1]. `channels_last` says where
    the channels are (inferred from the shape when None); grey frames are repeated to RGB, and RGBA frames are
    blended over white with transformers' `convert_to_rgb` when `convert_rgb`."""
    if isinstance(video, (list, tuple)):
        frames = [np.asarray(frame) for frame in video]
        for index, frame in enumerate(frames):
            if frame.shape != frames[0].shape:
                raise ValueError(
                    f"{name}: every frame must have the shape of the first, {frames[0].shape}; frame {index} has "
                    f"shape {frame.shape}"
                )
        video = np.stack(frames) if frames else np.zeros((0, 1, 1, 3), np.uint8)
    video = video if isinstance(video, torch.Tensor) else torch.from_numpy(np.asarray(video))
    if video.dim() == 3:  # (T, H, W): grayscale frames
        video = video[:, None]
    elif video.dim() == 4 and channels_last is None:
        channels_last = video.shape[1] not in CHANNEL_COUNTS and video.shape[-1] in CHANNEL_COUNTS
    if video.dim() == 4 and channels_last:
        video = video.permute(0, 3, 1, 2)
    if video.dim() != 4 or video.shape[1] not in CHANNEL_COUNTS:
        raise ValueError(
            f"{name}: expected frames of shape (frames, height, width, channels) or (frames, channels, height, width) "
            f"with 1, 3 or 4 (RGBA) channels, got shape {tuple(video.shape)}"
        )
    if video.shape[0] == 0:
        raise ValueError(f"{name}: the video has no frames")
    if video.is_floating_point():  # [0, 1]: quantised like decoded pixels, so both resize (and clamp) alike
        video = (video * 255).round_()
        if not torch.isfinite(video).all():
            raise ValueError(f"{name}: the frames hold NaN or infinite pixel values")
        low, high = video.aminmax()
        if low < 0 or high > 255:  # beyond rounding: not [0, 1] pixels, e.g. 0-255 floats
            raise ValueError(
                f"{name}: floating-point pixels must be in [0, 1], got values from {low.item() / 255:g} to "
                f"{high.item() / 255:g}; pass uint8 frames, or divide 0-255 floats by 255"
            )
        video = video.to(torch.uint8)
    elif video.dtype != torch.uint8:
        raise ValueError(f"{name}: expected uint8 or floating-point pixels, got {video.dtype}")
    if video.shape[1] == 4:
        if not convert_rgb:
            raise ValueError(f"{name}: RGBA frames need do_convert_rgb=True (the model takes RGB)")
        return convert_to_rgb(video, input_data_format=ChannelDimension.FIRST).round_().to(torch.uint8)
    return video.expand(-1, 3, -1, -1) if video.shape[1] == 1 else video


class SlotSSMVideoProcessor(BaseVideoProcessor):
    r"""
    Turns videos into `pixel_values_videos` of shape (batch, frames, 3, crop height, crop width). The defaults follow
    the official SlotSSM data pipeline: 16 consecutive frames, short-side bicubic resize to 128, centre crop 128,
    rescale to [0, 1], ImageNet mean / std. `sampling="random"` takes the clip from a random start (training);
    the default `"start"` takes it from the first frame, `"uniform"` spreads it over the whole video.

    Videos are file paths (mp4, webm, avi, gif, ...; decoded with PyAV unless `video_backend` says otherwise),
    arrays or tensors of shape (T, H, W, C) or (T, C, H, W) with uint8 or [0, 1] float pixels, or lists of frames
    (PIL images or arrays); one video or a list of them. A video shorter than the clip is padded by repeating its
    last frame, and `padded_frames` (batch,) in the output counts the repeated frames of each clip.
    """

    valid_kwargs = SlotSSMVideoProcessorKwargs
    model_input_names = ["pixel_values_videos"]
    resample = PILImageResampling.BICUBIC
    image_mean = IMAGENET_DEFAULT_MEAN
    image_std = IMAGENET_DEFAULT_STD
    size = {"shortest_edge": 128}
    default_to_square = False
    crop_size = {"height": 128, "width": 128}
    do_resize = True
    do_center_crop = True
    do_rescale = True
    rescale_factor = 1 / 255
    do_normalize = True
    do_sample_frames = True
    do_convert_rgb = True
    num_frames = 16
    fps = None
    frame_stride = 1
    sampling = "start"
    video_backend = "pyav"

    def __init__(self, **kwargs: Unpack[SlotSSMVideoProcessorKwargs]):
        super().__init__(**kwargs)

    def preprocess(self, videos, **kwargs: Unpack[SlotSSMVideoProcessorKwargs]) -> BatchFeature:
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
            frames, info = self._read_file(os.fspath(video), options["video_backend"], positions_for, decoder_threads)
            clip = as_video_tensor(frames, os.fspath(video), convert_rgb=options["do_convert_rgb"])
        else:
            frames = as_video_tensor(video, f"video {position}", channels_last, options["do_convert_rgb"])
            info = clip_metadata(positions_for(len(frames), None), len(frames), None, None)
            clip = frames[info.frames_indices]
        info.height, info.width = clip.shape[-2:]
        return clip, info

    @staticmethod
    def _read_file(path: str, backend: str, positions_for, decoder_threads: int) -> tuple[np.ndarray, VideoMetadata]:
        if not os.path.isfile(path):
            raise ValueError(f"video file not found: {path}")
        try:
            if backend == "pyav":
                return decode_with_pyav(path, positions_for, decoder_threads)
            return read_with_transformers(path, backend, positions_for)
        except Exception as error:  # each decoder raises its own types for unreadable or corrupt files
            raise ValueError(f"could not decode video file {path} with {backend}: {error}") from error


__all__ = ["SlotSSMVideoProcessor"]
