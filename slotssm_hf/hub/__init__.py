"""Publishing on the Hugging Face Hub: `push_to_hub` (`slotssm-hf push`) and the model cards it writes."""

from .push import push_to_hub

__all__ = ["push_to_hub"]
