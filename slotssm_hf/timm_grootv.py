"""GrootV as timm models: `timm.create_model("grootv_tiny" | "grootv_small" | "grootv_base")` once `slotssm_hf` is
imported, with timm's feature API (`features_only=True`, `forward_intermediates`, `prune_intermediate_layers`), so
it also serves as SlotSSM's frame encoder (`encoder_type="timm"`, `timm_model_name="grootv_tiny"`).

The network is the same modules as `modeling_grootv` (stem, levels, conv head), so its weights are the transformers
model's with the `grootv.` prefix dropped and `classifier` named `head`. No weights are hosted: pass a converted
checkpoint with `pretrained=True, pretrained_cfg_overlay={"file": ".../model.safetensors"}` (an official `.pth`
state dict works too).
"""

import functools

import torch
import torch.utils.checkpoint
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models._features import feature_take_indices
from torch import nn

from .models.configuration_grootv import VARIANTS, GrootVConfig
from .models.modeling_grootv import GrootVConvHead, GrootVLayer, GrootVStem, build_levels, init_grootv_weights


class GrootV(nn.Module):
    """GrootV in timm's model interface: `forward_features` gives the last level's map (batch, 8 embed_dim, H/32,
    W/32); `forward_head` applies the 1x1 convolution head, pools and classifies."""

    def __init__(
        self,
        embed_dim: int = 80,
        depths: tuple[int, ...] = (2, 2, 9, 2),
        num_classes: int = 1000,
        in_chans: int = 3,
        global_pool: str = "avg",
        drop_path_rate: float = 0.0,
        mlp_ratio: float = 4.0,
    ):
        super().__init__()
        if global_pool != "avg":
            raise ValueError(f"GrootV pools by average only (global_pool='avg'), got {global_pool!r}")
        config = GrootVConfig(
            num_channels=in_chans, embed_dim=embed_dim, depths=list(depths), drop_path_rate=drop_path_rate,
            mlp_ratio=mlp_ratio,
        )  # fmt: skip
        self.num_classes, self.global_pool = num_classes, global_pool
        self.num_features = config.num_features
        self.head_hidden_size = config.hidden_size
        self.stem = GrootVStem(config)
        self.levels = build_levels(config)
        self.conv_head = GrootVConvHead(config)
        self.head = nn.Linear(self.head_hidden_size, num_classes) if num_classes > 0 else nn.Identity()
        self.feature_info = [
            {"num_chs": embed_dim * 2**i, "reduction": 4 * 2**i, "module": f"levels.{i}"} for i in range(len(depths))
        ]
        self.apply(functools.partial(init_grootv_weights, initializer_range=config.initializer_range))

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        # The SSM's A and D are kept out of weight decay, as in Mamba and the official training.
        return {name for name, _ in self.named_parameters() if name.endswith((".A_logs", ".Ds"))}

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True):
        for module in self.modules():
            if isinstance(module, GrootVLayer):
                module.gradient_checkpointing = enable
                module._gradient_checkpointing_func = functools.partial(
                    torch.utils.checkpoint.checkpoint, use_reentrant=False
                )

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: str | None = None):
        if global_pool not in (None, "avg"):
            raise ValueError(f"GrootV pools by average only (global_pool='avg'), got {global_pool!r}")
        self.num_classes = num_classes
        self.head = nn.Linear(self.head_hidden_size, num_classes) if num_classes > 0 else nn.Identity()

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | list[int] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ):
        """Every level's normed features (strides 4, 8, 16, 32) at `indices` (None: all; an int n: the last n), and,
        unless `intermediates_only`, the last level's map. Each level ends in its own LayerNorm, so `norm` changes
        nothing."""
        if output_fmt not in ("NCHW", "NHWC"):
            raise ValueError(f"output_fmt must be 'NCHW' or 'NHWC', got {output_fmt!r}")
        take_indices, max_index = feature_take_indices(len(self.levels), indices)
        levels = self.levels[: max_index + 1] if stop_early or intermediates_only else self.levels
        hidden, intermediates = self.stem(x), []
        for index, level in enumerate(levels):
            features, hidden = level(hidden)
            if index in take_indices:
                intermediates.append(features if output_fmt == "NCHW" else features.permute(0, 2, 3, 1))
        if intermediates_only:
            return intermediates
        return features, intermediates

    def prune_intermediate_layers(
        self, indices: int | list[int] = 1, prune_norm: bool = False, prune_head: bool = True
    ):
        """Drop the levels after the last of `indices` (and that level's downsampling), and with `prune_head` the
        convolution head and classifier."""
        take_indices, max_index = feature_take_indices(len(self.levels), indices)
        self.levels = self.levels[: max_index + 1]
        self.levels[-1].downsample = None
        if prune_head:
            self.conv_head = nn.Identity()
            self.reset_classifier(0)
        return take_indices

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        hidden = self.stem(x)
        for level in self.levels:
            features, hidden = level(hidden)
        return features

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        pooled = self.conv_head(x).mean(dim=(2, 3))
        return pooled if pre_logits else self.head(pooled)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def checkpoint_filter_fn(state_dict: dict, model: GrootV) -> dict:
    """timm keys from a converted `GrootVForImageClassification` checkpoint or an official state dict."""
    if "model" in state_dict and isinstance(state_dict["model"], dict):  # a whole official training checkpoint
        state_dict = state_dict["model"]
    if "patch_embed.conv1.weight" in state_dict:  # official layout
        from .conversion.convert_grootv import RULES
        from .conversion.conversion_utils import rename_keys

        state_dict = rename_keys(state_dict, RULES, "", "official state dict")
    renamed = {}
    for key, value in state_dict.items():
        classifier = key.startswith("classifier.")
        renamed["head." + key.removeprefix("classifier.") if classifier else key.removeprefix("grootv.")] = value
    return renamed


