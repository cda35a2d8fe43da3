"""Conversion of checkpoints written by the official SAVi / SAVi++ training code (google-research/slot-attention-video)
into `SAViForVideoReconstruction` checkpoints, without JAX or TensorFlow. Families built on SAVi's parts convert
through the same code with their own `FlaxFamily` (config, variants, model, reference, rules): `convert_statm.py`.

The official trainer saves with CLU's `checkpoint.MultihostCheckpoint`: `checkpoints-<host>/ckpt-<n>.flax`, a Flax
msgpack of `{step, optimizer: {target: <params>, state}, variables, rng}`; `flax_checkpoint.read_flax_checkpoint`
reads it. The parameters (`optimizer/target`, or `params` of a newer TrainState, or a bare parameter tree) are mapped
with a strict ledger: every source array is consumed exactly once, every model weight filled, shapes checked.
The official configs are Python files, not saved beside the weights: the architecture comes from the run's config
file (`fields_from_run` maps its `config.model` module by module, reading `get_config()` without running it, and
refuses by its path in the config whatever the converted model cannot compute), or else from a named variant
(`VARIANTS`), whose values for what the weights cannot show are reported as guessed; overrides change fields either
way, and the ledger refuses weights that do not fit.

Layout changes, each named by its rule below:
- `dense`: Dense kernel (in, out) -> Linear weight (out, in).
- `dense_general`: DenseGeneral kernels (in, heads, head_dim) / (heads, head_dim, out) and biases (heads, head_dim)
  -> flattened to (in, heads * head_dim) / (heads * head_dim, out), then as `dense`.
- `conv`: Conv kernel HWIO -> OIHW.
- `conv_transpose`: ConvTranspose kernel HWIO, applied by Flax without flipping -> torch (I, O, H, W) with both
  spatial axes flipped (`SameConvTranspose2d` does the Flax "SAME" padding).
- `norm`: LayerNorm / GroupNorm scale, bias -> weight, bias (any (1, 1, 1, C) shape of newer Flax flattened);
  the epsilon (Flax's 1e-6) is `layer_norm_eps`.
- `gru`: GRUCell gates ir, iz, in (kernels with biases) and hr, hz, hn (kernels; only hn has a bias) -> torch GRUCell
  weight_ih = [ir; iz; in]^T, weight_hh = [hr; hz; hn]^T (torch's gate order r, z, n), bias_ih = [b_ir; b_iz; b_in],
  bias_hh = [0; 0; b_hn] (torch adds a hidden bias to every gate; Flax only to n, inside the reset product).
- `grid`: the fixed (y, x) position grids Flax stores as parameters are checked against the grid the model
  recomputes, then dropped.
"""

import re
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..cli import parse_override
from ..models.configuration_savi import VARIANTS, SAViConfig
from .conversion_utils import (
    ConversionError,
    RunConfiguration,
    float_array,
    provenance_text,
    run_converter,
    start_conversion,
    state_dict_problems,
)

