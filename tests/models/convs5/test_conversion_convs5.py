"""Converting official ConvS5 checkpoints: every layout change of the parameter mapping, refusals of checkpoints that
do not fit, the command line on official-format checkpoint files against a float64 NumPy evaluation of the official
model, and verification catching a layout mistake."""

import numpy as np
import pytest
import torch
from convs5_checkpoints import frames_like, official_checkpoint, official_params, to_nhwc
from transformers import AutoModelForPreTraining, AutoVideoProcessor

from slotssm_hf import ConvS5ForVideoPrediction, ConvS5VideoProcessor
from slotssm_hf.cli import main as cli
from slotssm_hf.conversion import convert_convs5
from slotssm_hf.conversion.conversion_utils import ConversionError
from slotssm_hf.conversion.convert_convs5 import convert_convs5_checkpoint, convert_params, infer_config
from slotssm_hf.conversion.flax_checkpoint import flatten_tree
from slotssm_hf.conversion.references.convs5 import FlaxConvS5Reference


def test_converter_maps_every_layout_change():
    params = official_params(np.random.default_rng(1), channels=3, depths=(32, 32, 64), d_model=64, ssm_size=32, k=5)
    config = infer_config(flatten_tree(params), image_size=16)
    assert (config.num_channels, config.encoder_depths, config.hidden_size) == (3, [32, 32, 64], 64)
    assert config.state_size == 16
    assert (config.b_kernel_size, config.c_kernel_size, config.d_kernel_size) == (5, 5, 5)
    state = convert_params(params, config)
    seq = params["sequence_model"]["layers_1"]["seq"]
    p, u, i, j = 4, 7, 1, 3  # B row p, input channel u, kernel tap (i, j)
    assert state["convs5.layers.1.ssm.B_imag"][p, u, i, j] == seq["B"][p, u * 25 + i * 5 + j, 1]
    assert state["convs5.layers.1.ssm.C_real"][u, p, i, j] == seq["C"][i, j, p, u, 0]
    assert torch.equal(state["convs5.layers.1.ssm.log_step"], torch.from_numpy(seq["log_step"][:, 0]))
    kernel = params["encoder"]["ResNetBlock_2"]["skip"]["kernel"]
    assert torch.equal(state["convs5.encoder.blocks.2.skip.weight"], torch.from_numpy(kernel).permute(3, 2, 0, 1))
    dense = params["decoder"]["Dense_0"]["kernel"]
    assert torch.equal(state["decoder.proj.weight"], torch.from_numpy(dense).T)
    assert torch.equal(state["decoder.norm.weight"], torch.from_numpy(params["decoder"]["LayerNorm_0"]["scale"]))


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda p: p["encoder"].update(Extra_0={"kernel": np.zeros(3, np.float32)}), "does not have.*Extra_0"),
        (lambda p: p["decoder"].pop("LayerNorm_0"), "missing.*decoder.norm.weight"),
        (lambda p: p["sequence_model"]["layers_1"]["seq"].update(Lambda_im=np.zeros(5, np.float32)), "wrong shape"),
    ],
)
def test_ledger_refuses_checkpoints_that_do_not_fit(edit, message):
    params = official_params(np.random.default_rng(0))
    edit(params)
    config = infer_config(flatten_tree(params), image_size=16)
    with pytest.raises(ConversionError, match=message):
        convert_params(params, config)


def test_cli_converts_an_official_checkpoint_and_verifies_it(tmp_path):
    params = official_params(np.random.default_rng(2))
    run = tmp_path / "run"  # the official training's checkpoint folder
    run.mkdir()
    official_checkpoint(run / "checkpoint_2000", params)
    official_checkpoint(run / "checkpoint_1000", official_params(np.random.default_rng(3)))
    assert cli(["convert-convs5", str(run), str(tmp_path / "out"), "--verify", "--image-size", "16"]) == 0
    model = AutoModelForPreTraining.from_pretrained(tmp_path / "out").eval()
    assert isinstance(model, ConvS5ForVideoPrediction)
    video = frames_like(model.config, frames=3)
    with torch.no_grad():  # the highest step was converted
        np.testing.assert_allclose(
            to_nhwc(model(video).predictions), FlaxConvS5Reference(params).predict(to_nhwc(video)), atol=5e-5
        )
    card = (tmp_path / "out" / "README.md").read_text()
    assert "non-commercial" in card and "checkpoint_2000" in card
    assert isinstance(AutoVideoProcessor.from_pretrained(tmp_path / "out"), ConvS5VideoProcessor)


def test_failed_conversions_leave_nothing_behind(tmp_path, capsys):
    params = official_params(np.random.default_rng(0))
    params["decoder"].pop("Dense_0")
    official_checkpoint(tmp_path / "checkpoint_1", params)
    (tmp_path / "not_a_checkpoint").write_bytes(b"\x00\x01garbage")
    assert cli(["convert-convs5", str(tmp_path / "checkpoint_1"), str(tmp_path / "out"), "--image-size", "16"]) == 2
    assert "decoder.proj.weight" in capsys.readouterr().err
    with pytest.raises(ConversionError, match="not a Flax msgpack checkpoint|not the map"):
        convert_convs5_checkpoint(tmp_path / "not_a_checkpoint", tmp_path / "out")
    with pytest.raises(ConversionError, match="(?i)no flax checkpoint"):
        convert_convs5_checkpoint(tmp_path / "out", tmp_path / "out2")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint_1", "not_a_checkpoint"]


