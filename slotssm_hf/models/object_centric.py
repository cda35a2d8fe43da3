"""Object-centric building blocks shared by the zoo's slot-based families: Flax-"SAME" convolutions, the CNN and
ResNet frame backbones, the linear position embedding, MLPs, slot attention (iterative, GRU + optional MLP update),
a Flax-style transformer block, slot initialisers (conditional on boxes, learned, Gaussian) and the spatial-broadcast
decoder with alpha masks.

Every block computes what its counterpart in the official SAVi code (google-research/slot-attention-video, Flax)
computes, with the Flax defaults where they differ from torch's: LayerNorm / GroupNorm epsilon 1e-6, "SAME" padding
that puts the odd pixel after (not before) the image, transposed convolutions that do not flip the kernel. Module
and parameter names follow torch conventions; `convert_savi.py` documents the mapping from the Flax names.

Only torch and transformers are imported here, and model files import this module relatively, so saved checkpoints
run with `trust_remote_code=True` where the package is not installed.
"""

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS


def eager_attention_forward(module, query, key, value, attention_mask, scaling, dropout=0.0, **kwargs):
    """Softmax attention over the keys; query/key/value (*batch, heads, length, head_dim), any number of batch
    dimensions. Returns the output (*batch, queries, heads, head_dim) and the weights (*batch, heads, queries, keys)."""
    weights = torch.matmul(query, key.transpose(-1, -2)) * scaling
    if attention_mask is not None:
        weights = weights + attention_mask
    weights = F.dropout(weights.softmax(dim=-1), p=dropout, training=module.training)
    return torch.matmul(weights, value).transpose(-3, -2).contiguous(), weights


