"""Official-layout ConvS5 checkpoints (NVlabs/ConvSSM, noVQ model): random Flax parameter trees with the official
module names and shapes, the files flax.training.checkpoints writes, the run configuration the official trainer
records beside them (`<run>/args`, a pickled argparse Namespace holding the YAML config's fields), and frames and
layouts to compare the official model with."""

import argparse
import copy
import math
import pickle

import numpy as np
import torch
from flax_format import write_flax_checkpoint


def official_params(rng, channels=1, depths=(32, 64), d_model=32, ssm_size=16, layers=2, k=3, encoder_blocks=1,
                    decoder_blocks=1):  # fmt: skip
    def normal(*shape, scale=1.0):
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    def conv(cin, cout, size=3, bias=True):
        p = {"kernel": normal(size, size, cin, cout, scale=1 / math.sqrt(cin * size * size))}
        return {**p, "bias": normal(cout, scale=0.1)} if bias else p

    def norm(c):
        return {"scale": 1 + normal(c, scale=0.1), "bias": normal(c, scale=0.1)}

    def teco_block(cin, cout):
        block = {
            "GroupNorm_0": norm(cin), "Conv_0": conv(cin, cout), "GroupNorm_1": norm(cout),
            "Conv_1": conv(cout, cout, bias=False), "AddBias_0": {"bias": normal(cout, scale=0.1)},
        }  # fmt: skip
        return {**block, "skip": conv(cin, cout, size=1, bias=False)} if cin != cout else block

    p = ssm_size // 2

    def sequence_layer():
        return {
            "norm": norm(d_model),
            "seq": {
                # some positive real parts, which the forward pass clips
                "Lambda_re": rng.uniform(-0.6, 0.05, p).astype(np.float32),
                "Lambda_im": normal(p, scale=30.0),
                "log_step": rng.uniform(math.log(1e-3), math.log(0.1), (p, 1)).astype(np.float32),
                "B": normal(p, d_model * k * k, 2, scale=1 / math.sqrt(d_model * k * k)),
                "C": normal(k, k, p, d_model, 2, scale=1 / math.sqrt(p * k * k)),
                "C_D_conv": {"GroupNorm_0": norm(d_model), "Conv_0": conv(d_model, d_model, k),
                             "GroupNorm_1": norm(d_model), "Conv_1": conv(d_model, d_model, k)},
            },
        }  # fmt: skip

    # TECO's encoder: one block at the first width, `blocks` at each later one; its decoder: `blocks` per width.
    encoder_widths = [depths[0], *(d for d in depths[1:] for _ in range(encoder_blocks))]
    widths = [depths[0], *(d for d in reversed(depths) for _ in range(decoder_blocks))]
    return {
        "encoder": {
            "Conv_0": conv(channels, depths[0]),
            **{f"ResNetBlock_{i}": teco_block(encoder_widths[max(i - 1, 0)], d) for i, d in enumerate(encoder_widths)},
        },
        "action_embeds": {"embedding": normal(2, 1)},
        "action_conv": {"Conv_0": conv(depths[-1] + 1, d_model, size=1)},
        "sequence_model": {f"layers_{i}": sequence_layer() for i in range(layers)},
        "decoder": {
            "Conv_0": conv(d_model, depths[0]),
            **{f"ResNetBlock_{i}": teco_block(a, b) for i, (a, b) in enumerate(zip(widths, widths[1:]))},
            "LayerNorm_0": norm(depths[0]),
            "Dense_0": {"kernel": normal(depths[0], channels, scale=depths[0] ** -0.5), "bias": normal(channels)},
        },
    }


def official_checkpoint(path, params):
    """A file as flax.training.checkpoints writes the official TrainState (Adam moments as the optimizer state)."""
    def zeros(tree):
        return {k: zeros(v) if isinstance(v, dict) else np.zeros_like(v) for k, v in tree.items()}

    tree = {
        "step": np.int32(2000),
        "params": params,
        "opt_state": {"0": {"count": np.int32(2000), "mu": zeros(params), "nu": zeros(params)}, "1": {}},
        "model_state": {},
    }
    write_flax_checkpoint(tree, path)
    return path


def frames_like(config, batch=2, frames=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, frames, config.num_channels, config.image_size, config.image_size, generator=g) * 2 - 1


def to_nhwc(video):
    return video.permute(0, 1, 3, 4, 2).double().numpy()


def official_run_config(channels=1, depths=(32, 64), d_model=32, ssm_size=16, layers=2, k=3, image_size=16,
                        **changes) -> dict:  # fmt: skip
    """What the official trainer pickles as `<run>/args` for a model of `official_params`' sizes: its own arguments
    and every field of the Moving-MNIST YAML config (configs/Moving-MNIST/300_train_len/mnist_convS5_novq.yaml), with
    `changes` ({"seq_model": {"num_groups": 8}}, {"image_size": 32}) merged in."""
    values = {
        "data_dir": "/raid/moving_mnist_long_2", "output_dir": "logs/mnist", "config": "mnist_convS5_novq.yaml",
        "run_id": "mnist", "seed": 1, "cache": False, "multinode": False, "batch_size": 8, "eval_size": 1024,
        "num_workers": 4, "lr": 0.001, "lr_schedule": "cosine", "weight_decay": 1e-05, "total_steps": 300000,
        "warmup_steps": 5000, "save_interval": 2000, "viz_interval": 2000, "log_interval": 100,
        "data_path": "/raid/moving_mnist_long_2", "eval_seq_len_1": 500, "eval_seq_len_2": 1000, "seq_len": 300,
        "image_size": image_size, "channels": channels, "num_shards": None, "rng_keys": ["dropout", "sample"],
        "batch_keys": ["video", "actions"], "model": "convS5_noVQ", "loss_weight": 0.5,
        "encoder": {"depths": list(depths), "blocks": 1}, "decoder": {"depths": list(depths), "blocks": 1},
        "d_model": d_model,
        "seq_model": {"n_layers": layers, "layer_activation": "gelu", "dropout": 0.0, "use_norm": True,
                      "prenorm": False, "per_layer_skip": True, "num_groups": 32, "squeeze_excite": False,
                      "skip_connections": False},
        "ssm": {"ssm_size": ssm_size, "blocks": 1, "clip_eigs": True, "B_kernel_size": k, "C_kernel_size": k,
                "D_kernel_size": k, "dt_min": 0.001, "dt_max": 0.1, "C_D_config": "resnet"},
        "latent_height": image_size // 2 ** (len(depths) - 1), "latent_width": image_size // 2 ** (len(depths) - 1),
        "n_cond": 1, "drop_loss_rate": 0.0, "causal_masking": False, "use_actions": False, "action_dim": 1,
        "action_embed_dim": 1, "dropout_actions": False, "action_dropout_rate": 0.0, "action_mask_id": -1,
        "open_loop_ctx": 100, "open_loop_ctx_1": 100, "action_conditioned_1": False, "open_loop_ctx_2": 100,
        "action_conditioned_2": False,
    }  # fmt: skip
    values = copy.deepcopy(values)
    for name, value in changes.items():
        if isinstance(value, dict):
            values[name].update(value)
        else:
            values[name] = value
    return values


def write_run_args(path, values: dict, protocol: int = pickle.DEFAULT_PROTOCOL):
    """`<run>/args` as the official trainer writes it: `pickle.dump(args, ...)` of its argparse Namespace."""
    with open(path, "wb") as file:
        pickle.dump(argparse.Namespace(**values), file, protocol=protocol)
    return path
