"""Publishing a saved checkpoint of any family on the Hugging Face Hub: `slotssm-hf push CHECKPOINT_DIR REPO_ID`.

A push is one commit holding the safetensors weights, `config.json`, the processor's config (when saved),
the model code that `trust_remote_code=True` runs, the train job's `eval_results.json` (when present) and a model
card generated for the repo (it replaces the folder's README.md, keeping the provenance paragraph of a card this
package rendered). The folder is checked completely before the first request to the Hub, and a commit is
atomic, so a refused folder or a failed push commits nothing.

Pulling needs nothing from this module: `AutoModel*.from_pretrained("org/name", revision=...)` and
`AutoVideoProcessor.from_pretrained("org/name")` load our repos, with this package installed or with
`trust_remote_code=True` without it.
"""

import argparse
import json
import sys
from pathlib import Path
from typing import NamedTuple

WEIGHTS = "model.safetensors"
CONFIG = "config.json"
# A saved processor's config: the video processors', and GrootV's image processor's.
PROCESSOR_CONFIGS = ("video_preprocessor_config.json", "preprocessor_config.json")
EVAL_RESULTS = "eval_results.json"
CARD = "README.md"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl")
# The Trainer pickles its arguments beside every model it saves: not weights, and never uploaded.
TRAINER_ARGUMENTS = "training_args.bin"
DEFAULT_PROVENANCE = "Published with `slotssm-hf push` from a folder written by `save_pretrained`."


class Checkpoint(NamedTuple):
    """A checked folder: `files` maps each path in the repo to its local file (everything but the card), `model` is
    the model config.json builds, on the meta device, `eval_results` the parsed eval_results.json (or None)."""

    files: dict[str, Path]
    model: object
    eval_results: dict | None
    has_processor: bool


class PushError(Exception):
    """A folder that cannot be published, or a Hub that refused or could not take the push; the message names the
    problem. Nothing was committed."""


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError as error:
        raise PushError(f"{path.parent} has no {path.name}; save the model with save_pretrained") from error
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise PushError(f"{path} is not readable JSON ({error})") from error


def shortlist(names, limit: int = 8) -> str:
    names = sorted(names)
    return ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")


def model_from_config(folder: Path, config_dict: dict):
    """The model class `config.json` names, built on the meta device (no memory, no initialisation)."""
    import torch
    from huggingface_hub.errors import StrictDataclassError

    from ..registry import FAMILIES, load

    family = FAMILIES.get(config_dict.get("model_type"))
    if family is None:
        raise PushError(
            f"{folder / CONFIG} is for model_type {config_dict.get('model_type')!r}, not one of this package's "
            f"families ({', '.join(FAMILIES)})"
        )
    config_class = family.config_class
    try:
        config = config_class.from_dict(config_dict)
    except (StrictDataclassError, ValueError, TypeError) as error:
        raise PushError(f"{folder / CONFIG} is not a valid {config_class.__name__}: {error}") from error
    architectures = config.architectures or []
    heads = {head.class_name: head for head in family.heads}
    if len(architectures) != 1 or architectures[0] not in heads:
        raise PushError(
            f"{folder / CONFIG} names architectures {architectures}; expected one {family.model_type} model class "
            f"({', '.join(heads)})"
        )
    with torch.device("meta"):
        return load(heads[architectures[0]].class_path)(config)


def check_weights(folder: Path, model):
    """Refuse weights whose tensor names or shapes differ from what `model` (built from config.json) holds; only the
    safetensors header is read."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(folder / WEIGHTS, framework="pt") as weights:
            found = {name: tuple(weights.get_slice(name).get_shape()) for name in weights.keys()}
    except (OSError, SafetensorError) as error:
        raise PushError(f"{folder / WEIGHTS} is not a readable safetensors file ({error})") from error
    expected = {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}
    missing, unexpected = expected.keys() - found.keys(), found.keys() - expected.keys()
    mismatched = [
        f"{name} {found[name]} (config: {expected[name]})"
        for name in sorted(expected.keys() & found.keys())
        if found[name] != expected[name]
    ]
    if missing or unexpected or mismatched:
        problems = [
            f"{label}: {shortlist(names)}"
            for label, names in (("missing", missing), ("unexpected", unexpected), ("wrong shape", mismatched))
            if names
        ]
        raise PushError(f"{folder / WEIGHTS} does not match {CONFIG} ({type(model).__name__}): " + "; ".join(problems))


def non_finite_weights(named_tensors) -> list[str]:
    """The names of the floating-point tensors among `named_tensors` ((name, tensor) pairs) that hold NaN or inf."""
    import torch

    return [name for name, tensor in named_tensors if tensor.is_floating_point() and not torch.isfinite(tensor).all()]


def check_finite_weights(folder: Path):
    """Refuse weights holding NaN or infinite values (a diverged run); reads one tensor at a time."""
    from safetensors import safe_open

    with safe_open(folder / WEIGHTS, framework="pt") as weights:
        non_finite = non_finite_weights((name, weights.get_tensor(name)) for name in weights.keys())
    if non_finite:
        raise PushError(
            f"{folder / WEIGHTS} holds NaN or infinite values ({shortlist(non_finite)}): the training run diverged; "
            "publish an earlier checkpoint, or pass --allow-non-finite to publish it anyway"
        )


# Characters git refuses in branch names (git check-ref-format); Hub branches are git branches.
INVALID_BRANCH_CHARACTERS = set(" ~^:?*[\\\x7f") | {chr(c) for c in range(32)}


def check_push_arguments(repo_id: str, revision: str | None, datasets, base_model):
    """Refuse, before any request, arguments the Hub would reject only after the repo was created."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    ids = [("repo id", repo_id), *(("dataset id", name) for name in datasets or []), ("base model id", base_model)]
    for what, hub_id in ids:
        try:
            if hub_id is not None:
                validate_repo_id(hub_id)
        except HFValidationError as error:
            raise PushError(f"{hub_id!r} is not a valid {what}: {error}") from error
    if "/" not in repo_id:  # the card tells readers to load "namespace/name"
        raise PushError(f"repo id {repo_id!r} needs a namespace: namespace/name")
    if revision is not None and not revision.startswith("refs/pr/"):
        parts = revision.split("/")
        if (
            INVALID_BRANCH_CHARACTERS & set(revision)
            or any(not part or part.startswith(".") or part.endswith(".lock") for part in parts)
            or ".." in revision
            or "@{" in revision
            or revision.startswith("-")
        ):
            raise PushError(f"--revision {revision!r} is not a valid branch name")


