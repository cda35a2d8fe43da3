"""SlotSSM configuration."""

from typing import Literal

from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig

# Named variants as data: overrides of SlotSSMConfig's defaults, which are the official training run's architecture
# ("official"). "tiny" and "small" are the object-centric variant (CNN encoder with a position embedding in the
# values but not the keys, three rounds of the first block's inverted cross-attention, spatial-broadcast decoder with
# alpha masks and a colour per slot) that `slotssm-hf train` trains by default; "vit-tiny" is
# the official ViT layout at toy size (32 px, two blocks), for quick experiments and tests.
VARIANTS = {
    "official": {},
    "tiny": dict(
        encoder_type="cnn", cnn_downsampling_ratio=2, encoder_hidden_size=32, encoder_num_layers=1,
        cnn_blocks_per_stage=1, cnn_position_embedding=True, cnn_position_in_keys=False, num_slots=5, hidden_size=64,
        num_hidden_layers=2, num_slot_attention_iterations=3, num_attention_heads=2,
        mamba_d_state=32, mamba_headdim=32, decoder_type="spatial_broadcast", decoder_hidden_size=32,
        decoder_slot_color=True,
    ),
    "small": dict(
        encoder_type="cnn", cnn_downsampling_ratio=2, encoder_hidden_size=64, encoder_num_layers=2,
        cnn_blocks_per_stage=1, cnn_position_embedding=True, cnn_position_in_keys=False, num_slots=6, hidden_size=128,
        num_hidden_layers=3, num_slot_attention_iterations=3, num_attention_heads=4,
        mamba_d_state=64, mamba_headdim=32, decoder_type="spatial_broadcast", decoder_hidden_size=64,
        decoder_slot_color=True,
    ),
    "vit-tiny": dict(
        image_size=32, encoder_hidden_size=32, encoder_num_layers=1, encoder_num_attention_heads=2, hidden_size=64,
        num_hidden_layers=2, num_slots=3, num_attention_heads=2, mamba_d_state=16, mamba_headdim=32,
        decoder_hidden_size=32, decoder_num_layers=1, decoder_num_attention_heads=2,
    ),
}  # fmt: skip


