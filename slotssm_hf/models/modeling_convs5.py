"""ConvS5 models (Smith et al., NeurIPS 2023), the official "noVQ" video prediction model: a per-frame TECO ResNet
encoder, a constant action channel, a stack of ConvS5 layers (a convolutional state-space model over time, run as a
parallel scan on whole clips and as a recurrence frame by frame) and a TECO ResNet decoder with a tanh output.

Our own implementation, written from the paper and from reading the official code's behaviour; the official code
and weights are under NVIDIA's non-commercial source code license.
"""

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import Cache, DynamicCache
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.cache_utils import LinearAttentionCacheLayerMixin
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.utils import ModelOutput
from transformers.utils.deprecation import deprecate_kwarg
from transformers.utils.generic import can_return_tuple

from .configuration_convs5 import ConvS5Config
from .convs5_scan import convs5_scan, convs5_step, discretize_zoh
from .pretrained import ZooPreTrainedModel, autoregressive_rollout
from .video_inputs import cache_error, check_cache_state, check_pixel_values_videos

# Frames are 2 * uint8 / 255 - 1; a little slack lets resampled or re-encoded frames through.
PIXEL_RANGE_SLACK = 1e-3


def check_frames(pixel_values_videos, config: ConvS5Config, name: str = "pixel_values_videos"):
    check_pixel_values_videos(pixel_values_videos, config, name)
    low, high = pixel_values_videos.aminmax()
    if low < -1 - PIXEL_RANGE_SLACK or high > 1 + PIXEL_RANGE_SLACK:
        raise ValueError(
            f"ConvS5 takes {name} in [-1, 1] (2 * uint8 / 255 - 1, as ConvS5VideoProcessor produces), got values in "
            f"[{low.item():.4g}, {high.item():.4g}]"
        )


class ConvS5ResNetBlock(nn.Module):
    """TECO's ResNet block: GroupNorm, ELU, conv, GroupNorm, ELU, bias-free conv plus a separate bias; the input
    (through a bias-free 1x1 convolution when the width changes) plus 0.1 times that."""

    def __init__(self, config: ConvS5Config, in_channels: int, out_channels: int):
        super().__init__()
        groups, eps = config.resnet_num_groups, config.group_norm_eps
        self.skip = nn.Conv2d(in_channels, out_channels, 1, bias=False) if in_channels != out_channels else None
        self.norm1 = nn.GroupNorm(groups, in_channels, eps=eps)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = nn.GroupNorm(groups, out_channels, eps=eps)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bias = nn.Parameter(torch.zeros(out_channels))

    def forward(self, hidden_states):
        skip = hidden_states if self.skip is None else self.skip(hidden_states)
        hidden_states = self.conv1(F.elu(self.norm1(hidden_states)))
        hidden_states = self.conv2(F.elu(self.norm2(hidden_states))) + self.bias[:, None, None]
        return skip + 0.1 * hidden_states


class ConvS5Encoder(nn.Module):
    """Frames (N, C, H, W) -> features (N, encoder_depths[-1], H / 2**(n-1), W / 2**(n-1)): a 3x3 convolution and a
    ResNet block at the first width, then for every later width a 2x2 average pooling and `encoder_blocks` ResNet
    blocks."""

    def __init__(self, config: ConvS5Config):
        super().__init__()
        depths = config.encoder_depths
        widths = [depths[0], *(depth for depth in depths[1:] for _ in range(config.encoder_blocks))]
        # Whether a 2x2 pooling precedes each block: before the first block of every width but the first.
        self.pool_before = [False, *(j == 0 for _ in depths[1:] for j in range(config.encoder_blocks))]
        self.conv_in = nn.Conv2d(config.num_channels, depths[0], 3, padding=1)
        self.blocks = nn.ModuleList(
            ConvS5ResNetBlock(config, widths[max(i - 1, 0)], width) for i, width in enumerate(widths)
        )

    def forward(self, pixel_values):
        hidden_states = self.conv_in(pixel_values)
        for pool, block in zip(self.pool_before, self.blocks):
            if pool:
                hidden_states = F.avg_pool2d(hidden_states, 2)
            hidden_states = block(hidden_states)
        return hidden_states


