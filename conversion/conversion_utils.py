"""What every converter shares: the error they raise, key renaming by a strict ledger, the fit check against the
model built on the meta device, the guarded `torch.load`, sources on the Hub (`resolve_source`), the run's
configuration and what was guessed without it (`RunConfiguration`), the atomic write of the converted folder
(weights, processor, model card with the provenance, optional verification against an independent reference,
optional push with `slotssm-hf push`'s checks in one commit), and the command line, so the five
`slotssm-hf convert-<family>` commands take the same flags and fail the same way."""

import pickle
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..atomic_files import folder_path_problem, staged_folder
from ..cli import ArgumentParser, UsageError, report_error


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



def float_array(value, key: str) -> np.ndarray:
    """`value`, the leaf at `key` of an official parameter tree, as the real floating-point array every weight is;
    anything else (a string, a number, an integer or complex array) is refused naming the key."""
    if not isinstance(value, np.ndarray) or not np.issubdtype(value.dtype, np.floating):
        got = f"a {value.dtype} array" if isinstance(value, np.ndarray) else f"{type(value).__name__} {value!r:.80}"
        raise ConversionError(f"{key}: expected a floating-point array, got {got}")
    return value


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
    """Refuse, before anything is read or written, an output that is a symbolic link (dangling or not, it would be
    replaced by a folder), where no folder can be (`folder_path_problem`: a file there or on its path), or that is
    the source, lies inside it or holds it (a replaced output would take the official checkpoint with it)."""
    if output.is_symlink():
        raise ConversionError(f"{output} is a symbolic link; write the converted checkpoint to a plain folder path")
    problem = folder_path_problem(output, "checkpoint folder")
    if problem is not None:
        raise ConversionError(problem)
    source_path, output_path = source.resolve(), output.resolve()
    if output_path == source_path or source_path in output_path.parents or output_path in source_path.parents:
        raise ConversionError(
            f"the output {output} and the source {source} overlap (the same folder, or one inside the other); "
            "write the converted checkpoint to a folder outside the official one"
        )
    if output.exists() and not overwrite:
        raise ConversionError(f"{output} already exists; pass --overwrite to replace it")


def read_torch_file(path: Path, holds: str, safe_globals=()):
    """What the pickle at `path` holds, read with `torch.load(weights_only=True)`: tensors, containers and the
    `safe_globals` only. Anything whose loading would run code is refused, as is an unreadable file; `holds` says
    what the converter reads from such files, for the message."""
    import zipfile

    try:
        with open(path, "rb") as file:
            legacy = file.read(1) == b"\x80"  # torch.save's pre-1.6 format is a bare pickle
    except OSError as error:
        raise ConversionError(f"{path} is not a readable PyTorch file ({error})") from error
    if not legacy and not zipfile.is_zipfile(path):
        raise ConversionError(f"{path} is not a PyTorch file (torch.save writes a zip archive, this is not one)")
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


# --- where the official checkpoint comes from ---------------------------------------------------------------------


@dataclass(frozen=True)
class HubSource:
    """An official checkpoint read from a Hub model repo: the repo, the exact commit its files were read at, the file
    or folder within it ("" for the whole repo) and the license its card declares (None when it declares none)."""

    repo_id: str
    revision: str
    path_in_repo: str
    url: str
    declared_license: str | None

    def describe(self) -> str:
        what = f"`{self.path_in_repo}` of " if self.path_in_repo else ""
        declared = f", whose card declares the license `{self.declared_license}`" if self.declared_license else ""
        return f"{what}the Hub model repo [{self.repo_id}]({self.url}) at revision `{self.revision}`{declared}"


def hub_repo_and_path(source: str) -> tuple[str, str] | None:
    """(repo id, path in repo) when `source` reads as `namespace/name[/path/in/repo]`, else None."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    text = str(source)
    if text.startswith(("/", ".", "~")) or "\\" in text or "//" in text:
        return None
    parts = text.strip("/").split("/")
    if len(parts) < 2:
        return None
    try:
        validate_repo_id("/".join(parts[:2]))
    except HFValidationError:
        return None
    return "/".join(parts[:2]), "/".join(parts[2:])


def declared_license(repo_id: str, revision: str, token=None, endpoint=None) -> str | None:
    """The `license` of the repo's model card at `revision` (from the cache when offline), or None."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.repocard import metadata_load

    try:
        card = hf_hub_download(repo_id, "README.md", revision=revision, token=token, endpoint=endpoint)
        return (metadata_load(card) or {}).get("license")
    except Exception:  # no card, no metadata or unreachable: the provenance then says nothing of it
        return None


