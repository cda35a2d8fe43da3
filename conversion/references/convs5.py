"""A float64 NumPy evaluation of the official ConvS5 "noVQ" model directly on its Flax parameter tree, one frame
at a time: the oracle that `slotssm-hf convert-convs5 --verify` and the tests compare converted models with.

Written from the paper's equations and from what the official code computes, independently of
`modeling_convs5` (no torch, channels-last arrays, Flax kernel layouts as they are stored: conv kernels HWIO, dense
kernels (in, out), `B` as a (P, U k k, re/im) matrix, `C` as a (k, k, P, U, re/im) kernel, `log_step` (P, 1)).
Slow by design: every convolution is a sum of shifted matrix products, every state advances one step at a time.

What the parameters do not show comes from the official run's configuration, read here from the official field
names (`OfficialSettings.from_run_config`), never from the converter's `ConvS5Config`: the C/D block's GroupNorm
groups and activation, the eigenvalue clipping, the ResNet blocks per width.
"""

import math
from dataclasses import dataclass

import numpy as np

FLAX_NORM_EPS = 1e-6  # Flax's LayerNorm and GroupNorm default


@dataclass(frozen=True)
class OfficialSettings:
    """The official settings the reference needs besides the parameters, with the official code's defaults (the
    Moving-MNIST configs)."""

    clip_eigs: bool = True
    num_groups: int = 32  # seq_model.num_groups, of the C/D ResNet block
    activation: str = "gelu"  # seq_model.layer_activation
    encoder_blocks: int = 1
    decoder_blocks: int = 1

    @classmethod
    def from_run_config(cls, run: dict) -> "OfficialSettings":
        """From the official configuration (`<run>/args` or the YAML, as plain dicts); missing fields keep the
        defaults."""
        defaults = cls()

        def get(section, name, default):
            return run.get(section, {}).get(name, default) if isinstance(run.get(section), dict) else default

        return cls(
            clip_eigs=bool(get("ssm", "clip_eigs", defaults.clip_eigs)),
            num_groups=int(get("seq_model", "num_groups", defaults.num_groups)),
            activation=str(get("seq_model", "layer_activation", defaults.activation)),
            encoder_blocks=int(get("encoder", "blocks", defaults.encoder_blocks)),
            decoder_blocks=int(get("decoder", "blocks", defaults.decoder_blocks)),
        )


