"""TFDS-prepared folders (what `tfds.builder(...).download_and_prepare()` writes, and what Kubric publishes for MOVi)
read without TensorFlow, as Hugging Face `datasets`.

A folder holds `dataset_info.json` (splits and their shard lengths), `features.json` (the feature tree), a
`<feature>.labels.txt` per ClassLabel with names, and TFRecord shards `{name}-{split}.tfrecord-{i:05d}-of-{n:05d}` of
serialised `tf.train.Example`s. Everything here is driven by the folder's own JSON files, so any TFDS dataset made of
these feature kinds loads:

- `FeaturesDict` (nested dicts; keys flattened as "a/b" in the Example), `Sequence` (of any feature, dicts
  included: a sequence of dicts comes out as a dict of stacked arrays, as `tfds.as_numpy` gives it), `Video` and
  `Sequence(Image)` (one encoded frame per bytes entry), `Image` (PNG uint8 / uint16, JPEG), `Tensor` (int64 / float
  lists, or raw bytes with `encoding` "bytes" / "zlib", and dynamic shapes), scalars, `Text`, `ClassLabel`
  (names from the labels file), `BBoxFeature`;
- nested sequences (a sequence inside a sequence, e.g. MOVi's per-instance `bboxes`) are stored ragged, as
  `<key>/ragged_flat_values` plus `<key>/ragged_row_lengths_<i>`, and come out as lists of arrays.

`features.json` is read in the forms TFDS has written over time: the Feature proto as JSON (`pythonClassName` with
one of `featuresDict`, `sequence`, `tensor`, `image`, `video`, `classLabel`, `text`, `boundingBox`, `jsonFeature`;
numbers as strings), and the older `{"type": ..., "content": ..., "proto_cls": ...}` form. Any other feature kind is
an error naming the feature and the file.
"""

import json
import zlib
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from .images import ImageError, decode_images
from .tfrecord import TFRecordError, parse_example, read_records

FEATURES_FILE, INFO_FILE = "features.json", "dataset_info.json"
DEFAULT_TEMPLATE = "{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}"
DTYPES = {"bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64", "float16", "float32",
          "float64", "string"}  # fmt: skip


class TFDSFormatError(ValueError):
    """A TFDS folder this reader cannot read: a missing or malformed file, an unsupported feature kind, a missing
    split, a corrupt record. The message names the file (and the feature or record) concerned."""


# --- the feature tree ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Leaf:
    """A feature stored as one Example entry (before any enclosing Sequence). `kind`: "tensor", "image", "text",
    "class_label". `shape` uses None for unknown dimensions; `encoding` is a tensor's ("none", "bytes", "zlib")."""

    kind: str
    shape: tuple
    dtype: str
    class_name: str
    encoding: str = "none"
    num_classes: int | None = None
    names: tuple | None = None


@dataclass(frozen=True)
class Sequence:
    feature: object
    length: int | None = None


@dataclass(frozen=True)
class FeaturesDict:
    features: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Column:
    """One flattened Example key: its path in the feature tree, the lengths of its enclosing Sequences (outermost
    first; None when variable) and its leaf."""

    path: tuple
    sequences: tuple
    leaf: Leaf

    @property
    def key(self) -> str:
        return "/".join(self.path)

    @property
    def shape(self) -> tuple:
        """The full shape of the decoded value, sequence dimensions first."""
        return tuple(self.sequences) + tuple(self.leaf.shape)


def _dimensions(shape, where: str, source: Path) -> tuple:
    """(None for unknown, int) from a proto Shape ({"dimensions": ["24", "-1"]}) or a legacy list ([24, null])."""
    if isinstance(shape, dict):
        shape = shape.get("dimensions", [])
    try:
        return tuple(None if d is None or int(d) < 0 else int(d) for d in shape or ())
    except (TypeError, ValueError) as error:
        raise TFDSFormatError(f"{source}: feature '{where}' has a malformed shape {shape!r}") from error


