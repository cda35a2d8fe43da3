"""Conversion of GrootV checkpoints trained with the official GrootVL code into slotssm_hf checkpoints.

The official training script saves a `torch.save` dict: `model` (the state dict), optionally `model_ema`, and
training state (`optimizer`, `lr_scheduler`, `epoch`, `max_accuracy`, `config`, ...). It is read with
`torch.load(weights_only=True)`; the run's `config` is a yacs `CfgNode` (a dict subclass), which is let through
under its name as an OrderedDict, without importing yacs or running any code of the file. The state dict's keys are
renamed by a strict ledger (every key consumed by exactly one rule, every weight of the model filled, shapes
checked), the architecture is read off the weights' shapes, and the result (weights, config, image processor, model
card) is written atomically.
"""

import sys
from collections import OrderedDict
from pathlib import Path

import torch

from ..models.configuration_grootv import VARIANTS, GrootVConfig
from .conversion_utils import (
    ConversionError,
    check_fits,
    check_output_path,
    read_torch_file,
    rename_keys,
    run_converter,
    write_converted,
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


def config_from_state_dict(state: dict, name: str, **overrides) -> GrootVConfig:
    """The GrootVConfig whose model has the shapes of an official state dict: channels from the stem, blocks per
    level from the keys, MLP ratio, classes, and the drop-path rate of the published variant of that size."""
    try:
        embed_dim, num_channels = state["patch_embed.conv2.weight"].shape[0], state["patch_embed.conv1.weight"].shape[1]
        hidden = state["levels.0.blocks.0.mlp.fc1.weight"].shape[0]
    except KeyError as error:
        raise ConversionError(
            f"{name}: the official GrootV layout has {error.args[0]}, this state dict does not"
        ) from error
    blocks = {}
    for key in state:
        parts = key.split(".")
        if parts[0] == "levels" and parts[2] == "blocks":
            blocks.setdefault(int(parts[1]), set()).add(int(parts[3]))
    depths = [len(blocks.get(i, ())) for i in range(max(blocks) + 1)] if blocks else []
    fields = {"num_channels": num_channels, "embed_dim": embed_dim, "depths": depths, "mlp_ratio": hidden / embed_dim}
    for variant in VARIANTS.values():
        if variant["embed_dim"] == embed_dim and variant["depths"] == depths:
            fields["drop_path_rate"] = variant["drop_path_rate"]
    num_labels = state["head.weight"].shape[0] if "head.weight" in state else 0
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


def image_processor(config: GrootVConfig):
    """The official evaluation pipeline: bicubic resize of the short side to image_size / 0.875 (256 for 224), centre
    crop image_size, ImageNet mean / std; transformers' ConvNeXT image processor does exactly this."""
    from transformers import ConvNextImageProcessor
    from transformers.image_utils import PILImageResampling

    return ConvNextImageProcessor(
        size={"shortest_edge": config.image_size}, crop_pct=0.875, resample=PILImageResampling.BICUBIC,
        image_mean=IMAGENET_MEAN, image_std=IMAGENET_STD,
    )  # fmt: skip


def convert_checkpoint(source, output, overwrite: bool = False, allow_non_finite: bool = False, ema: bool = False,
                       log=print) -> Path:  # fmt: skip
    """Convert the official `.pth` at `source` into a `GrootVForImageClassification` folder at `output`, written to a
    temporary folder beside it and renamed into place once complete. An existing `output` is replaced only with
    `overwrite=True`; weights holding NaN or infinite values are refused unless `allow_non_finite=True`."""
    from ..models.modeling_grootv import GrootVForImageClassification

    source, output = Path(source), Path(output)
    check_output_path(source, output, overwrite)
    state = official_state_dict(read_official_checkpoint(source), ema, source.name)
    config = config_from_state_dict(state, source.name)
    converted = rename_keys(state, RULES, "", source.name)
    check_fits(converted, GrootVForImageClassification, config)
    with torch.device("meta"):
        model = GrootVForImageClassification(config)
    model.load_state_dict(converted, strict=True, assign=True)  # assign keeps the source tensors and their dtypes
    provenance = (
        f"Converted from `{source.name}` ({'EMA weights' if ema else 'model weights'}), a checkpoint trained with "
        "the official GrootVL code, by `slotssm-hf convert-grootv`."
    )
    return write_converted(model, output, image_processor(config), provenance, allow_non_finite=allow_non_finite,
                           log=log, datasets=["imagenet-1k"])  # fmt: skip


def main(argv=None) -> int:
    return run_converter(
        argv, convert_checkpoint, "convert-grootv",
        "Convert a GrootV checkpoint of the official GrootVL code (.pth) into a slotssm_hf checkpoint.",
        "the official .pth file (a dict with 'model' and optionally 'model_ema')", None,
        lambda parser: parser.add_argument(
            "--ema", action="store_true", help="convert the EMA weights ('model_ema') instead of 'model'"
        ),
    )  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