def model_code_files(folder: Path, auto_maps) -> list[str]:
    """The .py files `trust_remote_code` runs: the modules the auto_maps name and, transitively, their relative
    imports; each must be in `folder`."""
    from transformers.dynamic_module_utils import get_relative_imports

    pending = sorted({f"{reference.split('.')[0]}.py" for auto_map in auto_maps for reference in auto_map.values()})
    found = []
    while pending:  # each file is read once, so this ends after at most as many rounds as there are .py files
        name = pending.pop()
        if name in found:
            continue
        if not (folder / name).is_file():
            raise PushError(
                f"{folder} has no {name}, which the model code needs for trust_remote_code=True; save the model with "
                "save_pretrained from slotssm_hf, which writes the code beside the weights"
            )
        found.append(name)
        pending.extend(f"{module}.py" for module in get_relative_imports(folder / name))
    return sorted(found)


def checked_checkpoint(folder, allow_non_finite: bool = False) -> Checkpoint:
    """Check that `folder` is a publishable checkpoint of the zoo and gather what a push needs. Raises PushError naming
    the first problem: pickle files, missing or unreadable files, weights that do not fit the config or (unless
    `allow_non_finite`) hold NaN or inf, missing model code."""
    folder = Path(folder)
    if not folder.is_dir():
        raise PushError(f"{folder} is not a folder")
    pickles = [p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES and p.name != TRAINER_ARGUMENTS]
    if pickles:
        raise PushError(
            f"{folder} holds pickle files ({shortlist(pickles)}); only safetensors weights are published, since "
            "loading a pickle can run arbitrary code. Re-save the model with save_pretrained and remove them"
        )
    if not (folder / WEIGHTS).is_file():
        raise PushError(f"{folder} has no {WEIGHTS}; save the model with save_pretrained (one safetensors file)")
    config_dict = read_json(folder / CONFIG)
    model = model_from_config(folder, config_dict)
    check_weights(folder, model)
    if not allow_non_finite:
        check_finite_weights(folder)
    if not config_dict.get("auto_map"):
        raise PushError(f"{folder / CONFIG} has no auto_map, so the repo would not load with trust_remote_code=True")
    files = {CONFIG: folder / CONFIG, WEIGHTS: folder / WEIGHTS}
    auto_maps = [config_dict["auto_map"]]
    processor_configs = [name for name in PROCESSOR_CONFIGS if (folder / name).is_file()]
    for name in processor_configs:
        auto_maps.append(read_json(folder / name).get("auto_map") or {})
        files[name] = folder / name
    files.update({name: folder / name for name in model_code_files(folder, auto_maps)})
    eval_results = None
    if (folder / EVAL_RESULTS).is_file():
        eval_results = read_json(folder / EVAL_RESULTS)
        files[EVAL_RESULTS] = folder / EVAL_RESULTS
    return Checkpoint(files, model, eval_results, bool(processor_configs))


def model_card_for(folder, repo_id: str, checkpoint: Checkpoint, datasets=None, base_model=None):
    """The card published with `checkpoint` (from `checked_checkpoint`); keeps the provenance paragraph of a card
    that `slotssm-hf train` or a converter already wrote into the folder."""
    from .model_card import provenance_of, render_model_card

    existing = Path(folder) / CARD
    provenance = provenance_of(existing.read_text(errors="replace")) if existing.is_file() else None
    return render_model_card(
        checkpoint.model,
        repo_id,
        provenance or DEFAULT_PROVENANCE,
        datasets=datasets,
        base_model=base_model,
        eval_results=checkpoint.eval_results,
        has_processor=checkpoint.has_processor,
    )