def _dtype(value, where: str, source: Path, default: str | None = None) -> str:
    dtype = value or default
    dtype = {"object": "string", "str": "string", "bytes": "string"}.get(dtype, dtype)
    if dtype not in DTYPES:
        raise TFDSFormatError(f"{source}: feature '{where}' has dtype {value!r}, which this reader does not support")
    return dtype


def _get(content: dict, *names, default=None):
    """The first of `names` present in `content` (proto JSON is camelCase, the legacy form snake_case)."""
    for name in names:
        if name in content:
            return content[name]
    return default


def _unsupported(where: str, source: Path, what: str) -> TFDSFormatError:
    return TFDSFormatError(
        f"{source}: feature '{where}' is {what}, which this reader does not support (it reads FeaturesDict, Sequence, "
        "Video, Image, Tensor and scalars, Text, ClassLabel and BBoxFeature)"
    )


# proto message name (the legacy form's "proto_cls") -> the Feature proto's oneof field holding it
PROTO_KINDS = {"FeaturesDict": "featuresDict", "Sequence": "sequence", "TensorFeature": "tensor",
               "ImageFeature": "image", "VideoFeature": "video", "ClassLabel": "classLabel", "TextFeature": "text",
               "BoundingBoxFeature": "boundingBox", "JsonFeature": "jsonFeature"}  # fmt: skip
# legacy class name (last component) -> the proto kind whose content has the same meaning
LEGACY_KINDS = {"FeaturesDict": "featuresDict", "Sequence": "sequence", "Dataset": "sequence", "Tensor": "tensor",
                "Scalar": "tensor", "Image": "image", "Video": "video", "ClassLabel": "classLabel", "Text": "text",
                "BBoxFeature": "boundingBox"}  # fmt: skip


def parse_feature(value, where: str, source: Path):
    """The feature tree (`FeaturesDict` / `Sequence` / `Leaf`) of one features.json entry; `where` is its path."""
    if not isinstance(value, dict):
        raise TFDSFormatError(f"{source}: feature '{where}' is not a JSON object: {value!r}")
    if "pythonClassName" in value:  # the Feature proto as JSON
        class_name = value["pythonClassName"]
        kinds = [key for key in value if key not in ("pythonClassName", "description", "valueRange")]
        if len(kinds) != 1:
            raise TFDSFormatError(f"{source}: feature '{where}' ({class_name}) has no single content field: {kinds}")
        return _parse_content(kinds[0], value[kinds[0]], class_name, where, source, legacy=False)
    if "type" in value:  # the older {"type", "content", "proto_cls"} form
        class_name, content, proto_cls = value["type"], value.get("content", {}), value.get("proto_cls")
        if isinstance(content, str):
            try:
                content = json.loads(content)
            except json.JSONDecodeError as error:
                raise TFDSFormatError(f"{source}: feature '{where}' has unreadable content ({error})") from error
        if proto_cls:
            kind = PROTO_KINDS.get(proto_cls.rsplit(".", 1)[-1])
            if kind is None:
                raise _unsupported(where, source, f"a {class_name} described by the proto {proto_cls}")
            return _parse_content(kind, content, class_name, where, source, legacy=False)
        kind = LEGACY_KINDS.get(class_name.rsplit(".", 1)[-1])
        if kind is None:
            raise _unsupported(where, source, f"a {class_name}")
        return _parse_content(kind, content, class_name, where, source, legacy=True)
    raise TFDSFormatError(f"{source}: feature '{where}' names no feature class (no 'pythonClassName' nor 'type')")


