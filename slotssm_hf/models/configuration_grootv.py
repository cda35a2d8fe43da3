"""GrootV configuration."""

from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig

# The published ImageNet-1k models (the official config/grootv_{t,s,b}_1k_224.yaml): variants are data.
VARIANTS = {
    "tiny": {"embed_dim": 80, "depths": [2, 2, 9, 2], "drop_path_rate": 0.1},
    "small": {"embed_dim": 96, "depths": [2, 2, 13, 2], "drop_path_rate": 0.3},
    "base": {"embed_dim": 128, "depths": [2, 2, 13, 2], "drop_path_rate": 0.5},
}


@strict
class GrootVConfig(PreTrainedConfig):
    r"""
    Configuration of a GrootV image backbone (GrootVL, Xiao et al., NeurIPS 2024): an InternImage-style stem (two
    stride-2 3x3 convolutions, H/4), four levels of TreeSSM blocks with channels embed_dim * 2^i (a stride-2
    convolution between levels), and a 1x1 convolution head (BatchNorm, GELU) before global average pooling. The
    defaults are GrootV-T; `FAMILIES["grootv"].config("small")` gives the others.

    The TreeSSM settings the official code hard-codes are part of the architecture, not fields: one state per
    channel (d_state 1, which the tree scan's output step requires), dt rank ceil(channels / 16), no bias in the
    projections and the depthwise convolution.

    num_channels (`int`, defaults to 3): channels of the input images.
    image_size (`int`, defaults to 224): the size the published models were trained at (any size divisible by 32
        runs; the tree adapts to the grid).
    embed_dim (`int`, defaults to 80): channels of the first level.
    depths (`list[int]`, defaults to `[2, 2, 9, 2]`): TreeSSM blocks per level.
    mlp_ratio (`float`, defaults to 4.0): width of each block's MLP, in multiples of the level's channels.
    ssm_expand (`int`, defaults to 2): inner width of the TreeSSM, in multiples of the level's channels.
    ssm_conv_kernel (`int`, defaults to 3): kernel of the TreeSSM's depthwise convolution (odd).
    drop_path_rate (`float`, defaults to 0.1): stochastic depth of the last block, rising linearly from 0.
    head_expand (`float`, defaults to 1.5): the 1x1 head convolution widens the last level's channels by this.
    layer_norm_eps (`float`, defaults to 1e-6): epsilon of the stem, block, level and downsampling LayerNorms
        (the TreeSSM's own two LayerNorms keep torch's 1e-5, as in the official code).
    initializer_range (`float`, defaults to 0.02): std of the truncated normal initialisation of linear layers.
    use_tree_scan_kernel (`bool`, defaults to `True`): on CUDA, run the scan with the official TreeScan extension
        where it is installed (the tree is always built by this package).

    Example:

    ```python
    >>> from slotssm_hf import GrootVConfig, GrootVForImageClassification
    >>> model = GrootVForImageClassification(FAMILIES["grootv"].config("tiny", num_labels=10))
    ```
    """

    model_type = "grootv"

    num_channels: int = 3
    image_size: int = 224
    embed_dim: int = 80
    depths: list[int] | None = None
    mlp_ratio: float = 4.0
    ssm_expand: int = 2
    ssm_conv_kernel: int = 3
    drop_path_rate: float = 0.1
    head_expand: float = 1.5
    layer_norm_eps: float = 1e-6
    initializer_range: float = 0.02
    use_tree_scan_kernel: bool = True

    def __post_init__(self, **kwargs):
        self.depths = list(self.depths) if self.depths is not None else [2, 2, 9, 2]
        super().__post_init__(**kwargs)

    @property
    def num_features(self) -> int:
        """Channels of the last level's feature map."""
        return self.embed_dim * 2 ** (len(self.depths) - 1)

    @property
    def hidden_size(self) -> int:
        """Width of the pooled output (after the 1x1 head convolution)."""
        return int(self.num_features * self.head_expand)

    def validate_architecture(self):
        """Part of `@strict` validation: settings that could not build or run are refused here, naming the field."""
        for name in ("num_channels", "image_size", "embed_dim", "ssm_expand", "ssm_conv_kernel"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)}")
        if not self.depths or any(not isinstance(d, int) or d < 1 for d in self.depths):
            raise ValueError(f"depths must be a non-empty list of positive integers, got {self.depths}")
        if self.embed_dim % 2:
            raise ValueError(
                f"embed_dim must be even (the stem's first convolution has embed_dim / 2 channels), got "
                f"{self.embed_dim}"
            )
        if self.ssm_conv_kernel % 2 == 0:
            raise ValueError(
                f"ssm_conv_kernel must be odd (a 'same' depthwise convolution), got {self.ssm_conv_kernel}"
            )
        for name in ("mlp_ratio", "head_expand"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if not 0 <= self.drop_path_rate < 1:
            raise ValueError(f"drop_path_rate must be in [0, 1), got {self.drop_path_rate}")
