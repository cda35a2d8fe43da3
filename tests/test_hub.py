"""Hub push and pull end to end against a loopback stand-in for the Hub (tests/utils/hub_stand_in.py, 127.0.0.1 only):
`slotssm-hf push` makes one commit; fresh processes pull it with and without the package, pin an earlier commit,
and reload it offline from the cache once the server has stopped. Folders that must not be published are refused
before any request, and credentials, endpoints and repos that fail give clear errors."""

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from hub_stand_in import HubStandIn
from huggingface_hub import HfApi, ModelCard
from huggingface_hub.errors import RepositoryNotFoundError
from slotssm_checkpoints import OFFICIAL_VARIANTS, official_configs, write_official_checkpoint
from slotssm_inputs import tiny_config

from slotssm_hf import SlotSSMForVideoClassification, SlotSSMForVideoReconstruction, SlotSSMVideoProcessor
from slotssm_hf.cli import main as cli
from slotssm_hf.conversion.convert_slotssm import convert_checkpoint
from slotssm_hf.hub.push import PushError, checked_checkpoint, model_card_for, push_to_hub

TOKEN, USER = "hf_stand_in_write_token", "tester"
REPO = f"{USER}/tiny-slotssm"
SUBPROCESS_TIMEOUT_S = 120


def eval_results(loss, fg_ari, miou):
    """What `slotssm-hf train` writes to eval_results.json (Trainer.evaluate before and after training)."""
    return {
        "untrained": {"untrained_loss": 1.5, "untrained_fg_ari": 0.05, "untrained_miou": 0.1, "untrained_runtime": 2.0},
        "trained": {"eval_loss": loss, "eval_fg_ari": fg_ari, "eval_miou": miou, "eval_runtime": 1.0,
                    "eval_samples_per_second": 4.0, "eval_steps_per_second": 2.0, "epoch": 3.0},
    }  # fmt: skip


def save_checkpoint(folder: Path, seed: int, num_frames: int, results: dict) -> SlotSSMForVideoReconstruction:
    """A tiny trained-job output: seeded weights, a video processor, eval_results.json and the Trainer's pickled
    arguments (which a push leaves behind)."""
    torch.manual_seed(seed)
    model = SlotSSMForVideoReconstruction(tiny_config()).eval()
    model.save_pretrained(folder)
    SlotSSMVideoProcessor(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}, num_frames=num_frames
    ).save_pretrained(folder)
    (folder / "eval_results.json").write_text(json.dumps(results))
    torch.save({"learning_rate": 1e-4}, folder / "training_args.bin")
    return model


def hub_environment(home: Path, endpoint: str, **extra) -> dict:
    """A subprocess environment that talks to `endpoint` only, with its own cache and no credentials but `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING_FACE_", "TRANSFORMERS_"))}
    return {**env, "HF_HOME": str(home), "HF_ENDPOINT": endpoint, "HF_HUB_DISABLE_XET": "1",
            "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1", **extra}  # fmt: skip


def run_in_parallel(*jobs: tuple[str, dict, Path, dict]) -> list[dict]:
    """Run each (script, env, cwd, arguments) in its own fresh interpreter, all at once, with `arguments` as JSON in
    sys.argv[1]; each prints a JSON report as its last line. Returns the reports in order."""
    processes = [
        subprocess.Popen([sys.executable, "-c", script, json.dumps(arguments)], env=env, cwd=cwd, text=True,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for script, env, cwd, arguments in jobs
    ]  # fmt: skip
    try:
        outputs = [process.communicate(timeout=SUBPROCESS_TIMEOUT_S) for process in processes]
    finally:
        for process in processes:  # only after a timeout or an error is any of them still running
            if process.poll() is None:
                process.kill()
                process.wait()
    for process, (stdout, stderr) in zip(processes, outputs):
        assert process.returncode == 0, stderr[-4000:]
    return [json.loads(stdout.strip().splitlines()[-1]) for stdout, _ in outputs]


# The pull side: transformers' Auto classes on a repo id, the way a user loads a published model. With "remote",
# any import of slotssm_hf fails, so only the code stored in the repo can run.
PULL = """
import json, sys
arguments = json.loads(sys.argv[1])
if arguments["remote"]:
    sys.modules["slotssm_hf"] = None
