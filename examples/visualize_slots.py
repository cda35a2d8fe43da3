"""Draw what the slots of a SlotSSM checkpoint do on any video file: the frames, the decoded frames and one row per
slot showing the part of each frame that slot claims (alpha masks of a spatial-broadcast decoder, or the
cross-attention of the last slot block otherwise). Writes OUT.png and OUT.gif.

    python examples/visualize_slots.py CHECKPOINT VIDEO OUT [--num-frames 16]
"""

import argparse

import torch
from transformers import AutoModel

import slotssm_hf  # noqa: F401  (registers the SlotSSM classes)
from slotssm_hf import SlotSSMForVideoReconstruction, SlotSSMVideoProcessor
from slotssm_hf.evaluation.object_discovery import slot_masks
from slotssm_hf.training.visualize import save_slot_pictures, to_uint8_frames


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", help="a saved SlotSSM folder (a reconstruction checkpoint draws reconstructions)")
    parser.add_argument("video", help="any video file PyAV can read")
    parser.add_argument("out", help="output path without extension")
    parser.add_argument("--num-frames", type=int, default=16)
    args = parser.parse_args()

    config = slotssm_hf.SlotSSMConfig.from_pretrained(args.checkpoint)
    decodes = config.architectures and config.architectures[0] == "SlotSSMForVideoReconstruction"
    model = (SlotSSMForVideoReconstruction if decodes else AutoModel).from_pretrained(args.checkpoint).eval()
    try:
        processor = SlotSSMVideoProcessor.from_pretrained(args.checkpoint)
    except OSError:  # a checkpoint saved without its processor: the default one at the model's frame size
        side = config.image_size
        processor = SlotSSMVideoProcessor(size={"shortest_edge": side}, crop_size={"height": side, "width": side})
    pixels = processor(args.video, num_frames=args.num_frames)["pixel_values_videos"]
    with torch.no_grad():
        output = model(pixels, output_attentions=True)
    frames = to_uint8_frames(pixels[0], processor.image_mean, processor.image_std)
    decoded = getattr(output, "reconstruction", None)
    decoded = None if decoded is None else to_uint8_frames(decoded[0], processor.image_mean, processor.image_std)
    for path in save_slot_pictures(args.out, frames, slot_masks(output, frames.shape[1:3])[0], decoded):
        print(path)


if __name__ == "__main__":
    main()
