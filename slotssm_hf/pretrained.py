"""The pretrained-model base that every family's base class extends: what saving does for the whole zoo."""

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
