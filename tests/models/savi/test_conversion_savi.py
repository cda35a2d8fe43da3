"""Converting official SAVi / SAVi++ checkpoints: the converted model against a float64 implementation evaluated on
official-layout Flax parameters, the parameter mapping, the converter on checkpoints in the official on-disk format,
its refusals, and the command line."""

import numpy as np
import pytest
import torch
from flax_format import write_flax_checkpoint
from savi_checkpoints import CASES, TINY, assert_matches_reference, clu_checkpoint, inputs, official_params

from slotssm_hf import SAViConfig, SAViForVideoReconstruction
from slotssm_hf.models.configuration_savi import VARIANTS
from slotssm_hf.conversion.conversion_utils import ConversionError
from slotssm_hf.conversion.convert_savi import convert_savi_checkpoint, convert_savi_params
from slotssm_hf.conversion.flax_checkpoint import flatten_tree
from slotssm_hf.conversion.references.savi import SAViReference


def convert(tmp_path, config_overrides, name="model", **kwargs):
    config = SAViConfig(**config_overrides)
    params = official_params(config)
    source = tmp_path / f"{name}-checkpoints"
    source.mkdir()
    write_flax_checkpoint(clu_checkpoint(params), source / "ckpt-3.flax")
    overrides = {k: v for k, v in config_overrides.items()}
    folder = convert_savi_checkpoint(source, tmp_path / name, variant="savi_conditional_small", overrides=overrides,
                                     log=lambda *_: None, **kwargs)  # fmt: skip
    return config, flatten_tree(params), folder


@pytest.mark.parametrize("case", CASES)
def test_converted_checkpoint_matches_float64_reference_on_the_flax_arrays(tmp_path, case):
    config, flat, folder = convert(tmp_path, CASES[case])
    video, boxes = inputs(config)
    reference = SAViReference(flat, config)(video.permute(0, 1, 3, 4, 2).double(), boxes.double())
    model = SAViForVideoReconstruction.from_pretrained(folder).eval()
    assert_matches_reference(model, reference, video, boxes)


def test_convert_savi_verify_passes_and_writes_a_loadable_folder_with_processor(tmp_path):
    lines = []
    config = SAViConfig(**TINY)
    (tmp_path / "workdir" / "checkpoints-0").mkdir(parents=True)  # as the official trainer lays out its work folder
    folder = tmp_path / "workdir" / "checkpoints-0"
    write_flax_checkpoint({}, folder / "ckpt-1.flax")
    write_flax_checkpoint(clu_checkpoint(official_params(config)), folder / "ckpt-2.flax")
    convert_savi_checkpoint(tmp_path / "workdir", tmp_path / "out", overrides=TINY, verify=True, log=lines.append)
    assert "converting the latest checkpoint in" in lines[0] and lines[0].endswith("ckpt-2.flax")
    assert any("max abs difference" in line for line in lines)
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == ["README.md", "config.json", "configuration_savi.py", "model.safetensors", "modeling_savi.py",
                     "object_centric.py", "pretrained.py", "video_decoding.py", "video_inputs.py",
                     "video_preprocessor_config.json", "video_processing.py", "video_processing_savi.py"]  # fmt: skip
    assert "license: apache-2.0" in (tmp_path / "out" / "README.md").read_text()
    from transformers import AutoVideoProcessor

    processor = AutoVideoProcessor.from_pretrained(tmp_path / "out")
    frames = processor([np.full((8, 20, 20, 3), 255, np.uint8)])["pixel_values_videos"]
    assert frames.shape == (1, 6, 3, 16, 16) and torch.allclose(frames, torch.ones_like(frames))  # [0, 1], no norm


def test_gru_layout_puts_flax_gates_in_torch_order_with_zero_r_z_hidden_biases():
    config = SAViConfig(**TINY)
    flat = flatten_tree(official_params(config))
    state = convert_savi_params(flat, config)
    gru = "SlotAttention_0/GRU_0/GRUCell_0"
    assert torch.equal(state["savi.corrector.gru.weight_ih"][16:32], torch.from_numpy(flat[f"{gru}/iz/kernel"].T))
    assert torch.equal(state["savi.corrector.gru.weight_hh"][32:], torch.from_numpy(flat[f"{gru}/hn/kernel"].T))
    assert torch.equal(state["savi.corrector.gru.bias_hh"][:32], torch.zeros(32))
    assert torch.equal(state["savi.corrector.gru.bias_hh"][32:], torch.from_numpy(flat[f"{gru}/hn/bias"]))