def test_verification_catches_a_layout_mistake(tmp_path, monkeypatch):
    official_checkpoint(tmp_path / "checkpoint_1", official_params(np.random.default_rng(0)))
    c_kernel = convert_convs5.LAYOUT_CHANGES["c_kernel"]
    # C taken as a convolution kernel (flipped) instead of a cross-correlation kernel: shapes fit, numbers do not.
    flipped = lambda array, key, config: [k[..., ::-1, ::-1] for k in c_kernel(array, key, config)]  # noqa: E731
    monkeypatch.setitem(convert_convs5.LAYOUT_CHANGES, "c_kernel", flipped)
    with pytest.raises(ConversionError, match="verification failed"):
        convert_convs5_checkpoint(tmp_path / "checkpoint_1", tmp_path / "out", verify=True, image_size=16,
                                  log=lambda *_: None)  # fmt: skip
    assert not (tmp_path / "out").exists()


# The run's configuration: fields the weights cannot show, each set in turn to a value other than the Moving-MNIST
# default: (changes to the recorded configuration, official_params arguments, what the converted config holds).
RUN_FIELDS = {
    "image_size": ({"image_size": 32, "latent_height": 16, "latent_width": 16}, {}, {"image_size": 32}),
    "ssm.clip_eigs": ({"ssm": {"clip_eigs": False}}, {}, {"clip_eigs": False}),
    "seq_model.num_groups": ({"seq_model": {"num_groups": 8}}, {}, {"ssm_num_groups": 8}),
    "seq_model.layer_activation=relu": ({"seq_model": {"layer_activation": "relu"}}, {}, {"hidden_act": "relu"}),
    "seq_model.layer_activation=swish": ({"seq_model": {"layer_activation": "swish"}}, {}, {"hidden_act": "silu"}),
    "seq_model.layer_activation=elu": ({"seq_model": {"layer_activation": "elu"}}, {}, {"hidden_act": "elu"}),
    "encoder.blocks": ({"encoder": {"blocks": 2}}, {"encoder_blocks": 2}, {"encoder_blocks": 2,
                                                                          "encoder_depths": [32, 64]}),
    "decoder.blocks": ({"decoder": {"blocks": 2}}, {"decoder_blocks": 2}, {"decoder_blocks": 2,
                                                                          "decoder_depths": [32, 64]}),
}  # fmt: skip


def official_run(folder, changes=None, seed=0, **params_arguments):
    """An official training run folder: `<run>/args` and `<run>/checkpoints/checkpoint_<step>`."""
    from convs5_checkpoints import official_run_config, write_run_args

    params = official_params(np.random.default_rng(seed), **params_arguments)
    values = official_run_config(**(changes or {}))
    (folder / "checkpoints").mkdir(parents=True)
    official_checkpoint(folder / "checkpoints" / "checkpoint_100", params)
    write_run_args(folder / "args", values)
    return params, values


@pytest.mark.parametrize("field", RUN_FIELDS)
def test_a_run_configuration_the_weights_cannot_show_converts_exactly(tmp_path, field, capsys):
    from slotssm_hf.conversion.references.convs5 import OfficialSettings

    changes, params_arguments, expected = RUN_FIELDS[field]
    params, values = official_run(tmp_path / "run", changes, **params_arguments)
    # <run>/args lies beside the checkpoints: it is read without being named.
    assert cli(["convert-convs5", str(tmp_path / "run"), str(tmp_path / "out"), "--verify"]) == 0
    assert "configuration: `args`, the run's pickled arguments, found beside the checkpoints" in capsys.readouterr().out
    model = AutoModelForPreTraining.from_pretrained(tmp_path / "out").eval()
    assert {name: getattr(model.config, name) for name in expected} == expected
    video = frames_like(model.config, frames=3)
    settings = OfficialSettings.from_run_config(values)  # the reference's own reading of the official fields
    official = FlaxConvS5Reference(params, settings).predict(to_nhwc(video))
    with torch.no_grad():
        np.testing.assert_allclose(to_nhwc(model(video).predictions), official, atol=5e-5)
    if field != "image_size":  # the field changes what the official model computes (values, or even shapes)
        default = FlaxConvS5Reference(params).predict(to_nhwc(video))
        assert default.shape != official.shape or np.abs(default - official).max() > 1e-3
    card = (tmp_path / "out" / "README.md").read_text()
    assert "read from the run's configuration (`args`" in card and "were assumed" not in card
    assert AutoVideoProcessor.from_pretrained(tmp_path / "out").crop_size["height"] == model.config.image_size


