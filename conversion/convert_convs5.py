"""Conversion of checkpoints written by the official ConvS5 training (NVlabs/ConvSSM, JAX/Flax) into
`ConvS5ForVideoPrediction` checkpoints, without JAX.

The official training saves `<run>/checkpoints/checkpoint_<step>` with `flax.training.checkpoints`: one msgpack map
{step, params, opt_state, model_state}. Only `params` is converted (`opt_state` holds Adam's moments). The
architecture is read from the parameter shapes; what the shapes cannot tell (the frame size, whether the
eigenvalues were clipped, the GroupNorm groups) takes the Moving-MNIST configs' values unless given.

Layout changes, each named in `RULES` and tested:
- Flax convolution kernels are HWIO, torch's OIHW: `conv`; dense kernels are (in, out), torch's (out, in): `dense`.
- Flax norms' `scale` is torch's `weight` (their epsilon, 1e-6, is the config's default).
- `log_step` is stored (P, 1): `squeeze`.
- `B` is stored as a (P, U k k, 2) matrix (real and imaginary parts on the last axis), each row the (U, k, k)
  kernel of one state channel: `b_matrix` splits it into real and imaginary (P, U, k, k) kernels.
- `C` is stored as an HWIO kernel (k, k, P, U, 2): `c_kernel` splits it into (U, P, k, k) kernels.

Converted official weights keep the official license: NVIDIA's source code license, non-commercial use only.
"""

import math
import re
import sys
from pathlib import Path

import numpy as np
import torch

from ..models.configuration_convs5 import ConvS5Config
from .conversion_utils import (
    ConversionError,
    check_output_path,
    run_converter,
    state_dict_problems,
    write_converted,
)
from .flax_checkpoint import FlaxCheckpointError, find_flax_checkpoint, flatten_tree, read_flax_checkpoint

LICENSE_NOTE = (
    "The weights were trained with the official ConvS5 code (NVlabs/ConvSSM) and are under NVIDIA's source code "
    "license: non-commercial use only (research or evaluation)."
)

_BLOCK = r"ResNetBlock_(\d+)/"
_TECO_BLOCK_RULES = [
    (_BLOCK + r"GroupNorm_0/scale", "blocks.{0}.norm1.weight", "copy"),
    (_BLOCK + r"GroupNorm_0/bias", "blocks.{0}.norm1.bias", "copy"),
    (_BLOCK + r"GroupNorm_1/scale", "blocks.{0}.norm2.weight", "copy"),
    (_BLOCK + r"GroupNorm_1/bias", "blocks.{0}.norm2.bias", "copy"),
    (_BLOCK + r"Conv_0/kernel", "blocks.{0}.conv1.weight", "conv"),
    (_BLOCK + r"Conv_0/bias", "blocks.{0}.conv1.bias", "copy"),
    (_BLOCK + r"Conv_1/kernel", "blocks.{0}.conv2.weight", "conv"),
    (_BLOCK + r"AddBias_0/bias", "blocks.{0}.bias", "copy"),
    (_BLOCK + r"skip/kernel", "blocks.{0}.skip.weight", "conv"),
]
_LAYER = r"sequence_model/layers_(\d+)/"
_CD = _LAYER + r"seq/C_D_conv/"
# (Flax key pattern, torch key template or templates, layout change); every key must match exactly one rule.
RULES = [
    (r"encoder/Conv_0/kernel", "convs5.encoder.conv_in.weight", "conv"),
    (r"encoder/Conv_0/bias", "convs5.encoder.conv_in.bias", "copy"),
    *[("encoder/" + pattern, "convs5.encoder." + target, how) for pattern, target, how in _TECO_BLOCK_RULES],
    (r"action_embeds/embedding", "convs5.action_embeddings.weight", "copy"),
    (r"action_conv/Conv_0/kernel", "convs5.action_proj.weight", "conv"),
    (r"action_conv/Conv_0/bias", "convs5.action_proj.bias", "copy"),
    (_LAYER + r"norm/scale", "convs5.layers.{0}.norm.weight", "copy"),
    (_LAYER + r"norm/bias", "convs5.layers.{0}.norm.bias", "copy"),
    (_LAYER + r"seq/(Lambda_re|Lambda_im)", "convs5.layers.{0}.ssm.{1}", "copy"),
    (_LAYER + r"seq/log_step", "convs5.layers.{0}.ssm.log_step", "squeeze"),
    (_LAYER + r"seq/B", ("convs5.layers.{0}.ssm.B_real", "convs5.layers.{0}.ssm.B_imag"), "b_matrix"),
    (_LAYER + r"seq/C", ("convs5.layers.{0}.ssm.C_real", "convs5.layers.{0}.ssm.C_imag"), "c_kernel"),
    (_CD + r"GroupNorm_0/scale", "convs5.layers.{0}.ssm.output_block.norm1.weight", "copy"),
    (_CD + r"GroupNorm_0/bias", "convs5.layers.{0}.ssm.output_block.norm1.bias", "copy"),
    (_CD + r"GroupNorm_1/scale", "convs5.layers.{0}.ssm.output_block.norm2.weight", "copy"),
    (_CD + r"GroupNorm_1/bias", "convs5.layers.{0}.ssm.output_block.norm2.bias", "copy"),
    (_CD + r"Conv_0/kernel", "convs5.layers.{0}.ssm.output_block.conv1.weight", "conv"),
    (_CD + r"Conv_0/bias", "convs5.layers.{0}.ssm.output_block.conv1.bias", "copy"),
    (_CD + r"Conv_1/kernel", "convs5.layers.{0}.ssm.output_block.conv2.weight", "conv"),
    (_CD + r"Conv_1/bias", "convs5.layers.{0}.ssm.output_block.conv2.bias", "copy"),
    (r"decoder/Conv_0/kernel", "decoder.conv_in.weight", "conv"),
    (r"decoder/Conv_0/bias", "decoder.conv_in.bias", "copy"),
    *[("decoder/" + pattern, "decoder." + target, how) for pattern, target, how in _TECO_BLOCK_RULES],
    (r"decoder/LayerNorm_0/scale", "decoder.norm.weight", "copy"),
    (r"decoder/LayerNorm_0/bias", "decoder.norm.bias", "copy"),
    (r"decoder/Dense_0/kernel", "decoder.proj.weight", "dense"),
    (r"decoder/Dense_0/bias", "decoder.proj.bias", "copy"),
]


