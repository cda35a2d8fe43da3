"""GrootV (GrootVL: "Tree Topology is All You Need in State Space Model", Xiao et al., NeurIPS 2024), an image
backbone whose state-space blocks scan along a minimum spanning tree of the feature map instead of a fixed raster
order. Reimplemented from the paper and the project's notes; parameter names follow the official checkpoints
(`slotssm-hf convert-grootv` maps them).

The modules below are plain `nn.Module`s shared by the transformers classes here and the timm models of
`timm_grootv`, so the network is written once. Model code imports only torch, transformers and its siblings (drop
path is transformers' own, the same computation as timm's), so a saved folder runs with `trust_remote_code=True`
without this package or timm.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn
from transformers import initialization as init
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutputWithPoolingAndNoAttention, ImageClassifierOutputWithNoAttention
from transformers.models.convnext.modeling_convnext import ConvNextDropPath

from .configuration_grootv import GrootVConfig
from .pretrained import ZooPreTrainedModel
from .tree_scan import grid_tree, tree_scan


def check_pixel_values(pixel_values, num_channels: int):
    """Refuse anything but a floating (batch, num_channels, height, width) tensor of at least one image of at least
    one pixel, every value finite (the tree scan's minimum spanning tree is undefined on NaN or infinite features)."""
    if not isinstance(pixel_values, torch.Tensor) or pixel_values.dim() != 4 or not pixel_values.is_floating_point():
        if isinstance(pixel_values, torch.Tensor):
            got = f"{tuple(pixel_values.shape)} {pixel_values.dtype}"
        else:
            got = type(pixel_values).__name__
        raise ValueError(
            f"pixel_values must be a floating-point tensor (batch, {num_channels}, height, width), got {got}"
        )
    if pixel_values.shape[1] != num_channels:
        raise ValueError(
            f"pixel_values must have {num_channels} channels (config.num_channels) in dim 1, got shape "
            f"{tuple(pixel_values.shape)}"
        )
    if 0 in pixel_values.shape:
        raise ValueError(
            f"pixel_values must hold at least one image of at least 1 x 1 pixels, got shape {tuple(pixel_values.shape)}"
        )
    non_finite = (~pixel_values.isfinite().flatten(1).all(dim=1)).nonzero().flatten().tolist()
    if non_finite:
        raise ValueError(f"pixel_values hold NaN or infinite values in images {non_finite} (of {len(pixel_values)})")


class GrootVStem(nn.Module):
    """Images (batch, C_in, H, W) -> (batch, H/4, W/4, embed_dim), channels last: two stride-2 3x3 convolutions,
    each followed by a LayerNorm, with a GELU between them."""

    def __init__(self, config: GrootVConfig):
        super().__init__()
        dim = config.embed_dim
        self.conv1 = nn.Conv2d(config.num_channels, dim // 2, kernel_size=3, stride=2, padding=1)
        self.norm1 = nn.LayerNorm(dim // 2, eps=config.layer_norm_eps)
        self.act = nn.GELU()
        self.conv2 = nn.Conv2d(dim // 2, dim, kernel_size=3, stride=2, padding=1)
        self.norm2 = nn.LayerNorm(dim, eps=config.layer_norm_eps)

    def forward(self, pixel_values):
        hidden = self.norm1(self.conv1(pixel_values).permute(0, 2, 3, 1))
        hidden = self.conv2(self.act(hidden).permute(0, 3, 1, 2))
        return self.norm2(hidden.permute(0, 2, 3, 1))


class GrootVTreeSSM(nn.Module):
    """The tree state-space mixer, (batch, H, W, dim) -> (batch, H, W, dim), channels last.

    in_proj gives x and a gate z; x passes a depthwise convolution and SiLU (width D = ssm_expand * dim). Per pixel
    and channel, Δ = softplus(dt_proj(x_proj(x))), the edge weight is w = exp(Δ A) in (0, 1) and the input is
    u = Δ B x. The tree is the minimum spanning tree of x's cosine similarities (not learnt), along which
    `tree_scan` sums u with path products of w; the result is LayerNorm'ed (h_norm), scaled by the pixel's C, plus
    the skip Ds x, LayerNorm'ed again (out_norm), gated by SiLU(z) and projected back. The scan runs in float32."""

    def __init__(self, dim: int, expand: int, conv_kernel: int, use_kernel: bool = True):
        super().__init__()
        inner = expand * dim
        self.use_kernel = use_kernel
        self.dt_rank = math.ceil(dim / 16)
        self.in_proj = nn.Linear(dim, 2 * inner, bias=False)
        self.conv2d = nn.Conv2d(inner, inner, conv_kernel, padding=conv_kernel // 2, groups=inner, bias=False)
        # Stacked (1, ...) as the official parameters are (one scan direction). x_proj gives dt (dt_rank wide), B and
        # C (one each: d_state is 1).
        self.x_proj_weight = nn.Parameter(torch.empty(1, self.dt_rank + 2, inner))
        self.dt_projs_weight = nn.Parameter(torch.empty(1, inner, self.dt_rank))
        self.dt_projs_bias = nn.Parameter(torch.empty(1, inner))
        self.A_logs = nn.Parameter(torch.empty(inner, 1, dtype=torch.float32))  # float32 in every model dtype
        self.Ds = nn.Parameter(torch.empty(inner))
        self.h_norm = nn.LayerNorm(inner)
        self.out_norm = nn.LayerNorm(inner)
        self.out_proj = nn.Linear(inner, dim, bias=False)

    def forward(self, hidden_states):
        batch, height, width, _ = hidden_states.shape
        x, z = self.in_proj(hidden_states).chunk(2, dim=-1)
        x = F.silu(self.conv2d(x.permute(0, 3, 1, 2))).permute(0, 2, 3, 1).float()
        tree = grid_tree(x)
        xs = x.reshape(batch, height * width, -1)
        dt, b, c = torch.split(xs @ self.x_proj_weight[0].float().T, [self.dt_rank, 1, 1], dim=-1)
        dt = F.softplus(dt @ self.dt_projs_weight[0].float().T + self.dt_projs_bias[0].float())
        a = -torch.exp(self.A_logs.float()[:, 0])
        y = tree_scan(dt * b * xs, torch.exp(dt * a), tree, use_kernel=self.use_kernel)
        y = float_layer_norm(self.h_norm, y) * c + self.Ds.float() * xs
        y = float_layer_norm(self.out_norm, y).view(batch, height, width, -1).to(hidden_states.dtype)
        return self.out_proj(y * F.silu(z))


def float_layer_norm(norm: nn.LayerNorm, hidden_states: torch.Tensor) -> torch.Tensor:
    """`norm` in float32 whatever the dtype of its weights (the scan's output stays float32 in half-precision models)."""
    weight, bias = norm.weight.float(), norm.bias.float()
    return F.layer_norm(hidden_states, norm.normalized_shape, weight, bias, norm.eps)


class GrootVMLP(nn.Module):
    def __init__(self, dim: int, hidden_dim: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, hidden_states):
        return self.fc2(self.act(self.fc1(hidden_states)))


class GrootVLayer(GradientCheckpointingLayer):
    """Pre-norm block, channels last: x + DropPath(TreeSSM(LN(x))), then x + DropPath(MLP(LN(x)))."""

    def __init__(self, config: GrootVConfig, dim: int, drop_path: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=config.layer_norm_eps)
        self.tree_ssm = GrootVTreeSSM(dim, config.ssm_expand, config.ssm_conv_kernel, config.use_tree_scan_kernel)
        self.drop_path = ConvNextDropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=config.layer_norm_eps)
        self.mlp = GrootVMLP(dim, int(dim * config.mlp_ratio))

    def forward(self, hidden_states):
        hidden_states = hidden_states + self.drop_path(self.tree_ssm(self.norm1(hidden_states)))
        return hidden_states + self.drop_path(self.mlp(self.norm2(hidden_states)))


class GrootVDownsample(nn.Module):
    """(batch, H, W, dim) -> (batch, H/2, W/2, 2 dim): a stride-2 3x3 convolution without bias, then LayerNorm."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.conv = nn.Conv2d(dim, 2 * dim, kernel_size=3, stride=2, padding=1, bias=False)
        self.norm = nn.LayerNorm(2 * dim, eps=eps)

    def forward(self, hidden_states):
        return self.norm(self.conv(hidden_states.permute(0, 3, 1, 2)).permute(0, 2, 3, 1))


class GrootVLevel(nn.Module):
    """A level: its blocks, a LayerNorm, and (except the last level) a downsampling to the next. Takes its input
    channels last; returns the normed features channels first (the level's output for dense tasks, as transformers'
    and timm's backbones give them) and the next level's input channels last."""

    def __init__(self, config: GrootVConfig, index: int, drop_paths: list[float]):
        super().__init__()
        dim = config.embed_dim * 2**index
        self.blocks = nn.ModuleList(GrootVLayer(config, dim, rate) for rate in drop_paths)
        self.norm = nn.LayerNorm(dim, eps=config.layer_norm_eps)
        last = index == len(config.depths) - 1
        self.downsample = None if last else GrootVDownsample(dim, config.layer_norm_eps)

    def forward(self, hidden_states):
        for block in self.blocks:
            hidden_states = block(hidden_states)
        # The downsampling reads (a view of) the very tensor returned, so the features reported are in the graph.
        features = self.norm(hidden_states).permute(0, 3, 1, 2)
        channels_last = features.permute(0, 2, 3, 1)
        return features, channels_last if self.downsample is None else self.downsample(channels_last)


class GrootVConvHead(nn.Module):
    """(batch, C, H, W) -> (batch, head_expand * C, H, W): 1x1 convolution without bias, BatchNorm, GELU."""

    def __init__(self, config: GrootVConfig):
        super().__init__()
        self.conv = nn.Conv2d(config.num_features, config.hidden_size, kernel_size=1, bias=False)
        self.norm = nn.BatchNorm2d(config.hidden_size)
        self.act = nn.GELU()

    def forward(self, features):
        return self.act(self.norm(self.conv(features)))


def build_levels(config: GrootVConfig) -> nn.ModuleList:
    """The four levels, with stochastic depth rising linearly from 0 to drop_path_rate over all blocks."""
    rates = torch.linspace(0, config.drop_path_rate, sum(config.depths), device="cpu").tolist()
    starts = [sum(config.depths[:i]) for i in range(len(config.depths))]
    return nn.ModuleList(
        GrootVLevel(config, i, rates[start : start + depth])
        for i, (start, depth) in enumerate(zip(starts, config.depths))
    )


@torch.no_grad()
def init_grootv_weights(module: nn.Module, initializer_range: float):
    """The official initialisation: linear weights truncated normal, linear biases 0, LayerNorms 1 / 0,
    convolutions and BatchNorm as torch makes them; the TreeSSM's own parameters as Mamba initialises them
    (dt bias such that softplus(bias) is log-uniform in [1e-3, 0.1], A = 1, D = 1)."""
    if isinstance(module, nn.Linear):
        init.trunc_normal_(module.weight, std=initializer_range)
        if module.bias is not None:
            init.zeros_(module.bias)
    elif isinstance(module, nn.Conv2d):
        init.kaiming_uniform_(module.weight, a=math.sqrt(5))
        if module.bias is not None:
            bound = 1 / math.sqrt(nn.init._calculate_fan_in_and_fan_out(module.weight)[0])
            init.uniform_(module.bias, -bound, bound)
    elif isinstance(module, (nn.LayerNorm, nn.BatchNorm2d)):
        init.ones_(module.weight)
        init.zeros_(module.bias)
        if isinstance(module, nn.BatchNorm2d):
            init.zeros_(module.running_mean)
            init.ones_(module.running_var)
            init.zeros_(module.num_batches_tracked)
    elif isinstance(module, GrootVTreeSSM):
        inner, rank = module.dt_projs_weight.shape[1:]
        init.uniform_(module.x_proj_weight, -(inner**-0.5), inner**-0.5)  # torch's default for a Linear(inner, .)
        init.uniform_(module.dt_projs_weight, -(rank**-0.5), rank**-0.5)
        dt_min, dt_max, floor = 1e-3, 0.1, 1e-4
        dt = torch.exp(torch.rand(inner) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)).clamp(min=floor)
        init.copy_(module.dt_projs_bias, (dt + torch.log(-torch.expm1(-dt)))[None])  # inverse softplus
        init.zeros_(module.A_logs)  # A = -exp(0) = -1 (S4D-real with one state)
        init.ones_(module.Ds)


class GrootVPreTrainedModel(ZooPreTrainedModel):
    config_class = GrootVConfig
    config: GrootVConfig
    base_model_prefix = "grootv"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    supports_gradient_checkpointing = True
    _no_split_modules = ["GrootVLayer"]
    _keep_in_fp32_modules_strict = ["A_logs"]

    def _init_weights(self, module):
        init_grootv_weights(module, self.config.initializer_range)


class GrootVModel(GrootVPreTrainedModel):
    """Images (batch, C, H, W) -> the last level's features (batch, 8 embed_dim, H/32, W/32) and their pooled
    summary (batch, hidden_size) after the 1x1 convolution head."""

    def __init__(self, config: GrootVConfig):
        super().__init__(config)
        self.stem = GrootVStem(config)
        self.levels = build_levels(config)
        self.conv_head = GrootVConvHead(config)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        """The stem, which embeds the pixels (two stride-2 convolutions)."""
        return self.stem

    def forward(
        self,
        pixel_values: torch.Tensor,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> BaseModelOutputWithPoolingAndNoAttention | tuple:
        r"""
        pixel_values (`torch.FloatTensor` of shape `(batch, num_channels, height, width)`): normalised images, e.g.
            from the checkpoint's image processor. Any size runs; the published models saw 224 x 224.

        Returns `last_hidden_state` (batch, 8 embed_dim, H/32, W/32), `pooler_output` (batch, hidden_size) and,
        with `output_hidden_states`, the stem's output and every level's features (normed, before downsampling;
        strides 4, 4, 8, 16, 32), all channels first.
        """
        check_pixel_values(pixel_values, self.config.num_channels)
        if output_hidden_states is None:
            output_hidden_states = self.config.output_hidden_states
        return_dict = self.config.return_dict if return_dict is None else return_dict
        stem = self.stem(pixel_values).permute(0, 3, 1, 2)  # reported channels first; the first level reads a view of it
        hidden, all_hidden = stem.permute(0, 2, 3, 1), [stem]
        for level in self.levels:
            features, hidden = level(hidden)
            all_hidden.append(features)
        last = features
        pooled = self.conv_head(last).mean(dim=(2, 3))
        hidden_states = tuple(all_hidden) if output_hidden_states else None
        if not return_dict:
            return tuple(v for v in (last, pooled, hidden_states) if v is not None)
        return BaseModelOutputWithPoolingAndNoAttention(
            last_hidden_state=last, pooler_output=pooled, hidden_states=hidden_states
        )


class GrootVForImageClassification(GrootVPreTrainedModel):
    """GrootV with a linear classifier on the pooled output (ImageNet-1k for the published weights)."""

    accepts_loss_kwargs = False

    def __init__(self, config: GrootVConfig):
        super().__init__(config)
        self.grootv = GrootVModel(config)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels) if config.num_labels > 0 else nn.Identity()
        self.post_init()

    def forward(
        self,
        pixel_values: torch.Tensor,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> ImageClassifierOutputWithNoAttention | tuple:
        r"""
        pixel_values (`torch.FloatTensor` of shape `(batch, num_channels, height, width)`): normalised images.
        labels (`torch.LongTensor` of shape `(batch,)`, *optional*): class indices (or float targets for
            regression / multi-label, following `config.problem_type`), for the loss.

        Returns `logits` (batch, num_labels), the loss when labels are given, and the backbone's hidden states on
        request.
        """
        return_dict = self.config.return_dict if return_dict is None else return_dict
        outputs = self.grootv(pixel_values, output_hidden_states=output_hidden_states, return_dict=True)
        logits = self.classifier(outputs.pooler_output)
        loss = None if labels is None else self.loss_function(labels=labels, pooled_logits=logits, config=self.config)
        if not return_dict:
            return tuple(v for v in (loss, logits, outputs.hidden_states) if v is not None)
        return ImageClassifierOutputWithNoAttention(loss=loss, logits=logits, hidden_states=outputs.hidden_states)


