"""Bad inputs of the command lines, as rows of the bad-input table (`test_bad_inputs.BadInput`): the converters
given broken weights, malformed checkpoints and output paths that cannot hold a folder, and `slotssm-hf train`
(also `--model convs5`) and `slotssm-hf benchmark` given flags that cannot work or a run that diverges.

Every row runs the command as a user does, through `slotssm-hf`: it must fail with exit status 2 and one `error:`
line that names the flag, key or file (`fails_naming`), and leave the test's folder as it found it. The train and
benchmark rows fail while their arguments are read, before any data is made, but for the run whose loss
diverges."""

import contextlib
import io
import re
from dataclasses import dataclass
from pathlib import Path

import msgpack
import numpy as np
import pytest
import torch
from official_sources import write_official_source
from test_bad_inputs import CASES, BadInput
from test_bad_inputs import test_bad_input as check_row

from slotssm_hf.cli import main as cli


@dataclass(frozen=True)
class Command:
    """`slotssm-hf ARGUMENTS` to run in `folder`, which holds what the command reads and `before`, its files then."""

    arguments: list[str]
    folder: Path
    before: dict


def files(folder: Path) -> dict:
    """Every path under `folder` with its content (files) or None (folders and links)."""
    return {str(path.relative_to(folder)): path.read_bytes() if path.is_file() and not path.is_symlink() else None
            for path in folder.rglob("*")}  # fmt: skip


def command(*arguments, make=None):
    """The builder of `slotssm-hf ARGUMENTS`: "{tmp}" in them stands for the test's folder; `make(tmp_path)` writes
    what the command reads first and gives the arguments that name it (put before ARGUMENTS)."""

    def build(tmp_path):
        made = [] if make is None else make(tmp_path)
        return Command([*made, *(a.format(tmp=tmp_path) for a in arguments)], tmp_path, files(tmp_path))

    return build


def run(command: Command) -> tuple[int, str]:
    """The exit status and stderr of the command."""
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        status = cli(command.arguments)
    return status, stderr.getvalue()


def fails_naming(pattern: str, unchanged: bool = True):
    """The check of a refused command: exit status 2, no traceback, its last stderr line `error: ...` matching
    `pattern` (saving and training may print progress first) and, when `unchanged`, nothing written or changed."""

    def check(result, command: Command):
        status, stderr = result
        assert "Traceback" not in stderr, stderr[-3000:]
        line = stderr.strip().splitlines()[-1] if stderr.strip() else ""
        assert status == 2 and line.startswith("error: "), (status, stderr[-3000:])
        assert re.search(pattern, line), f"{line} does not match {pattern!r}"
        assert not unchanged or files(command.folder) == command.before

    return check


def stops_at_step_2_and_writes_no_model(result, command: Command):
    """The check of a run whose loss diverges at its second step: one `error:` line, and neither a checkpoint nor a
    final model (the data and the Trainer's logs may be there)."""
    fails_naming(r"the training loss became nan at step 2; training stopped before applying it", unchanged=False)(
        result, command
    )
    assert not [path for path in command.folder.rglob("*") if path.name == "final" or "checkpoint-" in path.name]


def refused(id: str, build, pattern: str) -> BadInput:
    return BadInput(id, build, run, check=fails_naming(pattern))


# Official checkpoints with one thing wrong (`official_sources.write_official_source` with an edit of the weights),
# or converted to an output path that cannot be a folder.
def official(converter: str, edit=None, output=lambda tmp_path: tmp_path / "out"):
    def make(tmp_path):
        source, arguments = write_official_source(converter, tmp_path / "official", edit)
        return [converter, str(source), str(output(tmp_path)), *arguments]

    return make


def set_key(key: str, value):
    """Replace the tensor `key` of a state dict by `value`, or by `value(tensor)` when callable."""

    def edit(state):
        state[key] = value(state[key]) if callable(value) else value

    return edit


def set_flax(path: str, value):
    """Replace the array at `path` ("a/b/c") of a Flax tree by `value`, or by `value(array)` when callable."""

    def edit(tree):
        *parents, name = path.split("/")
        for parent in parents:
            tree = tree[parent]
        tree[name] = value(tree[name]) if callable(value) else value

    return edit


def with_first_value(value: float):
    """A copy of an array or tensor whose first value is `value`."""

    def change(array):
        array = array.copy() if isinstance(array, np.ndarray) else array.clone()
        array.reshape(-1)[0] = value
        return array

    return change


SAVI_BIAS = "FrameEncoder_0/CNN_0/conv_0/bias"
STATM_KERNEL = "TimeSpaceTransformerBlock2_0/MultiHeadDotProductAttention_1/query/kernel"
CONVS5_KERNEL = "action_conv/Conv_0/kernel"
INT_DTYPE_RECORD = msgpack.ExtType(1, msgpack.packb(((2,), 5, b"\0" * 8), use_bin_type=True))


