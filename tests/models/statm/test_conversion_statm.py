"""Converting official STATM-SAVi checkpoints: the converter on checkpoints in the official on-disk format (its card
and processor), both Flax environments' norm layouts, refusals that name what does not fit, and the command line."""

import json

import pytest
import torch
from flax_format import write_flax_checkpoint
from savi_checkpoints import TINY, clu_checkpoint, official_params
from statm_checkpoints import STATM_CASES, statm_params

from slotssm_hf import STATMConfig, STATMForVideoReconstruction
from slotssm_hf.conversion.conversion_utils import ConversionError
from slotssm_hf.conversion.convert_savi import convert_savi_params
from slotssm_hf.conversion.convert_statm import STATM, convert_statm_checkpoint
from slotssm_hf.conversion.flax_checkpoint import flatten_tree


def test_convert_statm_verify_writes_a_loadable_folder_with_card_and_processor(tmp_path):
    lines = []
    config = STATMConfig(**TINY)
    folder = tmp_path / "workdir" / "checkpoints-0"  # as the official trainer lays out its work folder
    folder.mkdir(parents=True)
    write_flax_checkpoint({}, folder / "ckpt-1.flax")
    write_flax_checkpoint(clu_checkpoint(statm_params(config)), folder / "ckpt-2.flax")
    for name in ("checkpoint", "ckpt-2.index", "ckpt-2.data-00000-of-00001"):  # CLU's TF files (data iterator)
        (folder / name).write_bytes(b"\0")
    convert_statm_checkpoint(tmp_path / "workdir", tmp_path / "out", overrides=TINY, verify=True, log=lines.append)
    assert lines[0].endswith("ckpt-2.flax") and any("max abs difference" in line for line in lines)
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert {"README.md", "config.json", "model.safetensors", "configuration_statm.py", "modeling_statm.py",
            "configuration_savi.py", "modeling_savi.py", "object_centric.py", "video_preprocessor_config.json"} <= set(
        names)  # fmt: skip
    card = (tmp_path / "out" / "README.md").read_text()
    assert "license: apache-2.0" in card and "arxiv.org/abs/2403.15245" in card
    assert "`ckpt-2.flax`" in card and "intell-sci-comput/STATM" in card and "slotssm-hf convert-statm" in card
    model = STATMForVideoReconstruction.from_pretrained(tmp_path / "out")
    assert model.config.model_type == "statm" and model.config.num_slots == TINY["num_slots"]


def test_norm_scales_of_the_newer_flax_environment_convert_alike():
    # The official second environment (flax 0.5.1) stores norm scales and biases as (1, 1, 1, C), the first as (C,).
    overrides = STATM_CASES["resnet-transformer-multihead-corrector"]
    config = STATMConfig(**overrides)
    flat = flatten_tree(statm_params(config))
    newer = {k: v.reshape(1, 1, 1, -1) if k.rsplit("/", 2)[-2].startswith(("bn", "init_bn", "proj_bn")) else v
             for k, v in flat.items()}  # fmt: skip
    assert any(v.ndim == 4 and v.shape[:3] == (1, 1, 1) for v in newer.values())
    first, second = convert_savi_params(flat, config, STATM), convert_savi_params(newer, config, STATM)
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_conversion_refuses_a_savi_predictor_and_names_what_does_not_fit():
    config = STATMConfig(**TINY)
    savi_flat = flatten_tree(official_params(config))  # a SAVi checkpoint: TransformerBlock_0, no memory
    with pytest.raises(ConversionError, match=r"(?s)STATM-SAVi config.*TransformerBlock_0/LayerNorm_0/bias.*"
                       r"missing: \['statm.predictor.mlp.layers.0.bias'"):  # fmt: skip
        convert_savi_params(savi_flat, config, STATM)
    flat = flatten_tree(statm_params(config))
    with pytest.raises(ConversionError, match="wrong shape: .*statm.predictor.time_attention.q_proj.weight"):
        convert_savi_params(flat, STATMConfig(**{**TINY, "predictor_qkv_size": 4}), STATM)


