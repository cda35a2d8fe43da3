"""Conversion of checkpoints trained with the official SlotSSM code into `slotssm_hf` checkpoints.

An official checkpoint step folder (`checkpoint_step_N/` or `final_checkpoint/`) holds three HF-style sub-models,
`vitencoder/` (or `cnnencoder/`), `slotssm/` and `vitdecoder/` (or `sbdecoder/`), each with `config.json` and
`model.safetensors` (or `pytorch_model.bin`). `convert_official_config` maps the three configs to a
`SlotSSMConfig`, refusing what cannot be represented; `convert_official_state_dicts` maps the three state dicts to
`SlotSSMForVideoReconstruction`'s keys with a strict ledger (every source key consumed exactly once, every target
filled, shapes checked, dtypes kept); `convert_checkpoint` does the whole job atomically, optionally verifying the
result against `official_reference` computed from the source weights.
"""

import argparse
import json
import os
import pickle
import re
import secrets
import shutil
import sys
from contextlib import contextmanager
from pathlib import Path

import torch

from .configuration_slotssm import SlotSSMConfig


class ConversionError(ValueError):
    """An official checkpoint that cannot be converted; the message names the field, key or file."""


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


def rename_keys(state_dict: dict, rules: list, prefix: str, name: str) -> dict:
    """Rename a state dict's keys by `rules` ((source key pattern, target key template, a list of templates for an
    even split along dim 0, or None to drop)), prefixing the targets; every key must match exactly one rule, and
    the error for those that do not lists them all."""
    converted, unknown = {}, []
    for key, tensor in state_dict.items():
        matches = [(re.fullmatch(pattern, key), target) for pattern, target in rules]
        matches = [(m, target) for m, target in matches if m]
        if len(matches) != 1:
            unknown.append(key)
            continue
        match, target = matches[0]
        if target is None:
            continue
        if isinstance(target, str):
            converted[prefix + target.format(*match.groups())] = tensor.clone()
            continue
        if tensor.shape[0] % len(target):
            raise ConversionError(f"{name}: {key} of shape {tuple(tensor.shape)} cannot split into {len(target)}")
        for part, template in zip(tensor.chunk(len(target)), target):
            converted[prefix + template.format(*match.groups())] = part.clone()
    if unknown:
        raise ConversionError(f"{name}: keys the official layout does not have: {sorted(unknown)}")
    return converted


def convert_sub_model(model_type: str, state_dict: dict, name: str) -> dict:
    """Rename one official sub-model's keys; every key must match exactly one rule."""
    prefix, rules = RULES[model_type]
    return rename_keys(state_dict, rules, prefix, name)


def state_dict_problems(state: dict, model_class, config) -> list[str]:
    """What keeps `state` from loading strictly into `model_class(config)` (built on the meta device): the missing,
    unexpected and mis-shaped keys, each kind as one "kind: [keys]" entry; empty when it fits."""
    with torch.device("meta"):
        expected = {k: v.shape for k, v in model_class(config).state_dict().items()}
    mis_shaped = sorted(
        f"{k}: {tuple(state[k].shape)} instead of {tuple(expected[k])}"
        for k in set(expected) & set(state)
        if state[k].shape != expected[k]
    )
    kinds = {
        "missing": sorted(set(expected) - set(state)),
        "unexpected": sorted(set(state) - set(expected)),
        "wrong shape": mis_shaped,
    }
    return [f"{what}: {keys}" for what, keys in kinds.items() if keys]


def check_fits(state: dict, model_class, config):
    """Refuse a converted state dict that does not fit `model_class(config)`, listing every offending key."""
    problems = state_dict_problems(state, model_class, config)
    if problems:
        raise ConversionError("the official weights do not fit the converted config; " + "; ".join(problems))