def chunked_without_shape(array):
    return {"__msgpack_chunked_array__": True, "chunks": {"0": array.reshape(-1)}}


def under_a_file(tmp_path):
    (tmp_path / "file.txt").write_text("mine")
    return tmp_path / "file.txt" / "out"


def dangling_link(tmp_path):
    (tmp_path / "link").symlink_to(tmp_path / "nowhere")
    return tmp_path / "link"


def looping_link(tmp_path):
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    return tmp_path / "loop"


def a_file(tmp_path):
    """A file where the command's `--output-dir {tmp}/out` points (and no further arguments)."""
    (tmp_path / "out").write_text("mine")
    return []


# Tiny runs: on a build that does not refuse the row, the command finishes in seconds (in the test's folder).
TRAIN = ("train", "--train-videos", "2", "--eval-videos", "1", "--batch-size", "1", "--num-frames", "2",
         "--image-size", "16", "--no-pictures", "--output-dir", "{tmp}/out")  # fmt: skip
CONVS5 = ("train", "--model", "convs5", "--image-size", "16", "--num-frames", "3", "--context-frames", "1",
          "--train-videos", "2", "--eval-videos", "1", "--batch-size", "1", "--output-dir", "{tmp}/out")  # fmt: skip
BENCHMARK = ("benchmark", "--entries", "slotssm-tiny", "--train-videos", "2", "--eval-videos", "1", "--batch-size",
             "1", "--num-frames", "2", "--image-size", "16", "--output-dir", "{tmp}/out")  # fmt: skip


