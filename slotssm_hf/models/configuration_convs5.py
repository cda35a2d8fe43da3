"""ConvS5 configuration and its named variants (the official Moving-MNIST runs)."""

from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig


@strict
class ConvS5Config(PreTrainedConfig):
    r"""
    Configuration of a ConvS5 video prediction model (Smith et al., "Convolutional State Space Models for Long-Range
    Spatiotemporal Modeling", NeurIPS 2023), the official "noVQ" model: a per-frame TECO ResNet encoder, a constant
    action-embedding channel and a 1x1 convolution to `hidden_size`, a stack of ConvS5 layers (a convolutional
    state-space model whose output goes through a ResNet block, then a residual connection and a post-LayerNorm),
    and a mirrored TECO ResNet decoder with a tanh output. The defaults are the official Moving-MNIST run trained on
    300-frame clips (`FAMILIES["convs5"].variants["convs5-moving-mnist-300"]`); frames are in [-1, 1].

    image_size (`int`, defaults to 64): height and width of the (square) input frames.
    num_channels (`int`, defaults to 1): channels of the input frames.
    encoder_depths (`list[int]`, defaults to `[64, 128, 256]`): widths of the encoder's ResNet blocks; each block
        after the first follows a 2x2 average pooling, so the latent grid is image_size / 2**(len - 1).
    decoder_depths (`list[int]`, defaults to `[64, 128, 256]`): the decoder's widths, used in reverse (a block, then
        2x nearest upsampling, per width). As in the official decoder, its first convolution has
        `decoder_depths[0]` channels.
    encoder_blocks (`int`, defaults to 1): ResNet blocks of every encoder width after the first (the official
        `encoder.blocks`; the first width always has one block).
    decoder_blocks (`int`, defaults to 1): ResNet blocks of every decoder width (the official `decoder.blocks`).
    resnet_num_groups (`int`, defaults to 32): groups of the encoder's and decoder's GroupNorms.
    num_actions (`int`, defaults to 1): actions of the official action embedding (which has num_actions + 1 rows).
        Moving-MNIST has no actions: every frame gets row 0, a learned constant input channel.
    action_embed_dim (`int`, defaults to 1): width of that embedding, concatenated to the encoder's output.
    hidden_size (`int`, defaults to 256): width U of the ConvS5 layers (the official `d_model`).
    num_hidden_layers (`int`, defaults to 8): ConvS5 layers.
    ssm_size (`int`, defaults to 256): the official `ssm_size`: the state has ssm_size / 2 complex channels P (half
        of the conjugate pairs of a real state of this size).
    ssm_blocks (`int`, defaults to 1): HiPPO blocks of the initial state matrix (initialisation only).
    clip_eigs (`bool`, defaults to `True`): clip the real part of the eigenvalues at -1e-4 in the forward pass.
    b_kernel_size (`int`, defaults to 3): kernel of the input-to-state convolution B.
    c_kernel_size (`int`, defaults to 3): kernel of the state-to-output convolution C.
    d_kernel_size (`int`, defaults to 3): kernel of the convolutions of the ResNet block after C.
    dt_min (`float`, defaults to 0.001), dt_max (`float`, defaults to 0.1): range of the initial step sizes.
    ssm_num_groups (`int`, defaults to 32): groups of the GroupNorms in the ResNet block after C.
    hidden_act (`str`, defaults to `"gelu_pytorch_tanh"`): activation of that block (Flax's `nn.gelu`, which is
        the tanh approximation); the official alternatives are `"relu"`, `"silu"` (Flax's `nn.swish`) and `"elu"`.
    layer_norm_eps (`float`, defaults to 1e-6), group_norm_eps (`float`, defaults to 1e-6): Flax's epsilons.
    loss_weight (`float`, defaults to 0.5): the training loss is loss_weight * MSE + (1 - loss_weight) * L1, each
        summed over (channel, width) and averaged over the rest, as the official loss.
    num_frames (`int`, defaults to 300): frames per training clip.
    num_context_frames (`int`, defaults to 100): context frames before an evaluation rollout.
    use_cache (`bool`, defaults to `False`): return `cache` (the state of every layer) from forward passes.

    Example:

    ```python
    >>> from slotssm_hf import ConvS5Config, ConvS5ForVideoPrediction
    >>> model = ConvS5ForVideoPrediction(FAMILIES["convs5"].config("convs5-moving-mnist-600"))
    ```
    """

    model_type = "convs5"

    image_size: int = 64
    num_channels: int = 1
    encoder_depths: list[int] | tuple[int, ...] = (64, 128, 256)
    decoder_depths: list[int] | tuple[int, ...] = (64, 128, 256)
    encoder_blocks: int = 1
    decoder_blocks: int = 1
    resnet_num_groups: int = 32
    num_actions: int = 1
    action_embed_dim: int = 1

    hidden_size: int = 256
    num_hidden_layers: int = 8
    ssm_size: int = 256
    ssm_blocks: int = 1
    clip_eigs: bool = True
    b_kernel_size: int = 3
    c_kernel_size: int = 3
    d_kernel_size: int = 3
    dt_min: float = 0.001
    dt_max: float = 0.1
    ssm_num_groups: int = 32
    hidden_act: str = "gelu_pytorch_tanh"
    layer_norm_eps: float = 1e-6
    group_norm_eps: float = 1e-6

    loss_weight: float = 0.5
    num_frames: int = 300
    num_context_frames: int = 100
    use_cache: bool = False

    def __post_init__(self, **kwargs):
        self.encoder_depths = list(self.encoder_depths)
        self.decoder_depths = list(self.decoder_depths)
        super().__post_init__(**kwargs)

    @property
    def state_size(self) -> int:
        """P, the complex state channels of every layer."""
        return self.ssm_size // 2

    @property
    def latent_size(self) -> int:
        """Height and width of the grid the ConvS5 layers run on."""
        return self.image_size // 2 ** (len(self.encoder_depths) - 1)

    @property
    def layer_types(self) -> list[str]:
        """Every layer keeps a recurrent state, which transformers' caches call linear attention."""
        return ["linear_attention"] * self.num_hidden_layers

    def validate_architecture(self):
        """Part of `@strict` validation: every combination that could not build or run is refused here."""
        positive = [
            "image_size", "num_channels", "encoder_blocks", "decoder_blocks", "resnet_num_groups", "num_actions",
            "action_embed_dim", "hidden_size", "num_hidden_layers", "ssm_size", "ssm_blocks", "b_kernel_size",
            "c_kernel_size", "d_kernel_size", "ssm_num_groups", "num_frames", "num_context_frames",
        ]  # fmt: skip
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)}")
        for name in ("encoder_depths", "decoder_depths"):
            depths = getattr(self, name)
            if not depths or any(d < 1 or d % self.resnet_num_groups for d in depths):
                raise ValueError(
                    f"{name} must be a non-empty list of positive multiples of resnet_num_groups "
                    f"({self.resnet_num_groups}), got {depths}"
                )
        if len(self.decoder_depths) != len(self.encoder_depths):
            raise ValueError(
                f"decoder_depths ({self.decoder_depths}) must have as many entries as encoder_depths "
                f"({self.encoder_depths}): the decoder upsamples as often as the encoder pools"
            )
        if self.image_size % 2 ** (len(self.encoder_depths) - 1):
            raise ValueError(
                f"image_size ({self.image_size}) must be divisible by 2**{len(self.encoder_depths) - 1}: the encoder "
                "halves the frame after every block but the first"
            )
        for name in ("b_kernel_size", "c_kernel_size", "d_kernel_size"):
            if getattr(self, name) % 2 == 0:
                raise ValueError(f"{name} must be odd ('SAME' padding keeps the grid), got {getattr(self, name)}")
        if self.ssm_size % (2 * self.ssm_blocks):
            raise ValueError(
                f"ssm_size ({self.ssm_size}) must be a multiple of 2 * ssm_blocks ({2 * self.ssm_blocks}): each "
                "HiPPO block keeps half of its conjugate eigenvalue pairs"
            )
        if self.hidden_size % self.ssm_num_groups:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) must be a multiple of ssm_num_groups ({self.ssm_num_groups})"
            )
        if not 0 < self.dt_min <= self.dt_max:
            raise ValueError(f"need 0 < dt_min <= dt_max, got dt_min={self.dt_min}, dt_max={self.dt_max}")
        if not 0.0 <= self.loss_weight <= 1.0:
            raise ValueError(f"loss_weight must be in [0, 1], got {self.loss_weight}")


# Named variants as data: overrides of the defaults. The official Moving-MNIST configurations
# (configs/Moving-MNIST/{300,600}_train_len/mnist_convS5_novq.yaml), and "tiny", which `slotssm-hf train --model convs5`
# trains on a CPU in minutes.
VARIANTS = {
    "convs5-moving-mnist-300": {"hidden_size": 256, "ssm_size": 256, "num_frames": 300},
    "convs5-moving-mnist-600": {"hidden_size": 128, "ssm_size": 128, "num_frames": 600},
    "tiny": dict(
        encoder_depths=[16, 32, 32], decoder_depths=[16, 32, 32], resnet_num_groups=8, hidden_size=32,
        num_hidden_layers=2, ssm_size=32, ssm_num_groups=8,
    ),
}  # fmt: skip


__all__ = ["ConvS5Config"]