@strict
class SlotSSMConfig(PreTrainedConfig):
    r"""
    Configuration of a SlotSSM video model: a per-frame image encoder, slot blocks (cross-attention from the
    slots to the frame's tokens, a per-slot state-space model over time, self-attention across the slots of a
    frame, an optional MLP) and a decoder back to pixels. The defaults are the official training run (CLEVRER
    reconstruction at 128 px).

    image_size (`int`, defaults to 128): height and width of the (square) input frames.
    num_channels (`int`, defaults to 3): channels of the input frames.
    encoder_type (`"vit"`, `"cnn"` or `"timm"`, defaults to `"vit"`): post-norm ViT with a CLS token and a trainable
        2-D sin-cos position table, a CNN of residual GroupNorm stages, or any timm image model (`timm_model_name`),
        read through timm's `forward_intermediates`.
    patch_size (`int`, defaults to 8): patch size of the ViT encoder and of the ViT decoder.
    encoder_hidden_size (`int`, defaults to 256): width of the ViT tokens or of the CNN stages.
    encoder_num_layers (`int`, defaults to 6): ViT layers, or CNN stages.
    encoder_num_attention_heads (`int`, defaults to 4): heads of the ViT encoder.
    encoder_intermediate_size (`int`, *optional*): ViT MLP width; 4 x `encoder_hidden_size` when None.
    encoder_hidden_act (`str`, defaults to `"gelu"`): ViT MLP activation.
    encoder_output_size (`int`, *optional*): width of the tokens handed to the slots (the ViT's output projection,
        the CNN's final 1x1 convolution, or a linear projection of the timm features when their width differs);
        `encoder_hidden_size` when None.
    cnn_kernel_size (`int`, defaults to 5): kernel of the CNN's residual convolutions.
    cnn_downsampling_ratio (`int`, defaults to 2): stride of the CNN's first convolution.
    cnn_blocks_per_stage (`int`, defaults to 2): residual blocks per CNN stage.
    cnn_position_embedding (`bool`, defaults to `False`): add a linear projection of each token's (y, x) position in
        [-1, 1] to the CNN's features (slot attention's soft position embedding). The official CNN has none, so its
        tokens, hence the slots, carry no position beyond what the zero padding leaks; the object-centric variants
        turn it on.
    cnn_position_in_keys (`bool`, defaults to `True`): the cross-attention's keys come from the same tokens as its
        values. False (with `cnn_position_embedding`): the keys come from the CNN's features without the position
        embedding (through the same final norm and convolution), so slots choose tokens by their content (colour,
        shape) while the values they read still say where the tokens are. With position in the keys, learned slot
        queries bind to image regions: they split the background and trade objects as these move.
    timm_model_name (`str`, *optional*): the timm model of `encoder_type="timm"`, as `timm.create_model` takes it
        (`"vit_small_patch14_dinov2.lvd142m"`, `"resnet50"`, `"hf-hub:org/name"`, `"local-dir:/path"`).
    timm_model_kwargs (`dict`, *optional*): further `timm.create_model` arguments (`drop_path_rate`, `depth`, ...).
        `in_chans` is `num_channels`, and models with a fixed input size get `img_size=image_size` unless given here
        (needed for `"hf-hub:"` / `"local-dir:"` names, whose defaults are not known before they are built).
    timm_feature_index (`int`, defaults to -1): which of the model's feature maps the slots read, an index into its
        `feature_info` (a ViT's blocks, a CNN's stages; negative from the end), as `forward_intermediates` takes it.
        Prefix (CLS, register) tokens are dropped; layers after that map, the final norm and the classifier are
        pruned away.
    timm_pretrained (`bool`, defaults to `True`): fill the backbone with timm's pretrained weights (through timm's own
        Hub loading) when a model is built from this config. `from_pretrained` never fetches them: a saved
        `model.safetensors` holds the whole model, backbone included, and the model is built on the meta device.
    timm_frozen (`bool`, defaults to `True`): the backbone's weights take no gradients (no optimizer state either, as
        optimizers are given the parameters that require gradients) and it stays in eval mode while the rest trains.
    num_slots (`int`, defaults to 6): slots per frame.
    hidden_size (`int`, defaults to 256): slot width.
    num_hidden_layers (`int`, defaults to 4): slot blocks.
    num_slot_attention_iterations (`int`, defaults to 1): how many times the first block's cross-attention updates
        the slots (the same weights, a residual step each, as slot attention's iterations). The learned initial slots
        are the same for every frame; rounds of competing for the tokens let them split the frame before the SSM
        carries them on. The official model does one.
    use_inverted_attention (`bool`, defaults to `True`): slot-attention-style cross-attention (softmax over the
        slots, then a weighted mean over the tokens) instead of a softmax over the tokens.
    cross_attention_num_heads (`int`, defaults to 1): heads of the cross-attention.
    num_attention_heads (`int`, defaults to 4): heads of the self-attention across slots.
    use_ffn (`bool`, defaults to `False`): a pre-norm MLP (GELU) at the end of every slot block.
    intermediate_size (`int`, *optional*): width of that MLP; 4 x `hidden_size` when None.
    layer_norm_eps (`float`, defaults to 1e-5): epsilon of every LayerNorm.
    mamba_version (`"mamba1"` or `"mamba2"`, defaults to `"mamba2"`): temporal mixer of every slot block.
    mamba_d_state (`int`, defaults to 128): SSM state size.
    mamba_d_conv (`int`, defaults to 4): width of the causal convolution.
    mamba_expand (`int`, defaults to 2): inner width = `mamba_expand` x `hidden_size`.
    mamba_headdim (`int`, defaults to 64): Mamba2 head size.
    mamba_chunk_size (`int`, *optional*): SSD chunk length; chosen by sequence length when None.
    use_mamba_kernels (`bool`, defaults to `True`): call the fused `mamba_ssm` kernels on CUDA when installed.
    decoder_type (`"vit"` or `"spatial_broadcast"`, defaults to `"vit"`): MAE-style transformer decoder with the
        slots as prefix tokens, or a spatial-broadcast CNN decoder with per-slot alpha masks.
    decoder_hidden_size (`int`, defaults to 256): width of the decoder tokens or convolutions.
    decoder_num_layers (`int`, defaults to 4): ViT decoder layers, or hidden layers of the MLP that decodes encoder
        features with the spatial-broadcast decoder.
    decoder_num_attention_heads (`int`, defaults to 4): ViT decoder heads.
    decoder_intermediate_size (`int`, *optional*): ViT decoder MLP width; 4 x `decoder_hidden_size` when None.
    decoder_hidden_act (`str`, defaults to `"relu"`): activation of the ViT decoder's MLP and of the feature MLP.
    decoder_initial_size (`int`, defaults to 8): broadcast grid of the spatial-broadcast decoder; `image_size`
        must be 8 or 16 times this.
    decoder_slot_color (`bool`, defaults to `False`): the spatial-broadcast decoder adds to the colour it draws for each
        slot a colour taken from the slot by one linear layer (the same over the frame).
    reconstruction_target (`"pixels"` or `"features"`, defaults to `"pixels"`): what the reconstruction head decodes:
        the frames, or (with a timm encoder) the encoder's feature map, against which the loss is the MSE to the
        detached features (the DINOSAUR / VideoSAUR objective). The spatial-broadcast decoder then broadcasts each
        slot over the feature grid with a learned position embedding, a shared MLP gives features plus an alpha
        logit, and the alpha masks are upsampled to frame size; the ViT decoder reads one mask token per feature
        position. The other heads always decode pixels, so the pixel-decoder settings are still validated.
    num_frames (`int`, defaults to 16): frames per clip in training; what the video-classification pipeline samples.
    classifier_pooling (`"last"` or `"mean"`, defaults to `"last"`): the classification head reads the slots of the
        last frame (which carry the whole clip through the SSM), or their mean over frames.
    num_dense_channels (`int`, defaults to 1): channels per pixel of the dense (depth) head.
    dense_loss (`"mse"` or `"scale_invariant"`, defaults to `"mse"`): loss of the dense head; the scale-invariant
        log loss (Eigen et al.) treats the head's output as log-depth and ignores pixels whose label is <= 0.
    use_cache (`bool`, defaults to `False`): return `cache` (the recurrent state of every slot block) from
        forward passes, to continue a video frame by frame later.

    Example:

    ```python
    >>> from slotssm_hf import SlotSSMConfig, SlotSSMModel
    >>> model = SlotSSMModel(SlotSSMConfig(num_slots=4))
    ```
    """

    model_type = "slotssm"

    image_size: int = 128
    num_channels: int = 3

    encoder_type: Literal["vit", "cnn", "timm"] = "vit"
    patch_size: int = 8
    encoder_hidden_size: int = 256
    encoder_num_layers: int = 6
    encoder_num_attention_heads: int = 4
    encoder_intermediate_size: int | None = None
    encoder_hidden_act: str = "gelu"
    encoder_output_size: int | None = None
    cnn_kernel_size: int = 5
    cnn_downsampling_ratio: int = 2
    cnn_blocks_per_stage: int = 2
    cnn_position_embedding: bool = False
    cnn_position_in_keys: bool = True
    timm_model_name: str | None = None
    timm_model_kwargs: dict | None = None
    timm_feature_index: int = -1
    timm_pretrained: bool = True
    timm_frozen: bool = True

    num_slots: int = 6
    hidden_size: int = 256
    num_hidden_layers: int = 4
    num_slot_attention_iterations: int = 1
    use_inverted_attention: bool = True
    cross_attention_num_heads: int = 1
    num_attention_heads: int = 4
    use_ffn: bool = False
    intermediate_size: int | None = None
    layer_norm_eps: float = 1e-5

    mamba_version: Literal["mamba1", "mamba2"] = "mamba2"
    mamba_d_state: int = 128
    mamba_d_conv: int = 4
    mamba_expand: int = 2
    mamba_headdim: int = 64
    mamba_chunk_size: int | None = None
    use_mamba_kernels: bool = True

    decoder_type: Literal["vit", "spatial_broadcast"] = "vit"
    decoder_hidden_size: int = 256
    decoder_num_layers: int = 4
    decoder_num_attention_heads: int = 4
    decoder_intermediate_size: int | None = None
    decoder_hidden_act: str = "relu"
    decoder_initial_size: int = 8
    decoder_slot_color: bool = False
    reconstruction_target: Literal["pixels", "features"] = "pixels"

    num_frames: int = 16
    classifier_pooling: Literal["last", "mean"] = "last"
    num_dense_channels: int = 1
    dense_loss: Literal["mse", "scale_invariant"] = "mse"
    use_cache: bool = False

    def __post_init__(self, **kwargs):
        self.encoder_intermediate_size = self.encoder_intermediate_size or 4 * self.encoder_hidden_size
        self.encoder_output_size = self.encoder_output_size or self.encoder_hidden_size
        self.intermediate_size = self.intermediate_size or 4 * self.hidden_size
        self.decoder_intermediate_size = self.decoder_intermediate_size or 4 * self.decoder_hidden_size
        super().__post_init__(**kwargs)

    @property
    def layer_types(self) -> list[str]:
        """Every slot block keeps a recurrent (conv + SSM) state, which transformers' caches call linear attention."""
        return ["linear_attention"] * self.num_hidden_layers

    @property
    def num_tokens(self) -> int:
        """Tokens per frame that the slots attend to (for a timm encoder, from a build of it on the meta device)."""
        if self.encoder_type == "timm":
            from .timm_encoder import timm_feature_shape

            return timm_feature_shape(self)[1] ** 2
        stride = self.patch_size if self.encoder_type == "vit" else self.cnn_downsampling_ratio
        return (self.image_size // stride) ** 2

    def validate_architecture(self):
        """Part of `@strict` validation: every combination that could not build or run is refused here."""
        positive = [
            "image_size", "num_channels", "patch_size", "encoder_hidden_size", "encoder_num_layers",
            "encoder_num_attention_heads", "encoder_intermediate_size", "encoder_output_size", "cnn_kernel_size",
            "cnn_downsampling_ratio", "cnn_blocks_per_stage", "num_slots", "hidden_size", "num_hidden_layers",
            "num_slot_attention_iterations",
            "cross_attention_num_heads", "num_attention_heads", "intermediate_size", "mamba_d_state",
            "mamba_d_conv", "mamba_expand", "mamba_headdim", "decoder_hidden_size", "decoder_num_layers",
            "decoder_num_attention_heads", "decoder_intermediate_size", "decoder_initial_size", "num_frames",
            "num_dense_channels",
        ]  # fmt: skip
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)}")
        if self.mamba_chunk_size is not None and self.mamba_chunk_size < 1:
            raise ValueError(f"mamba_chunk_size must be None or a positive integer, got {self.mamba_chunk_size}")

        def divides(whole: str, part: str, reason: str):
            if getattr(self, whole) % getattr(self, part):
                raise ValueError(
                    f"{whole} ({getattr(self, whole)}) must be a multiple of {part} ({getattr(self, part)}): {reason}"
                )

        divides("hidden_size", "num_attention_heads", "the slot self-attention splits the slot width into heads")
        divides("hidden_size", "cross_attention_num_heads", "the cross-attention splits the slot width into heads")
        if self.encoder_type == "vit" or self.decoder_type == "vit":
            divides("image_size", "patch_size", "frames are cut into whole patches")
        if self.encoder_type == "vit":
            divides("encoder_hidden_size", "encoder_num_attention_heads", "the encoder splits its width into heads")
            if self.encoder_hidden_size % 4:
                raise ValueError(
                    f"encoder_hidden_size ({self.encoder_hidden_size}) must be a multiple of 4: the 2-D sin-cos "
                    "position table gives a quarter of the channels to each of sin/cos of rows/columns"
                )
        elif self.encoder_type == "cnn":
            divides("image_size", "cnn_downsampling_ratio", "the CNN's first convolution downsamples by this stride")
            if self.cnn_kernel_size % 2 == 0:
                raise ValueError(f"cnn_kernel_size must be odd to keep the feature size, got {self.cnn_kernel_size}")
        if not self.cnn_position_in_keys and not (self.encoder_type == "cnn" and self.cnn_position_embedding):
            raise ValueError(
                "cnn_position_in_keys=False takes the keys from the CNN's features without its position embedding: it "
                f"needs encoder_type='cnn' and cnn_position_embedding=True, got {self.encoder_type!r} and "
                f"{self.cnn_position_embedding}"
            )
        if self.reconstruction_target == "features" and self.encoder_type != "timm":
            raise ValueError(
                f"reconstruction_target='features' decodes the features of a timm encoder: it needs "
                f"encoder_type='timm', got {self.encoder_type!r}"
            )
        draws_frames = self.decoder_type == "spatial_broadcast" and self.reconstruction_target == "pixels"
        if self.decoder_slot_color and not draws_frames:
            raise ValueError(
                "decoder_slot_color adds a colour per slot to the frames the spatial-broadcast decoder draws: it needs "
                f"decoder_type='spatial_broadcast' and reconstruction_target='pixels', got {self.decoder_type!r} and "
                f"{self.reconstruction_target!r}"
            )
        if self.decoder_type == "vit":
            divides("decoder_hidden_size", "decoder_num_attention_heads", "the decoder splits its width into heads")
            if self.decoder_hidden_size % 4:
                raise ValueError(
                    f"decoder_hidden_size ({self.decoder_hidden_size}) must be a multiple of 4 for its 2-D sin-cos "
                    "position table"
                )
        else:
            factor = self.image_size // self.decoder_initial_size
            if self.image_size % self.decoder_initial_size or factor not in (8, 16):
                raise ValueError(
                    f"image_size ({self.image_size}) must be 8 or 16 times decoder_initial_size "
                    f"({self.decoder_initial_size}): the spatial-broadcast decoder upsamples by 8 or 16"
                )
            if self.hidden_size % 2:
                raise ValueError(
                    f"hidden_size ({self.hidden_size}) must be even with the spatial-broadcast decoder: half the "
                    "slot channels receive the x grid and half the y grid"
                )
        if self.mamba_version == "mamba2":
            if (self.mamba_expand * self.hidden_size) % self.mamba_headdim:
                raise ValueError(
                    f"mamba_expand * hidden_size ({self.mamba_expand * self.hidden_size}) must be a multiple of "
                    f"mamba_headdim ({self.mamba_headdim}): Mamba2 splits its inner width into heads"
                )

    def validate_timm_encoder(self):
        """Part of `@strict` validation, what can be checked without timm; the model name, feature index and feature
        stride are checked when the encoder is built."""
        if self.encoder_type != "timm":
            return
        if not self.timm_model_name:
            raise ValueError(
                "timm_model_name must name a timm image model (e.g. 'vit_small_patch14_dinov2.lvd142m') when "
                "encoder_type is 'timm'"
            )
        reserved = sorted(set(self.timm_model_kwargs or {}) & set(TIMM_KWARGS_SET_BY_THE_CONFIG))
        if reserved:
            fields = ", ".join(f"{key} by {TIMM_KWARGS_SET_BY_THE_CONFIG[key]}" for key in reserved)
            raise ValueError(f"timm_model_kwargs may not set {reserved}: the config sets {fields}")


# timm.create_model arguments that follow from other fields, so timm_model_kwargs may not set them.
TIMM_KWARGS_SET_BY_THE_CONFIG = {
    "pretrained": "timm_pretrained",
    "in_chans": "num_channels",
    "features_only": "the encoder (it reads forward_intermediates)",
    "out_indices": "timm_feature_index",
}


__all__ = ["SlotSSMConfig"]