TOOLING_CASES = [
    # Converters: weights holding NaN or inf, or complex values for real weights
    refused("convert-grootv-nan-weight",
            command(make=official("convert-grootv", set_key("head.bias", with_first_value(np.nan)))),
            r"NaN or infinite values \(classifier.bias\)"),
    refused("convert-grootv-inf-weight",
            command(make=official("convert-grootv", set_key("levels.0.blocks.0.TreeSSM.Ds", with_first_value(np.inf)))),
            r"NaN or infinite values \(grootv.levels.0.blocks.0.tree_ssm.Ds\)"),
    *[refused(f"{converter}-{name}-weight",
              command(make=official(converter, set_flax(key, with_first_value(value)))),
              "NaN or infinite values")
      for converter, key in (("convert-savi", SAVI_BIAS), ("convert-statm", STATM_KERNEL),
                             ("convert-convs5", CONVS5_KERNEL))
      for name, value in (("nan", np.nan), ("inf", np.inf))],
    *[refused(f"{converter}-complex64-array",
              command(make=official(converter, set_flax(key, lambda a: a.astype(np.complex64)))),
              f"{key}: expected a floating-point array, got a complex64 array")
      for converter, key in (("convert-savi", SAVI_BIAS), ("convert-statm", STATM_KERNEL),
                             ("convert-convs5", CONVS5_KERNEL))],
    # Converters: malformed checkpoints
    refused("convert-grootv-key-with-a-word-for-a-level",
            command(make=official("convert-grootv", set_key("levels.x.blocks.0.norm1.0.weight", torch.ones(16)))),
            r"levels\.x\.blocks\.0\.norm1\.0\.weight"),
    refused("convert-grootv-bare-level-key",
            command(make=official("convert-grootv", set_key("levels.0", torch.ones(1)))),
            r"'levels\.0'"),
    refused("convert-grootv-int64-weight",
            command(make=official("convert-grootv", set_key("head.weight", lambda t: t.long()))),
            r"wrong dtype: .*classifier.weight: torch.int64"),
    refused("convert-grootv-int32-weight",
            command(make=official("convert-grootv", set_key("patch_embed.conv1.weight", lambda t: t.int()))),
            r"wrong dtype: .*grootv.stem.conv1.weight: torch.int32"),
    refused("convert-grootv-0-d-stem-tensor",
            command(make=official("convert-grootv", set_key("patch_embed.conv2.weight", torch.tensor(1.0)))),
            r"patch_embed\.conv2\.weight"),
    refused("convert-savi-string-leaf", command(make=official("convert-savi", set_flax(SAVI_BIAS, "a string"))),
            SAVI_BIAS),
    refused("convert-savi-chunked-array-without-shape",
            command(make=official("convert-savi", set_flax(SAVI_BIAS, chunked_without_shape))),
            r"ckpt-1\.flax.*chunked array.*shape"),
    refused("convert-savi-record-with-an-int-dtype",
            command(make=official("convert-savi", set_flax(SAVI_BIAS, INT_DTYPE_RECORD))), r"ckpt-1\.flax.*dtype"),
    refused("convert-convs5-3-d-action-conv-kernel",
            command(make=official("convert-convs5", set_flax(CONVS5_KERNEL, lambda a: a[0]))), CONVS5_KERNEL),
    refused("convert-convs5-zero-width-action-conv-kernel",
            command(make=official("convert-convs5", set_flax(CONVS5_KERNEL, lambda a: a[..., :0]))), CONVS5_KERNEL),
    # Converters: outputs that cannot be a folder (a read-only location: /sys, where not even root makes folders)
    *[refused(f"{converter}-output-{name}", command(make=official(converter, output=output)), message)
      for converter in ("convert-grootv", "convert-convs5")
      for name, output, message in (
          ("under-a-file", under_a_file, "file.txt/out cannot be created: .*file.txt is a file, not a folder"),
          ("dangling-symlink", dangling_link, "link is a symbolic link"),
          ("self-looping-symlink", looping_link, "loop is a symbolic link"),
          ("read-only-location", lambda tmp_path: Path("/sys/slotssm-out"), "cannot read or write /sys/slotssm-out:"),
      )],
    # train and benchmark: flags that cannot work, refused while the arguments are read
    refused("train-steps-0", command(*TRAIN, "--steps", "0"),
            r"argument --steps: expected a positive integer, got '0'"),
    refused("train-steps-negative", command(*TRAIN, "--steps", "-1"), r"argument --steps: .* got '-1'"),
    refused("train-num-frames-0", command(*TRAIN, "--num-frames", "0"), r"argument --num-frames: .* got '0'"),
    refused("train-gradient-accumulation-steps-0", command(*TRAIN, "--gradient-accumulation-steps", "0"),
            r"argument --gradient-accumulation-steps: .* got '0'"),
    refused("train-eval-videos-0", command(*TRAIN, "--eval-videos", "0"), r"argument --eval-videos: .* got '0'"),
    refused("train-learning-rate-nan", command(*TRAIN, "--learning-rate", "nan"),
            r"argument --learning-rate: expected a finite number above 0, got 'nan'"),
    refused("train-image-size-8", command(*TRAIN, "--image-size", "8"),
            r"argument --image-size / --num-frames: slotssm tiny cannot be built with image_size=8, .*"
            r"decoder_initial_size must be a positive integer, got 0"),
    refused("train-override-without-value", command(*TRAIN, "--config-overrides", "num_slots"),
            r"argument --config-overrides: expected NAME=VALUE, got 'num_slots'"),
    refused("train-override-empty-item", command(*TRAIN, "--config-overrides", "num_slots=3,,use_ffn=true"),
            r"argument --config-overrides: expected NAME=VALUE, got ''"),
    refused("train-override-wrong-type", command(*TRAIN, "--config-overrides", "num_slots=abc"),
            r"argument --config-overrides: num_slots='abc': .*expected int, got str"),
    refused("train-override-misspelt-field", command(*TRAIN, "--config-overrides", "num_slotz=3"),
            r"argument --config-overrides: key num_slotz .*did you mean num_slots\?"),
    refused("train-output-dir-is-a-file", command(*TRAIN, make=a_file),
            r"argument --output-dir: .*out is a file, not a folder"),
    refused("train-convs5-steps-0", command(*CONVS5, "--steps", "0"), r"argument --steps: .* got '0'"),
    refused("train-convs5-batch-size-0", command(*CONVS5, "--batch-size", "0"), r"argument --batch-size: .* got '0'"),
    refused("train-convs5-context-as-long-as-the-clip", command(*CONVS5, "--context-frames", "3"),
            r"argument --context-frames: expected fewer than --num-frames \(3\), got 3"),
    refused("train-convs5-output-dir-is-a-file", command(*CONVS5, make=a_file), r"argument --output-dir: .*is a file"),
    refused("benchmark-steps-0", command(*BENCHMARK, "--steps", "0"), r"argument --steps: .* got '0'"),
    refused("benchmark-output-dir-is-a-file", command(*BENCHMARK, make=a_file), r"argument --output-dir: .*is a file"),
    refused("benchmark-image-size-8", command(*BENCHMARK, "--image-size", "8"),
            r"argument --image-size / --num-frames: slotssm tiny cannot be built"),
    # train: a run whose loss becomes NaN (at its second step) stops with one line, and writes no model
    BadInput("train-non-finite-loss", command(*TRAIN, "--steps", "2", "--learning-rate", "1e30"), run,
             check=stops_at_step_2_and_writes_no_model),
]  # fmt: skip


def test_case_ids_are_unique_across_the_tables():
    ids = [case.id for case in [*CASES, *TOOLING_CASES]]
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize("case", TOOLING_CASES, ids=lambda case: case.id)
def test_tooling_bad_input(case, tmp_path, monkeypatch):
    monkeypatch.delenv("RANK", raising=False)  # a command prints its error on process 0 only
    check_row(case, tmp_path)