def test_conversion_refuses_unmapped_missing_and_mis_shaped_parameters_by_name():
    config = SAViConfig(**TINY)
    flat = flatten_tree(official_params(config))
    extra = {**flat, "SlotAttention_0/Extra_0/kernel": np.zeros((2, 2), np.float32)}
    with pytest.raises(ConversionError, match="SlotAttention_0/Extra_0/kernel"):
        convert_savi_params(extra, config)
    missing = {k: v for k, v in flat.items() if not k.startswith("TransformerBlock_0/MLP_0")}
    with pytest.raises(ConversionError, match=r"missing: \['savi.predictor.mlp.layers.0.bias'"):
        convert_savi_params(missing, config)
    with pytest.raises(ConversionError, match="wrong shape: .*savi.corrector.q_proj.weight"):
        convert_savi_params(flat, SAViConfig(**{**TINY, "slot_attention_qkv_size": 16}))
    with pytest.raises(ConversionError, match="fixed position grid"):
        convert_savi_params(flat, SAViConfig(**{**TINY, "encoder_strides": [1, 1]}))


def test_failed_conversion_leaves_nothing_and_existing_output_needs_overwrite(tmp_path):
    (tmp_path / "bad.flax").write_bytes(b"not msgpack at all")
    with pytest.raises(ConversionError, match="not a Flax msgpack checkpoint"):
        convert_savi_checkpoint(tmp_path / "bad.flax", tmp_path / "out", log=lambda *_: None)
    with pytest.raises(ConversionError, match="No Flax checkpoint file or folder"):
        convert_savi_checkpoint(tmp_path / "empty-folder-missing", tmp_path / "out", log=lambda *_: None)
    write_flax_checkpoint({"optimizer": {"target": {"Other_0": {"kernel": np.zeros(2, np.float32)}}}},
                          tmp_path / "ckpt-1.flax")  # fmt: skip
    with pytest.raises(ConversionError, match="no SAVi parameters found"):
        convert_savi_checkpoint(tmp_path / "ckpt-1.flax", tmp_path / "out", log=lambda *_: None)
    config = SAViConfig(**TINY)
    write_flax_checkpoint(clu_checkpoint(official_params(config)), tmp_path / "ckpt-2.flax")
    with pytest.raises(ConversionError, match="wrong shape"):  # the default variant does not fit tiny weights
        convert_savi_checkpoint(tmp_path / "ckpt-2.flax", tmp_path / "out", log=lambda *_: None)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.flax", "ckpt-1.flax", "ckpt-2.flax"]
    with pytest.raises(ConversionError, match="unknown variant 'savi_tiny'; the official setups are"):
        convert_savi_checkpoint(tmp_path / "ckpt-2.flax", tmp_path / "out", variant="savi_tiny", log=lambda *_: None)
    with pytest.raises(ConversionError, match=r"\['num_slot'\] are not SAViConfig fields"):
        convert_savi_checkpoint(tmp_path / "ckpt-2.flax", tmp_path / "out", overrides={"num_slot": 11},
                                log=lambda *_: None)  # fmt: skip
    with pytest.raises(ConversionError, match="(?s)not a valid SAViConfig: .*num_slots must be a positive integer"):
        convert_savi_checkpoint(tmp_path / "ckpt-2.flax", tmp_path / "out", overrides={"num_slots": 0},
                                log=lambda *_: None)  # fmt: skip
    (tmp_path / "out").mkdir()
    with pytest.raises(ConversionError, match="already exists"):
        convert_savi_checkpoint(tmp_path / "ckpt-2.flax", tmp_path / "out", overrides=TINY, log=lambda *_: None)


def test_cli_convert_savi(tmp_path, capsys):
    from slotssm_hf.cli import main

    config = SAViConfig(**TINY)
    write_flax_checkpoint(clu_checkpoint(official_params(config)), tmp_path / "ckpt-1.flax")
    sets = [arg for key, value in TINY.items() for arg in ("--set", f"{key}={__import__('json').dumps(value)}")]
    assert main(["convert-savi", str(tmp_path / "ckpt-1.flax"), str(tmp_path / "out"), *sets]) == 0
    assert main(["convert-savi", str(tmp_path / "ckpt-1.flax"), str(tmp_path / "out")]) == 2
    assert "already exists" in capsys.readouterr().err


