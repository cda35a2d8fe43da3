"""Converting official-layout SlotSSM checkpoints (random weights under exactly the official key names, shapes and
config.json fields) and comparing the result with the official reference computed from the source weights."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from slotssm_checkpoints import OFFICIAL_VARIANTS, official_configs, write_official_checkpoint
from transformers import AutoModel, AutoModelForPreTraining

from slotssm_hf import SlotSSMForVideoReconstruction, SlotSSMVideoProcessor
from slotssm_hf.conversion.conversion_utils import ConversionError
from slotssm_hf.conversion.convert_slotssm import convert_checkpoint, convert_official_config
from slotssm_hf.conversion.references.slotssm import OfficialReference


def assert_loaded_model_matches(output: Path, reference, atol=1e-4):
    model = SlotSSMForVideoReconstruction.from_pretrained(output).eval()
    size, channels = model.config.image_size, model.config.num_channels
    frames = torch.randn(2, 3, channels, size, size)
    with torch.no_grad():
        recon, masks, slots, _ = reference(frames)
        out = model(frames)
    torch.testing.assert_close(out.reconstruction, recon, rtol=0, atol=atol)
    torch.testing.assert_close(out.last_hidden_state, slots, rtol=0, atol=atol)
    if masks is not None:
        torch.testing.assert_close(out.masks, masks, rtol=0, atol=atol)


def leftovers(folder: Path, before: set) -> set:
    return set(os.listdir(folder)) - before


def test_official_layout_has_the_documented_parameter_counts():
    reference = OfficialReference(*official_configs())
    counts = [sum(p.numel() for p in part.parameters()) for part in (reference.encoder, reference.slotssm, reference.decoder)]
    assert counts == [4_919_808, 4_238_944, 3_342_016]
    assert reference.slotssm.state_dict()["blocks.0.time_mixer.in_proj.weight"].shape == (1288, 256)


@pytest.mark.parametrize("variant", ["train.py-default", *OFFICIAL_VARIANTS])
def test_converted_checkpoint_matches_official_reference(tmp_path, variant):
    configs = official_configs() if variant == "train.py-default" else official_configs(**OFFICIAL_VARIANTS[variant])
    reference = write_official_checkpoint(tmp_path / "run" / "checkpoint_step_1000", configs)
    messages = []
    output = convert_checkpoint(tmp_path / "run" / "checkpoint_step_1000", tmp_path / "out", verify=True, log=messages.append)
    assert any(m.startswith("max abs difference against the official reference") for m in messages)
    assert {"config.json", "model.safetensors", "README.md", "video_preprocessor_config.json"} <= set(os.listdir(output))
    processor = SlotSSMVideoProcessor.from_pretrained(output)
    size = SlotSSMForVideoReconstruction.config_class.from_pretrained(output).image_size
    assert processor.size["shortest_edge"] == size
    assert (processor.crop_size["height"], processor.crop_size["width"]) == (size, size)
    assert processor.num_frames == 16 and int(processor.resample) == 3  # bicubic
    assert_loaded_model_matches(output, reference)
    assert type(AutoModel.from_pretrained(output)).__name__ == "SlotSSMModel"
    assert type(AutoModelForPreTraining.from_pretrained(output)).__name__ == "SlotSSMForVideoReconstruction"


def test_run_folder_converts_its_latest_checkpoint(tmp_path):
    configs = official_configs(**OFFICIAL_VARIANTS["cnn-encoder-spatial-broadcast-x8"])
    write_official_checkpoint(tmp_path / "run" / "checkpoint_step_900", configs)
    latest = write_official_checkpoint(tmp_path / "run" / "checkpoint_step_10000", configs)
    messages = []
    convert_checkpoint(tmp_path / "run", tmp_path / "out", log=messages.append)
    assert "checkpoint_step_10000" in messages[0]
    assert_loaded_model_matches(tmp_path / "out", latest)
    final = write_official_checkpoint(tmp_path / "run" / "final_checkpoint", configs)
    convert_checkpoint(tmp_path / "run", tmp_path / "out", overwrite=True, log=messages.append)
    assert_loaded_model_matches(tmp_path / "out", final)


def test_pickle_weights_and_dtypes_are_kept(tmp_path):
    configs = official_configs(**OFFICIAL_VARIANTS["mamba1-ffn-standard-cross-attention"])
    write_official_checkpoint(tmp_path / "step", configs, weights_format="bin", dtype=torch.float16)
    convert_checkpoint(tmp_path / "step", tmp_path / "out")
    weights = load_file(tmp_path / "out" / "model.safetensors")
    assert weights["slotssm.layers.0.time_mixer.A_log"].dtype == torch.float32
    assert weights["slotssm.layers.0.time_mixer.in_proj.weight"].dtype == torch.float16
    assert weights["decoder.head.weight"].dtype == torch.float16


def corrupt_missing_folder(step):
    import shutil

    shutil.rmtree(step / "vitdecoder")


def corrupt_truncated_safetensors(step):
    path = step / "slotssm" / "model.safetensors"
    path.write_bytes(path.read_bytes()[:1000])


def corrupt_extra_key(step):
    path = step / "slotssm" / "model.safetensors"
    state = load_file(path)
    state["blocks.0.surprise"] = torch.zeros(3)
    save_file(state, path)


def corrupt_wrong_shape(step):
    path = step / "vitencoder" / "model.safetensors"
    state = load_file(path)
    state["output_proj.weight"] = torch.zeros(64, 32)
    save_file(state, path)


class RunsCode:
    """A pickle that would create a file when unpickled."""

    def __reduce__(self):
        return (Path.touch, (Path(os.environ["PWNED_FILE"]),))


def corrupt_code_pickle(step):
    (step / "vitencoder" / "model.safetensors").unlink()
    torch.save({"patch_embedding.weight": RunsCode()}, step / "vitencoder" / "pytorch_model.bin")


def corrupt_config(step):
    (step / "slotssm" / "config.json").write_text("{not json")


CORRUPTIONS = {
    "missing-sub-folder": (corrupt_missing_folder, r"exactly one of the sub-model folders vitdecoder/, sbdecoder/"),
    "truncated-safetensors": (corrupt_truncated_safetensors, r"slotssm/model.safetensors is not a readable safetensors"),
    "extra-key": (corrupt_extra_key, r"slotssm: keys the official layout does not have: \['blocks.0.surprise'\]"),
    "wrong-shape": (corrupt_wrong_shape, r"wrong shape: \['slotssm.encoder.output_proj.weight: \(64, 32\) instead of \(64, 64\)'\]"),
    "code-pickle": (corrupt_code_pickle, r"vitencoder/pytorch_model.bin was refused: it holds more than tensors"),
    "bad-config": (corrupt_config, r"slotssm/config.json is missing or not valid JSON"),
}  # fmt: skip


@pytest.mark.parametrize("corruption", CORRUPTIONS)
def test_corrupt_checkpoint_fails_clearly_and_leaves_nothing(tmp_path, monkeypatch, corruption):
    corrupt, message = CORRUPTIONS[corruption]
    small = official_configs(**OFFICIAL_VARIANTS["mamba1-ffn-standard-cross-attention"])
    step = tmp_path / "step"
    write_official_checkpoint(step, small)
    monkeypatch.setenv("PWNED_FILE", str(tmp_path / "pwned"))
    corrupt(step)
    before = set(os.listdir(tmp_path))
    with pytest.raises(ConversionError, match=message):
        convert_checkpoint(step, tmp_path / "out", verify=True)
    assert leftovers(tmp_path, before) == set()
    assert not (tmp_path / "pwned").exists()


def test_failed_verification_leaves_nothing(tmp_path, monkeypatch):
    configs = official_configs(**OFFICIAL_VARIANTS["mamba1-ffn-standard-cross-attention"])
    write_official_checkpoint(tmp_path / "step", configs)
    monkeypatch.setattr("slotssm_hf.conversion.convert_slotssm.verify_conversion", lambda folder, parts: 0.5)
    before = set(os.listdir(tmp_path))
    with pytest.raises(ConversionError, match=r"verification failed: max abs difference 0.5 > 0.0001"):
        convert_checkpoint(tmp_path / "step", tmp_path / "out", verify=True)
    assert leftovers(tmp_path, before) == set()


def test_existing_output_is_kept_without_overwrite(tmp_path):
    configs = official_configs(**OFFICIAL_VARIANTS["mamba1-ffn-standard-cross-attention"])
    write_official_checkpoint(tmp_path / "step", configs)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "mine.txt").write_text("keep me")
    with pytest.raises(ConversionError, match="already exists; pass --overwrite"):
        convert_checkpoint(tmp_path / "step", tmp_path / "out")
    assert (tmp_path / "out" / "mine.txt").read_text() == "keep me"
    convert_checkpoint(tmp_path / "step", tmp_path / "out", overwrite=True)
    assert not (tmp_path / "out" / "mine.txt").exists()
    assert sorted(p for p in os.listdir(tmp_path) if p.startswith(".")) == []


@pytest.mark.parametrize(
    "overrides,message",
    [
        ({"encoder": {"learn_initial_cls_tokens": False}}, "learn_initial_cls_tokens=False"),
        ({"slotssm": {"attn_impl": "eager"}}, "attn_impl='eager' cannot run in the official code"),
        ({"slotssm": {"input_d_model": None}}, r"input_d_model \(None\) must equal the encoder's output width"),
        ({"decoder": {"patch_size": 16}}, r"vitdecoder config: patch_size \(16\) differs from the encoder's \(8\)"),
        ({"decoder": {"num_cls_tokens": 4}}, r"num_cls_tokens \(4\) must equal num_slots \(6\)"),
        ({"slotssm": {"d_model": 250}, "decoder": {"input_size": 250}}, r"(?s)invalid SlotSSMConfig.*hidden_size \(250\)"),
    ],
)
def test_unrepresentable_official_config_is_refused(overrides, message):
    with pytest.raises(ConversionError, match=message):
        convert_official_config(*official_configs(**overrides))


@pytest.mark.parametrize(
    "command",
    [
        [str(Path(sys.executable).parent / "slotssm-hf"), "convert-slotssm"],
        [str(Path(sys.executable).parent / "slotssm-hf"), "convert-official"],
        [sys.executable, "-m", "slotssm_hf.conversion.convert_slotssm"],
    ],
    ids=["console-script", "former-command-name", "module"],
)
def test_command_line(tmp_path, command):
    configs = official_configs(**OFFICIAL_VARIANTS["mamba1-ffn-standard-cross-attention"])
    write_official_checkpoint(tmp_path / "run" / "checkpoint_step_5", configs)
    result = subprocess.run(
        [*command, str(tmp_path / "run"), str(tmp_path / "out"), "--verify"], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "checkpoint_step_5" in result.stdout and "max abs difference" in result.stdout
    again = subprocess.run([*command, str(tmp_path / "run"), str(tmp_path / "out")], capture_output=True, text=True)
    assert again.returncode == 2 and "already exists" in again.stderr


SMALL = OFFICIAL_VARIANTS["mamba1-ffn-standard-cross-attention"]


def snapshot(folder: Path) -> dict:
    """Every file under `folder` with its bytes, to show that nothing was touched."""
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize(
    "output", ["run", "run/converted", "run/checkpoint_step_1/slotssm/out", "."],
    ids=["same", "inside", "deep", "holds"],
)
def test_output_overlapping_the_source_is_refused_before_anything_is_touched(tmp_path, output):
    write_official_checkpoint(tmp_path / "run" / "checkpoint_step_1", official_configs(**SMALL))
    before = snapshot(tmp_path)
    for source in (tmp_path / "run", tmp_path / "run" / "checkpoint_step_1"):
        target = tmp_path / output
        if target == source or target in source.parents or source in target.parents:
            with pytest.raises(ConversionError, match="overlap"):
                convert_checkpoint(source, target, overwrite=True)
    assert snapshot(tmp_path) == before and set(os.listdir(tmp_path / "run")) == {"checkpoint_step_1"}


def test_existing_file_as_output_is_refused_and_kept(tmp_path):
    write_official_checkpoint(tmp_path / "step", official_configs(**SMALL))
    (tmp_path / "out").write_text("not a checkpoint")
    with pytest.raises(ConversionError, match="out is a file, not a checkpoint folder; it is never replaced"):
        convert_checkpoint(tmp_path / "step", tmp_path / "out", overwrite=True)
    assert (tmp_path / "out").read_text() == "not a checkpoint"
    assert sorted(p for p in os.listdir(tmp_path) if p.startswith(".")) == []


def test_a_failed_swap_puts_the_old_output_back(tmp_path, monkeypatch):
    write_official_checkpoint(tmp_path / "step", official_configs(**SMALL))
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "mine.txt").write_text("keep me")
    rename = Path.rename

    def failing_second_rename(self, target):
        if self.name.startswith(".out.incomplete-"):
            raise OSError("disk full")
        return rename(self, target)

    monkeypatch.setattr(Path, "rename", failing_second_rename)
    with pytest.raises(OSError, match="disk full"):
        convert_checkpoint(tmp_path / "step", tmp_path / "out", overwrite=True)
    assert (tmp_path / "out" / "mine.txt").read_text() == "keep me"
    assert sorted(os.listdir(tmp_path)) == ["out", "step"]


def test_a_failed_cleanup_after_the_swap_is_a_warning_not_a_failure(tmp_path, monkeypatch):
    write_official_checkpoint(tmp_path / "step", official_configs(**SMALL))
    (tmp_path / "out").mkdir()
    rmtree = shutil.rmtree

    def failing_cleanup(path, *args, **kwargs):
        if Path(path).name.startswith(".out.replaced-"):
            raise PermissionError("read-only file system")
        return rmtree(path, *args, **kwargs)

    monkeypatch.setattr("slotssm_hf.atomic_files.shutil.rmtree", failing_cleanup)
    messages = []
    output = convert_checkpoint(tmp_path / "step", tmp_path / "out", overwrite=True, log=messages.append)
    assert output == tmp_path / "out"
    assert (tmp_path / "out" / "model.safetensors").is_file()
    assert any(m.startswith("warning: could not delete the replaced checkpoint, left at") for m in messages)


def test_output_folder_mode_follows_the_umask(tmp_path):
    write_official_checkpoint(tmp_path / "step", official_configs(**SMALL))
    previous = os.umask(0o022)
    try:
        convert_checkpoint(tmp_path / "step", tmp_path / "out")
    finally:
        os.umask(previous)
    assert (tmp_path / "out").stat().st_mode & 0o777 == 0o755


def test_non_finite_weights_are_refused_unless_allowed(tmp_path):
    write_official_checkpoint(tmp_path / "step", official_configs(**SMALL))
    weights = tmp_path / "step" / "slotssm" / "model.safetensors"
    state = load_file(weights)
    state["blocks.0.time_mixer.D"][3] = float("nan")
    save_file(state, weights)
    message = r"NaN or infinite values \(slotssm.layers.0.time_mixer.D\).*--allow-non-finite"
    with pytest.raises(ConversionError, match=message):
        convert_checkpoint(tmp_path / "step", tmp_path / "out")
    assert not (tmp_path / "out").exists()
    convert_checkpoint(tmp_path / "step", tmp_path / "out", allow_non_finite=True)
    assert load_file(tmp_path / "out" / "model.safetensors")["slotssm.layers.0.time_mixer.D"].isnan().sum() == 1


def test_every_command_line_failure_is_one_line_and_exit_status_2(tmp_path, capsys, monkeypatch):
    from slotssm_hf.conversion.convert_slotssm import main as convert

    configs = official_configs(**OFFICIAL_VARIANTS["cnn-encoder-spatial-broadcast-x8"])  # without an MLP
    write_official_checkpoint(tmp_path / "step", configs)
    # The converter defaults use_ffn when absent; the official reference that --verify runs needs it.
    config_file = tmp_path / "step" / "slotssm" / "config.json"
    config_file.write_text(json.dumps({k: v for k, v in json.loads(config_file.read_text()).items() if k != "use_ffn"}))

    def error_line():  # the last line of stderr (saving shows progress bars), and no traceback
        err = capsys.readouterr().err
        assert "Traceback" not in err
        return err.splitlines()[-1]

    assert convert([str(tmp_path / "step"), str(tmp_path / "out"), "--verify"]) == 2
    assert error_line() == "error: verification could not run the official reference (KeyError: 'use_ffn')"
    config_file.write_text(json.dumps({k: v for k, v in configs[1].items() if k != "d_model"}))
    assert convert([str(tmp_path / "step"), str(tmp_path / "out")]) == 2
    assert error_line().endswith("lack the field 'd_model'")
    monkeypatch.setattr("slotssm_hf.conversion.convert_slotssm.find_step_folder", lambda path: 1 / 0)
    assert convert([str(tmp_path / "step"), str(tmp_path / "out")]) == 2  # an unexpected failure too
    assert error_line() == "error: the conversion failed (ZeroDivisionError: division by zero)"
    assert sorted(os.listdir(tmp_path)) == ["step"]


# The sub-models' config.json fields the weights cannot show, each set in turn to a value other than the small CNN
# variant's: (sub-model, field, value, the converted config's field and value).
RUN_FIELDS = {
    "slotssm.space_attn_num_heads": ("slotssm", "space_attn_num_heads", 4, "num_attention_heads", 4),
    "slotssm.encoder_attn_num_heads": ("slotssm", "encoder_attn_num_heads", 2, "cross_attention_num_heads", 2),
    "slotssm.use_inverted_attention": ("slotssm", "use_inverted_attention", False, "use_inverted_attention", False),
}


@pytest.mark.parametrize("field", RUN_FIELDS)
def test_a_run_configuration_the_weights_cannot_show_converts_exactly(tmp_path, field):
    part, name, value, ours, expected = RUN_FIELDS[field]
    overrides = {key: dict(update) for key, update in OFFICIAL_VARIANTS["cnn-encoder-spatial-broadcast-x8"].items()}
    overrides[part][name] = value
    reference = write_official_checkpoint(tmp_path / "step", official_configs(**overrides))
    output = convert_checkpoint(tmp_path / "step", tmp_path / "out", verify=True, log=lambda *_: None)
    assert getattr(SlotSSMForVideoReconstruction.config_class.from_pretrained(output), ours) == expected
    assert_loaded_model_matches(output, reference)
    assert "read from the run's configuration (the sub-models' config.json)" in (output / "README.md").read_text()


def test_the_configuration_of_another_folder_is_used_and_checked_against_the_weights(tmp_path):
    variant = OFFICIAL_VARIANTS["cnn-encoder-spatial-broadcast-x8"]
    write_official_checkpoint(tmp_path / "weights", official_configs(**variant))
    heads = {**variant, "slotssm": {**variant["slotssm"], "space_attn_num_heads": 4}}
    write_official_checkpoint(tmp_path / "configs", official_configs(**heads))
    output = convert_checkpoint(tmp_path / "weights", tmp_path / "out", config=tmp_path / "configs",
                                log=lambda *_: None)  # fmt: skip
    assert SlotSSMForVideoReconstruction.config_class.from_pretrained(output).num_attention_heads == 4
    deeper = {**variant, "slotssm": {**variant["slotssm"], "num_blocks": 3}}
    write_official_checkpoint(tmp_path / "deeper", official_configs(**deeper))
    with pytest.raises(ConversionError, match=r"the official weights do not fit the converted config; missing: "
                                              r"\['slotssm.layers.2."):  # fmt: skip
        convert_checkpoint(tmp_path / "weights", tmp_path / "out2", config=tmp_path / "deeper", log=lambda *_: None)