def _parse_content(kind: str, content, class_name: str, where: str, source: Path, legacy: bool):
    short = class_name.rsplit(".", 1)[-1]
    if kind == "jsonFeature":  # a feature without a proto of its own: its legacy content, as a JSON string
        legacy_kind = LEGACY_KINDS.get(short)
        if legacy_kind is None:
            raise _unsupported(where, source, f"a {class_name}")
        return _parse_content(legacy_kind, json.loads(content.get("json", "{}")), class_name, where, source, True)
    if not isinstance(content, dict):
        raise TFDSFormatError(f"{source}: feature '{where}' ({class_name}) has content {content!r}, not an object")
    if kind == "featuresDict":
        children = content.get("features", {}) if not legacy else content
        return FeaturesDict({name: parse_feature(child, f"{where}/{name}".lstrip("/"), source)
                             for name, child in children.items()})  # fmt: skip
    if kind == "sequence":
        length = content.get("length")
        length = None if length in (None, "", "-1", -1) else int(length)
        if "feature" not in content:
            raise TFDSFormatError(f"{source}: feature '{where}' is a Sequence without its 'feature'")
        return Sequence(parse_feature(content["feature"], where, source), length)
    if kind == "tensor":
        encoding = (content.get("encoding") or "none").lower()
        if encoding not in ("none", "bytes", "zlib"):
            raise _unsupported(where, source, f"a Tensor with encoding {encoding!r}")
        dtype = _dtype(content.get("dtype"), where, source)
        return Leaf("tensor", _dimensions(content.get("shape"), where, source), dtype, class_name, encoding)
    if kind == "boundingBox":
        dtype = _dtype(content.get("dtype"), where, source, default="float32")
        shape = _dimensions(content.get("shape"), where, source) or (4,)
        return Leaf("tensor", shape, dtype, class_name)
    if kind in ("image", "video"):
        shape = _dimensions(content.get("shape"), where, source)
        dtype = _dtype(content.get("dtype"), where, source, default="uint8")
        if dtype not in ("uint8", "uint16"):
            raise _unsupported(where, source, f"an {short} of dtype {dtype}")
        if len(shape) != (4 if kind == "video" else 3):
            raise TFDSFormatError(f"{source}: feature '{where}' ({short}) has shape {shape}, not of rank "
                                  f"{4 if kind == 'video' else 3}")  # fmt: skip
        if kind == "video":  # a Video is stored as a Sequence of its frames
            return Sequence(Leaf("image", shape[1:], dtype, class_name), shape[0])
        return Leaf("image", shape, dtype, class_name)
    if kind == "classLabel":
        num_classes = _get(content, "numClasses", "num_classes")
        names = content.get("names")
        num_classes = None if num_classes is None else int(num_classes)
        names = tuple(names) if names else None
        return Leaf("class_label", (), "int64", class_name, num_classes=num_classes, names=names)
    if kind == "text":
        return Leaf("text", (), "string", class_name)
    raise _unsupported(where, source, f"a {class_name} ({kind})")


def flatten(node, path=(), sequences=()) -> list[Column]:
    """The Example keys of a feature tree, in the tree's order."""
    if isinstance(node, FeaturesDict):
        return [column for name, child in node.features.items() for column in flatten(child, (*path, name), sequences)]
    if isinstance(node, Sequence):
        return flatten(node.feature, path, (*sequences, node.length))
    return [Column(path, sequences, node)]


# --- decoding one Example --------------------------------------------------------------------------------------------


def _integer_range(values: np.ndarray, dtype: str) -> None:
    info = np.iinfo(dtype)
    if values.size and (values.min() < info.min or values.max() > info.max):
        raise ValueError(f"values from {values.min()} to {values.max()} do not fit its dtype {dtype}")


def _numeric(values, dtype: str) -> np.ndarray:
    """int64 / float32 list values as `dtype` (bools and every integer type are stored as int64)."""
    if isinstance(values, list):
        if values:
            raise ValueError("it holds bytes where numbers were expected")
        values = np.zeros(0, np.int64)
    if values.dtype != np.int64 and (dtype == "bool" or np.dtype(dtype).kind in "iu"):
        raise ValueError(f"it holds floats where {dtype} values (stored as int64) were expected")
    if dtype == "bool":
        return values.astype(bool)
    if dtype == "uint64":
        return values.astype(np.int64).view(np.uint64)
    if values.dtype == np.int64 and dtype not in ("int64", "float16", "float32", "float64"):
        _integer_range(values, dtype)
    return values.astype(dtype, copy=False)