# (source path pattern, target key template, layout rule). Paths are relative to the parameter tree; a `{0}`-style
# field takes the pattern's groups; "@int-1" marks 1-based official indices.
_MHA = [
    (r"MultiHeadDotProductAttention_0/(?P<qkv>query|key|value)/(?P<p>kernel|bias)", "attention.{qkv}_proj.{p}",
     "dense_general"),
    (r"MultiHeadDotProductAttention_0/out/(?P<p>kernel|bias)", "attention.o_proj.{p}", "dense_general"),
    (r"LayerNorm_0/(?P<p>scale|bias)", "attention_norm.{p}", "norm"),
    (r"LayerNorm_1/(?P<p>scale|bias)", "mlp_norm.{p}", "norm"),
    (r"MLP_0/dense_mlp_(?P<i>\d)/(?P<p>kernel|bias)", "mlp.layers.{i}.{p}", "dense"),
]  # fmt: skip
# Everything but the predictor, which STATM swaps (convert_statm.py). Target keys start with "savi.", the backbone's
# attribute in SAVi; another family's converted keys start with its own `base_model_prefix` instead.
SHARED_RULES = [
    # Encoder.
    (r"FrameEncoder_0/CNN_0/conv_(\d+)/(kernel|bias)", "savi.encoder.backbone.convs.{1}.{2}", "conv"),
    (r"FrameEncoder_0/ResNet_0/init_conv/kernel", "savi.encoder.backbone.init_conv.weight", "conv"),
    (r"FrameEncoder_0/ResNet_0/init_bn/(scale|bias)", "savi.encoder.backbone.init_bn.{1}", "norm"),
    (r"FrameEncoder_0/ResNet_0/stage(\d+)/block(\d+)/(conv1|conv2|proj_conv)/kernel",
     "savi.encoder.backbone.stages.{1-1}.{2-1}.{3}.weight", "conv"),
    (r"FrameEncoder_0/ResNet_0/stage(\d+)/block(\d+)/(bn1|bn2|proj_bn)/(scale|bias)",
     "savi.encoder.backbone.stages.{1-1}.{2-1}.{3}.{4}", "norm"),
    (r"FrameEncoder_0/PositionEmbedding_0/pos_embedding", "encoder", "grid"),
    (r"FrameEncoder_0/PositionEmbedding_0/dense_pe_0/(kernel|bias)", "savi.encoder.position_embedding.dense.{1}",
     "dense"),
    (r"FrameEncoder_0/PositionEmbedding_0/MLP_0/LayerNorm_0/(scale|bias)", "savi.encoder.mlp.norm.{1}", "norm"),
    (r"FrameEncoder_0/PositionEmbedding_0/MLP_0/dense_mlp_(\d)/(kernel|bias)", "savi.encoder.mlp.layers.{1}.{2}",
     "dense"),
    (r"FrameEncoder_0/Dense_0/(kernel|bias)", "savi.encoder.transformer_proj.{1}", "dense"),
    *[(rf"FrameEncoder_0/Transformer_0/TransformerBlock(?P<layer>\d+)/{p}",
       f"savi.encoder.transformer.{{layer}}.{t}", r) for p, t, r in _MHA],
    # Initialisers.
    (r"CoordinateEncoderStateInit_0/MLP_0/dense_mlp_(\d)/(kernel|bias)", "savi.initializer.mlp.layers.{1}.{2}",
     "dense"),
    (r"ParamStateInit_0/state_init", "savi.initializer.slots", "param"),
    # Corrector.
    (r"SlotAttention_0/LayerNorm_0/(scale|bias)", "savi.corrector.slot_norm.{1}", "norm"),
    (r"SlotAttention_0/LayerNorm_1/(scale|bias)", "savi.corrector.input_norm.{1}", "norm"),
    (r"SlotAttention_0/general_dense_([qkv])_0/kernel", "savi.corrector.{1}_proj.weight", "dense_general"),
    (r"SlotAttention_0/InvertedDotProductAttention_0/DenseGeneral_0/(kernel|bias)", "savi.corrector.o_proj.{1}",
     "dense_general"),
    (r"SlotAttention_0/GRU_0/GRUCell_0/(ir|iz|in|hr|hz|hn)/(kernel|bias)", "savi.corrector.gru", "gru"),
    (r"SlotAttention_0/MLP_0/LayerNorm_0/(scale|bias)", "savi.corrector.mlp.norm.{1}", "norm"),
    (r"SlotAttention_0/MLP_0/dense_mlp_(\d)/(kernel|bias)", "savi.corrector.mlp.layers.{1}.{2}", "dense"),
    # Decoder.
    (r"SpatialBroadcastDecoder_0/PositionEmbedding_0/pos_embedding", "decoder", "grid"),
    (r"SpatialBroadcastDecoder_0/PositionEmbedding_0/dense_pe_0/(kernel|bias)", "decoder.position_embedding.dense.{1}",
     "dense"),
    (r"SpatialBroadcastDecoder_0/CNN_0/conv_(\d+)/(kernel|bias)", "decoder.backbone.convs.{1}.{2}", "conv"),
    (r"SpatialBroadcastDecoder_0/alpha_logits/(kernel|bias)", "decoder.alpha_logits.{1}", "dense"),
    (r"SpatialBroadcastDecoder_0/Readout_0/(?:Dense_(\d+)/Dense_0|MLP_(\d+)/dense_mlp_0)/(kernel|bias)",
     "decoder.readouts.{1|2}.{3}", "dense"),
]  # fmt: skip
PREDICTOR_RULES = [(rf"TransformerBlock_0/{p}", f"savi.predictor.{t}", r) for p, t, r in _MHA]
RULES = [*SHARED_RULES, *PREDICTOR_RULES]

# The GRU's Flax gates in torch's order within each fused weight.
_GRU_GATES = {"ir": ("weight_ih", 0), "iz": ("weight_ih", 1), "in": ("weight_ih", 2),
              "hr": ("weight_hh", 0), "hz": ("weight_hh", 1), "hn": ("weight_hh", 2)}  # fmt: skip


