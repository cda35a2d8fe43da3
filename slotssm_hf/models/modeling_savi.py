"""SAVi / SAVi++ models: per-frame encoder, slot initialiser, slot-attention corrector and transformer predictor
applied frame by frame, spatial-broadcast decoder; faithful to the official Flax code
(google-research/slot-attention-video, Apache-2.0)."""

import functools
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from transformers import initialization as init
from transformers.processing_utils import Unpack
from transformers.utils import ModelOutput, TransformersKwargs
from transformers.utils.generic import can_return_tuple
from transformers.utils.output_capturing import OutputRecorder, capture_outputs

from .configuration_savi import SAViConfig
from .object_centric import (
    MLP,
    ConditionalSlotInitializer,
    ConvStack,
    GaussianSlotInitializer,
    LearnedSlotInitializer,
    LinearPositionEmbedding,
    MultiHeadAttention,
    ResNet,
    SlotAttention,
    SlotAttentionMap,
    SpatialBroadcastDecoder,
    TransformerBlock,
)
from .pretrained import ZooPreTrainedModel
from .video_inputs import check_pixel_values_videos


# Resampling may overshoot [0, 1] by rounding; anything further is a different data convention (e.g. ImageNet
# normalisation), which the official weights were not trained on.
FRAME_RANGE_SLACK = 1e-3


def check_savi_inputs(pixel_values_videos, boxes, initial_slots, config: SAViConfig):
    """Shapes, dtypes and ranges the model can run on, with errors that name what was expected."""
    check_pixel_values_videos(pixel_values_videos, config)
    low, high = pixel_values_videos.min().item(), pixel_values_videos.max().item()
    if low < -FRAME_RANGE_SLACK or high > 1 + FRAME_RANGE_SLACK:
        raise ValueError(
            f"SAVi takes frames with values in [0, 1] (no mean / std normalisation), got values in [{low:.3g}, "
            f"{high:.3g}]; `SAViVideoProcessor` produces them"
        )
    batch = pixel_values_videos.shape[0]
    if initial_slots is not None:
        expected_slots = (batch, config.num_slots, config.slot_size)
        if not isinstance(initial_slots, torch.Tensor) or tuple(initial_slots.shape) != expected_slots:
            got = getattr(initial_slots, "shape", type(initial_slots).__name__)
            raise ValueError(
                f"expected initial_slots of shape {expected_slots} (the last frame's predicted_slots of an earlier "
                f"call), got {got}"
            )
        return
    if config.initializer_type != "conditional":
        if boxes is not None:
            raise ValueError(
                f"this model starts its slots from its {config.initializer_type} initialiser and takes no boxes "
                "(only initializer_type='conditional' does); leave boxes out"
            )
        return
    if boxes is None:
        raise ValueError(
            f"the conditional initialiser needs boxes of shape ({batch}, {config.num_boxes}, 4): each video's "
            "first-frame boxes as (ymin, xmin, ymax, xmax) in [0, 1], zero rows for absent objects"
        )
    if (
        not isinstance(boxes, torch.Tensor)
        or tuple(boxes.shape) != (batch, config.num_boxes, 4)
        or not boxes.is_floating_point()
    ):
        got = (
            f"{tuple(boxes.shape)} of dtype {boxes.dtype}" if isinstance(boxes, torch.Tensor) else type(boxes).__name__
        )
        raise ValueError(
            f"expected boxes of shape ({batch}, {config.num_boxes}, 4) and a floating dtype (first-frame "
            f"(ymin, xmin, ymax, xmax) in [0, 1], zero rows for absent objects), got {got}"
        )
    if boxes.numel() and not bool(((boxes >= 0) & (boxes <= 1)).all()):
        raise ValueError(f"boxes must lie in [0, 1] (normalised coordinates), got values in "
                         f"[{boxes.min().item():.3g}, {boxes.max().item():.3g}]")  # fmt: skip
    inverted = (boxes[..., 2:] < boxes[..., :2]).any(dim=-1).nonzero().tolist()
    if inverted:
        video, box = inverted[0]
        raise ValueError(
            f"boxes are (ymin, xmin, ymax, xmax) with ymin <= ymax and xmin <= xmax; box {box} of video {video} is "
            f"{[round(v, 3) for v in boxes[video, box].tolist()]} ({len(inverted)} such boxes in all)"
        )