def resolve_source(source, revision: str | None = None, token=None, endpoint=None, log=print):
    """The local path of `source` and, for a Hub source, its `HubSource` (else None).

    A path that exists is read where it is. Otherwise `namespace/name[/path/in/repo]` is a Hub model repo: the file
    or folder (the whole repo without a path) is downloaded through huggingface_hub into its cache at `revision`
    (a branch, tag or commit; the default branch when None), honouring HF_HUB_OFFLINE; the commit actually read is
    recorded. Anything else is returned as it is, for the converter to report as missing."""
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    path = Path(source)
    hub = None if path.exists() or path.is_symlink() else hub_repo_and_path(source)
    if hub is None:
        if revision is not None:
            raise ConversionError(f"--revision {revision} pins a Hub source, and {source} is a local path")
        return path, None
    repo_id, path_in_repo = hub
    at = f" at revision {revision!r}" if revision else ""
    log(f"downloading {path_in_repo or 'every file'} of the Hub model repo {repo_id}{at}")
    patterns = [path_in_repo, f"{path_in_repo}/*"] if path_in_repo else None
    try:
        folder = Path(snapshot_download(repo_id, revision=revision, allow_patterns=patterns, token=token,
                                        endpoint=endpoint))  # fmt: skip
    except RevisionNotFoundError as error:
        raise ConversionError(f"the Hub model repo {repo_id} has no revision {revision!r}") from error
    except GatedRepoError as error:
        raise ConversionError(f"the Hub model repo {repo_id} is gated: accept its terms and log in") from error
    except RepositoryNotFoundError as error:
        raise ConversionError(
            f"{source} is neither a local file or folder nor a Hub model repo that can be read (no repo {repo_id}, "
            "or it is private: log in with `hf auth login` or set HF_TOKEN)"
        ) from error
    except LocalEntryNotFoundError as error:
        raise ConversionError(
            f"{source}{at} is not in the local Hub cache and the Hub cannot be reached (offline mode: "
            f"HF_HUB_OFFLINE={constants.HF_HUB_OFFLINE}): download it once online ({error})"
        ) from error
    except (HfHubHTTPError, OSError) as error:
        raise ConversionError(f"cannot download {source} from the Hub ({type(error).__name__}: {error})") from error
    sha = folder.name  # snapshot_download returns <cache>/snapshots/<commit sha>
    local = folder / path_in_repo if path_in_repo else folder
    if not local.exists():
        raise ConversionError(f"the Hub model repo {repo_id} has no file or folder {path_in_repo!r} at revision {sha}")
    base = (endpoint or constants.ENDPOINT).rstrip("/")
    origin = HubSource(repo_id, sha, path_in_repo, f"{base}/{repo_id}/tree/{sha}",
                       declared_license(repo_id, sha, token, endpoint))  # fmt: skip
    log(f"read {repo_id} at revision {sha}")
    return local, origin


# --- where the converted checkpoint goes ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Publication:
    """Where `--push-to-hub` publishes the converted checkpoint: the model repo (created when missing, `private`
    then), the commit message and whether to open a pull request instead of committing to main."""

    repo_id: str
    private: bool = False
    commit_message: str | None = None
    create_pr: bool = False