def flax_same_padding(size: int, kernel_size: int, stride: int) -> tuple[int, int]:
    """(before, after) padding of a Flax / XLA "SAME" convolution: output size ceil(size / stride), the odd pixel of
    an odd total padded after. torch's symmetric `padding=k // 2` differs at stride 2 and shifts the grid."""
    total = max((-(-size // stride) - 1) * stride + kernel_size - size, 0)
    return total // 2, total - total // 2


def flax_transpose_padding(kernel_size: int, stride: int) -> tuple[int, int]:
    """(before, after) padding of the stride-dilated input in Flax's "SAME" transposed convolution
    (`lax.conv_transpose`), which makes the output size `stride` x the input size: (3, 2) for kernel 5, stride 2."""
    total = kernel_size + stride - 2
    before = kernel_size - 1 if stride > kernel_size - 1 else -(-total // 2)
    return before, total - before


class SameConv2d(nn.Conv2d):
    """`nn.Conv2d` with Flax's "SAME" padding (see `flax_same_padding`)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, bias: bool = True):
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, bias=bias)

    def forward(self, hidden_states):
        (kernel_h, kernel_w), (stride_h, stride_w) = self.kernel_size, self.stride
        pad_h = flax_same_padding(hidden_states.shape[-2], kernel_h, stride_h)
        pad_w = flax_same_padding(hidden_states.shape[-1], kernel_w, stride_w)
        return super().forward(F.pad(hidden_states, (*pad_w, *pad_h)))


class SameConvTranspose2d(nn.ConvTranspose2d):
    """Flax's "SAME" transposed convolution: output size `stride` x input size.

    Flax convolves the stride-dilated input, padded by `flax_transpose_padding`, with the kernel as stored (no flip).
    `conv_transpose2d` is the same convolution with the spatially flipped weight (the converter flips it) and
    `kernel - 1 - padding` on both sides; we choose `padding` to match Flax's padding before and fix the side after
    with `output_padding` (more) or a crop (less)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, bias: bool = True):
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, bias=bias)
        before, after = flax_transpose_padding(kernel_size, stride)
        self.flax_padding = kernel_size - 1 - before
        self.extra_after = max(after - before, 0)
        self.crop_after = max(before - after, 0)

    def forward(self, hidden_states):
        output = F.conv_transpose2d(
            hidden_states, self.weight, self.bias, self.stride, self.flax_padding, output_padding=self.extra_after
        )
        if self.crop_after:
            output = output[..., : output.shape[-2] - self.crop_after, : output.shape[-1] - self.crop_after]
        return output


class ConvStack(nn.Module):
    """The official `CNN` without normalisation: convolutions (or transposed convolutions) with "SAME" padding, each
    followed by a ReLU (the last one too). (batch, C, H, W) -> (batch, features[-1], H', W')."""

    def __init__(self, in_channels: int, features, kernel_sizes, strides, transposed):
        super().__init__()
        widths = [in_channels, *features]
        self.convs = nn.ModuleList(
            (SameConvTranspose2d if transpose else SameConv2d)(widths[i], widths[i + 1], kernel_sizes[i], strides[i])
            for i, transpose in enumerate(transposed)
        )

    def forward(self, hidden_states):
        for conv in self.convs:
            hidden_states = F.relu(conv(hidden_states))
        return hidden_states


class ResNetBlock(nn.Module):
    """Basic ResNet-v1 block (two 3x3 convolutions, no bias, GroupNorm), with a projected shortcut when the stride or
    width changes."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, num_groups: int, eps: float):
        super().__init__()
        self.conv1 = SameConv2d(in_channels, out_channels, 3, stride, bias=False)
        self.bn1 = nn.GroupNorm(num_groups, out_channels, eps=eps)
        self.conv2 = SameConv2d(out_channels, out_channels, 3, bias=False)
        self.bn2 = nn.GroupNorm(num_groups, out_channels, eps=eps)
        self.bn2.zero_init_scale = True  # the official block starts as the identity (`_init_weights` reads this)
        if stride != 1 or in_channels != out_channels:
            self.proj_conv = SameConv2d(in_channels, out_channels, 1, stride, bias=False)
            self.proj_bn = nn.GroupNorm(num_groups, out_channels, eps=eps)
        else:
            self.proj_conv = self.proj_bn = None

    def forward(self, hidden_states):
        residual = hidden_states if self.proj_conv is None else self.proj_bn(self.proj_conv(hidden_states))
        hidden_states = F.relu(self.bn1(self.conv1(hidden_states)))
        return F.relu(residual + self.bn2(self.conv2(hidden_states)))


class ResNet(nn.Module):
    """The official ResNet-v1 backbone with basic blocks, GroupNorm and "small inputs": a 3x3 stride-1 stem without
    max-pooling, stages of width 64 x 2^i, the first block of every stage after the first at stride 2. The stem's
    GroupNorm is not followed by an activation, as in the official code. (batch, C, H, W) -> (batch, 64 x 2^(n-1),
    H / 2^(n-1), W / 2^(n-1))."""

    def __init__(self, in_channels: int, stage_sizes, width: int, num_groups: int, eps: float):
        super().__init__()
        self.init_conv = SameConv2d(in_channels, width, 3, bias=False)
        self.init_bn = nn.GroupNorm(num_groups, width, eps=eps)
        stages, channels = [], width
        for i, size in enumerate(stage_sizes):
            out = width * 2**i
            blocks = [ResNetBlock(channels if j == 0 else out, out, 2 if i and j == 0 else 1, num_groups, eps)
                      for j in range(size)]  # fmt: skip
            stages.append(nn.ModuleList(blocks))
            channels = out
        self.stages = nn.ModuleList(stages)
        self.out_channels = channels

    def forward(self, hidden_states):
        hidden_states = self.init_bn(self.init_conv(hidden_states))
        for stage in self.stages:
            for block in stage:
                hidden_states = block(hidden_states)
        return hidden_states


def coordinate_grid(height: int, width: int, device=None, dtype=None) -> torch.Tensor:
    """(height, width, 2): channel 0 the row coordinate and channel 1 the column coordinate, each evenly spaced in
    [-1, 1] (the official `create_gradient_grid`)."""
    rows = torch.linspace(-1, 1, height, device=device, dtype=dtype)
    cols = torch.linspace(-1, 1, width, device=device, dtype=dtype)
    return torch.stack(torch.meshgrid(rows, cols, indexing="ij"), dim=-1)


class LinearPositionEmbedding(nn.Module):
    """The official "linear" position embedding with "project_add": a fixed (y, x) grid in [-1, 1], projected by a
    linear layer to the feature width and added. Channels-last features (..., H, W, C) in and out."""

    def __init__(self, channels: int):
        super().__init__()
        self.dense = nn.Linear(2, channels)

    def forward(self, hidden_states):
        height, width = hidden_states.shape[-3:-1]
        grid = coordinate_grid(height, width, hidden_states.device, hidden_states.dtype)
        return hidden_states + self.dense(grid)


class MLP(nn.Module):
    """The official `MLP`: optional LayerNorm before ("pre") or after ("post"), `num_hidden_layers` ReLU layers of
    width `hidden_size`, an output layer (no activation), optional residual connection around the layers."""

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        output_size: int | None = None,
        num_hidden_layers: int = 1,
        layernorm: str | None = None,
        residual: bool = False,
        eps: float = 1e-6,
    ):
        super().__init__()
        widths = [input_size] + [hidden_size] * num_hidden_layers + [output_size or input_size]
        self.norm = nn.LayerNorm(input_size if layernorm == "pre" else widths[-1], eps=eps) if layernorm else None
        self.pre_norm = layernorm == "pre"
        self.residual = residual
        self.layers = nn.ModuleList(nn.Linear(widths[i], widths[i + 1]) for i in range(len(widths) - 1))

    def forward(self, inputs):
        hidden_states = self.norm(inputs) if self.pre_norm else inputs
        for i, layer in enumerate(self.layers):
            hidden_states = layer(hidden_states)
            if i < len(self.layers) - 1:
                hidden_states = F.relu(hidden_states)
        if self.residual:
            hidden_states = hidden_states + inputs
        if self.norm is not None and not self.pre_norm:
            hidden_states = self.norm(hidden_states)
        return hidden_states


class SlotAttentionMap(nn.Module):
    """The attention of one slot-attention iteration: the scaled queries of the slots (batch, num_slots, heads,
    head_dim) and the keys of the inputs (batch, num_inputs, heads, head_dim) -> (batch, heads, num_slots,
    num_inputs), a softmax over the slots (slots compete for each input). No parameters: a module of its own so that
    transformers' output capturing records the map of every iteration (a forward hook sees each call)."""

    def forward(self, query, key):
        return torch.einsum("bqhd,bkhd->bhqk", query, key).softmax(dim=-2)


class SlotAttention(nn.Module):
    """Slot attention (Locatello et al. 2020) as the official SAVi corrector computes it, pre-norm.

    The inputs are layer-normed and projected to keys and values once; every iteration layer-norms the slots,
    projects them to queries (no biases), takes a softmax over the *slots* of the scaled dot products (slots compete
    for each input), renormalises each slot's weights over the inputs (+`epsilon`) to a weighted mean of the values,
    and updates each slot with a GRU cell (input: the update, state: the slot), then an optional residual pre-norm
    MLP. With several heads, the heads' updates are concatenated and projected to the head size (the official
    `DenseGeneral(features=head_dim)`), which is then the GRU's input size.
    """

    def __init__(
        self,
        slot_size: int,
        input_size: int,
        qkv_size: int,
        num_heads: int = 1,
        mlp_size: int | None = None,
        epsilon: float = 1e-8,
        layer_norm_eps: float = 1e-6,
    ):
        super().__init__()
        self.num_heads, self.head_dim, self.epsilon = num_heads, qkv_size // num_heads, epsilon
        self.input_norm = nn.LayerNorm(input_size, eps=layer_norm_eps)
        self.slot_norm = nn.LayerNorm(slot_size, eps=layer_norm_eps)
        self.q_proj = nn.Linear(slot_size, qkv_size, bias=False)
        self.k_proj = nn.Linear(input_size, qkv_size, bias=False)
        self.v_proj = nn.Linear(input_size, qkv_size, bias=False)
        self.o_proj = nn.Linear(qkv_size, self.head_dim) if num_heads > 1 else None
        self.gru = nn.GRUCell(self.head_dim if num_heads > 1 else qkv_size, slot_size)
        self.mlp = MLP(slot_size, mlp_size, layernorm="pre", residual=True, eps=layer_norm_eps) if mlp_size else None
        self.attention_map = SlotAttentionMap()

    def forward(self, slots, inputs, num_iterations: int = 1):
        """slots (batch, num_slots, slot_size), inputs (batch, num_inputs, input_size) -> the updated slots and the
        last iteration's attention (batch, heads, num_slots, num_inputs), a distribution over slots per input."""
        batch, num_slots, slot_size = slots.shape
        inputs = self.input_norm(inputs)
        heads = (batch, -1, self.num_heads, self.head_dim)
        key, value = self.k_proj(inputs).view(heads), self.v_proj(inputs).view(heads)
        for _ in range(num_iterations):
            query = self.q_proj(self.slot_norm(slots)).view(heads) * self.head_dim**-0.5
            attention = self.attention_map(query, key)
            weights = attention / (attention.sum(dim=-1, keepdim=True) + self.epsilon)
            updates = torch.einsum("bhqk,bkhd->bqhd", weights, value).flatten(2)
            if self.o_proj is not None:
                updates = self.o_proj(updates)
            slots = self.gru(updates.flatten(0, 1), slots.reshape(-1, slot_size)).view(batch, num_slots, slot_size)
            if self.mlp is not None:
                slots = self.mlp(slots)
        return slots, attention


class MultiHeadAttention(nn.Module):
    """Flax's `MultiHeadDotProductAttention` (q/k/v/out projections with biases, 1/sqrt(head_dim) scaling) through the
    transformers attention interface, so `attn_implementation` chooses eager or SDPA."""

    def __init__(self, config, hidden_size: int, num_heads: int, qkv_size: int):
        super().__init__()
        self.config = config
        self.num_heads, self.head_dim = num_heads, qkv_size // num_heads
        self.scaling = self.head_dim**-0.5
        self.is_causal = False
        self.q_proj = nn.Linear(hidden_size, qkv_size)
        self.k_proj = nn.Linear(hidden_size, qkv_size)
        self.v_proj = nn.Linear(hidden_size, qkv_size)
        self.o_proj = nn.Linear(qkv_size, hidden_size)

    def forward(self, hidden_states, key_value_states=None):
        """hidden_states (*batch, length, hidden_size) attend to themselves, or to `key_value_states`
        (*batch, kv_length, hidden_size) when given (cross-attention, e.g. STATM's slots over their history); any
        number of batch dimensions. Returns the output (*batch, length, hidden_size) and the attention weights
        (*batch, heads, length, kv_length), or None from kernels that do not compute them (SDPA)."""
        inputs = hidden_states if key_value_states is None else key_value_states
        query, key, value = (proj(states).unflatten(-1, (self.num_heads, self.head_dim)).transpose(-3, -2)
                             for proj, states in ((self.q_proj, hidden_states), (self.k_proj, inputs),
                                                  (self.v_proj, inputs)))  # fmt: skip
        attention: Callable = ALL_ATTENTION_FUNCTIONS.get_interface(
            self.config._attn_implementation, eager_attention_forward
        )
        if attention is not eager_attention_forward:
            # Kernels take exactly one batch dimension. The eager function keeps them all, so that the weights it
            # returns are the very tensors the output was computed from (and receive gradients).
            query, key, value = (tensor.flatten(0, -4) for tensor in (query, key, value))
        output, weights = attention(self, query, key, value, None, scaling=self.scaling, dropout=0.0, is_causal=False)
        return self.o_proj(output.reshape(*hidden_states.shape[:-1], -1)), weights


class TransformerBlock(GradientCheckpointingLayer):
    """The official `TransformerBlock` with self-attention only (no cross-attention inputs) and a ReLU MLP.
    Post-norm (SAVi's predictor): x = LN(s + MHA(s)), out = LN(x + MLP(x)); pre-norm (SAVi++'s encoder):
    x = s + MHA(LN(s)), out = x + MLP(LN(x)). (batch, length, hidden_size) in and out."""

    def __init__(self, config, hidden_size: int, num_heads: int, qkv_size: int, mlp_size: int, pre_norm: bool,
                 eps: float = 1e-6):  # fmt: skip
        super().__init__()
        self.pre_norm = pre_norm
        self.attention = MultiHeadAttention(config, hidden_size, num_heads, qkv_size)
        self.attention_norm = nn.LayerNorm(hidden_size, eps=eps)
        self.mlp = MLP(hidden_size, mlp_size)
        self.mlp_norm = nn.LayerNorm(hidden_size, eps=eps)

    def forward(self, hidden_states):
        if self.pre_norm:
            hidden_states = hidden_states + self.attention(self.attention_norm(hidden_states))[0]
            return hidden_states + self.mlp(self.mlp_norm(hidden_states))
        hidden_states = self.attention_norm(hidden_states + self.attention(hidden_states)[0])
        return self.mlp_norm(hidden_states + self.mlp(hidden_states))


class ConditionalSlotInitializer(nn.Module):
    """The official `CoordinateEncoderStateInit`: an MLP (ReLU) on each first-frame box (ymin, xmin, ymax, xmax) in
    [0, 1], or on its centre (y, x) with `center_of_mass`; with `prepend_background` a box filled with
    `background_value` is put first, for the background slot. Absent objects are zero boxes, which the MLP maps to
    the same slot as the background at first."""

    def __init__(self, slot_size: int, hidden_size: int, center_of_mass: bool, prepend_background: bool,
                 background_value: float):  # fmt: skip
        super().__init__()
        self.center_of_mass, self.prepend_background = center_of_mass, prepend_background
        self.background_value = background_value
        self.mlp = MLP(2 if center_of_mass else 4, hidden_size, slot_size)

    def forward(self, boxes):
        """boxes (batch, num_boxes, 4) -> slots (batch, num_boxes (+ 1 with `prepend_background`), slot_size)."""
        if self.prepend_background:
            boxes = torch.cat([boxes.new_full((boxes.shape[0], 1, 4), self.background_value), boxes], dim=1)
        if self.center_of_mass:
            boxes = torch.stack([(boxes[..., 0] + boxes[..., 2]) / 2, (boxes[..., 1] + boxes[..., 3]) / 2], dim=-1)
        return self.mlp(boxes)


class LearnedSlotInitializer(nn.Module):
    """The official `ParamStateInit`: one learned vector per slot (standard-normal at initialisation), the same for
    every video."""

    def __init__(self, num_slots: int, slot_size: int):
        super().__init__()
        self.slots = nn.Parameter(torch.randn(num_slots, slot_size))

    def forward(self, batch_size: int):
        return self.slots.expand(batch_size, -1, -1)


class GaussianSlotInitializer(nn.Module):
    """The official `GaussianStateInit`: slots drawn from a standard normal for every video, no parameters; pass a
    `generator` for reproducible draws."""

    def __init__(self, num_slots: int, slot_size: int):
        super().__init__()
        self.num_slots, self.slot_size = num_slots, slot_size

    def forward(self, batch_size: int, device=None, dtype=None, generator=None):
        shape = (batch_size, self.num_slots, self.slot_size)
        return torch.randn(shape, device=device, dtype=dtype, generator=generator)


class SpatialBroadcastDecoder(nn.Module):
    """The official `SpatialBroadcastDecoder`: every slot is broadcast to a `broadcast_size`^2 grid, a linear position
    embedding is added, a `ConvStack` upsamples it; a linear layer gives each pixel an alpha logit, the alpha masks
    are a softmax over slots. One linear readout per target (e.g. flow, depth) maps the features to its channels;
    the targets are the alpha-weighted sums over slots of the readouts, or (`early_fusion`, SAVi++) the readouts of
    the alpha-weighted sum of the features (the same for linear readouts, cheaper). With `slot_readout` (not in the
    official model) a linear map of each slot itself, one value per target channel, is added to that slot's
    readouts at every pixel."""

    def __init__(self, slot_size: int, broadcast_size: int, features, kernel_sizes, strides, transposed,
                 target_channels, early_fusion: bool, slot_readout: bool = False):  # fmt: skip
        super().__init__()
        self.broadcast_size, self.early_fusion = broadcast_size, early_fusion
        self.position_embedding = LinearPositionEmbedding(slot_size)
        self.backbone = ConvStack(slot_size, features, kernel_sizes, strides, transposed)
        self.alpha_logits = nn.Linear(features[-1], 1)
        self.readouts = nn.ModuleList(nn.Linear(features[-1], channels) for channels in target_channels)
        # A slot's colour (or flow, depth) in one linear step, so that the masks can sort pixels by it from the first
        # steps: through the upsampling path alone, small objects' colour is learned after the background's, and
        # their slots have spread over the frame by then.
        self.slot_readout = nn.Linear(slot_size, sum(target_channels)) if slot_readout else None

    def forward(self, slots):
        """slots (batch, num_slots, slot_size) -> targets (batch, sum of target channels, H, W), the targets'
        channels concatenated in order, and alpha masks (batch, num_slots, 1, H, W)."""
        batch, num_slots, slot_size = slots.shape
        size = self.broadcast_size
        hidden_states = slots.reshape(batch * num_slots, 1, 1, slot_size).expand(-1, size, size, -1)
        hidden_states = self.position_embedding(hidden_states).permute(0, 3, 1, 2)
        hidden_states = self.backbone(hidden_states).permute(0, 2, 3, 1)  # channels last, for the linear layers
        hidden_states = hidden_states.unflatten(0, (batch, num_slots))  # (batch, slots, H, W, C)
        alphas = self.alpha_logits(hidden_states).softmax(dim=1)
        if self.early_fusion:
            fused = (hidden_states * alphas).sum(dim=1)
            targets = torch.cat([readout(fused) for readout in self.readouts], dim=-1)
        else:
            per_slot = torch.cat([readout(hidden_states) for readout in self.readouts], dim=-1)
            targets = (per_slot * alphas).sum(dim=1)
        if self.slot_readout is not None:
            targets = targets + (self.slot_readout(slots)[:, :, None, None] * alphas).sum(dim=1)
        return targets.permute(0, 3, 1, 2), alphas.permute(0, 1, 4, 2, 3)


__all__ = [
    "eager_attention_forward",
    "flax_same_padding",
    "flax_transpose_padding",
    "SameConv2d",
    "SameConvTranspose2d",
    "ConvStack",
    "ResNetBlock",
    "ResNet",
    "coordinate_grid",
    "LinearPositionEmbedding",
    "MLP",
    "SlotAttentionMap",
    "SlotAttention",
    "MultiHeadAttention",
    "TransformerBlock",
    "ConditionalSlotInitializer",
    "LearnedSlotInitializer",
    "GaussianSlotInitializer",
    "SpatialBroadcastDecoder",
]
