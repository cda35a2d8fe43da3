"""Conversion of checkpoints trained with the official SlotSSM code into `slotssm_hf` checkpoints.

An official checkpoint step folder (`checkpoint_step_N/` or `final_checkpoint/`) holds three HF-style sub-models,
`vitencoder/` (or `cnnencoder/`), `slotssm/` and `vitdecoder/` (or `sbdecoder/`), each with `config.json` and
`model.safetensors` (or `pytorch_model.bin`). `convert_official_config` maps the three configs to a
`SlotSSMConfig`, refusing what cannot be represented; `convert_official_state_dicts` maps the three state dicts to
`SlotSSMForVideoReconstruction`'s keys with a strict ledger (every source key consumed exactly once, every target
filled, shapes checked, dtypes kept); `convert_checkpoint` does the whole job atomically, optionally verifying the
result against `references.slotssm` computed from the source weights.
"""

import json
import re
import sys
from pathlib import Path

import torch

from ..models.configuration_slotssm import SlotSSMConfig
from .conversion_utils import (
    ConversionError,
    RunConfiguration,
    check_fits,
    provenance_text,
    read_torch_file,
    rename_keys,
    run_converter,
    start_conversion,
)


def _require(condition: bool, message: str):
    if not condition:
        raise ConversionError(message)


def convert_official_config(encoder: dict, slotssm: dict, decoder: dict) -> SlotSSMConfig:
    """SlotSSMConfig equivalent to the official `vitencoder`/`cnnencoder`, `slotssm` and decoder configs."""
    d_model = slotssm["d_model"]
    _require(slotssm.get("use_cross_attn", True), "slotssm config: use_cross_attn=False cannot run in the official code")
    _require(
        slotssm.get("attn_impl", "flash_attention_2") == "flash_attention_2",
        f"slotssm config: attn_impl={slotssm.get('attn_impl')!r} cannot run in the official code (its eager slot "
        "self-attention fails); only 'flash_attention_2' checkpoints exist",
    )
    fields = {
        "num_slots": slotssm["num_slots"],
        "hidden_size": d_model,
        "num_hidden_layers": slotssm["num_blocks"],
        "use_inverted_attention": slotssm["use_inverted_attention"],
        "cross_attention_num_heads": slotssm.get("encoder_attn_num_heads") or d_model // 64,
        "num_attention_heads": slotssm.get("space_attn_num_heads") or d_model // 64,
        "use_ffn": slotssm.get("use_ffn", False),
        "mamba_version": slotssm.get("mamba_version", "mamba2"),
        "mamba_d_state": slotssm.get("mamba_d_state", 128),
        "mamba_d_conv": slotssm.get("mamba_d_conv", 4),
        "mamba_expand": slotssm.get("mamba_expand", 2),
        "mamba_headdim": slotssm.get("mamba_headdim", 64),
    }

    if encoder["model_type"] == "vit_encoder":
        _require(encoder.get("num_cls_tokens", 1) == 1, "vitencoder config: only num_cls_tokens=1 is supported")
        _require(
            encoder.get("learn_initial_cls_tokens", True),
            "vitencoder config: learn_initial_cls_tokens=False (sampled CLS tokens) is not supported",
        )
        _require(not encoder.get("hidden_dropout_prob"), "vitencoder config: hidden_dropout_prob must be 0")
        fields.update(
            encoder_type="vit",
            image_size=encoder["image_size"],
            patch_size=encoder["patch_size"],
            num_channels=encoder["num_channels"],
            encoder_hidden_size=encoder["hidden_size"],
            encoder_num_layers=encoder["num_hidden_layers"],
            encoder_num_attention_heads=encoder["num_attention_heads"],
            encoder_intermediate_size=encoder.get("intermediate_size"),
            encoder_hidden_act=encoder.get("hidden_act", "gelu"),
            encoder_output_size=encoder.get("output_size") or encoder["hidden_size"],
        )
    elif encoder["model_type"] == "cnn_encoder":
        fields.update(
            encoder_type="cnn",
            num_channels=encoder["input_channels"],
            encoder_hidden_size=encoder["hidden_size"],
            encoder_output_size=encoder["out_channels"],
            cnn_kernel_size=encoder["kernel_size"],
            cnn_downsampling_ratio=encoder["downsampling_ratio"],
            encoder_num_layers=encoder["num_hidden_layers"],
            cnn_blocks_per_stage=encoder["blocks_per_layer"],
        )
    else:
        raise ConversionError(f"encoder config: unknown model_type {encoder['model_type']!r}")

    _require(
        slotssm.get("input_d_model") == fields["encoder_output_size"],
        f"slotssm config: input_d_model ({slotssm.get('input_d_model')}) must equal the encoder's output width "
        f"({fields['encoder_output_size']}); the official code cannot run otherwise",
    )

    if decoder["model_type"] == "vit_decoder":
        _require(not decoder.get("hidden_dropout_prob"), "vitdecoder config: hidden_dropout_prob must be 0")
        _require(
            decoder.get("num_cls_tokens") == fields["num_slots"],
            f"vitdecoder config: num_cls_tokens ({decoder.get('num_cls_tokens')}) must equal num_slots "
            f"({fields['num_slots']})",
        )
        _require(
            (decoder.get("input_size") or decoder["hidden_size"]) == d_model,
            f"vitdecoder config: input_size must equal the slot width {d_model}",
        )
        for name in ("image_size", "patch_size", "num_channels"):
            if name in fields:
                _require(
                    decoder[name] == fields[name],
                    f"vitdecoder config: {name} ({decoder[name]}) differs from the encoder's ({fields[name]}); "
                    "slotssm_hf uses one value for both",
                )
        fields.update(
            decoder_type="vit",
            image_size=decoder["image_size"],
            patch_size=decoder["patch_size"],
            decoder_hidden_size=decoder["hidden_size"],
            decoder_num_layers=decoder["num_hidden_layers"],
            decoder_num_attention_heads=decoder["num_attention_heads"],
            decoder_intermediate_size=decoder.get("intermediate_size"),
            decoder_hidden_act=decoder.get("hidden_act", "relu"),
        )
    elif decoder["model_type"] == "spatial_broadcast_decoder":
        _require(decoder["in_channels"] == d_model, f"sbdecoder config: in_channels must equal the slot width {d_model}")
        _require(
            decoder["out_channels"] == fields["num_channels"],
            f"sbdecoder config: out_channels ({decoder['out_channels']}) must equal the input channels "
            f"({fields['num_channels']})",
        )
        if "image_size" in fields:
            _require(
                decoder["output_resolution"] == fields["image_size"],
                f"sbdecoder config: output_resolution ({decoder['output_resolution']}) differs from the encoder's "
                f"image_size ({fields['image_size']})",
            )
        fields.update(
            decoder_type="spatial_broadcast",
            image_size=decoder["output_resolution"],
            decoder_hidden_size=decoder["hidden_size"],
            decoder_initial_size=decoder["initial_size"],
        )
    else:
        raise ConversionError(f"decoder config: unknown model_type {decoder['model_type']!r}")
    try:
        return SlotSSMConfig(**fields)
    except Exception as error:  # the config's own validation names the field
        raise ConversionError(f"the official configs map to an invalid SlotSSMConfig: {error}") from error