def _target_key(template: str, match: re.Match) -> str:
    """Fill `{i}` (group i), `{i-1}` (group i minus one: official 1-based names), `{i|j}` (whichever group matched),
    `{name}` (a named group; `{qkv}`: query/key/value -> q/k/v) and rename Flax's scale/kernel to torch's weight."""

    def field(m):
        spec = m.group(1)
        if spec.isidentifier():
            return match.group(spec)[0] if spec == "qkv" else match.group(spec)
        if "|" in spec:
            return next(match.group(int(i)) for i in spec.split("|") if match.group(int(i)) is not None)
        if spec.endswith("-1"):
            return str(int(match.group(int(spec[:-2]))) - 1)
        return match.group(int(spec))

    key = re.sub(r"\{([^}]+)\}", field, template)
    return re.sub(r"\.(kernel|scale)$", ".weight", key)


def _dense(array: np.ndarray, is_kernel: bool) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array.T)) if is_kernel else torch.from_numpy(array.copy())


def _conv(array: np.ndarray, is_kernel: bool, transposed: bool) -> torch.Tensor:
    if not is_kernel:
        return torch.from_numpy(array.copy())
    if transposed:  # Flax does not flip the kernel of a transposed convolution; torch's conv_transpose2d does
        return torch.from_numpy(np.ascontiguousarray(array[::-1, ::-1].transpose(2, 3, 0, 1)))
    return torch.from_numpy(np.ascontiguousarray(array.transpose(3, 2, 0, 1)))


def _dense_general(array: np.ndarray, path: str) -> torch.Tensor:
    """DenseGeneral kernels and biases flattened to a Linear's: the heads' projections (in, heads, head_dim) and the
    heads' output projections (heads, head_dim, out) become (in, heads * head_dim) and (heads * head_dim, out)."""
    if path.endswith("bias"):
        return torch.from_numpy(array.reshape(-1).copy())
    output_side = path.endswith(("/out/kernel", "/DenseGeneral_0/kernel"))
    flat = array.reshape(-1, array.shape[-1]) if output_side else array.reshape(array.shape[0], -1)
    return torch.from_numpy(np.ascontiguousarray(flat.T))


def grid(height: int, width: int) -> np.ndarray:
    rows, cols = np.linspace(-1, 1, height), np.linspace(-1, 1, width)
    return np.stack(np.meshgrid(rows, cols, indexing="ij"), axis=-1)[None]


@dataclass(frozen=True)
class FlaxFamily:
    """What converting one family's official Flax checkpoints needs: its name in messages and cards, the command,
    the config class and named variants, the model class the weights load into ("module.Class"), the float64
    reference that `--verify` compares with ("module.Class" within `references/`, called as SAViReference is), and
    the rules."""

    name: str
    command: str
    config_class: type
    variants: dict
    default_variant: str
    model_path: str
    reference_path: str
    rules: tuple
    code: str  # the official repository, for the card's provenance
    model_modules: tuple  # the official model class (config.model.module); then those of other families
    predictor_module: str  # the official predictor class (config.model.predictor.module)
    weights_license: str  # the provenance's sentence on the license of the weights


SAVI = FlaxFamily(
    "SAVi", "convert-savi", SAViConfig, VARIANTS, "savi_conditional_small",
    "modeling_savi.SAViForVideoReconstruction", "savi.SAViReference", tuple(RULES),
    "google-research/slot-attention-video", ("SAVi", "STATMSAVi"), "TransformerBlock",
    "License of the weights: set by whoever trained them (no official SAVi weights are published); the official SAVi "
    "code is under the Apache License 2.0.",
)  # fmt: skip


# --- the official run's configuration (an ml_collections config file) ----------------------------------------------


