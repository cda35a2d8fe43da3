"""The efficiency study's baselines: a slot Transformer and a slot RNN, built as a `SlotSSMModel` whose temporal
mixers are swapped, so the encoder, cross-attention, slot self-attention and everything else are the same code and
only the model over time differs.

A temporal mixer has the interface of `slotssm_hf.models.mamba_mixers.Mamba2Mixer`: `forward(hidden_states (batch, time, d_model),
state=None, return_state=False)` returns the output (batch, time, d_model), and with `return_state=True` also the
state after the last step, which a later call continues from. The slots of every video are folded into the batch.
`SlotSSMBlock` carries a mixer's state through the model's cache as a `MambaState(conv_state, ssm_state)` pair;
the baselines store their own state in those two fields.

Not library API: these exist to be measured against (benchmarks/bench_efficiency.py).
"""

import torch
import torch.nn.functional as F
from torch import nn
from transformers import DynamicCache

from slotssm_hf import SlotSSMConfig, SlotSSMModel
from slotssm_hf.models.mamba_mixers import MambaState

TEMPORAL_MODELS = ("slotssm", "transformer", "rnn")
ROTARY_BASE = 10000.0


def rotate_positions(x, positions):
    """Rotary position embedding: x (batch, heads, time, head_dim), positions (time,) absolute frame indices. The
    first and second halves of the channels form the rotated pairs."""
    half = x.shape[-1] // 2
    frequencies = ROTARY_BASE ** (-torch.arange(half, dtype=torch.float32, device=x.device) / half)
    angles = positions.to(torch.float32)[:, None] * frequencies
    cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
    first, second = x[..., :half], x[..., half:]
    return torch.cat([first * cos - second * sin, first * sin + second * cos], dim=-1)


class CausalTimeAttention(nn.Module):
    """Slot-Transformer mixer: multi-head causal self-attention over time with rotary positions.

    The state is the KV cache: `MambaState(conv_state=keys, ssm_state=values)`, each (batch, heads, frames seen,
    head_dim), rotated keys. It grows by one frame per step, appended by concatenation as transformers'
    `DynamicCache` does.
    """

    def __init__(self, d_model: int, num_heads: int):
        super().__init__()
        if d_model % num_heads or (d_model // num_heads) % 2:
            raise ValueError(f"d_model ({d_model}) must split into {num_heads} heads of even size")
        self.num_heads, self.head_dim = num_heads, d_model // num_heads
        self.qkv_proj = nn.Linear(d_model, 3 * d_model)
        self.out_proj = nn.Linear(d_model, d_model)

    def forward(self, hidden_states, state: MambaState | None = None, return_state: bool = False):
        batch, time, _ = hidden_states.shape
        past = 0 if state is None else state.conv_state.shape[2]
        qkv = self.qkv_proj(hidden_states).view(batch, time, 3, self.num_heads, self.head_dim)
        query, key, value = qkv.permute(2, 0, 3, 1, 4)
        positions = torch.arange(past, past + time, device=hidden_states.device)
        query, key = rotate_positions(query, positions), rotate_positions(key, positions)
        if state is not None:
            key = torch.cat([state.conv_state, key], dim=2)
            value = torch.cat([state.ssm_state, value], dim=2)
        # New frame i (absolute past + i) sees keys 0..past + i. Without a past the causal flag says this (and lets
        # SDPA take its fused path); a single new frame sees every key; a chunk after a past needs the explicit mask.
        mask = None
        if past and time > 1:
            mask = torch.ones(time, past + time, dtype=torch.bool, device=hidden_states.device).tril(past)
        output = F.scaled_dot_product_attention(query, key, value, attn_mask=mask, is_causal=not past and time > 1)
        output = self.out_proj(output.transpose(1, 2).reshape(batch, time, -1))
        return (output, MambaState(key, value)) if return_state else output


class TimeGRU(nn.Module):
    """Slot-RNN mixer (SAVi-style): one GRU over time, shared by every slot sequence.

    The state is `MambaState(conv_state=an empty (batch, 0) tensor, ssm_state=the hidden state (batch, d_model))`: a
    GRU has no convolution, and the cache needs a tensor there to know a state exists.
    """

    def __init__(self, d_model: int):
        super().__init__()
        self.gru = nn.GRU(d_model, d_model, batch_first=True)

    def forward(self, hidden_states, state: MambaState | None = None, return_state: bool = False):
        initial = None if state is None else state.ssm_state[None]
        output, last = self.gru(hidden_states, initial)
        if not return_state:
            return output
        return output, MambaState(hidden_states.new_empty(len(hidden_states), 0), last[0])


def build_slot_model(config: SlotSSMConfig, temporal_model: str) -> SlotSSMModel:
    """A `SlotSSMModel` whose blocks use `temporal_model` over time: "slotssm" (the config's Mamba mixer),
    "transformer" (`CausalTimeAttention` with the config's slot self-attention heads) or "rnn" (`TimeGRU`)."""
    if temporal_model not in TEMPORAL_MODELS:
        raise ValueError(f"temporal_model must be one of {TEMPORAL_MODELS}, got {temporal_model!r}")
    model = SlotSSMModel(config)
    for layer in model.layers:
        if temporal_model == "transformer":
            layer.time_mixer = CausalTimeAttention(config.hidden_size, config.num_attention_heads)
        elif temporal_model == "rnn":
            layer.time_mixer = TimeGRU(config.hidden_size)
    return model


class GrowingStateCache:
    """The part of transformers' cache API that `SlotSSMBlock` uses (a conv state and a recurrent state per block),
    holding each state as the mixer returned it. transformers' linear-attention cache layers copy states into buffers
    of fixed shape, which a KV cache growing by a frame per step does not fit."""

    def __init__(self):
        self.conv_states, self.recurrent_states = {}, {}

    def get_conv_state(self, layer_idx: int):
        return self.conv_states.get(layer_idx)

    def get_recurrent_state(self, layer_idx: int):
        return self.recurrent_states.get(layer_idx)

    def update_conv_state(self, conv_state, layer_idx: int):
        self.conv_states[layer_idx] = conv_state

    def update_recurrent_state(self, recurrent_state, layer_idx: int):
        self.recurrent_states[layer_idx] = recurrent_state


def new_cache(config: SlotSSMConfig, temporal_model: str):
    """An empty cache to stream `temporal_model` with: the library's `DynamicCache` for SlotSSM."""
    return DynamicCache(config=config) if temporal_model == "slotssm" else GrowingStateCache()


def cache_state_bytes(cache, num_layers: int) -> int:
    """Bytes of the state tensors a cache carries from one frame to the next."""
    tensors = [cache.get_conv_state(i) for i in range(num_layers)] + [
        cache.get_recurrent_state(i) for i in range(num_layers)
    ]
    return sum(tensor.numel() * tensor.element_size() for tensor in tensors if tensor is not None)
