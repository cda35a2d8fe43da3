"""Reading Flax msgpack checkpoints without JAX, on files written in the format by tests/utils/flax_format.py."""

import msgpack
import numpy as np
import pytest
from flax_format import flax_bytes, write_flax_checkpoint

from slotssm_hf.conversion.flax_checkpoint import FlaxCheckpointError, find_flax_checkpoint, flatten_tree, read_flax_checkpoint


def test_arrays_scalars_and_nesting_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    tree = {
        "step": np.int64(1200),
        "params": {
            "Dense_0": {"kernel": rng.standard_normal((3, 4)).astype(np.float32), "bias": np.zeros(4, np.float32)},
            "layers": {"0": {"scale": rng.standard_normal(5)}},
            "Lambda": np.array([1 + 2j, 3 - 4j], dtype=np.complex64),
        },
        "lr": 0.25,
        "name": "run",
    }
    write_flax_checkpoint(tree, tmp_path / "checkpoint_1200")
    restored = read_flax_checkpoint(tmp_path / "checkpoint_1200")
    flat, expected = flatten_tree(restored), flatten_tree(tree)
    assert flat.keys() == expected.keys()
    for key, value in expected.items():
        np.testing.assert_array_equal(flat[key], value)
        assert np.asarray(flat[key]).dtype == np.asarray(value).dtype, key


def test_chunked_arrays_are_joined(tmp_path):
    array = np.arange(1000, dtype=np.float32).reshape(10, 100)
    write_flax_checkpoint({"big": array}, tmp_path / "ckpt", chunk_bytes=256)
    assert b"__msgpack_chunked_array__" in (tmp_path / "ckpt").read_bytes()
    np.testing.assert_array_equal(read_flax_checkpoint(tmp_path / "ckpt")["big"], array)


def test_bfloat16_becomes_the_float32_of_the_same_value(tmp_path):
    values = np.array([1.0, -2.5, 3.140625, 0.0], dtype=np.float32)
    high_halves = (values.view(np.uint32) >> 16).astype("<u2")  # exact: these values fit in bfloat16
    record = msgpack.packb(((4,), "bfloat16", high_halves.tobytes()), use_bin_type=True)
    (tmp_path / "ckpt").write_bytes(msgpack.packb({"x": msgpack.ExtType(1, record)}))
    restored = read_flax_checkpoint(tmp_path / "ckpt")["x"]
    assert restored.dtype == np.float32
    np.testing.assert_array_equal(restored, values)


@pytest.mark.parametrize(
    "content, message",
    [
        (b"not msgpack at all \xc1", "is not a Flax msgpack checkpoint"),
        (msgpack.packb([1, 2, 3]), "not the map Flax writes"),
        (msgpack.packb({"x": msgpack.ExtType(7, b"")}), "extension type 7"),
        (msgpack.packb({"x": msgpack.ExtType(1, msgpack.packb(((4,), "float32", b"\0" * 12)))}), "needs 16 bytes"),
    ],
)
def test_corrupt_files_are_refused_by_name(tmp_path, content, message):
    (tmp_path / "ckpt").write_bytes(content)
    with pytest.raises(FlaxCheckpointError, match=message):
        read_flax_checkpoint(tmp_path / "ckpt")


def test_the_newest_checkpoint_of_a_folder_is_found(tmp_path):
    for name in ("checkpoint_5", "checkpoint_40", "checkpoint_100", "notes.txt"):
        (tmp_path / name).write_bytes(flax_bytes({"a": np.zeros(1)}))
    assert find_flax_checkpoint(tmp_path).name == "checkpoint_100"
    clu, empty = tmp_path / "clu", tmp_path / "empty"
    clu.mkdir()
    empty.mkdir()
    for name in ("ckpt-2.flax", "ckpt-11.flax", "ckpt-11.index"):
        (clu / name).write_bytes(b"")
    assert find_flax_checkpoint(clu).name == "ckpt-11.flax"
    with pytest.raises(FileNotFoundError, match="checkpoint_<step>"):
        find_flax_checkpoint(empty)
    with pytest.raises(FileNotFoundError, match="No Flax checkpoint"):
        read_flax_checkpoint(tmp_path / "missing")
