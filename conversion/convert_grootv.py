"""Conversion of GrootV checkpoints trained with the official GrootVL code into slotssm_hf checkpoints.

The official training script saves a `torch.save` dict: `model` (the state dict), optionally `model_ema`, and
training state (`optimizer`, `lr_scheduler`, `epoch`, `max_accuracy`, `config`, ...). It is read with
`torch.load(weights_only=True)`; the run's `config` is a yacs `CfgNode` (a dict subclass), which is let through
under its name as an OrderedDict, without importing yacs or running any code of the file. The state dict's keys are
renamed by a strict ledger (every key consumed by exactly one rule, every weight of the model filled, shapes
checked). The architecture and the evaluation pipeline come from the run's yacs configuration (`--config`, the
official YAML merged over the official defaults, or else the `config` the checkpoint carries): the weights' shapes
check it, and what it sets that the converted model cannot compute is refused naming the field. Without either, the
architecture is read off the weights' shapes and the settings they cannot show are listed as guessed in the log and
the card. The result (weights, config, image processor, model card) is written atomically.
"""

import re
import sys
from collections import OrderedDict
from pathlib import Path

import torch

from ..models.configuration_grootv import VARIANTS, GrootVConfig
from ..models.image_processing_grootv import GrootVImageProcessor
from .conversion_utils import (
    ConversionError,
    RunConfiguration,
    check_fits,
    provenance_text,
    read_torch_file,
    rename_keys,
    run_converter,
    start_conversion,
)

# Official key -> GrootVForImageClassification key. The official model wraps its norms in nn.Sequential (with
# layout permutations around them), hence the `.0` / `.1` indices.
RULES = [
    (r"patch_embed\.(conv[12])\.(weight|bias)", "grootv.stem.{0}.{1}"),
    (r"patch_embed\.norm([12])\.1\.(weight|bias)", "grootv.stem.norm{0}.{1}"),
    (r"levels\.(\d+)\.blocks\.(\d+)\.norm([12])\.0\.(weight|bias)", "grootv.levels.{0}.blocks.{1}.norm{2}.{3}"),
    (
        r"levels\.(\d+)\.blocks\.(\d+)\.TreeSSM\.(in_proj\.weight|conv2d\.weight|x_proj_weight|dt_projs_weight|"
        r"dt_projs_bias|A_logs|Ds|(?:h_norm|out_norm)\.(?:weight|bias)|out_proj\.weight)",
        "grootv.levels.{0}.blocks.{1}.tree_ssm.{2}",
    ),
    (r"levels\.(\d+)\.blocks\.(\d+)\.mlp\.(fc[12]\.(?:weight|bias))", "grootv.levels.{0}.blocks.{1}.mlp.{2}"),
    (r"levels\.(\d+)\.norm\.0\.(weight|bias)", "grootv.levels.{0}.norm.{1}"),
    (r"levels\.(\d+)\.downsample\.conv\.weight", "grootv.levels.{0}.downsample.conv.weight"),
    (r"levels\.(\d+)\.downsample\.norm\.1\.(weight|bias)", "grootv.levels.{0}.downsample.norm.{1}"),
    (r"conv_head\.0\.weight", "grootv.conv_head.conv.weight"),
    (r"conv_head\.1\.0\.(weight|bias|running_mean|running_var|num_batches_tracked)", "grootv.conv_head.norm.{0}"),
    (r"head\.(weight|bias)", "classifier.{0}"),
]

IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def read_official_checkpoint(path) -> dict:
    """The dict the official code saved at `path`, read with `torch.load(weights_only=True)` (the run's yacs config
    being the only non-tensor class let through)."""
    path = Path(path)
    if not path.is_file():
        raise ConversionError(f"{path} is not a file")
    # The run's yacs CfgNode (a dict subclass with bookkeeping attributes) is read as an OrderedDict, the one type
    # the safe unpickler fills with items and attributes.
    checkpoint = read_torch_file(path, "tensors, containers and the run's config", [(OrderedDict, "yacs.config.CfgNode")])
    if not isinstance(checkpoint, dict):
        raise ConversionError(f"{path} holds a {type(checkpoint).__name__}, not the official checkpoint dict")
    return checkpoint


def official_state_dict(checkpoint: dict, ema: bool, name: str) -> dict:
    """The state dict of the official checkpoint dict: its `model_ema` with `ema`, else its `model` (or the dict
    itself, when it is a bare state dict)."""
    key = "model_ema" if ema else "model"
    if key in checkpoint:
        state = checkpoint[key]
    elif ema:
        raise ConversionError(f"{name} has no model_ema (its keys: {sorted(checkpoint)[:12]}); convert without --ema")
    elif all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
        state = checkpoint
    else:
        raise ConversionError(f"{name} has no 'model' state dict (its keys: {sorted(checkpoint)[:12]})")
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConversionError(f"{name}: {key!r} is not a state dict of tensors")
    return state


