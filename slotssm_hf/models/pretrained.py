"""The pretrained-model base that every family's base class extends: what saving and loading do for the whole zoo."""

import torch
from transformers import PreTrainedModel
from transformers.dynamic_module_utils import custom_object_save


class ZooPreTrainedModel(PreTrainedModel):
    """A saved folder carries the model code and the `auto_map` of every class of its family, so any of them loads
    from it with `trust_remote_code=True` where this package is not installed."""

    # Auto class -> "module.Class" for the whole family; set when the package registers the family (registry.py).
    # A model loaded as remote code keeps the auto_map of the config.json it came from.
    family_auto_map: dict[str, str] = {}

    @classmethod
    def from_pretrained(cls, *args, output_loading_info: bool = False, **kwargs):
        """transformers' loading, made strict: a checkpoint that would leave part of the model at random weights is
        refused, naming its missing and unexpected keys. The backbone (the base model) must load whole, and so must
        each task head the checkpoint holds any of; a head it lacks starts fresh and a head it holds but the model
        lacks is dropped, as transformers reports. A shape mismatch raises unless `ignore_mismatched_sizes=True`.
        Opt out with `output_loading_info=True`, which returns the loading report instead for the caller to judge."""
        model, info = super().from_pretrained(*args, output_loading_info=True, **kwargs)
        # transformers' loading makes every floating-point parameter trainable: freeze again what the model keeps fixed
        # (SlotSSM's frozen timm backbone, its ViT decoder's sin-cos table).
        for name in model._fixed_parameter_names:
            model.get_parameter(name).requires_grad_(False)
        if output_loading_info:
            return model, info
        missing, unexpected = keys_that_do_not_fit(model, info["missing_keys"], info["unexpected_keys"])
        if missing or unexpected:
            source = model.config.name_or_path or "state_dict"
            raise ValueError(
                f"the checkpoint ({source}) does not fit {cls.__name__} with this {type(model.config).__name__}: "
                f"missing keys {listed(missing)}, unexpected keys {listed(unexpected)}; the backbone and every head "
                "the checkpoint holds must load whole, or the model would hold random weights in their place (pass "
                "output_loading_info=True to load anyway and receive the report)"
            )
        return model

    def post_init(self):
        super().post_init()
        self._fixed_parameter_names = [name for name, param in self.named_parameters() if not param.requires_grad]

    def save_pretrained(self, save_directory, *args, **kwargs):
        self.config.auto_map = {**self.family_auto_map, **(getattr(self.config, "auto_map", None) or {})}
        result = super().save_pretrained(save_directory, *args, **kwargs)
        if self._auto_class is None:  # heads without a transformers Auto class still ship the model code
            custom_object_save(self, save_directory)
        return result


def keys_that_do_not_fit(model: PreTrainedModel, missing: set[str], unexpected: set[str]):
    """The missing and unexpected keys of a loading report (keys as transformers names them) that leave `model`
    part random: those of its backbone, and those of a head's top-level module of which the checkpoint held a part.
    Sorted lists."""
    prefix, own = model.base_model_prefix, model.state_dict().keys()
    backbone = {key.split(".")[0] for key in model.base_model.state_dict()}
    own_modules = {key.split(".")[0] for key in own}

    def module_of(key: str) -> str | None:
        """None for the backbone, else the head's top-level module."""
        first = key.split(".")[0]
        if model.base_model is model:  # a head's checkpoint keeps its backbone keys under the prefix
            return None if key.removeprefix(f"{prefix}.").split(".")[0] in backbone else first
        # A base model's checkpoint has its keys without the prefix.
        return None if first == prefix or (first in backbone and first not in own_modules) else first

    loaded = {module_of(key) for key in own if key not in missing}
    return tuple(sorted(key for key in keys if (module := module_of(key)) is None or module in loaded)
                 for keys in (missing, unexpected))  # fmt: skip


def listed(keys: list[str], limit: int = 8) -> str:
    """A list of keys for a message, cut after `limit` with a count of the rest."""
    return str(keys) if len(keys) <= limit else f"{keys[:limit]} and {len(keys) - limit} more"


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