@dataclass(frozen=True)
class Conversion:
    """One conversion under way, as `start_conversion` set it up: the local source to read, where it came from (a
    `HubSource`, or None for a local one), the output folder, where to publish (a `Publication` or None) and the Hub
    to talk to (`token`, `endpoint`: None for the saved login / HF_TOKEN and HF_ENDPOINT)."""

    source: Path
    output: Path
    origin: HubSource | None
    publication: Publication | None
    token: str | bool | None
    endpoint: str | None
    log: object
    command: str = "convert"

    def config_path(self, config) -> Path | None:
        """The local path of the run's configuration `config` (None stays None): a local file, or a file of a Hub
        model repo (`namespace/name/path/in/repo`), downloaded at the same `--revision` when the checkpoint is read
        from that repo too."""
        if config is None:
            return None
        revision = self.origin.revision if self.origin and str(config).startswith(f"{self.origin.repo_id}/") else None
        path, _ = resolve_source(config, revision, self.token, self.endpoint, self.log)
        return path

    def source_description(self, name: str) -> str:
        """`name` (the file converted), with the Hub repo and revision it came from."""
        return f"`{name}`" + (f", from {self.origin.describe()}" if self.origin else "")

    def write(self, model, processor, provenance: str, verify=None, tolerance: float = 1e-4,
              allow_non_finite: bool = False, **card_fields) -> Path:  # fmt: skip
        """`write_converted` to the output, then (with a publication) the push of the complete folder."""
        return write_converted(model, self.output, processor, provenance, verify, tolerance, allow_non_finite,
                               self.log, publish=self.publish if self.publication else None,
                               **card_fields)  # fmt: skip

    def publish(self, folder: Path, allow_non_finite: bool):
        """Push the complete converted `folder` with `slotssm-hf push` (its checks, its card, one commit)."""
        from ..hub.push import PushError, push_to_hub

        publication = self.publication
        try:
            commit = push_to_hub(
                folder, publication.repo_id, private=publication.private, commit_message=publication.commit_message
                or f"Upload a checkpoint converted with slotssm-hf {self.command}", create_pr=publication.create_pr,
                token=self.token, endpoint=self.endpoint, allow_non_finite=allow_non_finite,
            )  # fmt: skip
        except PushError as error:
            raise ConversionError(f"the push to {publication.repo_id} failed: {error}") from error
        self.log(f"pushed to {publication.repo_id}: {commit.pr_url or commit.commit_url}")
        self.log(f'pin this version with from_pretrained("{publication.repo_id}", revision="{commit.oid}")')
        return commit


def start_conversion(source, output, overwrite: bool = False, revision: str | None = None,
                     push_to_hub: "Publication | str | None" = None, token=None, endpoint=None, log=print,
                     command: str = "convert") -> Conversion:  # fmt: skip
    """Everything a converter checks and fetches before it reads the checkpoint, in this order, so that what would
    fail late fails first: the publication's arguments (as `slotssm-hf push` checks them), the output path
    (`check_output_path`), then the source, downloaded from the Hub when it names a Hub repo (`resolve_source`)."""
    from ..hub.push import PushError, check_push_arguments

    publication = Publication(push_to_hub) if isinstance(push_to_hub, str) else push_to_hub
    if publication is not None:
        try:
            check_push_arguments(publication.repo_id, None, None, None)
        except PushError as error:
            raise ConversionError(f"--push-to-hub: {error}") from error
    output = Path(output)
    check_output_path(Path(source), output, overwrite)
    path, origin = resolve_source(source, revision, token, endpoint, log)
    if origin is not None:
        check_output_path(path, output, overwrite)
    return Conversion(path, output, origin, publication, token, endpoint, log, command)


def write_converted(model, output: Path, processor, provenance: str, verify=None, tolerance: float = 1e-4,
                    allow_non_finite: bool = False, log=print, publish=None, **card_fields) -> Path:  # fmt: skip
    """Write the converted `model`, its `processor` and a model card saying `provenance` to `output`: into a folder
    beside it that is renamed into place once complete, so a failure leaves nothing behind (callers check `output`
    first with `check_output_path`).

    `verify`: None, or (what it compares with, a function of the written folder giving the max abs difference),
    which fails the conversion above `tolerance`. Weights holding NaN or infinite values are refused unless
    `allow_non_finite`. `publish`: None, or a function of the complete, verified folder (and `allow_non_finite`)
    that publishes it before it is moved into place, so a failed push leaves nothing behind either. `card_fields` go
    to `render_model_card`."""
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
        if publish is not None:
            publish(staging, allow_non_finite)
    log(f"wrote {output}")
    return output


