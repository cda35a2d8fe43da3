"""Official-layout SAVi checkpoints: tiny configurations covering every switch, random Flax parameter trees with the
names and shapes the official modules create, the TrainState the official trainer saves, and inputs that fit."""

import numpy as np
import torch

from slotssm_hf import SAViConfig
from slotssm_hf.conversion.flax_checkpoint import flatten_tree

TINY = {
    "image_size": 16, "encoder_features": [8, 8], "encoder_strides": [2, 1], "num_slots": 4, "slot_size": 16,
    "initializer_mlp_size": 16, "slot_attention_qkv_size": 8, "predictor_num_heads": 2, "predictor_qkv_size": 8,
    "predictor_mlp_size": 16, "encoder_mlp_size": 8, "decoder_broadcast_size": 4, "decoder_features": [8, 8, 8],
    "decoder_strides": [2, 2, 1], "decoder_transposed": [True, True, False],
}  # fmt: skip
# Tiny configs covering every switch: CNN + boxes; ResNet + encoder transformer + multi-head slot attention with MLP
# + early fusion + two targets + centres of mass + extra first-frame iterations; learned slots, 2 iterations.
CASES = {
    "cnn-boxes": TINY,
    "resnet-transformer-early-fusion": {
        **TINY, "encoder_type": "resnet", "resnet_stage_sizes": [1, 2], "resnet_width": 8, "resnet_num_groups": 4,
        "encoder_transformer_layers": 1, "encoder_transformer_size": 8, "encoder_transformer_heads": 2,
        "encoder_transformer_mlp_size": 16, "slot_attention_num_heads": 2, "slot_attention_mlp_size": 16,
        "early_fusion": True, "targets": {"flow": 3, "depth": 1}, "center_of_mass": True, "first_frame_iterations": 2,
        "decoder_strides": [2, 2], "decoder_transposed": [True, True], "decoder_features": [8, 8],
    },
    "learned-slots-two-iterations": {**TINY, "initializer_type": "learned", "slot_attention_iterations": 2,
                                     "targets": {"video": 3}},
}  # fmt: skip


