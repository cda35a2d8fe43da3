"""Reading Flax checkpoints without JAX.

Flax's `flax.serialization.to_bytes` / `msgpack_serialize` (which `flax.training.checkpoints` and CLU's
`checkpoint.Checkpoint` use) write one msgpack map: nested string-keyed maps whose leaves are Python scalars or
msgpack extension records. Extension 1 holds an array as a msgpack triple (shape, dtype name, C-order bytes);
extension 2 a Python complex as (real, imag); extension 3 a NumPy scalar, stored like an array of shape ().
Arrays above 2**30 bytes are split into a map `{"__msgpack_chunked_array__": True, "shape": {"0": ...},
"chunks": {"0": flat chunk, ...}}`. Lists and tuples of modules are maps with keys "0", "1", ...
"""

import re
from pathlib import Path

import numpy as np

EXT_NDARRAY, EXT_COMPLEX, EXT_NPSCALAR = 1, 2, 3
CHUNKED_ARRAY_KEY = "__msgpack_chunked_array__"
# File names the official training loops write: flax.training.checkpoints ("checkpoint_<step>") and CLU
# ("ckpt-<n>.flax"); the step is the number in the name.
CHECKPOINT_FILE_PATTERN = re.compile(r"^(?:checkpoint_(\d+)|ckpt-(\d+)\.flax)$")


class FlaxCheckpointError(ValueError):
    """A file that is not a readable Flax msgpack checkpoint; the message names the file and what was wrong."""


def _is_shape(value) -> bool:
    return isinstance(value, (list, tuple)) and all(isinstance(n, int) and n >= 0 for n in value)


def _array_from_record(data: bytes, path: Path) -> np.ndarray:
    import msgpack

    record = msgpack.unpackb(data, raw=True)
    shape, dtype_name, buffer = record if isinstance(record, (list, tuple)) and len(record) == 3 else (None,) * 3
    if not (_is_shape(shape) and isinstance(dtype_name, bytes) and isinstance(buffer, bytes)):
        raise FlaxCheckpointError(f"{path}: an array record must be (shape, dtype name, bytes), got {record!r:.120}")
    dtype_name = dtype_name.decode()
    if dtype_name == "bfloat16":
        # NumPy has no bfloat16: its 16 bits are the high half of the float32 with the same value.
        high = np.frombuffer(buffer, dtype="<u2").astype(np.uint32) << 16
        return high.view(np.float32).reshape(shape)
    try:
        dtype = np.dtype(dtype_name)
    except TypeError as error:
        raise FlaxCheckpointError(f"{path}: array of unknown dtype {dtype_name!r}") from error
    if dtype.hasobject:
        raise FlaxCheckpointError(f"{path}: array of object dtype {dtype_name!r} (Flax never writes one)")
    count = int(np.prod(shape, dtype=np.int64))
    if len(buffer) != count * dtype.itemsize:
        raise FlaxCheckpointError(
            f"{path}: array of shape {tuple(shape)} and dtype {dtype_name} needs {count * dtype.itemsize} bytes, "
            f"the record holds {len(buffer)}"
        )
    return np.frombuffer(buffer, dtype=dtype).reshape(shape).copy()


def _numbered_values(tree: dict, name: str) -> list | None:
    """The values of the map `tree[name]` under the keys "0", "1", ..., or None when it is no such map."""
    entries = tree.get(name)
    if not isinstance(entries, dict) or set(entries) != {str(i) for i in range(len(entries))}:
        return None
    return [entries[str(i)] for i in range(len(entries))]


def _unchunk(tree, path: Path, where: str = ""):
    if not isinstance(tree, dict):
        return tree
    if tree.get(CHUNKED_ARRAY_KEY):
        shape, chunks = _numbered_values(tree, "shape"), _numbered_values(tree, "chunks")
        if not (_is_shape(shape) and chunks and all(isinstance(chunk, np.ndarray) for chunk in chunks)):
            raise FlaxCheckpointError(
                f"{path}: the chunked array at {where!r} needs a 'shape' map of sizes and a 'chunks' map of arrays, "
                f"each keyed '0', '1', ...; it has {sorted(tree)}"
            )
        flat = np.concatenate([chunk.reshape(-1) for chunk in chunks])
        if flat.size != np.prod(shape, dtype=np.int64):
            raise FlaxCheckpointError(f"{path}: the chunked array at {where!r} of shape {tuple(shape)} holds "
                                      f"{flat.size} values")  # fmt: skip
        return flat.reshape(shape)
    return {key: _unchunk(value, path, f"{where}/{key}" if where else str(key)) for key, value in tree.items()}


def read_flax_checkpoint(path) -> dict:
    """The nested dict stored in a Flax msgpack checkpoint file, with NumPy arrays as leaves.

    Raises `FileNotFoundError` for a missing file and `FlaxCheckpointError` for one that is not a msgpack map of
    Flax records.
    """
    import msgpack

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No Flax checkpoint file at {path}")

    def ext_hook(code, data):
        if code == EXT_NDARRAY:
            return _array_from_record(data, path)
        if code == EXT_NPSCALAR:
            return _array_from_record(data, path)[()]
        if code == EXT_COMPLEX:
            real, imag = msgpack.unpackb(data)
            return complex(real, imag)
        raise FlaxCheckpointError(f"{path}: msgpack extension type {code} is not one Flax writes (1, 2 or 3)")

    try:
        tree = msgpack.unpackb(path.read_bytes(), ext_hook=ext_hook, raw=False, strict_map_key=False)
    except (msgpack.UnpackException, ValueError) as error:
        if isinstance(error, FlaxCheckpointError):
            raise
        raise FlaxCheckpointError(f"{path} is not a Flax msgpack checkpoint: {error}") from error
    if not isinstance(tree, dict):
        raise FlaxCheckpointError(f"{path} holds a msgpack {type(tree).__name__}, not the map Flax writes")
    return _unchunk(tree, path)


def flatten_tree(tree: dict, separator: str = "/") -> dict:
    """`{"a": {"b": x}}` -> `{"a/b": x}`: the leaves of a nested checkpoint dict under their paths."""
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update({f"{key}{separator}{inner}": leaf for inner, leaf in flatten_tree(value, separator).items()})
        else:
            flat[str(key)] = value
    return flat


def find_flax_checkpoint(source) -> Path:
    """The checkpoint file to read: `source` itself, or the highest-step checkpoint file in the folder `source`
    (`checkpoint_<step>` as flax.training.checkpoints writes, `ckpt-<n>.flax` as CLU writes)."""
    source = Path(source)
    if source.is_file():
        return source
    if not source.is_dir():
        raise FileNotFoundError(f"No Flax checkpoint file or folder at {source}")
    steps = {}
    for entry in source.iterdir():
        match = CHECKPOINT_FILE_PATTERN.match(entry.name)
        if match and entry.is_file():
            steps[int(match.group(1) or match.group(2))] = entry
    if not steps:
        raise FileNotFoundError(
            f"{source} holds no Flax checkpoint file (expected 'checkpoint_<step>' or 'ckpt-<n>.flax')"
        )
    return steps[max(steps)]
