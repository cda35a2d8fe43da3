"""The five `slotssm-hf convert-<family>` commands share one command line: the same positional arguments and
common flags, and the same way of failing (one `error:` line, exit status 2, nothing written), whatever failed:
a malformed file, an unwritable output, an unexpected exception."""

import os

import pytest

from slotssm_hf.cli import COMMANDS
from slotssm_hf.cli import main as cli

CONVERTERS = sorted(name for name in COMMANDS if name.startswith("convert-"))
COMMON_FLAGS = ("--verify", "--overwrite", "--allow-non-finite", "--config", "--revision", "--push-to-hub",
                "--private", "--commit-message", "--create-pr")


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
    assert "namespace/name[/path/in/repo]" in usage  # a Hub source

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


def written(folder) -> list[str]:
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*"))


@pytest.mark.parametrize("command", CONVERTERS)
def test_a_malformed_checkpoint_fails_with_one_line_and_exit_2(command, tmp_path, capsys):
    from official_sources import write_malformed_source

    source = write_malformed_source(command, tmp_path / "official")
    before = written(tmp_path)
    assert cli([command, str(source), str(tmp_path / "out")]) == 2
    assert error_line(capsys).startswith("error: ")
    assert written(tmp_path) == before


@pytest.mark.parametrize("command", CONVERTERS)
def test_a_malformed_run_configuration_fails_with_one_line_and_exit_2(command, tmp_path, capsys):
    from official_sources import write_official_source

    source, _ = write_official_source(command, tmp_path / "official")
    (tmp_path / "bad.yaml").write_text("model: [unclosed\n  - ]: {")
    before = written(tmp_path)
    assert cli([command, str(source), str(tmp_path / "out"), "--config", str(tmp_path / "bad.yaml")]) == 2
    line = error_line(capsys)
    assert line.startswith("error: ") and "bad.yaml" in line, line
    assert written(tmp_path) == before


@pytest.mark.parametrize("command", CONVERTERS)
def test_an_unwritable_output_fails_with_one_line_and_exit_2(command, tmp_path, capsys, monkeypatch):
    from contextlib import contextmanager

    from official_sources import write_official_source

    source, arguments = write_official_source(command, tmp_path / "official")

    @contextmanager
    def read_only(output, log):  # what mkdir says where the user may not write
        raise PermissionError(13, "Permission denied", str(output.parent))
        yield

    monkeypatch.setattr("slotssm_hf.conversion.conversion_utils.staged_folder", read_only)
    assert cli([command, str(source), str(tmp_path / "out"), *arguments]) == 2
    assert error_line(capsys) == f"error: cannot read or write {tmp_path}: Permission denied"


@pytest.mark.parametrize("command", CONVERTERS)
def test_an_unexpected_failure_is_one_line_exit_2_and_leaves_nothing(command, tmp_path, capsys, monkeypatch):
    from official_sources import write_official_source

    source, arguments = write_official_source(command, tmp_path / "official")
    before = written(tmp_path)

    def broken(*args, **kwargs):
        raise RuntimeError("the card template is broken")

    monkeypatch.setattr("slotssm_hf.hub.model_card.render_model_card", broken)
    assert cli([command, str(source), str(tmp_path / "out"), *arguments]) == 2
    assert error_line(capsys) == "error: the conversion failed (RuntimeError: the card template is broken)"
    assert written(tmp_path) == before


@pytest.mark.parametrize("command", CONVERTERS)
def test_arguments_that_cannot_work_are_refused_before_the_checkpoint_is_read(command, tmp_path, capsys):
    from official_sources import write_official_source

    source, arguments = write_official_source(command, tmp_path / "official")
    before = written(tmp_path)
    cases = {
        ("--private",): "--private, --commit-message and --create-pr apply to --push-to-hub REPO_ID",
        ("--push-to-hub", "not a repo id!"): "--push-to-hub: 'not a repo id!' is not a valid repo id",
        ("--push-to-hub", "no-namespace"): "needs a namespace: namespace/name",
        ("--revision", "v1.0"): f"--revision v1.0 pins a Hub source, and {source} is a local path",
        ("--no-such-flag",): "unrecognized arguments: --no-such-flag",
    }
    for flags, message in cases.items():
        assert cli([command, str(source), str(tmp_path / "out"), *arguments, *flags]) == 2
        line = error_line(capsys)
        assert line.startswith("error: ") and message in line, line
    assert written(tmp_path) == before
