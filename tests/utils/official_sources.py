"""A small official checkpoint for each `slotssm-hf convert-<family>` command, in its official on-disk format, with
the arguments that convert it; and a malformed one of each."""

from pathlib import Path

import numpy as np
import torch


def write_official_source(command: str, folder: Path, edit=None) -> tuple[Path, list[str]]:
    """(source, extra arguments) of a convertible official checkpoint written under `folder`. `edit(weights)`, when
    given, changes the weights in place before they are written: GrootV's state dict, the other Flax families'
    `params` tree (SlotSSM's sub-model folders take no edit)."""
    folder.mkdir(parents=True, exist_ok=True)
    edit = edit or (lambda weights: None)
    if command in ("convert-slotssm", "convert-official"):
        from slotssm_checkpoints import OFFICIAL_VARIANTS, official_configs, write_official_checkpoint

        configs = official_configs(**OFFICIAL_VARIANTS["cnn-encoder-spatial-broadcast-x8"])
        write_official_checkpoint(folder / "step", configs)
        return folder / "step", []
    if command in ("convert-savi", "convert-statm"):
        from flax_format import write_flax_checkpoint
        from savi_checkpoints import TINY, clu_checkpoint, official_params, official_run_config, write_config_file
        from statm_checkpoints import statm_params

        from slotssm_hf import SAViConfig, STATMConfig

        family = command.removeprefix("convert-")
        config = (SAViConfig if family == "savi" else STATMConfig)(**TINY)
        params = official_params(config) if family == "savi" else statm_params(config)
        checkpoint = clu_checkpoint(params)
        edit(params)  # the parameters only: the optimizer's moments keep the arrays they were made from
        write_flax_checkpoint(checkpoint, folder / "ckpt-1.flax")
        write_config_file(folder / "config.py", official_run_config(config, family))
        return folder / "ckpt-1.flax", ["--config", str(folder / "config.py")]
    if command == "convert-convs5":
        from convs5_checkpoints import official_checkpoint, official_params, official_run_config, write_run_args

        (folder / "run" / "checkpoints").mkdir(parents=True)
        params = official_params(np.random.default_rng(0))
        edit(params)
        official_checkpoint(folder / "run" / "checkpoints" / "checkpoint_1", params)
        write_run_args(folder / "run" / "args", official_run_config())
        return folder / "run", []
    if command == "convert-grootv":
        from grootv_checkpoints import official_state_dict

        state = official_state_dict(16, [1, 2, 1, 1], 10)
        edit(state)
        torch.save({"model": state}, folder / "ckpt.pth")
        return folder / "ckpt.pth", []
    raise ValueError(f"no official checkpoint for {command}")


def write_malformed_source(command: str, folder: Path) -> Path:
    """A source in the place and under the name the command reads, holding bytes that are no checkpoint."""
    folder.mkdir(parents=True, exist_ok=True)
    garbage = b"\x93\x00not a checkpoint\xff" * 8
    if command in ("convert-slotssm", "convert-official"):
        for sub_model in ("vitencoder", "slotssm", "vitdecoder"):
            (folder / "step" / sub_model).mkdir(parents=True)
            (folder / "step" / sub_model / "config.json").write_text('{"model_type": "vit_encoder", "image_size": 64}')
            (folder / "step" / sub_model / "model.safetensors").write_bytes(garbage)
        return folder / "step"
    name = {"convert-savi": "ckpt-1.flax", "convert-statm": "ckpt-1.flax", "convert-convs5": "checkpoint_1",
            "convert-grootv": "ckpt.pth"}[command]  # fmt: skip
    (folder / name).write_bytes(garbage)
    return folder / name