_QKV = ("q_proj", "k_proj", "v_proj")
_TRANSFORMER_LAYER_RULES = [
    (r"encoder\.layers\.(\d+)\.self_attn\.in_proj_(weight|bias)", [f"layers.{{0}}.attention.{p}.{{1}}" for p in _QKV]),
    (r"encoder\.layers\.(\d+)\.self_attn\.out_proj\.(weight|bias)", "layers.{0}.attention.o_proj.{1}"),
    (r"encoder\.layers\.(\d+)\.linear1\.(weight|bias)", "layers.{0}.mlp.fc1.{1}"),
    (r"encoder\.layers\.(\d+)\.linear2\.(weight|bias)", "layers.{0}.mlp.fc2.{1}"),
    (r"encoder\.layers\.(\d+)\.norm1\.(weight|bias)", "layers.{0}.attention_norm.{1}"),
    (r"encoder\.layers\.(\d+)\.norm2\.(weight|bias)", "layers.{0}.mlp_norm.{1}"),
]
# (source key pattern, target key template or list of templates for an even split along dim 0 or None to drop),
# per official sub-model; the target prefix places the sub-model inside SlotSSMForVideoReconstruction.
RULES = {
    "vit_encoder": ("slotssm.encoder.", [
        (r"patch_embedding\.(weight|bias)", "patch_embedding.{0}"),
        (r"cls_tokens", "cls_token"),
        (r"position_embeddings", "position_embeddings"),
        *_TRANSFORMER_LAYER_RULES,
        (r"output_proj\.(weight|bias)", "output_proj.{0}"),
    ]),
    "cnn_encoder": ("slotssm.encoder.", [
        (r"conv1\.(weight|bias)", "stem.{0}"),
        (r"norm1\.(weight|bias)", "stem_norm.{0}"),
        (r"layers\.(\d+)\.(\d+)\.((?:norm|conv)[12]\.(?:weight|bias))", "stages.{0}.{1}.{2}"),
        (r"final_(norm|conv)\.(weight|bias)", "final_{0}.{1}"),
    ]),
    "slot_ssm": ("slotssm.", [
        (r"init_slots", "initial_slots"),
        (r"blocks\.(\d+)\.cross_attn_input_norm\.(weight|bias)", "layers.{0}.cross_attention_slot_norm.{1}"),
        (r"blocks\.(\d+)\.cross_attn_ref_norm\.(weight|bias)", "layers.{0}.cross_attention_input_norm.{1}"),
        (r"blocks\.(\d+)\.input_proj\.(weight|bias)", "layers.{0}.cross_attention_input_proj.{1}"),
        (r"blocks\.(\d+)\.cross_attn\.proj_([qkvo])\.(weight|bias)", "layers.{0}.cross_attention.{1}_proj.{2}"),
        (r"blocks\.(\d+)\.cross_attn\.Wq\.(weight|bias)", "layers.{0}.cross_attention.q_proj.{1}"),
        (r"blocks\.(\d+)\.cross_attn\.Wkv\.(weight|bias)",
         ["layers.{0}.cross_attention.k_proj.{1}", "layers.{0}.cross_attention.v_proj.{1}"]),
        (r"blocks\.(\d+)\.cross_attn\.out_proj\.(weight|bias)", "layers.{0}.cross_attention.o_proj.{1}"),
        (r"blocks\.(\d+)\.time_mixer_norm\.(weight|bias)", "layers.{0}.time_mixer_norm.{1}"),
        (r"blocks\.(\d+)\.time_mixer\.(.+)", "layers.{0}.time_mixer.{1}"),
        (r"blocks\.(\d+)\.space_attn_norm\.(weight|bias)", "layers.{0}.self_attention_norm.{1}"),
        (r"blocks\.(\d+)\.space_attn\.Wqkv\.(weight|bias)", [f"layers.{{0}}.self_attention.{p}.{{1}}" for p in _QKV]),
        (r"blocks\.(\d+)\.space_attn\.out_proj\.(weight|bias)", "layers.{0}.self_attention.o_proj.{1}"),
        (r"blocks\.(\d+)\.ffn_norm\.(weight|bias)", "layers.{0}.mlp_norm.{1}"),
        (r"blocks\.(\d+)\.ffn\.0\.(weight|bias)", "layers.{0}.mlp.fc1.{1}"),
        (r"blocks\.(\d+)\.ffn\.2\.(weight|bias)", "layers.{0}.mlp.fc2.{1}"),
    ]),
    "vit_decoder": ("decoder.", [
        (r"mask_token", "mask_token"),
        (r"position_embeddings", "position_embeddings"),
        (r"input_proj\.(weight|bias)", "input_proj.{0}"),
        *_TRANSFORMER_LAYER_RULES,
        (r"pred\.0\.(weight|bias)", "head_norm.{0}"),
        (r"pred\.1\.(weight|bias)", "head.{0}"),
    ]),
    "spatial_broadcast_decoder": ("decoder.", [
        (r"norm\.(weight|bias)", "norm.{0}"),
        (r"pos\.grid_[xy]", None),  # fixed coordinate grids, recomputed by the decoder
        (r"cnn_transpose\.([012])\.conv\.(weight|bias)", "upsample.{0}.0.{1}"),
        (r"cnn_transpose\.([012])\.norm\.(weight|bias)", "upsample.{0}.1.{1}"),
        (r"cnn_transpose\.3\.(weight|bias)", "output_conv.{0}"),
    ]),
}  # fmt: skip