def push_to_hub(folder, repo_id: str, private: bool = False, revision: str | None = None,
                commit_message: str | None = None, create_pr: bool = False, token: str | bool | None = None,
                datasets=None, base_model: str | None = None, endpoint: str | None = None,
                allow_non_finite: bool = False):  # fmt: skip
    """Publish the checkpoint saved in `folder` as the model repo `repo_id` ("namespace/name") in one commit.

    The repo is created when missing (`private` applies then); `revision` names a branch, created from main when
    missing; `create_pr` opens a pull request instead of committing to the branch. `token` defaults to the saved
    login or HF_TOKEN; `endpoint` to HF_ENDPOINT or huggingface.co. `datasets` and `base_model` (Hub ids) go into
    the card's metadata. Weights holding NaN or inf are refused unless `allow_non_finite`.

    Returns huggingface_hub's CommitInfo: `.oid` is the commit sha to pin with `revision=`, `.commit_url`, and
    `.pr_url` for a pull request. Raises PushError, before any request, for a folder or arguments that cannot be
    published; before the repo is created, for a revision the commit needs that the repo lacks; and for a Hub that
    refuses the credentials or cannot be reached.
    """
    from huggingface_hub import CommitOperationAdd, HfApi
    from huggingface_hub.errors import HfHubHTTPError
    from huggingface_hub.utils import httpx

    check_push_arguments(repo_id, revision, datasets, base_model)
    checkpoint = checked_checkpoint(folder, allow_non_finite=allow_non_finite)
    card = model_card_for(folder, repo_id, checkpoint, datasets=datasets, base_model=base_model)
    operations = [CommitOperationAdd(name, str(path)) for name, path in checkpoint.files.items()]
    operations.append(CommitOperationAdd(CARD, str(card).encode()))
    message = commit_message or f"Upload {type(checkpoint.model).__name__} with slotssm-hf push"

    api = HfApi(endpoint=endpoint, token=token)
    try:
        # A pull request (new, or one given as refs/pr/N) needs its target to exist already: check with read-only
        # requests, so that a push that cannot commit never creates the repo.
        needed = revision if revision is not None and (create_pr or revision.startswith("refs/pr/")) else None
        if needed is not None and not (api.repo_exists(repo_id) and api.revision_exists(repo_id, needed)):
            raise PushError(f"{repo_id} has no revision {needed!r} to commit to; nothing was created or committed")
        api.create_repo(repo_id, private=private, exist_ok=True)
        if revision not in (None, "main") and not create_pr and not revision.startswith("refs/pr/"):
            api.create_branch(repo_id, branch=revision, exist_ok=True)
        return api.create_commit(repo_id, operations, commit_message=message, revision=revision, create_pr=create_pr)
    except HfHubHTTPError as error:
        status = error.response.status_code if error.response is not None else None
        if status == 401:
            raise PushError(
                f"the Hub at {api.endpoint} did not accept the credentials (401: {error.server_message or error}); "
                "log in with `hf auth login` or set HF_TOKEN to a token with write access. Nothing was committed"
            ) from error
        raise PushError(f"the Hub at {api.endpoint} refused the push to {repo_id}: {error}") from error
    except httpx.TransportError as error:
        raise PushError(
            f"cannot reach the Hub at {api.endpoint} ({type(error).__name__}: {error}); check the network and "
            "HF_ENDPOINT. Nothing was committed"
        ) from error


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="slotssm-hf push",
        description="Publish a saved checkpoint of the zoo (weights, config, processor, model code and a generated model "
        "card) on the Hugging Face Hub in one commit. Log in first with `hf auth login`, or set HF_TOKEN.",
    )
    parser.add_argument(
        "checkpoint_dir", help="a folder written by save_pretrained, slotssm-hf train or a converter"
    )
    parser.add_argument("repo_id", help="the model repo, namespace/name; created when missing")
    parser.add_argument(
        "--private", action="store_true", help="create the repo as private (an existing repo keeps its visibility)"
    )
    parser.add_argument("--revision", default=None, help="the branch to commit to (created from main when missing)")
    parser.add_argument("--commit-message", default=None)
    parser.add_argument("--create-pr", action="store_true", help="open a pull request instead of committing directly")
    parser.add_argument("--dataset", action="append", default=None, help="a Hub dataset id for the card (repeatable)")
    parser.add_argument("--base-model", default=None, help="the Hub id of the model this one was fine-tuned from")
    parser.add_argument(
        "--allow-non-finite", action="store_true", help="publish weights that hold NaN or infinite values"
    )
    args = parser.parse_args(argv)
    try:
        commit = push_to_hub(
            args.checkpoint_dir,
            args.repo_id,
            private=args.private,
            revision=args.revision,
            commit_message=args.commit_message,
            create_pr=args.create_pr,
            datasets=args.dataset,
            base_model=args.base_model,
            allow_non_finite=args.allow_non_finite,
        )
    except PushError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"pushed {args.checkpoint_dir} to {args.repo_id}: {commit.pr_url or commit.commit_url}")
    print(f'pin this version with from_pretrained("{args.repo_id}", revision="{commit.oid}")')
    return 0


if __name__ == "__main__":
    sys.exit(main())
