"""The README's Python snippets run as written, in order, in one namespace."""

import re

from repository import REPO

README = REPO / "README.md"


def test_readme_python_blocks_run(capsys):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert len(blocks) >= 3
    namespace = {}
    for block in blocks:
        exec(compile(block, str(README), "exec"), namespace)
    printed = capsys.readouterr().out
    assert "slots (1, 16, 6, 256)" in printed
    assert "reconstruction (1, 16, 3, 128, 128)" in printed
    assert "SlotSSMModel SlotSSMForVideoReconstruction" in printed
    assert "(1, 16, 3, 128, 128) [6]" in printed
    assert printed.count("(1, 1, 3, 128, 128)") == 5
    assert "True" in printed.splitlines()[-1]