def convert_sub_model(model_type: str, state_dict: dict, name: str) -> dict:
    """Rename one official sub-model's keys; every key must match exactly one rule."""
    prefix, rules = RULES[model_type]
    return rename_keys(state_dict, rules, prefix, name)


def convert_official_state_dicts(config: SlotSSMConfig, encoder: dict, slotssm: dict, decoder: dict) -> dict:
    """The state dict of `SlotSSMForVideoReconstruction(config)` from the three official state dicts.

    Checked against a model built from `config`: a missing, unexpected or mis-shaped key is an error that lists
    every such key. Dtypes are kept (so `A_log` stays float32)."""
    from ..models.modeling_slotssm import SlotSSMForVideoReconstruction

    encoder_type = "vit_encoder" if config.encoder_type == "vit" else "cnn_encoder"
    decoder_type = "vit_decoder" if config.decoder_type == "vit" else "spatial_broadcast_decoder"
    converted = {
        **convert_sub_model(encoder_type, encoder, "encoder"),
        **convert_sub_model("slot_ssm", slotssm, "slotssm"),
        **convert_sub_model(decoder_type, decoder, "decoder"),
    }
    check_fits(converted, SlotSSMForVideoReconstruction, config)
    return converted


# Official sub-model folder names (the saving class's name, lower-cased), by role.
SUB_MODEL_FOLDERS = {
    "encoder": ("vitencoder", "cnnencoder"),
    "slotssm": ("slotssm",),
    "decoder": ("vitdecoder", "sbdecoder"),
}


