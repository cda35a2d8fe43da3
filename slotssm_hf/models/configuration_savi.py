"""SAVi / SAVi++ configuration, and the official MOVi setups as named variants."""

from typing import Literal

from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig


@strict
class SAViConfig(PreTrainedConfig):
    r"""
    Configuration of SAVi (Kipf et al., ICLR 2022) and SAVi++ (Elsayed et al., NeurIPS 2022): a per-frame encoder
    (CNN or ResNet, a linear position embedding and an MLP, for SAVi++ a transformer), a slot initialiser, slot
    attention as the corrector of every frame, a transformer block predicting the next frame's slots, and a
    spatial-broadcast decoder with alpha masks. The defaults are the official `savi_conditional_small` MOVi setup;
    `VARIANTS` holds the others.

    image_size (`int`, defaults to 64): height and width of the (square) input frames, values in [0, 1].
    num_channels (`int`, defaults to 3): channels of the input frames.
    encoder_type (`"cnn"` or `"resnet"`, defaults to `"cnn"`): the official CNN (convolutions with "SAME" padding and
        a ReLU after each, no normalisation) or ResNet-v1 with basic blocks, GroupNorm and the "small inputs" stem.
    encoder_features (`list[int]`, defaults to `[32, 32, 32, 32]`): CNN output channels per layer.
    encoder_kernel_sizes (`list[int]`, defaults to `[5, 5, 5, 5]`): CNN kernel size per layer.
    encoder_strides (`list[int]`, defaults to `[1, 1, 1, 1]`): CNN stride per layer.
    resnet_stage_sizes (`list[int]`, defaults to `[3, 4, 6, 3]`): blocks per ResNet stage (ResNet-34).
    resnet_width (`int`, defaults to 64): width of the ResNet's first stage; each later stage doubles it.
    resnet_num_groups (`int`, defaults to 32): groups of the ResNet's GroupNorms (Flax's default).
    encoder_mlp_size (`int`, defaults to 64): hidden width of the pre-norm MLP applied after the position embedding.
    encoder_transformer_layers (`int`, defaults to 0): pre-norm transformer blocks after the encoder's MLP (SAVi++:
        4), preceded by a linear layer + ReLU to `encoder_transformer_size`.
    encoder_transformer_size (`int`, defaults to 64): token width (and qkv size) of that transformer.
    encoder_transformer_heads (`int`, defaults to 4): its attention heads.
    encoder_transformer_mlp_size (`int`, defaults to 1024): its MLP width.
    num_slots (`int`, defaults to 24): slots per frame; with the conditional initialiser and `prepend_background`,
        one more than the number of boxes (MOVi: 23 instances + background).
    slot_size (`int`, defaults to 128): slot width.
    initializer_type (`"conditional"`, `"learned"` or `"gaussian"`, defaults to `"conditional"`): slots from an MLP
        on the first-frame boxes (or their centres), learned per-slot vectors, or standard-normal draws per video.
    initializer_mlp_size (`int`, defaults to 256): hidden width of the conditional initialiser's MLP.
    center_of_mass (`bool`, defaults to `False`): condition on box centres (y, x) instead of the boxes.
    prepend_background (`bool`, defaults to `True`): prepend a background box (`background_value` in every
        coordinate) to the boxes, for the first slot.
    background_value (`float`, defaults to 0.0): coordinate value of the background box.
    slot_attention_qkv_size (`int`, defaults to 128): query/key/value width of slot attention.
    slot_attention_num_heads (`int`, defaults to 1): its heads.
    slot_attention_iterations (`int`, defaults to 1): slot-attention iterations per frame.
    first_frame_iterations (`int`, *optional*): iterations at the first frame of a video (not of a continuation);
        `slot_attention_iterations` when None, as in the official configs.
    slot_attention_mlp_size (`int`, *optional*): width of a residual pre-norm MLP after the GRU update; none when None
        (the official MOVi configs).
    slot_attention_epsilon (`float`, defaults to 1e-8): added to each slot's attention sum before the weighted mean.
    predictor_type (`"transformer"`, defaults to `"transformer"`): the transition model between frames; the official
        post-norm transformer block over the slots of a frame.
    predictor_num_heads (`int`, defaults to 4), predictor_qkv_size (`int`, defaults to 128), predictor_mlp_size
        (`int`, defaults to 256): its heads, qkv width and MLP width.
    decoder_broadcast_size (`int`, defaults to 8): grid each slot is broadcast to.
    decoder_features (`list[int]`, defaults to `[64, 64, 64, 64]`): channels per decoder layer.
    decoder_kernel_sizes (`list[int]`, defaults to `[5, 5, 5, 5]`), decoder_strides (`list[int]`, defaults to
        `[2, 2, 2, 1]`), decoder_transposed (`list[bool]`, defaults to `[True, True, True, False]`): kernel, stride
        and kind (transposed or not) of every decoder layer; the output must be `image_size` square.
    early_fusion (`bool`, defaults to `False`): combine the slots' decoder features by the alpha masks before the
        target readouts (SAVi++).
    decoder_slot_readout (`bool`, defaults to `False`): add to each slot's readouts a linear map of the slot itself
        (one value per target channel, the same at every pixel), so that a slot's colour reaches the output in one
        step; not in the official model (its checkpoints convert with False). The `tiny` variants set it.
    targets (`dict[str, int]`, defaults to `{"flow": 3}`): what the decoder reconstructs and with how many channels,
        always in the order video, flow, depth (its readouts and the channels of `reconstruction`): `"video"` (the input
        frames), `"flow"` (optical flow rendered as RGB, the official MOVi target),
        `"depth"` (SAVi++: log(1 + depth)).
    layer_norm_eps (`float`, defaults to 1e-6): epsilon of every LayerNorm and GroupNorm (Flax's default).
    num_frames (`int`, defaults to 6): frames per training clip (the official training window).

    Example:

    ```python
    >>> from slotssm_hf import FAMILIES, SAViForVideoReconstruction
    >>> model = SAViForVideoReconstruction(FAMILIES["savi"].config("savi_pp_conditional"))
    ```
    """

    model_type = "savi"

    image_size: int = 64
    num_channels: int = 3

    encoder_type: Literal["cnn", "resnet"] = "cnn"
    encoder_features: list[int] | None = None
    encoder_kernel_sizes: list[int] | None = None
    encoder_strides: list[int] | None = None
    resnet_stage_sizes: list[int] | None = None
    resnet_width: int = 64
    resnet_num_groups: int = 32
    encoder_mlp_size: int = 64
    encoder_transformer_layers: int = 0
    encoder_transformer_size: int = 64
    encoder_transformer_heads: int = 4
    encoder_transformer_mlp_size: int = 1024

    num_slots: int = 24
    slot_size: int = 128
    initializer_type: Literal["conditional", "learned", "gaussian"] = "conditional"
    initializer_mlp_size: int = 256
    center_of_mass: bool = False
    prepend_background: bool = True
    background_value: float = 0.0

    slot_attention_qkv_size: int = 128
    slot_attention_num_heads: int = 1
    slot_attention_iterations: int = 1
    first_frame_iterations: int | None = None
    slot_attention_mlp_size: int | None = None
    slot_attention_epsilon: float = 1e-8

    predictor_type: Literal["transformer"] = "transformer"
    predictor_num_heads: int = 4
    predictor_qkv_size: int = 128
    predictor_mlp_size: int = 256

    decoder_broadcast_size: int = 8
    decoder_features: list[int] | None = None
    decoder_kernel_sizes: list[int] | None = None
    decoder_strides: list[int] | None = None
    decoder_transposed: list[bool] | None = None
    early_fusion: bool = False
    decoder_slot_readout: bool = False
    targets: dict[str, int] | None = None

    layer_norm_eps: float = 1e-6
    num_frames: int = 6

    def __post_init__(self, **kwargs):
        # Mutable defaults: filled here so that every config owns its lists.
        self.encoder_features = list(self.encoder_features or [32, 32, 32, 32])
        self.encoder_kernel_sizes = list(self.encoder_kernel_sizes or [5] * len(self.encoder_features))
        self.encoder_strides = list(self.encoder_strides or [1] * len(self.encoder_features))
        self.resnet_stage_sizes = list(self.resnet_stage_sizes or [3, 4, 6, 3])
        self.decoder_features = list(self.decoder_features or [64, 64, 64, 64])
        self.decoder_kernel_sizes = list(self.decoder_kernel_sizes or [5] * len(self.decoder_features))
        self.decoder_strides = list(self.decoder_strides or [2, 2, 2, 1])
        self.decoder_transposed = list(self.decoder_transposed or [True, True, True, False])
        # In a fixed order (config.json sorts its keys): video, flow, depth, as the official configs list them;
        # unknown names go last for validation to name them.
        targets = dict(self.targets or {"flow": 3})
        self.targets = {name: targets.pop(name) for name in TARGET_NAMES if name in targets} | targets
        super().__post_init__(**kwargs)

    @property
    def encoder_grid_size(self) -> int:
        """Side of the encoder's feature grid ("SAME" convolutions round up)."""
        size = self.image_size
        for stride in self.encoder_strides if self.encoder_type == "cnn" else [2] * (len(self.resnet_stage_sizes) - 1):
            size = -(-size // stride)
        return size

    @property
    def decoder_output_size(self) -> int:
        size = self.decoder_broadcast_size
        for stride, transposed in zip(self.decoder_strides, self.decoder_transposed):
            size = size * stride if transposed else -(-size // stride)
        return size

    @property
    def num_target_channels(self) -> int:
        return sum(self.targets.values())

    @property
    def num_boxes(self) -> int:
        """Boxes per video that the conditional initialiser takes."""
        return self.num_slots - 1 if self.prepend_background else self.num_slots

    def validate_architecture(self):
        """Part of `@strict` validation: every combination that could not build or run is refused here."""
        positive = [
            "image_size", "num_channels", "resnet_width", "resnet_num_groups", "encoder_mlp_size",
            "encoder_transformer_size", "encoder_transformer_heads", "encoder_transformer_mlp_size", "num_slots",
            "slot_size", "initializer_mlp_size", "slot_attention_qkv_size", "slot_attention_num_heads",
            "slot_attention_iterations", "predictor_num_heads", "predictor_qkv_size", "predictor_mlp_size",
            "decoder_broadcast_size", "num_frames",
        ]  # fmt: skip
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)}")
        for name in ("first_frame_iterations", "slot_attention_mlp_size"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name} must be None or a positive integer, got {getattr(self, name)}")
        if self.encoder_transformer_layers < 0:
            raise ValueError(f"encoder_transformer_layers must be >= 0, got {self.encoder_transformer_layers}")
        lists = {
            "encoder": ("encoder_features", "encoder_kernel_sizes", "encoder_strides"),
            "decoder": ("decoder_features", "decoder_kernel_sizes", "decoder_strides", "decoder_transposed"),
        }
        for part, names in lists.items():
            lengths = {name: len(getattr(self, name)) for name in names}
            if len(set(lengths.values())) != 1 or not lengths[names[0]]:
                raise ValueError(f"the {part} needs one entry per layer in each of {lengths} (at least one layer)")
            for name in names[:3]:
                if min(getattr(self, name)) < 1:
                    raise ValueError(f"{name} must hold positive integers, got {getattr(self, name)}")
        if self.encoder_type == "resnet":
            if not self.resnet_stage_sizes or min(self.resnet_stage_sizes) < 1:
                raise ValueError(f"resnet_stage_sizes must hold positive integers, got {self.resnet_stage_sizes}")
            if self.resnet_width % self.resnet_num_groups:
                raise ValueError(
                    f"resnet_width ({self.resnet_width}) must be a multiple of resnet_num_groups "
                    f"({self.resnet_num_groups}): GroupNorm splits the channels into groups"
                )
        for whole, heads, what in (
            ("slot_attention_qkv_size", "slot_attention_num_heads", "slot attention"),
            ("predictor_qkv_size", "predictor_num_heads", "the predictor"),
            ("encoder_transformer_size", "encoder_transformer_heads", "the encoder transformer"),
        ):
            if getattr(self, whole) % getattr(self, heads):
                raise ValueError(
                    f"{whole} ({getattr(self, whole)}) must be a multiple of {heads} ({getattr(self, heads)}): "
                    f"{what} splits it into heads"
                )
        if self.decoder_output_size != self.image_size:
            raise ValueError(
                f"the decoder turns the {self.decoder_broadcast_size}x{self.decoder_broadcast_size} broadcast grid "
                f"into {self.decoder_output_size}x{self.decoder_output_size} (decoder_strides {self.decoder_strides}, "
                f"decoder_transposed {self.decoder_transposed}), not image_size {self.image_size}"
            )
        unknown = sorted(set(self.targets) - set(TARGET_NAMES))
        if unknown or not self.targets or min(self.targets.values()) < 1:
            raise ValueError(
                f"targets must map some of {TARGET_NAMES} to positive channel counts, got {self.targets}"
            )
        if self.initializer_type == "conditional" and self.num_boxes < 1:
            raise ValueError("the conditional initialiser needs at least one box slot besides the background slot")


