"""Predict the future of a video with a SlotSSM next-frame model: context frames in, an autoregressive rollout out.
Writes OUT.png: the context row, then the predicted frames (and the true ones, where the video has them).

    python examples/predict_future_frames.py CHECKPOINT VIDEO OUT [--context 10] [--steps 20]

CHECKPOINT is a `SlotSSMForVideoPrediction` folder, e.g. from `slotssm-hf train --head prediction`.
"""

import argparse

import numpy as np
import torch

from slotssm_hf import SlotSSMForVideoPrediction, SlotSSMVideoProcessor
from slotssm_hf.training.visualize import grid_image, to_uint8_frames


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint")
    parser.add_argument("video")
    parser.add_argument("out", help="output path without extension")
    parser.add_argument("--context", type=int, default=10, help="frames the model sees")
    parser.add_argument("--steps", type=int, default=20, help="frames it predicts after them")
    args = parser.parse_args()

    model = SlotSSMForVideoPrediction.from_pretrained(args.checkpoint).eval()
    try:
        processor = SlotSSMVideoProcessor.from_pretrained(args.checkpoint)
    except OSError:
        side = model.config.image_size
        processor = SlotSSMVideoProcessor(size={"shortest_edge": side}, crop_size={"height": side, "width": side})
    clip = processor(args.video, num_frames=args.context + args.steps)
    pixels, padded = clip["pixel_values_videos"], int(clip["padded_frames"][0])
    predicted = model.rollout(pixels[:, : args.context], num_steps=args.steps)

    def show(frames):
        return to_uint8_frames(frames, processor.image_mean, processor.image_std)

    width = max(args.context, args.steps)
    blank = np.full((1, *show(pixels[0, :1]).shape[1:]), 255, np.uint8)

    def padded_row(frames):
        return np.concatenate([frames, np.repeat(blank, width - len(frames), axis=0)])

    rows = [padded_row(show(pixels[0, : args.context])), padded_row(show(predicted[0]))]
    available = args.steps - padded  # true future frames the video actually has
    if available > 0:
        rows.append(padded_row(show(pixels[0, args.context : args.context + available])))
        error = torch.mean((predicted[0, :available] - pixels[0, args.context : args.context + available]) ** 2)
        print(f"mean squared error of the first {available} predicted frames: {error.item():.4f}")
    grid_image(rows).save(args.out + ".png")
    print(args.out + ".png")


if __name__ == "__main__":
    main()