class ConvS5Decoder(nn.Module):
    """Features (N, hidden_size, h, w) -> pre-tanh frames (N, num_channels, H, W): a 3x3 convolution to
    decoder_depths[0] channels (as the official decoder), `decoder_blocks` ResNet blocks per width through the widths
    in reverse with 2x nearest upsampling between widths, a LayerNorm over channels and a per-pixel linear map."""

    def __init__(self, config: ConvS5Config):
        super().__init__()
        depths, repeats = config.decoder_depths, config.decoder_blocks
        widths = [depth for depth in reversed(depths) for _ in range(repeats)]
        # Whether 2x upsampling follows each block: after the last block of every width but the last.
        self.upsample_after = [
            j == repeats - 1 and i < len(depths) - 1 for i in range(len(depths)) for j in range(repeats)
        ]
        self.conv_in = nn.Conv2d(config.hidden_size, depths[0], 3, padding=1)
        self.blocks = nn.ModuleList(ConvS5ResNetBlock(config, a, b) for a, b in zip([depths[0], *widths], widths))
        self.norm = nn.LayerNorm(depths[0], eps=config.layer_norm_eps)
        self.proj = nn.Linear(depths[0], config.num_channels)

    def forward(self, hidden_states):
        hidden_states = self.conv_in(hidden_states)
        for block, upsample in zip(self.blocks, self.upsample_after):
            hidden_states = block(hidden_states)
            if upsample:
                hidden_states = F.interpolate(hidden_states, scale_factor=2, mode="nearest")
        return self.proj(self.norm(hidden_states.permute(0, 2, 3, 1))).permute(0, 3, 1, 2)