@pytest.mark.parametrize("field", ["image_size", "ssm.clip_eigs", "seq_model.num_groups", "encoder.blocks"])
def test_without_a_configuration_the_guessed_fields_are_named_in_the_log_and_the_card(tmp_path, field):
    official_checkpoint(tmp_path / "checkpoint_1", official_params(np.random.default_rng(0)))
    lines = []
    convert_convs5_checkpoint(tmp_path / "checkpoint_1", tmp_path / "out", log=lines.append)
    warning = next(line for line in lines if line.startswith("warning: no run configuration given"))
    assert f"{field}=" in warning
    card = (tmp_path / "out" / "README.md").read_text()
    assert "No configuration of the official run was given" in card and f"`{field}` = " in card


def test_the_yaml_config_converts_like_the_pickled_arguments(tmp_path):
    import yaml

    params, values = official_run(tmp_path / "run", {"seq_model": {"num_groups": 16}, "image_size": 32,
                                                     "latent_height": 16, "latent_width": 16})  # fmt: skip
    (tmp_path / "run" / "args").unlink()
    yaml_values = {k: v for k, v in values.items() if k not in ("data_dir", "output_dir", "config", "run_id")}
    (tmp_path / "mnist.yaml").write_text(yaml.safe_dump(yaml_values))
    convert_convs5_checkpoint(tmp_path / "run", tmp_path / "out", config=tmp_path / "mnist.yaml", verify=True,
                              log=lambda *_: None)  # fmt: skip
    config = ConvS5ForVideoPrediction.from_pretrained(tmp_path / "out").config
    assert (config.ssm_num_groups, config.image_size) == (16, 32)


@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
def test_the_pickled_arguments_of_every_protocol_are_read(tmp_path, protocol):
    from convs5_checkpoints import official_run_config, write_run_args

    from slotssm_hf.conversion.official_configs import read_pickled_namespace

    values = official_run_config(seq_model={"num_groups": 4})
    assert read_pickled_namespace(write_run_args(tmp_path / "args", values, protocol)) == values


class Hook:
    def __reduce__(self):
        import os

        return os.system, ("touch hooked",)


@pytest.mark.parametrize("value, named", [(Hook(), "posix.system"), (__import__("pathlib").Path("/x"), "pathlib"),
                                          (np.float32(1.0), "numpy")])  # fmt: skip
def test_pickled_arguments_holding_anything_but_plain_values_are_refused_unrun(tmp_path, value, named, monkeypatch):
    from convs5_checkpoints import official_run_config, write_run_args

    monkeypatch.chdir(tmp_path)
    params, _ = official_run(tmp_path / "run")
    write_run_args(tmp_path / "run" / "args", {**official_run_config(), "extra": value})
    with pytest.raises(ConversionError, match=f"args was refused: only an argparse.Namespace .*{named}"):
        convert_convs5_checkpoint(tmp_path / "run", tmp_path / "out", log=lambda *_: None)
    assert not (tmp_path / "hooked").exists() and not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "changes, params_arguments, message",
    [
        ({"d_model": 64}, {}, "d_model is 64 in the run's configuration, but the checkpoint's weights have "
                              "hidden_size = 32"),
        ({"encoder": {"depths": [32, 32]}}, {}, r"encoder.depths \[32, 32\] with encoder.blocks = 1 give ResNet"),
        ({"encoder": {"blocks": 2}}, {}, "encoder.depths .* with encoder.blocks = 2 give ResNet blocks of widths "
                                         r"\[32, 64, 64\], the checkpoint has \[32, 64\]"),
        ({}, {"decoder_blocks": 2}, r"decoder.depths .* give ResNet blocks of widths \[64, 32\], the checkpoint has"),
        ({"ssm": {"ssm_size": 32}}, {}, "ssm.ssm_size is 32 in the run's configuration"),
        ({"channels": 3}, {}, "channels is 3 in the run's configuration"),
        ({"latent_height": 4}, {}, "latent_height is 4, but image_size 16 through 2 encoder widths gives a 8 x 8"),
        ({"seq_model": {"prenorm": True}}, {}, "seq_model.prenorm: True cannot be converted"),
        ({"ssm": {"C_D_config": "standard"}}, {}, "ssm.C_D_config: 'standard' cannot be converted"),
        ({"use_actions": True}, {}, "use_actions: True cannot be converted"),
        ({"model": "convLSTM_noVQ"}, {}, "model: 'convLSTM_noVQ' cannot be converted"),
        ({"seq_model": {"layer_activation": "tanh"}}, {}, "seq_model.layer_activation: 'tanh' is none of the official"),
    ],
)  # fmt: skip
def test_a_configuration_that_disagrees_with_the_weights_or_cannot_be_converted_is_refused_by_field(
    tmp_path, capsys, changes, params_arguments, message
):
    official_run(tmp_path / "run", changes, **params_arguments)
    assert cli(["convert-convs5", str(tmp_path / "run"), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: ") and __import__("re").search(message, err), err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_flags_that_contradict_the_configuration_are_refused(tmp_path):
    official_run(tmp_path / "run", {"image_size": 32, "latent_height": 16, "latent_width": 16})
    with pytest.raises(ConversionError, match="--image-size says image_size = 16, the run's configuration says 32"):
        convert_convs5_checkpoint(tmp_path / "run", tmp_path / "out", image_size=16, log=lambda *_: None)