def test_a_missing_or_mis_shaped_gru_gate_is_named():
    config = SAViConfig(**TINY)
    flat = flatten_tree(official_params(config))
    gru = "SlotAttention_0/GRU_0/GRUCell_0"
    without = {k: v for k, v in flat.items() if k != f"{gru}/iz/kernel"}
    with pytest.raises(ConversionError, match=r"savi.corrector.gru.weight_ih: the Flax GRU gates \(r, z, n\) give "):
        convert_savi_params(without, config)
    with pytest.raises(ConversionError, match="savi.corrector.gru.weight_hh: .*not three equal parts"):
        convert_savi_params({**flat, f"{gru}/hz/kernel": np.zeros((16, 8), np.float32)}, config)


# The run's configuration: fields the weights cannot show, each set in turn to a value other than TINY's.
RUN_FIELDS = {
    "slot_attention_iterations": {"slot_attention_iterations": 2},
    "slot_attention_epsilon": {"slot_attention_epsilon": 0.05},
    "num_slots": {"num_slots": 6},  # max_instances 5
    "prepend_background": {"prepend_background": False},
    "background_value": {"background_value": 0.5},
    "encoder_strides": {"encoder_strides": [1, 2]},  # the same grid, other features
    "decoder_strides": {"decoder_strides": [2, 1, 2], "decoder_transposed": [True, False, True]},
    "early_fusion": {"early_fusion": True},
    "targets": {"targets": {"video": 3}},
}


def write_run(tmp_path, overrides, family="savi", params_of=official_params):
    """The official work folder's checkpoint and the config file the run was trained with."""
    from savi_checkpoints import official_run_config, write_config_file

    config = SAViConfig(**overrides)
    params = params_of(config)
    (tmp_path / "workdir" / "checkpoints-0").mkdir(parents=True)
    write_flax_checkpoint(clu_checkpoint(params), tmp_path / "workdir" / "checkpoints-0" / "ckpt-2.flax")
    run = official_run_config(config, family)
    write_config_file(tmp_path / "config.py", run)
    return config, flatten_tree(params), run


@pytest.mark.parametrize("field", RUN_FIELDS)
def test_a_run_configuration_the_weights_cannot_show_converts_exactly(tmp_path, field):
    from transformers import AutoModelForPreTraining

    from slotssm_hf.cli import main
    from slotssm_hf.conversion.references.savi import settings_from_run

    config, flat, run = write_run(tmp_path, {**TINY, **RUN_FIELDS[field]})
    assert main(["convert-savi", str(tmp_path / "workdir"), str(tmp_path / "out"), "--config",
                 str(tmp_path / "config.py"), "--verify"]) == 0  # fmt: skip
    model = AutoModelForPreTraining.from_pretrained(tmp_path / "out").eval()
    assert {name: getattr(model.config, name) for name in RUN_FIELDS[field]} == RUN_FIELDS[field]
    video, boxes = inputs(model.config)
    expected = SAViReference(flat, settings_from_run(run))(video.permute(0, 1, 3, 4, 2).double(), boxes.double())
    with torch.no_grad():
        ours = model(video, boxes=boxes)
    torch.testing.assert_close(ours.reconstruction.permute(0, 1, 3, 4, 2).double(), expected["outputs"], rtol=0,
                               atol=1e-4)  # fmt: skip
    card = (tmp_path / "out" / "README.md").read_text()
    assert "read from the run's configuration (`config.py`, the official config it was trained with)" in card


def test_without_a_configuration_the_fields_the_weights_cannot_show_are_listed_as_guessed(tmp_path):
    write_run(tmp_path, TINY)
    lines = []
    given = {k: v for k, v in TINY.items() if k != "num_slots"}  # the weights do not show it: the variant's 24
    convert_savi_checkpoint(tmp_path / "workdir", tmp_path / "out", overrides=given, log=lines.append)
    warning = next(line for line in lines if line.startswith("warning: no run configuration given"))
    assert "num_slots=24" in warning and "slot_attention_iterations=1" in warning and "early_fusion=False" in warning
    assert "encoder_strides" not in warning  # stated with --set
    card = (tmp_path / "out" / "README.md").read_text()
    assert "No configuration of the official run was given" in card and "`num_slots` = 24" in card