def _b_matrix(array: np.ndarray, key: str, config: ConvS5Config) -> tuple[np.ndarray, np.ndarray]:
    k = config.b_kernel_size
    if array.ndim != 3 or array.shape[-1] != 2 or array.shape[1] != config.hidden_size * k * k:
        raise ConversionError(
            f"{key}: expected a (state, {config.hidden_size} * {k} * {k}, 2) array, got shape {array.shape}"
        )
    kernels = array.reshape(array.shape[0], config.hidden_size, k, k, 2)  # row p: the (U, k, k) kernel of state p
    return kernels[..., 0], kernels[..., 1]


def _c_kernel(array: np.ndarray, key: str, config: ConvS5Config) -> tuple[np.ndarray, np.ndarray]:
    if array.ndim != 5 or array.shape[-1] != 2:
        raise ConversionError(f"{key}: expected a (k, k, state, output, 2) array, got shape {array.shape}")
    return array[..., 0].transpose(3, 2, 0, 1), array[..., 1].transpose(3, 2, 0, 1)


def _conv(array: np.ndarray, key: str, config: ConvS5Config) -> np.ndarray:
    if array.ndim != 4:
        raise ConversionError(f"{key}: expected an HWIO convolution kernel, got shape {array.shape}")
    return array.transpose(3, 2, 0, 1)


LAYOUT_CHANGES = {
    "copy": lambda array, key, config: array,
    "conv": _conv,
    "dense": lambda array, key, config: array.T,
    "squeeze": lambda array, key, config: array.reshape(-1),
    "b_matrix": _b_matrix,
    "c_kernel": _c_kernel,
}


def _shape(flat: dict, key: str) -> tuple:
    if key not in flat:
        raise ConversionError(f"the checkpoint's params have no {key!r}, which every official ConvS5 model has")
    return flat[key].shape


def _numbered(flat: dict, pattern: str) -> list[int]:
    found = {int(m.group(1)) for key in flat if (m := re.match(pattern, key))}
    if found != set(range(len(found))):
        raise ConversionError(f"the numbering of {pattern!r} in the checkpoint's params has gaps: {sorted(found)}")
    return sorted(found)