def conv_same(x, kernel, bias=None):
    """'SAME' stride-1 cross-correlation of x (N, H, W, Cin) with an HWIO kernel (k, k, Cin, Cout)."""
    k = kernel.shape[0]
    height, width = x.shape[1:3]
    padded = np.pad(x, ((0, 0), (k // 2, k // 2), (k // 2, k // 2), (0, 0)))
    out = sum(padded[:, i : i + height, j : j + width] @ kernel[i, j] for i in range(k) for j in range(k))
    return out if bias is None else out + bias


def group_norm(x, p, groups=32):
    n, h, w, c = x.shape
    grouped = x.reshape(n, h, w, groups, c // groups)
    mean = grouped.mean(axis=(1, 2, 4), keepdims=True)
    var = grouped.var(axis=(1, 2, 4), keepdims=True)
    return ((grouped - mean) / np.sqrt(var + FLAX_NORM_EPS)).reshape(x.shape) * p["scale"] + p["bias"]


def layer_norm(x, p):
    mean = x.mean(-1, keepdims=True)
    var = x.var(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + FLAX_NORM_EPS) * p["scale"] + p["bias"]


def elu(x):
    return np.where(x > 0, x, np.expm1(np.minimum(x, 0)))


def gelu_tanh(x):  # Flax's nn.gelu (approximate=True)
    return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))


# The official SequenceLayer's `activation_fn` choices, as Flax defines them.
ACTIVATIONS = {
    "gelu": gelu_tanh,
    "relu": lambda x: np.maximum(x, 0),
    "swish": lambda x: x / (1 + np.exp(-x)),
    "elu": elu,
}


def teco_resnet_block(p, x):
    skip = x @ p["skip"]["kernel"][0, 0] if "skip" in p else x
    h = conv_same(elu(group_norm(x, p["GroupNorm_0"])), p["Conv_0"]["kernel"], p["Conv_0"]["bias"])
    h = conv_same(elu(group_norm(h, p["GroupNorm_1"])), p["Conv_1"]["kernel"]) + p["AddBias_0"]["bias"]
    return skip + 0.1 * h


def encode(p, frames, blocks_per_width=1):
    """TECO's ResNetEncoder: conv, one block, then per further width an average pooling and `blocks_per_width`
    blocks (the official `encoder.blocks`)."""
    x = conv_same(frames, p["Conv_0"]["kernel"], p["Conv_0"]["bias"])
    x = teco_resnet_block(p["ResNetBlock_0"], x)
    for i in range(1, len([k for k in p if k.startswith("ResNetBlock_")])):
        if (i - 1) % blocks_per_width == 0:
            n, h, w, c = x.shape
            x = x.reshape(n, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))
        x = teco_resnet_block(p[f"ResNetBlock_{i}"], x)
    return x


def decode(p, x, blocks_per_width=1):
    """TECO's ResNetDecoder: conv, then per width `blocks_per_width` blocks (the official `decoder.blocks`) and a
    nearest 2x upsampling between widths, LayerNorm, Dense."""
    x = conv_same(x, p["Conv_0"]["kernel"], p["Conv_0"]["bias"])
    blocks = len([k for k in p if k.startswith("ResNetBlock_")])
    for i in range(blocks):
        x = teco_resnet_block(p[f"ResNetBlock_{i}"], x)
        if (i + 1) % blocks_per_width == 0 and i < blocks - 1:
            x = x.repeat(2, axis=1).repeat(2, axis=2)
    return layer_norm(x, p["LayerNorm_0"]) @ p["Dense_0"]["kernel"] + p["Dense_0"]["bias"]


def discretized(seq, clip_eigs=True):
    """Λ̄ (P,), B̄ as an HWIO kernel (k, k, U, P) and C̃ as an HWIO kernel (k, k, P, U), complex128."""
    real = np.minimum(seq["Lambda_re"], -1e-4) if clip_eigs else seq["Lambda_re"]
    lam = real.astype(np.float64) + 1j * seq["Lambda_im"]
    step = np.exp(seq["log_step"][:, 0].astype(np.float64))
    lambda_bar = np.exp(lam * step)
    b_tilde = seq["B"][..., 0] + 1j * seq["B"][..., 1]  # (P, U k k): row p is the (U, k, k) kernel of state p
    b_bar = ((lambda_bar - 1) / lam)[:, None] * b_tilde
    states, width = b_tilde.shape[0], seq["C"].shape[3]
    k = math.isqrt(b_tilde.shape[1] // width)
    b_kernel = b_bar.reshape(states, width, k, k).transpose(2, 3, 1, 0)
    return lambda_bar, b_kernel, seq["C"][..., 0] + 1j * seq["C"][..., 1]


def sequence_layer_step(p, u, x, settings: OfficialSettings = OfficialSettings()):
    """One frame through one official SequenceLayer (post-norm, ConvS5 SSM with the "resnet" C/D branch):
    u (N, h, w, U) real, x the previous complex state (N, h, w, P), None before the first frame. Returns the layer
    output and the new state."""
    act, groups = ACTIVATIONS[settings.activation], settings.num_groups
    lambda_bar, b_kernel, c_kernel = discretized(p["seq"], settings.clip_eigs)
    x = conv_same(u.astype(np.complex128), b_kernel) + (0 if x is None else lambda_bar * x)
    y = 2 * conv_same(x, c_kernel).real
    cd = p["seq"]["C_D_conv"]
    h = conv_same(act(group_norm(y, cd["GroupNorm_0"], groups)), cd["Conv_0"]["kernel"], cd["Conv_0"]["bias"])
    h = conv_same(act(group_norm(h, cd["GroupNorm_1"], groups)), cd["Conv_1"]["kernel"], cd["Conv_1"]["bias"])
    return layer_norm(u + act(y + h), p["norm"]), x


class FlaxConvS5Reference:
    """The official model on a Flax `params` tree (nested dict of arrays), in float64, frame by frame, with the run's
    `settings` (the official defaults when None)."""

    def __init__(self, params: dict, settings: OfficialSettings | None = None):
        self.params = params
        self.settings = settings or OfficialSettings()
        self.layers = [params["sequence_model"][f"layers_{i}"] for i in range(len(params["sequence_model"]))]

    def step(self, frame, states):
        """frame (N, H, W, C) in [-1, 1] and the states after the previous frames (None before the first) -> the
        tanh prediction of the next frame, and the new states."""
        p = self.params
        features = encode(p["encoder"], frame.astype(np.float64), self.settings.encoder_blocks)
        embedding = p["action_embeds"]["embedding"]  # no actions: row 0 for every frame
        action = np.broadcast_to(embedding[0], (*features.shape[:3], embedding.shape[1]))
        conv = p["action_conv"]["Conv_0"]
        u = conv_same(np.concatenate([features, action], -1), conv["kernel"], conv["bias"])
        new_states = []
        for layer, x in zip(self.layers, states or [None] * len(self.layers)):
            u, x = sequence_layer_step(layer, u, x, self.settings)
            new_states.append(x)
        return np.tanh(decode(p["decoder"], u, self.settings.decoder_blocks)), new_states

    def predict(self, video):
        """Teacher-forced predictions for a video (N, T, H, W, C): entry t predicts frame t + 1."""
        states, predictions = None, []
        for t in range(video.shape[1]):
            prediction, states = self.step(video[:, t], states)
            predictions.append(prediction)
        return np.stack(predictions, axis=1)

    def rollout(self, context, num_steps: int):
        """The official sampler's scheme: the context frames condition the states, then every prediction is fed
        back as the next input. Returns the `num_steps` frames after the context, (N, num_steps, H, W, C)."""
        states = None
        for t in range(context.shape[1]):
            prediction, states = self.step(context[:, t], states)
        frames = [prediction]
        for _ in range(num_steps - 1):
            prediction, states = self.step(frames[-1], states)
            frames.append(prediction)
        return np.stack(frames, axis=1)
