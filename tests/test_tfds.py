"""The TensorFlow-free TFDS reader (`slotssm_hf.data.tfds`, `tfrecord`, `images`) against folders written by
`tests/utils/tfds_writer.py`: TFRecord framing and CRCs, `tf.train.Example` protos encoded byte by byte, PNGs with
every row filter, features.json in each form TFDS has written, and the bad inputs a download can hold."""

import json
import zlib

import numpy as np
import pytest
from tfds_writer import (
    FEATURES,
    bbox_json,
    class_label_json,
    crc32c,
    dict_json,
    example,
    feature_bytes,
    feature_floats,
    feature_int64s,
    image_json,
    masked_crc32c,
    movi_features_json,
    png_bytes,
    sequence_json,
    tensor_json,
    text_json,
    tfrecord_frame,
    write_movi,
    write_tfds_folder,
)

from slotssm_hf.data import tfrecord
from slotssm_hf.data.images import decode_images, unfilter
from slotssm_hf.data.tfds import TFDSFolder, TFDSFormatError, flatten, parse_feature, read_tfds
from slotssm_hf.data.tfrecord import TFRecordError, parse_example, read_records


@pytest.fixture(scope="module")
def movi(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tfds") / "movi_a" / "16x16" / "1.0.0"
    return folder, write_movi(folder)


# --- TFRecord framing ------------------------------------------------------------------------------------------------


def test_the_helper_crc32c_gives_the_standard_check_value():
    assert crc32c(b"123456789") == 0xE3069283


def test_the_masked_crc_matches_an_independent_bitwise_crc32c():
    for data in (b"", b"123456789", bytes(range(256)) * 3):
        assert tfrecord.masked_crc32c(data) == masked_crc32c(data)


def test_records_come_back_with_their_byte_offsets(tmp_path):
    payloads = [b"first", b"", b"x" * 1000]
    (tmp_path / "f.tfrecord").write_bytes(b"".join(tfrecord_frame(p) for p in payloads))
    assert list(read_records(tmp_path / "f.tfrecord")) == [(0, b"first"), (21, b""), (37, b"x" * 1000)]


@pytest.mark.parametrize("position, part", [(30, "its 1000 bytes fail their CRC32C"), (3, "length field fails")])
def test_a_flipped_byte_is_a_crc_error_naming_the_file_and_the_record_offset(tmp_path, position, part):
    data = bytearray(tfrecord_frame(b"ok") + tfrecord_frame(b"y" * 1000))
    data[18 + position] ^= 0x01  # inside the second record (the first takes 18 bytes)
    (tmp_path / "f.tfrecord").write_bytes(bytes(data))
    with pytest.raises(TFRecordError, match=rf"f\.tfrecord: corrupt record at byte 18: .*{part}"):
        list(read_records(tmp_path / "f.tfrecord"))


@pytest.mark.parametrize("cut", [5, 40])
def test_a_truncated_record_is_an_error_naming_the_file_and_the_offset(tmp_path, cut):
    data = tfrecord_frame(b"ok") + tfrecord_frame(b"y" * 1000)
    (tmp_path / "f.tfrecord").write_bytes(data[: 18 + cut])
    with pytest.raises(TFRecordError, match=r"f\.tfrecord: truncated record at byte 18"):
        list(read_records(tmp_path / "f.tfrecord"))


# --- tf.train.Example ------------------------------------------------------------------------------------------------


def test_examples_encoded_from_the_wire_format_parse_to_their_values():
    ints = np.array([0, 1, -1, 2**40, -(2**63), 2**63 - 1, 65535])
    floats = np.array([0.5, -1.25, 3e38], np.float32)
    parsed = parse_example(example({"i": feature_int64s(ints), "f": feature_floats(floats),
                                    "b": feature_bytes([b"", b"\x00\xff", "é".encode()])}))  # fmt: skip
    assert parsed["i"].dtype == np.int64 and parsed["i"].tolist() == ints.tolist()
    assert parsed["f"].dtype == np.float32 and parsed["f"].tolist() == floats.tolist()
    assert parsed["b"] == [b"", b"\x00\xff", "é".encode()]


def test_a_record_that_is_not_an_example_is_refused():
    with pytest.raises(TFRecordError, match="not a tf.train.Example"):
        parse_example(b"\xff\xff\xff")


# --- PNG -------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
@pytest.mark.parametrize("channels", [1, 2, 3, 4])
def test_pngs_with_all_five_row_filters_decode_to_the_array_written(dtype, channels):
    rng = np.random.default_rng(channels)
    frames = rng.integers(0, np.iinfo(dtype).max + 1, (3, 11, 7, channels)).astype(dtype)
    decoded = decode_images([png_bytes(frame) for frame in frames])  # rows filtered 0, 1, 2, 3, 4, 0, ...
    assert decoded.dtype == dtype and np.array_equal(decoded, frames)


def test_16_bit_rgb_keeps_its_low_bytes_which_pillow_drops():
    from io import BytesIO

    from PIL import Image

    frame = (np.arange(8 * 8 * 3).reshape(8, 8, 3) * 997 % 65536).astype(np.uint16)
    assert (frame & 0xFF).any()
    data = png_bytes(frame)
    assert np.array_equal(np.asarray(Image.open(BytesIO(data))), (frame >> 8).astype(np.uint8))  # Pillow: high bytes
    assert np.array_equal(decode_images([data])[0], frame)


@pytest.mark.parametrize("kind", [0, 1, 2, 3, 4])
def test_unfilter_inverts_each_filter_type_alone(kind):
    frame = np.random.default_rng(kind).integers(0, 65536, (9, 5, 3)).astype(np.uint16)
    data = png_bytes(frame, filters=(kind,))
    stream = zlib.decompress(data[8 + 25 + 8 : -12 - 4])  # the single IDAT chunk's body
    filtered = np.frombuffer(stream, np.uint8).reshape(1, 9, -1)
    assert (filtered[0, :, 0] == kind).all()
    assert np.array_equal(unfilter(filtered, 6)[0], frame.astype(">u2").view(np.uint8).reshape(9, -1))


def test_frames_of_different_sizes_come_back_as_a_list():
    small, large = np.zeros((2, 3, 1), np.uint8), np.ones((4, 5, 1), np.uint8)
    decoded = decode_images([png_bytes(small), png_bytes(large)])
    assert isinstance(decoded, list) and np.array_equal(decoded[0], small) and np.array_equal(decoded[1], large)


# --- features.json ---------------------------------------------------------------------------------------------------


def test_the_movi_feature_dict_flattens_to_the_example_keys_tfds_writes(movi):
    folder, _ = movi
    columns = {column.key: column for column in TFDSFolder(folder).columns}
    assert columns["video"].shape == (3, 16, 16, 3) and columns["video"].leaf.kind == "image"
    assert columns["depth"].shape == (3, 16, 16, 1) and columns["depth"].leaf.dtype == "uint16"
    assert columns["forward_flow"].shape == (3, 16, 16, 2) and columns["forward_flow"].leaf.kind == "tensor"
    assert columns["instances/positions"].shape == (None, 3, 3)
    assert columns["instances/bboxes"].sequences == (None, None) and columns["instances/bboxes"].leaf.shape == (4,)
    assert columns["instances/shape_label"].leaf.names == ("cube", "cylinder", "sphere")
    assert columns["metadata/video_name"].leaf.kind == "text"
    assert columns["events/collisions/instances"].shape == (None, 2)


def _legacy(feature: dict) -> dict:
    """A proto-form feature in the older {"type", "content"} form (Sequence content as the legacy JSON dict)."""
    class_name = feature["pythonClassName"]
    (kind,) = [key for key in feature if key != "pythonClassName"]
    content = feature[kind]
    if kind == "featuresDict":
        return {"type": class_name, "content": {k: _legacy(v) for k, v in content["features"].items()}}
    if kind == "sequence":
        return {"type": class_name, "content": {"feature": _legacy(content["feature"]),
                                                "length": int(content["length"]) if "length" in content else None}}
    shape = [None if int(d) < 0 else int(d) for d in content.get("shape", {}).get("dimensions", [])]
    legacy = {"tensor": {"shape": shape, "dtype": content.get("dtype"), "encoding": content.get("encoding")},
              "image": {"shape": shape, "dtype": content.get("dtype"), "encoding_format": "png"},
              "video": {"shape": shape, "dtype": content.get("dtype"), "encoding_format": "png",
                        "ffmpeg_extra_args": []},
              "classLabel": {"num_classes": int(content.get("numClasses", 0))}, "text": {}, "boundingBox": {}}
    return {"type": class_name, "content": legacy[kind]}  # fmt: skip


def _json_sequences(feature: dict) -> dict:
    """Sequences as `jsonFeature`s, as TFDS wrote them before the Sequence proto existed."""
    if "sequence" in feature:
        inner = _legacy(feature["sequence"]["feature"])
        length = feature["sequence"].get("length")
        return {"pythonClassName": feature["pythonClassName"],
                "jsonFeature": {"json": json.dumps({"feature": inner, "length": int(length) if length else None})}}
    if "featuresDict" in feature:
        children = {k: _json_sequences(v) for k, v in feature["featuresDict"]["features"].items()}
        return {**feature, "featuresDict": {"features": children}}
    return feature  # fmt: skip


@pytest.mark.parametrize("form", ["legacy", "proto_cls string", "jsonFeature sequences"])
def test_older_features_json_forms_give_the_same_columns(tmp_path, form):
    proto = movi_features_json(2, 4, 4)
    other = {
        "legacy": lambda: _legacy(proto),
        "proto_cls string": lambda: {"type": proto["pythonClassName"], "proto_cls": "tensorflow_datasets.FeaturesDict",
                                     "content": json.dumps(proto["featuresDict"])},
        "jsonFeature sequences": lambda: _json_sequences(proto),
    }[form]()  # fmt: skip
    assert _columns(other, tmp_path) == _columns(proto, tmp_path)


def _columns(features: dict, source) -> list:
    return sorted((c.key, c.shape, c.leaf.kind, c.leaf.dtype) for c in flatten(parse_feature(features, "", source)))


def test_an_unknown_feature_kind_is_an_error_naming_the_feature_and_the_file(tmp_path):
    features = dict_json({"clip": {"pythonClassName": FEATURES + "audio_feature.Audio",
                                   "audio": {"shape": {"dimensions": ["-1"]}, "dtype": "int64"}}})  # fmt: skip
    write_tfds_folder(tmp_path, "sounds", features, {"train": [[]]})
    with pytest.raises(TFDSFormatError, match=r"features\.json: feature 'clip' is a .*Audio \(audio\)"):
        TFDSFolder(tmp_path)


def test_an_unknown_legacy_feature_class_is_named_too(tmp_path):
    write_tfds_folder(tmp_path, "x", {"type": FEATURES + "features_dict.FeaturesDict",
                                      "content": {"t": {"type": "my_project.Feature", "content": {}}}}, {})  # fmt: skip
    with pytest.raises(TFDSFormatError, match=r"features\.json: feature 't' is a my_project\.Feature"):
        TFDSFolder(tmp_path)


# --- folders, splits, shards -----------------------------------------------------------------------------------------


def test_a_missing_split_is_an_error_listing_the_splits(movi):
    folder, _ = movi
    with pytest.raises(TFDSFormatError, match=r"dataset_info\.json has no split 'test'; its splits: train, validation"):
        read_tfds(folder, "test")


def test_a_missing_shard_is_named_before_anything_is_read(movi, tmp_path):
    import shutil

    shutil.copytree(movi[0], tmp_path / "copy")
    (tmp_path / "copy" / "movi_a-train.tfrecord-00001-of-00002").unlink()
    with pytest.raises(TFDSFormatError, match=r"movi_a-train\.tfrecord-00001-of-00002 is missing: split 'train' has 2"):
        TFDSFolder(tmp_path / "copy").shards("train")


def test_a_shard_truncated_at_a_record_boundary_disagrees_with_its_declared_length(movi, tmp_path):
    import shutil

    shutil.copytree(movi[0], tmp_path / "copy")
    shard = tmp_path / "copy" / "movi_a-train.tfrecord-00000-of-00002"
    (first,) = [offset for offset, _ in list(read_records(shard))[1:]]
    shard.write_bytes(shard.read_bytes()[:first])
    with pytest.raises(TFDSFormatError, match=r"00000-of-00002 holds 1 records; dataset_info\.json says 2"):
        list(TFDSFolder(tmp_path / "copy").examples("train", ["metadata"]))


def test_a_truncated_shard_fails_with_the_file_and_offset_when_read(movi, tmp_path):
    import shutil

    shutil.copytree(movi[0], tmp_path / "copy")
    shard = tmp_path / "copy" / "movi_a-train.tfrecord-00000-of-00002"
    shard.write_bytes(shard.read_bytes()[:-100])
    with pytest.raises(TFRecordError, match=r"00000-of-00002: truncated record at byte \d+"):
        list(read_tfds(tmp_path / "copy", "train"))


def test_a_folder_above_a_single_version_folder_is_followed(movi):
    folder, _ = movi
    assert TFDSFolder(folder.parent.parent).folder == folder


def test_a_folder_without_dataset_info_is_refused(tmp_path):
    with pytest.raises(TFDSFormatError, match="not a TFDS-prepared folder: it has no dataset_info.json"):
        TFDSFolder(tmp_path)


def test_unknown_columns_are_refused_with_the_available_ones(movi):
    with pytest.raises(TFDSFormatError, match="has no feature 'videos'; it has: .*video"):
        read_tfds(movi[0], "train", columns=["videos"])


def test_selected_columns_are_the_only_ones_decoded(movi):
    folder, written = movi
    (first, *_) = TFDSFolder(folder).examples("validation", ["video", "metadata/video_name"])
    assert set(first) == {"video", "metadata"} and set(first["metadata"]) == {"video_name"}
    assert first["metadata"]["video_name"] == written["validation"][0]["metadata"]["video_name"]


# --- other feature kinds ---------------------------------------------------------------------------------------------


def test_every_feature_kind_round_trips(tmp_path):
    """Tensors stored raw, zlib-compressed and with a dynamic shape, bool / uint64 / string tensors, Text, a top-level
    ClassLabel with its labels file, JPEG and 8-bit RGB images, and sequences nested two and three deep."""
    from io import BytesIO

    from PIL import Image

    rng = np.random.default_rng(0)
    raw = rng.random((2, 3)).astype(np.float64)
    packed = rng.integers(-5, 5, (4, 2)).astype(np.int16)
    dynamic = rng.random((3, 5)).astype(np.float32)
    picture = rng.integers(0, 256, (6, 5, 3)).astype(np.uint8)
    jpeg = BytesIO()
    Image.fromarray(picture).save(jpeg, format="JPEG")
    nested3 = [[[1, 2], []], [], [[3]]]
    features = dict_json({
        "raw": tensor_json([2, 3], "float64", "bytes"), "packed": tensor_json([4, 2], "int16", "zlib"),
        "dynamic": tensor_json([-1, -1], "float32", "zlib"), "flag": tensor_json([3], "bool"),
        "big": tensor_json([], "uint64"), "blob": tensor_json([], "string"), "caption": text_json(),
        "label": class_label_json(3), "photo": image_json([6, 5, 3], "uint8"), "png": image_json([-1, -1, 3], "uint8"),
        "box": bbox_json(), "nested2": sequence_json(sequence_json(tensor_json([], "int32"))),
        "nested3": sequence_json(sequence_json(sequence_json(tensor_json([], "int64")))),
    })  # fmt: skip
    record = example({
        "raw": feature_bytes([raw.tobytes()]), "packed": feature_bytes([zlib.compress(packed.tobytes())]),
        "dynamic/value": feature_bytes([zlib.compress(dynamic.tobytes())]), "dynamic/shape": feature_int64s([3, 5]),
        "flag": feature_int64s([1, 0, 1]), "big": feature_int64s([-1]), "blob": feature_bytes([b"\x00\x01"]),
        "caption": feature_bytes(["a café".encode()]), "label": feature_int64s([2]),
        "photo": feature_bytes([jpeg.getvalue()]), "png": feature_bytes([png_bytes(picture)]),
        "box": feature_floats([0.1, 0.2, 0.3, 0.4]),
        "nested2/ragged_flat_values": feature_int64s([7, 8, 9]),
        "nested2/ragged_row_lengths_0": feature_int64s([2, 0, 1]),
        "nested3/ragged_flat_values": feature_int64s([1, 2, 3]),
        "nested3/ragged_row_lengths_0": feature_int64s([2, 0, 1]),
        "nested3/ragged_row_lengths_1": feature_int64s([2, 0, 1]),
    })  # fmt: skip
    write_tfds_folder(tmp_path, "kinds", features, {"train": [[record]]}, labels={"label": ["a", "b", "c"]})
    (value,) = TFDSFolder(tmp_path).examples("train")
    assert value["raw"].dtype == np.float64 and np.array_equal(value["raw"], raw)
    assert value["packed"].dtype == np.int16 and np.array_equal(value["packed"], packed)
    assert np.array_equal(value["dynamic"], dynamic)
    assert value["flag"].tolist() == [True, False, True] and value["big"] == np.uint64(2**64 - 1)
    assert value["blob"] == b"\x00\x01" and value["caption"] == "a café" and value["label"] == 2
    assert np.array_equal(value["photo"], np.asarray(Image.open(BytesIO(jpeg.getvalue()))))  # JPEG: lossy
    assert np.array_equal(value["png"], picture)
    assert value["box"].tolist() == np.float32([0.1, 0.2, 0.3, 0.4]).tolist()
    assert [v.tolist() for v in value["nested2"]] == [[7, 8], [], [9]]
    assert [[v.tolist() for v in row] for row in value["nested3"]] == nested3
    features = TFDSFolder(tmp_path).hf_features()
    assert features["label"].names == ["a", "b", "c"]
    (row,) = read_tfds(tmp_path, "train").with_format("arrow")  # every value converts to its declared Arrow type
    assert row.column("caption").to_pylist() == ["a café"]


def test_values_that_do_not_fit_their_dtype_are_an_error_naming_the_feature(tmp_path):
    record = example({"pixel": feature_int64s([300])})
    write_tfds_folder(tmp_path, "x", dict_json({"pixel": tensor_json([], "uint8")}), {"train": [[record]]})
    with pytest.raises(TFDSFormatError, match=r"record at byte 0, feature 'pixel' \(Tensor\): values from 300"):
        list(read_tfds(tmp_path, "train"))


def test_a_png_of_another_dtype_than_declared_is_an_error_naming_the_feature(tmp_path):
    record = example({"depth": feature_bytes([png_bytes(np.zeros((2, 2, 1), np.uint8))])})
    write_tfds_folder(tmp_path, "x", dict_json({"depth": image_json([2, 2, 1], "uint16")}), {"train": [[record]]})
    with pytest.raises(TFDSFormatError, match=r"feature 'depth' \(Image\): its images are uint8, features.json says"):
        list(TFDSFolder(tmp_path).examples("train"))


@pytest.mark.parametrize("dtype, channels", [(np.uint8, 3), (np.uint16, 3)])
def test_a_corrupt_image_is_an_error_naming_the_feature(tmp_path, dtype, channels):
    data = bytearray(png_bytes(np.zeros((4, 4, channels), dtype)))
    data[45] ^= 0xFF  # inside the IDAT chunk
    record = example({"frame": feature_bytes([bytes(data)])})
    write_tfds_folder(tmp_path, "x", dict_json({"frame": image_json([4, 4, channels], np.dtype(dtype).name)}),
                      {"train": [[record]]})  # fmt: skip
    with pytest.raises(TFDSFormatError, match=r"record at byte 0, feature 'frame' \(Image\): "):
        list(TFDSFolder(tmp_path).examples("train"))


def test_a_missing_key_is_an_error_naming_it(tmp_path):
    write_tfds_folder(tmp_path, "x", dict_json({"a": tensor_json([], "int64")}), {"train": [[example({})]]})
    with pytest.raises(TFDSFormatError, match="feature 'a' .*the record has no 'a'"):
        list(TFDSFolder(tmp_path).examples("train"))


# --- as a datasets.IterableDataset -----------------------------------------------------------------------------------


def test_the_dataset_has_one_shard_per_file_and_typed_features(movi):
    import datasets

    dataset = read_tfds(movi[0], "train")
    assert isinstance(dataset, datasets.IterableDataset) and dataset.num_shards == 2
    assert dataset.features["video"] == datasets.Array4D(shape=(3, 16, 16, 3), dtype="uint8")
    assert dataset.features["instances"]["color_label"].feature.names[0] == "blue"


def test_dataloader_workers_each_read_their_own_shards(movi):
    import torch

    folder, written = movi
    loader = torch.utils.data.DataLoader(read_tfds(folder, "train", ["metadata/video_name"]), num_workers=2,
                                         batch_size=None)  # fmt: skip
    names = sorted(example["metadata"]["video_name"] for example in loader)
    assert names == sorted(values["metadata"]["video_name"] for values in written["train"])


def test_processes_each_read_their_own_shards(movi):
    from datasets.distributed import split_dataset_by_node

    folder, written = movi
    dataset = read_tfds(folder, "train", ["metadata/video_name"])
    ranks = [[e["metadata"]["video_name"] for e in split_dataset_by_node(dataset, rank, 2)] for rank in (0, 1)]
    assert not set(ranks[0]) & set(ranks[1])
    assert sorted(ranks[0] + ranks[1]) == sorted(values["metadata"]["video_name"] for values in written["train"])



def test_the_data_modules_import_nothing_heavy_at_load():
    """datasets, Pillow and protobuf wait for the functions that use them: NumPy and the standard library only."""
    import ast
    import sys
    from pathlib import Path

    import slotssm_hf.data

    for path in Path(slotssm_hf.data.__file__).parent.glob("*.py"):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, (ast.Import, ast.ImportFrom)) and not getattr(node, "level", 0):
                names = [node.module] if isinstance(node, ast.ImportFrom) else [alias.name for alias in node.names]
                allowed = sys.stdlib_module_names | {"numpy"}
                assert all(name.split(".")[0] in allowed for name in names), (path.name, names)