class _Official:
    """Reads one section of an official config (`config.model...`), naming every refusal by its dotted path."""

    def __init__(self, values, path: str):
        if not isinstance(values, dict):
            raise ConversionError(f"{path}: expected a ConfigDict section, got {type(values).__name__} {values!r:.60}")
        self.values, self.path = values, path

    def __getitem__(self, name):
        if name not in self.values:
            raise ConversionError(f"{self.path}.{name}: missing, and the official module has no default for it")
        return self.values[name]

    def get(self, name, default=None):
        return self.values.get(name, default)

    def section(self, name) -> "_Official":
        return _Official(self[name], f"{self.path}.{name}")

    def module(self, *allowed) -> str:
        """The module's class name (the last part of `module`), which must be one of `allowed`."""
        name = str(self.get("module", "")).rsplit(".", 1)[-1]
        if name not in allowed:
            raise ConversionError(f"{self.path}.module: {self.get('module')!r} cannot be converted (supported: "
                                  f"{', '.join(allowed)})")  # fmt: skip
        return name

    def require(self, name, *values, default=None):
        """The field `name`, which must be one of `values` (the only settings the converted model computes)."""
        value = self.get(name, default)
        if value not in values:
            raise ConversionError(f"{self.path}.{name}: {value!r} cannot be converted (supported: "
                                  f"{' or '.join(map(repr, values))})")  # fmt: skip
        return value

    def squares(self, name) -> list[int]:
        """Per-layer (h, w) sizes that must be square: their side."""
        sides = []
        for i, size in enumerate(self[name]):
            size = [size, size] if isinstance(size, int) else list(size)
            if len(size) != 2 or size[0] != size[1]:
                raise ConversionError(f"{self.path}.{name}[{i}]: {size} is not square; only square kernels, strides "
                                      "and grids convert")  # fmt: skip
            sides.append(size[0])
        return sides


def _cnn_fields(cnn: _Official, transposed_allowed: bool) -> dict:
    cnn.require("activation_fn", None)
    cnn.require("norm_type", None)
    cnn.require("output_size", None)
    transposed = [bool(t) for t in cnn["layer_transpose"]]
    if any(transposed) and not transposed_allowed:
        raise ConversionError(f"{cnn.path}.layer_transpose: {transposed} cannot be converted (the encoder's "
                              "convolutions are not transposed)")  # fmt: skip
    fields = {"features": list(cnn["features"]), "kernel_sizes": cnn.squares("kernel_size"),
              "strides": cnn.squares("strides"), "transposed": transposed}  # fmt: skip
    if len({len(v) for v in fields.values()}) != 1:
        raise ConversionError(f"{cnn.path}: features, kernel_size, strides and layer_transpose differ in length")
    return fields


def _mlp(mlp: _Official, layernorm=None) -> dict:
    mlp.module("MLP")
    mlp.require("num_hidden_layers", 1, default=1)
    mlp.require("layernorm", layernorm)
    mlp.require("activation_fn", None)
    mlp.require("activate_output", False, default=False)
    mlp.require("residual", False, default=False)
    return {"hidden_size": mlp["hidden_size"], "output_size": mlp.get("output_size")}


def _preprocessing_size(run: dict, pattern: str) -> int | None:
    for step in run.get("preproc_eval", []) + run.get("preproc_train", []):
        found = re.search(pattern, str(step))
        if found:
            return int(found.group(1))
    return None


