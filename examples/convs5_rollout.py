"""Predict the future of a video with a ConvS5 checkpoint: the context frames go through the parallel scan, then each
predicted frame is fed back through one recurrent step. Writes OUT.png: the context frames followed by the predicted
ones, and under the predictions the true frames where the video has them (whose mean squared error it prints).

    python examples/convs5_rollout.py CHECKPOINT VIDEO OUT [--context 10] [--steps 20]

CHECKPOINT is a `ConvS5ForVideoPrediction` folder, e.g. from `slotssm-hf convert-convs5` or
`slotssm-hf train --model convs5`.
"""

import argparse

import numpy as np
import torch

from slotssm_hf import ConvS5ForVideoPrediction, ConvS5VideoProcessor
from slotssm_hf.training.visualize import grid_image


def to_uint8(frames: torch.Tensor) -> np.ndarray:
    """Frames (T, C, H, W) in [-1, 1] -> (T, H, W, 3) uint8, grey frames repeated to RGB."""
    pixels = ((frames.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    if pixels.shape[1] == 1:
        pixels = pixels.expand(-1, 3, -1, -1)
    return pixels.permute(0, 2, 3, 1).numpy()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint")
    parser.add_argument("video", help="any video file PyAV can read (colour frames are reduced to luma)")
    parser.add_argument("out", help="output path without extension")
    parser.add_argument("--context", type=int, default=10, help="frames the model sees")
    parser.add_argument("--steps", type=int, default=20, help="frames it predicts after them")
    args = parser.parse_args()
    if args.context < 1 or args.steps < 1:
        parser.error(f"--context and --steps must be at least 1, got {args.context} and {args.steps}")

    model = ConvS5ForVideoPrediction.from_pretrained(args.checkpoint).eval()
    try:
        processor = ConvS5VideoProcessor.from_pretrained(args.checkpoint)
    except OSError:  # a checkpoint saved without its processor: the official pipeline at the model's frame size
        side = model.config.image_size
        processor = ConvS5VideoProcessor(size={"shortest_edge": side}, crop_size={"height": side, "width": side})
    # One read for the context and the frames that follow it; past the video's end the processor repeats the last
    # frame and counts the repeats in `padded_frames`.
    clip = processor(args.video, num_frames=args.context + args.steps)
    pixels, padded = clip["pixel_values_videos"], int(clip["padded_frames"][0])
    if padded > args.steps:
        total = args.context + args.steps - padded
        raise SystemExit(f"the video has {total} frames, fewer than the {args.context} of --context")
    with torch.no_grad():
        predicted = model.rollout(pixels[:, : args.context], args.steps)

    # Row 1: context then predictions; row 2: the true frames under the predictions (blank where there are none).
    context = to_uint8(pixels[0, : args.context])
    blank = np.full_like(context[:1], 255)
    rows = [np.concatenate([context, to_uint8(predicted[0])])]
    available = args.steps - padded  # true future frames the video actually has
    if available > 0:
        truth = pixels[0, args.context : args.context + available]
        rows.append(np.concatenate([np.repeat(blank, args.context, axis=0), to_uint8(truth),
                                    np.repeat(blank, args.steps - available, axis=0)]))  # fmt: skip
        # On frames mapped to [0, 1], as the official evaluation (TECO's) reports it.
        error = torch.mean(((predicted[0, :available] - truth) / 2) ** 2)
        print(f"mean squared error of the first {available} predicted frames (in [0, 1]): {error.item():.6f}")
    grid_image(rows).save(args.out + ".png")
    print(args.out + ".png")


if __name__ == "__main__":
    main()
