"""STATM-SAVi models: SAVi (encoder, initialiser, slot-attention corrector, spatial-broadcast decoder, shared with
`modeling_savi`) whose predictor reads a memory buffer of past slots through spatial-temporal attention; faithful to
the official Flax code (intell-sci-comput/STATM, jax-statm, Apache-2.0)."""

from dataclasses import dataclass

import torch
from torch import nn
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.processing_utils import Unpack
from transformers.utils import ModelOutput, TransformersKwargs
from transformers.utils.output_capturing import OutputRecorder, capture_outputs

from .configuration_statm import STATMConfig
from .modeling_savi import (
    SAViForVideoReconstruction,
    SAViModel,
    SAViPreTrainedModel,
    check_savi_inputs,
    predictor_attentions_follow_output_attentions,
)
from .object_centric import MLP, MultiHeadAttention, SlotAttention, SlotAttentionMap
from .video_inputs import cache_error, check_cache_state


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
        space = self.space_norm(slots + self.space_attention(slots)[0])
        # The slots as a batch dimension: each slot's one query sees only its own history (batch, num_slots,
        # length, slot_size).
        time = self.time_attention(slots.unsqueeze(2), memory.transpose(1, 2))[0].squeeze(2)
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


def check_statm_cache(cache, config: STATMConfig, batch_size: int):
    """Refuse a `cache` that is not the `STATMCache` of this model for `batch_size` videos."""
    start = "STATMCache(config.memory_size)"
    if not isinstance(cache, STATMCache):
        raise cache_error(f"got a {type(cache).__name__}", start)
    if cache.memory_size != config.memory_size:
        raise cache_error(
            f"the cache keeps {cache.memory_size or 'every'} frames, where config.memory_size is {config.memory_size}",
            start,
        )
    slots = (config.num_slots, config.slot_size)
    check_cache_state(cache.memory, (batch_size, "frames", *slots), "memory", start)
    check_cache_state(cache.predicted_slots, (batch_size, *slots), "predicted_slots", start)


@dataclass
class STATMModelOutput(ModelOutput):
    """
    last_hidden_state: the corrected slots of every frame, (batch, frames, num_slots, slot_size).
    predicted_slots: the predictor's slots for the next frame, computed at every frame, same shape.
    cache: with `use_cache=True`, the `STATMCache` after the last frame (memory buffer and next frame's slots); pass
        it as `cache` to continue the videos frame by frame.
    hidden_states, attentions: as in `SAViModelOutput`: the slots at every stage of the frame loop (the slots the
        first frame starts from, then each frame's corrected and predicted slots), and the corrector's map at every
        frame and iteration, (batch, slot_attention_num_heads, num_slots, num_tokens).
    predictor_attentions: with `output_attentions=True` and `attn_implementation="eager"` (other kernels return no
        weights: then empty), the predictor's two attention maps at every frame, in this order: the spatial one,
        (batch, predictor_num_heads, num_slots, num_slots), the slots of the frame attending to each other; the
        temporal one, (batch, num_slots, predictor_num_heads, 1, memory_length), each slot's query over its own
        history in the memory buffer (this frame's corrected slots last; memory_length grows by one per frame up
        to `memory_size`).
    """

    last_hidden_state: torch.FloatTensor | None = None
    predicted_slots: torch.FloatTensor | None = None
    cache: STATMCache | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None
    predictor_attentions: tuple[torch.FloatTensor, ...] | None = None


@dataclass
class STATMReconstructionOutput(ModelOutput):
    """
    loss: the official objective: squared error summed over frames, pixels and channels, averaged over videos.
    reconstruction: the decoded targets of every frame, (batch, frames, target_channels, height, width).
    masks: per-slot alpha masks, (batch, frames, num_slots, 1, height, width).
    last_hidden_state, predicted_slots, cache, hidden_states, attentions, predictor_attentions: as in
        `STATMModelOutput`.
    """

    loss: torch.FloatTensor | None = None
    reconstruction: torch.FloatTensor | None = None
    masks: torch.FloatTensor | None = None
    last_hidden_state: torch.FloatTensor | None = None
    predicted_slots: torch.FloatTensor | None = None
    cache: STATMCache | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None
    predictor_attentions: tuple[torch.FloatTensor, ...] | None = None


class STATMPreTrainedModel(SAViPreTrainedModel):
    """Base of the STATM family (SAVi's initialisation and saving); task heads run `STATMModel` as `self.statm`."""

    config_class = STATMConfig
    config: STATMConfig
    base_model_prefix = "statm"
    _no_split_modules = ["TransformerBlock", "ResNetBlock", "STATMSpaceTimeBlock"]
    # SAVi's, with STATM's predictor: its output is the predicted slots, its two attentions record in call order.
    _can_record_outputs = {
        "hidden_states": [
            OutputRecorder(SlotAttention, index=0),
            OutputRecorder(STATMSpaceTimeBlock, capture_initial_hidden_state=False),
        ],
        "attentions": OutputRecorder(SlotAttentionMap),
        "predictor_attentions": OutputRecorder(MultiHeadAttention, index=1, layer_name="predictor"),
    }


class STATMModel(STATMPreTrainedModel, SAViModel):
    """Video (batch, frames, C, H, W) with values in [0, 1] -> corrected and predicted slots per frame: SAVi's loop,
    where the predictor reads the memory buffer of every corrected slots so far (the official `STATMSAVi`)."""

    build_predictor = STATMSpaceTimeBlock

    @predictor_attentions_follow_output_attentions
    @capture_outputs(tie_last_hidden_states=False)
    def forward(
        self,
        pixel_values_videos: torch.Tensor,
        boxes: torch.Tensor | None = None,
        initial_slots: torch.Tensor | None = None,
        cache: STATMCache | None = None,
        use_cache: bool | None = None,
        generator: torch.Generator | None = None,
        **kwargs: Unpack[TransformersKwargs],
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
        output_hidden_states, output_attentions, return_dict: as in every transformers model; transformers records
            the slots at every stage of the frame loop and every attention map (`STATMModelOutput`).
        """
        if cache is not None and initial_slots is not None:
            raise ValueError("pass either cache (continue with its memory buffer) or initial_slots (empty buffer)")
        if cache is not None:
            check_statm_cache(cache, self.config, pixel_values_videos.shape[0])
            initial_slots = cache.predicted_slots
        check_savi_inputs(pixel_values_videos, boxes, initial_slots, self.config)
        use_cache = (cache is not None or self.config.use_cache) if use_cache is None else use_cache
        memory = STATMCache(self.config.memory_size) if cache is None else cache
        corrected, predicted = self.run_frames(pixel_values_videos, boxes, initial_slots, generator, memory)
        memory.predicted_slots = predicted[:, -1]
        return STATMModelOutput(
            last_hidden_state=corrected, predicted_slots=predicted, cache=memory if use_cache else None
        )


class STATMForVideoReconstruction(STATMPreTrainedModel, SAViForVideoReconstruction):
    """STATM-SAVi with its spatial-broadcast decoder: every frame's corrected slots are decoded to the configured
    targets (frames, optical flow, depth) with per-slot alpha masks; the official training objective. SAVi's head on
    `STATMModel`, whose `cache` it returns too."""

    base_model_class = STATMModel
    output_class = STATMReconstructionOutput


__all__ = ["STATMPreTrainedModel", "STATMModel", "STATMForVideoReconstruction", "STATMModelOutput",
           "STATMReconstructionOutput", "STATMCache", "STATMSpaceTimeBlock"]  # fmt: skip
