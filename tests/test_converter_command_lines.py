"""The five `slotssm-hf convert-<family>` commands share one command line: the same positional arguments and
common flags, and the same way of failing (one `error:` line, exit status 2, nothing written)."""

import os

import pytest

from slotssm_hf.cli import COMMANDS
from slotssm_hf.cli import main as cli

CONVERTERS = sorted(name for name in COMMANDS if name.startswith("convert-"))
COMMON_FLAGS = ("--overwrite", "--allow-non-finite")


def test_every_family_has_a_converter():
    from slotssm_hf import FAMILIES

    assert {f"convert-{model_type}" for model_type in FAMILIES} <= set(CONVERTERS)


@pytest.mark.parametrize("command", CONVERTERS)
def test_the_converters_take_the_same_arguments(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli([command, "--help"])
    assert exit_info.value.code == 0
    usage = capsys.readouterr().out
    assert usage.startswith("usage: slotssm-hf convert-")
    for flag in (*COMMON_FLAGS, "source", "output"):
        assert flag in usage, flag
    assert ("--verify" in usage) == (command != "convert-grootv")  # GrootV has no independent reference


def error_line(capsys) -> str:
    """The one line a failed command prints on stderr (saving may print progress bars first); no traceback."""
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err.strip().splitlines()[-1]


@pytest.mark.parametrize("command", CONVERTERS)
def test_a_missing_source_fails_with_one_line_and_writes_nothing(command, tmp_path, capsys):
    before = set(os.listdir(tmp_path))
    assert cli([command, str(tmp_path / "missing"), str(tmp_path / "out")]) == 2
    line = error_line(capsys)
    assert line.startswith("error: ") and "missing" in line, line
    assert set(os.listdir(tmp_path)) == before


@pytest.mark.parametrize("command", CONVERTERS)
def test_an_existing_output_is_kept_without_overwrite(command, tmp_path, capsys):
    (tmp_path / "source").mkdir()
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "kept.txt").write_text("mine")
    assert cli([command, str(tmp_path / "source"), str(tmp_path / "out")]) == 2
    assert error_line(capsys).endswith("already exists; pass --overwrite to replace it")
    assert os.listdir(tmp_path / "out") == ["kept.txt"]


OUTPUTS = {  # output paths that cannot hold a converted folder, and what the error says of them
    "under-a-file": (lambda tmp: (tmp / "file.txt").write_text("x") and tmp / "file.txt" / "out", "is a file, not a folder"),
    "dangling-symlink": (lambda tmp: (tmp / "link").symlink_to(tmp / "nowhere") or tmp / "link", "symbolic link"),
    "symlink-loop": (lambda tmp: (tmp / "loop").symlink_to(tmp / "loop") or tmp / "loop", "symbolic link"),
    "symlink-to-folder": (lambda tmp: (tmp / "to-dir").symlink_to(tmp / "source") or tmp / "to-dir", "symbolic link"),
}


@pytest.mark.parametrize("output", OUTPUTS)
@pytest.mark.parametrize("command", CONVERTERS)
def test_an_output_path_that_cannot_hold_a_folder_is_refused_naming_it(command, output, tmp_path, capsys):
    make, message = OUTPUTS[output]
    (tmp_path / "source").mkdir()
    path = make(tmp_path)
    before = sorted(os.listdir(tmp_path))
    assert cli([command, str(tmp_path / "source"), str(path), "--overwrite"]) == 2
    line = error_line(capsys)
    assert line.startswith(f"error: {path}") and message in line, line
    assert sorted(os.listdir(tmp_path)) == before and os.listdir(tmp_path / "source") == []


@pytest.mark.parametrize("command", CONVERTERS)
def test_an_output_inside_the_source_is_refused_before_anything_is_read(command, tmp_path, capsys):
    (tmp_path / "source").mkdir()
    assert cli([command, str(tmp_path / "source"), str(tmp_path / "source" / "out"), "--overwrite"]) == 2
    assert "overlap" in error_line(capsys)
    assert os.listdir(tmp_path / "source") == []
