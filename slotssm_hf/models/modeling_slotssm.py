"""SlotSSM models: per-frame image encoder (ViT, CNN or a timm model), slot blocks (cross-attention, per-slot SSM
over time, slot self-attention, optional MLP) and decoders back to pixels or to the encoder's features."""

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from transformers import Cache, DynamicCache
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.cache_utils import LinearAttentionCacheLayerMixin
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.processing_utils import Unpack
from transformers.utils import ModelOutput, TransformersKwargs
from transformers.utils.deprecation import deprecate_kwarg
from transformers.utils.generic import can_return_tuple, merge_with_config_defaults
from transformers.utils.output_capturing import OutputRecorder, capture_outputs

from .configuration_slotssm import SlotSSMConfig
from .object_centric import LinearPositionEmbedding, eager_attention_forward
from .pretrained import ZooPreTrainedModel, autoregressive_rollout
from .mamba_mixers import GatedRMSNorm, Mamba1Mixer, Mamba2Mixer, MambaMixerBase, MambaState
from .timm_encoder import create_timm_backbone
from .video_inputs import check_pixel_values_videos

# Added to the per-slot sums before the inverted attention's renormalisation over tokens.
INVERTED_ATTENTION_EPS = 1e-5
# What a slot block calls on its cache.
CACHE_METHODS = ("get_conv_state", "get_recurrent_state", "update_conv_state", "update_recurrent_state")


def sincos_position_table(dim: int, grid_size: int, num_prefix_rows: int) -> torch.Tensor:
    """Fixed 2-D sin-cos table (1, num_prefix_rows + grid_size**2, dim) with zero rows for the prefix tokens.

    For the patch in row r and column c, with w_k = 10000^(-k / (dim/4)): channels [sin(c w), cos(c w),
    sin(r w), cos(r w)], a quarter each (the MAE convention).
    """
    omega = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float64) / (dim // 4))
    axis = torch.arange(grid_size, dtype=torch.float64)
    rows, cols = torch.meshgrid(axis, axis, indexing="ij")
    col_angles = cols.reshape(-1, 1) * omega
    row_angles = rows.reshape(-1, 1) * omega
    table = torch.cat([col_angles.sin(), col_angles.cos(), row_angles.sin(), row_angles.cos()], dim=1)
    return F.pad(table, (0, 0, num_prefix_rows, 0)).to(torch.get_default_dtype())[None]


def check_cache(cache, layers, batch_size: int):
    """Refuse a cache that is not the state of these slot `layers` for a batch of `batch_size` videos. Besides
    transformers' caches, any object with their conv / recurrent state methods is taken (a stand-in time mixer may
    keep states of its own layout, which only the mixer knows)."""
    origin = (
        "the cache must come from a previous call of this model with use_cache=True on the same videos (or be "
        "DynamicCache(config=model.config) to start)"
    )
    if isinstance(cache, Cache):
        kinds = [type(layer).__name__ for layer in cache.layers]
        if len(kinds) != len(layers) or not all(isinstance(c, LinearAttentionCacheLayerMixin) for c in cache.layers):
            raise ValueError(
                f"{origin}; got a {type(cache).__name__} with layers {kinds}, where this model needs {len(layers)} "
                "linear-attention layers, one per slot block"
            )
    elif not all(callable(getattr(cache, name, None)) for name in CACHE_METHODS):
        raise ValueError(f"{origin}; got a {type(cache).__name__}")
    for layer in layers:
        conv_state = cache.get_conv_state(layer.layer_idx)
        if conv_state is None or not isinstance(layer.time_mixer, MambaMixerBase):  # not started, or not ours
            continue
        got = (tuple(conv_state.shape), tuple(cache.get_recurrent_state(layer.layer_idx).shape))
        needed = layer.time_mixer.zero_state(batch_size * layer.num_slots, device="meta")
        needed = (tuple(needed.conv_state.shape), tuple(needed.ssm_state.shape))
        if got != needed:
            raise ValueError(
                f"{origin}; its layer {layer.layer_idx} holds (conv, SSM) states of shapes {got}, where this model "
                f"needs {needed} for {batch_size} videos of {layer.num_slots} slots"
            )


class EncodedFrames(NamedTuple):
    """What a frame encoder hands the slot blocks for frames (frames, C, H, W). `tokens` (frames, num_tokens,
    encoder_output_size): the cross-attention's values, and its keys too unless `key_tokens` (the same shape) is given,
    as the CNN gives its tokens without position (`cnn_position_in_keys=False`). `feature_map`: the map behind the
    tokens (a timm encoder's, (frames, feature_size, grid, grid))."""

    tokens: torch.Tensor
    key_tokens: torch.Tensor | None = None
    feature_map: torch.Tensor | None = None


def inverted_attention_forward(module, query, key, value, attention_mask, scaling, **kwargs):
    """Slot-attention-style attention: each key's softmax runs over all (head, query) pairs, so slots compete
    for tokens; each query then takes the weighted mean of the values. Shapes as `eager_attention_forward`; the
    weights returned are the competition weights, which show which slot claims which token. Necessarily eager."""
    logits = torch.matmul(query * scaling, key.transpose(-1, -2))
    weights = logits.flatten(-3, -2).softmax(dim=-2).view(logits.shape)
    normalized = weights / (weights.sum(dim=-1, keepdim=True) + INVERTED_ATTENTION_EPS)
    return torch.matmul(normalized, value).transpose(-3, -2).contiguous(), weights


class SlotSSMAttention(nn.Module):
    """Multi-head attention with separate q/k/v/o projections; self-attention, or cross-attention when
    `key_value_states` is given. Standard attention goes through the transformers attention interface."""

    def __init__(self, config: SlotSSMConfig, embed_dim: int, num_heads: int, inverted: bool = False):
        super().__init__()
        self.config = config
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads
        self.scaling = self.head_dim**-0.5
        self.inverted = inverted
        self.is_causal = False
        self.q_proj = nn.Linear(embed_dim, embed_dim)
        self.k_proj = nn.Linear(embed_dim, embed_dim)
        self.v_proj = nn.Linear(embed_dim, embed_dim)
        self.o_proj = nn.Linear(embed_dim, embed_dim)

    def split_heads(self, states):
        """(*batch, length, dim) -> (*batch, heads, length, head_dim)"""
        return states.unflatten(-1, (self.num_heads, self.head_dim)).transpose(-3, -2)

    def forward(self, hidden_states, key_value_states=None, key_states=None):
        """hidden_states (*batch, queries, dim); key_value_states (*batch, keys, dim) or None; key_states, the states
        the keys are projected from when they differ from the values' (like key_value_states); any number of batch
        dimensions. Returns the output (*batch, queries, dim) and the attention weights (*batch, heads, queries,
        keys), or None from kernels that do not compute them."""
        key_value_states = hidden_states if key_value_states is None else key_value_states
        key_states = key_value_states if key_states is None else key_states
        query = self.split_heads(self.q_proj(hidden_states))
        key = self.split_heads(self.k_proj(key_states))
        value = self.split_heads(self.v_proj(key_value_states))
        attention: Callable = (
            inverted_attention_forward
            if self.inverted
            else ALL_ATTENTION_FUNCTIONS.get_interface(self.config._attn_implementation, eager_attention_forward)
        )
        if attention not in (eager_attention_forward, inverted_attention_forward):
            # Kernels take exactly one batch dimension. The eager functions keep them all, so that the weights they
            # return are the very tensors the output was computed from (and receive gradients).
            query, key, value = (tensor.flatten(0, -4) for tensor in (query, key, value))
        output, weights = attention(self, query, key, value, None, scaling=self.scaling, dropout=0.0, is_causal=False)
        return self.o_proj(output.reshape(*hidden_states.shape[:-1], -1)), weights


class SlotSSMMLP(nn.Module):
    def __init__(self, dim: int, hidden_dim: int, activation: str):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = ACT2FN[activation]
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, hidden_states):
        return self.fc2(self.act(self.fc1(hidden_states)))