else:
    import slotssm_hf
import torch
from transformers import AutoModel, AutoModelForPreTraining, AutoVideoProcessor

repo, first = arguments["repo"], arguments["first"]
options = {"trust_remote_code": True} if arguments["remote"] else {}
expected = torch.load(arguments["io"])

def difference(model, key):
    with torch.no_grad():
        return (model.eval()(expected["frames"]).reconstruction - expected[key]).abs().max().item()

def error_of(load):
    try:
        load()
    except Exception as error:
        return f"{type(error).__name__}: {error}"

main = AutoModelForPreTraining.from_pretrained(repo, **options)
pinned = AutoModelForPreTraining.from_pretrained(repo, revision=first, **options)
backbone = AutoModel.from_pretrained(repo, **options)
processor = AutoVideoProcessor.from_pretrained(repo, **options)
pinned_processor = AutoVideoProcessor.from_pretrained(repo, revision=first, **options)
report = {
    "model_module": type(main).__module__, "model": type(main).__name__, "backbone": type(backbone).__name__,
    "processor_module": type(processor).__module__, "processor": type(processor).__name__,
    "main_vs_second": difference(main, "second"), "pinned_vs_first": difference(pinned, "first"),
    "num_frames": [processor.num_frames, pinned_processor.num_frames],
    "slotssm_hf_imported": sys.modules.get("slotssm_hf") is not None,
}
if arguments["errors"]:
    report["missing_repo"] = error_of(lambda: AutoModel.from_pretrained(arguments["missing"], **options))
    report["missing_revision"] = error_of(lambda: AutoModel.from_pretrained(repo, revision="0" * 40, **options))
print(json.dumps(report))
"""


def pull(published, home: str, remote: bool, errors: bool = False, **environment) -> tuple:
    """A job for `run_in_parallel`: PULL with its cache in `home` under the fixture's folder."""
    arguments = {"remote": remote, "errors": errors, "repo": REPO, "first": published.first_sha,
                 "io": str(published.io), "missing": f"{USER}/no-such-model"}  # fmt: skip
    env = hub_environment(published.root / home, published.endpoint, **environment)
    return PULL, env, published.root, arguments


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    """Two pushes of a tiny checkpoint to REPO (the first through the CLI, the second, with new weights, processor
    settings and metrics, through `push_to_hub`), a converted official checkpoint pushed to its own repo, and pulls
    in fresh processes with and without the package; the stand-in is stopped before the tests look at the results."""
    root = tmp_path_factory.mktemp("hub")
    first = save_checkpoint(root / "first", seed=1, num_frames=4, results=eval_results(0.5, 0.3, 0.2))
    second = save_checkpoint(root / "second", seed=2, num_frames=6, results=eval_results(0.25, 0.6, 0.4))
    frames = torch.randn(1, 3, 3, 32, 32)
    with torch.no_grad():
        io = {"frames": frames, "first": first(frames).reconstruction, "second": second(frames).reconstruction}
    torch.save(io, root / "io.pt")
    step = root / "official" / "checkpoint_step_10"
    write_official_checkpoint(step, official_configs(**OFFICIAL_VARIANTS["cnn-encoder-spatial-broadcast-x8"]))
    convert_checkpoint(step, root / "converted", log=lambda message: None)

    with HubStandIn({TOKEN: USER}) as hub:
        published = SimpleNamespace(hub=hub, root=root, io=root / "io.pt", endpoint=hub.endpoint)
        push = subprocess.run(
            [sys.executable, "-m", "slotssm_hf.cli", "push", str(root / "first"), REPO],
            env=hub_environment(root / "push-home", hub.endpoint, HF_TOKEN=TOKEN), cwd=root,
            capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT_S,
        )  # fmt: skip
        assert push.returncode == 0, push.stderr[-4000:]
        published.cli_output = push.stdout
        published.first_sha = re.search(r'revision="([0-9a-f]{40})"', push.stdout).group(1)
        published.second = push_to_hub(root / "second", REPO, token=TOKEN, endpoint=hub.endpoint,
                                       commit_message="Second training run")  # fmt: skip
        published.converted = push_to_hub(root / "converted", f"{USER}/converted", token=TOKEN, endpoint=hub.endpoint)
        published.with_package, published.without_package = run_in_parallel(
            pull(published, "home", remote=False, errors=True), pull(published, "remote-home", remote=True)
        )
    return published