def find_step_folder(path) -> Path:
    """`path` when it holds the sub-model folders, else the latest checkpoint inside it (`final_checkpoint/`, or
    the `checkpoint_step_N/` with the largest N)."""
    path = Path(path)
    if not path.is_dir():
        raise ConversionError(f"{path} is not a folder")
    if (path / "slotssm").is_dir():
        return path
    steps = sorted(
        (int(m.group(1)), child)
        for child in path.iterdir()
        if child.is_dir() and (m := re.fullmatch(r"checkpoint_step_(\d+)", child.name))
    )
    if (path / "final_checkpoint").is_dir():
        return path / "final_checkpoint"
    if steps:
        return steps[-1][1]
    raise ConversionError(
        f"{path} holds neither the official sub-model folders (vitencoder/, slotssm/, vitdecoder/) nor "
        "checkpoint_step_N/ or final_checkpoint/ folders"
    )


def read_weights(folder: Path) -> dict:
    """A sub-model's state dict: model.safetensors, else pytorch_model.bin read with weights_only=True."""
    from safetensors.torch import load_file

    safetensors_file, pickle_file = folder / "model.safetensors", folder / "pytorch_model.bin"
    if safetensors_file.is_file():
        try:
            return load_file(safetensors_file)
        except Exception as error:
            raise ConversionError(f"{safetensors_file} is not a readable safetensors file ({error})") from error
    if pickle_file.is_file():
        state = read_torch_file(pickle_file, "plain state dicts")
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise ConversionError(f"{pickle_file} does not hold a state dict of tensors")
        return state
    raise ConversionError(f"{folder} has neither model.safetensors nor pytorch_model.bin")


def sub_model_folder(step_folder: Path, part: str) -> Path:
    names = SUB_MODEL_FOLDERS[part]
    found = [step_folder / name for name in names if (step_folder / name).is_dir()]
    if len(found) != 1:
        raise ConversionError(f"{step_folder} must hold exactly one of the sub-model folders {'/, '.join(names)}/")
    return found[0]


def read_sub_model_config(folder: Path) -> dict:
    config_file = folder / "config.json"
    try:
        config = json.loads(config_file.read_text())
    except (OSError, ValueError) as error:
        raise ConversionError(f"{config_file} is missing or not valid JSON ({error})") from error
    if not isinstance(config, dict):
        raise ConversionError(f"{config_file} holds a {type(config).__name__}, not a config")
    return config


def read_official_checkpoint(step_folder: Path, config_folder: Path | None = None) -> dict:
    """{"encoder" | "slotssm" | "decoder": (config dict, state dict)} from an official checkpoint step folder; the
    sub-models' config.json are read from `config_folder` (a step folder of the same run) when given."""
    parts = {}
    for part in SUB_MODEL_FOLDERS:
        weights = sub_model_folder(step_folder, part)
        configs = weights if config_folder is None else sub_model_folder(config_folder, part)
        if configs.name != weights.name:
            raise ConversionError(
                f"the configuration {configs} is for a {configs.name}, the checkpoint has a {weights.name}"
            )
        parts[part] = (read_sub_model_config(configs), read_weights(weights))
    return parts


