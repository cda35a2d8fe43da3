"""What every generator shares: a `datasets.Dataset` built from a seeded generator function, one random generator per
video, and `write_videos` to write any data set's videos as mp4 files.

Video `i` of a data set depends only on `(seed, i)`, never on `num_videos`, so a larger data set starts with the
videos of a smaller one. Image columns are stored as uint8; `datasets`' numpy and torch formats widen integers to
int64 unless given a dtype, e.g. `dataset.with_format("numpy", columns=["video"], dtype=np.uint8)`.
"""

import hashlib
import os

import numpy as np

from ..atomic_files import write_atomically


def write_videos(dataset, folder: str, fps: int = 8, class_folders: bool = False, crf: int = 18) -> list[str]:
    """Write each example's `video` (T, H, W, 3) uint8 as an H.264 (yuv420p) mp4, `folder/{index:05d}.mp4`.

    With `class_folders`, files go to `folder/{class}/{index:05d}.mp4`, where `class` is the `label` column's
    class name (a `ClassLabel`) or the integer label zero-padded to a common width, so that sorting the folder
    names (as folder-of-videos loaders do) keeps the integer order. `crf` sets the H.264 quality (lower is closer
    to lossless). Each file is written under a temporary name and renamed, so no half-written mp4 is left behind.
    Returns the paths in example order.
    """
    if "video" not in dataset.column_names:
        raise ValueError(f"the dataset has no 'video' column (columns: {dataset.column_names})")
    if class_folders and "label" not in dataset.column_names:
        raise ValueError(f"class_folders=True needs a 'label' column (columns: {dataset.column_names})")
    class_names = _class_folder_names(dataset) if class_folders else None
    videos = dataset.with_format("numpy", columns=["video"])
    paths = []
    for index in range(len(videos)):
        target_dir = os.path.join(folder, class_names[index]) if class_folders else folder
        os.makedirs(target_dir, exist_ok=True)
        path = os.path.join(target_dir, f"{index:05d}.mp4")
        video = _as_uint8_video(videos[index]["video"], index)
        write_atomically(path, lambda name: _encode_h264(video, name, fps, crf))
        paths.append(path)
    return paths



def dataset_from_generator(generator, gen_kwargs, features, cache_dir):
    """`Dataset.from_generator` with a fingerprint of the arguments and the generator module's source, so a cached
    copy is reused only when it would be generated identically (the default fingerprint misses edits to helpers)."""
    import sys

    import datasets

    with open(sys.modules[generator.__module__].__file__, "rb") as module_file:
        source = module_file.read()
    fingerprint = hashlib.sha256(repr((generator.__name__, sorted(gen_kwargs.items()), source)).encode()).hexdigest()
    return datasets.Dataset.from_generator(
        generator, features=features, gen_kwargs=gen_kwargs, cache_dir=cache_dir, fingerprint=fingerprint[:32]
    )


def video_rng(seed, index):
    """Per-video generator: video `index` is the same whatever the data set size."""
    return np.random.default_rng([seed, index])



def _class_folder_names(dataset):
    """Sub-folder name per example from the `label` column."""
    import datasets

    labels = [int(label) for label in dataset["label"]]
    feature = dataset.features["label"]
    if isinstance(feature, datasets.ClassLabel):
        return [feature.int2str(label) for label in labels]
    width = len(str(max(labels, default=0)))
    return [f"{label:0{width}d}" for label in labels]


def _as_uint8_video(video, index):
    """The numpy formatter widens uint8 to int64; narrow it back, refusing anything that is not 8-bit RGB."""
    is_8bit = np.issubdtype(video.dtype, np.integer) and video.size and 0 <= video.min() and video.max() <= 255
    if video.ndim != 4 or video.shape[-1] != 3 or not is_8bit:
        raise ValueError(
            f"example {index}: expected 'video' as (T, H, W, 3) integers in 0..255, got shape {video.shape} "
            f"dtype {video.dtype}"
        )
    return video.astype(np.uint8)


def _encode_h264(video, path, fps, crf):
    """Encode (T, H, W, 3) uint8 to the mp4 file `path`."""
    height, width = video.shape[1:3]
    if height % 2 or width % 2:
        raise ValueError(f"H.264 with yuv420p needs even height and width, got {height}x{width}")
    import av

    with av.open(path, mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps, options={"crf": str(crf)})
        stream.height, stream.width = video.shape[1:3]
        stream.pix_fmt = "yuv420p"
        for frame in video:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
