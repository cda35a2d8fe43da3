"""Official-layout ConvS5 checkpoints (NVlabs/ConvSSM, noVQ model): random Flax parameter trees with the official
module names and shapes, the files flax.training.checkpoints writes, and frames and layouts to compare the official
model with."""

import math

import numpy as np
import torch
from flax_format import write_flax_checkpoint


def official_params(rng, channels=1, depths=(32, 64), d_model=32, ssm_size=16, layers=2, k=3):
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

    widths = [depths[0], *reversed(depths)]
    return {
        "encoder": {
            "Conv_0": conv(channels, depths[0]),
            **{f"ResNetBlock_{i}": teco_block(depths[max(i - 1, 0)], d) for i, d in enumerate(depths)},
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
