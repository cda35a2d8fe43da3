"""Run a conditional SAVi (or STATM-SAVi) checkpoint on any video, its slots started from first-frame boxes given on
the command line, and draw what each slot follows: the frames (the boxes outlined on the first, each in its slot's
colour), the decoded frames (or flow), the segmentation, and one row per slot. Writes OUT.png and OUT.gif.

    python examples/savi_with_boxes.py CHECKPOINT VIDEO OUT --box YMIN,XMIN,YMAX,XMAX [--box ...] [--num-frames 6]

Boxes are (ymin, xmin, ymax, xmax) as fractions of the frame after the processor's resize and centre crop. With
`prepend_background` (the official setups) slot 0 is the background and box k starts slot k + 1; slots without a
box get a zero box, as the official pipeline gives absent objects.
"""

import argparse

import numpy as np
import torch
from transformers import AutoModelForPreTraining, AutoVideoProcessor

import slotssm_hf  # noqa: F401  (registers the SAVi and STATM classes with the Auto classes)
from slotssm_hf import SAViConfig, SAViVideoProcessor
from slotssm_hf.evaluation.object_discovery import slot_masks
from slotssm_hf.training.visualize import SLOT_COLORS, save_slot_pictures, to_uint8_frames


def parse_box(text: str) -> list[float]:
    """A box from "ymin,xmin,ymax,xmax" in [0, 1] with min <= max, or an error saying what was expected."""
    try:
        box = [float(value) for value in text.split(",")]
    except ValueError:
        box = []
    if len(box) != 4:
        raise argparse.ArgumentTypeError(f"expected four comma-separated numbers ymin,xmin,ymax,xmax, got {text!r}")
    if not all(0 <= value <= 1 for value in box):
        raise argparse.ArgumentTypeError(f"box coordinates must lie in [0, 1] (fractions of the frame), got {text!r}")
    if box[0] > box[2] or box[1] > box[3]:
        raise argparse.ArgumentTypeError(f"expected ymin <= ymax and xmin <= xmax, got {text!r}")
    return box


def outline_boxes(frame: np.ndarray, boxes: list[list[float]], first_slot: int) -> np.ndarray:
    """The frame (H, W, 3) uint8 with each box outlined in the colour its slot has in the segmentation row."""
    frame, (height, width) = frame.copy(), frame.shape[:2]
    for index, (ymin, xmin, ymax, xmax) in enumerate(boxes):
        top, bottom = min(int(ymin * height), height - 1), min(int(np.ceil(ymax * height)) - 1, height - 1)
        left, right = min(int(xmin * width), width - 1), min(int(np.ceil(xmax * width)) - 1, width - 1)
        bottom, right = max(bottom, top), max(right, left)
        color = SLOT_COLORS[(first_slot + index) % len(SLOT_COLORS)].astype(np.uint8)
        frame[top, left : right + 1] = frame[bottom, left : right + 1] = color
        frame[top : bottom + 1, left] = frame[top : bottom + 1, right] = color
    return frame


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", help="a saved SAVi or STATM-SAVi folder (the reconstruction head)")
    parser.add_argument("video", help="any video file PyAV can read")
    parser.add_argument("out", help="output path without extension")
    parser.add_argument("--box", type=parse_box, action="append", default=[], metavar="YMIN,XMIN,YMAX,XMAX",
                        help="a first-frame box in [0, 1]; repeat for each object")  # fmt: skip
    parser.add_argument("--num-frames", type=int, help="frames to run (default: the processor's clip length)")
    args = parser.parse_args()

    model = AutoModelForPreTraining.from_pretrained(args.checkpoint).eval()
    config = model.config
    if not isinstance(config, SAViConfig):  # STATMConfig is a SAViConfig
        parser.error(f"{args.checkpoint} holds a {config.model_type!r} model, not SAVi or STATM-SAVi")
    # Refused here by count, before any decoding, naming what this checkpoint takes.
    if config.initializer_type != "conditional":
        if args.box:
            parser.error(f"this checkpoint starts its slots from {config.initializer_type!r} slots, not from boxes")
    elif not args.box:
        parser.error(f"this checkpoint starts its slots from first-frame boxes: give 1 to {config.num_boxes} --box")
    elif len(args.box) > config.num_boxes:
        parser.error(
            f"{len(args.box)} boxes given, but this checkpoint takes at most {config.num_boxes} "
            f"({config.num_slots} slots{', one of them the background' if config.prepend_background else ''})"
        )

    try:
        processor = AutoVideoProcessor.from_pretrained(args.checkpoint)
    except OSError:  # a checkpoint saved without its processor: SAVi's own at the model's frame size
        processor = SAViVideoProcessor.for_config(config)
    kwargs = {} if args.num_frames is None else {"num_frames": args.num_frames}
    pixels = processor(args.video, **kwargs)["pixel_values_videos"]

    boxes = None
    if config.initializer_type == "conditional":
        # (batch, num_boxes, 4): the given boxes first, zero rows for the slots that have no object.
        boxes = torch.zeros(1, config.num_boxes, 4)
        boxes[0, : len(args.box)] = torch.tensor(args.box)
    with torch.no_grad():
        output = model(pixels, boxes=boxes)

    # SAVi's frames and decoded targets are in [0, 1], without mean / std normalisation.
    frames = to_uint8_frames(pixels[0], mean=[0.0] * 3, std=[1.0] * 3)
    frames[0] = outline_boxes(frames[0], args.box, first_slot=int(config.prepend_background))
    # The reconstruction's channels follow config.targets (video, flow, depth): draw the first RGB one.
    decoded, offset = None, 0
    for name, channels in config.targets.items():
        if name in ("video", "flow") and channels == 3:
            target = output.reconstruction[0, :, offset : offset + 3]
            decoded = to_uint8_frames(target, mean=[0.0] * 3, std=[1.0] * 3)
            break
        offset += channels
    for path in save_slot_pictures(args.out, frames, slot_masks(output, frames.shape[1:3])[0], decoded):
        print(path)


if __name__ == "__main__":
    main()
