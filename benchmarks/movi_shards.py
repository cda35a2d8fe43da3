"""MOVi-A-format TFDS folders of realistic size and content for `bench_tfds.py`, written fast and without TensorFlow.

Every feature of kubric's `challenges/movi/movi_a.py` at its published size (24 frames of 128 x 128 by default): the
8-bit RGB `video`, 8-bit `segmentations`, 16-bit `depth`, 16-bit RGB `normal` and `object_coordinates` as one PNG
per frame; `forward_flow` / `backward_flow` as uint16 int64 lists; per-instance sequences with ragged `bboxes` /
`bbox_frames`; camera, collision events and metadata. The frames are rendered scenes rather than noise, so the PNGs
compress (and decode) as real ones do: a lit floor in perspective, 3 to 10 objects (spheres, cubes) moving with
constant velocity, per-object depth, normals and object coordinates, the flow of each object's motion, and a little
sensor noise in the RGB frames. PNGs are written as libpng does by default (each row's filter the one of the five
with the smallest sum of absolute signed bytes, zlib level 6), so every filter type occurs.

The folder is what tensorflow-datasets itself writes and reads (`tfds.builder_from_directory`): features.json in the
Feature-proto JSON form (unknown sequence lengths as -1), dataset_info.json with shard lengths and the file name
template, `*.labels.txt` per class label, and TFRecord shards with masked CRC32Cs. The formats are the tests' TFDS
writer's (tests/utils/tfds_writer.py: Example protos, framing, the JSON files, the MOVi record); this module adds the
scenes and the pieces that make writing ~100 MiB fast: CRC32C in C (google_crc32c), varints and PNG filtering in NumPy.
"""

import sys
from pathlib import Path

import numpy as np

# The formats are written by the tests' TFDS writer (independent of slotssm_hf), with this module's fast pieces.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "utils"))
from tfds_writer import (
    MOVI_LABELS,
    movi_features_json,
    movi_record,
    paeth,
    png_file,
    png_raw_rows,
    write_tfds_folder,
)

# --- the fast pieces: CRC32C in C, varints and libpng's filter choice in NumPy --------------------------------------


def crc32c(data: bytes) -> int:
    """CRC32C in C (google_crc32c): tfds_writer's pure-Python one would take minutes over ~100 MiB of shards."""
    import google_crc32c

    return google_crc32c.value(data)


def varints(values) -> bytes:
    """Protobuf varints of int64 `values` (negative ones as ten-byte two's complement), all at once in NumPy."""
    values = np.asarray(values).astype(np.int64).ravel().view(np.uint64)
    sizes = np.ones(len(values), np.int64)
    for k in range(1, 10):
        sizes += values >= np.uint64(1 << (7 * k))
    out = np.empty(int(sizes.sum()), np.uint8)
    starts = np.cumsum(sizes) - sizes
    for k in range(int(sizes.max(initial=0))):
        has = sizes > k
        byte = (values[has] >> np.uint64(7 * k)) & np.uint64(0x7F)
        out[starts[has] + k] = byte.astype(np.uint8) | np.where(sizes[has] > k + 1, 0x80, 0).astype(np.uint8)
    return out.tobytes()