def infer_config(flat: dict, image_size: int = 64, clip_eigs: bool = True, num_groups: int = 32) -> ConvS5Config:
    """The ConvS5Config of a flattened official `params` tree, read from its shapes."""
    encoder_blocks = _numbered(flat, r"encoder/ResNetBlock_(\d+)/")
    decoder_blocks = _numbered(flat, r"decoder/ResNetBlock_(\d+)/")
    layers = _numbered(flat, r"sequence_model/layers_(\d+)/")
    if not (encoder_blocks and decoder_blocks and layers):
        raise ConversionError(
            "the checkpoint's params lack encoder ResNet blocks, decoder ResNet blocks or sequence layers: not an "
            "official ConvS5 noVQ model"
        )
    hidden_size = _shape(flat, "action_conv/Conv_0/kernel")[3]
    b_columns = _shape(flat, "sequence_model/layers_0/seq/B")[1]
    fields = {
        "image_size": image_size,
        "num_channels": _shape(flat, "encoder/Conv_0/kernel")[2],
        "encoder_depths": [_shape(flat, f"encoder/ResNetBlock_{i}/Conv_0/kernel")[3] for i in encoder_blocks],
        "decoder_depths": [_shape(flat, f"decoder/ResNetBlock_{i}/Conv_0/kernel")[3] for i in decoder_blocks][::-1],
        "resnet_num_groups": num_groups,
        "num_actions": _shape(flat, "action_embeds/embedding")[0] - 1,
        "action_embed_dim": _shape(flat, "action_embeds/embedding")[1],
        "hidden_size": hidden_size,
        "num_hidden_layers": len(layers),
        "ssm_size": 2 * _shape(flat, "sequence_model/layers_0/seq/Lambda_re")[0],
        "clip_eigs": clip_eigs,
        "b_kernel_size": math.isqrt(b_columns // hidden_size),
        "c_kernel_size": _shape(flat, "sequence_model/layers_0/seq/C")[0],
        "d_kernel_size": _shape(flat, "sequence_model/layers_0/seq/C_D_conv/Conv_0/kernel")[0],
        "ssm_num_groups": num_groups,
    }
    try:
        return ConvS5Config(**fields)
    except Exception as error:  # the config's own validation names the field
        raise ConversionError(f"the checkpoint's shapes give an invalid ConvS5Config: {error}") from error


def convert_params(params: dict, config: ConvS5Config) -> dict:
    """The state dict of `ConvS5ForVideoPrediction(config)` from an official `params` tree, with a strict ledger:
    every Flax key is used by exactly one rule, every model key is filled once, and every shape is checked; the
    error lists every offending key."""
    from ..models.modeling_convs5 import ConvS5ForVideoPrediction

    flat = flatten_tree(params)
    converted, unknown, ambiguous = {}, [], []
    for key, array in flat.items():
        matches = [(m, target, how) for pattern, target, how in RULES if (m := re.fullmatch(pattern, key))]
        if len(matches) != 1:
            (ambiguous if matches else unknown).append(key)
            continue
        match, target, how = matches[0]
        if not isinstance(array, np.ndarray) or not np.issubdtype(array.dtype, np.floating):
            raise ConversionError(f"{key}: expected a floating-point array, got {type(array).__name__} {array!r:.80}")
        values = LAYOUT_CHANGES[how](array, key, config)
        targets, values = ((target,), (values,)) if isinstance(target, str) else (target, values)
        for template, value in zip(targets, values):
            converted[template.format(*match.groups())] = torch.from_numpy(np.ascontiguousarray(value))
    unmatched = {"keys the official layout does not have": unknown, "keys matching several rules": ambiguous}
    problems = [f"{what}: {sorted(keys)}" for what, keys in unmatched.items() if keys]
    problems += state_dict_problems(converted, ConvS5ForVideoPrediction, config)
    if problems:
        raise ConversionError("the checkpoint does not fit an official ConvS5 model; " + "; ".join(problems))
    return converted


def read_official_params(path: Path) -> dict:
    """The `params` tree of an official training checkpoint file."""
    try:
        tree = read_flax_checkpoint(path)
    except FlaxCheckpointError as error:
        raise ConversionError(str(error)) from error
    if not isinstance(tree.get("params"), dict) or not tree["params"]:
        raise ConversionError(
            f"{path} has no 'params' map; an official ConvS5 training checkpoint holds step, params, opt_state and "
            f"model_state (found {sorted(tree)})"
        )
    return tree["params"]


REFERENCE = "the float64 evaluation of the Flax weights"


def verify_conversion(model, params: dict, clip_eigs: bool, num_frames: int = 3, num_steps: int = 2, seed: int = 0):
    """Max abs difference between `model` (float32) and the float64 NumPy evaluation of the official model on the
    Flax arrays (`convs5_reference`), over teacher-forced predictions of a seeded clip and a rollout after it."""
    from .references.convs5 import FlaxConvS5Reference

    config = model.config
    rng = np.random.default_rng(seed)
    shape = (1, num_frames, config.image_size, config.image_size, config.num_channels)
    video = rng.uniform(-1, 1, shape)
    reference = FlaxConvS5Reference(params, clip_eigs)
    expected_predictions = reference.predict(video)
    expected_rollout = reference.rollout(video, num_steps)
    frames = torch.from_numpy(video).float().permute(0, 1, 4, 2, 3)
    with torch.no_grad():
        predictions = model(frames).predictions.permute(0, 1, 3, 4, 2).double().numpy()
        rollout = model.rollout(frames, num_steps).permute(0, 1, 3, 4, 2).double().numpy()
    return max(np.abs(predictions - expected_predictions).max(), np.abs(rollout - expected_rollout).max())


def convert_convs5_checkpoint(source, output, verify: bool = False, overwrite: bool = False,
                              allow_non_finite: bool = False, image_size: int = 64, clip_eigs: bool = True,
                              tolerance: float = 1e-4, log=print) -> Path:  # fmt: skip
    """Convert the official checkpoint `source` (a `checkpoint_<step>` file, or a folder holding them: the highest
    step is taken) into a `ConvS5ForVideoPrediction` folder `output`, with its video processor and model card.

    The folder is written beside `output` and renamed into place once complete (and verified, with `verify=True`),
    so a failure leaves nothing behind; an existing `output` is replaced only with `overwrite=True`.
    """
    from ..models.modeling_convs5 import ConvS5ForVideoPrediction
    from ..models.video_processing_convs5 import ConvS5VideoProcessor

    output = Path(output)
    check_output_path(Path(source), output, overwrite)
    try:
        path = find_flax_checkpoint(source)
    except FileNotFoundError as error:
        raise ConversionError(str(error)) from error
    if path != Path(source):
        log(f"converting the latest checkpoint in {source}: {path.name}")
    params = read_official_params(path)
    config = infer_config(flatten_tree(params), image_size=image_size, clip_eigs=clip_eigs)
    state = convert_params(params, config)
    with torch.device("meta"):
        model = ConvS5ForVideoPrediction(config)
    model.load_state_dict(state, strict=True, assign=True)  # assign keeps the source arrays and their dtypes
    processor = ConvS5VideoProcessor(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
    )
    provenance = (
        f"Converted from `{path.name}`, a checkpoint of the official ConvS5 training, by "
        f"`slotssm-hf convert-convs5`. {LICENSE_NOTE}"
    )
    verify = (REFERENCE, lambda folder: verify_conversion(model.float().eval(), params, clip_eigs)) if verify else None
    return write_converted(model, output, processor, provenance, verify, tolerance, allow_non_finite, log)


def add_arguments(parser):
    parser.add_argument("--image-size", type=int, default=64, help="frame size the model was trained on (64)")
    parser.add_argument("--no-clip-eigs", dest="clip_eigs", action="store_false",
                        help="the run had ssm.clip_eigs: False (the Moving-MNIST configs clip)")  # fmt: skip


def main(argv=None) -> int:
    return run_converter(
        argv, convert_convs5_checkpoint, "convert-convs5",
        "Convert a checkpoint of the official ConvS5 training (Flax checkpoint_<step>) into a slotssm_hf "
        "ConvS5ForVideoPrediction folder. " + LICENSE_NOTE,
        "a checkpoint_<step> file, or a folder of them (the highest step is used)", REFERENCE, add_arguments,
    )  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["convert_convs5_checkpoint", "convert_params", "infer_config", "verify_conversion", "LICENSE_NOTE"]