class SAViFrameEncoder(nn.Module):
    """Frames (N, C, H, W) -> tokens (N, h * w, D): the official `FrameEncoder`: backbone, linear position embedding
    followed by a pre-norm MLP, spatial flattening, and for SAVi++ a linear layer + ReLU and pre-norm transformer
    blocks."""

    def __init__(self, config: SAViConfig):
        super().__init__()
        if config.encoder_type == "cnn":
            self.backbone = ConvStack(
                config.num_channels, config.encoder_features, config.encoder_kernel_sizes, config.encoder_strides,
                [False] * len(config.encoder_features),
            )  # fmt: skip
            channels = config.encoder_features[-1]
        else:
            self.backbone = ResNet(
                config.num_channels, config.resnet_stage_sizes, config.resnet_width, config.resnet_num_groups,
                config.layer_norm_eps,
            )  # fmt: skip
            channels = self.backbone.out_channels
        self.position_embedding = LinearPositionEmbedding(channels)
        self.mlp = MLP(channels, config.encoder_mlp_size, layernorm="pre", eps=config.layer_norm_eps)
        if config.encoder_transformer_layers:
            self.transformer_proj = nn.Linear(channels, config.encoder_transformer_size)
            self.transformer = nn.ModuleList(
                TransformerBlock(
                    config, config.encoder_transformer_size, config.encoder_transformer_heads,
                    config.encoder_transformer_size, config.encoder_transformer_mlp_size, pre_norm=True,
                    eps=config.layer_norm_eps,
                )  # fmt: skip
                for _ in range(config.encoder_transformer_layers)
            )
            self.output_size = config.encoder_transformer_size
        else:
            self.transformer_proj, self.transformer = None, None
            self.output_size = channels

    def get_input_embeddings(self) -> nn.Module:
        """The backbone's first convolution, which embeds the pixels."""
        return self.backbone.convs[0] if isinstance(self.backbone, ConvStack) else self.backbone.init_conv

    def forward(self, pixel_values):
        features = self.backbone(pixel_values).permute(0, 2, 3, 1)  # channels last, as the official code runs
        tokens = self.mlp(self.position_embedding(features)).flatten(1, 2)
        if self.transformer is not None:
            tokens = torch.relu(self.transformer_proj(tokens))
            for layer in self.transformer:
                tokens = layer(tokens)
        return tokens


def build_predictor(config: SAViConfig) -> nn.Module:
    """The transition model: slots (batch, num_slots, slot_size) -> predicted slots of the next frame, same shape.
    Families built on SAVi (e.g. STATM) swap this module."""
    return TransformerBlock(
        config, config.slot_size, config.predictor_num_heads, config.predictor_qkv_size, config.predictor_mlp_size,
        pre_norm=False, eps=config.layer_norm_eps,
    )  # fmt: skip


def build_initializer(config: SAViConfig) -> nn.Module:
    if config.initializer_type == "conditional":
        return ConditionalSlotInitializer(
            config.slot_size, config.initializer_mlp_size, config.center_of_mass, config.prepend_background,
            config.background_value,
        )  # fmt: skip
    if config.initializer_type == "learned":
        return LearnedSlotInitializer(config.num_slots, config.slot_size)
    return GaussianSlotInitializer(config.num_slots, config.slot_size)


def build_decoder(config: SAViConfig) -> SpatialBroadcastDecoder:
    return SpatialBroadcastDecoder(
        config.slot_size, config.decoder_broadcast_size, config.decoder_features, config.decoder_kernel_sizes,
        config.decoder_strides, config.decoder_transposed, list(config.targets.values()), config.early_fusion,
        config.decoder_slot_readout,
    )  # fmt: skip


@dataclass
class SAViModelOutput(ModelOutput):
    """
    last_hidden_state: the corrected slots of every frame, (batch, frames, num_slots, slot_size).
    predicted_slots: the predictor's slots for the next frame, computed at every frame, same shape; the last
        frame's entry is the state to continue the videos from (`initial_slots`).
    hidden_states: with `output_hidden_states=True`, the slots at every stage of the frame loop, each (batch,
        num_slots, slot_size): the slots the first frame starts from (the initialiser's, or `initial_slots`), then
        for each frame its corrected and its predicted slots; 2 x frames + 1 entries, `hidden_states[2 * t + 1]` is
        `last_hidden_state[:, t]` and `hidden_states[2 * t + 2]` is `predicted_slots[:, t]`.
    attentions: with `output_attentions=True`, the corrector's (slot attention's) map at every frame and iteration,
        each (batch, slot_attention_num_heads, num_slots, num_tokens) with num_tokens = encoder_grid_size ** 2: a
        softmax over the slots (each token's distribution over the slots), frame by frame, the iterations of a frame
        in order (`first_frame_iterations` at the first frame of a video when set, else `slot_attention_iterations`
        per frame). Slot attention computes its map itself, under every `attn_implementation`.
    predictor_attentions: with `output_attentions=True` and `attn_implementation="eager"` (other kernels return no
        weights: then empty), the predictor's attention weights at every frame, each (batch, predictor_num_heads,
        num_slots, num_slots): the slots of a frame attending to each other.
    """

    last_hidden_state: torch.FloatTensor | None = None
    predicted_slots: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None
    predictor_attentions: tuple[torch.FloatTensor, ...] | None = None


