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
template, `*.labels.txt` per class label, and TFRecord shards with masked CRC32Cs.
"""

import json
import struct
import zlib
from pathlib import Path

import numpy as np

FEATURES = "tensorflow_datasets.core.features."
SHAPES, COLOURS = ["cube", "cylinder", "sphere"], ["blue", "brown", "cyan", "gray", "green", "purple", "red", "yellow"]
MATERIALS, SIZES = ["metal", "rubber"], ["small", "large"]

# --- the TFRecord and tf.train.Example wire formats ------------------------------------------------------------------


def masked_crc32c(data: bytes) -> int:
    import google_crc32c

    crc = google_crc32c.value(data)
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


def tfrecord_frame(payload: bytes) -> bytes:
    length = struct.pack("<Q", len(payload))
    return length + struct.pack("<I", masked_crc32c(length)) + payload + struct.pack("<I", masked_crc32c(payload))


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


def _field(number: int, payload: bytes) -> bytes:
    return varints([number << 3 | 2]) + varints([len(payload)]) + payload


def feature_bytes(values) -> bytes:
    return _field(1, b"".join(_field(1, value) for value in values))


def feature_floats(values) -> bytes:
    return _field(2, _field(1, np.asarray(values, "<f4").tobytes()))


def feature_int64s(values) -> bytes:
    return _field(3, _field(1, varints(values)))


def example(features: dict[str, bytes]) -> bytes:
    entries = b"".join(_field(1, _field(1, key.encode()) + _field(2, value)) for key, value in features.items())
    return _field(1, entries)


# --- PNG as libpng writes it by default ------------------------------------------------------------------------------


def png_bytes(array: np.ndarray) -> bytes:
    """`array` (H, W, C) uint8 or uint16 as a PNG: per row the filter (of the five) with the smallest sum of absolute
    signed filtered bytes (libpng's default heuristic), zlib level 6."""
    height, width, channels = array.shape
    bit_depth = 16 if array.dtype == np.uint16 else 8
    raw = np.ascontiguousarray(array.astype(">u2" if bit_depth == 16 else np.uint8)).view(np.uint8)
    raw = raw.reshape(height, -1).astype(np.int16)
    bpp = channels * bit_depth // 8
    up = np.vstack([np.zeros_like(raw[:1]), raw[:-1]])
    left = np.hstack([np.zeros_like(raw[:, :bpp]), raw[:, :-bpp]])
    corner = np.hstack([np.zeros_like(up[:, :bpp]), up[:, :-bpp]])
    estimate = left + up - corner
    to_left, to_up, to_corner = np.abs(estimate - left), np.abs(estimate - up), np.abs(estimate - corner)
    paeth = np.where((to_left <= to_up) & (to_left <= to_corner), left, np.where(to_up <= to_corner, up, corner))
    candidates = np.stack([raw, raw - left, raw - up, raw - (left + up) // 2, raw - paeth]) % 256
    signed = np.where(candidates > 127, 256 - candidates, candidates).sum(axis=2)
    kinds = signed.argmin(axis=0)
    rows = candidates[kinds, np.arange(height)].astype(np.uint8)
    body = np.hstack([kinds.astype(np.uint8)[:, None], rows]).tobytes()

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    colour_type = {1: 0, 3: 2}[channels]
    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(body, 6))
            + chunk(b"IEND", b""))  # fmt: skip


# --- features.json and dataset_info.json as tensorflow-datasets writes them -----------------------------------------


def _tensor(shape, dtype):
    return {"pythonClassName": FEATURES + "tensor_feature.Tensor",
            "tensor": {"shape": {"dimensions": [str(d) for d in shape]}, "dtype": dtype, "encoding": "none"}}


def _image(shape, dtype, kind="image"):
    name = "image_feature.Image" if kind == "image" else "video_feature.Video"
    return {"pythonClassName": FEATURES + name,
            kind: {"shape": {"dimensions": [str(d) for d in shape]}, "dtype": dtype, "encodingFormat": "png"}}


def _sequence(feature, length=-1):
    return {"pythonClassName": FEATURES + "sequence_feature.Sequence",
            "sequence": {"feature": feature, "length": str(length)}}


def _dict(features):
    return {"pythonClassName": FEATURES + "features_dict.FeaturesDict", "featuresDict": {"features": features}}


def _label(num_classes):
    return {"pythonClassName": FEATURES + "class_label_feature.ClassLabel",
            "classLabel": {"numClasses": str(num_classes)}}


def features_json(s: int, h: int, w: int) -> dict:
    """MOVi-A's FeaturesDict (kubric `movi_a.py`)."""
    f32 = "float32"
    bbox = {"pythonClassName": FEATURES + "bounding_boxes.BBoxFeature",
            "boundingBox": {"shape": {"dimensions": ["4"]}, "dtype": f32}}
    instance = {
        "shape_label": _label(3), "size_label": _label(2), "color": _tensor([3], f32), "color_label": _label(8),
        "material_label": _label(2), "mass": _tensor([], f32), "friction": _tensor([], f32),
        "restitution": _tensor([], f32), "positions": _tensor([s, 3], f32), "quaternions": _tensor([s, 4], f32),
        "velocities": _tensor([s, 3], f32), "angular_velocities": _tensor([s, 3], f32),
        "bboxes_3d": _tensor([s, 8, 3], f32), "image_positions": _tensor([s, 2], f32),
        "bboxes": _sequence(bbox), "bbox_frames": _sequence(_tensor([], "int32")), "visibility": _tensor([s], "uint16"),
    }
    collision = {"instances": _tensor([2], "uint16"), "frame": _tensor([], "int32"), "force": _tensor([], f32),
                 "position": _tensor([3], f32), "image_position": _tensor([2], f32),
                 "contact_normal": _tensor([3], f32)}
    return _dict({
        "metadata": _dict({
            "video_name": {"pythonClassName": FEATURES + "text_feature.Text", "text": {}},
            "width": _tensor([], "int32"), "height": _tensor([], "int32"), "num_frames": _tensor([], "int32"),
            "num_instances": _tensor([], "uint16"), "depth_range": _tensor([2], f32),
            "forward_flow_range": _tensor([2], f32), "backward_flow_range": _tensor([2], f32),
        }),
        "instances": _sequence(_dict(instance)),
        "camera": _dict({"focal_length": _tensor([], f32), "sensor_width": _tensor([], f32),
                         "field_of_view": _tensor([], f32), "positions": _tensor([s, 3], f32),
                         "quaternions": _tensor([s, 4], f32)}),
        "events": _dict({"collisions": _sequence(_dict(collision))}),
        "video": _image([s, h, w, 3], "uint8", "video"),
        "segmentations": _sequence(_image([h, w, 1], "uint8"), s),
        "forward_flow": _sequence(_tensor([h, w, 2], "uint16"), s),
        "backward_flow": _sequence(_tensor([h, w, 2], "uint16"), s),
        "depth": _sequence(_image([h, w, 1], "uint16"), s),
        "normal": _image([s, h, w, 3], "uint16", "video"),
        "object_coordinates": _image([s, h, w, 3], "uint16", "video"),
    })  # fmt: skip


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


def serialise(values: dict) -> bytes:
    """A video's values as TFDS serialises MOVi's feature dict (flat "a/b" keys, PNG bytes lists, int64 and float
    lists, the doubly nested `bboxes` / `bbox_frames` as `ragged_flat_values` plus `ragged_row_lengths_0`)."""
    features = {}
    for key in ("video", "segmentations", "depth", "normal", "object_coordinates"):
        features[key] = feature_bytes([png_bytes(frame) for frame in values[key]])
    for key in ("forward_flow", "backward_flow"):
        features[key] = feature_int64s(values[key])
    meta = values["metadata"]
    features["metadata/video_name"] = feature_bytes([meta["video_name"].encode()])
    for key in ("width", "height", "num_frames", "num_instances"):
        features[f"metadata/{key}"] = feature_int64s([meta[key]])
    for key in ("depth_range", "forward_flow_range", "backward_flow_range"):
        features[f"metadata/{key}"] = feature_floats(meta[key])
    for group in ("instances", "camera", "events/collisions"):
        top, *sub = group.split("/")
        items = values[top][sub[0]] if sub else values[top]
        for key, value in items.items():
            name = f"{group}/{key}"
            if key in ("bboxes", "bbox_frames"):
                flat = np.concatenate([np.asarray(v).ravel() for v in value])
                features[f"{name}/ragged_flat_values"] = (feature_floats if key == "bboxes" else feature_int64s)(flat)
                features[f"{name}/ragged_row_lengths_0"] = feature_int64s([len(v) for v in value])
            else:
                value = np.asarray(value)
                pack = feature_floats if np.issubdtype(value.dtype, np.floating) else feature_int64s
                features[name] = pack(value.ravel())
    return example(features)


def write_movi_folder(folder, videos: int = 24, shards: int = 4, frames: int = 24, size: int = 128,
                      split: str = "train", seed: int = 0) -> Path:  # fmt: skip
    """A MOVi-A TFDS folder of `videos` videos of `frames` frames of `size` x `size` in `shards` shards of `split`."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    bounds = np.linspace(0, videos, shards + 1).round().astype(int)
    lengths, total = [], 0
    for shard in range(shards):
        records = [serialise(render_video(rng, index, frames, size, size))
                   for index in range(bounds[shard], bounds[shard + 1])]  # fmt: skip
        path = folder / f"movi_a-{split}.tfrecord-{shard:05d}-of-{shards:05d}"
        path.write_bytes(b"".join(tfrecord_frame(record) for record in records))
        lengths.append(len(records))
        total += path.stat().st_size
    (folder / "features.json").write_text(json.dumps(features_json(frames, size, size), indent=4))
    info = {
        "name": "movi_a", "version": "1.0.0", "configName": f"{size}x{size}", "fileFormat": "tfrecord",
        "moduleName": "movi_a.movi_a", "description": "MOVi-A in its published format (written by bench_tfds.py)",
        "splits": [{"name": split, "numBytes": str(total), "shardLengths": [str(n) for n in lengths],
                    "filepathTemplate": "{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}"}],
    }  # fmt: skip
    (folder / "dataset_info.json").write_text(json.dumps(info, indent=4))
    for feature, names in (("shape_label", SHAPES), ("size_label", SIZES), ("color_label", COLOURS),
                           ("material_label", MATERIALS)):  # fmt: skip
        (folder / f"instances-{feature}.labels.txt").write_text("\n".join(names) + "\n")
    return folder