@pytest.mark.parametrize("variant", ["savi_conditional_small", "savi_conditional_medium", "savi_conditional_large",
                                     "savi_pp_conditional"])  # fmt: skip
def test_the_official_configs_give_the_official_variants(variant):
    from savi_checkpoints import official_run_config

    from slotssm_hf.conversion.convert_savi import SAVI, fields_from_run

    official = SAViConfig(**VARIANTS[variant])
    assert SAViConfig(**fields_from_run(official_run_config(official), SAVI)).to_dict() == official.to_dict()


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda r: r["model"]["encoder"]["backbone"].update(norm_type="group"),
         "model.encoder.backbone.norm_type: 'group' cannot be converted"),
        (lambda r: r["model"]["predictor"].update(pre_norm=True), "model.predictor.pre_norm: True cannot be converted"),
        (lambda r: r["model"].update(module="statm.modules.STATMSAVi"),
         "'statm.modules.STATMSAVi' is not a SAVi model"),
        (lambda r: r["model"]["encoder"]["pos_emb"].update(embedding_type="fourier"),
         "model.encoder.pos_emb.embedding_type: 'fourier' cannot be converted"),
        (lambda r: r["model"]["decoder"]["backbone"]["kernel_size"].__setitem__(0, (5, 3)),
         r"model.decoder.backbone.kernel_size\[0\]: \[5, 3\] is not square"),
        (lambda r: r["model"]["decoder"]["target_readout"].update(keys=["flow", "segmentation"]),
         "readout_modules"),
        (lambda r: r["preproc_eval"].__setitem__(-1, "resize_small(32)"),
         "preproc_eval: frames resized to 32, but model.decoder decodes 16 x 16"),
        (lambda r: r["model"]["corrector"].update(qkv_size=16),
         r"the official parameters do not fit the SAVi config; wrong shape: .*savi.corrector.q_proj.weight"),
    ],
)  # fmt: skip
def test_a_configuration_that_cannot_be_converted_or_disagrees_with_the_weights_is_refused(tmp_path, capsys, edit,
                                                                                           message):  # fmt: skip
    import json
    import re

    from slotssm_hf.cli import main

    write_run(tmp_path, TINY)
    run = official_run_config_of(TINY)
    edit(run)
    (tmp_path / "config.json").write_text(json.dumps(run))
    assert main(["convert-savi", str(tmp_path / "workdir"), str(tmp_path / "out"), "--config",
                 str(tmp_path / "config.json")]) == 2  # fmt: skip
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith("error: ") and re.search(message, line), line
    assert not (tmp_path / "out").exists()


def official_run_config_of(overrides):
    from savi_checkpoints import official_run_config

    return official_run_config(SAViConfig(**overrides))


def test_variant_or_set_that_contradict_the_configuration_are_refused(tmp_path):
    write_run(tmp_path, TINY)
    arguments = dict(source=tmp_path / "workdir", output=tmp_path / "out", config=tmp_path / "config.py",
                     log=lambda *_: None)  # fmt: skip
    with pytest.raises(ConversionError, match="--variant and --config both say what the architecture is"):
        convert_savi_checkpoint(variant="savi_conditional_small", **arguments)
    with pytest.raises(ConversionError, match=r"--set contradicts the run's configuration: num_slots=11 \(the "
                                              r"configuration gives 4\)"):  # fmt: skip
        convert_savi_checkpoint(overrides={"num_slots": 11}, **arguments)


def test_a_config_file_that_would_run_code_is_refused_unrun(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_run(tmp_path, TINY)
    source = (tmp_path / "config.py").read_text()
    for attack in ("    __import__('os').system('touch hooked')\n", "    open('hooked', 'w')\n",
                   "    config.x = ().__class__.__bases__\n"):  # fmt: skip
        (tmp_path / "evil.py").write_text(source.replace("    return config", attack + "    return config"))
        with pytest.raises(ConversionError, match=r"evil.py, line \d+: .*only plain configuration code"):
            convert_savi_checkpoint(tmp_path / "workdir", tmp_path / "out", config=tmp_path / "evil.py",
                                    log=lambda *_: None)  # fmt: skip
    assert not (tmp_path / "hooked").exists() and not (tmp_path / "out").exists()
