"""What every converter shares: the error they raise, key renaming by a strict ledger, the fit check against the
model built on the meta device, the guarded `torch.load`, the atomic write of the converted folder (weights,
processor, model card, optional verification against an independent reference), and the command line, so the five
`slotssm-hf convert-<family>` commands take the same flags and fail the same way."""

import argparse
import pickle
import re
import sys
from pathlib import Path

import torch

from ..atomic_files import staged_folder


class ConversionError(ValueError):
    """An official checkpoint that cannot be converted; the message names the field, key or file."""



def rename_keys(state_dict: dict, rules: list, prefix: str, name: str) -> dict:
    """Rename a state dict's keys by `rules` ((source key pattern, target key template, a list of templates for an
    even split along dim 0, or None to drop)), prefixing the targets; every key must match exactly one rule, and
    the error for those that do not lists them all."""
    converted, unknown = {}, []
    for key, tensor in state_dict.items():
        matches = [(re.fullmatch(pattern, key), target) for pattern, target in rules]
        matches = [(m, target) for m, target in matches if m]
        if len(matches) != 1:
            unknown.append(key)
            continue
        match, target = matches[0]
        if target is None:
            continue
        if isinstance(target, str):
            converted[prefix + target.format(*match.groups())] = tensor.clone()
            continue
        if tensor.shape[0] % len(target):
            raise ConversionError(f"{name}: {key} of shape {tuple(tensor.shape)} cannot split into {len(target)}")
        for part, template in zip(tensor.chunk(len(target)), target):
            converted[prefix + template.format(*match.groups())] = part.clone()
    if unknown:
        raise ConversionError(f"{name}: keys the official layout does not have: {sorted(unknown)}")
    return converted



def state_dict_problems(state: dict, model_class, config) -> list[str]:
    """What keeps `state` from loading strictly into `model_class(config)` (built on the meta device): the missing,
    unexpected and mis-shaped keys, and values of the wrong kind (an integer or complex array where the model holds
    real floating-point weights, which loading would keep as they are), each kind as one "kind: [keys]" entry; empty
    when it fits."""
    with torch.device("meta"):
        expected = model_class(config).state_dict()
    common = sorted(set(expected) & set(state))
    kinds = {
        "missing": sorted(set(expected) - set(state)),
        "unexpected": sorted(set(state) - set(expected)),
        "wrong shape": [
            f"{k}: {tuple(state[k].shape)} instead of {tuple(expected[k].shape)}"
            for k in common
            if state[k].shape != expected[k].shape
        ],
        "wrong dtype": [
            f"{k}: {state[k].dtype} instead of a real floating-point type"
            for k in common
            if expected[k].is_floating_point() and not state[k].is_floating_point()
        ],
    }
    return [f"{what}: {keys}" for what, keys in kinds.items() if keys]


def check_fits(state: dict, model_class, config):
    """Refuse a converted state dict that does not fit `model_class(config)`, listing every offending key."""
    problems = state_dict_problems(state, model_class, config)
    if problems:
        raise ConversionError("the official weights do not fit the converted config; " + "; ".join(problems))



def check_output_path(source: Path, output: Path, overwrite: bool):
    """Refuse, before anything is read or written, an output that is the source, lies inside it or holds it (a
    replaced output would take the official checkpoint with it), that is a file or a symbolic link (dangling or not,
    it would be replaced by a folder), or that cannot be created because a file stands where a folder on its path
    must be."""
    if output.is_symlink():
        raise ConversionError(f"{output} is a symbolic link; write the converted checkpoint to a plain folder path")
    blocking = next((parent for parent in output.parents if parent.exists() and not parent.is_dir()), None)
    if blocking is not None:
        raise ConversionError(f"{output} cannot be created: {blocking} is a file, not a folder")
    source_path, output_path = source.resolve(), output.resolve()
    if output_path == source_path or source_path in output_path.parents or output_path in source_path.parents:
        raise ConversionError(
            f"the output {output} and the source {source} overlap (the same folder, or one inside the other); "
            "write the converted checkpoint to a folder outside the official one"
        )
    if output.exists() and not output.is_dir():
        raise ConversionError(f"{output} is a file, not a checkpoint folder; it is never replaced: choose another one")
    if output.exists() and not overwrite:
        raise ConversionError(f"{output} already exists; pass --overwrite to replace it")