def official_params(config: SAViConfig, seed: int = 0) -> dict:
    """A random parameter tree with the names and shapes the official Flax modules create for `config`."""
    rng = np.random.default_rng(seed)

    def r(*shape, scale=0.3):
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    def dense(i, o, bias=True):
        return {"kernel": r(i, o), "bias": r(o)} if bias else {"kernel": r(i, o)}

    def norm(c):
        return {"scale": 1 + r(c, scale=0.1), "bias": r(c, scale=0.1)}

    def mlp(i, h, o, layernorm=False):
        layers = {"dense_mlp_0": dense(i, h), "dense_mlp_1": dense(h, o)}
        return {"LayerNorm_0": norm(i), **layers} if layernorm else layers

    def block(d, heads, qkv, mlp_size):
        hd = qkv // heads
        attention = {name: {"kernel": r(d, heads, hd), "bias": r(heads, hd)} for name in ("query", "key", "value")}
        attention["out"] = {"kernel": r(heads, hd, d), "bias": r(d)}
        return {"MultiHeadDotProductAttention_0": attention, "LayerNorm_0": norm(d), "LayerNorm_1": norm(d),
                "MLP_0": mlp(d, mlp_size, d)}  # fmt: skip

    def grid(size):
        axis = np.linspace(-1, 1, size, dtype=np.float32)
        return np.stack(np.meshgrid(axis, axis, indexing="ij"), -1)[None]

    c = config
    encoder = {}
    if c.encoder_type == "cnn":
        widths = [c.num_channels, *c.encoder_features]
        encoder["CNN_0"] = {f"conv_{i}": {"kernel": r(k, k, widths[i], widths[i + 1]), "bias": r(widths[i + 1])}
                            for i, k in enumerate(c.encoder_kernel_sizes)}  # fmt: skip
        channels = widths[-1]
    else:
        resnet = {"init_conv": {"kernel": r(3, 3, c.num_channels, c.resnet_width)}, "init_bn": norm(c.resnet_width)}
        channels = c.resnet_width
        for s, size in enumerate(c.resnet_stage_sizes):
            out = c.resnet_width * 2**s
            stage = {}
            for j in range(size):
                cin = channels if j == 0 else out
                blk = {"conv1": {"kernel": r(3, 3, cin, out)}, "bn1": norm(out), "conv2": {"kernel": r(3, 3, out, out)},
                       "bn2": norm(out)}  # fmt: skip
                if cin != out or (s and j == 0):
                    blk.update(proj_conv={"kernel": r(1, 1, cin, out)}, proj_bn=norm(out))
                stage[f"block{j + 1}"] = blk
            resnet[f"stage{s + 1}"] = stage
            channels = out
        encoder["ResNet_0"] = resnet
    encoder["PositionEmbedding_0"] = {
        "pos_embedding": grid(c.encoder_grid_size), "dense_pe_0": dense(2, channels),
        "MLP_0": mlp(channels, c.encoder_mlp_size, channels, layernorm=True),
    }  # fmt: skip
    tokens = channels
    if c.encoder_transformer_layers:
        tokens = c.encoder_transformer_size
        encoder["Dense_0"] = dense(channels, tokens)
        encoder["Transformer_0"] = {f"TransformerBlock{i}": block(tokens, c.encoder_transformer_heads, tokens,
                                                                  c.encoder_transformer_mlp_size)
                                    for i in range(c.encoder_transformer_layers)}  # fmt: skip
    heads, qkv, d = c.slot_attention_num_heads, c.slot_attention_qkv_size, c.slot_size
    hd = qkv // heads
    gru_in = hd if heads > 1 else qkv
    corrector = {
        "LayerNorm_0": norm(d), "LayerNorm_1": norm(tokens), "general_dense_q_0": {"kernel": r(d, heads, hd)},
        "general_dense_k_0": {"kernel": r(tokens, heads, hd)}, "general_dense_v_0": {"kernel": r(tokens, heads, hd)},
        "GRU_0": {"GRUCell_0": {**{g: dense(gru_in, d) for g in ("ir", "iz", "in")},
                                **{g: dense(d, d, bias=False) for g in ("hr", "hz")}, "hn": dense(d, d)}},
    }  # fmt: skip
    if heads > 1:
        corrector["InvertedDotProductAttention_0"] = {"DenseGeneral_0": {"kernel": r(heads, hd, hd), "bias": r(hd)}}
    if c.slot_attention_mlp_size:
        corrector["MLP_0"] = mlp(d, c.slot_attention_mlp_size, d, layernorm=True)
    widths = [d, *c.decoder_features]
    readout_name = "MLP_{}" if c.early_fusion else "Dense_{}"
    inner = "dense_mlp_0" if c.early_fusion else "Dense_0"
    decoder = {
        "PositionEmbedding_0": {"pos_embedding": grid(c.decoder_broadcast_size), "dense_pe_0": dense(2, d)},
        "CNN_0": {f"conv_{i}": {"kernel": r(k, k, widths[i], widths[i + 1]), "bias": r(widths[i + 1])}
                  for i, k in enumerate(c.decoder_kernel_sizes)},
        "alpha_logits": dense(widths[-1], 1),
        "Readout_0": {readout_name.format(i): {inner: dense(widths[-1], channels)}
                      for i, channels in enumerate(c.targets.values())},
    }  # fmt: skip
    params = {"FrameEncoder_0": encoder, "SlotAttention_0": corrector,
              "TransformerBlock_0": block(d, c.predictor_num_heads, c.predictor_qkv_size, c.predictor_mlp_size),
              "SpatialBroadcastDecoder_0": decoder}  # fmt: skip
    if c.initializer_type == "conditional":
        params["CoordinateEncoderStateInit_0"] = {"MLP_0": mlp(2 if c.center_of_mass else 4, c.initializer_mlp_size, d)}
    elif c.initializer_type == "learned":
        params["ParamStateInit_0"] = {"state_init": r(c.num_slots, d, scale=1.0)}
    return params


def clu_checkpoint(params: dict) -> dict:
    """What the official trainer saves: a flax.optim Adam TrainState (parameters under optimizer/target)."""
    moments = {key: {"grad_ema": np.zeros_like(value), "grad_sq_ema": np.zeros_like(value)}
               for key, value in flatten_tree(params).items()}  # fmt: skip
    return {"step": np.int64(100), "optimizer": {"target": params, "state": {"step": np.int64(100),
            "param_states": moments}}, "variables": {}, "rng": np.zeros(2, np.uint32)}  # fmt: skip


def inputs(config: SAViConfig, batch=2, frames=3, seed=0):
    generator = torch.Generator().manual_seed(seed)
    video = torch.rand(batch, frames, config.num_channels, config.image_size, config.image_size, generator=generator)
    corners = torch.rand(batch, config.num_boxes, 2, 2, generator=generator).sort(dim=2).values  # (y, x) pairs
    boxes = corners.flatten(2)  # (ymin, xmin, ymax, xmax)
    boxes[:, -1] = 0  # an absent object
    return video, boxes


RESNETS = {(2, 2, 2, 2): "ResNet18", (3, 4, 6, 3): "ResNet34"}


