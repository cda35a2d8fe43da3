"""Conversion of checkpoints written by the official ConvS5 training (NVlabs/ConvSSM, JAX/Flax) into
`ConvS5ForVideoPrediction` checkpoints, without JAX.

The official training saves `<run>/checkpoints/checkpoint_<step>` with `flax.training.checkpoints`: one msgpack map
{step, params, opt_state, model_state}, and its whole configuration as `<run>/args` (a pickled argparse Namespace,
the YAML config merged in). Only `params` is converted (`opt_state` holds Adam's moments). The architecture is the
run's configuration (`config_from_run`: `<run>/args` read with an unpickler that admits nothing but a Namespace of
plain values, or the YAML), which the parameter shapes only check; a setting the model cannot compute, or a
configuration that disagrees with the weights, is refused naming the field. Without a configuration, what the
shapes cannot tell (the frame size, eigenvalue clipping, the C/D block's GroupNorm groups and activation, the blocks
per width, ...) takes the Moving-MNIST configs' values, and the log and the model card list them as guessed.

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
    RunConfiguration,
    float_array,
    provenance_text,
    run_converter,
    start_conversion,
    state_dict_problems,
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


def _shape(flat: dict, key: str, ndim: int) -> tuple:
    """The shape of `key`, an array of `ndim` non-empty dimensions in every official ConvS5 model."""
    if key not in flat:
        raise ConversionError(f"the checkpoint's params have no {key!r}, which every official ConvS5 model has")
    shape = getattr(flat[key], "shape", None)
    if shape is None or len(shape) != ndim or 0 in shape:
        got = f"shape {shape}" if shape is not None else type(flat[key]).__name__
        raise ConversionError(f"{key}: expected an array of {ndim} non-empty dimensions, got {got}")
    return shape


def _numbered(flat: dict, pattern: str) -> list[int]:
    found = {int(m.group(1)) for key in flat if (m := re.match(pattern, key))}
    if found != set(range(len(found))):
        raise ConversionError(f"the numbering of {pattern!r} in the checkpoint's params has gaps: {sorted(found)}")
    return sorted(found)


def shape_fields(flat: dict) -> dict:
    """The ConvS5Config fields a flattened official `params` tree shows by its shapes. The encoder's and decoder's
    widths are listed block by block: with one block per width (the official configs) they are the depths."""
    encoder_blocks = _numbered(flat, r"encoder/ResNetBlock_(\d+)/")
    decoder_blocks = _numbered(flat, r"decoder/ResNetBlock_(\d+)/")
    layers = _numbered(flat, r"sequence_model/layers_(\d+)/")
    if not (encoder_blocks and decoder_blocks and layers):
        raise ConversionError(
            "the checkpoint's params lack encoder ResNet blocks, decoder ResNet blocks or sequence layers: not an "
            "official ConvS5 noVQ model"
        )
    hidden_size = _shape(flat, "action_conv/Conv_0/kernel", 4)[3]
    b_columns = _shape(flat, "sequence_model/layers_0/seq/B", 3)[1]
    return {
        "num_channels": _shape(flat, "encoder/Conv_0/kernel", 4)[2],
        "encoder_widths": [_shape(flat, f"encoder/ResNetBlock_{i}/Conv_0/kernel", 4)[3] for i in encoder_blocks],
        "decoder_widths": [_shape(flat, f"decoder/ResNetBlock_{i}/Conv_0/kernel", 4)[3] for i in decoder_blocks],
        "decoder_input_width": _shape(flat, "decoder/Conv_0/kernel", 4)[3],
        "num_actions": _shape(flat, "action_embeds/embedding", 2)[0] - 1,
        "action_embed_dim": _shape(flat, "action_embeds/embedding", 2)[1],
        "hidden_size": hidden_size,
        "num_hidden_layers": len(layers),
        "ssm_size": 2 * _shape(flat, "sequence_model/layers_0/seq/Lambda_re", 1)[0],
        "b_kernel_size": math.isqrt(b_columns // hidden_size),
        "c_kernel_size": _shape(flat, "sequence_model/layers_0/seq/C", 5)[0],
        "d_kernel_size": _shape(flat, "sequence_model/layers_0/seq/C_D_conv/Conv_0/kernel", 4)[0],
    }


def block_widths(depths: list[int], blocks: int, decoder: bool) -> list[int]:
    """The widths of the official encoder's (one block at the first width, `blocks` at each other) or decoder's
    (`blocks` per width, widest first) ResNet blocks, in the order Flax numbers them."""
    if decoder:
        return [depth for depth in reversed(depths) for _ in range(blocks)]
    return [depths[0], *(depth for depth in depths[1:] for _ in range(blocks))]


def _config(fields: dict, what: str) -> ConvS5Config:
    try:
        return ConvS5Config(**fields)
    except Exception as error:  # the config's own validation names the field
        raise ConversionError(f"{what} give an invalid ConvS5Config: {error}") from error


def infer_config(flat: dict, image_size: int = 64, clip_eigs: bool = True, num_groups: int = 32) -> ConvS5Config:
    """The ConvS5Config of a flattened official `params` tree read from its shapes alone, one ResNet block per
    width; what the shapes cannot show (`image_size`, `clip_eigs`, the C/D block's GroupNorm groups, the activation,
    the blocks per width) takes the given values or the Moving-MNIST configs'."""
    shapes = shape_fields(flat)
    fields = {name: shapes[name] for name in SHAPE_FIELDS}
    fields.update(encoder_depths=shapes["encoder_widths"], decoder_depths=shapes["decoder_widths"][::-1],
                  image_size=image_size, clip_eigs=clip_eigs, ssm_num_groups=num_groups)  # fmt: skip
    return _config(fields, "the checkpoint's shapes")