@dataclass
class SAViReconstructionOutput(ModelOutput):
    """
    loss: the official objective: squared error summed over frames, pixels and channels, averaged over videos, when
        there is something to compare with (`labels`, or the input frames for the `"video"` target).
    reconstruction: the decoded targets of every frame, their channels concatenated in `config.targets` order,
        (batch, frames, target_channels, height, width).
    masks: per-slot alpha masks, (batch, frames, num_slots, 1, height, width), a distribution over slots per pixel.
    last_hidden_state, predicted_slots, hidden_states, attentions, predictor_attentions: as in `SAViModelOutput`.
    """

    loss: torch.FloatTensor | None = None
    reconstruction: torch.FloatTensor | None = None
    masks: torch.FloatTensor | None = None
    last_hidden_state: torch.FloatTensor | None = None
    predicted_slots: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None
    predictor_attentions: tuple[torch.FloatTensor, ...] | None = None


class SAViBackboneKwargs(TransformersKwargs, total=False):
    """What a SAVi head passes on to its backbone besides the frames and boxes: `SAViModel`'s `initial_slots` and
    `generator`, `STATMModel`'s `cache` (a `STATMCache`) and `use_cache`, and transformers' output flags."""

    initial_slots: torch.Tensor | None
    generator: torch.Generator | None
    cache: Any
    use_cache: bool | None


class SAViPreTrainedModel(ZooPreTrainedModel):
    """Base of the SAVi family; task heads run `SAViModel` as `self.savi`."""

    config_class = SAViConfig
    config: SAViConfig
    base_model_prefix = "savi"
    main_input_name = "pixel_values_videos"
    input_modalities = "video"
    _no_split_modules = ["TransformerBlock", "ResNetBlock"]
    supports_gradient_checkpointing = True  # the transformer blocks (predictor, SAVi++ encoder)
    _supports_sdpa = True
    _supports_attention_backend = True
    # transformers' output capturing, each recorded at every call in the frame loop (shapes in `SAViModelOutput`):
    # the slots the first frame starts from and after every corrector and predictor call, the map of every
    # slot-attention iteration, the predictor's attention weights.
    _can_record_outputs = {
        "hidden_states": [
            OutputRecorder(SlotAttention, index=0),
            OutputRecorder(TransformerBlock, layer_name="predictor", capture_initial_hidden_state=False),
        ],
        "attentions": OutputRecorder(SlotAttentionMap),
        "predictor_attentions": OutputRecorder(MultiHeadAttention, index=1, layer_name="predictor"),
    }
    # The loss is already averaged over the batch, so the Trainer's own division by the accumulation steps is right.
    accepts_loss_kwargs = False

    @torch.no_grad()
    def _init_weights(self, module):
        # Flax's defaults, from which the official models train: LeCun-normal (truncated) kernels, zero biases,
        # unit norm scales, orthogonal recurrent GRU kernels.
        if isinstance(module, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
            # Fan-in: input features x kernel area (dim 0 holds the inputs of a transposed convolution's weight).
            inputs = module.weight.shape[0 if isinstance(module, nn.ConvTranspose2d) else 1]
            lecun_normal_(module.weight, inputs * module.weight[0, 0].numel())
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, (nn.LayerNorm, nn.GroupNorm)):
            # The ResNet blocks' second norm starts at zero scale (marked on the norm itself: transformers does not
            # run this for modules without parameters of their own, such as the blocks).
            (init.zeros_ if getattr(module, "zero_init_scale", False) else init.ones_)(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, nn.GRUCell):
            lecun_normal_(module.weight_ih, module.weight_ih.shape[1])
            for gate in module.weight_hh.chunk(3):  # each Flax gate kernel is its own orthogonal matrix
                init.orthogonal_(gate)
            init.zeros_(module.bias_ih)
            init.zeros_(module.bias_hh)
        elif isinstance(module, LearnedSlotInitializer):
            init.normal_(module.slots)