def fields_from_run(run: dict, family: FlaxFamily) -> dict:
    """The config fields of the official run whose configuration is `run` (what its `get_config()` returns, as plain
    values): `config.model` module by module, the number of slots from `max_instances`, the frame size and clip
    length from the preprocessing. A module or setting the converted model cannot compute is refused, named by its
    path in the config."""
    model = _Official(run.get("model"), "model")
    model_module = model.module(*family.model_modules)
    if model_module != family.model_modules[0]:
        raise ConversionError(f"model.module: {model['module']!r} is not a {family.name} model")
    fields = {}
    encoder = model.section("encoder")
    encoder.module("FrameEncoder")
    encoder.require("reduction", "spatial_flatten")
    backbone = encoder.section("backbone")
    kind = backbone.module("CNN", "ResNet18", "ResNet34")
    if kind == "CNN":
        cnn = _cnn_fields(backbone, transposed_allowed=False)
        fields.update(encoder_type="cnn", encoder_features=cnn["features"], encoder_kernel_sizes=cnn["kernel_sizes"],
                      encoder_strides=cnn["strides"])  # fmt: skip
    else:
        backbone.require("norm_type", "group")
        backbone.require("small_inputs", True)
        backbone.require("num_classes", None)
        backbone.require("stage_strides", None)
        backbone.require("include_top", False, default=False)
        width = backbone.get("width_factor", 1)
        fields.update(encoder_type="resnet", resnet_width=64 * width, resnet_num_groups=32,  # Flax's GroupNorm default
                      resnet_stage_sizes=[2, 2, 2, 2] if kind == "ResNet18" else [3, 4, 6, 3])  # fmt: skip
    position = encoder.section("pos_emb")
    position.module("PositionEmbedding")
    position.require("embedding_type", "linear")
    position.require("update_type", "project_add")
    fields["encoder_mlp_size"] = _mlp(position.section("output_transform"), layernorm="pre")["hidden_size"]
    if encoder.get("output_transform") is None:
        fields["encoder_transformer_layers"] = 0
    else:
        transformer = encoder.section("output_transform")
        transformer.module("Transformer")
        transformer.require("pre_norm", True)
        fields.update(encoder_transformer_layers=transformer["num_layers"], encoder_transformer_heads=transformer[
            "num_heads"], encoder_transformer_size=transformer["qkv_size"], encoder_transformer_mlp_size=transformer[
            "mlp_size"])  # fmt: skip

    initializer = model.section("initializer")
    kind = initializer.module("CoordinateEncoderStateInit", "ParamStateInit", "GaussianStateInit")
    if kind == "CoordinateEncoderStateInit":
        mlp = _mlp(initializer.section("embedding_transform"))
        prepend = bool(initializer.get("prepend_background", False))
        instances = run.get("max_instances")
        if instances is None:
            raise ConversionError("max_instances: missing; the conditional initialiser makes a slot per instance box")
        fields.update(initializer_type="conditional", initializer_mlp_size=mlp["hidden_size"],
                      slot_size=mlp["output_size"], prepend_background=prepend,
                      center_of_mass=bool(initializer.get("center_of_mass", False)),
                      background_value=float(initializer.get("background_value", 0.0)),
                      num_slots=instances + 1 if prepend else instances)  # fmt: skip
    else:
        num_slots, slot_size = initializer["shape"]
        fields.update(initializer_type="learned" if kind == "ParamStateInit" else "gaussian", num_slots=num_slots,
                      slot_size=slot_size)  # fmt: skip

    corrector = model.section("corrector")
    corrector.module("SlotAttention")
    fields.update(slot_attention_iterations=corrector.get("num_iterations", 1),
                  slot_attention_qkv_size=corrector.get("qkv_size") or fields["slot_size"],
                  slot_attention_mlp_size=corrector.get("mlp_size"),
                  slot_attention_epsilon=float(corrector.get("epsilon", 1e-8)),
                  slot_attention_num_heads=corrector.get("num_heads", 1))  # fmt: skip
    predictor = model.section("predictor")
    predictor.module(family.predictor_module)
    predictor.require("pre_norm", False, default=False)
    fields.update(predictor_num_heads=predictor["num_heads"], predictor_qkv_size=predictor["qkv_size"],
                  predictor_mlp_size=predictor["mlp_size"])  # fmt: skip

    decoder = model.section("decoder")
    decoder.module("SpatialBroadcastDecoder")
    resolution = list(decoder["resolution"])
    if len(resolution) != 2 or resolution[0] != resolution[1]:
        raise ConversionError(f"model.decoder.resolution: {resolution} is not square; only square grids convert")
    cnn = _cnn_fields(decoder.section("backbone"), transposed_allowed=True)
    fields.update(decoder_broadcast_size=resolution[0], decoder_features=cnn["features"],
                  decoder_kernel_sizes=cnn["kernel_sizes"], decoder_strides=cnn["strides"],
                  decoder_transposed=cnn["transposed"],
                  early_fusion=bool(decoder.get("early_fusion", False)))  # fmt: skip
    position = decoder.section("pos_emb")
    position.module("PositionEmbedding")
    position.require("embedding_type", "linear")
    position.require("update_type", "project_add")
    position.require("output_transform", None)
    readout = decoder.section("target_readout")
    readout.module("Readout")
    keys, modules = list(readout["keys"]), readout["readout_modules"]
    if len(keys) != len(modules):
        raise ConversionError(f"{readout.path}: {len(keys)} keys but {len(modules)} readout_modules")
    targets = {}
    for i, (key, module) in enumerate(zip(keys, modules)):
        module = _Official(module, f"{readout.path}.readout_modules[{i}]")
        if module.module("Dense", "MLP") == "Dense":
            targets[key] = module["features"]
        else:
            module.require("num_hidden_layers", 0)
            module.require("layernorm", None)
            targets[key] = module["output_size"]
    if keys != [name for name in ("video", "flow", "depth") if name in targets]:
        raise ConversionError(f"{readout.path}.keys: {keys} cannot be converted (targets among video, flow and depth, "
                              "in this order)")  # fmt: skip
    fields["targets"] = targets

    size = fields["decoder_broadcast_size"]
    for stride, transposed in zip(fields["decoder_strides"], fields["decoder_transposed"]):
        size = size * stride if transposed else -(-size // stride)
    fields["image_size"] = size
    resized = _preprocessing_size(run, r"resize_small\((\d+)\)")
    if resized is not None and resized != size:
        raise ConversionError(f"preproc_eval: frames resized to {resized}, but model.decoder decodes {size} x {size}")
    frames = _preprocessing_size(run, r"temporal_random_strided_window\(length=(\d+)\)")
    if frames is not None:
        fields["num_frames"] = frames
    return fields


# What the weights cannot show: without the run's configuration these come from the named variant, and are listed
# as guessed unless given with --set.
UNSEEN_FIELDS = ("image_size", "encoder_strides", "num_slots", "prepend_background", "background_value",
                 "slot_attention_iterations", "slot_attention_epsilon", "decoder_strides", "decoder_transposed",
                 "early_fusion", "targets")  # fmt: skip


def convert_savi_params(flat_params: dict, config: SAViConfig, family: FlaxFamily = SAVI) -> dict:
    """The state dict of the family's model (`SAViForVideoReconstruction(config)` for SAVi) from the official flat
    parameter tree (paths joined by "/"). Raises `ConversionError` listing every unmapped source path, missing or
    mis-shaped target and wrong grid."""
    from ..registry import load

    with torch.device("meta"):
        target_model = load(family.model_path)(config)
    prefix = f"{target_model.base_model_prefix}."
    transposed_weights = {f"{name}.weight" for name, module in target_model.named_modules()
                          if isinstance(module, torch.nn.ConvTranspose2d)}  # fmt: skip
    converted, gru_parts, unmapped, problems = {}, {}, [], []
    grids = {"encoder": (config.encoder_grid_size,) * 2, "decoder": (config.decoder_broadcast_size,) * 2}
    for path, array in sorted(flat_params.items()):
        array = np.asarray(array)
        matches = [(re.fullmatch(pattern, path), template, rule) for pattern, template, rule in family.rules]
        matches = [m for m in matches if m[0]]
        if len(matches) != 1:
            unmapped.append(path)
            continue
        match, template, rule = matches[0]
        template = prefix + template.removeprefix("savi.") if template.startswith("savi.") else template
        is_kernel = path.endswith(("kernel", "scale"))
        if rule == "grid":
            want = grid(*grids[template])
            if array.shape != want.shape or not np.allclose(array, want, atol=1e-6):
                problems.append(f"{path}: the fixed position grid {array.shape} is not the {want.shape} grid in "
                                "[-1, 1] the converted config implies (wrong image size or strides?)")  # fmt: skip
            continue
        if rule == "gru":
            gate, kind = match.group(1), match.group(2)
            fused, index = _GRU_GATES[gate]
            part = "bias_ih" if kind == "bias" and gate[0] == "i" else "bias_hh" if kind == "bias" else fused
            gru_parts[(template, part, index)] = _dense(array, kind == "kernel")
            continue
        key = _target_key(template, match)
        if rule == "dense":
            tensor = _dense(array, is_kernel)
        elif rule == "conv":
            # The config decides which layers are transposed; the target module's kind says so.
            tensor = _conv(array, is_kernel, key in transposed_weights)
        elif rule == "norm":
            tensor = torch.from_numpy(array.reshape(-1).copy())
        elif rule == "dense_general":
            tensor = _dense_general(array, path)
        else:
            tensor = torch.from_numpy(array.copy())
        if key in converted:
            problems.append(f"{path}: a second source for {key}")
        converted[key] = tensor
    for template in sorted({t for t, _, _ in gru_parts}):
        for part in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            chunks = [gru_parts.get((template, part, i)) for i in range(3)]
            if part == "bias_hh" and chunks[2] is not None:  # Flax's r and z gates have no hidden bias: zeros
                chunks = [torch.zeros_like(chunks[2]) if chunk is None else chunk for chunk in chunks]
            if any(chunk is None for chunk in chunks) or len({chunk.shape for chunk in chunks}) != 1:
                shapes = [None if chunk is None else tuple(chunk.shape) for chunk in chunks]
                problems.append(f"{template}.{part}: the Flax GRU gates (r, z, n) give {shapes}, not three equal parts")
                continue
            converted[f"{template}.{part}"] = torch.cat(chunks)
    if unmapped:
        problems.append(f"source arrays no rule maps: {unmapped}")
    problems += state_dict_problems(converted, load(family.model_path), config)
    if problems:
        raise ConversionError(f"the official parameters do not fit the {family.name} config; " + "; ".join(problems))
    return converted


def parameter_tree(checkpoint: dict, family: FlaxFamily = SAVI) -> dict:
    """The model parameters inside a checkpoint dict: CLU/flax.optim `optimizer/target`, a TrainState's `params`, or
    the tree itself (which holds `FrameEncoder_0`)."""
    if isinstance(checkpoint.get("optimizer"), dict) and isinstance(checkpoint["optimizer"].get("target"), dict):
        tree = checkpoint["optimizer"]["target"]
    elif isinstance(checkpoint.get("params"), dict):
        tree = checkpoint["params"]
    else:
        tree = checkpoint
    tree = tree.get("params", tree) if "FrameEncoder_0" not in tree else tree
    if "FrameEncoder_0" not in tree:
        raise ConversionError(
            f"no {family.name} parameters found (expected optimizer/target/FrameEncoder_0, params/FrameEncoder_0 or "
            f"FrameEncoder_0 at the top); top-level keys: {sorted(checkpoint)}"
        )
    return tree


def verify_conversion(model, flat_params: dict, num_frames: int = 3, seed: int = 0, family: FlaxFamily = SAVI,
                      settings=None) -> float:  # fmt: skip
    """Max abs difference between the converted model (float32) and the family's float64 reference on the source
    arrays over the corrected slots and the decoded targets of a seeded clip. `settings`: what the reference knows
    of the architecture besides the arrays (`references.savi.settings_from_run` of the run's configuration, which
    the reference reads itself); the converted config when None."""
    from ..registry import load

    config = model.config
    generator = torch.Generator().manual_seed(seed)
    video = torch.rand(1, num_frames, config.num_channels, config.image_size, config.image_size, generator=generator)
    # Corners (y, x) sorted so each box is (ymin, xmin, ymax, xmax).
    boxes = torch.rand(1, config.num_boxes, 2, 2, generator=generator).sort(dim=2).values.flatten(2)
    reference_class = load(family.reference_path, package=f"{__package__}.references")
    reference = reference_class(flat_params, settings or config)(video.permute(0, 1, 3, 4, 2).double(), boxes.double())
    with torch.no_grad():
        ours = model.float().eval()(video, boxes=boxes)
    slots_error = (ours.last_hidden_state.double() - reference["states"]).abs().max().item()
    outputs_error = (ours.reconstruction.permute(0, 1, 3, 4, 2).double() - reference["outputs"]).abs().max().item()
    return max(slots_error, outputs_error)


def config_of_run(family: FlaxFamily, run: dict | None, variant: str | None, overrides: dict | None):
    """The family's config and what was guessed: from the run's configuration `run` (the values of its
    `get_config()`) when given, else from the named `variant` (the family's default when None); `overrides` (--set)
    change fields either way, but may not contradict the run's configuration."""
    config_name = family.config_class.__name__
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(family.config_class.__dataclass_fields__))
    if unknown:  # the config would keep them as inert attributes: a typo must not go unnoticed
        raise ConversionError(f"{unknown} are not {config_name} fields")
    if run is not None:
        if variant is not None:
            raise ConversionError("--variant and --config both say what the architecture is: give one of them")
        fields = fields_from_run(run, family)
        contradicted = {k: (fields[k], v) for k, v in overrides.items() if k in fields and fields[k] != v}
        if contradicted:
            raise ConversionError("--set contradicts the run's configuration: " + ", ".join(
                f"{k}={v!r} (the configuration gives {c!r})" for k, (c, v) in contradicted.items()))  # fmt: skip
        guessed, described = {}, "the run's configuration"
    else:
        variant = family.default_variant if variant is None else variant
        if variant not in family.variants:
            raise ConversionError(f"unknown variant {variant!r}; the official setups are {sorted(family.variants)}")
        fields = dict(family.variants[variant])
        described = f"variant `{variant}`"
    try:
        config = family.config_class(**{**fields, **overrides})
    except Exception as error:  # the config's own validation names the field
        raise ConversionError(f"{described} with {overrides} is not a valid {config_name}: {error}") from error
    if run is None:
        guessed = {name: getattr(config, name) for name in UNSEEN_FIELDS if name not in overrides}
        if config.initializer_type != "conditional":
            guessed.pop("prepend_background", None), guessed.pop("background_value", None)
    return config, guessed, variant