def _size(state: dict, key: str, dim: int, name: str) -> int:
    """Dimension `dim` of the 2-D (linear) or 4-D (convolution) weight `key` of an official state dict."""
    if key not in state:
        raise ConversionError(f"{name}: the official GrootV layout has {key}, this state dict does not")
    if state[key].ndim not in (2, 4) or 0 in state[key].shape:
        raise ConversionError(f"{name}: {key} must be a linear or convolution weight, got shape "
                              f"{tuple(state[key].shape)}")
    return state[key].shape[dim]


def config_from_state_dict(state: dict, name: str, **overrides) -> GrootVConfig:
    """The GrootVConfig whose model has the shapes of an official state dict: channels from the stem, blocks per
    level from the keys, MLP ratio, classes, and the drop-path rate of the published variant of that size."""
    embed_dim = _size(state, "patch_embed.conv2.weight", 0, name)
    num_channels = _size(state, "patch_embed.conv1.weight", 1, name)
    hidden = _size(state, "levels.0.blocks.0.mlp.fc1.weight", 0, name)
    blocks = {}
    # Keys of other forms are no blocks: the renaming ledger refuses them by name.
    for level, block in (m.groups() for key in state if (m := re.match(r"levels\.(\d+)\.blocks\.(\d+)\.", key))):
        blocks.setdefault(int(level), set()).add(int(block))
    depths = [len(blocks.get(i, ())) for i in range(max(blocks) + 1)] if blocks else []
    fields = {"num_channels": num_channels, "embed_dim": embed_dim, "depths": depths, "mlp_ratio": hidden / embed_dim}
    for variant in VARIANTS.values():
        if variant["embed_dim"] == embed_dim and variant["depths"] == depths:
            fields["drop_path_rate"] = variant["drop_path_rate"]
    num_labels = _size(state, "head.weight", 0, name) if "head.weight" in state else 0
    labels = imagenet_labels(num_labels)
    fields.update({"id2label": labels} if labels else {"num_labels": num_labels})
    try:
        return GrootVConfig(**{**fields, **overrides})
    except Exception as error:
        raise ConversionError(f"{name}: the weights' shapes give an invalid GrootVConfig: {error}") from error


def imagenet_labels(num_labels: int) -> dict | None:
    """id2label of the ImageNet-1k classes for a 1000-way head: timm's descriptions ("tench, Tinca tinca"), the
    names the ImageNet models of transformers carry."""
    if num_labels != 1000:
        return None
    from timm.data import ImageNetInfo

    return dict(enumerate(ImageNetInfo().label_descriptions()))


def image_processor(config: GrootVConfig, run: dict | None = None):
    """The evaluation pipeline. With the run's configuration, the official `build_transform`: resize the short side
    to DATA.IMG_SIZE and centre crop it (TEST.CROP), or resize to IMG_SIZE square, with DATA.INTERPOLATION and the
    AUG.MEAN / AUG.STD normalisation. Without: bicubic resize of the short side to image_size / 0.875 (256 for
    224), centre crop image_size, ImageNet mean / std."""
    from transformers.image_utils import PILImageResampling

    if run is None:
        return GrootVImageProcessor(
            size={"shortest_edge": config.image_size}, crop_pct=0.875, resample=PILImageResampling.BICUBIC,
            image_mean=IMAGENET_MEAN, image_std=IMAGENET_STD,
        )  # fmt: skip
    size, mean, std = run_value(run, "DATA.IMG_SIZE"), run_value(run, "AUG.MEAN"), run_value(run, "AUG.STD")
    resample = getattr(PILImageResampling, INTERPOLATIONS[run_value(run, "DATA.INTERPOLATION")])
    if run_value(run, "TEST.CROP"):
        # transformers' ConvNeXT processor resizes to size / crop_pct and crops `size` below 384 px; above, it warps.
        if size >= 384:
            raise ConversionError(f"DATA.IMG_SIZE: {size} with TEST.CROP cannot be represented (crops above 383 px)")
        return GrootVImageProcessor(size={"shortest_edge": size}, crop_pct=1.0, resample=resample,
                                    image_mean=list(mean), image_std=list(std))  # fmt: skip
    return GrootVImageProcessor(size={"height": size, "width": size}, resample=resample, image_mean=list(mean),
                                image_std=list(std))  # fmt: skip