def predictor_attentions_follow_output_attentions(forward):
    """transformers' output capturing turns each recorded output on by a flag of its own name; this makes
    `output_attentions` (the argument, else the config's) turn on `predictor_attentions` as well, so that it returns
    every attention map of the model, as it does for every transformers model."""

    @functools.wraps(forward)
    def wrapper(self, *args, **kwargs):
        kwargs.setdefault("output_predictor_attentions", kwargs.get("output_attentions", self.config.output_attentions))
        return forward(self, *args, **kwargs)

    return wrapper


def lecun_normal_(tensor, fan_in: int):
    """jax's `lecun_normal`: a normal truncated at two standard deviations, scaled to variance 1 / fan_in (a standard
    normal truncated to [-2, 2] has standard deviation 0.8796..., hence the division)."""
    std = math.sqrt(1 / fan_in) / 0.87962566103423978
    init.trunc_normal_(tensor, std=std, a=-2 * std, b=2 * std)


class SAViModel(SAViPreTrainedModel):
    """Video (batch, frames, C, H, W) with values in [0, 1] -> corrected and predicted slots per frame. Frame t's
    slots are the corrector (slot attention) applied to the predictor's slots from frame t - 1 and frame t's tokens;
    the first frame starts from the initialiser (first-frame boxes, learned or random slots)."""

    def __init__(self, config: SAViConfig):
        super().__init__(config)
        self.encoder = SAViFrameEncoder(config)
        self.initializer = build_initializer(config)
        self.corrector = SlotAttention(
            config.slot_size, self.encoder.output_size, config.slot_attention_qkv_size,
            config.slot_attention_num_heads, config.slot_attention_mlp_size, config.slot_attention_epsilon,
            config.layer_norm_eps,
        )  # fmt: skip
        self.predictor = self.build_predictor(config)
        self.post_init()

    # Families built on SAVi (STATM) swap the predictor here and pass its history through `run_frames`.
    build_predictor = staticmethod(build_predictor)

    def get_input_embeddings(self) -> nn.Module:
        """The frame encoder's first layer, which embeds the pixels (as VideoMAE's patch embedding)."""
        return self.encoder.get_input_embeddings()

    def initial_state(self, boxes, batch_size: int, reference: torch.Tensor, generator=None):
        """Slots (batch, num_slots, slot_size) before the first frame."""
        if isinstance(self.initializer, ConditionalSlotInitializer):
            return self.initializer(boxes.to(reference.dtype))
        if isinstance(self.initializer, LearnedSlotInitializer):
            return self.initializer(batch_size)
        return self.initializer(batch_size, reference.device, reference.dtype, generator)

    @predictor_attentions_follow_output_attentions
    @capture_outputs(tie_last_hidden_states=False)
    def forward(
        self,
        pixel_values_videos: torch.Tensor,
        boxes: torch.Tensor | None = None,
        initial_slots: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> SAViModelOutput:
        r"""
        pixel_values_videos (`torch.FloatTensor` of shape `(batch, frames, num_channels, image_size, image_size)`):
            Frames with values in [0, 1] (no mean / std normalisation), e.g. from the SAVi video processor.
        boxes (`torch.FloatTensor` of shape `(batch, num_boxes, 4)`, *optional*):
            First-frame boxes (ymin, xmin, ymax, xmax) in [0, 1], zero rows for absent objects; needed by the
            conditional initialiser (`num_boxes = num_slots - 1` with `prepend_background`).
        initial_slots (`torch.FloatTensor` of shape `(batch, num_slots, slot_size)`, *optional*):
            Continue earlier frames of the same videos: the last frame's `predicted_slots` of a previous call.
        generator (`torch.Generator`, *optional*): random source of the Gaussian initialiser.
        output_hidden_states, output_attentions, return_dict: as in every transformers model; transformers records
            the slots at every stage of the frame loop and every attention map (`SAViModelOutput`).
        """
        check_savi_inputs(pixel_values_videos, boxes, initial_slots, self.config)
        corrected, predicted = self.run_frames(pixel_values_videos, boxes, initial_slots, generator)
        return SAViModelOutput(last_hidden_state=corrected, predicted_slots=predicted)

    def run_frames(self, pixel_values_videos, boxes, initial_slots, generator=None, memory=None):
        """Encoder, initialiser and the recurrent loop over frames. Returns the corrected and predicted slots
        (batch, frames, num_slots, slot_size).

        memory: the history the predictor reads besides the current slots (STATM's buffer of corrected slots): its
            `append(slots)` records each frame's corrected slots and returns the history to pass to the predictor.
            None for SAVi's predictor, which reads the current slots only.
        """
        batch, frames = pixel_values_videos.shape[:2]
        tokens = self.encoder(pixel_values_videos.flatten(0, 1)).unflatten(0, (batch, frames))
        if initial_slots is None:
            state = self.initial_state(boxes, batch, tokens, generator)
            first_iterations = self.config.first_frame_iterations or self.config.slot_attention_iterations
        else:
            state, first_iterations = initial_slots.to(tokens.dtype), self.config.slot_attention_iterations
        corrected, predicted = [], []
        for t in range(frames):  # recurrent: each frame starts from the previous frame's prediction
            iterations = first_iterations if t == 0 else self.config.slot_attention_iterations
            # Positional: transformers' output capturing takes the slots entering the first call as the first
            # hidden state.
            slots, _ = self.corrector(state, tokens[:, t], iterations)
            state = self.predictor(slots) if memory is None else self.predictor(slots, memory.append(slots))
            corrected.append(slots)
            predicted.append(state)
        return torch.stack(corrected, dim=1), torch.stack(predicted, dim=1)


class SAViForVideoReconstruction(SAViPreTrainedModel):
    """SAVi with its spatial-broadcast decoder: every frame's corrected slots are decoded to the configured targets
    (frames, optical flow, depth) with per-slot alpha masks; the official training objective. STATM-SAVi's head is
    this head on its own backbone."""

    base_model_class = SAViModel
    output_class = SAViReconstructionOutput

    def __init__(self, config: SAViConfig):
        super().__init__(config)
        # Under `base_model_prefix` (`self.savi`, `self.statm`): the prefix of the backbone's checkpoint keys.
        setattr(self, self.base_model_prefix, self.base_model_class(config))
        self.decoder = build_decoder(config)
        self.post_init()

    @can_return_tuple
    def forward(
        self,
        pixel_values_videos: torch.Tensor,
        boxes: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        **kwargs: Unpack[SAViBackboneKwargs],
    ) -> SAViReconstructionOutput:
        r"""
        pixel_values_videos (`torch.FloatTensor` of shape `(batch, frames, num_channels, image_size, image_size)`):
            Frames with values in [0, 1].
        boxes (`torch.FloatTensor` of shape `(batch, num_boxes, 4)`, *optional*): first-frame boxes, as in
            `SAViModel`.
        labels (`torch.FloatTensor` of the shape of `reconstruction`, *optional*):
            The targets, channels concatenated in `config.targets` order; the input frames when None and the only
            target is `"video"`, else no loss.
        kwargs: what the backbone takes besides (`SAViBackboneKwargs`): `initial_slots`, `generator`,
            `output_hidden_states`, `output_attentions` (`SAViModel`), and `cache`, `use_cache` (`STATMModel`).
        """
        outputs = self.base_model(pixel_values_videos, boxes=boxes, return_dict=True, **kwargs)
        loss, reconstruction, masks = decode_slots(
            self.decoder, self.config, outputs.last_hidden_state, pixel_values_videos, labels
        )
        # The backbone's outputs (slots, predictions, cache, hidden states, attentions) pass through unchanged.
        return self.output_class(loss=loss, reconstruction=reconstruction, masks=masks, **outputs)


def decode_slots(decoder, config, slots, pixel_values_videos, labels):
    """Slots (batch, frames, num_slots, slot_size) -> (loss, reconstruction, masks) of the reconstruction head: the
    official objective, squared error summed over frames, pixels and channels, averaged over videos; the input frames
    are the labels when None and the only target is `"video"`, else there is no loss without labels."""
    batch, frames = slots.shape[:2]
    reconstruction, masks = decoder(slots.flatten(0, 1))
    reconstruction = reconstruction.unflatten(0, (batch, frames))
    masks = masks.unflatten(0, (batch, frames))
    if labels is None and list(config.targets) == ["video"]:
        labels = pixel_values_videos
    loss = None
    if labels is not None:
        if not isinstance(labels, torch.Tensor) or labels.shape != reconstruction.shape:
            raise ValueError(
                f"expected labels of shape {tuple(reconstruction.shape)} (targets {config.targets} "
                f"concatenated along channels), got {getattr(labels, 'shape', type(labels).__name__)}"
            )
        loss = (reconstruction.float() - labels.float()).pow(2).sum() / batch
    return loss, reconstruction, masks


__all__ = ["SAViPreTrainedModel", "SAViModel", "SAViForVideoReconstruction", "SAViModelOutput",
           "SAViReconstructionOutput"]  # fmt: skip
