"""How far the default train job's decoder alone can take object discovery in a given number of steps.

The spatial-broadcast decoder of `slotssm-hf train` (same configuration, optimiser, schedule, batch and data) is
trained without the encoder and slot blocks: its slots are made by a small MLP from each object's ground truth
(colour, centre in that frame, radius, shape, depth order; slot 0 is the background, slot k + 1 is object k), so
binding is solved from the first step. The FG-ARI and mIoU of its masks on the held-out built-in videos, by step,
are therefore what the whole model could reach with this decoder in as many steps if its slots were perfect.

Usage: python benchmarks/decoder_ceiling.py [--steps 1800] [--eval-every 300] [--image-size 32] [--threads 2]
       [--config-overrides decoder_initial_size=4]
"""

import argparse
import time

import numpy as np
import torch
from torch import nn

from slotssm_hf import SlotSSMForVideoReconstruction
from slotssm_hf.evaluation.metrics import object_discovery_metrics, slot_ids
from slotssm_hf.synthetic.shapes import SHAPES
from slotssm_hf.training.data import builtin_datasets
from slotssm_hf.training.train import build_config
from slotssm_hf.training.train import parse_args as train_args

# The columns of `synthetic.bouncing_shapes` the slots are made of, and per slot: RGB, centre (y, x), radius, shape
# one-hot, depth order, background flag.
TRUTH_COLUMNS = ("object_centers", "object_colors", "object_radii", "object_shapes")
TRUTH_SIZE = 3 + 2 + 1 + len(SHAPES) + 1 + 1


def slots_from_truth(example: dict, num_slots: int, image_size: int) -> torch.Tensor:
    """(frames, num_slots, TRUTH_SIZE) ground truth of one built-in video, as fractions of the frame; the slots after
    the last object stay zero."""
    centers = torch.as_tensor(np.asarray(example["object_centers"]), dtype=torch.float32) / image_size
    num_objects, frames = centers.shape[:2]
    if num_objects + 1 > num_slots:
        raise ValueError(
            f"a video with {num_objects} objects needs {num_objects + 1} slots, the decoder has {num_slots}"
        )
    truth = torch.zeros(frames, num_slots, TRUTH_SIZE)
    truth[:, 0, -1] = 1
    for k in range(num_objects):
        slot = truth[:, k + 1]
        slot[:, :3] = torch.as_tensor(np.asarray(example["object_colors"][k]), dtype=torch.float32) / 255
        slot[:, 3:5] = centers[k]
        slot[:, 5] = float(example["object_radii"][k]) / image_size
        slot[:, 6 + int(example["object_shapes"][k])] = 1
        slot[:, 6 + len(SHAPES)] = (k + 1) / num_slots
    return truth


def load_split(data, config) -> dict:
    """The frames (through the SlotSSM video processor, as the train job prepares built-in frames), ground-truth
    slots and instance masks of a split of the train job's built-in data, each column read once."""
    from slotssm_hf.models.video_processing_slotssm import SlotSSMVideoProcessor

    images = data.with_format("numpy", columns=["pixel_values_videos", "instance_masks"], dtype=np.uint8)
    truth = data.select_columns(list(TRUTH_COLUMNS)).with_format("numpy")
    processor = SlotSSMVideoProcessor(do_resize=False, do_center_crop=False, num_frames=config.num_frames)
    return {
        "pixel_values_videos": processor(list(images["pixel_values_videos"]))["pixel_values_videos"],
        "slots": torch.stack([slots_from_truth(row, config.num_slots, config.image_size) for row in truth]),
        "instance_masks": torch.from_numpy(np.stack(images["instance_masks"])).long(),
    }


class DecoderFromTruth(nn.Module):
    """Ground-truth slots -> the train job's decoder: reconstruction and alpha masks."""

    def __init__(self, config):
        super().__init__()
        self.embed = nn.Sequential(nn.Linear(TRUTH_SIZE, config.hidden_size), nn.GELU(),
                                   nn.Linear(config.hidden_size, config.hidden_size))  # fmt: skip
        # The decoder exactly as the default job builds and initialises it.
        self.decoder = SlotSSMForVideoReconstruction(config).decoder

    def forward(self, slots):
        reconstruction, masks = self.decoder(self.embed(slots).flatten(0, 1))
        return reconstruction.unflatten(0, slots.shape[:2]), masks.unflatten(0, slots.shape[:2])


def evaluate(model, split, batch_size: int) -> dict:
    model.eval()
    ids, errors = [], []
    with torch.no_grad():
        for start in range(0, len(split["slots"]), batch_size):
            videos = slice(start, start + batch_size)
            reconstruction, masks = model(split["slots"][videos])
            ids.append(slot_ids(masks))
            errors.append((reconstruction - split["pixel_values_videos"][videos]).square().flatten(1))
    model.train()
    metrics = object_discovery_metrics(torch.cat(ids), split["instance_masks"])
    return {**metrics, "loss": torch.cat(errors).mean().item()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=1800, help="about what the default job's 10 minutes allow")
    parser.add_argument("--eval-every", type=int, default=300)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--train-videos", type=int, default=512)
    parser.add_argument("--config-overrides", default=None, help="as the train job takes them, e.g. 'num_slots=6'")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    job = train_args(["--image-size", str(args.image_size), "--train-videos", str(args.train_videos)]
                     + (["--config-overrides", args.config_overrides] if args.config_overrides else []))  # fmt: skip
    torch.manual_seed(job.seed)
    config = build_config(job)
    train, held_out = (load_split(split, config) for split in builtin_datasets(job, TRUTH_COLUMNS))
    model = DecoderFromTruth(config)
    # The Trainer's defaults as the job sets them: AdamW without weight decay, cosine schedule, clipping at 1.
    from transformers import get_cosine_schedule_with_warmup

    optimizer = torch.optim.AdamW(model.parameters(), lr=job.learning_rate, weight_decay=0.0)
    schedule = get_cosine_schedule_with_warmup(optimizer, min(50, args.steps // 10), args.steps)
    generator = torch.Generator().manual_seed(job.seed)
    print(f"decoder of `slotssm-hf train` from ground-truth slots: {args.image_size} px, batch {job.batch_size} videos "
          f"x {job.num_frames} frames, lr {job.learning_rate}, held-out videos: {len(held_out['slots'])}, "
          f"configuration overrides: {args.config_overrides or 'none'}\n")
    print("| step | FG-ARI | mIoU | loss (MSE of normalised frames) | seconds |\n|---|---|---|---|---|")
    start = time.perf_counter()
    for step in range(1, args.steps + 1):
        batch = torch.randint(len(train["slots"]), (job.batch_size,), generator=generator)
        reconstruction, _ = model(train["slots"][batch])
        loss = nn.functional.mse_loss(reconstruction, train["pixel_values_videos"][batch])
        optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        if step % args.eval_every == 0 or step == args.steps:
            metrics = evaluate(model, held_out, job.batch_size)
            print(f"| {step} | {metrics['fg_ari']:.3f} | {metrics['miou']:.3f} | {metrics['loss']:.4f} | "
                  f"{time.perf_counter() - start:.0f} |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