def _items(column: Column, values, count: int | None):
    """The decoded items of `column`'s leaf from its stored `values`: an array (N, *shape) (or a list of N arrays /
    strings where their shapes differ or they are text). `count` is the number expected (None when variable)."""
    leaf = column.leaf
    if leaf.kind in ("image", "text") or leaf.encoding != "none" or leaf.dtype == "string":
        if not isinstance(values, list):
            raise ValueError("it holds numbers where encoded bytes were expected")
        if count is not None and len(values) != count:
            raise ValueError(f"it holds {len(values)} entries, not {count}")
        if leaf.kind == "image":
            return _images(values, leaf)
        if leaf.kind == "text":
            return [value.decode("utf-8") for value in values]
        if leaf.dtype == "string":
            return list(values)
        stored = "<" + np.dtype(leaf.dtype).str[1:]  # np.ndarray.tobytes on the little-endian machines TFDS runs on
        decoded = [np.frombuffer(zlib.decompress(v) if leaf.encoding == "zlib" else v, stored) for v in values]
        shape = tuple(-1 if d is None else d for d in leaf.shape)
        return np.stack([item.reshape(shape).astype(leaf.dtype) for item in decoded]) if decoded else np.zeros(
            (0, *(d or 0 for d in leaf.shape)), leaf.dtype
        )
    values = _numeric(values, leaf.dtype)
    if None in leaf.shape:
        if count is None or sum(d is None for d in leaf.shape) > 1:
            raise ValueError(f"its shape {leaf.shape} has unknown dimensions that the stored values cannot fix")
    size = int(np.prod([d for d in leaf.shape if d is not None], dtype=np.int64))
    if count is None:
        if size == 0 or values.size % size:
            raise ValueError(f"it holds {values.size} values, not a whole number of items of shape {leaf.shape}")
        count = values.size // size
    if None not in leaf.shape and values.size != count * size:
        raise ValueError(f"it holds {values.size} values, not {count} of shape {leaf.shape}")
    return values.reshape(count, *(-1 if d is None else d for d in leaf.shape))


def _images(frames: list[bytes], leaf: Leaf):
    images = decode_images(frames)
    for image in images[:1] if isinstance(images, np.ndarray) else images:
        if image.dtype != np.dtype(leaf.dtype):
            raise ValueError(f"its images are {image.dtype}, features.json says {leaf.dtype}")
        if image.ndim != len(leaf.shape) or any(d is not None and d != n for d, n in zip(leaf.shape, image.shape)):
            raise ValueError(f"an image has shape {image.shape}, features.json says {leaf.shape} (None: any)")
    if isinstance(images, list) and not images:
        return np.zeros((0, *(d or 0 for d in leaf.shape)), leaf.dtype)
    return images


def decode_column(column: Column, example: dict):
    """`column`'s value in a parsed Example (`parse_example`'s dict)."""
    key, depth = column.key, len(column.sequences)
    if depth <= 1:
        if column.leaf.kind == "tensor" and column.leaf.shape.count(None) > 1:
            return _dynamic_tensor(column, example)
        if key not in example:
            raise KeyError(f"the record has no '{key}'")
        count = 1 if depth == 0 else column.sequences[0]
        items = _items(column, example[key], count)
        return items[0] if depth == 0 else items
    # A sequence inside a sequence: flat values plus the row lengths of every inner level.
    flat_key = f"{key}/ragged_flat_values"
    length_keys = [f"{key}/ragged_row_lengths_{level}" for level in range(depth - 1)]
    for needed in (flat_key, *length_keys):
        if needed not in example:
            raise KeyError(f"the record has no '{needed}' (a nested sequence is stored ragged)")
    lengths = [_numeric(example[k], "int64") for k in length_keys]
    items = _items(column, example[flat_key], int(lengths[-1].sum()))
    for level, row_lengths in reversed(list(enumerate(lengths))):
        if row_lengths.min(initial=0) < 0 or row_lengths.sum() != len(items):
            raise ValueError(f"its ragged_row_lengths_{level} add up to {row_lengths.sum()}, not {len(items)}")
        bounds = np.cumsum(row_lengths)[:-1]
        items = np.split(items, bounds) if isinstance(items, np.ndarray) else _split_list(items, row_lengths)
    if column.sequences[0] is not None and len(items) != column.sequences[0]:
        raise ValueError(f"it holds {len(items)} rows, not {column.sequences[0]}")
    return list(items)


