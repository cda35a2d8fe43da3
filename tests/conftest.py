import sys
from pathlib import Path

import pytest
import torch
import transformers

# Test helpers live in tests/utils and are imported by module name, never from another test module.
sys.path.insert(0, str(Path(__file__).parent / "utils"))


@pytest.fixture(autouse=True)
def _quiet_and_seeded():
    """Deterministic tests; transformers' notices about missing CUDA kernels are expected on a CPU."""
    transformers.logging.set_verbosity_error()
    torch.manual_seed(0)
