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
