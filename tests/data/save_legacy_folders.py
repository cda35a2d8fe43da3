"""Writes `tests/data/legacy_folders/<family>/` with `tests/utils/saved_folders.save_folder`: a tiny model of each
family's first task head, saved with its processor, and `io.safetensors` holding a seeded input and the outputs the
saving code computed on it.

The folders committed beside this script were written by commit 6ecfb11, before the package was split into
`slotssm_hf.models` and the tooling sub-packages; `tests/test_saved_folders.py` checks that today's code still loads
them and computes the same outputs. Rerun only to record a new format: `python tests/data/save_legacy_folders.py`.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "utils"))

from saved_folders import LEGACY_FOLDERS, save_folder  # noqa: E402

from slotssm_hf import FAMILIES  # noqa: E402

if __name__ == "__main__":
    for model_type in FAMILIES:  # one folder per family; the other cases use the families' code
        print(save_folder(model_type, LEGACY_FOLDERS / model_type))
