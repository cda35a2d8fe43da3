"""Readers of the field's data as Hugging Face `datasets`, without TensorFlow:

- `read_tfds` / `TFDSFolder` (`tfds`): any TFDS-prepared folder, driven by its features.json and dataset_info.json;
- `load_movi` / `MOVi` / `movi_example` (`movi`): Kubric's MOVi-A to F with their meaning (de-quantised depth and
  flow, dense per-frame boxes);
- `export` (`export`, the `slotssm-hf tfds-export` command): an Arrow or Parquet copy, for the Hub too.

Its modules import NumPy only at load (`import slotssm_hf` itself brings transformers, for the Auto registration);
`datasets`, Pillow and protobuf load when first used.
"""

from .export import export
from .movi import MOVi, load_movi, movi_example
from .tfds import TFDSFolder, TFDSFormatError, read_tfds
from .tfrecord import TFRecordError

__all__ = ["MOVi", "TFDSFolder", "TFDSFormatError", "TFRecordError", "export", "load_movi", "movi_example", "read_tfds"]