def convert_official_state_dicts(config: SlotSSMConfig, encoder: dict, slotssm: dict, decoder: dict) -> dict:
    """The state dict of `SlotSSMForVideoReconstruction(config)` from the three official state dicts.

    Checked against a model built from `config`: a missing, unexpected or mis-shaped key is an error that lists
    every such key. Dtypes are kept (so `A_log` stays float32)."""
    from .modeling_slotssm import SlotSSMForVideoReconstruction

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
        try:
            state = torch.load(pickle_file, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as error:
            raise ConversionError(
                f"{pickle_file} was refused: it holds more than tensors (loading it would run code); "
                f"only plain state dicts are read ({error})"
            ) from error
        except Exception as error:
            raise ConversionError(f"{pickle_file} is not a readable PyTorch file ({error})") from error
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise ConversionError(f"{pickle_file} does not hold a state dict of tensors")
        return state
    raise ConversionError(f"{folder} has neither model.safetensors nor pytorch_model.bin")


def read_official_checkpoint(step_folder: Path) -> dict:
    """{"encoder" | "slotssm" | "decoder": (config dict, state dict)} from an official checkpoint step folder."""
    parts = {}
    for part, names in SUB_MODEL_FOLDERS.items():
        found = [step_folder / name for name in names if (step_folder / name).is_dir()]
        if len(found) != 1:
            raise ConversionError(f"{step_folder} must hold exactly one of the sub-model folders {'/, '.join(names)}/")
        config_file = found[0] / "config.json"
        try:
            config = json.loads(config_file.read_text())
        except (OSError, ValueError) as error:
            raise ConversionError(f"{config_file} is missing or not valid JSON ({error})") from error
        parts[part] = (config, read_weights(found[0]))
    return parts


def verify_conversion(folder: Path, parts: dict, num_frames: int = 4, seed: int = 0) -> float:
    """Max abs difference between the converted model in `folder` and the official reference computed from the
    source weights, over the reconstruction and the slots of a seeded clip (float32)."""
    from .modeling_slotssm import SlotSSMForVideoReconstruction
    from .official_reference import OfficialReference

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


def check_output_path(source: Path, output: Path, overwrite: bool):
    """Refuse, before anything is read or written, an output that is the source, lies inside it or holds it (a
    replaced output would take the official checkpoint with it), or that is a file."""
    source_path, output_path = source.resolve(), output.resolve()
    if output_path == source_path or source_path in output_path.parents or output_path in source_path.parents:
        raise ConversionError(
            f"the output {output} and the source {source} overlap (the same folder, or one inside the other); "
            "write the converted checkpoint to a folder outside the official one"
        )
    if output.exists() and not output.is_dir():
        raise ConversionError(f"{output} is a file, not a checkpoint folder; it is never replaced: choose another one")
    if output.exists() and not overwrite:
        raise ConversionError(f"{output} already exists; pass --overwrite to replace it")


def move_into_place(staging: Path, output: Path, log):
    """Rename the complete `staging` folder to `output`. An existing `output` is first renamed aside, put back if
    the second rename fails, and deleted only once the new folder is in place; failing to delete it is reported,
    not an error, since the conversion itself succeeded."""
    if not output.exists():
        staging.rename(output)
        return
    old = output.with_name(f".{output.name}.replaced-{os.getpid()}")
    output.rename(old)
    try:
        staging.rename(output)
    except BaseException:
        old.rename(output)
        raise
    try:
        shutil.rmtree(old)
    except OSError as error:
        log(f"warning: could not delete the replaced checkpoint, left at {old} ({error}); delete it yourself")


@contextmanager
def staged_folder(output: Path, log=print):
    """A new folder beside `output` to write into; when the block completes it is moved into place
    (`move_into_place`), and when the block fails it is deleted, leaving nothing behind. Callers check `output` first
    (`check_output_path`)."""
    output.parent.mkdir(parents=True, exist_ok=True)
    # mkdir, not tempfile.mkdtemp: the folder gets the user's umask instead of mode 0700.
    staging = output.with_name(f".{output.name}.incomplete-{secrets.token_hex(4)}")
    staging.mkdir()
    try:
        yield staging
        move_into_place(staging, output, log)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def convert_checkpoint(source, output, verify: bool = False, overwrite: bool = False, tolerance: float = 1e-4,
                       allow_non_finite: bool = False, log=print) -> Path:  # fmt: skip
    """Convert the official checkpoint at `source` (a step folder or a run folder) into `output`.

    The result is written to a temporary folder beside `output` and renamed into place only once complete (and
    verified, with `verify=True`), so a failure leaves nothing behind. An existing `output` folder is replaced
    only with `overwrite=True`; an output that overlaps the source, or is a file, is refused. Weights holding NaN
    or infinite values are refused unless `allow_non_finite=True`.
    """
    from .hub import non_finite_weights, shortlist
    from .model_card import render_model_card
    from .modeling_slotssm import SlotSSMForVideoReconstruction
    from .video_processing_slotssm import SlotSSMVideoProcessor

    source, output = Path(source), Path(output)
    check_output_path(source, output, overwrite)
    step_folder = find_step_folder(source)
    if step_folder != source:
        log(f"converting the latest checkpoint in {source}: {step_folder.name}")
    parts = read_official_checkpoint(step_folder)
    try:
        config = convert_official_config(*(parts[p][0] for p in SUB_MODEL_FOLDERS))
    except KeyError as error:
        raise ConversionError(
            f"the official config.json files in {step_folder} lack the field {error.args[0]!r}"
        ) from error
    state = convert_official_state_dicts(config, *(parts[p][1] for p in SUB_MODEL_FOLDERS))
    non_finite = non_finite_weights(state.items())
    if non_finite and not allow_non_finite:
        raise ConversionError(
            f"the official weights hold NaN or infinite values ({shortlist(non_finite)}): the training run "
            "diverged before this checkpoint; convert an earlier one, or pass --allow-non-finite to convert it anyway"
        )
    with torch.device("meta"):
        model = SlotSSMForVideoReconstruction(config)
    model.load_state_dict(state, strict=True, assign=True)  # assign keeps the source tensors and their dtypes

    with staged_folder(output, log) as staging:
        model.save_pretrained(staging)
        # The official data pipeline: short-side bicubic resize and centre crop to the model's size, ImageNet
        # mean / std, 16 consecutive frames (the processor's defaults at this size).
        size = config.image_size
        processor = SlotSSMVideoProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size})
        processor.save_pretrained(staging)
        provenance = (
            f"Converted from a checkpoint trained with the official SlotSSM code (`{step_folder.name}`) by "
            "`slotssm-hf convert-official`."
        )
        render_model_card(model, output.name, provenance, has_processor=True).save(staging / "README.md")
        if verify:
            try:
                difference = verify_conversion(staging, parts)
            except Exception as error:  # the reference reads the official configs more strictly than the converter
                raise ConversionError(
                    f"verification could not run the official reference ({type(error).__name__}: {error})"
                ) from error
            log(f"max abs difference against the official reference: {difference:.3g}")
            if not difference <= tolerance:
                raise ConversionError(f"verification failed: max abs difference {difference:.3g} > {tolerance:g}")
    log(f"wrote {output}")
    return output


def add_arguments(parser: argparse.ArgumentParser):
    parser.add_argument("source", help="an official checkpoint step folder, or a run folder (its latest step is used)")
    parser.add_argument("output", help="folder to write the slotssm_hf checkpoint to")
    parser.add_argument("--verify", action="store_true", help="compare with the official reference; fail above 1e-4")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    parser.add_argument(
        "--allow-non-finite", action="store_true", help="convert weights that hold NaN or infinite values"
    )


def run(args: argparse.Namespace) -> int:
    try:
        convert_checkpoint(
            args.source,
            args.output,
            verify=args.verify,
            overwrite=args.overwrite,
            allow_non_finite=args.allow_non_finite,
        )
    except ConversionError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except Exception as error:  # one line, not a traceback, whatever went wrong
        print(f"error: the conversion failed ({type(error).__name__}: {error})", file=sys.stderr)
        return 1
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="slotssm-hf convert-official",
        description="Convert an official SlotSSM checkpoint into a slotssm_hf checkpoint.",
    )
    add_arguments(parser)
    return run(parser.parse_args(argv))