# The official yacs defaults (classification/config.py) of the fields read; a run's YAML is merged over them.
OFFICIAL_DEFAULTS = {
    "MODEL.TYPE": "grootv", "MODEL.NUM_CLASSES": 1000, "MODEL.DROP_PATH_RATE": 0.1, "MODEL.DROP_PATH_TYPE": "linear",
    "MODEL.GROOTV.CHANNELS": 64, "MODEL.GROOTV.DEPTHS": [4, 4, 18, 4], "MODEL.GROOTV.MLP_RATIO": 4.0,
    "MODEL.GROOTV.LAYER_SCALE": None, "MODEL.GROOTV.POST_NORM": False, "DATA.IMG_SIZE": 224,
    "DATA.INTERPOLATION": "bicubic", "TEST.CROP": True, "AUG.RANDOM_RESIZED_CROP": False, "AUG.MEAN": IMAGENET_MEAN,
    "AUG.STD": IMAGENET_STD,
}  # fmt: skip
# timm's _pil_interp names as transformers' resampling members.
INTERPOLATIONS = {"bicubic": "BICUBIC", "bilinear": "BILINEAR", "lanczos": "LANCZOS", "hamming": "HAMMING",
                  "nearest": "NEAREST"}  # fmt: skip
# What the weights cannot show and, without a configuration, is assumed: (official field, the assumption).
UNSEEN = {"DATA.IMG_SIZE": 224, "MODEL.DROP_PATH_RATE": "the published variant's", "MODEL.GROOTV.POST_NORM": False,
          "TEST.CROP": "resize to image_size / 0.875, centre crop", "DATA.INTERPOLATION": "bicubic",
          "AUG.MEAN": IMAGENET_MEAN, "AUG.STD": IMAGENET_STD}  # fmt: skip


def run_value(run: dict, dotted: str, defaults: bool = True):
    """The value of a yacs field ("MODEL.GROOTV.DEPTHS") in the run's configuration; when it is missing, the official
    default (`defaults`: a YAML is merged over them) or None (a configuration that simply does not record it)."""
    value = run
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            return OFFICIAL_DEFAULTS[dotted] if defaults else None
        value = value[part]
    return value


def config_from_run(run: dict, state: dict, name: str, defaults: bool = True) -> tuple[GrootVConfig, dict]:
    """The GrootVConfig of the official run whose yacs configuration is `run` (plain nested dicts) and whose state
    dict is `state`, and what it had to guess: the configuration decides, the shapes check it, and settings the
    converted model cannot compute are refused naming the field. `defaults`: whether fields the configuration lacks
    take the official defaults (a YAML, merged over them by the official code) or are not recorded (then the shapes
    decide, and what they cannot show is guessed)."""
    missing = {field for field in OFFICIAL_DEFAULTS if run_value(run, field, defaults=False) is None}
    value = lambda field: run_value(run, field, defaults)  # noqa: E731
    fixed = [
        ("MODEL.TYPE", ("grootv",), "only the GrootV classifier converts"),
        ("MODEL.GROOTV.POST_NORM", (False,), "the official code cannot run post-norm models (GrootVBlock reads an "
                                              "attribute that does not exist)"),
        ("MODEL.GROOTV.LAYER_SCALE", (None,), "layer scale is not implemented"),
        ("MODEL.DROP_PATH_TYPE", ("linear",), "stochastic depth rises linearly over the blocks"),
        ("DATA.INTERPOLATION", tuple(INTERPOLATIONS), "the processor resamples with one of these"),
    ]  # fmt: skip
    for field, allowed, why in fixed:
        if (defaults or field not in missing) and value(field) not in allowed:
            raise ConversionError(f"{field}: {value(field)!r} cannot be converted ({why}; supported: "
                                  f"{' or '.join(map(repr, allowed))})")  # fmt: skip
    if not run_value(run, "TEST.CROP") and run_value(run, "AUG.RANDOM_RESIZED_CROP"):
        raise ConversionError("AUG.RANDOM_RESIZED_CROP: True without TEST.CROP evaluates on random crops, which a "
                              "processor cannot represent")  # fmt: skip
    shapes = config_from_state_dict(state, name)
    recorded = {
        "MODEL.GROOTV.CHANNELS": shapes.embed_dim, "MODEL.GROOTV.DEPTHS": shapes.depths,
        "MODEL.GROOTV.MLP_RATIO": shapes.mlp_ratio, "MODEL.NUM_CLASSES": shapes.num_labels,
    }  # fmt: skip
    for field, found in recorded.items():
        if field in missing and not defaults:
            continue
        given = value(field)
        if (list(given) if isinstance(given, (list, tuple)) else given) != found:
            raise ConversionError(
                f"{field} is {given!r} in the run's configuration, but {name}'s weights have {found!r}: the "
                "configuration is not the one these weights were trained with"
            )
    guessed = {} if defaults else {field: UNSEEN[field] for field in UNSEEN if field in missing}
    fields = {"image_size": run_value(run, "DATA.IMG_SIZE")}
    if "MODEL.DROP_PATH_RATE" in guessed:
        guessed["MODEL.DROP_PATH_RATE"] = shapes.drop_path_rate
    else:
        fields["drop_path_rate"] = float(run_value(run, "MODEL.DROP_PATH_RATE"))
    try:
        return GrootVConfig(**{**shapes.to_dict(), **fields, "num_labels": shapes.num_labels}), guessed
    except Exception as error:
        raise ConversionError(f"the run's configuration gives an invalid GrootVConfig: {error}") from error


