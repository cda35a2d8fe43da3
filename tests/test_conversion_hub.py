"""Converters on the Hub, end to end against the loopback stand-in for the Hub (tests/utils/hub_stand_in.py): an
official STATM-SAVi checkpoint and its config file served as a Hub model repo (as the authors publish theirs,
`Kang-na/STATM`), converted at a pinned revision and published in one command, pulled in a fresh process without
the package, and converted again offline from the cache once the Hub is gone. Publishing happens only after the
conversion and its checks succeed."""

import json
import os
import re
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch
from flax_format import flax_bytes
from hub_stand_in import HubStandIn
from huggingface_hub import CommitOperationAdd, HfApi, ModelCard
from savi_checkpoints import TINY, clu_checkpoint, inputs, official_run_config, write_config_file
from statm_checkpoints import statm_params

from slotssm_hf import STATMConfig
from slotssm_hf.conversion.conversion_utils import ConversionError
from slotssm_hf.conversion.convert_statm import convert_statm_checkpoint
from slotssm_hf.conversion.flax_checkpoint import flatten_tree
from slotssm_hf.conversion.references.savi import settings_from_run
from slotssm_hf.conversion.references.statm import STATMReference

TOKEN, USER = "hf_stand_in_write_token", "tester"
AUTHORS_TOKEN, AUTHORS = "hf_stand_in_authors_token", "Kang-na"
SOURCE = f"{AUTHORS}/STATM"
CHECKPOINTS = "movi_a/checkpoints-0"
TARGET = f"{USER}/statm-savi-movi-a"
SUBPROCESS_TIMEOUT_S = 180


def hub_environment(home, endpoint, **extra) -> dict:
    """A subprocess environment that talks to `endpoint` only, with its own cache and no credentials but `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING_FACE_", "TRANSFORMERS_"))}
    return {**env, "HF_HOME": str(home), "HF_ENDPOINT": endpoint, "HF_HUB_DISABLE_XET": "1",
            "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1", **extra}  # fmt: skip


def run(arguments, env, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *arguments], env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=SUBPROCESS_TIMEOUT_S)  # fmt: skip


def convert_command(output, *extra) -> list[str]:
    return ["-m", "slotssm_hf.cli", "convert-statm", f"{SOURCE}/{CHECKPOINTS}", str(output), "--config",
            f"{SOURCE}/configs/statm_config.py", *extra]  # fmt: skip


# The pull side, without the package: only the code stored in the repo can run.
PULL = """
import json, sys
sys.modules["slotssm_hf"] = None
import torch
from transformers import AutoModelForPreTraining, AutoVideoProcessor

arguments = json.loads(sys.argv[1])
model = AutoModelForPreTraining.from_pretrained(arguments["repo"], trust_remote_code=True).eval()
processor = AutoVideoProcessor.from_pretrained(arguments["repo"], trust_remote_code=True)
io = torch.load(arguments["io"])
with torch.no_grad():
    io["outputs"] = model(io["video"], boxes=io["boxes"]).reconstruction
torch.save(io, arguments["io"])
print(json.dumps({"model": type(model).__module__ + "." + type(model).__name__, "processor": type(processor).__name__,
                  "slotssm_hf_imported": sys.modules.get("slotssm_hf") is not None}))
