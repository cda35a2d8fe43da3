"""SlotSSM (Slot State Space Models) for the Hugging Face ecosystem.

Importing the package registers its classes with the transformers Auto classes (idempotently).
"""

from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForImageClassification,
    AutoModelForPreTraining,
    AutoModelForVideoClassification,
    AutoVideoProcessor,
)

from . import timm_grootv  # registers grootv_tiny / _small / _base with timm
from .configuration_grootv import GrootVConfig

from .configuration_slotssm import SlotSSMConfig
from .data import VideoCollator, video_folder_dataset
from .modeling_grootv import GrootVForImageClassification, GrootVModel, GrootVPreTrainedModel
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

# GrootV (image backbone). Its image processor is transformers' ConvNextImageProcessor, named in the saved
# preprocessor_config.json, so AutoImageProcessor needs no registration.
AutoConfig.register(GrootVConfig.model_type, GrootVConfig, exist_ok=True)
AutoModel.register(GrootVConfig, GrootVModel, exist_ok=True)
AutoModelForImageClassification.register(GrootVConfig, GrootVForImageClassification, exist_ok=True)
GrootVConfig.register_for_auto_class()
GrootVModel.register_for_auto_class("AutoModel")
GrootVForImageClassification.register_for_auto_class("AutoModelForImageClassification")

__all__ = [
    "SlotSSMConfig",
    "GrootVConfig",
    "GrootVPreTrainedModel",
    "GrootVModel",
    "GrootVForImageClassification",
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
