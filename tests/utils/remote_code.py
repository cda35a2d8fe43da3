"""Running saved folders' model code where this package cannot be imported, as `trust_remote_code=True` users do."""

import os
import subprocess
import sys
import textwrap


def run_without_package(tmp_path, body: str) -> str:
    """Run the Python source `body` in a fresh interpreter where any import of slotssm_hf fails, so only the code
    stored in saved folders can run (offline, with an HF_HOME of its own); return what it printed. A failure fails
    the test with the end of its stderr."""
    script = 'import sys\nsys.modules["slotssm_hf"] = None  # any import of the package now fails\n'
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf-home"), "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-c", script + textwrap.dedent(body)]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout
