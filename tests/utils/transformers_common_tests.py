"""transformers' own common test mixins (`ModelTesterMixin`, `ConfigTester`, `VideoProcessingTestMixin`, ...) for
the installed transformers version, importable as the package `transformers_tests`.

They ship in transformers' source distribution (its top-level `tests/*.py`), not in the wheel: the first use downloads
the sdist of the installed version with pip, extracts those files into a cache folder (`$SLOTSSM_HF_CACHE` or
~/.cache/slotssm_hf), and adds the stand-ins in tests/utils/transformers_stand_ins for the three helper modules they import
that the sdist lacks. Nothing of transformers is kept in this repository.
"""

import importlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import transformers

PACKAGE = "transformers_tests"
STAND_INS = Path(__file__).parent / "transformers_stand_ins"


def cache_root() -> Path:
    base = Path(os.environ.get("SLOTSSM_HF_CACHE", Path.home() / ".cache" / "slotssm_hf"))
    return base / f"transformers-{transformers.__version__}-tests"


def extract_tests(root: Path):
    """Download the sdist and write `root/transformers_tests/` whole (in a temporary folder, renamed at the end)."""
    root.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root.parent) as scratch:
        scratch = Path(scratch)
        command = [
            sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
            f"transformers=={transformers.__version__}", "--dest", str(scratch / "sdist"),
        ]  # fmt: skip
        result = subprocess.run(command, capture_output=True, text=True)
        archives = list((scratch / "sdist").glob("transformers-*.tar.gz"))
        if result.returncode != 0 or len(archives) != 1:
            raise RuntimeError(
                f"could not download transformers {transformers.__version__}'s source distribution for its common "
                f"tests ({' '.join(command)}): {result.stderr.strip()[-2000:]}"
            )
        package = scratch / "staged" / PACKAGE
        package.mkdir(parents=True)
        with tarfile.open(archives[0]) as archive:
            for member in archive.getmembers():
                parts = Path(member.name).parts
                if len(parts) == 3 and parts[1] == "tests" and parts[2].endswith(".py") and member.isfile():
                    (package / parts[2]).write_bytes(archive.extractfile(member).read())
        if not (package / "test_modeling_common.py").is_file():
            raise RuntimeError(f"{archives[0].name} holds no tests/test_modeling_common.py")
        shutil.copytree(STAND_INS, package, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__"))
        for folder in [package, *(path for path in package.rglob("*") if path.is_dir())]:
            (folder / "__init__.py").touch()
        try:
            (scratch / "staged").rename(root)
        except OSError:  # another process finished first: keep its copy
            if not (root / PACKAGE).is_dir():
                raise


def common_tests_module(name: str):
    """`transformers_tests.<name>`, e.g. "test_modeling_common", for the installed transformers version."""
    root = cache_root()
    if not (root / PACKAGE).is_dir():
        extract_tests(root)
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    return importlib.import_module(f"{PACKAGE}.{name}")