SHAPE_FIELDS = ("num_channels", "num_actions", "action_embed_dim", "hidden_size", "num_hidden_layers", "ssm_size",
                "b_kernel_size", "c_kernel_size", "d_kernel_size")  # fmt: skip
# The official activations (SequenceLayer.activation_fn) as transformers names them; Flax's nn.gelu is the tanh
# approximation and nn.swish is SiLU.
ACTIVATIONS = {"gelu": "gelu_pytorch_tanh", "relu": "relu", "swish": "silu", "elu": "elu"}
# What a run may leave out, with the value the official Moving-MNIST configs give it; the first group changes what
# the model computes and so is listed as guessed when it is not recorded.
COMPUTED_DEFAULTS = {
    "image_size": 64, "ssm.clip_eigs": True, "seq_model.num_groups": 32, "seq_model.layer_activation": "gelu",
    "encoder.blocks": 1, "decoder.blocks": 1, "seq_model.prenorm": False, "seq_model.per_layer_skip": True,
}  # fmt: skip
RECORDED_DEFAULTS = {
    "model": "convS5_noVQ", "ssm.C_D_config": "resnet", "seq_model.use_norm": True, "seq_model.squeeze_excite": False,
    "seq_model.skip_connections": False, "use_actions": False, "dropout_actions": False, "n_cond": 1,
    "ssm.blocks": 1, "ssm.dt_min": 0.001, "ssm.dt_max": 0.1, "loss_weight": 0.5, "seq_len": 300,
    "open_loop_ctx": 100,
}  # fmt: skip
# Settings the converted model computes only one way: (official field, the value it must have, why).
FIXED = [
    ("model", "convS5_noVQ", "only the noVQ ConvS5 model (Moving-MNIST) converts"),
    ("ssm.C_D_config", "resnet", "only the 'resnet' C/D branch of the released configs is implemented"),
    ("seq_model.use_norm", True, "the layers' LayerNorm is always applied"),
    ("seq_model.prenorm", False, "the layers are post-norm, as in the released configs"),
    ("seq_model.per_layer_skip", True, "every layer has its residual connection"),
    ("seq_model.squeeze_excite", False, "the C/D block has no squeeze-excite"),
    ("use_actions", False, "action-conditioned runs are not implemented"),
    ("dropout_actions", False, "action dropout replaces the constant action input, which is not implemented"),
    ("n_cond", 1, "the loss starts at the second frame"),
]


