"""The `slotssm-hf` command line: `slotssm-hf COMMAND [ARGS]`; `slotssm-hf COMMAND --help` for its arguments.

Also what the commands' own command lines share, so that they fail alike: a parser whose refusals are one line, the
argument types of counts, rates, output folders and NAME=VALUE overrides (each refusal names the flag), and the
report of a failure as one `error:` line with exit status 2."""

import argparse
import importlib
import json
import math
import os
import re
import sys
from pathlib import Path

from .atomic_files import folder_path_problem

# command: (`module` whose main(argv) runs it, or `module:function`; what it does)
COMMANDS = {
    "convert-slotssm": ("conversion.convert_slotssm", "convert a checkpoint trained with the official SlotSSM code"),
    "convert-official": ("conversion.convert_slotssm", "the former name of convert-slotssm"),
    "convert-savi": ("conversion.convert_savi", "convert a checkpoint of the official SAVi / SAVi++ code (Flax), without JAX"),
    "convert-statm": ("conversion.convert_statm", "convert a checkpoint of the official STATM-SAVi code (Flax), without JAX"),
    "convert-convs5": ("conversion.convert_convs5", "convert a checkpoint of the official ConvS5 code (non-commercial weights)"),
    "convert-grootv": ("conversion.convert_grootv", "convert a GrootV checkpoint (.pth) trained with the official GrootVL code"),
    "push": ("hub.push", "publish a saved checkpoint on the Hugging Face Hub in one commit, with a model card"),
    "train": ("training.train:command_line", "train a model of the zoo with the transformers Trainer (built-in data by default)"),
    "benchmark": ("training.leaderboard:command_line", "train every object-centric family on the same data and compare them in one table"),
    "evaluate": ("evaluation.evaluate", "evaluate a model with its paper's protocol; --update-card files the result"),
    "tfds-export": ("data.export", "copy a TFDS folder (e.g. MOVi from gsutil) to Arrow / Parquet for datasets, without TensorFlow"),
}


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] not in COMMANDS:
        asked = argv[:1] in (["-h"], ["--help"])
        listing = "\n".join(f"  {name:<18} {help}" for name, (_, help) in COMMANDS.items())
        print(f"usage: slotssm-hf COMMAND [ARGS]\n\ncommands:\n{listing}", file=sys.stdout if asked else sys.stderr)
        return 0 if asked else 2
    module, _, function = COMMANDS[argv[0]][0].partition(":")
    return getattr(importlib.import_module(f"{__package__}.{module}"), function or "main")(argv[1:])


class UsageError(ValueError):
    """A command line that cannot run as given; the message names the flag and what it expects."""


class ArgumentParser(argparse.ArgumentParser):
    """Refuses a command line it cannot parse with a `UsageError` rather than argparse's usage text and exit, so the
    command reports it as one `error:` line (exit status 2), like every other failure."""

    def error(self, message):
        raise UsageError(f"{message} (see {self.prog} --help)")


def _integer_from(text: str, minimum: int, expected: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or value < minimum:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
    return value


def positive_int(text: str) -> int:
    """The argparse type of a count that must be at least 1 (steps, frames, videos, a batch, an image size)."""
    return _integer_from(text, 1, "a positive integer")


def non_negative_int(text: str) -> int:
    """The argparse type of a count where 0 means none (e.g. evaluating every N steps, 0 for never)."""
    return _integer_from(text, 0, "a non-negative integer")


def positive_float(text: str) -> float:
    """The argparse type of a rate: a finite number above 0."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a finite number above 0, got {text!r}")
    return value


def output_folder(text: str) -> str:
    """The argparse type of a folder a command writes into (it may exist): refused when a file stands there or on
    its path, or it is a symbolic link to nothing (`atomic_files.folder_path_problem`)."""
    problem = folder_path_problem(Path(text), "folder")
    if problem is not None:
        raise argparse.ArgumentTypeError(problem)
    return text


def parse_override(text: str) -> tuple[str, object]:
    """NAME=VALUE from the command line, the value read as JSON where it parses (else kept as a string)."""
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    try:
        return name, json.loads(value)
    except ValueError:
        return name, value


def parse_overrides(text: str) -> list[tuple[str, object]]:
    """NAME=VALUE,NAME=VALUE,... (transformers' `--config_overrides` form), each read by `parse_override`."""
    return [parse_override(item) for item in text.split(",")]


def report_error(message: str) -> int:
    """Print `message` on stderr as one `error:` line (its line breaks folded); returns the exit status, 2."""
    print("error: " + re.sub(r"\s*\n\s*", " ", message.strip()), file=sys.stderr)
    return 2


def run_command(main, argv, reported: tuple[type[BaseException], ...]) -> int:
    """`main(argv)`, with a failure of the kinds `reported` (what the user gave cannot work, or the run cannot go
    on) reported as one `error:` line and exit status 2 instead of a traceback. In a multi-process launch (torchrun,
    accelerate: RANK set) process 0 alone prints it: every process stops with the same one (the same arguments and
    data; the non-finite loss guard stops all of them at the same step)."""
    try:
        return main(argv)
    except reported as error:
        return report_error(str(error)) if int(os.environ.get("RANK", "0")) == 0 else 2


if __name__ == "__main__":
    sys.exit(main())