def _split_list(items: list, row_lengths) -> list[list]:
    bounds = np.concatenate([[0], np.cumsum(row_lengths)])
    return [items[start:end] for start, end in zip(bounds[:-1], bounds[1:])]


def _dynamic_tensor(column: Column, example: dict):
    """A Tensor with several unknown dimensions: stored as '<key>/value' plus its shape in '<key>/shape'."""
    leaf, key = column.leaf, column.key
    if leaf.encoding == "none" or len(column.sequences) > 1:
        raise ValueError(f"a Tensor of shape {leaf.shape} (encoding {leaf.encoding}) is not supported here")
    for needed in (f"{key}/shape", f"{key}/value"):
        if needed not in example:
            raise KeyError(f"the record has no '{needed}' (a Tensor of several unknown dimensions)")
    shapes = _numeric(example[f"{key}/shape"], "int64").reshape(-1, len(leaf.shape))
    values = example[f"{key}/value"]
    arrays = []
    for value, shape in zip(values, shapes):
        raw = zlib.decompress(value) if leaf.encoding == "zlib" else value
        arrays.append(np.frombuffer(raw, "<" + np.dtype(leaf.dtype).str[1:]).astype(leaf.dtype).reshape(shape))
    return arrays[0] if not column.sequences else arrays


def nest(columns: list[Column], values: list) -> dict:
    """{path: value} as nested dicts."""
    out = {}
    for column, value in zip(columns, values):
        node = out
        for name in column.path[:-1]:
            node = node.setdefault(name, {})
        node[column.path[-1]] = value
    return out


# --- datasets features -----------------------------------------------------------------------------------------------


def hf_feature(column: Column):
    """The `datasets` feature of a column: `ArrayND` for numeric arrays of rank 2 to 5 whose dimensions are known but
    the first, nested `List`s otherwise, `ClassLabel` with the names of the labels file."""
    import datasets

    leaf, shape = column.leaf, column.shape
    if leaf.kind == "class_label" and (leaf.names or leaf.num_classes):
        base = datasets.ClassLabel(names=list(leaf.names)) if leaf.names else datasets.ClassLabel(leaf.num_classes)
    elif leaf.kind == "text":
        base = datasets.Value("string")
    elif leaf.dtype == "string":
        base = datasets.Value("binary")
    else:
        base = datasets.Value(leaf.dtype)
    ragged = len(column.sequences) > 1 or (leaf.kind == "image" and None in leaf.shape)
    arrays = {2: datasets.Array2D, 3: datasets.Array3D, 4: datasets.Array4D, 5: datasets.Array5D}
    if isinstance(base, datasets.Value) and len(shape) in arrays and None not in shape[1:] and not ragged:
        return arrays[len(shape)](shape=shape, dtype=leaf.dtype)
    feature = base
    for dimension in reversed(shape):
        feature = datasets.List(feature, length=-1 if dimension is None else dimension)
    return feature


def hf_features(columns: list[Column]):
    import datasets

    features = {}
    for column in columns:
        node = features
        for name in column.path[:-1]:
            node = node.setdefault(name, {})
        node[column.path[-1]] = hf_feature(column)
    return datasets.Features(features)


# --- the folder ------------------------------------------------------------------------------------------------------


def resolve_folder(folder) -> Path:
    """`folder` itself when it holds dataset_info.json, else its only sub-folder (one or two levels down) that does,
    e.g. `movi_a/128x128` -> `movi_a/128x128/1.0.0`."""
    folder = Path(folder)
    if (folder / INFO_FILE).is_file():
        return folder
    if not folder.is_dir():
        raise TFDSFormatError(f"{folder} is not a folder")
    found = sorted({p.parent for p in [*folder.glob(f"*/{INFO_FILE}"), *folder.glob(f"*/*/{INFO_FILE}")]})
    if len(found) == 1:
        return found[0]
    if found:
        listing = ", ".join(str(p) for p in found)
        raise TFDSFormatError(f"{folder} holds several TFDS folders; pass one of: {listing}")
    raise TFDSFormatError(f"{folder} is not a TFDS-prepared folder: it has no {INFO_FILE}")


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError as error:
        raise TFDSFormatError(f"{path} is missing; a TFDS-prepared folder has it beside its shards") from error
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise TFDSFormatError(f"{path} is not valid JSON ({error})") from error