def test_converter_refuses_unknown_variants_and_fields(tmp_path):
    write_flax_checkpoint(clu_checkpoint(statm_params(STATMConfig(**TINY))), tmp_path / "ckpt-1.flax")
    with pytest.raises(ConversionError, match="unknown variant 'savi_conditional_small'; the official setups are"):
        convert_statm_checkpoint(tmp_path / "ckpt-1.flax", tmp_path / "out", "savi_conditional_small", log=print)
    with pytest.raises(ConversionError, match=r"\['memory'\] are not STATMConfig fields"):
        convert_statm_checkpoint(tmp_path / "ckpt-1.flax", tmp_path / "out", overrides={"memory": 6}, log=print)
    assert not (tmp_path / "out").exists()


def test_cli_convert_statm(tmp_path, capsys):
    from slotssm_hf.cli import main

    write_flax_checkpoint(clu_checkpoint(statm_params(STATMConfig(**TINY))), tmp_path / "ckpt-1.flax")
    sets = [arg for key, value in TINY.items() for arg in ("--set", f"{key}={json.dumps(value)}")]
    assert main(["convert-statm", str(tmp_path / "ckpt-1.flax"), str(tmp_path / "out"), *sets, "--verify"]) == 0
    assert main(["convert-statm", str(tmp_path / "ckpt-1.flax"), str(tmp_path / "out2")]) == 2  # default variant
    assert "wrong shape" in capsys.readouterr().err and not (tmp_path / "out2").exists()


@pytest.mark.parametrize("field", [{"slot_attention_iterations": 2}, {"num_slots": 6}, {"background_value": 0.5}],
                         ids=lambda field: next(iter(field)))  # fmt: skip
def test_a_run_configuration_the_weights_cannot_show_converts_exactly(tmp_path, field):
    from savi_checkpoints import inputs, official_run_config, write_config_file

    from slotssm_hf.conversion.references.savi import settings_from_run
    from slotssm_hf.conversion.references.statm import STATMReference

    config = STATMConfig(**{**TINY, **field})
    params = statm_params(config)
    write_flax_checkpoint(clu_checkpoint(params), tmp_path / "ckpt-1.flax")
    run = official_run_config(config, "statm")
    write_config_file(tmp_path / "statm_config.py", run)
    convert_statm_checkpoint(tmp_path / "ckpt-1.flax", tmp_path / "out", config=tmp_path / "statm_config.py",
                             verify=True, log=lambda *_: None)  # fmt: skip
    model = STATMForVideoReconstruction.from_pretrained(tmp_path / "out").eval()
    assert {name: getattr(model.config, name) for name in field} == field
    video, boxes = inputs(model.config)
    expected = STATMReference(flatten_tree(params), settings_from_run(run))(video.permute(0, 1, 3, 4, 2).double(),
                                                                           boxes.double())  # fmt: skip
    with torch.no_grad():
        ours = model(video, boxes=boxes).reconstruction.permute(0, 1, 3, 4, 2).double()
    torch.testing.assert_close(ours, expected["outputs"], rtol=0, atol=1e-4)


def test_a_savi_configuration_is_refused_by_convert_statm(tmp_path):
    from savi_checkpoints import official_run_config, write_config_file

    write_flax_checkpoint(clu_checkpoint(statm_params(STATMConfig(**TINY))), tmp_path / "ckpt-1.flax")
    write_config_file(tmp_path / "savi_config.py", official_run_config(STATMConfig(**TINY), "savi"))
    with pytest.raises(ConversionError, match="model.module: 'savi.modules.SAVi' is not a STATM-SAVi model"):
        convert_statm_checkpoint(tmp_path / "ckpt-1.flax", tmp_path / "out", config=tmp_path / "savi_config.py",
                                 log=lambda *_: None)  # fmt: skip


@pytest.mark.parametrize("variant", ["statm_savi_conditional_small", "statm_savi_pp_conditional",
                                     "statm_savi_conditional"])  # fmt: skip
def test_the_official_configs_give_the_official_variants(variant):
    from savi_checkpoints import official_run_config

    from slotssm_hf.conversion.convert_savi import fields_from_run
    from slotssm_hf.models.configuration_statm import VARIANTS

    official = STATMConfig(**VARIANTS[variant])
    assert STATMConfig(**fields_from_run(official_run_config(official, "statm"), STATM)).to_dict() == official.to_dict()
