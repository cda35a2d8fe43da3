"""timm image models as SlotSSM's frame encoder: building one from a `SlotSSMConfig`, the shape of the feature map it
hands to the slots, and the video-processor settings of its pretrained weights.

timm is imported inside the functions that need it, so the model code loads (also with `trust_remote_code`) where
timm is not installed; only `encoder_type="timm"` needs it.
"""

import functools
import json
import math
from types import SimpleNamespace

import torch
from torch import nn
from transformers.image_utils import PILImageResampling
from transformers.utils import is_timm_available


def import_timm():
    """The timm package, or an ImportError that says what needs it."""
    # Behind is_timm_available, transformers' remote-code import check does not require timm for every model.
    if is_timm_available():
        import timm

        return timm
    raise ImportError("encoder_type='timm' needs the timm package: pip install timm")


def create_timm_backbone(config, pretrained: bool) -> tuple[nn.Module, int, int, int]:
    """The timm model of `config` (`timm_model_name`, `timm_model_kwargs`), pruned after the feature map the slots
    read. Returns the model, that map's absolute index for `forward_intermediates`, its channels and its grid size
    (the map is grid x grid for image_size x image_size frames)."""
    timm = import_timm()
    name = config.timm_model_name
    # Names with a source ("hf-hub:...", "local-dir:...") are resolved, and refused if wrong, by timm itself.
    if ":" not in name and not timm.is_model(name):
        raise ValueError(
            f"timm_model_name {name!r} is not a model timm {timm.__version__} knows (timm.list_models() lists them)"
        )
    kwargs = {"in_chans": config.num_channels, **(config.timm_model_kwargs or {})}
    default_cfg = None if ":" in name else timm.get_pretrained_cfg(name)
    if default_cfg is not None and default_cfg.fixed_input_size:
        # ViT-style models are built for one input size; timm resamples pretrained position embeddings to it.
        kwargs.setdefault("img_size", config.image_size)
    backbone = timm.create_model(name, pretrained=pretrained, **kwargs)

    feature_api = ("forward_intermediates", "prune_intermediate_layers", "feature_info")
    missing = [api for api in feature_api if not hasattr(backbone, api)]
    if missing:
        raise ValueError(
            f"the timm model {name!r} ({type(backbone).__name__}) has no {', '.join(missing)}: the SlotSSM encoder "
            "reads its features through timm's forward_intermediates"
        )
    count, index = len(backbone.feature_info), config.timm_feature_index
    if not -count <= index < count:
        raise ValueError(
            f"timm_feature_index ({index}) is out of range for {name!r}, which offers {count} feature maps "
            f"(indices {-count} to {count - 1})"
        )
    info = backbone.feature_info[index]
    if config.image_size % info["reduction"]:
        raise ValueError(
            f"image_size ({config.image_size}) must be a multiple of the stride ({info['reduction']}) of feature map "
            f"{index} of {name!r}: the slots read a whole grid of features"
        )
    # What comes after the chosen map (later blocks, final norm, classifier) would never run: drop it and its weights.
    (index,) = backbone.prune_intermediate_layers([index], prune_norm=True, prune_head=True)
    return backbone, index, info["num_chs"], config.image_size // info["reduction"]


# The config fields that decide the backbone's feature map.
BACKBONE_FIELDS = ("timm_model_name", "timm_model_kwargs", "timm_feature_index", "image_size", "num_channels")


def timm_feature_shape(config) -> tuple[int, int]:
    """(channels, grid size) of the feature map a timm encoder hands to the slots, learnt from a build of the model
    on the meta device (no memory, no download) and remembered per setting."""
    return _feature_shape(json.dumps({field: getattr(config, field) for field in BACKBONE_FIELDS}, sort_keys=True))


@functools.lru_cache(maxsize=32)
def _feature_shape(fields: str) -> tuple[int, int]:
    with torch.device("meta"):
        _, _, channels, grid_size = create_timm_backbone(SimpleNamespace(**json.loads(fields)), pretrained=False)
    return channels, grid_size


def timm_video_processor_kwargs(config) -> dict:
    """`SlotSSMVideoProcessor` settings for the pretrained weights of a timm encoder: their mean, std and
    interpolation (`timm.data.resolve_data_config`), and timm's evaluation crop: a short-side resize to
    image_size / crop_pct, then a centre crop of image_size (the frame size the model takes).

    `SlotSSMVideoProcessor(**timm_video_processor_kwargs(config))`
    """
    timm = import_timm()
    with torch.device("meta"):
        backbone, *_ = create_timm_backbone(config, pretrained=False)
    data = timm.data.resolve_data_config(model=backbone)
    size = config.image_size
    return {
        "image_mean": list(data["mean"]),
        "image_std": list(data["std"]),
        "resample": PILImageResampling[data["interpolation"].upper()],
        "size": {"shortest_edge": math.floor(size / data["crop_pct"])},
        "crop_size": {"height": size, "width": size},
    }
