"""Getting a clip's frames out of a video: which positions a clip takes (`clip_positions`), decoding only those from
a file with PyAV (from the keyframe before each run of wanted frames, skipping frames nothing refers to), or with
transformers' torchcodec / decord readers, and turning arrays, tensors and frame lists into (T, 3, H, W) uint8
tensors (`as_video_tensor`). Used by every family's video processor and by streaming."""

import bisect
import functools
import heapq
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from transformers.image_utils import ChannelDimension
from transformers.video_utils import VideoMetadata, convert_to_rgb

SAMPLING_MODES = ("start", "random", "uniform")
CHANNEL_COUNTS = (1, 3, 4)
VIDEO_BACKENDS = ("pyav", "torchcodec", "decord")



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
        video, channels_last = video[:, None], False
    elif video.dim() == 4 and channels_last is None:
        # Where either end could hold the channels, colour wins over grey (a 1-pixel-high RGB frame), else first.
        first, last = video.shape[1], video.shape[-1]
        channels_last = last in CHANNEL_COUNTS and (first not in CHANNEL_COUNTS or (first == 1 and last > 1))
    if video.dim() == 4 and channels_last:
        video = video.permute(0, 3, 1, 2)
    if video.dim() != 4 or video.shape[1] not in CHANNEL_COUNTS:
        raise ValueError(
            f"{name}: expected frames of shape (frames, height, width, channels) or (frames, channels, height, width) "
            f"with 1, 3 or 4 (RGBA) channels, got shape {tuple(video.shape)}"
        )
    if video.shape[0] == 0:
        raise ValueError(f"{name}: the video has no frames")
    if 0 in video.shape[2:]:
        raise ValueError(f"{name}: frames of {video.shape[2]} x {video.shape[3]} pixels; expected at least 1 x 1")
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


def read_video_file(path: str, backend: str, positions_for, decoder_threads: int) -> tuple[np.ndarray, VideoMetadata]:
    """The frames `positions_for(total_frames, fps)` picks from the video file at `path`, decoded with `backend`,
    and their metadata; a missing or undecodable file is a `ValueError` naming it."""
    if not os.path.isfile(path):
        raise ValueError(f"video file not found: {path}")
    try:
        if backend == "pyav":
            return decode_with_pyav(path, positions_for, decoder_threads)
        return read_with_transformers(path, backend, positions_for)
    except Exception as error:  # each decoder raises its own types for unreadable or corrupt files
        raise ValueError(f"could not decode video file {path} with {backend}: {error}") from error