@pytest.fixture(scope="module")
def offline(published):
    """Reloads, with HF_HUB_OFFLINE=1, from the caches the pulls filled, once the stand-in has stopped."""
    package, remote_code = run_in_parallel(
        pull(published, "home", remote=False, HF_HUB_OFFLINE="1"),
        pull(published, "remote-home", remote=True, HF_HUB_OFFLINE="1"),
    )
    return {"package": package, "remote-code": remote_code}


def files_at(published, repo_id: str, sha: str) -> dict[str, bytes]:
    return published.hub.repos[repo_id].commits[sha]


def test_cli_push_commits_weights_config_processor_code_metrics_and_card_at_once(published):
    repo = published.hub.repos[REPO]
    creation = next(iter(repo.commits))
    assert list(repo.commits) == [creation, published.first_sha, published.second.oid]  # one commit per push
    assert repo.messages[published.first_sha] == "Upload SlotSSMForVideoReconstruction with slotssm-hf push"
    files = files_at(published, REPO, published.first_sha)
    code = {path.name for path in (published.root / "first").glob("*.py")}  # what save_pretrained wrote
    assert {"modeling_slotssm.py", "video_processing_slotssm.py"} <= code
    assert set(files) == {".gitattributes", "README.md", "config.json", "model.safetensors",
                          "video_preprocessor_config.json", "eval_results.json", *code}  # fmt: skip
    assert files["model.safetensors"] == (published.root / "first" / "model.safetensors").read_bytes()
    assert f"pushed {published.root / 'first'} to {REPO}" in published.cli_output


def test_each_push_is_one_commit_request(published):
    commits = [path for method, path in published.hub.requests if "/commit/" in path]
    assert commits == [f"/api/models/{REPO}/commit/main"] * 2 + [f"/api/models/{USER}/converted/commit/main"]


def test_second_push_moves_main_and_keeps_the_first_commit(published):
    repo = published.hub.repos[REPO]
    creation = next(iter(repo.commits))
    assert repo.refs["main"] == published.second.oid != published.first_sha
    assert repo.messages[published.second.oid] == "Second training run"
    first, second = (files_at(published, REPO, sha)["model.safetensors"] for sha in repo.commits if sha != creation)
    assert first != second


def test_pushed_card_metadata_parses_and_holds_the_metrics(published):
    card = ModelCard(files_at(published, REPO, published.second.oid)["README.md"].decode())
    data = card.data
    assert data.library_name == "transformers" and data.license == "mit" and "slotssm" in data.tags
    assert data.pipeline_tag is None  # the reconstruction head has no transformers pipeline
    metrics = {result.metric_type: result.metric_value for result in data.eval_results}
    assert metrics == {"loss": 0.25, "fg_ari": 0.6, "miou": 0.4}  # the trained model's, without timings
    assert {result.task_type for result in data.eval_results} == {"other"}
    assert f'from_pretrained("{REPO}"' in card.text and "trust_remote_code=True" in card.text
    assert "AutoVideoProcessor" in card.text and "Slot State Space Models" in card.text
    assert "| FG-ARI | 0.05 | 0.6 |" in card.text  # before and after training