def verify_conversion(folder: Path, parts: dict, num_frames: int = 4, seed: int = 0) -> float:
    """Max abs difference between the converted model in `folder` and the official reference computed from the
    source weights, over the reconstruction and the slots of a seeded clip (float32)."""
    from ..models.modeling_slotssm import SlotSSMForVideoReconstruction
    from .references.slotssm import OfficialReference

    reference = OfficialReference(*(parts[p][0] for p in SUB_MODEL_FOLDERS)).float().eval()
    reference.load_official_state_dicts(*(parts[p][1] for p in SUB_MODEL_FOLDERS))
    model = SlotSSMForVideoReconstruction.from_pretrained(folder).float().eval()
    config = model.config
    generator = torch.Generator().manual_seed(seed)
    frames = torch.randn(1, num_frames, config.num_channels, config.image_size, config.image_size, generator=generator)
    with torch.no_grad():
        recon, _, slots, _ = reference(frames)
        ours = model(frames)
    return max((ours.reconstruction - recon).abs().max().item(), (ours.last_hidden_state - slots).abs().max().item())


WEIGHTS_LICENSE = (
    "License of the weights: set by whoever trained them; the official SlotSSM code (JindongJiang/SlotSSMs) is under "
    "the MIT license."
)


def convert_checkpoint(source, output, verify: bool = False, overwrite: bool = False, tolerance: float = 1e-4,
                       allow_non_finite: bool = False, config=None, revision: str | None = None, push_to_hub=None,
                       token=None, endpoint=None, log=print) -> Path:  # fmt: skip
    """Convert the official checkpoint at `source` (a step folder or a run folder, locally or in a Hub model repo)
    into `output`.

    The architecture is the official sub-models' `config.json` (those of the checkpoint, or of the step folder
    `config`), checked against the weights. The result is written to a temporary folder beside `output` and renamed
    into place only once complete (and verified, with `verify=True`; published, with `push_to_hub`), so a failure
    leaves nothing behind. An existing `output` folder is replaced only with `overwrite=True`; an output that
    overlaps the source, or is a file, is refused. Weights holding NaN or infinite values are refused unless
    `allow_non_finite=True`.
    """
    from ..models.modeling_slotssm import SlotSSMForVideoReconstruction
    from ..models.video_processing_slotssm import SlotSSMVideoProcessor

    conversion = start_conversion(source, output, overwrite, revision, push_to_hub, token, endpoint, log,
                                  "convert-slotssm")  # fmt: skip
    step_folder = find_step_folder(conversion.source)
    if step_folder != conversion.source:
        log(f"converting the latest checkpoint in {conversion.source}: {step_folder.name}")
    config_folder = None if config is None else find_step_folder(conversion.config_path(config))
    parts = read_official_checkpoint(step_folder, config_folder)
    try:
        model_config = convert_official_config(*(parts[p][0] for p in SUB_MODEL_FOLDERS))
    except KeyError as error:
        raise ConversionError(
            f"the official config.json files in {config_folder or step_folder} lack the field {error.args[0]!r}"
        ) from error
    configuration = RunConfiguration(
        {p: parts[p][0] for p in SUB_MODEL_FOLDERS}, "the sub-models' config.json" + (
            f" in {config_folder}" if config_folder else ""), {})  # fmt: skip
    configuration.log_to(log)
    state = convert_official_state_dicts(model_config, *(parts[p][1] for p in SUB_MODEL_FOLDERS))
    with torch.device("meta"):
        model = SlotSSMForVideoReconstruction(model_config)
    model.load_state_dict(state, strict=True, assign=True)  # assign keeps the source tensors and their dtypes
    # The official data pipeline: short-side bicubic resize and centre crop to the model's size, ImageNet mean / std,
    # 16 consecutive frames (the processor's defaults at this size).
    size = model_config.image_size
    processor = SlotSSMVideoProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size})
    provenance = provenance_text(
        f"a checkpoint trained with the official SlotSSM code ({conversion.source_description(step_folder.name)})",
        "convert-slotssm", WEIGHTS_LICENSE, configuration,
    )  # fmt: skip

    def difference_of(folder):
        try:
            return verify_conversion(folder, parts)
        except Exception as error:  # the reference reads the official configs more strictly than the converter
            raise ConversionError(
                f"verification could not run the official reference ({type(error).__name__}: {error})"
            ) from error

    verify = ("the official reference", difference_of) if verify else None
    return conversion.write(model, processor, provenance, verify, tolerance, allow_non_finite)


def main(argv=None) -> int:
    return run_converter(
        argv, convert_checkpoint, "convert-slotssm",
        "Convert an official SlotSSM checkpoint into a slotssm_hf checkpoint.",
        "an official checkpoint step folder, or a run folder (its latest step is used)",
        "the official reference (the official architecture from torch and transformers primitives)",
        "a step folder of the same run whose sub-models' config.json to use (default: the checkpoint's own)",
    )  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