def convert_savi_checkpoint(source, output, variant: str | None = None, overrides: dict | None = None,
                            verify: bool = False, overwrite: bool = False, allow_non_finite: bool = False,
                            config=None, revision: str | None = None, push_to_hub=None, tolerance: float = 1e-4,
                            token=None, endpoint=None, log=print, family: FlaxFamily = SAVI) -> Path:  # fmt: skip
    """Convert the official checkpoint at `source` (a `ckpt-<n>.flax` / `checkpoint_<step>` file, a folder holding
    them, of which the latest is used, or the training work folder holding `checkpoints-0/`; locally or in a Hub
    model repo) of `family` (SAVi by default) into `output`, written atomically (nothing is left behind on failure;
    an existing `output` is replaced only with `overwrite=True`; published with `push_to_hub`).

    The architecture: `config`, the official config file the run was trained with (`get_config()`; or a JSON / YAML
    dump of its values), checked against the weights; without it, `variant` (the family's default when None), whose
    values for what the weights cannot show are said to be guessed in the log and the card. `overrides` change
    fields."""
    from .flax_checkpoint import FlaxCheckpointError, find_flax_checkpoint, flatten_tree, read_flax_checkpoint
    from .official_configs import read_run_config
    from ..registry import load
    from ..models.video_processing_savi import SAViVideoProcessor
    from .references.savi import settings_from_run

    conversion = start_conversion(source, output, overwrite, revision, push_to_hub, token, endpoint, log,
                                  family.command)  # fmt: skip
    config = conversion.config_path(config)
    run = None if config is None else read_run_config(config)
    model_config, guessed, variant = config_of_run(family, run, variant, overrides)
    described = None if config is None else f"`{Path(config).name}`, the official config it was trained with"
    configuration = RunConfiguration(run, described, guessed)
    # A training work folder: CLU's MultihostCheckpoint writes one checkpoints-<host> folder per host, host 0's first.
    source = conversion.source
    if (source / "checkpoints-0").is_dir():
        source = source / "checkpoints-0"
    try:
        path = find_flax_checkpoint(source)
        checkpoint = read_flax_checkpoint(path)
    except (FileNotFoundError, FlaxCheckpointError) as error:
        raise ConversionError(str(error)) from error
    if path != Path(source):
        log(f"converting the latest checkpoint in {source}: {path.name}")
    configuration.log_to(log)
    # A leaf that is no floating-point array is the checkpoint's fault, whatever the run's configuration says.
    flat = {key: float_array(value, key) for key, value in flatten_tree(parameter_tree(checkpoint, family)).items()}
    try:
        state = convert_savi_params(flat, model_config, family)
    except ConversionError as error:
        if run is None:
            raise
        raise ConversionError(f"the run's configuration ({described}) disagrees with the weights: {error}") from error
    with torch.device("meta"):
        model = load(family.model_path)(model_config)
    model.load_state_dict(state, strict=True, assign=True)

    trained_with = f"config `{variant}`" if run is None else f"config `{Path(config).name}`"
    provenance = provenance_text(
        f"{conversion.source_description(path.name)}, a checkpoint of the official training code ({family.code}, "
        f"{trained_with})", family.command, family.weights_license, configuration,
    )  # fmt: skip
    settings = None if run is None else settings_from_run(run)
    if verify:
        verify = ("the float64 reference", lambda folder: verify_conversion(model, flat, family=family,
                                                                            settings=settings))  # fmt: skip
    else:
        verify = None
    processor = SAViVideoProcessor.for_config(model_config)
    return conversion.write(model, processor, provenance, verify, tolerance, allow_non_finite)