# What the decoder can reconstruct: the input frames, optical flow (rendered as RGB in the official MOVi
# pipeline), depth (log(1 + depth) in SAVi++).
TARGET_NAMES = ("video", "flow", "depth")


# Small variants for `slotssm-hf train` on the built-in bouncing shapes (32 px, up to 4 objects plus the background):
# the official small model's layout (CNN + position embedding + MLP, one slot-attention iteration with GRU,
# transformer predictor, spatial-broadcast decoder), narrower, with a stride-2 encoder, a decoder that upsamples
# from 4 x 4 (as SlotSSM's: its full-size 5 x 5 convolutions cost 5 times more), reconstructing the frames, and each
# slot's own colour readout (as SlotSSM's `decoder_slot_color`).
TINY = {
    "image_size": 32, "encoder_features": [32, 32, 32, 32], "encoder_strides": [2, 1, 1, 1], "encoder_mlp_size": 64,
    "num_slots": 5, "slot_size": 64, "initializer_mlp_size": 128, "slot_attention_qkv_size": 64,
    "predictor_qkv_size": 64, "predictor_mlp_size": 128, "decoder_broadcast_size": 4,
    "decoder_features": [32, 32, 32, 32], "decoder_kernel_sizes": [5, 5, 5, 3], "decoder_strides": [2, 2, 2, 1],
    "decoder_transposed": [True, True, True, False], "decoder_slot_readout": True, "targets": {"video": 3},
    "num_frames": 8,
}  # fmt: skip