def official_value(run: dict, name: str, defaults: dict):
    """(value of the official field `name`, "a.b" for nested sections, whether the run records it)."""
    value = run
    for part in name.split("."):
        if not isinstance(value, dict) or part not in value:
            return defaults[name], False
        value = value[part]
    return value, True


def config_from_run(run: dict | None, flat: dict, image_size: int | None = None, clip_eigs: bool | None = None):
    """The ConvS5Config of the official run whose configuration is `run` (the plain values of `<run>/args` or of
    the YAML; None when not given) and whose flattened `params` are `flat`, and the official fields it had to guess
    ({field: assumed value}).

    The configuration decides; the weights' shapes only check it, and a disagreement is refused naming the field.
    `image_size` / `clip_eigs` (the command line's --image-size / --no-clip-eigs) state what the run used; given
    with a configuration, they must agree with it."""
    run = run or {}
    guessed = {}

    def get(name):
        defaults = {**COMPUTED_DEFAULTS, **RECORDED_DEFAULTS}
        value, recorded = official_value(run, name, defaults)
        if not recorded and name in COMPUTED_DEFAULTS:
            guessed[name] = value
        return value

    for name, required, why in FIXED:
        if get(name) != required:
            raise ConversionError(f"{name}: {get(name)!r} cannot be converted ({why}; it must be {required!r})")
    for name, stated in (("image_size", image_size), ("ssm.clip_eigs", clip_eigs)):
        value, recorded = official_value(run, name, COMPUTED_DEFAULTS)
        if stated is not None and recorded and stated != value:
            flag = "--image-size" if name == "image_size" else "--no-clip-eigs"
            raise ConversionError(f"{flag} says {name} = {stated!r}, the run's configuration says {value!r}")
    layers = shape_fields(flat)["num_hidden_layers"]
    if get("seq_model.skip_connections") and layers > 8:
        raise ConversionError(
            f"seq_model.skip_connections: True adds long skips from layer 8 on; this model's {layers} layers would "
            "need them, and they are not implemented"
        )
    activation = get("seq_model.layer_activation")
    if activation not in ACTIVATIONS:
        raise ConversionError(
            f"seq_model.layer_activation: {activation!r} is none of the official {sorted(ACTIVATIONS)}"
        )
    shapes = shape_fields(flat)
    fields = {name: shapes[name] for name in SHAPE_FIELDS}
    fields.update(
        image_size=image_size if image_size is not None else get("image_size"),
        clip_eigs=clip_eigs if clip_eigs is not None else bool(get("ssm.clip_eigs")),
        ssm_num_groups=get("seq_model.num_groups"), hidden_act=ACTIVATIONS[activation],
        encoder_blocks=get("encoder.blocks"), decoder_blocks=get("decoder.blocks"), ssm_blocks=get("ssm.blocks"),
        dt_min=get("ssm.dt_min"), dt_max=get("ssm.dt_max"), loss_weight=get("loss_weight"),
        num_frames=get("seq_len"), num_context_frames=get("open_loop_ctx"),
    )  # fmt: skip
    for name in ("image_size", "ssm.clip_eigs"):
        if (image_size, clip_eigs)[name == "ssm.clip_eigs"] is not None:
            guessed.pop(name, None)  # stated on the command line
    # The widths: recorded, they must give the checkpoint's blocks; not recorded, read off the blocks.
    for part in ("encoder", "decoder"):
        widths, blocks = shapes[f"{part}_widths"], fields[f"{part}_blocks"]
        if not isinstance(blocks, int) or blocks < 1:
            raise ConversionError(f"{part}.blocks: {blocks!r} is not a positive number of blocks")
        depths, recorded = official_value(run, f"{part}.depths", {f"{part}.depths": None})
        if not recorded:
            depths = [widths[0], *widths[1::blocks]] if part == "encoder" else widths[::blocks][::-1]
        expected = block_widths(depths, blocks, part == "decoder")
        if expected != widths:
            raise ConversionError(
                f"{part}.depths {depths} with {part}.blocks = {blocks} give ResNet blocks of widths {expected}, the "
                f"checkpoint has {widths}: the configuration is not the one these weights were trained with"
            )
        fields[f"{part}_depths"] = list(depths)
    if shapes["decoder_input_width"] != fields["decoder_depths"][0]:
        raise ConversionError(
            f"decoder.depths[0] is {fields['decoder_depths'][0]}, the checkpoint's decoder/Conv_0 has "
            f"{shapes['decoder_input_width']} channels"
        )
    checks = {  # recorded official fields the shapes show: (official field, converted field)
        "channels": "num_channels", "d_model": "hidden_size", "seq_model.n_layers": "num_hidden_layers",
        "ssm.ssm_size": "ssm_size", "ssm.B_kernel_size": "b_kernel_size", "ssm.C_kernel_size": "c_kernel_size",
        "ssm.D_kernel_size": "d_kernel_size", "action_dim": "num_actions", "action_embed_dim": "action_embed_dim",
    }  # fmt: skip
    for official, name in checks.items():
        value, recorded = official_value(run, official, {official: None})
        if recorded and value != fields[name]:
            raise ConversionError(
                f"{official} is {value!r} in the run's configuration, but the checkpoint's weights have {name} = "
                f"{fields[name]!r}: the configuration is not the one these weights were trained with"
            )
    config = _config(fields, "the run's configuration and the checkpoint's shapes")
    latent = [official_value(run, name, {name: None}) for name in ("latent_height", "latent_width")]
    for (value, recorded), name in zip(latent, ("latent_height", "latent_width")):
        if recorded and value != config.latent_size:
            raise ConversionError(
                f"{name} is {value}, but image_size {config.image_size} through {len(config.encoder_depths)} encoder "
                f"widths gives a {config.latent_size} x {config.latent_size} latent grid"
            )
    return config, guessed


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
        values = LAYOUT_CHANGES[how](float_array(array, key), key, config)
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