class ConvS5OutputBlock(nn.Module):
    """The official "resnet" C/D branch after the state-to-output convolution: GroupNorm, activation, conv,
    GroupNorm, activation, conv, then the activation of input plus that (no separate D term: the layer's residual
    connection carries the input)."""

    def __init__(self, config: ConvS5Config):
        super().__init__()
        width, kernel = config.hidden_size, config.d_kernel_size
        self.norm1 = nn.GroupNorm(config.ssm_num_groups, width, eps=config.group_norm_eps)
        self.conv1 = nn.Conv2d(width, width, kernel, padding=kernel // 2)
        self.norm2 = nn.GroupNorm(config.ssm_num_groups, width, eps=config.group_norm_eps)
        self.conv2 = nn.Conv2d(width, width, kernel, padding=kernel // 2)
        # The official SequenceLayer's activations: gelu (tanh approximation), relu, swish (SiLU) and elu, which
        # transformers' ACT2FN lacks.
        self.act = nn.ELU() if config.hidden_act == "elu" else ACT2FN[config.hidden_act]

    def forward(self, hidden_states):
        residual = self.conv1(self.act(self.norm1(hidden_states)))
        residual = self.conv2(self.act(self.norm2(residual)))
        return self.act(hidden_states + residual)


class ConvS5SSM(nn.Module):
    """The convolutional SSM: x_t = Λ̄ ⊙ x_{t-1} + B̄ * u_t, y_t = 2 Re(C̃ * x_t), with a complex state of P channels
    per pixel, diagonal Λ = Lambda_re + i Lambda_im, zero-order hold with step exp(log_step), and complex
    convolutions B̃ (U -> P) and C̃ (P -> U) stored as real and imaginary kernels; then the output block."""

    def __init__(self, config: ConvS5Config):
        super().__init__()
        width, states = config.hidden_size, config.state_size
        self.clip_eigs = config.clip_eigs
        self.Lambda_re = nn.Parameter(torch.empty(states))
        self.Lambda_im = nn.Parameter(torch.empty(states))
        self.log_step = nn.Parameter(torch.empty(states))
        self.B_real = nn.Parameter(torch.empty(states, width, config.b_kernel_size, config.b_kernel_size))
        self.B_imag = nn.Parameter(torch.empty(states, width, config.b_kernel_size, config.b_kernel_size))
        self.C_real = nn.Parameter(torch.empty(width, states, config.c_kernel_size, config.c_kernel_size))
        self.C_imag = nn.Parameter(torch.empty(width, states, config.c_kernel_size, config.c_kernel_size))
        self.output_block = ConvS5OutputBlock(config)

    def forward(self, hidden_states, state=None):
        """hidden_states (batch, frames, U, h, w); state x_0 (batch, 2, P, h, w) (real and imaginary parts) or None
        for zero. Returns the outputs (batch, frames, U, h, w) and the last state x_T. A single frame is one step of
        the recurrence; more frames go through the parallel scan."""
        batch, frames, width, height, grid_width = hidden_states.shape
        dt_lambda, b_bar = discretize_zoh(
            self.Lambda_re, self.Lambda_im, self.log_step, self.B_real, self.B_imag, self.clip_eigs
        )
        bu = F.conv2d(hidden_states.flatten(0, 1), b_bar, padding=self.B_real.shape[-1] // 2)
        bu = bu.view(batch, frames, 2, -1, height * grid_width)
        flat_state = None if state is None else state.flatten(-2)
        if frames == 1:
            states = convs5_step(bu[:, 0], dt_lambda, flat_state)[:, None]
        else:
            states = convs5_scan(bu, dt_lambda, flat_state)
        states = states.reshape(batch * frames, -1, height, grid_width)  # channels: real parts, then imaginary
        # 2 Re(C̃ x) = 2 (C_re * x_re - C_im * x_im): one real convolution over the stacked parts.
        c_kernel = 2 * torch.cat([self.C_real, -self.C_imag], dim=1)
        outputs = F.conv2d(states, c_kernel, padding=self.C_real.shape[-1] // 2)
        outputs = self.output_block(outputs).view(batch, frames, width, height, grid_width)
        last_state = states.view(batch, frames, 2, -1, height, grid_width)[:, -1]
        return outputs, last_state


class ConvS5Layer(GradientCheckpointingLayer):
    """Post-norm residual layer: u <- LayerNorm(u + SSM(u)), the LayerNorm over channels."""

    def __init__(self, config: ConvS5Config):
        super().__init__()
        self.ssm = ConvS5SSM(config)
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, hidden_states, state=None):
        outputs, last_state = self.ssm(hidden_states, state)
        hidden_states = self.norm((hidden_states + outputs).movedim(2, -1)).movedim(-1, 2)
        return hidden_states, last_state


def hippo_initial_values(config: ConvS5Config) -> dict:
    """HiPPO-N initialisation of one ConvS5SSM (the official scheme): Λ from the eigenvalues of the normal part of
    HiPPO-LegS (half of each conjugate pair, per block), B̃ = V^-1 B and C̃ = C V with He-normal B and C (fan-in
    U k^2 and ssm_size k^2), log steps uniform in [log dt_min, log dt_max]. Returns float64 tensors by name."""
    size = config.ssm_size // config.ssm_blocks
    n = torch.arange(size, dtype=torch.float64)
    p = torch.sqrt(1 + 2 * n)
    hippo = -(torch.tril(p[:, None] * p[None, :]) - torch.diag(n))
    low_rank = torch.sqrt(n + 0.5)
    normal = hippo + low_rank[:, None] * low_rank[None, :]
    lambda_im, eigenvectors = torch.linalg.eigh(normal.to(torch.complex128) * -1j)
    half = size // 2
    lambda_im, eigenvectors = lambda_im[:half], eigenvectors[:, :half]
    v = torch.block_diag(*[eigenvectors] * config.ssm_blocks)  # (ssm_size, P)
    width, kb, kc = config.hidden_size, config.b_kernel_size, config.c_kernel_size
    b = torch.randn(config.ssm_size, width * kb * kb, dtype=torch.float64) * math.sqrt(2 / (width * kb * kb))
    b_tilde = (v.conj().T @ b.to(torch.complex128)).reshape(-1, width, kb, kb)
    c = torch.randn(width * kc * kc, config.ssm_size, dtype=torch.float64) * math.sqrt(2 / (config.ssm_size * kc**2))
    c_tilde = (c.to(torch.complex128) @ v).reshape(width, kc, kc, -1).permute(0, 3, 1, 2)
    log_range = math.log(config.dt_max) - math.log(config.dt_min)
    return {
        "Lambda_re": torch.full((config.state_size,), torch.diagonal(normal).mean().item(), dtype=torch.float64),
        "Lambda_im": lambda_im.repeat(config.ssm_blocks),
        "log_step": torch.rand(config.state_size, dtype=torch.float64) * log_range + math.log(config.dt_min),
        "B_real": b_tilde.real, "B_imag": b_tilde.imag, "C_real": c_tilde.real, "C_imag": c_tilde.imag,
    }  # fmt: skip


def check_convs5_cache(cache, config: ConvS5Config, batch_size: int):
    """Refuse a `cache` that is not the state of this model's layers for `batch_size` videos."""
    start = "DynamicCache(config=model.config)"
    layers = config.num_hidden_layers
    if not isinstance(cache, Cache):
        raise cache_error(f"got a {type(cache).__name__}", start)
    kinds = [type(layer).__name__ for layer in cache.layers]
    if len(kinds) != layers or not all(isinstance(layer, LinearAttentionCacheLayerMixin) for layer in cache.layers):
        raise cache_error(
            f"got a {type(cache).__name__} with layers {kinds}, where this model needs {layers} linear-attention "
            "layers, one per ConvS5 layer",
            start,
        )
    needed = (batch_size, 2, config.state_size, config.latent_size, config.latent_size)
    for idx in range(layers):
        check_cache_state(layer_state(cache, idx), needed, f"layer {idx}'s state (real and imaginary parts)", start)


def layer_state(cache: DynamicCache, layer_idx: int) -> torch.Tensor | None:
    """The state a cache holds for layer `layer_idx`, or None before the first frame. (transformers' own
    `get_recurrent_state` answers only for layers that also keep a convolution state, which ConvS5 has not.)"""
    layer = cache.layers[layer_idx]
    return layer.recurrent_states[0] if layer.is_recurrent_states_initialized[0] else None


@dataclass
class ConvS5ModelOutput(ModelOutput):
    """
    last_hidden_state: output of the last ConvS5 layer, (batch, frames, hidden_size, latent, latent).
    cache: with `use_cache=True`, the state of every layer after the last frame, (batch, 2, P, latent, latent)
        each (real and imaginary parts); pass it back with the next frames to continue the videos.
    hidden_states: the input of the first layer and the output of every layer, each like `last_hidden_state`.
    """

    last_hidden_state: torch.FloatTensor | None = None
    cache: DynamicCache | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None


@dataclass
class ConvS5VideoPredictionOutput(ModelOutput):
    """
    loss: the official loss (see `ConvS5ForVideoPrediction.forward`), when there is a next frame to compare with.
    predictions: (batch, frames, channels, height, width) in [-1, 1]; entry t predicts frame t + 1 from frames <= t.
    last_hidden_state, cache, hidden_states: as in `ConvS5ModelOutput`.
    """

    loss: torch.FloatTensor | None = None
    predictions: torch.FloatTensor | None = None
    last_hidden_state: torch.FloatTensor | None = None
    cache: DynamicCache | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None


class ConvS5PreTrainedModel(ZooPreTrainedModel):
    """Base of the ConvS5 family; the prediction head runs `ConvS5Model` as `self.convs5`."""

    config_class = ConvS5Config
    config: ConvS5Config
    base_model_prefix = "convs5"
    main_input_name = "pixel_values_videos"
    input_modalities = "video"
    supports_gradient_checkpointing = True
    _no_split_modules = ["ConvS5Layer"]
    # The loss is a mean over its batch, so the Trainer's own division by the accumulation steps is the right one.
    accepts_loss_kwargs = False

    @torch.no_grad()
    def _init_weights(self, module):
        # Flax's defaults, from which the official model trains: LeCun-normal kernels, zero biases, N(0, 1) embeddings.
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            fan_in = nn.init._calculate_fan_in_and_fan_out(module.weight)[0]
            std = 1 / math.sqrt(fan_in) / 0.87962566103423978  # the truncation at 2 std removes this much spread
            init.trunc_normal_(module.weight, std=std, a=-2 * std, b=2 * std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, (nn.LayerNorm, nn.GroupNorm)):
            init.ones_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            init.normal_(module.weight)
        elif isinstance(module, ConvS5ResNetBlock):
            init.zeros_(module.bias)
        elif isinstance(module, ConvS5SSM):
            for name, value in hippo_initial_values(self.config).items():
                init.copy_(module.get_parameter(name), value)


class ConvS5Model(ConvS5PreTrainedModel):
    """Video (batch, frames, C, H, W) in [-1, 1] -> ConvS5 features (batch, frames, hidden_size, h, w). Features at
    frame t depend only on frames <= t."""

    def __init__(self, config: ConvS5Config):
        super().__init__(config)
        self.encoder = ConvS5Encoder(config)
        # The official model concatenates an action embedding to the encoder's output; without actions every frame
        # gets row 0, a learned constant channel.
        self.action_embeddings = nn.Embedding(config.num_actions + 1, config.action_embed_dim)
        self.action_proj = nn.Conv2d(config.encoder_depths[-1] + config.action_embed_dim, config.hidden_size, 1)
        self.layers = nn.ModuleList(ConvS5Layer(config) for _ in range(config.num_hidden_layers))
        self.gradient_checkpointing = False
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        """The frame encoder's first convolution, which embeds the pixels."""
        return self.encoder.conv_in

    @deprecate_kwarg("cache_params", version="5.40.0", new_name="cache")
    @can_return_tuple
    def forward(
        self,
        pixel_values_videos: torch.Tensor,
        cache: DynamicCache | None = None,
        use_cache: bool | None = None,
        output_hidden_states: bool | None = None,
        **kwargs,
    ) -> ConvS5ModelOutput:
        r"""
        pixel_values_videos (`torch.FloatTensor` of shape `(batch, frames, num_channels, image_size, image_size)`):
            Frames in [-1, 1] (2 * uint8 / 255 - 1), e.g. from `ConvS5VideoProcessor`.
        cache (`DynamicCache`, *optional*):
            The state after earlier frames of the same videos (from a previous call with `use_cache=True`): these
            frames continue them, and the cache is updated in place.
        use_cache (`bool`, *optional*):
            Return `cache` (a new cache when none was passed).
        output_hidden_states (`bool`, *optional*):
            Return the input of the first layer and the output of every layer.
        """
        check_frames(pixel_values_videos, self.config)
        if cache is not None:
            check_convs5_cache(cache, self.config, pixel_values_videos.shape[0])
        use_cache = self.config.use_cache if use_cache is None else use_cache
        if use_cache and cache is None:
            cache = DynamicCache(config=self.config)
        output_hidden_states = (
            self.config.output_hidden_states if output_hidden_states is None else output_hidden_states
        )
        batch, frames = pixel_values_videos.shape[:2]
        features = self.encoder(pixel_values_videos.flatten(0, 1))
        action = self.action_embeddings.weight[0].to(features.dtype)[None, :, None, None]
        action = action.expand(features.shape[0], -1, *features.shape[2:])
        hidden_states = self.action_proj(torch.cat([features, action], dim=1))
        hidden_states = hidden_states.unflatten(0, (batch, frames))
        all_hidden_states = (hidden_states,) if output_hidden_states else None
        for idx, layer in enumerate(self.layers):
            hidden_states, last_state = layer(hidden_states, None if cache is None else layer_state(cache, idx))
            if cache is not None:
                cache.update_recurrent_state(last_state, idx)
            if output_hidden_states:
                all_hidden_states += (hidden_states,)
        return ConvS5ModelOutput(
            last_hidden_state=hidden_states, cache=cache if use_cache else None, hidden_states=all_hidden_states
        )


def convs5_loss(predictions, targets, loss_weight: float = 0.5):
    """The official loss: loss_weight * squared error + (1 - loss_weight) * absolute error, each summed over
    (channel, width) and averaged over (batch, frame, height), in float32."""
    difference = predictions.float() - targets.float()
    squared = difference.square().sum(dim=(2, 4)).mean()
    absolute = difference.abs().sum(dim=(2, 4)).mean()
    return loss_weight * squared + (1 - loss_weight) * absolute


class ConvS5ForVideoPrediction(ConvS5PreTrainedModel):
    """ConvS5 that predicts the next frame (the official model): trained with teacher forcing on the clip itself,
    rolled out autoregressively with `rollout` / `generate` through the recurrence, at a constant cost per frame."""

    def __init__(self, config: ConvS5Config):
        super().__init__(config)
        self.convs5 = ConvS5Model(config)
        self.decoder = ConvS5Decoder(config)
        self.post_init()

    @deprecate_kwarg("cache_params", version="5.40.0", new_name="cache")
    @can_return_tuple
    def forward(
        self,
        pixel_values_videos: torch.Tensor,
        labels: torch.Tensor | None = None,
        cache: DynamicCache | None = None,
        use_cache: bool | None = None,
        output_hidden_states: bool | None = None,
        **kwargs,
    ) -> ConvS5VideoPredictionOutput:
        r"""
        pixel_values_videos (`torch.FloatTensor` of shape `(batch, frames, num_channels, image_size, image_size)`):
            Frames in [-1, 1].
        labels (`torch.FloatTensor` of the shape of `pixel_values_videos`, *optional*):
            The frame that follows each input frame. When None, the clip supervises itself (teacher forcing, as the
            official training): the predictions from frames 0..T-2 are compared with frames 1..T-1 (no loss for a
            single frame).
        cache, use_cache, output_hidden_states: as in `ConvS5Model.forward`.
        """
        outputs = self.convs5(
            pixel_values_videos, cache=cache, use_cache=use_cache, output_hidden_states=output_hidden_states
        )
        features = outputs.last_hidden_state
        predictions = torch.tanh(self.decoder(features.flatten(0, 1))).unflatten(0, features.shape[:2])
        loss = None
        if labels is not None:
            check_frames(labels, self.config, "labels")
            if labels.shape != predictions.shape:
                raise ValueError(
                    f"expected labels of shape {tuple(predictions.shape)} (the frame after each input frame), got "
                    f"{tuple(labels.shape)}"
                )
            loss = convs5_loss(predictions, labels, self.config.loss_weight)
        elif pixel_values_videos.shape[1] > 1:
            loss = convs5_loss(predictions[:, :-1], pixel_values_videos[:, 1:], self.config.loss_weight)
        return ConvS5VideoPredictionOutput(
            loss=loss,
            predictions=predictions,
            last_hidden_state=features,
            cache=outputs.cache,
            hidden_states=outputs.hidden_states,
        )

    def rollout(self, context: torch.Tensor, num_steps: int) -> torch.Tensor:
        """Predict `num_steps` frames after `context` (batch, frames, C, H, W), as the official sampler: the context
        goes through the parallel scan, then each prediction is fed back through one step of the recurrence (memory
        and time per generated frame do not grow). Returns (batch, num_steps, C, H, W) in [-1, 1]."""
        return autoregressive_rollout(self, context, num_steps)

    @torch.no_grad()
    def generate(self, pixel_values_videos: torch.Tensor, num_steps: int) -> torch.Tensor:
        """The official sample: the context frames followed by `num_steps` rolled-out frames,
        (batch, context + num_steps, C, H, W)."""
        return torch.cat([pixel_values_videos, self.rollout(pixel_values_videos, num_steps)], dim=1)


__all__ = ["ConvS5PreTrainedModel", "ConvS5Model", "ConvS5ForVideoPrediction", "convs5_loss"]
