"""The pretrained-model base that every family's base class extends: what saving does for the whole zoo."""

import torch
from transformers import PreTrainedModel
from transformers.dynamic_module_utils import custom_object_save


class ZooPreTrainedModel(PreTrainedModel):
    """A saved folder carries the model code and the `auto_map` of every class of its family, so any of them loads
    from it with `trust_remote_code=True` where this package is not installed."""

    # Auto class -> "module.Class" for the whole family; set when the package registers the family (registry.py).
    # A model loaded as remote code keeps the auto_map of the config.json it came from.
    family_auto_map: dict[str, str] = {}

    def save_pretrained(self, save_directory, *args, **kwargs):
        self.config.auto_map = {**self.family_auto_map, **(getattr(self.config, "auto_map", None) or {})}
        result = super().save_pretrained(save_directory, *args, **kwargs)
        if self._auto_class is None:  # heads without a transformers Auto class still ship the model code
            custom_object_save(self, save_directory)
        return result


@torch.no_grad()
def autoregressive_rollout(model, context: torch.Tensor, num_steps: int) -> torch.Tensor:
    """Predict `num_steps` frames after `context` (batch, frames, C, H, W) with a next-frame prediction head whose
    outputs hold `predictions` and `cache`: the context runs in one pass, then each prediction is fed back as the
    next input through the recurrent state, so memory and time per generated frame do not grow. Returns
    (batch, num_steps, C, H, W)."""
    if num_steps < 1:
        raise ValueError(f"num_steps must be a positive integer, got {num_steps}")
    outputs = model(context, use_cache=True)
    frames = [outputs.predictions[:, -1:]]
    for _ in range(num_steps - 1):
        outputs = model(frames[-1], cache=outputs.cache, use_cache=True)
        frames.append(outputs.predictions)
    return torch.cat(frames, dim=1)