def test_pull_with_the_package_loads_head_backbone_and_processor(published):
    report = published.with_package
    assert (report["model_module"], report["model"]) == ("slotssm_hf.models.modeling_slotssm", "SlotSSMForVideoReconstruction")
    assert report["backbone"] == "SlotSSMModel" and report["processor"] == "SlotSSMVideoProcessor"
    assert report["main_vs_second"] == 0.0


def test_pull_pins_the_first_commit_by_its_sha(published):
    assert published.with_package["pinned_vs_first"] == 0.0
    assert published.with_package["num_frames"] == [6, 4]  # main has the second processor, the first commit its own


def test_pull_without_the_package_runs_the_code_stored_in_the_repo(published):
    report = published.without_package
    assert not report["slotssm_hf_imported"]
    assert report["model"] == "SlotSSMForVideoReconstruction"
    assert report["model_module"].startswith("transformers_modules.")
    assert report["processor_module"].startswith("transformers_modules.")
    assert report["main_vs_second"] == 0.0 and report["pinned_vs_first"] == 0.0
    assert report["num_frames"] == [6, 4]


def test_server_is_stopped_before_the_results_are_checked(published):
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", int(published.endpoint.rsplit(":", 1)[1])), timeout=1).close()


@pytest.mark.parametrize("kind", ["package", "remote-code"])
def test_offline_reload_from_the_cache_after_the_server_stopped(offline, kind):
    report = offline[kind]
    assert report["main_vs_second"] == 0.0 and report["pinned_vs_first"] == 0.0 and report["num_frames"] == [6, 4]
    assert report["slotssm_hf_imported"] == (kind == "package")


def test_pull_of_a_missing_repo_or_revision_names_it(published):
    missing_repo = published.with_package["missing_repo"]
    assert f"{USER}/no-such-model is not a local folder and is not a valid model identifier" in missing_repo
    assert f"{'0' * 40} is not a valid git identifier" in published.with_package["missing_revision"]


def test_converted_official_checkpoint_pushes_with_the_same_command(published):
    files = files_at(published, f"{USER}/converted", published.converted.oid)
    assert {"config.json", "model.safetensors", "README.md", "configuration_slotssm.py", "modeling_slotssm.py",
            "mamba_mixers.py", "mamba_scans.py", "video_preprocessor_config.json"} <= set(files)  # fmt: skip
    assert "video_processing_slotssm.py" in files  # the processor the converter writes ships with its code
    card = ModelCard(files["README.md"].decode())
    assert "Converted from a checkpoint trained with the official SlotSSM code" in card.text  # kept from the folder
    assert f'from_pretrained("{USER}/converted"' in card.text and card.data.eval_results is None


def test_classifier_card_carries_the_video_classification_pipeline_tag(tmp_path):
    SlotSSMForVideoClassification(tiny_config(num_labels=3)).save_pretrained(tmp_path)
    checkpoint = checked_checkpoint(tmp_path)
    card = model_card_for(tmp_path, REPO, checkpoint, datasets=["org/videos"], base_model="org/slotssm-base")
    data = ModelCard(str(card)).data
    assert data.pipeline_tag == "video-classification"
    assert data.datasets == ["org/videos"] and data.base_model == "org/slotssm-base"
    assert "AutoModelForVideoClassification" in card.text


@pytest.fixture()
def checkpoint(tmp_path):
    save_checkpoint(tmp_path / "checkpoint", seed=0, num_frames=4, results=eval_results(0.5, 0.3, 0.2))
    return tmp_path / "checkpoint"


