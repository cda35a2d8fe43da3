"""STATM-SAVi models: SAVi (encoder, initialiser, slot-attention corrector, spatial-broadcast decoder, shared with
`modeling_savi`) whose predictor reads a memory buffer of past slots through spatial-temporal attention; faithful to
the official Flax code (intell-sci-comput/STATM, jax-statm, Apache-2.0)."""

from dataclasses import dataclass

import torch
from torch import nn
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.utils import ModelOutput
from transformers.utils.generic import can_return_tuple

from .configuration_statm import STATMConfig
from .modeling_savi import SAViForVideoReconstruction, SAViModel, SAViPreTrainedModel, check_savi_inputs
from .object_centric import MLP, MultiHeadAttention


class STATMSpaceTimeBlock(GradientCheckpointingLayer):
    """The official `TimeSpaceTransformerBlock2` (post-norm, as every official config runs it): the current corrected
    slots c attend across each other (spatial) and each slot attends over its own history in the memory buffer
    (temporal, one query per slot), the two residual branches are normalised and summed, then a post-norm MLP:

        y = LN(c + MHA_space(c, c)) + LN(c + MHA_time(c, memory))
        out = LN(y + MLP(y))

    No time encoding: the temporal attention sees the history as a set. (batch, num_slots, slot_size) out."""

    def __init__(self, config: STATMConfig):
        super().__init__()
        size, heads, eps = config.slot_size, config.predictor_num_heads, config.layer_norm_eps
        self.space_attention = MultiHeadAttention(config, size, heads, config.predictor_qkv_size)
        self.space_norm = nn.LayerNorm(size, eps=eps)
        self.time_attention = MultiHeadAttention(config, size, heads, config.predictor_qkv_size)
        self.time_norm = nn.LayerNorm(size, eps=eps)
        self.mlp = MLP(size, config.predictor_mlp_size)
        self.mlp_norm = nn.LayerNorm(size, eps=eps)

    def forward(self, slots, memory):
        """slots (batch, num_slots, slot_size): this frame's corrected slots; memory (batch, length, num_slots,
        slot_size): the buffer of corrected slots, this frame's last."""
        batch, num_slots, size = slots.shape
        space = self.space_norm(slots + self.space_attention(slots))
        # Slots folded into the batch: each slot's query sees only its own history.
        history = memory.transpose(1, 2).reshape(batch * num_slots, memory.shape[1], size)
        time = self.time_attention(slots.reshape(batch * num_slots, 1, size), history).view(batch, num_slots, size)
        hidden = space + self.time_norm(slots + time)
        return self.mlp_norm(hidden + self.mlp(hidden))


class STATMCache:
    """STATM's recurrent state between calls on the same videos, updated in place by each call: `memory`, the buffer
    of corrected slots (batch, length, num_slots, slot_size), the newest last, at most `memory_size` frames when that
    is set; `predicted_slots`, the slots predicted for the next frame (batch, num_slots, slot_size), where the
    corrector starts; `seen_frames`, the frames processed so far.

    Not a transformers `DynamicCache`: that holds the keys and values of attention layers, grown along a token
    axis, while this memory is the slots themselves (the temporal attention projects them to keys and values) plus
    a second, non-sequence state (the prediction), and it is cut to a window of frames rather than tokens."""

    def __init__(self, memory_size: int | None = None):
        self.memory_size = memory_size
        self.memory: torch.Tensor | None = None
        self.predicted_slots: torch.Tensor | None = None
        self.seen_frames = 0

    def append(self, slots):
        """Record one frame's corrected slots (batch, num_slots, slot_size); returns the buffer the predictor reads."""
        slots = slots.unsqueeze(1)
        memory = slots if self.memory is None else torch.cat([self.memory, slots], dim=1)
        self.memory = memory if self.memory_size is None else memory[:, -self.memory_size :]
        self.seen_frames += 1
        return self.memory

    def get_seq_length(self) -> int:
        """Frames held in the memory buffer."""
        return 0 if self.memory is None else self.memory.shape[1]


@dataclass
class STATMModelOutput(ModelOutput):
    """
    last_hidden_state: the corrected slots of every frame, (batch, frames, num_slots, slot_size).
    predicted_slots: the predictor's slots for the next frame, computed at every frame, same shape.
    cache: with `use_cache=True`, the `STATMCache` after the last frame (memory buffer and next frame's slots); pass
        it as `cache` to continue the videos frame by frame.
    attentions: with `output_attentions=True`, a 1-tuple holding the corrector's attention of every frame (its last
        iteration), (batch, frames, heads, num_slots, num_tokens).
    """

    last_hidden_state: torch.FloatTensor | None = None
    predicted_slots: torch.FloatTensor | None = None
    cache: STATMCache | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None


