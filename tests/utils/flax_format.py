"""Writes files in Flax's msgpack checkpoint format (as `flax.serialization.to_bytes` does), so the converters'
tests run on checkpoints in the official on-disk format without JAX. Written from the format's description:
arrays are msgpack extension 1 records of (shape, dtype name, C-order bytes), NumPy scalars extension 3,
Python complex numbers extension 2 of (real, imag); arrays over `chunk_bytes` are split into chunked maps."""

import msgpack
import numpy as np


def _record(array: np.ndarray) -> bytes:
    return msgpack.packb((array.shape, array.dtype.name, array.tobytes("C")), use_bin_type=True)


def _pack(value):
    if isinstance(value, np.ndarray):
        return msgpack.ExtType(1, _record(value))
    if isinstance(value, np.generic):
        return msgpack.ExtType(3, _record(np.asarray(value)))
    if isinstance(value, complex):
        return msgpack.ExtType(2, msgpack.packb((value.real, value.imag)))
    raise TypeError(f"cannot pack {type(value).__name__}")


def _chunked(tree, chunk_bytes: int):
    if isinstance(tree, dict):
        return {key: _chunked(value, chunk_bytes) for key, value in tree.items()}
    if isinstance(tree, np.ndarray) and tree.nbytes > chunk_bytes:
        size = max(1, chunk_bytes // tree.dtype.itemsize)
        flat = tree.reshape(-1)
        chunks = [flat[i : i + size] for i in range(0, flat.size, size)]
        return {
            "__msgpack_chunked_array__": True,
            "shape": {str(i): n for i, n in enumerate(tree.shape)},
            "chunks": {str(i): chunk for i, chunk in enumerate(chunks)},
        }
    return tree


def flax_bytes(tree: dict, chunk_bytes: int = 2**30) -> bytes:
    return msgpack.packb(_chunked(tree, chunk_bytes), default=_pack, strict_types=True)


def write_flax_checkpoint(tree: dict, path, chunk_bytes: int = 2**30):
    with open(path, "wb") as file:
        file.write(flax_bytes(tree, chunk_bytes))
