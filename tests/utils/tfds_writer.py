"""TFDS-prepared folders written the way tensorflow-datasets writes them, without TensorFlow, as independent oracles for
`slotssm_hf.data`: PNG files assembled from raw chunks with chosen row filters, `tf.train.Example` protos encoded
byte by byte from the protobuf wire format, TFRecord framing with a pure-Python masked CRC32C, and `features.json` /
`dataset_info.json` in TFDS's own JSON forms. Nothing here imports the code under test.

`write_movi` writes a miniature MOVi folder (the feature dict of kubric's `challenges/movi/movi_a.py`) and returns
the examples it wrote, so a test compares what the reader decodes with what went in.

The benchmark's MOVi writer (benchmarks/movi_shards.py) is built on this one: it passes its own fast CRC32C, varints
and PNG encoder (`crc`, `varints`, `encode_png`) where these slow, obviously right ones would take minutes.
"""

import json
import struct
import zlib
from collections.abc import Iterable
from functools import partial
from pathlib import Path

import numpy as np

# --- CRC32C (Castagnoli), bit by bit: slow and obviously right -------------------------------------------------------


def _crc32c_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def masked_crc32c(data: bytes, crc=crc32c) -> int:
    """TFRecord's masked CRC (of `crc`, a CRC32C function): rotate right by 15 bits and add a constant."""
    crc = crc(data)
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


def tfrecord_frame(payload: bytes, crc=crc32c) -> bytes:
    """One TFRecord: uint64 length, masked CRC32C of the length, payload, masked CRC32C of the payload."""
    length = struct.pack("<Q", len(payload))
    return (length + struct.pack("<I", masked_crc32c(length, crc)) + payload
            + struct.pack("<I", masked_crc32c(payload, crc)))  # fmt: skip


# --- tf.train.Example in the protobuf wire format ---------------------------------------------------------------------
# tensorflow/core/example/feature.proto: Features{map<string, Feature> feature = 1}; Feature{oneof kind {BytesList
# bytes_list = 1; FloatList float_list = 2; Int64List int64_list = 3}}; each list: repeated value = 1 (packed for
# floats and int64s); example.proto: Example{Features features = 1}.


def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1  # negative int64s are ten-byte two's complement varints
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def varints(values) -> bytes:
    """The varints of int64 `values`, one after the other."""
    return b"".join(_varint(int(value)) for value in np.asarray(values).ravel())


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited field (wire type 2)."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def feature_bytes(values) -> bytes:
    return _field(1, b"".join(_field(1, value) for value in values))


def feature_floats(values) -> bytes:
    return _field(2, _field(1, np.asarray(values, "<f4").tobytes()))


def feature_int64s(values, varints=varints) -> bytes:
    return _field(3, _field(1, varints(values)))


def example(features: dict[str, bytes]) -> bytes:
    """An Example of `{key: feature_bytes(...) | feature_floats(...) | feature_int64s(...)}`."""
    entries = b"".join(_field(1, _field(1, key.encode()) + _field(2, value)) for key, value in features.items())
    return _field(1, entries)


# --- PNG from raw chunks, with chosen row filters --------------------------------------------------------------------


def paeth(left, up, corner):
    """PNG's Paeth predictor, element-wise: whichever of left, up and corner is nearest left + up - corner."""
    estimate = left + up - corner
    to_left, to_up, to_corner = np.abs(estimate - left), np.abs(estimate - up), np.abs(estimate - corner)
    return np.where((to_left <= to_up) & (to_left <= to_corner), left, np.where(to_up <= to_corner, up, corner))