def read_torch_file(path: Path, holds: str, safe_globals=()):
    """What the pickle at `path` holds, read with `torch.load(weights_only=True)`: tensors, containers and the
    `safe_globals` only. Anything whose loading would run code is refused, as is an unreadable file; `holds` says
    what the converter reads from such files, for the message."""
    try:
        with torch.serialization.safe_globals(list(safe_globals)):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise ConversionError(
            f"{path} was refused: it holds more than tensors (loading it would run code); only {holds} are read "
            f"({error})"
        ) from error
    except Exception as error:
        raise ConversionError(f"{path} is not a readable PyTorch file ({error})") from error


def write_converted(model, output: Path, processor, provenance: str, verify=None, tolerance: float = 1e-4,
                    allow_non_finite: bool = False, log=print, **card_fields) -> Path:  # fmt: skip
    """Write the converted `model`, its `processor` and a model card saying `provenance` to `output`: into a folder
    beside it that is renamed into place once complete, so a failure leaves nothing behind (callers check `output`
    first with `check_output_path`).

    `verify`: None, or (what it compares with, a function of the written folder giving the max abs difference),
    which fails the conversion above `tolerance`. Weights holding NaN or infinite values are refused unless
    `allow_non_finite`. `card_fields` go to `render_model_card`."""
    from ..hub.model_card import render_model_card
    from ..hub.push import non_finite_weights, shortlist

    non_finite = non_finite_weights(model.state_dict().items())
    if non_finite and not allow_non_finite:
        raise ConversionError(
            f"the official weights hold NaN or infinite values ({shortlist(non_finite)}): the training run "
            "diverged before this checkpoint; convert an earlier one, or pass --allow-non-finite to convert it anyway"
        )
    with staged_folder(output, log) as staging:
        model.save_pretrained(staging)
        processor.save_pretrained(staging)
        render_model_card(model, output.name, provenance, has_processor=True, **card_fields).save(staging / "README.md")
        if verify is not None:
            reference, difference_of = verify
            difference = difference_of(staging)
            log(f"max abs difference against {reference}: {difference:.3g}")
            if not difference <= tolerance:
                raise ConversionError(f"verification failed: max abs difference {difference:.3g} > {tolerance:g}")
    log(f"wrote {output}")
    return output


def parse_override(text: str) -> tuple[str, object]:
    """NAME=VALUE from the command line, the value read as JSON where it parses (else kept as a string)."""
    import json

    name, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    try:
        return name, json.loads(value)
    except ValueError:
        return name, value


def run_converter(argv, convert, command: str, description: str, source_help: str, reference: str | None,
                  add_arguments=None) -> int:  # fmt: skip
    """The command line of `slotssm-hf <command>`: SOURCE OUTPUT, `--verify` (where the family has a `reference`
    to compare with), `--overwrite`, `--allow-non-finite` and the family's own flags (`add_arguments(parser)`),
    passed by name to `convert`. Every failure is one `error:` line on stderr: exit 2 for a checkpoint that cannot
    be converted, 1 for anything else."""
    parser = argparse.ArgumentParser(prog=f"slotssm-hf {command}", description=description)
    parser.add_argument("source", help=source_help)
    parser.add_argument("output", help="folder to write the slotssm_hf checkpoint to")
    if reference:
        parser.add_argument("--verify", action="store_true", help=f"compare with {reference}; fail above 1e-4")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    parser.add_argument("--allow-non-finite", action="store_true",
                        help="convert weights that hold NaN or infinite values")  # fmt: skip
    if add_arguments is not None:
        add_arguments(parser)
    try:
        convert(**vars(parser.parse_args(argv)))
    except ConversionError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except Exception as error:  # one line, not a traceback, whatever went wrong
        print(f"error: the conversion failed ({type(error).__name__}: {error})", file=sys.stderr)
        return 1
    return 0
