"""STATM-SAVi configuration, and the official MOVi setups as named variants."""

from typing import Literal

from huggingface_hub.dataclasses import strict

from .configuration_savi import VARIANTS as SAVI_VARIANTS
from .configuration_savi import SAViConfig


@strict
class STATMConfig(SAViConfig):
    r"""
    Configuration of STATM-SAVi (Li et al., "Reasoning-Enhanced Object-Centric Learning for Videos", KDD 2025): SAVi
    (every field of `SAViConfig` keeps its meaning) whose predictor reads a memory buffer of the corrected slots of
    every frame so far: spatial attention across the slots of the frame plus temporal attention of each slot over its
    own history, post-norm, then an MLP (the official `TimeSpaceTransformerBlock2`). The defaults are the official
    `statm_savi_conditional_small` MOVi setup; `VARIANTS` holds the others.

    num_slots (`int`, defaults to 11): slots per frame; the official configs use max_instances = 10 plus the
        background slot (set 24 for MOVi-D / E's 23 instances; the parameters do not depend on it).
    predictor_type (`"time_space"`): STATM's spatial-temporal predictor; `predictor_num_heads`, `predictor_qkv_size`
        (of each of its two attentions) and `predictor_mlp_size` size it.
    memory_size (`int`, *optional*): keep only the corrected slots of the last `memory_size` frames in the buffer.
        None (the official code) keeps every frame since the start of the video, so the temporal attention costs
        O(frames) per frame; the official evaluation restarts the buffer every 24 frames (its `eval_slice_size`),
        which is calling the model on 24-frame slices, each continuing from the previous slice's last
        `predicted_slots` through `initial_slots`.
    use_cache (`bool`, defaults to `False`): return `cache` (the memory buffer and the next frame's slots) from
        forward calls without `use_cache`.

    Example:

    ```python
    >>> from slotssm_hf import FAMILIES, STATMForVideoReconstruction
    >>> model = STATMForVideoReconstruction(FAMILIES["statm"].config("statm_savi_pp_conditional"))
    ```
    """

    model_type = "statm"

    num_slots: int = 11
    predictor_type: Literal["time_space"] = "time_space"
    memory_size: int | None = None
    use_cache: bool = False

    def validate_architecture(self):
        """Part of `@strict` validation: SAVi's checks plus the memory size."""
        super().validate_architecture()
        if self.memory_size is not None and self.memory_size < 1:
            raise ValueError(
                f"memory_size must be None (unbounded, as the official code) or >= 1, got {self.memory_size}"
            )


# The official MOVi setups (jax-statm/statm/configs/movi/*.py), as STATMConfig overrides of the defaults
# (statm_savi_conditional_small). The published checkpoints are of the small and SAVi++ setups; the SAVi++ ones use
# SAVi++'s encoder, slot attention, predictor sizes and decoder.
VARIANTS = {
    # SAVi's small variant for `slotssm-hf train` on the built-in bouncing shapes, with STATM's predictor.
    "tiny": SAVI_VARIANTS["tiny"],
    "statm_savi_conditional_small": {},
    # statm_savi++_conditional.py: two slot-attention iterations, max_instances 10.
    "statm_savi_pp_conditional": {**SAVI_VARIANTS["savi_pp_conditional"], "slot_attention_iterations": 2},
    # statm_savi_conditional.py (its docstring calls it STATM-SAVi++ too): one iteration, max_instances 23.
    "statm_savi_conditional": {**SAVI_VARIANTS["savi_pp_conditional"], "num_slots": 24},
}


__all__ = ["STATMConfig"]