def _create(variant: str, pretrained: bool, **kwargs) -> GrootV:
    return build_model_with_cfg(
        GrootV, variant, pretrained, pretrained_filter_fn=checkpoint_filter_fn,
        feature_cfg={"feature_cls": "getter", "out_indices": (0, 1, 2, 3)}, **kwargs,
    )  # fmt: skip


def _cfg(**kwargs) -> dict:
    # The official evaluation: 224 px centre crop of a 256 px bicubic resize, ImageNet mean / std.
    return {
        "num_classes": 1000, "input_size": (3, 224, 224), "pool_size": (7, 7), "crop_pct": 0.875,
        "interpolation": "bicubic", "mean": IMAGENET_DEFAULT_MEAN, "std": IMAGENET_DEFAULT_STD,
        "first_conv": "stem.conv1", "classifier": "head", "license": "unknown", "paper_ids": "arXiv:2406.02395",
        **kwargs,
    }  # fmt: skip


default_cfgs = generate_default_cfgs({f"grootv_{size}.in1k": _cfg() for size in VARIANTS})


def _variant_args(size: str) -> dict:
    # drop_path_rate is a training setting: timm's convention is 0 unless asked for.
    return {k: v for k, v in VARIANTS[size].items() if k != "drop_path_rate"}


@register_model
def grootv_tiny(pretrained: bool = False, **kwargs) -> GrootV:
    """GrootV-T: 80 channels, 2-2-9-2 blocks (30M parameters)."""
    return _create("grootv_tiny", pretrained, **{**_variant_args("tiny"), **kwargs})


@register_model
def grootv_small(pretrained: bool = False, **kwargs) -> GrootV:
    """GrootV-S: 96 channels, 2-2-13-2 blocks (51M parameters)."""
    return _create("grootv_small", pretrained, **{**_variant_args("small"), **kwargs})


@register_model
def grootv_base(pretrained: bool = False, **kwargs) -> GrootV:
    """GrootV-B: 128 channels, 2-2-13-2 blocks (91M parameters)."""
    return _create("grootv_base", pretrained, **{**_variant_args("base"), **kwargs})