def official_run_config(config: SAViConfig, family: str = "savi") -> dict:
    """What the official `get_config()` returns (as plain values) for a run of `config`'s architecture, laid out as
    the official MOVi config files lay it out (savi/configs/movi/*.py; jax-statm's for family "statm")."""
    c, prefix = config, f"{family}.modules"

    def cnn(features, kernels, strides, transposed):
        return {"module": f"{prefix}.CNN", "features": list(features), "kernel_size": [(k, k) for k in kernels],
                "strides": [(s, s) for s in strides], "layer_transpose": list(transposed)}  # fmt: skip

    def mlp(hidden, output=None, layernorm=None):
        return {"module": f"{prefix}.MLP", "hidden_size": hidden, **({"output_size": output} if output else {}),
                "layernorm": layernorm}  # fmt: skip

    if c.encoder_type == "cnn":
        backbone = cnn(c.encoder_features, c.encoder_kernel_sizes, c.encoder_strides, [False] * len(c.encoder_strides))
    else:
        assert c.resnet_width % 64 == 0 and c.resnet_num_groups == 32, "the official ResNet: width 64 k, 32 groups"
        backbone = {"module": f"{prefix}.{RESNETS[tuple(c.resnet_stage_sizes)]}", "num_classes": None,
                    "axis_name": "time", "norm_type": "group", "small_inputs": True}  # fmt: skip
        if c.resnet_width != 64:
            backbone["width_factor"] = c.resnet_width // 64
    encoder = {"module": f"{prefix}.FrameEncoder", "reduction": "spatial_flatten", "backbone": backbone,
               "pos_emb": {"module": f"{prefix}.PositionEmbedding", "embedding_type": "linear",
                           "update_type": "project_add", "output_transform": mlp(c.encoder_mlp_size, layernorm="pre")}}
    if c.encoder_transformer_layers:
        encoder["output_transform"] = {
            "module": f"{prefix}.Transformer", "num_layers": c.encoder_transformer_layers,
            "num_heads": c.encoder_transformer_heads, "qkv_size": c.encoder_transformer_size,
            "mlp_size": c.encoder_transformer_mlp_size, "pre_norm": True,
        }
    corrector = {"module": f"{prefix}.SlotAttention", "num_iterations": c.slot_attention_iterations,
                 "qkv_size": c.slot_attention_qkv_size}
    if c.slot_attention_num_heads != 1:
        corrector["num_heads"] = c.slot_attention_num_heads
    if c.slot_attention_mlp_size:
        corrector["mlp_size"] = c.slot_attention_mlp_size
    if c.slot_attention_epsilon != 1e-8:
        corrector["epsilon"] = c.slot_attention_epsilon
    predictor = {"module": f"{prefix}.{'TimeSpaceTransformerBlock2' if family == 'statm' else 'TransformerBlock'}",
                 "num_heads": c.predictor_num_heads, "qkv_size": c.predictor_qkv_size, "mlp_size": c.predictor_mlp_size}
    if c.initializer_type == "conditional":
        initializer = {"module": f"{prefix}.CoordinateEncoderStateInit", "prepend_background": c.prepend_background,
                       "center_of_mass": c.center_of_mass,
                       "embedding_transform": mlp(c.initializer_mlp_size, c.slot_size)}
        if c.background_value:
            initializer["background_value"] = c.background_value
    else:
        kind = "ParamStateInit" if c.initializer_type == "learned" else "GaussianStateInit"
        initializer = {"module": f"{prefix}.{kind}", "shape": (c.num_slots, c.slot_size)}
    readouts = [{"module": f"{prefix}.MLP", "num_hidden_layers": 0, "hidden_size": 0, "output_size": n}
                if c.early_fusion else {"module": f"{prefix}.Dense", "features": n} for n in c.targets.values()]
    decoder = {"module": f"{prefix}.SpatialBroadcastDecoder", "resolution": (c.decoder_broadcast_size,) * 2,
               "backbone": cnn(c.decoder_features, c.decoder_kernel_sizes, c.decoder_strides, c.decoder_transposed),
               "pos_emb": {"module": f"{prefix}.PositionEmbedding", "embedding_type": "linear",
                           "update_type": "project_add"},
               "target_readout": {"module": f"{prefix}.Readout", "keys": list(c.targets),
                                  "readout_modules": readouts}}  # fmt: skip
    if c.early_fusion:
        decoder["early_fusion"] = True
    instances = c.num_slots - 1 if c.prepend_background and c.initializer_type == "conditional" else c.num_slots
    return {
        "seed": 42, "batch_size": 64, "num_train_steps": 100000, "learning_rate": 2e-4, "max_instances": instances,
        "num_slots": instances + 1,
        "preproc_train": ["video_from_tfds", f"sparse_to_dense_annotation(max_instances={instances})",
                          f"temporal_random_strided_window(length={c.num_frames})", f"resize_small({c.image_size})"],
        "preproc_eval": ["video_from_tfds", f"sparse_to_dense_annotation(max_instances={instances})",
                         "temporal_crop_or_pad(length=24)", f"resize_small({c.image_size})"],
        "targets": dict(c.targets), "conditioning_key": "boxes",
        "model": {"module": f"{prefix}.{'STATMSAVi' if family == 'statm' else 'SAVi'}", "encoder": encoder,
                  "corrector": corrector, "predictor": predictor, "initializer": initializer, "decoder": decoder,
                  "decode_corrected": True, "decode_predicted": False},
    }  # fmt: skip