def png_bytes(array: np.ndarray, filters=(0, 1, 2, 3, 4)) -> bytes:
    """`array` (H, W, C), uint8 or uint16 (big-endian on disk), C = 1, 2, 3 or 4, as a PNG whose row r is filtered
    with `filters[r % len(filters)]`. Filters are applied forwards from the raw bytes: the decoder must invert them."""
    raw, bit_depth, bpp = png_raw_rows(array)
    height, width, channels = array.shape
    rows = []
    for index in range(height):
        row = raw[index]
        up = raw[index - 1] if index else np.zeros_like(row)
        left = np.concatenate([np.zeros(bpp, np.int32), row[:-bpp]])
        corner = np.concatenate([np.zeros(bpp, np.int32), up[:-bpp]])
        kind = filters[index % len(filters)]
        predicted = [0, left, up, (left + up) // 2, paeth(left, up, corner)][kind]
        rows.append(bytes([kind]) + ((row - predicted) % 256).astype(np.uint8).tobytes())
    return png_file(b"".join(rows), width, height, bit_depth, channels)


def png_raw_rows(array: np.ndarray) -> tuple[np.ndarray, int, int]:
    """The rows of bytes PNG filters (16-bit samples big-endian), as an int32 (H, W * bytes per pixel) array, with the
    bit depth and the bytes per pixel."""
    bit_depth = 16 if array.dtype == np.uint16 else 8
    raw = np.ascontiguousarray(array.astype(">u2" if bit_depth == 16 else np.uint8)).view(np.uint8)
    return raw.reshape(len(array), -1).astype(np.int32), bit_depth, array.shape[2] * bit_depth // 8


def png_file(filtered: bytes, width: int, height: int, bit_depth: int, channels: int) -> bytes:
    """A PNG of `filtered` (the rows, each led by its filter type) compressed at zlib's default level (6)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    colour_type = {1: 0, 2: 4, 3: 2, 4: 6}[channels]
    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(filtered))
            + chunk(b"IEND", b""))  # fmt: skip


# --- features.json as TFDS writes it (proto JSON: camelCase keys, int64 numbers as strings) ------------------------
FEATURES = "tensorflow_datasets.core.features."


def tensor_json(shape, dtype, encoding="none"):
    return {"pythonClassName": FEATURES + "tensor_feature.Tensor",
            "tensor": {"shape": {"dimensions": [str(d) for d in shape]}, "dtype": dtype, "encoding": encoding}}


def image_json(shape, dtype):
    return {"pythonClassName": FEATURES + "image_feature.Image",
            "image": {"shape": {"dimensions": [str(d) for d in shape]}, "dtype": dtype, "encodingFormat": "png"}}


def video_json(shape, dtype):
    return {"pythonClassName": FEATURES + "video_feature.Video",
            "video": {"shape": {"dimensions": [str(d) for d in shape]}, "dtype": dtype, "encodingFormat": "png"}}


def sequence_json(feature, length=None):
    # TFDS writes an unknown length as -1 (a missing field reads as the proto default, length 0).
    content = {"feature": feature, "length": str(-1 if length is None else length)}
    return {"pythonClassName": FEATURES + "sequence_feature.Sequence", "sequence": content}


def dict_json(features):
    return {"pythonClassName": FEATURES + "features_dict.FeaturesDict", "featuresDict": {"features": features}}


def class_label_json(num_classes):
    return {"pythonClassName": FEATURES + "class_label_feature.ClassLabel",
            "classLabel": {"numClasses": str(num_classes)}}


def text_json():
    return {"pythonClassName": FEATURES + "text_feature.Text", "text": {}}


def bbox_json():
    return {"pythonClassName": FEATURES + "bounding_boxes.BBoxFeature",
            "boundingBox": {"shape": {"dimensions": ["4"]}, "dtype": "float32"}}


SHAPES, COLOURS = ["cube", "cylinder", "sphere"], ["blue", "brown", "cyan", "gray", "green", "purple", "red", "yellow"]
MOVI_LABELS = {"instances-shape_label": SHAPES, "instances-size_label": ["small", "large"],
               "instances-color_label": COLOURS, "instances-material_label": ["metal", "rubber"]}  # fmt: skip


def movi_features_json(frames: int, height: int, width: int) -> dict:
    """The FeaturesDict of MOVi-A (kubric `movi_a.py`) at a small size, in features.json form."""
    s, h, w = frames, height, width
    f32 = "float32"
    instance = {
        "mass": tensor_json([], f32), "friction": tensor_json([], f32), "restitution": tensor_json([], f32),
        "positions": tensor_json([s, 3], f32), "quaternions": tensor_json([s, 4], f32),
        "velocities": tensor_json([s, 3], f32), "angular_velocities": tensor_json([s, 3], f32),
        "bboxes_3d": tensor_json([s, 8, 3], f32), "image_positions": tensor_json([s, 2], f32),
        "bboxes": sequence_json(bbox_json()), "bbox_frames": sequence_json(tensor_json([], "int32")),
        "visibility": tensor_json([s], "uint16"),
        "shape_label": class_label_json(3), "size_label": class_label_json(2), "color": tensor_json([3], f32),
        "color_label": class_label_json(8), "material_label": class_label_json(2),
    }
    collision = {"instances": tensor_json([2], "uint16"), "frame": tensor_json([], "int32"),
                 "force": tensor_json([], f32), "position": tensor_json([3], f32),
                 "image_position": tensor_json([2], f32), "contact_normal": tensor_json([3], f32)}
    return dict_json({
        "metadata": dict_json({
            "video_name": text_json(), "width": tensor_json([], "int32"), "height": tensor_json([], "int32"),
            "num_frames": tensor_json([], "int32"), "num_instances": tensor_json([], "uint16"),
            "depth_range": tensor_json([2], f32), "forward_flow_range": tensor_json([2], f32),
            "backward_flow_range": tensor_json([2], f32),
        }),
        "instances": sequence_json(dict_json(instance)),
        "camera": dict_json({"focal_length": tensor_json([], f32), "sensor_width": tensor_json([], f32),
                             "field_of_view": tensor_json([], f32), "positions": tensor_json([s, 3], f32),
                             "quaternions": tensor_json([s, 4], f32)}),
        "events": dict_json({"collisions": sequence_json(dict_json(collision))}),
        "video": video_json([s, h, w, 3], "uint8"),
        "segmentations": sequence_json(image_json([h, w, 1], "uint8"), s),
        "forward_flow": sequence_json(tensor_json([h, w, 2], "uint16"), s),
        "backward_flow": sequence_json(tensor_json([h, w, 2], "uint16"), s),
        "depth": sequence_json(image_json([h, w, 1], "uint16"), s),
        "normal": video_json([s, h, w, 3], "uint16"),
        "object_coordinates": video_json([s, h, w, 3], "uint16"),
    })  # fmt: skip


def movi_example(rng: np.random.Generator, index: int, frames: int, height: int, width: int, instances: int) -> dict:
    """One MOVi video's values, nested as tfds.as_numpy returns them (sequences of dicts as dicts of stacked arrays;
    ragged `bboxes` / `bbox_frames` as lists of per-instance arrays)."""
    s, h, w, n = frames, height, width, instances
    f32 = np.float32
    # The first instance is never visible (a zero-length ragged row), the others in 1 to s random frames.
    visible = [np.sort(rng.choice(s, size=rng.integers(1, s + 1) if i else 0, replace=False)) for i in range(n)]
    collisions = int(rng.integers(0, 3))
    return {
        "metadata": {"video_name": f"video-{index}", "width": w, "height": h, "num_frames": s, "num_instances": n,
                     "depth_range": np.array([2.5, 30.0], f32), "forward_flow_range": np.array([-12.0, 9.5], f32),
                     "backward_flow_range": np.array([-8.25, 11.0], f32)},
        "instances": {
            "mass": rng.random(n, f32), "friction": rng.random(n, f32), "restitution": rng.random(n, f32),
            "positions": rng.random((n, s, 3), f32), "quaternions": rng.random((n, s, 4), f32),
            "velocities": rng.random((n, s, 3), f32), "angular_velocities": rng.random((n, s, 3), f32),
            "bboxes_3d": rng.random((n, s, 8, 3), f32), "image_positions": rng.random((n, s, 2), f32),
            # (ymin, xmin, ymax, xmax): sorted (y, x) corner pairs
            "bboxes": [np.sort(rng.random((len(v), 2, 2), f32), axis=1).reshape(-1, 4) for v in visible],
            "bbox_frames": [v.astype(np.int32) for v in visible],
            "visibility": rng.integers(0, 2**16, (n, s)).astype(np.uint16),
            "shape_label": rng.integers(0, 3, n), "size_label": rng.integers(0, 2, n),
            "color": rng.random((n, 3), f32), "color_label": rng.integers(0, 8, n),
            "material_label": rng.integers(0, 2, n),
        },
        "camera": {"focal_length": f32(35.0), "sensor_width": f32(32.0), "field_of_view": f32(0.85),
                   "positions": rng.random((s, 3), f32), "quaternions": rng.random((s, 4), f32)},
        "events": {"collisions": {
            "instances": rng.integers(0, 2**16, (collisions, 2)).astype(np.uint16),
            "frame": rng.integers(0, s, collisions).astype(np.int32), "force": rng.random(collisions, f32),
            "position": rng.random((collisions, 3), f32), "image_position": rng.random((collisions, 2), f32),
            "contact_normal": rng.random((collisions, 3), f32)}},
        "video": rng.integers(0, 256, (s, h, w, 3)).astype(np.uint8),
        "segmentations": rng.integers(0, n + 1, (s, h, w, 1)).astype(np.uint8),
        "forward_flow": rng.integers(0, 2**16, (s, h, w, 2)).astype(np.uint16),
        "backward_flow": rng.integers(0, 2**16, (s, h, w, 2)).astype(np.uint16),
        "depth": rng.integers(0, 2**16, (s, h, w, 1)).astype(np.uint16),
        "normal": rng.integers(0, 2**16, (s, h, w, 3)).astype(np.uint16),
        "object_coordinates": rng.integers(0, 2**16, (s, h, w, 3)).astype(np.uint16),
    }  # fmt: skip


def movi_record(values: dict, encode_png=png_bytes, varints=varints) -> bytes:
    """`values` serialised as TFDS serialises the MOVi feature dict: flat "a/b" keys, images as PNG bytes lists
    (`encode_png` of each (H, W, C) frame), integers as int64 lists (packed by `varints`), floats as float lists, the
    doubly nested `instances/bboxes` and `instances/bbox_frames` as `ragged_flat_values` plus `ragged_row_lengths_0`."""
    int64s = partial(feature_int64s, varints=varints)
    features = {}
    for key in ("video", "segmentations", "depth", "normal", "object_coordinates"):
        features[key] = feature_bytes([encode_png(frame) for frame in values[key]])
    for key in ("forward_flow", "backward_flow"):
        features[key] = int64s(values[key])
    meta = values["metadata"]
    features["metadata/video_name"] = feature_bytes([meta["video_name"].encode()])
    for key in ("width", "height", "num_frames", "num_instances"):
        features[f"metadata/{key}"] = int64s([meta[key]])
    for key in ("depth_range", "forward_flow_range", "backward_flow_range"):
        features[f"metadata/{key}"] = feature_floats(meta[key])
    for group in ("instances", "camera", "events/collisions"):
        top, *sub = group.split("/")
        items = values[top][sub[0]] if sub else values[top]
        for key, value in items.items():
            name = f"{group}/{key}"
            if key in ("bboxes", "bbox_frames"):
                flat = np.concatenate([np.asarray(v).ravel() for v in value] or [np.zeros(0)])
                pack = feature_floats if key == "bboxes" else int64s
                features[f"{name}/ragged_flat_values"] = pack(flat)
                features[f"{name}/ragged_row_lengths_0"] = int64s([len(v) for v in value])
            else:
                value = np.asarray(value)
                pack = feature_floats if np.issubdtype(value.dtype, np.floating) else int64s
                features[name] = pack(value.ravel())
    return example(features)


def write_tfds_folder(folder: Path, name: str, features_json: dict, split_records: dict[str, list[Iterable[bytes]]],
                      labels: dict[str, list[str]] | None = None, config_name: str = "16x16",
                      crc=crc32c) -> Path:  # fmt: skip
    """A TFDS-prepared folder: `split_records` {split: [serialised Examples per shard]} framed into
    `{name}-{split}.tfrecord-{i:05d}-of-{n:05d}` (with `crc`; a shard's Examples may come from a generator, drawn as
    the shard is written), `features.json` (keys sorted), `dataset_info.json` (shard lengths as strings, numBytes the
    sum of the Examples' sizes, both as TFDS writes them) and `<feature>.labels.txt` per ClassLabel in `labels`."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "features.json").write_text(json.dumps(features_json, indent=4, sort_keys=True))
    splits = []
    for split, shards in split_records.items():
        lengths, num_bytes = [], 0
        for index, records in enumerate(shards):
            lengths.append(0)
            with open(folder / f"{name}-{split}.tfrecord-{index:05d}-of-{len(shards):05d}", "wb") as file:
                for record in records:
                    file.write(tfrecord_frame(record, crc))
                    lengths[-1], num_bytes = lengths[-1] + 1, num_bytes + len(record)
        splits.append({
            "name": split, "numBytes": str(num_bytes), "shardLengths": [str(length) for length in lengths],
            "filepathTemplate": "{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}",
        })  # fmt: skip
    info = {"name": name, "version": "1.0.0", "configName": config_name, "fileFormat": "tfrecord",
            "moduleName": f"{name}.{name}", "splits": splits}  # fmt: skip
    (folder / "dataset_info.json").write_text(json.dumps(info, indent=4))
    for feature, names in (labels or {}).items():
        (folder / f"{feature}.labels.txt").write_text("\n".join(names) + "\n")
    return folder


def write_movi(folder: Path, splits=(("train", (2, 1)), ("validation", (1,))), frames=3, height=16, width=16,
               seed=0) -> dict[str, list[dict]]:  # fmt: skip
    """A miniature MOVi-A folder: `splits` is ((split, examples per shard), ...). Returns {split: [values, ...]}
    in file order (each values dict as `movi_example` makes it)."""
    rng = np.random.default_rng(seed)
    written, split_records, index = {}, {}, 0
    for split, shard_sizes in splits:
        written[split], split_records[split] = [], []
        for size in shard_sizes:
            records = []
            for _ in range(size):
                values = movi_example(rng, index, frames, height, width, instances=int(rng.integers(1, 4)))
                written[split].append(values)
                records.append(movi_record(values))
                index += 1
            split_records[split].append(records)
    write_tfds_folder(folder, "movi_a", movi_features_json(frames, height, width), split_records, MOVI_LABELS)
    return written