"""


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """The authors' repo (a first commit, then a second that replaces the checkpoint), one conversion of the first
    commit pushed in the same command, the pull of the result in a fresh process, then (the stand-in stopped)
    conversions from the cache in offline mode."""
    root = tmp_path_factory.mktemp("hub-conversion")
    config = STATMConfig(**TINY)
    first, second = statm_params(config, seed=0), statm_params(config, seed=3)
    run_config = official_run_config(config, "statm")
    write_config_file(root / "statm_config.py", run_config)
    card = b"---\nlicense: apache-2.0\n---\n# STATM\nThe authors' checkpoints.\n"
    video, boxes = inputs(config, batch=1)
    torch.save({"video": video, "boxes": boxes}, root / "io.pt")
    result = SimpleNamespace(root=root, first=flatten_tree(first), second=flatten_tree(second), run=run_config)
    with HubStandIn({TOKEN: USER, AUTHORS_TOKEN: AUTHORS}) as hub:
        authors = HfApi(endpoint=hub.endpoint, token=AUTHORS_TOKEN)
        authors.create_repo(SOURCE)
        result.first_sha = authors.create_commit(SOURCE, [
            CommitOperationAdd("README.md", card),
            CommitOperationAdd(f"{CHECKPOINTS}/ckpt-2.flax", flax_bytes(clu_checkpoint(first))),
            CommitOperationAdd("configs/statm_config.py", str(root / "statm_config.py")),
        ], commit_message="STATM-SAVi on MOVi-A").oid  # fmt: skip
        authors.create_commit(SOURCE, [CommitOperationAdd(f"{CHECKPOINTS}/ckpt-2.flax",
                                                          flax_bytes(clu_checkpoint(second)))],
                              commit_message="retrained")  # fmt: skip
        env = hub_environment(root / "home", hub.endpoint, HF_TOKEN=TOKEN)
        result.conversion = run(convert_command(root / "out", "--revision", result.first_sha, "--verify",
                                                "--push-to-hub", TARGET, "--commit-message", "Converted STATM-SAVi"),
                                env, root)  # fmt: skip
        result.pull = run(["-c", PULL, json.dumps({"repo": TARGET, "io": str(root / "io.pt")})],
                          hub_environment(root / "pull-home", hub.endpoint), root)  # fmt: skip
        result.hub = hub
    offline = hub_environment(root / "home", hub.endpoint, HF_HUB_OFFLINE="1")
    result.offline = run(convert_command(root / "offline-out", "--revision", result.first_sha), offline, root)
    result.offline_unpinned = run(convert_command(root / "offline-main"), offline, root)
    return result


def test_conversion_from_the_hub_and_push_is_one_command_and_one_commit(converted):
    assert converted.conversion.returncode == 0, converted.conversion.stderr[-3000:]
    repo = converted.hub.repos[TARGET]
    assert list(repo.messages.values()) == ["initial commit", "Converted STATM-SAVi"]
    commits = [path for method, path in converted.hub.requests if "/commit/" in path and TARGET in path]
    assert commits == [f"/api/models/{TARGET}/commit/main"]
    (sha,) = [sha for sha, message in repo.messages.items() if message == "Converted STATM-SAVi"]
    files = repo.commits[sha]
    assert {"config.json", "model.safetensors", "README.md", "video_preprocessor_config.json", "modeling_statm.py",
            "configuration_statm.py", "video_processing_savi.py"} <= set(files)  # fmt: skip
    assert files["model.safetensors"] == (converted.root / "out" / "model.safetensors").read_bytes()
    output = converted.conversion.stdout
    assert f'pin this version with from_pretrained("{TARGET}", revision="{sha}")' in output
    assert "max abs difference against the float64 reference" in output


def test_the_card_records_the_source_repo_revision_file_and_license(converted):
    repo = converted.hub.repos[TARGET]
    card = ModelCard(repo.commits[repo.refs["main"]]["README.md"].decode())
    assert card.data.license == "apache-2.0"
    text = " ".join(card.text.split())
    assert f"`ckpt-2.flax`, from `{CHECKPOINTS}` of the Hub model repo [{SOURCE}](" in text
    assert f"at revision `{converted.first_sha}`, whose card declares the license `apache-2.0`" in text
    assert "License of the weights: the Apache License 2.0" in text
    assert "read from the run's configuration (`statm_config.py`, the official config it was trained with)" in text


def test_the_pinned_revision_is_converted_not_the_latest(converted):
    assert converted.pull.returncode == 0, converted.pull.stderr[-3000:]
    report = json.loads(converted.pull.stdout.strip().splitlines()[-1])
    assert not report["slotssm_hf_imported"] and report["model"].startswith("transformers_modules.")
    assert report["model"].endswith(".STATMForVideoReconstruction") and report["processor"] == "SAViVideoProcessor"
    io = torch.load(converted.root / "io.pt")
    pulled = io["outputs"].permute(0, 1, 3, 4, 2).double()
    settings = settings_from_run(converted.run)  # the reference reads the official config itself
    for params, close in ((converted.first, True), (converted.second, False)):
        expected = STATMReference(params, settings)(io["video"].permute(0, 1, 3, 4, 2).double(),
                                                    io["boxes"].double())["outputs"]  # fmt: skip
        assert ((pulled - expected).abs().max().item() < 1e-4) == close


def test_offline_the_cached_revision_converts_and_an_uncached_one_is_named(converted):
    assert converted.offline.returncode == 0, converted.offline.stderr[-3000:]
    assert (converted.root / "offline-out" / "model.safetensors").read_bytes() == (
        converted.root / "out" / "model.safetensors").read_bytes()  # fmt: skip
    assert converted.offline_unpinned.returncode == 2
    line = converted.offline_unpinned.stderr.strip().splitlines()[-1]
    assert re.match(rf"error: {SOURCE}/{CHECKPOINTS} is not in the local Hub cache .*HF_HUB_OFFLINE=True", line), line
    assert not (converted.root / "offline-main").exists()


def test_nothing_is_published_when_the_conversion_fails(tmp_path, monkeypatch):
    from slotssm_hf.conversion import convert_savi

    config = STATMConfig(**TINY)
    (tmp_path / "checkpoints-0").mkdir()
    (tmp_path / "checkpoints-0" / "ckpt-1.flax").write_bytes(flax_bytes(clu_checkpoint(statm_params(config))))
    write_config_file(tmp_path / "statm_config.py", official_run_config(config, "statm"))
    monkeypatch.setattr(convert_savi, "verify_conversion", lambda *args, **kwargs: 1.0)
    with HubStandIn({TOKEN: USER}) as hub:
        with pytest.raises(ConversionError, match="verification failed"):
            convert_statm_checkpoint(tmp_path / "checkpoints-0", tmp_path / "out", config=tmp_path / "statm_config.py",
                                     verify=True, push_to_hub=TARGET, token=TOKEN, endpoint=hub.endpoint,
                                     log=lambda *_: None)  # fmt: skip
    assert hub.requests == [] and not (tmp_path / "out").exists()