# --- the run's configuration ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunConfiguration:
    """What a converter knows of the official run's configuration: `values`, the configuration as the official code
    recorded it (plain nested dicts; None when none was given), `described` where it was read from, and `guessed`
    the official settings the weights cannot show that were assumed instead ({official field: assumed value})."""

    values: dict | None
    described: str | None
    guessed: dict

    def note(self) -> str:
        """The provenance's sentence on the configuration."""
        if self.values is not None and not self.guessed:
            return f"The architecture was read from the run's configuration ({self.described}) and checked against " \
                   "the weights."  # fmt: skip
        assumed = ", ".join(f"`{name}` = {value!r}" for name, value in self.guessed.items())
        if self.values is not None:
            return (f"The architecture was read from the run's configuration ({self.described}) and checked against "
                    f"the weights; it does not record {assumed}, which were assumed.")  # fmt: skip
        return (
            "No configuration of the official run was given (`--config`): the architecture was read from the weights' "
            f"shapes, and these settings, which the weights do not show, were assumed: {assumed}."
        )

    def log_to(self, log):
        if self.values is not None:
            log(f"configuration: {self.described}")
        if self.guessed:
            log("warning: " + ("the run's configuration does not record" if self.values is not None else
                               "no run configuration given (--config); guessed what the weights do not show:") + " " +
                ", ".join(f"{name}={value!r}" for name, value in self.guessed.items()) +
                " (--verify cannot check these: the reference assumes the same)")  # fmt: skip


def provenance_text(converted: str, command: str, weights_license: str, configuration: RunConfiguration) -> str:
    """The card's provenance paragraph: what was converted and from where (`converted`), by which command, the
    license of the weights, and how the configuration was known."""
    return f"Converted from {converted}, by `slotssm-hf {command}`. {weights_license} {configuration.note()}"


# --- the command line ------------------------------------------------------------------------------------------------


def error_message(error: BaseException) -> str:
    """One line for any failure: a ConversionError's own message; for anything else, what kind of failure it was."""
    if isinstance(error, (ConversionError, UsageError)):
        return str(error)
    if isinstance(error, OSError) and error.filename is not None:
        return f"cannot read or write {error.filename}: {error.strerror or error}"
    return f"the conversion failed ({type(error).__name__}: {error})"


def run_converter(argv, convert, command: str, description: str, source_help: str, reference: str,
                  config_help: str, add_arguments=None) -> int:  # fmt: skip
    """The command line of `slotssm-hf <command>`, the same for every family: SOURCE OUTPUT (SOURCE a local file
    or folder, or a Hub model repo `namespace/name[/path/in/repo]`), `--verify` (against the family's independent
    `reference`), `--overwrite`, `--allow-non-finite`, `--config` (the official run's configuration), `--revision`
    (of a Hub source), `--push-to-hub REPO_ID` with `--private`, `--commit-message`, `--create-pr`, and the
    family's own flags (`add_arguments(parser)`), passed by name to `convert`. Every failure is one `error:` line on
    stderr and exit status 2."""
    parser = ArgumentParser(prog=f"slotssm-hf {command}", description=description)
    parser.add_argument("source", help=f"{source_help}; or a Hub model repo, namespace/name[/path/in/repo]")
    parser.add_argument("output", help="folder to write the slotssm_hf checkpoint to")
    parser.add_argument("--verify", action="store_true", help=f"compare with {reference}; fail above 1e-4")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    parser.add_argument("--allow-non-finite", action="store_true",
                        help="convert (and publish) weights that hold NaN or infinite values")  # fmt: skip
    parser.add_argument("--config", default=None, metavar="PATH", help=config_help)
    parser.add_argument("--revision", default=None,
                        help="the branch, tag or commit of a Hub source (default: its main branch)")  # fmt: skip
    hub = parser.add_argument_group("publishing (what `slotssm-hf push` does, in the same command)")
    hub.add_argument("--push-to-hub", default=None, metavar="REPO_ID", help="publish the converted checkpoint as "
                     "this model repo (namespace/name) in one commit")  # fmt: skip
    hub.add_argument("--private", action="store_true", help="create the repo as private")
    hub.add_argument("--commit-message", default=None)
    hub.add_argument("--create-pr", action="store_true", help="open a pull request instead of committing to main")
    if add_arguments is not None:
        add_arguments(parser)
    try:
        arguments = vars(parser.parse_args(argv))
        repo_id = arguments.pop("push_to_hub")
        options = {name: arguments.pop(name) for name in ("private", "commit_message", "create_pr")}
        if repo_id is None and (options["private"] or options["commit_message"] is not None or options["create_pr"]):
            parser.error("--private, --commit-message and --create-pr apply to --push-to-hub REPO_ID")
        convert(push_to_hub=None if repo_id is None else Publication(repo_id, **options), **arguments)
    except Exception as error:  # one line, not a traceback, whatever went wrong
        return report_error(error_message(error))
    return 0