REFERENCE = "a float64 evaluation of the official model on the Flax weights"


def verify_conversion(model, params: dict, settings=None, num_frames: int = 3, num_steps: int = 2, seed: int = 0):
    """Max abs difference between `model` (float32) and the float64 NumPy evaluation of the official model on the
    Flax arrays (`references.convs5`, with the official `settings` it reads from the run's configuration itself),
    over teacher-forced predictions of a seeded clip and a rollout after it."""
    from .references.convs5 import FlaxConvS5Reference

    config = model.config
    rng = np.random.default_rng(seed)
    shape = (1, num_frames, config.image_size, config.image_size, config.num_channels)
    video = rng.uniform(-1, 1, shape)
    reference = FlaxConvS5Reference(params, settings)
    expected_predictions = reference.predict(video)
    expected_rollout = reference.rollout(video, num_steps)
    frames = torch.from_numpy(video).float().permute(0, 1, 4, 2, 3)
    with torch.no_grad():
        predictions = model(frames).predictions.permute(0, 1, 3, 4, 2).double().numpy()
        rollout = model.rollout(frames, num_steps).permute(0, 1, 3, 4, 2).double().numpy()
    return max(np.abs(predictions - expected_predictions).max(), np.abs(rollout - expected_rollout).max())


def find_run_config(source: Path, checkpoint: Path) -> Path | None:
    """`<run>/args`, which the official trainer writes beside `<run>/checkpoints/`, when it is there."""
    for folder in (source if source.is_dir() else source.parent, checkpoint.parent, checkpoint.parent.parent):
        if (folder / "args").is_file():
            return folder / "args"
    return None


def read_run_configuration(config, source: Path, checkpoint: Path, log) -> tuple[dict | None, str | None]:
    """The run's configuration: `config` (the pickled `<run>/args` or the YAML config), else the `args` found beside
    the checkpoints, else None."""
    from .official_configs import read_run_config

    path = Path(config) if config is not None else find_run_config(source, checkpoint)
    if path is None:
        return None, None
    found = "" if config is not None else ", found beside the checkpoints"
    kind = "the run's pickled arguments" if path.name == "args" else "the run's config file"
    return read_run_config(path), f"`{path.name}`, {kind}{found}"


WEIGHTS_LICENSE = (
    "License of the weights: NVIDIA's source code license of the official ConvS5 code (NVlabs/ConvSSM), "
    "non-commercial use only (research or evaluation)."
)