def write_config_file(path, values: dict):
    """An ml_collections config file whose `get_config()` returns `values`, written as the official ones are:
    ConfigDicts of literals, the instance count reused through the config, the readouts built by a comprehension
    over the targets, preprocessing strings as f-strings."""

    def literal(value, depth=1):
        if isinstance(value, dict):
            pad = "    " * depth
            items = "".join(f"\n{pad}    {key!r}: {literal(item, depth + 1)}," for key, item in value.items())
            return f"ml_collections.ConfigDict({{{items}\n{pad}}})"
        return repr(value)

    model = dict(values["model"])
    readout = model["decoder"]["target_readout"]
    module = readout["readout_modules"][0] if readout["readout_modules"] else {"module": "savi.modules.Dense"}
    field = "output_size" if "output_size" in module else "features"
    template = {key: value for key, value in module.items() if key != field}
    rest = {key: value for key, value in values.items() if key not in ("model", "max_instances", "num_slots",
                                                                         "preproc_train", "preproc_eval")}  # fmt: skip
    lines = [
        '"""A configuration in the layout of the official MOVi configs."""', "", "import ml_collections", "", "",
        "def get_config():", '    """Get the default hyperparameter configuration."""',
        "    config = ml_collections.ConfigDict()", f"    config.max_instances = {values['max_instances']}",
        "    config.num_slots = config.max_instances + 1  # Only used for metrics.",
        *[f"    config.{key} = {literal(value)}" for key, value in rest.items()],
        "    config.preproc_train = [",
        *[f"        {step!r}," for step in values["preproc_train"] if "max_instances" not in step],
        '        f"sparse_to_dense_annotation(max_instances={config.max_instances})",', "    ]",
        "    config.preproc_eval = [",
        *[f"        {step!r}," for step in values["preproc_eval"] if "max_instances" not in step],
        '        f"sparse_to_dense_annotation(max_instances={config.max_instances})",', "    ]",
        f"    readout = {literal(template)}",
        f"    config.model = {literal({**model, 'decoder': {**model['decoder'], 'target_readout': None}})}",
        "    config.model.decoder.target_readout = ml_collections.ConfigDict({",
        f"        'module': {readout['module']!r},", "        'keys': list(config.targets),",
        f"        'readout_modules': [ml_collections.ConfigDict({{**readout, {field!r}: config.targets[k]}})",
        "                            for k in config.targets],", "    })", "    return config", "",
    ]  # fmt: skip
    path.write_text("\n".join(lines))
    return path


def assert_matches_reference(model, reference: dict, video, boxes):
    """The model (SAVi, or a family on its backbone) against the float64 official `reference` outputs on the same
    `video` and `boxes`: in float64 the two compute the same function, so they agree to rounding (1e-10); in float32,
    as used, the reconstruction within 1e-4 (measured max error: SAVi 1.1e-5, STATM-SAVi 5.9e-6 over the tests' cases;
    a margin of 9x or more)."""
    config = model.config
    boxes = boxes if config.initializer_type == "conditional" else None  # only the conditional initialiser takes them
    with torch.no_grad():
        ours = model.double()(video.double(), boxes=None if boxes is None else boxes.double(), output_attentions=True)
    iterations = config.slot_attention_iterations
    pairs = {
        "states": ours.last_hidden_state, "states_pred": ours.predicted_slots,
        "outputs": ours.reconstruction.permute(0, 1, 3, 4, 2), "alphas": ours.masks.permute(0, 1, 2, 4, 5, 3),
        # one map per frame and iteration; the reference returns each frame's last
        "attention": torch.stack(ours.attentions[(config.first_frame_iterations or iterations) - 1 :: iterations], 1),
    }  # fmt: skip
    for name, value in pairs.items():
        torch.testing.assert_close(value, reference[name], rtol=0, atol=1e-10, msg=name)
    with torch.no_grad():
        ours = model.float()(video, boxes=boxes)
    torch.testing.assert_close(ours.reconstruction.permute(0, 1, 3, 4, 2).double(), reference["outputs"], rtol=0,
                               atol=1e-4)  # fmt: skip
