"""The layout the zoo keeps: `slotssm_hf/models/` is exactly the code a saved folder carries, in the import forms that
transformers' remote code follows, and it needs nothing heavy at import time. Static: reads the files, runs nothing."""

import ast
import sys
from pathlib import Path

import pytest
from transformers.dynamic_module_utils import get_imports, get_relative_import_files

import slotssm_hf
from slotssm_hf import FAMILIES

PACKAGE = Path(slotssm_hf.__file__).parent
MODELS = PACKAGE / "models"
MODEL_FILES = sorted(path for path in MODELS.glob("*.py") if path.name != "__init__.py")


def closure(paths: list[str]) -> set[Path]:
    """The files transformers copies into a saved folder for the "module.Class" `paths`: their modules and,
    transitively, the modules they import with a single-dot relative import (transformers' own function)."""
    files = set()
    for path in paths:
        module = MODELS / f"{path.split('.')[0]}.py"
        files |= {module, *map(Path, get_relative_import_files(module))}
    return files


def model_paths(family) -> list[str]:
    return [family.config_path, family.base_path, *(head.class_path for head in family.heads)]


def test_the_models_folder_is_exactly_what_saved_folders_carry():
    carried = set()
    for family in FAMILIES.values():
        carried |= closure(model_paths(family) + ([family.processor_path] if family.processor_path else []))
    assert sorted(carried) == MODEL_FILES


@pytest.mark.parametrize("path", MODEL_FILES, ids=lambda path: path.name)
def test_model_code_imports_its_siblings_only_as_transformers_follows_them(path):
    """`from .sibling import name` is copied with the file; `from . import x` is silently not copied, and
    `from ..x` / `from .sub.x` break saving; an absolute import of the package fails where it is not installed."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            assert node.level == 1 and node.module and "." not in node.module, (path.name, ast.unparse(node))
            assert (MODELS / f"{node.module}.py").is_file(), (path.name, ast.unparse(node))
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [node.module] if isinstance(node, ast.ImportFrom) else [alias.name for alias in node.names]
            assert not any(name.split(".")[0] == "slotssm_hf" for name in names), (path.name, ast.unparse(node))


@pytest.mark.parametrize("model_type", FAMILIES)
def test_saved_code_needs_only_torch_and_transformers(model_type):
    """transformers refuses a folder whose code imports a package that is not installed (`get_imports`, which skips
    imports guarded by try / except): a model needs torch, transformers and huggingface_hub (which transformers
    requires), a video processor also NumPy and PyAV."""
    family = FAMILIES[model_type]
    allowed = {"torch", "transformers", "huggingface_hub"}
    for path in closure(model_paths(family)):
        assert set(get_imports(path)) - sys.stdlib_module_names <= allowed, path.name
    for path in closure([family.processor_path] if family.processor_path else []):
        assert set(get_imports(path)) - sys.stdlib_module_names <= allowed | {"numpy", "av"}, path.name


@pytest.mark.parametrize("path", MODEL_FILES, ids=lambda path: path.name)
def test_optional_and_slow_imports_wait_for_the_function_that_needs_them(path):
    """timm (a timm encoder), PyAV (decoding a file) and the CUDA kernels are imported inside the functions that use
    them, so loading any model costs none of them and a folder without them still loads."""
    module_level = ast.parse(path.read_text()).body
    imported = [alias.name for node in module_level if isinstance(node, ast.Import) for alias in node.names]
    imported += [node.module for node in module_level if isinstance(node, ast.ImportFrom) and node.module]
    heavy = {"timm", "av", "scipy", "mamba_ssm", "causal_conv1d", "flash_attn", "datasets", "matplotlib"}
    assert not {module.split(".")[0] for module in imported} & heavy


TOOLING = ["conversion", "training", "synthetic", "hub", "data"]


@pytest.mark.parametrize("package", TOOLING)
def test_tooling_is_never_imported_by_the_models_the_registry_or_streaming(package):
    """Dependencies point one way: the tooling imports the models and the registry, never the reverse."""
    for path in [*MODEL_FILES, PACKAGE / "registry.py", PACKAGE / "streaming.py"]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                assert (node.module or "").split(".")[0] != package, (path.name, ast.unparse(node))