@pytest.mark.parametrize("name", ["pytorch_model.bin", "weights.pt", "model.pth", "state.pkl"])
def test_pickle_weights_are_refused_before_any_request(checkpoint, name):
    torch.save({}, checkpoint / name)
    with HubStandIn({TOKEN: USER}) as hub, pytest.raises(PushError, match=f"pickle files \\({name}\\)"):
        push_to_hub(checkpoint, REPO, token=TOKEN, endpoint=hub.endpoint)
    assert hub.requests == []


@pytest.mark.parametrize(
    "change, problem",
    [
        ({"hidden_size": 32}, "wrong shape: .*initial_slots"),
        ({"architectures": ["SlotSSMModel"]}, "unexpected: decoder."),
        ({"architectures": ["SlotSSMForVideoClassification"], "num_labels": 3}, "missing: classifier."),
    ],
)
def test_config_that_does_not_match_the_weights_is_refused_before_any_request(checkpoint, change, problem):
    config = json.loads((checkpoint / "config.json").read_text())
    (checkpoint / "config.json").write_text(json.dumps({**config, **change}))
    with HubStandIn({TOKEN: USER}) as hub, pytest.raises(PushError, match=f"does not match config.json .*{problem}"):
        push_to_hub(checkpoint, REPO, token=TOKEN, endpoint=hub.endpoint)
    assert hub.requests == []


@pytest.mark.parametrize("name", ["mamba_scans.py", "video_decoding.py", "model.safetensors", "config.json"])
def test_folder_missing_a_needed_file_is_refused_naming_it(checkpoint, name):
    (checkpoint / name).unlink()
    with HubStandIn({TOKEN: USER}) as hub, pytest.raises(PushError, match=f"has no {name}"):
        push_to_hub(checkpoint, REPO, token=TOKEN, endpoint=hub.endpoint)
    assert hub.requests == []


def test_bad_token_is_refused_with_a_clear_error(checkpoint):
    with (
        HubStandIn({TOKEN: USER}) as hub,
        pytest.raises(PushError, match="did not accept the credentials.*hf auth login"),
    ):
        push_to_hub(checkpoint, REPO, token="hf_not_a_valid_token", endpoint=hub.endpoint)
    assert hub.repos == {}


def test_unreachable_endpoint_gives_a_clear_error(checkpoint):
    with socket.socket() as closed:  # bound but not listening: connections to it are refused
        closed.bind(("127.0.0.1", 0))
        endpoint = f"http://127.0.0.1:{closed.getsockname()[1]}"
        with pytest.raises(PushError, match=f"cannot reach the Hub at {endpoint}"):
            push_to_hub(checkpoint, REPO, token=TOKEN, endpoint=endpoint)


def test_branch_pull_request_and_private_repo_pushes(checkpoint):
    with HubStandIn({TOKEN: USER}) as hub:
        main = push_to_hub(checkpoint, REPO, token=TOKEN, endpoint=hub.endpoint).oid
        (checkpoint / "eval_results.json").write_text(json.dumps(eval_results(0.1, 0.9, 0.8)))
        branch = push_to_hub(checkpoint, REPO, revision="experiment", token=TOKEN, endpoint=hub.endpoint)
        pull_request = push_to_hub(checkpoint, REPO, create_pr=True, token=TOKEN, endpoint=hub.endpoint)
        private = push_to_hub(checkpoint, f"{USER}/private", private=True, token=TOKEN, endpoint=hub.endpoint)
        anonymous, owner = HfApi(endpoint=hub.endpoint, token=False), HfApi(endpoint=hub.endpoint, token=TOKEN)
        with pytest.raises(RepositoryNotFoundError):
            anonymous.model_info(f"{USER}/private")
        assert owner.model_info(f"{USER}/private").sha == private.oid
    refs = hub.repos[REPO].refs
    assert refs == {"main": main, "experiment": branch.oid, "refs/pr/1": pull_request.oid}
    assert pull_request.pr_url == f"{hub.endpoint}/{REPO}/discussions/1"
    changed = {p for p, c in hub.repos[REPO].commits[branch.oid].items() if hub.repos[REPO].commits[main][p] != c}
    assert changed == {"README.md", "eval_results.json"}


