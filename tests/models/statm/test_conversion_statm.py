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