def main(argv=None, family: FlaxFamily = SAVI) -> int:
    def add_arguments(parser):
        parser.add_argument("--variant", default=None, choices=sorted(family.variants),
                            help="without --config: the official setup the checkpoint was trained with (default "
                            f"{family.default_variant})")  # fmt: skip
        parser.add_argument("--set", dest="overrides", action="append", type=parse_override, default=[],
                            metavar="NAME=VALUE", help=f"override a {family.config_class.__name__} field (JSON value), "
                            "e.g. num_slots=24 for max_instances=23")  # fmt: skip

    def convert(overrides, **arguments):
        return convert_savi_checkpoint(overrides=dict(overrides), family=family, **arguments)

    return run_converter(
        argv, convert, family.command,
        f"Convert a checkpoint of the official {family.name} code ({family.code}, Flax msgpack) into a slotssm_hf "
        "checkpoint, without JAX.",
        "a ckpt-<n>.flax file, a folder of them (latest used) or the work folder",
        "a float64 evaluation of the official model on the Flax arrays",
        "the official config file the run was trained with (its get_config() is read, never run), or a JSON / YAML "
        "dump of its values",
        add_arguments,
    )  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["convert_savi_params", "convert_savi_checkpoint", "parameter_tree", "RULES", "SHARED_RULES", "FlaxFamily",
           "SAVI"]  # fmt: skip
