"""TFRecord files and `tf.train.Example` protos without TensorFlow.

A TFRecord file is a run of records, each framed as: uint64 payload length (little-endian), masked CRC32C of those 8
bytes, the payload, masked CRC32C of the payload. Both checksums are verified (with `google-crc32c`, whose C
implementation runs at several GB/s; a pure-Python table is ~450x slower), so a corrupt or truncated file is an error
naming the file and the byte offset of the record, never silently wrong data.

The Example messages are declared here as a `FileDescriptorProto` built in Python (no `protoc` step, no generated
file), with the field numbers of tensorflow/core/example/{feature,example}.proto, and parsed by the `protobuf`
package's C (upb) backend. A packed int64 list becomes a NumPy array in one call (`np.array(values, np.int64)`), so
the 786,432 flow values of a 128x128 MOVi video cost about a millisecond.
"""

import struct
from functools import lru_cache
from pathlib import Path

import numpy as np

# TFRecord's masked CRC: the CRC32C rotated right by 15 bits plus this constant.
CRC_MASK_DELTA = 0xA282EAD8


class TFRecordError(ValueError):
    """A TFRecord file that is truncated or fails a checksum; the message names the file and the byte offset."""


def masked_crc32c(data: bytes) -> int:
    import google_crc32c

    crc = google_crc32c.value(data)
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + CRC_MASK_DELTA) & 0xFFFFFFFF


def read_records(path, verify: bool = True):
    """Yield (byte offset, payload) for each record of the TFRecord file at `path`, checking both CRCs when
    `verify`. Raises `TFRecordError` naming the file and offset for a truncated record or a CRC mismatch."""
    path = Path(path)
    with open(path, "rb") as handle:
        offset = 0
        while True:
            header = handle.read(12)
            if not header:
                return
            if len(header) < 12:
                raise TFRecordError(f"{path}: truncated record at byte {offset}: {len(header)} of its 12 header bytes")
            (length,), (length_crc,) = struct.unpack("<Q", header[:8]), struct.unpack("<I", header[8:])
            if verify and masked_crc32c(header[:8]) != length_crc:
                raise TFRecordError(f"{path}: corrupt record at byte {offset}: the length field fails its CRC32C")
            payload = handle.read(length)
            footer = handle.read(4)
            if len(payload) < length or len(footer) < 4:
                raise TFRecordError(
                    f"{path}: truncated record at byte {offset}: it announces {length} bytes, the file ends "
                    f"{len(payload)} bytes into it"
                )
            if verify and masked_crc32c(payload) != struct.unpack("<I", footer)[0]:
                raise TFRecordError(f"{path}: corrupt record at byte {offset}: its {length} bytes fail their CRC32C")
            yield offset, payload
            offset += 16 + length


@lru_cache(maxsize=1)
def example_class():
    """The `tf.train.Example` message class, declared from its field numbers (see the module docstring)."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    field = descriptor_pb2.FieldDescriptorProto
    file = descriptor_pb2.FileDescriptorProto(name="slotssm_hf/example.proto", package="slotssm_hf.tf", syntax="proto3")

    def message(name: str, fields, oneof: str | None = None):
        proto = file.message_type.add(name=name)
        if oneof:
            proto.oneof_decl.add(name=oneof)
        for field_name, number, kind, label, type_name in fields:
            entry = proto.field.add(name=field_name, number=number, type=kind, label=label)
            if type_name:
                entry.type_name = f".slotssm_hf.tf.{type_name}"
            if oneof:
                entry.oneof_index = 0
        return proto

    repeated, optional = field.LABEL_REPEATED, field.LABEL_OPTIONAL
    message("BytesList", [("value", 1, field.TYPE_BYTES, repeated, None)])
    message("FloatList", [("value", 1, field.TYPE_FLOAT, repeated, None)])  # proto3: packed by default
    message("Int64List", [("value", 1, field.TYPE_INT64, repeated, None)])
    message("Feature", [("bytes_list", 1, field.TYPE_MESSAGE, optional, "BytesList"),
                        ("float_list", 2, field.TYPE_MESSAGE, optional, "FloatList"),
                        ("int64_list", 3, field.TYPE_MESSAGE, optional, "Int64List")], oneof="kind")  # fmt: skip
    features = message("Features", [("feature", 1, field.TYPE_MESSAGE, repeated, "Features.FeatureEntry")])
    entry = features.nested_type.add(name="FeatureEntry")
    entry.options.map_entry = True
    entry.field.add(name="key", number=1, type=field.TYPE_STRING, label=optional)
    entry.field.add(name="value", number=2, type=field.TYPE_MESSAGE, label=optional, type_name=".slotssm_hf.tf.Feature")
    message("Example", [("features", 1, field.TYPE_MESSAGE, optional, "Features")])
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("slotssm_hf.tf.Example"))


def parse_example(payload: bytes, keys=None) -> dict[str, np.ndarray | list[bytes]]:
    """The features of a serialised `tf.train.Example`: {key: list of bytes | int64 array | float32 array}, for
    every key, or only those in `keys`. A feature with no kind set (an empty Feature) reads as an empty list."""
    from google.protobuf.message import DecodeError

    try:
        message = example_class().FromString(payload)
    except DecodeError as error:
        raise TFRecordError(f"the record is not a tf.train.Example ({error})") from error
    out = {}
    for key, feature in message.features.feature.items():
        if keys is not None and key not in keys:
            continue
        kind = feature.WhichOneof("kind")
        if kind == "int64_list":
            out[key] = np.array(feature.int64_list.value, np.int64)
        elif kind == "float_list":
            out[key] = np.array(feature.float_list.value, np.float32)
        elif kind == "bytes_list":
            out[key] = list(feature.bytes_list.value)
        else:
            out[key] = []
    return out