def run_configuration(config, checkpoint: dict, name: str) -> tuple[dict | None, str | None, bool]:
    """The run's yacs configuration: `config` (the official YAML, which the official code merges over its defaults),
    else the `config` the checkpoint carries (the whole merged configuration); and whether missing fields take the
    defaults."""
    from .official_configs import plain, read_yaml

    if config is not None:
        return read_yaml(config), f"`{Path(config).name}` over the official defaults", True
    if isinstance(checkpoint.get("config"), dict):
        return plain(dict(checkpoint["config"]), f"{name}: config"), f"the `config` saved in `{name}`", False
    return None, None, False


WEIGHTS_LICENSE = (
    "License of the weights: unclear. The official GrootVL vision code carries no license file (its file headers say "
    "MIT, inherited from InternImage) and the authors state no license for their weights: ask them before "
    "redistributing."
)
REFERENCE = "a float64 evaluation of the official GrootV on the official state dict"


def convert_checkpoint(source, output, verify: bool = False, overwrite: bool = False, allow_non_finite: bool = False,
                       ema: bool = False, config=None, revision: str | None = None, push_to_hub=None,
                       tolerance: float = 1e-4, token=None, endpoint=None, log=print) -> Path:  # fmt: skip
    """Convert the official `.pth` at `source` (locally or in a Hub model repo) into a `GrootVForImageClassification`
    folder at `output`, written to a temporary folder beside it and renamed into place once complete (and verified
    against `references.grootv`, with `verify=True`; published, with `push_to_hub`). `config`: the official YAML
    the run was trained with (else the configuration the checkpoint carries). An existing `output` is replaced only
    with `overwrite=True`; weights holding NaN or infinite values are refused unless `allow_non_finite=True`."""
    from ..models.modeling_grootv import GrootVForImageClassification
    from .references.grootv import max_logit_difference

    conversion = start_conversion(source, output, overwrite, revision, push_to_hub, token, endpoint, log,
                                  "convert-grootv")  # fmt: skip
    source = conversion.source
    checkpoint = read_official_checkpoint(source)
    state = official_state_dict(checkpoint, ema, source.name)
    run, described, defaults = run_configuration(conversion.config_path(config), checkpoint, source.name)
    model_config, guessed = config_from_run({} if run is None else run, state, source.name, defaults)
    configuration = RunConfiguration(run, described, guessed)
    configuration.log_to(log)
    converted = rename_keys(state, RULES, "", source.name)
    check_fits(converted, GrootVForImageClassification, model_config)
    with torch.device("meta"):
        model = GrootVForImageClassification(model_config)
    model.load_state_dict(converted, strict=True, assign=True)  # assign keeps the source tensors and their dtypes
    provenance = provenance_text(
        f"{conversion.source_description(source.name)} ({'EMA weights' if ema else 'model weights'}), a checkpoint "
        "trained with the official GrootVL code", "convert-grootv", WEIGHTS_LICENSE, configuration,
    )  # fmt: skip
    verify = (REFERENCE, lambda folder: max_logit_difference(model, state)) if verify else None
    processor = image_processor(model_config, run if run is not None and "TEST.CROP" not in guessed else None)
    return conversion.write(model, processor, provenance, verify, tolerance,
                            allow_non_finite, datasets=["imagenet-1k"])  # fmt: skip


def main(argv=None) -> int:
    return run_converter(
        argv, convert_checkpoint, "convert-grootv",
        "Convert a GrootV checkpoint of the official GrootVL code (.pth) into a slotssm_hf checkpoint.",
        "the official .pth file (a dict with 'model' and optionally 'model_ema')", REFERENCE,
        "the official YAML config the run was trained with (default: the config saved in the checkpoint)",
        lambda parser: parser.add_argument(
            "--ema", action="store_true", help="convert the EMA weights ('model_ema') instead of 'model'"
        ),
    )  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
