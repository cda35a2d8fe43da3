"""SlotSSM (Slot State Space Models) for the Hugging Face ecosystem.

Importing the package registers its classes with the transformers Auto classes (idempotently).
"""

from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForPreTraining,
    AutoModelForVideoClassification,
    AutoVideoProcessor,
)

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
from .ssm import Mamba1Mixer, Mamba2Mixer, MambaState
from .streaming import stream
from .timm_encoder import timm_video_processor_kwargs
from .video_processing_slotssm import SlotSSMVideoProcessor

AutoConfig.register(SlotSSMConfig.model_type, SlotSSMConfig, exist_ok=True)
AutoModel.register(SlotSSMConfig, SlotSSMModel, exist_ok=True)
AutoModelForPreTraining.register(SlotSSMConfig, SlotSSMForVideoReconstruction, exist_ok=True)
AutoModelForVideoClassification.register(SlotSSMConfig, SlotSSMForVideoClassification, exist_ok=True)
AutoVideoProcessor.register(SlotSSMConfig, video_processor_class=SlotSSMVideoProcessor, exist_ok=True)

# Saved folders carry the model code and an auto_map, so they load with trust_remote_code=True without this package.
SlotSSMConfig.register_for_auto_class()
SlotSSMModel.register_for_auto_class("AutoModel")
SlotSSMForVideoReconstruction.register_for_auto_class("AutoModelForPreTraining")
SlotSSMForVideoClassification.register_for_auto_class("AutoModelForVideoClassification")
SlotSSMVideoProcessor.register_for_auto_class()

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
    "stream",
    "timm_video_processor_kwargs",
    "VideoCollator",
    "video_folder_dataset",
]

# SAVi / SAVi++ (the registry of families takes these over).
from .configuration_savi import SAVI_VARIANTS, SAViConfig  # noqa: E402
from .modeling_savi import SAViForVideoReconstruction, SAViModel, SAViPreTrainedModel  # noqa: E402
from .video_processing_savi import SAViVideoProcessor  # noqa: E402

AutoConfig.register(SAViConfig.model_type, SAViConfig, exist_ok=True)
AutoModel.register(SAViConfig, SAViModel, exist_ok=True)
AutoModelForPreTraining.register(SAViConfig, SAViForVideoReconstruction, exist_ok=True)
AutoVideoProcessor.register(SAViConfig, video_processor_class=SAViVideoProcessor, exist_ok=True)
SAViConfig.register_for_auto_class()
SAViModel.register_for_auto_class("AutoModel")
SAViForVideoReconstruction.register_for_auto_class("AutoModelForPreTraining")
SAViVideoProcessor.register_for_auto_class()
__all__ += [
    "SAViConfig", "SAVI_VARIANTS", "SAViPreTrainedModel", "SAViModel", "SAViForVideoReconstruction",
    "SAViVideoProcessor",
]  # fmt: skip