def convert_convs5_checkpoint(source, output, verify: bool = False, overwrite: bool = False,
                              allow_non_finite: bool = False, config=None, revision: str | None = None,
                              push_to_hub=None, image_size: int | None = None, clip_eigs: bool | None = None,
                              tolerance: float = 1e-4, token=None, endpoint=None, log=print) -> Path:  # fmt: skip
    """Convert the official checkpoint `source` (a `checkpoint_<step>` file, a folder of them, where the highest
    step is taken, or the run folder holding `checkpoints/`; locally or in a Hub model repo) into a
    `ConvS5ForVideoPrediction` folder `output`, with its video processor and model card.

    `config`: the run's configuration (its pickled `<run>/args`, or the YAML config); without it, `<run>/args`
    beside the checkpoints is read when present, and otherwise what the weights do not show is guessed (and said so
    in the log and the card). The folder is written beside `output` and renamed into place once complete (and
    verified, with `verify=True`; published with `push_to_hub`), so a failure leaves nothing behind; an existing
    `output` is replaced only with `overwrite=True`.
    """
    from ..models.modeling_convs5 import ConvS5ForVideoPrediction
    from ..models.video_processing_convs5 import ConvS5VideoProcessor
    from .references.convs5 import OfficialSettings

    conversion = start_conversion(source, output, overwrite, revision, push_to_hub, token, endpoint, log,
                                  "convert-convs5")  # fmt: skip
    source = conversion.source
    if (source / "checkpoints").is_dir():  # the run folder
        source = source / "checkpoints"
    try:
        path = find_flax_checkpoint(source)
    except FileNotFoundError as error:
        raise ConversionError(str(error)) from error
    if path != conversion.source:
        log(f"converting the latest checkpoint in {conversion.source}: {path.name}")
    run, described = read_run_configuration(conversion.config_path(config), conversion.source, path, log)
    params = read_official_params(path)
    model_config, guessed = config_from_run(run, flatten_tree(params), image_size, clip_eigs)
    configuration = RunConfiguration(run, described, guessed)
    configuration.log_to(log)
    state = convert_params(params, model_config)
    with torch.device("meta"):
        model = ConvS5ForVideoPrediction(model_config)
    model.load_state_dict(state, strict=True, assign=True)  # assign keeps the source arrays and their dtypes
    size = model_config.image_size
    processor = ConvS5VideoProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size})
    provenance = provenance_text(
        f"{conversion.source_description(path.name)}, a checkpoint of the official ConvS5 training",
        "convert-convs5", WEIGHTS_LICENSE, configuration,
    )  # fmt: skip
    # The reference reads the run's configuration itself; without one, the official defaults and the flags.
    if run is not None:
        settings = OfficialSettings.from_run_config(run)
    else:
        settings = OfficialSettings(clip_eigs=True if clip_eigs is None else clip_eigs)
    verify = (REFERENCE, lambda folder: verify_conversion(model.float().eval(), params, settings)) if verify else None
    return conversion.write(model, processor, provenance, verify, tolerance, allow_non_finite)


def add_arguments(parser):
    parser.add_argument("--image-size", type=int, default=None,
                        help="frame size the model was trained on, when no configuration records it (64)")  # fmt: skip
    parser.add_argument("--no-clip-eigs", dest="clip_eigs", action="store_const", const=False, default=None,
                        help="the run had ssm.clip_eigs: False, when no configuration records it")  # fmt: skip


def main(argv=None) -> int:
    return run_converter(
        argv, convert_convs5_checkpoint, "convert-convs5",
        "Convert a checkpoint of the official ConvS5 training (Flax checkpoint_<step>) into a slotssm_hf "
        "ConvS5ForVideoPrediction folder. " + LICENSE_NOTE,
        "a checkpoint_<step> file, a folder of them (the highest step is used) or the run folder", REFERENCE,
        "the run's configuration: its pickled <run>/args (read by default when it lies beside the checkpoints) or "
        "the YAML config it was trained with",
        add_arguments,
    )  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["convert_convs5_checkpoint", "convert_params", "config_from_run", "infer_config", "verify_conversion",
           "LICENSE_NOTE"]  # fmt: skip
