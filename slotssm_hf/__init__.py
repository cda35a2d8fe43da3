"""A model zoo of slot-based and state-space video models for the Hugging Face ecosystem (first family: SlotSSM).

Importing the package registers every family of `registry.FAMILIES` with the transformers Auto classes
(idempotently).
"""

from .configuration_slotssm import SlotSSMConfig
from .data import VideoCollator, video_folder_dataset
from .modeling_slotssm import (
    SlotSSMForVideoClassification,
    SlotSSMForVideoDepthEstimation,
    SlotSSMForVideoPrediction,
    SlotSSMForVideoReconstruction,
    SlotSSMModel,
    SlotSSMPreTrainedModel,
)
from .registry import FAMILIES, register_family
from .ssm import Mamba1Mixer, Mamba2Mixer, MambaState
from .streaming import stream
from .timm_encoder import timm_video_processor_kwargs
from .video_processing_slotssm import SlotSSMVideoProcessor

for _family in FAMILIES.values():
    register_family(_family)

__all__ = [
    "SlotSSMConfig",
    "SlotSSMPreTrainedModel",
    "SlotSSMModel",
    "SlotSSMForVideoReconstruction",
    "SlotSSMForVideoClassification",
    "SlotSSMForVideoPrediction",
    "SlotSSMForVideoDepthEstimation",
    "Mamba1Mixer",
    "Mamba2Mixer",
    "MambaState",
    "SlotSSMVideoProcessor",
    "FAMILIES",
    "stream",
    "timm_video_processor_kwargs",
    "VideoCollator",
    "video_folder_dataset",
]

# SAVi / SAVi++
from .configuration_savi import SAViConfig  # noqa: E402
from .modeling_savi import SAViForVideoReconstruction, SAViModel, SAViPreTrainedModel  # noqa: E402
from .video_processing_savi import SAViVideoProcessor  # noqa: E402

__all__ += ["SAViConfig", "SAViPreTrainedModel", "SAViModel", "SAViForVideoReconstruction", "SAViVideoProcessor"]

# STATM-SAVi
from .configuration_statm import STATMConfig  # noqa: E402
from .modeling_statm import STATMCache, STATMForVideoReconstruction, STATMModel, STATMPreTrainedModel  # noqa: E402

__all__ += ["STATMConfig", "STATMPreTrainedModel", "STATMModel", "STATMForVideoReconstruction", "STATMCache"]