class SlotSSMTransformerLayer(GradientCheckpointingLayer):
    """Transformer layer of the image encoder (post-norm) and of the ViT decoder (pre-norm)."""

    def __init__(self, config, dim: int, num_heads: int, intermediate_size: int, activation: str, norm_first: bool):
        super().__init__()
        self.norm_first = norm_first
        self.attention = SlotSSMAttention(config, dim, num_heads)
        self.attention_norm = nn.LayerNorm(dim, eps=config.layer_norm_eps)
        self.mlp = SlotSSMMLP(dim, intermediate_size, activation)
        self.mlp_norm = nn.LayerNorm(dim, eps=config.layer_norm_eps)

    def forward(self, hidden_states):
        if self.norm_first:
            hidden_states = hidden_states + self.attention(self.attention_norm(hidden_states))[0]
            return hidden_states + self.mlp(self.mlp_norm(hidden_states))
        hidden_states = self.attention_norm(hidden_states + self.attention(hidden_states)[0])
        return self.mlp_norm(hidden_states + self.mlp(hidden_states))


class SlotSSMViTEncoder(nn.Module):
    """Frames (frames, C, H, W) -> patch tokens (frames, patches, encoder_output_size); post-norm ViT whose CLS
    token is computed and dropped, with a trainable position table started from 2-D sin-cos."""

    def __init__(self, config: SlotSSMConfig):
        super().__init__()
        self.grid_size = config.image_size // config.patch_size
        dim = config.encoder_hidden_size
        self.patch_embedding = nn.Conv2d(config.num_channels, dim, config.patch_size, stride=config.patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.position_embeddings = nn.Parameter(sincos_position_table(dim, self.grid_size, 1))
        self.layers = nn.ModuleList(
            SlotSSMTransformerLayer(
                config,
                dim,
                config.encoder_num_attention_heads,
                config.encoder_intermediate_size,
                config.encoder_hidden_act,
                norm_first=False,
            )
            for _ in range(config.encoder_num_layers)
        )
        self.output_proj = nn.Linear(dim, config.encoder_output_size)

    def get_input_embeddings(self) -> nn.Module:
        return self.patch_embedding

    def forward(self, pixel_values) -> EncodedFrames:
        patches = self.patch_embedding(pixel_values).flatten(2).transpose(1, 2)
        hidden_states = torch.cat([self.cls_token.expand(len(patches), -1, -1), patches], dim=1)
        hidden_states = hidden_states + self.position_embeddings
        for layer in self.layers:
            hidden_states = layer(hidden_states)
        return EncodedFrames(self.output_proj(hidden_states[:, 1:]))


class SlotSSMResidualBlock(nn.Module):
    def __init__(self, channels: int, kernel_size: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(1, channels)
        self.conv1 = nn.Conv2d(channels, channels, kernel_size, padding=kernel_size // 2)
        self.norm2 = nn.GroupNorm(1, channels)
        self.conv2 = nn.Conv2d(channels, channels, kernel_size, padding=kernel_size // 2)

    def forward(self, hidden_states):
        residual = F.relu(self.conv1(self.norm1(hidden_states)))
        return F.relu(hidden_states + self.conv2(self.norm2(residual)))


class SlotSSMCNNEncoder(nn.Module):
    """Frames (frames, C, H, W) -> feature tokens (frames, (H/r) * (W/r), encoder_output_size), row-major; with
    `cnn_position_in_keys=False` also the tokens of the same features without the position embedding, for keys."""

    def __init__(self, config: SlotSSMConfig):
        super().__init__()
        dim, ratio = config.encoder_hidden_size, config.cnn_downsampling_ratio
        self.stem = nn.Conv2d(config.num_channels, dim, ratio, stride=ratio)
        self.stem_norm = nn.GroupNorm(1, dim)
        self.stages = nn.ModuleList(
            nn.Sequential(*(SlotSSMResidualBlock(dim, config.cnn_kernel_size) for _ in range(config.cnn_blocks_per_stage)))
            for _ in range(config.encoder_num_layers)
        )
        self.position_embedding = LinearPositionEmbedding(dim) if config.cnn_position_embedding else None
        self.final_norm = nn.GroupNorm(1, dim)
        self.final_conv = nn.Conv2d(dim, config.encoder_output_size, 1)
        self.position_in_keys = config.cnn_position_in_keys

    def get_input_embeddings(self) -> nn.Module:
        return self.stem

    def forward(self, pixel_values) -> EncodedFrames:
        hidden_states = F.gelu(self.stem_norm(self.stem(pixel_values)))
        for stage in self.stages:
            hidden_states = stage(hidden_states)
        content = hidden_states
        if self.position_embedding is not None:
            hidden_states = self.position_embedding(hidden_states.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        if self.position_in_keys:
            return EncodedFrames(self.project(hidden_states))
        # One pass for both: the norm (one group) normalises each map on its own.
        tokens, key_tokens = self.project(torch.cat([hidden_states, content])).chunk(2)
        return EncodedFrames(tokens, key_tokens)

    def project(self, hidden_states):
        return self.final_conv(self.final_norm(hidden_states)).flatten(2).transpose(1, 2)


class SlotSSMTimmEncoder(nn.Module):
    """Frames (frames, C, H, W) -> tokens (frames, grid**2, encoder_output_size), row-major, and the feature map they
    come from (frames, feature_size, grid, grid): a timm model's map at `timm_feature_index`, read through
    `forward_intermediates` (prefix tokens dropped), then a linear projection where its width differs from
    `encoder_output_size`. A frozen backbone runs without gradients and stays in eval mode."""

    def __init__(self, config: SlotSSMConfig):
        super().__init__()
        # from_pretrained builds the model on the meta device and fills every weight from the checkpoint, so
        # fetching timm's pretrained weights there would be wasted (and needs a network).
        pretrained = config.timm_pretrained and torch.get_default_device().type != "meta"
        self.backbone, self.feature_index, self.feature_size, self.grid_size = create_timm_backbone(config, pretrained)
        # timm initialised the backbone or loaded its pretrained weights: post_init must leave them as they are.
        for tensor in (*self.backbone.parameters(), *self.backbone.buffers()):
            tensor._is_hf_initialized = True
        self.frozen = config.timm_frozen
        self.backbone.requires_grad_(not self.frozen)
        if self.frozen:
            self.backbone.eval()
        if self.feature_size == config.encoder_output_size:
            self.output_proj = nn.Identity()
        else:
            self.output_proj = nn.Linear(self.feature_size, config.encoder_output_size)

    def get_input_embeddings(self) -> nn.Module:
        """The backbone's first layer under timm's names for it (ViTs' patch embedding, CNNs' stem)."""
        for name in ("patch_embed", "stem", "conv_stem", "conv1"):
            if hasattr(self.backbone, name):
                return getattr(self.backbone, name)
        raise NotImplementedError(f"{type(self.backbone).__name__} has no patch_embed, stem, conv_stem or conv1")

    def train(self, mode: bool = True):
        super().train(mode)
        if self.frozen:  # no dropout or drop-path, and fixed normalisation statistics, in a frozen backbone
            self.backbone.eval()
        return self

    def forward(self, pixel_values) -> EncodedFrames:
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            features = self.backbone.forward_intermediates(
                pixel_values, indices=[self.feature_index], intermediates_only=True
            )[0]
        return EncodedFrames(self.output_proj(features.flatten(2).transpose(1, 2)), feature_map=features)


def build_encoder(config: SlotSSMConfig) -> nn.Module:
    kinds = {"vit": SlotSSMViTEncoder, "cnn": SlotSSMCNNEncoder, "timm": SlotSSMTimmEncoder}
    return kinds[config.encoder_type](config)


class SlotSSMBlock(GradientCheckpointingLayer):
    """One slot block; every sub-layer is a pre-norm residual, in the reference order:
    cross-attention slots <- frame tokens, per-slot SSM over time, self-attention across the slots of a frame,
    optional MLP."""

    def __init__(self, config: SlotSSMConfig, layer_idx: int):
        super().__init__()
        dim = config.hidden_size
        eps = config.layer_norm_eps
        self.layer_idx = layer_idx
        self.num_slots = config.num_slots
        self.num_cross_attention_steps = config.num_slot_attention_iterations if layer_idx == 0 else 1
        self.cross_attention_input_proj = nn.Linear(config.encoder_output_size, dim)
        self.cross_attention_input_norm = nn.LayerNorm(dim, eps=eps)
        self.cross_attention_slot_norm = nn.LayerNorm(dim, eps=eps)
        self.cross_attention = SlotSSMAttention(
            config, dim, config.cross_attention_num_heads, inverted=config.use_inverted_attention
        )
        self.time_mixer_norm = nn.LayerNorm(dim, eps=eps)
        mixer_args = {
            "d_model": dim,
            "d_state": config.mamba_d_state,
            "d_conv": config.mamba_d_conv,
            "expand": config.mamba_expand,
            "use_kernels": config.use_mamba_kernels,
        }
        if config.mamba_version == "mamba2":
            self.time_mixer = Mamba2Mixer(headdim=config.mamba_headdim, chunk_size=config.mamba_chunk_size, **mixer_args)
        else:
            self.time_mixer = Mamba1Mixer(**mixer_args)
        self.self_attention_norm = nn.LayerNorm(dim, eps=eps)
        self.self_attention = SlotSSMAttention(config, dim, config.num_attention_heads)
        if config.use_ffn:
            self.mlp_norm = nn.LayerNorm(dim, eps=eps)
            self.mlp = SlotSSMMLP(dim, config.intermediate_size, "gelu")
        else:
            self.mlp = None

    def forward(self, slots, tokens, cache=None, key_tokens=None):
        """slots (batch, frames, num_slots, dim); tokens (batch, frames, num_tokens, encoder_output_size);
        cache: a cache whose layer `layer_idx` holds the SSM state after the frames seen so far, continued
        and updated in place; key_tokens: tokens like `tokens` for the cross-attention's keys, when they differ.
        Returns the new slots and the (last) cross-attention weights (batch, frames, heads, num_slots,
        num_tokens)."""
        batch, frames, num_slots, dim = slots.shape
        inputs, keys = (
            None if states is None else self.cross_attention_input_norm(self.cross_attention_input_proj(states))
            for states in (tokens, key_tokens)
        )
        for _ in range(self.num_cross_attention_steps):
            update, weights = self.cross_attention(self.cross_attention_slot_norm(slots), inputs, keys)
            slots = slots + update

        # Slots fold into the batch: each follows its own trajectory through the shared SSM.
        per_slot = self.time_mixer_norm(slots.transpose(1, 2).reshape(batch * num_slots, frames, dim))
        slots = slots + self.mix_time(per_slot, cache).view(batch, num_slots, frames, dim).transpose(1, 2)

        slots = slots + self.self_attention(self.self_attention_norm(slots))[0]
        if self.mlp is not None:
            slots = slots + self.mlp(self.mlp_norm(slots))
        return slots, weights

    def mix_time(self, per_slot, cache):
        if cache is None:
            return self.time_mixer(per_slot)
        conv_state = cache.get_conv_state(self.layer_idx)
        state = None if conv_state is None else MambaState(conv_state, cache.get_recurrent_state(self.layer_idx))
        mixed, state = self.time_mixer(per_slot, state=state, return_state=True)
        cache.update_conv_state(state.conv_state, self.layer_idx)
        cache.update_recurrent_state(state.ssm_state, self.layer_idx)
        return mixed


class SlotSSMViTDecoder(nn.Module):
    """Slots (frames, num_slots, D) -> maps (frames, out_channels, H, W): MAE-style pre-norm transformer over the slots
    followed by one mask token per patch; the fixed sin-cos table has zero rows for the slots, so the decoder
    treats slots as a set. By default the patches tile the frame; `grid_size` and `patch_size=1` make it decode a
    (frames, out_channels, grid_size, grid_size) feature map instead."""

    def __init__(
        self, config: SlotSSMConfig, out_channels: int, grid_size: int | None = None, patch_size: int | None = None
    ):
        super().__init__()
        dim = config.decoder_hidden_size
        self.patch_size = patch_size or config.patch_size
        self.grid_size = grid_size or config.image_size // self.patch_size
        self.num_channels = out_channels
        self.input_proj = nn.Linear(config.hidden_size, dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.position_embeddings = nn.Parameter(
            sincos_position_table(dim, self.grid_size, config.num_slots), requires_grad=False
        )
        self.layers = nn.ModuleList(
            SlotSSMTransformerLayer(
                config,
                dim,
                config.decoder_num_attention_heads,
                config.decoder_intermediate_size,
                config.decoder_hidden_act,
                norm_first=True,
            )
            for _ in range(config.decoder_num_layers)
        )
        self.head_norm = nn.LayerNorm(dim, eps=config.layer_norm_eps)
        self.head = nn.Linear(dim, self.patch_size**2 * out_channels)

    def forward(self, slots):
        frames, num_slots, _ = slots.shape
        mask_tokens = self.mask_token.expand(frames, self.grid_size**2, -1)
        hidden_states = torch.cat([self.input_proj(slots), mask_tokens], dim=1) + self.position_embeddings
        for layer in self.layers:
            hidden_states = layer(hidden_states)
        patches = self.head(self.head_norm(hidden_states[:, num_slots:]))
        # Patch features are ordered (row in patch, column in patch, channel).
        grid, size = self.grid_size, self.patch_size
        patches = patches.view(frames, grid, grid, size, size, self.num_channels)
        return patches.permute(0, 5, 1, 3, 2, 4).reshape(frames, self.num_channels, grid * size, grid * size)


class SlotSSMSpatialBroadcastDecoder(nn.Module):
    """Slots (frames, num_slots, D) -> maps (frames, out_channels, H, W) and alpha masks (frames, num_slots, 1, H, W):
    each slot is broadcast to a grid, given x/y coordinates, upsampled by transposed convolutions to its own map
    plus an alpha logit; the masks are a softmax over slots and the output is the masked sum."""

    def __init__(self, config: SlotSSMConfig, out_channels: int):
        super().__init__()
        dim, hidden = config.hidden_size, config.decoder_hidden_size
        self.initial_size = config.decoder_initial_size
        self.norm = nn.LayerNorm(dim, eps=config.layer_norm_eps)
        self.upsample = nn.ModuleList(
            nn.Sequential(
                nn.ConvTranspose2d(dim if i == 0 else hidden, hidden, 5, stride=2, padding=2, output_padding=1),
                nn.GroupNorm(1, hidden),
                nn.GELU(),
            )
            for i in range(3)
        )
        if config.image_size // config.decoder_initial_size == 16:
            self.output_conv = nn.ConvTranspose2d(hidden, out_channels + 1, 5, stride=2, padding=2, output_padding=1)
        else:
            self.output_conv = nn.Conv2d(hidden, out_channels + 1, 5, padding=2)
        # Each slot's colour in one linear step: the masks can sort pixels by colour from the first steps. Without it
        # the colour must first be learned through the whole upsampling path, and training drops it from the tokens
        # and slots before then (the grey reconstructions of short runs).
        self.slot_color = nn.Linear(dim, out_channels) if config.decoder_slot_color else None

    def forward(self, slots):
        frames, num_slots, dim = slots.shape
        size = self.initial_size
        slots = self.norm(slots)
        hidden_states = slots.reshape(frames * num_slots, dim, 1, 1).expand(-1, -1, size, size)
        axis = torch.linspace(-1, 1, size, device=slots.device, dtype=slots.dtype)
        grid_y, grid_x = torch.meshgrid(axis, axis, indexing="ij")
        coordinates = torch.cat([grid_x.expand(dim // 2, -1, -1), grid_y.expand(dim // 2, -1, -1)])
        hidden_states = hidden_states + coordinates
        for block in self.upsample:
            hidden_states = block(hidden_states)
        output = self.output_conv(hidden_states).unflatten(0, (frames, num_slots))
        masks = output[:, :, -1:].softmax(dim=1)
        maps = output[:, :, :-1]
        if self.slot_color is not None:
            maps = maps + self.slot_color(slots)[..., None, None]
        return (maps * masks).sum(dim=1), masks


class SlotSSMFeatureBroadcastDecoder(nn.Module):
    """Slots (frames, num_slots, D) -> an encoder feature map (frames, feature_size, grid, grid) and alpha masks at
    frame size (frames, num_slots, 1, H, W); DINOSAUR's MLP decoder. Each slot is broadcast to the grid x grid
    feature positions, a learned position embedding is added, and a shared MLP maps every position to features plus
    an alpha logit; the masks are a softmax over slots, the output their weighted sum. The masks are upsampled
    (bilinearly, so they stay a distribution over slots) to compare with pictures and instance masks."""

    def __init__(self, config: SlotSSMConfig, feature_size: int, grid_size: int):
        super().__init__()
        dim, hidden = config.hidden_size, config.decoder_hidden_size
        self.grid_size, self.image_size = grid_size, config.image_size
        self.norm = nn.LayerNorm(dim, eps=config.layer_norm_eps)
        self.position_embeddings = nn.Parameter(torch.zeros(1, 1, grid_size**2, dim))
        layers = []
        for width in [dim] + [hidden] * (config.decoder_num_layers - 1):
            layers += [nn.Linear(width, hidden), ACT2FN[config.decoder_hidden_act]]
        self.mlp = nn.Sequential(*layers, nn.Linear(hidden, feature_size + 1))

    def forward(self, slots):
        frames, num_slots, _ = slots.shape
        output = self.mlp(self.norm(slots)[:, :, None] + self.position_embeddings)  # (frames, slots, positions, C+1)
        masks = output[..., -1:].softmax(dim=1)
        grid = (self.grid_size, self.grid_size)
        features = (output[..., :-1] * masks).sum(dim=1).transpose(1, 2).unflatten(2, grid)
        masks = F.interpolate(
            masks.transpose(2, 3).unflatten(3, grid).flatten(0, 1),
            size=(self.image_size, self.image_size),
            mode="bilinear",
            align_corners=False,
        )
        return features, masks.unflatten(0, (frames, num_slots))


def build_decoder(config: SlotSSMConfig, out_channels: int) -> nn.Module:
    kind = SlotSSMViTDecoder if config.decoder_type == "vit" else SlotSSMSpatialBroadcastDecoder
    return kind(config, out_channels)


def build_feature_decoder(config: SlotSSMConfig, feature_size: int, grid_size: int) -> nn.Module:
    """A decoder from slots to the encoder's (frames, feature_size, grid_size, grid_size) feature map."""
    if config.decoder_type == "vit":
        return SlotSSMViTDecoder(config, feature_size, grid_size=grid_size, patch_size=1)
    return SlotSSMFeatureBroadcastDecoder(config, feature_size, grid_size)


def decode_frames(decoder: nn.Module, slots):
    """Apply a per-frame decoder to slots (batch, frames, num_slots, D): maps (batch, frames, C, H, W) and, from
    the spatial-broadcast decoder, masks (batch, frames, num_slots, 1, H, W), else None."""
    batch, frames = slots.shape[:2]
    decoded = decoder(slots.flatten(0, 1))
    maps, masks = decoded if isinstance(decoded, tuple) else (decoded, None)
    return maps.unflatten(0, (batch, frames)), None if masks is None else masks.unflatten(0, (batch, frames))


@dataclass
class SlotSSMModelOutput(ModelOutput):
    """
    last_hidden_state: slots after the last block, (batch, frames, num_slots, hidden_size).
    hidden_states: the initial slots and the slots after every block, each like `last_hidden_state`.
    cache: with `use_cache=True`, the recurrent state of every slot block after the last frame; pass it
        back with the next frames to continue the video.
    attentions: per block, the cross-attention weights (batch, frames, heads, num_slots, num_tokens): which slot
        looks where (for inverted attention, each token's distribution over the slots).
    encoder_features: with a timm encoder, the feature map the slots read, before the projection to
        `encoder_output_size` (batch, frames, feature_size, grid, grid); the target of feature reconstruction.
    """

    last_hidden_state: torch.FloatTensor | None = None
    cache: DynamicCache | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None
    encoder_features: torch.FloatTensor | None = None


@dataclass
class SlotSSMReconstructionOutput(ModelOutput):
    """
    loss: mean squared error between `reconstruction` and the input frames (or `labels`); with
        `reconstruction_target="features"`, between `reconstruction` and the detached encoder features.
    reconstruction: decoded frames (batch, frames, channels, height, width), or the decoded encoder feature map
        (batch, frames, feature_size, grid, grid).
    masks: per-slot alpha masks (batch, frames, num_slots, 1, height, width), spatial-broadcast decoder only (when
        decoding features, the masks over the feature grid upsampled to frame size).
    last_hidden_state, cache, hidden_states, attentions: as in `SlotSSMModelOutput`.
    """

    loss: torch.FloatTensor | None = None
    reconstruction: torch.FloatTensor | None = None
    masks: torch.FloatTensor | None = None
    last_hidden_state: torch.FloatTensor | None = None
    cache: DynamicCache | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None


@dataclass
class SlotSSMVideoClassifierOutput(ModelOutput):
    """
    loss: classification (or regression) loss, when `labels` are given.
    logits: (batch, num_labels).
    cache, hidden_states, attentions: as in `SlotSSMModelOutput` (the slots are in `hidden_states`).
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    cache: DynamicCache | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None


@dataclass
class SlotSSMVideoPredictionOutput(ModelOutput):
    """
    loss: mean squared error of the predicted next frames, when there is a next frame to compare with.
    predictions: (batch, frames, channels, height, width); entry t predicts frame t + 1 from the slots up to t.
    masks: per-slot alpha masks of the predictions, spatial-broadcast decoder only.
    last_hidden_state, cache, hidden_states, attentions: as in `SlotSSMModelOutput`.
    """

    loss: torch.FloatTensor | None = None
    predictions: torch.FloatTensor | None = None
    masks: torch.FloatTensor | None = None
    last_hidden_state: torch.FloatTensor | None = None
    cache: DynamicCache | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None


@dataclass
class SlotSSMDepthEstimatorOutput(ModelOutput):
    """
    loss: the configured dense loss, when `labels` are given.
    predicted_depth: (batch, frames, num_dense_channels, height, width); with the scale-invariant loss, the
        exponential of the head's log-depth output.
    masks: per-slot alpha masks, spatial-broadcast decoder only.
    last_hidden_state, cache, hidden_states, attentions: as in `SlotSSMModelOutput`.
    """

    loss: torch.FloatTensor | None = None
    predicted_depth: torch.FloatTensor | None = None
    masks: torch.FloatTensor | None = None
    last_hidden_state: torch.FloatTensor | None = None
    cache: DynamicCache | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None


def scale_invariant_log_loss(log_prediction, target, variance_focus: float = 0.5):
    """Eigen et al.'s scale-invariant loss on the pixels with target > 0: mean(d^2) - variance_focus * mean(d)^2,
    d = log_prediction - log(target)."""
    valid = target > 0
    if not valid.any():
        raise ValueError("scale-invariant loss: no pixel of the labels is positive")
    difference = log_prediction[valid] - target[valid].log()
    return difference.pow(2).mean() - variance_focus * difference.mean().pow(2)


class SlotSSMPreTrainedModel(ZooPreTrainedModel):
    """Base of the SlotSSM family. Every task head runs `SlotSSMModel` (as `self.slotssm`) and passes it its
    keyword arguments (`cache`, `use_cache`, `output_attentions`, `output_hidden_states`)."""

    config_class = SlotSSMConfig
    config: SlotSSMConfig
    base_model_prefix = "slotssm"
    main_input_name = "pixel_values_videos"
    input_modalities = "video"
    supports_gradient_checkpointing = True
    _no_split_modules = ["SlotSSMBlock", "SlotSSMTransformerLayer"]
    _keep_in_fp32_modules_strict = ["A_log"]
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_attention_backend = True
    # transformers' output capturing: the slots after every block (and the initial slots) and every block's
    # cross-attention weights, taken from the blocks' outputs.
    _can_record_outputs = {"hidden_states": SlotSSMBlock, "attentions": OutputRecorder(SlotSSMBlock, index=1)}
    # Every loss is a mean over its batch, so the Trainer's own division by the accumulation steps is the right one.
    accepts_loss_kwargs = False

    @torch.no_grad()
    def _init_weights(self, module):
        # torch's own defaults for linear and convolution layers, from which the reference model trains.
        if isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.ConvTranspose2d)):
            init.kaiming_uniform_(module.weight, a=math.sqrt(5))
            if module.bias is not None:
                fan_in = nn.init._calculate_fan_in_and_fan_out(module.weight)[0]
                bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0
                init.uniform_(module.bias, -bound, bound)
        elif isinstance(module, (nn.LayerNorm, nn.GroupNorm, GatedRMSNorm)):
            init.ones_(module.weight)
            if getattr(module, "bias", None) is not None:
                init.zeros_(module.bias)
        elif isinstance(module, MambaMixerBase):  # after its linear children, so dt_proj gets mamba_ssm's init
            for name, value in module.ssm_initial_values().items():
                init.copy_(module.get_parameter(name), value)
        elif isinstance(module, SlotSSMViTEncoder):
            init.zeros_(module.cls_token)
            table = sincos_position_table(module.position_embeddings.shape[-1], module.grid_size, 1)
            init.copy_(module.position_embeddings, table)
        elif isinstance(module, SlotSSMViTDecoder):
            init.zeros_(module.mask_token)
            num_slots = module.position_embeddings.shape[1] - module.grid_size**2
            table = sincos_position_table(module.position_embeddings.shape[-1], module.grid_size, num_slots)
            init.copy_(module.position_embeddings, table)
        elif isinstance(module, SlotSSMFeatureBroadcastDecoder):
            init.normal_(module.position_embeddings, std=0.02)
        elif isinstance(module, SlotSSMModel):
            init.normal_(module.initial_slots)
        elif hasattr(module, "init_non_persistent_buffers"):
            # timm modules (RoPE tables, relative-position indices): from_pretrained builds on the meta device and
            # leaves buffers that no checkpoint holds empty.
            module.init_non_persistent_buffers()


class SlotSSMModel(SlotSSMPreTrainedModel):
    """Video (batch, frames, C, H, W) -> slots (batch, frames, num_slots, hidden_size). Slots at frame t depend
    only on frames <= t: the SSM is causal and all attention stays within a frame."""

    def __init__(self, config: SlotSSMConfig):
        super().__init__(config)
        self.encoder = build_encoder(config)
        # Learned per-slot starting vectors, shared by every video and frame (as in the reference).
        self.initial_slots = nn.Parameter(torch.randn(1, 1, config.num_slots, config.hidden_size))
        self.layers = nn.ModuleList(SlotSSMBlock(config, i) for i in range(config.num_hidden_layers))
        self.gradient_checkpointing = False
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        """The frame encoder's first layer, which embeds the pixels (as VideoMAE's patch embedding)."""
        return self.encoder.get_input_embeddings()

    @deprecate_kwarg("cache_params", version="5.40.0", new_name="cache")
    @merge_with_config_defaults
    @capture_outputs(tie_last_hidden_states=False)
    def forward(
        self,
        pixel_values_videos: torch.Tensor,
        cache: DynamicCache | None = None,
        use_cache: bool | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> SlotSSMModelOutput:
        r"""
        pixel_values_videos (`torch.FloatTensor` of shape `(batch, frames, num_channels, image_size, image_size)`):
            Normalised frames, e.g. from `SlotSSMVideoProcessor`.
        cache (`DynamicCache`, *optional*):
            The state after earlier frames of the same videos (from a previous call with `use_cache=True`): these
            frames continue them, and the cache is updated in place.
        use_cache (`bool`, *optional*):
            Return `cache` (a new cache when none was passed), as transformers' Mamba2Model does.
        output_hidden_states, output_attentions, return_dict: as in every transformers model; transformers records
            the slots and the cross-attention weights of every block.
        """
        check_pixel_values_videos(pixel_values_videos, self.config)
        # As transformers' vision models do: frames of another floating dtype (float64, bfloat16) run in the model's.
        pixel_values_videos = pixel_values_videos.to(self.dtype)
        if cache is not None:
            check_cache(cache, self.layers, pixel_values_videos.shape[0])
        if use_cache and cache is None:
            cache = DynamicCache(config=self.config)
        batch, frames = pixel_values_videos.shape[:2]
        tokens, key_tokens, features = (
            None if tensor is None else tensor.unflatten(0, (batch, frames))
            for tensor in self.encoder(pixel_values_videos.flatten(0, 1))
        )
        slots = self.initial_slots.expand(batch, frames, -1, -1)
        for layer in self.layers:
            slots, _ = layer(slots, tokens, cache, key_tokens)
        return SlotSSMModelOutput(
            last_hidden_state=slots, cache=cache if use_cache else None, encoder_features=features
        )


class SlotSSMForVideoReconstruction(SlotSSMPreTrainedModel):
    """SlotSSM with a decoder from each frame's slots back to that frame's pixels: the reference pre-training
    objective (a causal video autoencoder). With `reconstruction_target="features"` it decodes the timm encoder's
    feature map instead (DINOSAUR / VideoSAUR)."""

    def __init__(self, config: SlotSSMConfig):
        super().__init__(config)
        self.slotssm = SlotSSMModel(config)
        if config.reconstruction_target == "features":
            encoder = self.slotssm.encoder
            self.decoder = build_feature_decoder(config, encoder.feature_size, encoder.grid_size)
        else:
            self.decoder = build_decoder(config, config.num_channels)
        self.post_init()

    @deprecate_kwarg("cache_params", version="5.40.0", new_name="cache")
    @can_return_tuple
    def forward(
        self,
        pixel_values_videos: torch.Tensor,
        labels: torch.Tensor | None = None,
        cache: DynamicCache | None = None,
        use_cache: bool | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> SlotSSMReconstructionOutput:
        r"""
        pixel_values_videos (`torch.FloatTensor` of shape `(batch, frames, num_channels, image_size, image_size)`):
            Normalised frames.
        labels (`torch.FloatTensor` of the shape of `reconstruction`, *optional*):
            Target frames (or feature maps); the loss compares the reconstruction with the input frames (or the
            encoder's features) when None.
        cache, use_cache, output_attentions, output_hidden_states: as in `SlotSSMModel`.
        """
        outputs = self.slotssm(pixel_values_videos, cache=cache, use_cache=use_cache, return_dict=True, **kwargs)
        slots = outputs.last_hidden_state
        reconstruction, masks = decode_frames(self.decoder, slots)
        if self.config.reconstruction_target == "features":
            # Detached: the decoder chases the encoder's features, never the other way round.
            target, what = outputs.encoder_features.detach(), "the encoder features to reconstruct"
        else:
            target, what = pixel_values_videos, "the frames to reconstruct"
        target = target if labels is None else labels
        check_labels(target, reconstruction.shape, what)
        loss = F.mse_loss(reconstruction.float(), target.float())
        return SlotSSMReconstructionOutput(
            loss=loss,
            reconstruction=reconstruction,
            masks=masks,
            last_hidden_state=slots,
            **backbone_outputs(outputs),
        )


def backbone_outputs(outputs: SlotSSMModelOutput) -> dict:
    """The backbone's outputs that every head passes on unchanged."""
    return {"cache": outputs.cache, "hidden_states": outputs.hidden_states, "attentions": outputs.attentions}


def check_labels(labels, expected_shape, what: str):
    if labels.shape != expected_shape:
        raise ValueError(f"expected labels of shape {tuple(expected_shape)} ({what}), got {tuple(labels.shape)}")


class SlotSSMForVideoClassification(SlotSSMPreTrainedModel):
    """SlotSSM with a linear classifier on the slots (mean over slots, of the last frame or of all frames), for
    single-label, multi-label classification or regression (`config.problem_type`, `config.num_labels`)."""

    def __init__(self, config: SlotSSMConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.slotssm = SlotSSMModel(config)
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    @deprecate_kwarg("cache_params", version="5.40.0", new_name="cache")
    @can_return_tuple
    def forward(
        self,
        pixel_values_videos: torch.Tensor,
        labels: torch.Tensor | None = None,
        cache: DynamicCache | None = None,
        use_cache: bool | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> SlotSSMVideoClassifierOutput:
        r"""
        labels (`torch.LongTensor` of shape `(batch,)`, or `(batch, num_labels)` floats for multi-label / regression):
            Targets of the classification or regression loss.
        """
        outputs = self.slotssm(pixel_values_videos, cache=cache, use_cache=use_cache, return_dict=True, **kwargs)
        slots = outputs.last_hidden_state
        pooled = slots[:, -1] if self.config.classifier_pooling == "last" else slots.mean(dim=1)
        logits = self.classifier(self.norm(pooled).mean(dim=1))
        loss = None if labels is None else self.loss_function(labels, logits, self.config)
        return SlotSSMVideoClassifierOutput(
            loss=loss,
            logits=logits,
            **backbone_outputs(outputs),
        )


class SlotSSMForVideoPrediction(SlotSSMPreTrainedModel):
    """SlotSSM that predicts the next frame from the slots up to the current one (the paper's video prediction):
    trained with teacher forcing on the clip itself, rolled out autoregressively with `rollout`."""

    def __init__(self, config: SlotSSMConfig):
        super().__init__(config)
        self.slotssm = SlotSSMModel(config)
        self.decoder = build_decoder(config, config.num_channels)
        self.post_init()

    @deprecate_kwarg("cache_params", version="5.40.0", new_name="cache")
    @can_return_tuple
    def forward(
        self,
        pixel_values_videos: torch.Tensor,
        labels: torch.Tensor | None = None,
        cache: DynamicCache | None = None,
        use_cache: bool | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> SlotSSMVideoPredictionOutput:
        r"""
        labels (`torch.FloatTensor` of the shape of `pixel_values_videos`, *optional*):
            The frame that follows each input frame. When None, the clip supervises itself: the predictions for
            frames 1..T-1 are compared with those frames (no loss for a single frame).
        """
        outputs = self.slotssm(pixel_values_videos, cache=cache, use_cache=use_cache, return_dict=True, **kwargs)
        predictions, masks = decode_frames(self.decoder, outputs.last_hidden_state)
        loss = None
        if labels is not None:
            check_labels(labels, predictions.shape, "the frame after each input frame")
            loss = F.mse_loss(predictions.float(), labels.float())
        elif pixel_values_videos.shape[1] > 1:
            loss = F.mse_loss(predictions[:, :-1].float(), pixel_values_videos[:, 1:].float())
        return SlotSSMVideoPredictionOutput(
            loss=loss,
            predictions=predictions,
            masks=masks,
            last_hidden_state=outputs.last_hidden_state,
            **backbone_outputs(outputs),
        )

    def rollout(self, context: torch.Tensor, num_steps: int) -> torch.Tensor:
        """Predict `num_steps` frames after `context` (batch, frames, C, H, W), feeding each prediction back as the
        next input through the recurrent state. Returns (batch, num_steps, C, H, W)."""
        return autoregressive_rollout(self, context, num_steps)


class SlotSSMForVideoDepthEstimation(SlotSSMPreTrainedModel):
    """SlotSSM with a dense decoder to `num_dense_channels` values per pixel and frame (depth, or any per-pixel
    map); trained with `config.dense_loss`."""

    def __init__(self, config: SlotSSMConfig):
        super().__init__(config)
        self.slotssm = SlotSSMModel(config)
        self.decoder = build_decoder(config, config.num_dense_channels)
        self.post_init()

    @deprecate_kwarg("cache_params", version="5.40.0", new_name="cache")
    @can_return_tuple
    def forward(
        self,
        pixel_values_videos: torch.Tensor,
        labels: torch.Tensor | None = None,
        cache: DynamicCache | None = None,
        use_cache: bool | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> SlotSSMDepthEstimatorOutput:
        r"""
        labels (`torch.FloatTensor` of shape `(batch, frames, num_dense_channels, height, width)`, *optional*):
            Target maps (depth); with the scale-invariant loss, pixels whose label is <= 0 are ignored.
        """
        outputs = self.slotssm(pixel_values_videos, cache=cache, use_cache=use_cache, return_dict=True, **kwargs)
        maps, masks = decode_frames(self.decoder, outputs.last_hidden_state)
        loss = None
        if labels is not None:
            check_labels(labels, maps.shape, "a map per frame")
            if self.config.dense_loss == "mse":
                loss = F.mse_loss(maps.float(), labels.float())
            else:
                loss = scale_invariant_log_loss(maps.float(), labels.float())
        return SlotSSMDepthEstimatorOutput(
            loss=loss,
            predicted_depth=maps if self.config.dense_loss == "mse" else maps.exp(),
            masks=masks,
            last_hidden_state=outputs.last_hidden_state,
            **backbone_outputs(outputs),
        )


__all__ = [
    "SlotSSMPreTrainedModel",
    "SlotSSMModel",
    "SlotSSMForVideoReconstruction",
    "SlotSSMForVideoClassification",
    "SlotSSMForVideoPrediction",
    "SlotSSMForVideoDepthEstimation",
]