def png_bytes(array: np.ndarray) -> bytes:
    """`array` (H, W, C) uint8 or uint16 as a PNG: per row the filter (of the five) with the smallest sum of absolute
    signed filtered bytes (libpng's default heuristic), zlib level 6."""
    height, width, channels = array.shape
    raw, bit_depth, bpp = png_raw_rows(array)
    up = np.vstack([np.zeros_like(raw[:1]), raw[:-1]])
    left = np.hstack([np.zeros_like(raw[:, :bpp]), raw[:, :-bpp]])
    corner = np.hstack([np.zeros_like(up[:, :bpp]), up[:, :-bpp]])
    candidates = np.stack([raw, raw - left, raw - up, raw - (left + up) // 2, raw - paeth(left, up, corner)]) % 256
    signed = np.where(candidates > 127, 256 - candidates, candidates).sum(axis=2)
    kinds = signed.argmin(axis=0)
    rows = candidates[kinds, np.arange(height)].astype(np.uint8)
    return png_file(np.hstack([kinds.astype(np.uint8)[:, None], rows]).tobytes(), width, height, bit_depth, channels)


# --- the scenes ------------------------------------------------------------------------------------------------------


def render_video(rng: np.random.Generator, index: int, s: int, h: int, w: int) -> dict:
    """One MOVi-A video's stored values (quantised as stored), nested as tfds.as_numpy gives them."""
    f32 = np.float32
    n = int(rng.integers(3, 11))
    rows, cols = np.mgrid[0:h, 0:w].astype(f32)
    rows, cols = rows / h, cols / w
    floor_depth = 6.0 + 20.0 * (1.0 - rows) ** 2  # the floor recedes towards the top of the image
    shading = 0.55 + 0.45 * rows
    floor_colour = np.array([0.55, 0.55, 0.6], f32)
    start, velocity = rng.uniform(0.15, 0.85, (n, 2)).astype(f32), rng.uniform(-0.012, 0.012, (n, 2)).astype(f32)
    radius, distance = rng.uniform(0.05, 0.12, n).astype(f32), rng.uniform(7.0, 20.0, n).astype(f32)
    colour, sphere = rng.uniform(0.1, 0.95, (n, 3)).astype(f32), rng.random(n) < 0.5
    video = np.empty((s, h, w, 3), np.uint8)
    segmentations = np.zeros((s, h, w, 1), np.uint8)
    depth = np.empty((s, h, w, 1), np.uint16)
    normal = np.empty((s, h, w, 3), np.uint16)
    coordinates = np.zeros((s, h, w, 3), np.uint16)
    flows = {name: np.full((s, h, w, 2), 0.0, f32) for name in ("forward_flow", "backward_flow")}
    boxes, box_frames = [[] for _ in range(n)], [[] for _ in range(n)]
    for t in range(s):
        image = floor_colour * shading[..., None] * np.ones((h, w, 3), f32)
        z = floor_depth.copy()
        normals = np.broadcast_to(np.array([0.5, 1.0, 0.5], f32), (h, w, 3)).copy()
        centre = start + velocity * t
        for k in np.argsort(-distance):  # far to near
            dy, dx = (rows - centre[k, 0]) / radius[k], (cols - centre[k, 1]) / radius[k]
            inside = dy**2 + dx**2 < 1 if sphere[k] else (np.abs(dy) < 0.8) & (np.abs(dx) < 0.8)
            if not inside.any():
                continue
            bulge = np.sqrt(np.clip(1 - dy**2 - dx**2, 0, 1)) if sphere[k] else np.full_like(dy, 0.8)
            light = 0.35 + 0.65 * np.clip(0.6 * bulge - 0.4 * dy + 0.2 * dx, 0, 1)
            image[inside] = (colour[k] * light[..., None])[inside]
            z[inside] = (distance[k] - radius[k] * bulge)[inside]
            normals[inside] = np.stack([0.5 + 0.5 * dx, 0.5 + 0.5 * bulge, 0.5 - 0.5 * dy], -1)[inside]
            coordinates[t][inside] = (np.stack([dx, dy, bulge], -1)[inside] * 0.5 + 0.5).clip(0, 1) * 65535
            segmentations[t, inside, 0] = k + 1
            flows["forward_flow"][t][inside] = velocity[k] * (h, w)
            flows["backward_flow"][t][inside] = -velocity[k] * (h, w)
            found = np.nonzero(inside)
            top, left, bottom, right = found[0].min(), found[1].min(), found[0].max() + 1, found[1].max() + 1
            boxes[k].append([top / h, left / w, bottom / h, right / w])
            box_frames[k].append(t)
        noisy = image * 255 + rng.normal(0, 1.5, image.shape)
        video[t] = noisy.clip(0, 255).round().astype(np.uint8)
        depth[t, ..., 0] = ((z - 2.5) / 27.5 * 65535).clip(0, 65535).astype(np.uint16)
        normal[t] = (normals.clip(0, 1) * 65535).astype(np.uint16)
    ranges, quantised = {}, {}
    for name, flow in flows.items():
        low, high = float(flow.min()) - 0.5, float(flow.max()) + 0.5
        ranges[name] = np.array([low, high], f32)
        quantised[name] = ((flow - low) / (high - low) * 65535).round().astype(np.uint16)
    collisions = int(rng.integers(0, 6))
    return {
        "metadata": {"video_name": f"movi_a-{index:05d}", "width": w, "height": h, "num_frames": s,
                     "num_instances": n, "depth_range": np.array([2.5, 30.0], f32),
                     "forward_flow_range": ranges["forward_flow"], "backward_flow_range": ranges["backward_flow"]},
        "instances": {
            "shape_label": np.where(sphere, 2, 0), "size_label": (radius > 0.085).astype(np.int64),
            "color": colour, "color_label": rng.integers(0, 8, n), "material_label": rng.integers(0, 2, n),
            "mass": rng.uniform(0.5, 5, n).astype(f32), "friction": rng.uniform(0, 1, n).astype(f32),
            "restitution": rng.uniform(0, 1, n).astype(f32), "positions": rng.normal(size=(n, s, 3)).astype(f32),
            "quaternions": rng.normal(size=(n, s, 4)).astype(f32), "velocities": rng.normal(size=(n, s, 3)).astype(f32),
            "angular_velocities": rng.normal(size=(n, s, 3)).astype(f32),
            "bboxes_3d": rng.normal(size=(n, s, 8, 3)).astype(f32), "image_positions": rng.random((n, s, 2), f32),
            "bboxes": [np.array(b, f32).reshape(-1, 4) for b in boxes],
            "bbox_frames": [np.array(f, np.int32) for f in box_frames],
            "visibility": rng.integers(0, 2000, (n, s)).astype(np.uint16),
        },
        "camera": {"focal_length": f32(35.0), "sensor_width": f32(32.0), "field_of_view": f32(0.857),
                   "positions": rng.normal(size=(s, 3)).astype(f32),
                   "quaternions": rng.normal(size=(s, 4)).astype(f32)},
        "events": {"collisions": {
            "instances": rng.integers(0, n, (collisions, 2)).astype(np.uint16),
            "frame": rng.integers(0, s, collisions).astype(np.int32), "force": rng.random(collisions, f32),
            "position": rng.random((collisions, 3), f32), "image_position": rng.random((collisions, 2), f32),
            "contact_normal": rng.random((collisions, 3), f32)}},
        "video": video, "segmentations": segmentations, "depth": depth, "normal": normal,
        "object_coordinates": coordinates, **quantised,
    }  # fmt: skip


def write_movi_folder(folder, videos: int = 24, shards: int = 4, frames: int = 24, size: int = 128,
                      split: str = "train", seed: int = 0) -> Path:  # fmt: skip
    """A MOVi-A TFDS folder of `videos` videos of `frames` frames of `size` x `size` in `shards` shards of `split`."""
    rng = np.random.default_rng(seed)
    bounds = np.linspace(0, videos, shards + 1).round().astype(int)
    records = [(movi_record(render_video(rng, index, frames, size, size), png_bytes, varints)
                for index in range(bounds[shard], bounds[shard + 1])) for shard in range(shards)]  # fmt: skip
    return write_tfds_folder(folder, "movi_a", movi_features_json(frames, size, size), {split: records}, MOVI_LABELS,
                             config_name=f"{size}x{size}", crc=crc32c)  # fmt: skip
