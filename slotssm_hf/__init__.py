"""A model zoo of slot-based and state-space video models for the Hugging Face ecosystem: SlotSSM, SAVi / SAVi++,
STATM-SAVi, ConvS5 and GrootV.

Importing the package registers every family of `registry.FAMILIES` with the transformers Auto classes
(idempotently), and GrootV's variants with timm.
"""

from . import timm_grootv  # noqa: F401  (registers grootv_tiny / _small / _base with timm)
from .models.configuration_convs5 import ConvS5Config
from .models.configuration_grootv import GrootVConfig
from .models.configuration_savi import SAViConfig
from .models.configuration_slotssm import SlotSSMConfig
from .models.configuration_statm import STATMConfig
from .models.image_processing_grootv import GrootVImageProcessor
from .training.data import VideoCollator, video_folder_dataset
from .models.modeling_convs5 import ConvS5ForVideoPrediction, ConvS5Model, ConvS5PreTrainedModel
from .models.modeling_grootv import GrootVForImageClassification, GrootVModel, GrootVPreTrainedModel
from .models.modeling_savi import SAViForVideoReconstruction, SAViModel, SAViPreTrainedModel
from .models.modeling_slotssm import (
    SlotSSMForVideoClassification,
    SlotSSMForVideoDepthEstimation,
    SlotSSMForVideoPrediction,
    SlotSSMForVideoReconstruction,
    SlotSSMModel,
    SlotSSMPreTrainedModel,
)
from .models.modeling_statm import STATMCache, STATMForVideoReconstruction, STATMModel, STATMPreTrainedModel
from .registry import FAMILIES, register_family
from .models.mamba_mixers import Mamba1Mixer, Mamba2Mixer, MambaState
from .streaming import stream
from .models.timm_encoder import timm_video_processor_kwargs
from .models.video_processing_convs5 import ConvS5VideoProcessor
from .models.video_processing_savi import SAViVideoProcessor
from .models.video_processing_slotssm import SlotSSMVideoProcessor

for _family in FAMILIES.values():
    register_family(_family)

__all__ = [
    "FAMILIES",
    "SlotSSMConfig",
    "SlotSSMPreTrainedModel",
    "SlotSSMModel",
    "SlotSSMForVideoReconstruction",
    "SlotSSMForVideoClassification",
    "SlotSSMForVideoPrediction",
    "SlotSSMForVideoDepthEstimation",
    "SlotSSMVideoProcessor",
    "SAViConfig",
    "SAViPreTrainedModel",
    "SAViModel",
    "SAViForVideoReconstruction",
    "SAViVideoProcessor",
    "STATMConfig",
    "STATMPreTrainedModel",
    "STATMModel",
    "STATMForVideoReconstruction",
    "STATMCache",
    "ConvS5Config",
    "ConvS5PreTrainedModel",
    "ConvS5Model",
    "ConvS5ForVideoPrediction",
    "ConvS5VideoProcessor",
    "GrootVConfig",
    "GrootVPreTrainedModel",
    "GrootVModel",
    "GrootVForImageClassification",
    "GrootVImageProcessor",
    "Mamba1Mixer",
    "Mamba2Mixer",
    "MambaState",
    "stream",
    "timm_video_processor_kwargs",
    "VideoCollator",
    "video_folder_dataset",
]