# The official MOVi setups (savi/configs/movi/*.py), as SAViConfig overrides of the defaults (savi_conditional_small),
# and the small variants above: conditional (first-frame boxes) and unconditional (Gaussian slots).
VARIANTS = {
    "tiny": TINY,
    "tiny-unconditional": {**TINY, "initializer_type": "gaussian"},
    "savi_conditional_small": {},
    "savi_conditional_medium": {
        "image_size": 128,
        "encoder_features": [64, 64, 64, 64],
        "encoder_strides": [2, 1, 1, 1],
        "decoder_strides": [2, 2, 2, 2],
        "decoder_transposed": [True, True, True, True],
    },
    "savi_conditional_large": {
        "image_size": 128,
        "encoder_type": "resnet",
        "decoder_strides": [2, 2, 2, 2],
        "decoder_transposed": [True, True, True, True],
    },
    "savi_pp_conditional": {
        "image_size": 128,
        "encoder_type": "resnet",
        "encoder_transformer_layers": 4,
        "encoder_transformer_size": 64,
        "encoder_transformer_heads": 4,
        "encoder_transformer_mlp_size": 1024,
        "slot_attention_qkv_size": 256,
        "predictor_qkv_size": 256,
        "predictor_mlp_size": 1024,
        "decoder_strides": [2, 2, 2, 2],
        "decoder_transposed": [True, True, True, True],
        "early_fusion": True,
        "targets": {"flow": 3, "depth": 1},
    },
}


__all__ = ["SAViConfig"]