@dataclass(frozen=True)
class Shard:
    path: Path
    length: int | None  # records, as dataset_info.json declares them (None when it does not)


class TFDSFolder:
    """A TFDS-prepared folder: its feature tree (`features`), flattened Example keys (`columns`), splits and shards.

    `examples(split)` yields decoded examples as nested dicts of NumPy arrays; `dataset(split)` wraps them as a
    streaming `datasets.IterableDataset`."""

    def __init__(self, folder):
        self.folder = resolve_folder(folder)
        self.info = _read_json(self.folder / INFO_FILE)
        self.name = self.info.get("name")
        if not self.name:
            raise TFDSFormatError(f"{self.folder / INFO_FILE} has no dataset 'name'")
        file_format = self.info.get("fileFormat", "tfrecord") or "tfrecord"
        if file_format != "tfrecord":
            raise TFDSFormatError(f"{self.folder / INFO_FILE}: the shards are {file_format}; only tfrecord is read")
        source = self.folder / FEATURES_FILE
        self.features = parse_feature(_read_json(source), "", source)
        if not isinstance(self.features, FeaturesDict):
            raise TFDSFormatError(f"{source}: the top-level feature is not a FeaturesDict")
        self.columns = [self._with_names(column) for column in flatten(self.features)]

    def _with_names(self, column: Column) -> Column:
        """A ClassLabel's names come from `<path joined by '-'>.labels.txt` (TFDS's file name for them)."""
        leaf = column.leaf
        if leaf.kind != "class_label" or leaf.names:
            return column
        path = self.folder / ("-".join(part.replace("/", ".") for part in column.path) + ".labels.txt")
        if not path.is_file():
            return column
        names = tuple(line.strip() for line in path.read_text().splitlines() if line.strip())
        if leaf.num_classes is not None and len(names) != leaf.num_classes:
            raise TFDSFormatError(f"{path} names {len(names)} classes; {FEATURES_FILE} says {leaf.num_classes}")
        return replace(column, leaf=replace(leaf, names=names))

    @property
    def splits(self) -> list[str]:
        return [split.get("name") for split in self.info.get("splits", [])]

    def shards(self, split: str) -> list[Shard]:
        """The shard files of `split`, checked to exist."""
        entries = {entry.get("name"): entry for entry in self.info.get("splits", [])}
        if split not in entries:
            listing = ", ".join(map(str, entries)) or "none"
            raise TFDSFormatError(f"{self.folder / INFO_FILE} has no split '{split}'; its splits: {listing}")
        entry = entries[split]
        lengths = [int(n) for n in entry.get("shardLengths", entry.get("shard_lengths", []))]
        count = len(lengths) or int(entry.get("numShards", entry.get("num_shards", 0)) or 0)
        template = entry.get("filepathTemplate") or DEFAULT_TEMPLATE
        values = {"DATASET": self.name, "SPLIT": split, "FILEFORMAT": "tfrecord", "NUM_SHARDS": f"{count:05d}"}
        shards = []
        for index in range(count):
            values.update(SHARD_INDEX=f"{index:05d}", SHARD_X_OF_Y=f"{index:05d}-of-{count:05d}")
            try:
                name = template.format(**values)
            except (KeyError, IndexError, ValueError) as error:
                raise TFDSFormatError(f"{self.folder / INFO_FILE}: unknown file name template {template!r}") from error
            path = self.folder / name
            if not path.is_file():
                raise TFDSFormatError(f"{path} is missing: split '{split}' has {count} shards (a partial download?)")
            shards.append(Shard(path, lengths[index] if lengths else None))
        return shards

    def num_examples(self, split: str) -> int | None:
        lengths = [shard.length for shard in self.shards(split)]
        return None if None in lengths else sum(lengths)

    def select(self, columns=None) -> list[Column]:
        """The columns under the given feature paths ("video", "metadata/video_name", ...); all when None."""
        if columns is None:
            return list(self.columns)
        wanted = [tuple(c.split("/")) if isinstance(c, str) else tuple(c) for c in columns]
        for path in wanted:
            if not any(column.path[: len(path)] == path for column in self.columns):
                names = ", ".join(dict.fromkeys(column.path[0] for column in self.columns))
                source = self.folder / FEATURES_FILE
                raise TFDSFormatError(f"{source} has no feature '{'/'.join(path)}'; it has: {names}")
        return [column for column in self.columns if any(column.path[: len(path)] == path for path in wanted)]

    def hf_features(self, columns=None):
        """The `datasets.Features` of the selected columns."""
        return hf_features(self.select(columns))

    def examples(self, split: str, columns=None):
        """Every example of `split`, shard by shard, decoded (nested dicts of NumPy arrays, lists, str, int)."""
        yield from generate_examples(self.shards(split), tuple(self.select(columns)))

    def dataset(self, split: str, columns=None):
        """`split` as a streaming `datasets.IterableDataset` whose shards are the TFRecord files: DataLoader workers
        and `datasets.distributed.split_dataset_by_node` divide them, and `shuffle` shuffles their order too."""
        import datasets

        selected = self.select(columns)
        return datasets.IterableDataset.from_generator(
            generate_examples, features=hf_features(selected), split=datasets.NamedSplit(split),
            gen_kwargs={"shards": self.shards(split), "columns": tuple(selected)},
        )  # fmt: skip


