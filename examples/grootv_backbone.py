"""Use a GrootV checkpoint as an image classifier and backbone: for each image, the top classes and the shapes of
the four levels' feature maps (strides 4, 8, 16, 32); with --timm, the same weights as a timm `features_only`
model, whose feature maps are compared with the transformers model's.

    python examples/grootv_backbone.py CHECKPOINT IMAGE [IMAGE ...] [--top-k 5] [--timm]

CHECKPOINT is a `GrootVForImageClassification` folder (e.g. from `slotssm-hf convert-grootv`) or a `GrootVModel`
one (no classifier: no classes are printed).
"""

import argparse
import os

import numpy as np
import torch
from PIL import Image
from transformers import AutoImageProcessor
from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

from slotssm_hf import GrootVConfig, GrootVForImageClassification, GrootVModel  # also registers grootv_* with timm

# What the timm constructor of `grootv_*` takes, as GrootVConfig fields; the others must keep their defaults.
TIMM_ARGUMENTS = {"embed_dim": "embed_dim", "depths": "depths", "mlp_ratio": "mlp_ratio", "num_channels": "in_chans"}
FIXED_IN_TIMM = ("ssm_expand", "ssm_conv_kernel", "head_expand", "layer_norm_eps")


def load_pixels(checkpoint: str, paths: list[str], image_size: int) -> torch.Tensor:
    """(batch, 3, H, W): the folder's image processor, or a resize to image_size with ImageNet mean / std."""
    images = [Image.open(path).convert("RGB") for path in paths]
    try:
        processor = AutoImageProcessor.from_pretrained(checkpoint)
    except OSError:  # no preprocessor_config.json: the published models' normalisation at the model's size
        resized = np.stack([np.asarray(image.resize((image_size, image_size), Image.BICUBIC)) for image in images])
        pixels = (resized / 255 - np.array(IMAGENET_DEFAULT_MEAN)) / np.array(IMAGENET_DEFAULT_STD)
        return torch.from_numpy(pixels.transpose(0, 3, 1, 2)).float()
    return processor(images=images, return_tensors="pt")["pixel_values"]


def compare_with_timm(checkpoint: str, config: GrootVConfig, pixels: torch.Tensor, levels: tuple[torch.Tensor, ...]):
    """Build the same network with timm (offline: the weights come from the folder's file) and compare features."""
    import timm  # only for this part: the rest runs on transformers alone

    defaults = GrootVConfig()
    differing = [name for name in FIXED_IN_TIMM if getattr(config, name) != getattr(defaults, name)]
    weights = os.path.join(checkpoint, "model.safetensors")
    if differing or not os.path.isfile(weights):
        why = f"{differing} differ from timm's fixed values" if differing else f"no single {weights}"
        print(f"timm: skipped ({why})")
        return
    num_classes = config.num_labels if "GrootVForImageClassification" in (config.architectures or []) else 0
    kwargs = {timm_name: getattr(config, name) for name, timm_name in TIMM_ARGUMENTS.items()}
    # Any grootv_* name: the sizes passed replace the variant's. The classifier must match the file to load it.
    backbone = timm.create_model(
        "grootv_tiny", pretrained=True, pretrained_cfg_overlay={"file": weights, "num_classes": num_classes},
        features_only=True, num_classes=num_classes, **kwargs,
    ).eval()  # fmt: skip
    with torch.no_grad():
        features = backbone(pixels)
    difference = max((ours - theirs).abs().max().item() for ours, theirs in zip(features, levels))
    print("timm features_only:", *(tuple(f.shape[1:]) for f in features), f"max abs difference {difference:.3g}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", help="a saved GrootV folder")
    parser.add_argument("images", nargs="+", help="image files PIL can read")
    parser.add_argument("--top-k", type=int, default=5)
    parser.add_argument("--timm", action="store_true", help="also run the same weights as a timm features_only model")
    args = parser.parse_args()

    config = GrootVConfig.from_pretrained(args.checkpoint)
    classifies = "GrootVForImageClassification" in (config.architectures or [])
    model = (GrootVForImageClassification if classifies else GrootVModel).from_pretrained(args.checkpoint).eval()
    pixels = load_pixels(args.checkpoint, args.images, config.image_size)
    with torch.no_grad():
        output = model(pixels, output_hidden_states=True)
    levels = output.hidden_states[1:]  # [0] is the stem's output; then each level's normed map, channels first

    for index, path in enumerate(args.images):
        print(path)
        if classifies:
            probabilities = output.logits[index].softmax(-1)
            scores, classes = probabilities.topk(min(args.top_k, config.num_labels))
            for score, label in zip(scores.tolist(), classes.tolist()):
                print(f"  {score:.4f}  {config.id2label[label]}")
        print("  feature maps (channels, height, width):", *(tuple(level[index].shape) for level in levels))
    if args.timm:
        compare_with_timm(args.checkpoint, config, pixels, levels)


if __name__ == "__main__":
    main()