def test_cli_lists_push_and_reports_a_refused_folder(tmp_path, capsys):
    assert cli(["--help"]) == 0 and "push" in capsys.readouterr().out
    assert cli(["push", str(tmp_path / "absent"), REPO]) == 2
    assert "is not a folder" in capsys.readouterr().err


@pytest.mark.parametrize(
    "arguments, message",
    [
        ({"datasets": ["org/videos", "not a dataset id!"]}, "'not a dataset id!' is not a valid dataset id"),
        ({"base_model": "org/base/extra"}, "'org/base/extra' is not a valid base model id"),
        ({"revision": "my branch"}, "--revision 'my branch' is not a valid branch name"),
        ({"revision": "release..1"}, "--revision 'release..1' is not a valid branch name"),
    ],
)
def test_arguments_the_hub_would_refuse_are_refused_before_any_request(checkpoint, arguments, message):
    with HubStandIn({TOKEN: USER}) as hub, pytest.raises(PushError, match=re.escape(message)):
        push_to_hub(checkpoint, REPO, token=TOKEN, endpoint=hub.endpoint, **arguments)
    assert hub.requests == []


@pytest.mark.parametrize(
    "arguments", [{"revision": "refs/pr/7"}, {"revision": "experiment", "create_pr": True}], ids=["pr", "pr-on-branch"]
)
def test_a_push_that_cannot_commit_creates_no_repo_and_no_branch(checkpoint, arguments):
    with HubStandIn({TOKEN: USER}) as hub:
        with pytest.raises(PushError, match="has no revision .* nothing was created"):
            push_to_hub(checkpoint, REPO, token=TOKEN, endpoint=hub.endpoint, **arguments)
        assert hub.repos == {}
        push_to_hub(checkpoint, REPO, token=TOKEN, endpoint=hub.endpoint)
        refs = dict(hub.repos[REPO].refs)
        # Now the repo exists, but not the revision.
        with pytest.raises(PushError, match="has no revision .* nothing was created"):
            push_to_hub(checkpoint, REPO, token=TOKEN, endpoint=hub.endpoint, **arguments)
    assert hub.repos[REPO].refs == refs


def test_non_finite_weights_are_refused_before_any_request_unless_allowed(checkpoint):
    from safetensors.torch import load_file, save_file

    state = load_file(checkpoint / "model.safetensors")
    state["slotssm.initial_slots"][0, 0, 1, 2] = float("inf")
    save_file(state, checkpoint / "model.safetensors", metadata={"format": "pt"})
    with HubStandIn({TOKEN: USER}) as hub:
        message = r"holds NaN or infinite values \(slotssm.initial_slots\).*--allow-non-finite"
        with pytest.raises(PushError, match=message):
            push_to_hub(checkpoint, REPO, token=TOKEN, endpoint=hub.endpoint)
        assert hub.requests == []
        assert cli(["push", str(checkpoint), REPO]) == 2
        push_to_hub(checkpoint, REPO, token=TOKEN, endpoint=hub.endpoint, allow_non_finite=True)
    assert set(hub.repos) == {REPO}


def test_a_grootv_folder_publishes_its_image_processor_and_code(tmp_path):
    from saved_folders import tiny_config

    from slotssm_hf import GrootVForImageClassification, GrootVImageProcessor

    GrootVForImageClassification(tiny_config("grootv")).save_pretrained(tmp_path)
    GrootVImageProcessor().save_pretrained(tmp_path)
    checkpoint = checked_checkpoint(tmp_path)
    assert {"preprocessor_config.json", "image_processing_grootv.py"} <= set(checkpoint.files)
    assert checkpoint.has_processor
    assert 'AutoImageProcessor.from_pretrained("tester/grootv")' in model_card_for(tmp_path, "tester/grootv",
                                                                                    checkpoint).text  # fmt: skip