def generate_examples(shards: list[Shard], columns: tuple):
    """Decoded examples from `shards` (the generator behind `TFDSFolder.dataset`; `datasets` hands each worker a
    sub-list of `shards`)."""
    keys = set()
    for column in columns:
        keys |= {column.key, f"{column.key}/ragged_flat_values", f"{column.key}/shape", f"{column.key}/value"}
        keys |= {f"{column.key}/ragged_row_lengths_{level}" for level in range(len(column.sequences))}
    for shard in shards:
        count = 0
        for offset, payload in read_records(shard.path):
            try:
                example = parse_example(payload, keys)
            except TFRecordError as error:
                raise TFDSFormatError(f"{shard.path}: record at byte {offset}: {error}") from error
            values = []
            for column in columns:
                try:
                    values.append(decode_column(column, example))
                except (KeyError, ValueError, ImageError, UnicodeDecodeError, zlib.error) as error:
                    message = error.args[0] if isinstance(error, KeyError) else error
                    raise TFDSFormatError(
                        f"{shard.path}: record at byte {offset}, feature '{column.key}' "
                        f"({column.leaf.class_name.rsplit('.', 1)[-1]}): {message}"
                    ) from error
            count += 1
            yield nest(list(columns), values)
        if shard.length is not None and count != shard.length:
            raise TFDSFormatError(
                f"{shard.path} holds {count} records; {INFO_FILE} says {shard.length} (a truncated or partial shard?)"
            )


def read_tfds(folder, split: str, columns=None):
    """A TFDS-prepared folder's `split` as a streaming `datasets.IterableDataset`, without TensorFlow.

    `columns` picks features by path ("video", "instances/bboxes"); the others are not decoded. Iterated as is, an
    example holds NumPy arrays of the stored dtypes (`datasets`' "numpy" and "torch" formats turn integers into int64).
    Errors name the file and record: `TFDSFormatError`, or `TFRecordError` for a corrupt or truncated shard. Example::

        dataset = read_tfds("movi_a/128x128/1.0.0", "validation", columns=["video", "segmentations"])
        example = next(iter(dataset))  # example["video"]: (24, 128, 128, 3) uint8
    """
    return TFDSFolder(folder).dataset(split, columns)