@dataclass
class STATMReconstructionOutput(ModelOutput):
    """
    loss: the official objective: squared error summed over frames, pixels and channels, averaged over videos.
    reconstruction: the decoded targets of every frame, (batch, frames, target_channels, height, width).
    masks: per-slot alpha masks, (batch, frames, num_slots, 1, height, width).
    last_hidden_state, predicted_slots, cache, attentions: as in `STATMModelOutput`.
    """

    loss: torch.FloatTensor | None = None
    reconstruction: torch.FloatTensor | None = None
    masks: torch.FloatTensor | None = None
    last_hidden_state: torch.FloatTensor | None = None
    predicted_slots: torch.FloatTensor | None = None
    cache: STATMCache | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None


class STATMPreTrainedModel(SAViPreTrainedModel):
    """Base of the STATM family (SAVi's initialisation and saving); task heads run `STATMModel` as `self.statm`."""

    config_class = STATMConfig
    config: STATMConfig
    base_model_prefix = "statm"
    _no_split_modules = ["TransformerBlock", "ResNetBlock", "STATMSpaceTimeBlock"]


class STATMModel(STATMPreTrainedModel, SAViModel):
    """Video (batch, frames, C, H, W) with values in [0, 1] -> corrected and predicted slots per frame: SAVi's loop,
    where the predictor reads the memory buffer of every corrected slots so far (the official `STATMSAVi`)."""

    build_predictor = STATMSpaceTimeBlock

    @can_return_tuple
    def forward(
        self,
        pixel_values_videos: torch.Tensor,
        boxes: torch.Tensor | None = None,
        initial_slots: torch.Tensor | None = None,
        cache: STATMCache | None = None,
        use_cache: bool | None = None,
        output_attentions: bool | None = None,
        generator: torch.Generator | None = None,
        **kwargs,
    ) -> STATMModelOutput:
        r"""
        pixel_values_videos (`torch.FloatTensor` of shape `(batch, frames, num_channels, image_size, image_size)`):
            Frames with values in [0, 1] (no mean / std normalisation), e.g. from the SAVi video processor.
        boxes (`torch.FloatTensor` of shape `(batch, num_boxes, 4)`, *optional*):
            First-frame boxes (ymin, xmin, ymax, xmax) in [0, 1], zero rows for absent objects; needed by the
            conditional initialiser at the start of a video.
        initial_slots (`torch.FloatTensor` of shape `(batch, num_slots, slot_size)`, *optional*):
            Start from these slots with an empty memory buffer: the official sliced evaluation, which continues
            each slice from the previous slice's last `predicted_slots`.
        cache (`STATMCache`, *optional*):
            The state after earlier frames of the same videos (from a call with `use_cache=True`): these frames
            continue them (memory buffer included), and the cache is updated in place.
        use_cache (`bool`, *optional*):
            Return `cache`; True when a `cache` is passed, else `config.use_cache`.
        generator (`torch.Generator`, *optional*): random source of the Gaussian initialiser.
        """
        if cache is not None and initial_slots is not None:
            raise ValueError("pass either cache (continue with its memory buffer) or initial_slots (empty buffer)")
        if cache is not None and cache.memory_size != self.config.memory_size:
            raise ValueError(f"the cache keeps {cache.memory_size or 'every'} frames, the model config's memory_size "
                             f"{self.config.memory_size}: make it as STATMCache(config.memory_size)")  # fmt: skip
        if cache is not None and cache.predicted_slots is not None:
            initial_slots = cache.predicted_slots
            if cache.memory.shape[0] != pixel_values_videos.shape[0]:
                raise ValueError(f"the cache holds {cache.memory.shape[0]} videos, pixel_values_videos "
                                 f"{pixel_values_videos.shape[0]}")  # fmt: skip
        check_savi_inputs(pixel_values_videos, boxes, initial_slots, self.config)
        use_cache = (cache is not None or self.config.use_cache) if use_cache is None else use_cache
        output_attentions = self.config.output_attentions if output_attentions is None else output_attentions
        memory = STATMCache(self.config.memory_size) if cache is None else cache
        corrected, predicted, attention = self.run_frames(pixel_values_videos, boxes, initial_slots, generator, memory)
        memory.predicted_slots = predicted[:, -1]
        return STATMModelOutput(
            last_hidden_state=corrected,
            predicted_slots=predicted,
            cache=memory if use_cache else None,
            attentions=(attention,) if output_attentions else None,
        )


class STATMForVideoReconstruction(STATMPreTrainedModel, SAViForVideoReconstruction):
    """STATM-SAVi with its spatial-broadcast decoder: every frame's corrected slots are decoded to the configured
    targets (frames, optical flow, depth) with per-slot alpha masks; the official training objective. SAVi's head on
    `STATMModel`, whose `cache` it returns too."""

    base_model_class = STATMModel
    output_class = STATMReconstructionOutput


__all__ = ["STATMPreTrainedModel", "STATMModel", "STATMForVideoReconstruction", "STATMModelOutput",
           "STATMReconstructionOutput", "STATMCache", "STATMSpaceTimeBlock"]  # fmt: skip
