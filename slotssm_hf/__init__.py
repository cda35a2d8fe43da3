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

from .configuration_convs5 import CONVS5_VARIANTS, ConvS5Config
from .configuration_slotssm import SlotSSMConfig
from .data import VideoCollator, video_folder_dataset
from .modeling_convs5 import ConvS5ForVideoPrediction, ConvS5Model, ConvS5PreTrainedModel
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
from .video_processing_convs5 import ConvS5VideoProcessor
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

# ConvS5 (non-commercial official weights; our code): next-frame prediction is its pre-training objective.
AutoConfig.register(ConvS5Config.model_type, ConvS5Config, exist_ok=True)
AutoModel.register(ConvS5Config, ConvS5Model, exist_ok=True)
AutoModelForPreTraining.register(ConvS5Config, ConvS5ForVideoPrediction, exist_ok=True)
AutoVideoProcessor.register(ConvS5Config, video_processor_class=ConvS5VideoProcessor, exist_ok=True)
ConvS5Config.register_for_auto_class()
ConvS5Model.register_for_auto_class("AutoModel")
ConvS5ForVideoPrediction.register_for_auto_class("AutoModelForPreTraining")
ConvS5VideoProcessor.register_for_auto_class()

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
    "ConvS5Config",
    "CONVS5_VARIANTS",
    "ConvS5PreTrainedModel",
    "ConvS5Model",
    "ConvS5ForVideoPrediction",
    "ConvS5VideoProcessor",
]
