"""Where colour goes in the default train job: linear probes of each object's colour, read from the encoder tokens and
from the slots, with FG-ARI, mIoU and the object pixels' PSNR, before training and every `--eval-every` steps.

The default job's model, data, optimiser and schedule (AdamW without weight decay, cosine schedule with warm-up,
clipping at 1) in a plain loop, so that one setting at a time can change: a configuration field
(`--config-overrides decoder_slot_color=false` is the former default, without the decoder's colour path), the
learning rate, the normalisation of the frames the model sees and reconstructs (`--target-range`), or the weight of
object pixels in the loss (`--object-weight`, another objective: a measurement, not a recipe).

- token probe: the encoder tokens whose whole patch lies inside one object, regressed on that object's RGB;
- slot probe: per object and frame, the slot that claims most of the object's pixels, regressed on its RGB;
each a ridge regression fitted on one half of the held-out examples and scored (R^2, mean over R, G, B) on the
other, both ways round.

Usage: python benchmarks/colour_probes.py [--steps 600] [--eval-every 200] [--config-overrides ...]
       [--learning-rate 1e-3] [--target-range imagenet|unit] [--object-weight 1] [--train-videos 512]
       [--held-out-videos 64] [--threads 2]
"""

import argparse
import math
import time

import numpy as np
import torch
from torch import nn

from slotssm_hf import SlotSSMForVideoReconstruction
from slotssm_hf.evaluation.metrics import object_discovery_metrics, slot_ids
from slotssm_hf.training.data import builtin_datasets
from slotssm_hf.training.train import build_config
from slotssm_hf.training.train import parse_args as train_args

# (mean, std) per channel of the frames the model sees: the video processor's ImageNet normalisation, or [0, 1]
# mapped to [-1, 1].
TARGET_RANGES = {"imagenet": ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]), "unit": ([0.5] * 3, [0.5] * 3)}


def load_split(data) -> dict:
    """Frames in [0, 1] (videos, frames, 3, H, W), instance masks and each video's object colours in [0, 1]."""
    columns = data.with_format("numpy", columns=["pixel_values_videos", "instance_masks"])
    return {
        "frames": torch.from_numpy(np.stack(columns["pixel_values_videos"])).float().div(255).permute(0, 1, 4, 2, 3),
        "masks": torch.from_numpy(np.stack(columns["instance_masks"])).long(),
        "colors": [torch.as_tensor(np.asarray(c), dtype=torch.float32) / 255 for c in data["object_colors"]],
    }


def probe_r2(features: torch.Tensor, colors: torch.Tensor) -> float:
    """Held-out R^2 of a ridge regression of colours on features: fitted on one half, scored on the other, both ways."""
    order = torch.randperm(len(features), generator=torch.Generator().manual_seed(0))
    halves, scores = (order[: len(order) // 2], order[len(order) // 2 :]), []
    design = torch.cat([features.double(), torch.ones(len(features), 1, dtype=torch.float64)], dim=1)
    for fit, score in (halves, halves[::-1]):
        x = design[fit]
        weights = torch.linalg.solve(x.T @ x + 1e-2 * torch.eye(x.shape[1], dtype=x.dtype), x.T @ colors[fit].double())
        residual = ((design[score] @ weights - colors[score]) ** 2).sum(0)
        scores.append(1 - residual / ((colors[score] - colors[score].mean(0)) ** 2).sum(0))
    return torch.stack(scores).mean().item()


@torch.no_grad()
def evaluate(model, split, mean, std, batch_size: int) -> dict:
    model.eval()
    outputs = [model((split["frames"][i : i + batch_size] - mean) / std)
               for i in range(0, len(split["frames"]), batch_size)]  # fmt: skip
    model.train()
    ids = torch.cat([slot_ids(out.masks) for out in outputs])
    slots = torch.cat([out.last_hidden_state for out in outputs])
    drawn = (torch.cat([out.reconstruction for out in outputs]) * std + mean).clamp(0, 1)
    frames, masks = split["frames"], split["masks"]
    objects = (masks > 0)[:, :, None].expand_as(frames)
    metrics = object_discovery_metrics(ids, masks)
    metrics["object_psnr"] = -10 * math.log10((drawn - frames)[objects].square().mean().item())

    slot_features, slot_colors = [], []
    for video, colors in enumerate(split["colors"]):
        for k, color in enumerate(colors, start=1):
            for t in range(frames.shape[1]):
                claimed = ids[video, t][masks[video, t] == k]
                if len(claimed):
                    slot_features.append(slots[video, t, torch.bincount(claimed).argmax()])
                    slot_colors.append(color)
    metrics["slot_r2"] = probe_r2(torch.stack(slot_features), torch.stack(slot_colors))

    flat = ((frames - mean) / std).flatten(0, 1)
    tokens = torch.cat([model.slotssm.encoder(flat[i : i + 64]).tokens for i in range(0, len(flat), 64)])
    side = math.isqrt(tokens.shape[1])
    patch = frames.shape[-1] // side
    patches = masks.flatten(0, 1).unfold(1, patch, patch).unfold(2, patch, patch).reshape(len(flat), side * side, -1)
    inside = (patches == patches[..., :1]).all(-1) & (patches[..., 0] > 0)  # the whole patch on one object
    video_of = torch.arange(len(flat))[:, None].expand_as(inside) // frames.shape[1]
    objects_inside = zip(video_of[inside].tolist(), patches[..., 0][inside].tolist())
    token_colors = [split["colors"][video][k - 1] for video, k in objects_inside]
    metrics["token_r2"] = probe_r2(tokens[inside], torch.stack(token_colors))
    return metrics


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--eval-every", type=int, default=200)
    parser.add_argument("--config-overrides", default=None, help="as the train job takes them")
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--target-range", choices=list(TARGET_RANGES), default="imagenet")
    parser.add_argument("--object-weight", type=float, default=1.0, help="loss weight of object pixels (1: the MSE)")
    parser.add_argument("--train-videos", type=int, default=512)
    parser.add_argument("--held-out-videos", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    job = train_args(["--train-videos", str(args.train_videos), "--eval-videos", str(args.held_out_videos),
                      "--learning-rate", str(args.learning_rate)]
                     + (["--config-overrides", args.config_overrides] if args.config_overrides else []))  # fmt: skip
    torch.manual_seed(job.seed)
    model = SlotSSMForVideoReconstruction(build_config(job))
    train, held_out = (load_split(split) for split in builtin_datasets(job, ("object_colors",)))
    mean, std = (torch.tensor(values)[:, None, None] for values in TARGET_RANGES[args.target_range])
    from transformers import get_cosine_schedule_with_warmup

    optimizer = torch.optim.AdamW(model.parameters(), lr=job.learning_rate, weight_decay=0.0)
    schedule = get_cosine_schedule_with_warmup(optimizer, min(50, args.steps // 10), args.steps)
    generator = torch.Generator().manual_seed(job.seed)
    print(f"the default train job's model and data, batch {job.batch_size} videos x {job.num_frames} frames at "
          f"{job.image_size} px, lr {job.learning_rate}, frames normalised as {args.target_range}, object pixels "
          f"weighted {args.object_weight}, overrides: {args.config_overrides or 'none'}; "
          f"{args.held_out_videos} held-out videos\n")  # fmt: skip
    print("| step | token colour R² | slot colour R² | object PSNR (dB) | FG-ARI | mIoU | seconds |")
    print("|---|---|---|---|---|---|---|")
    start = time.perf_counter()
    for step in range(args.steps + 1):
        if step % args.eval_every == 0 or step == args.steps:
            m = evaluate(model, held_out, mean, std, job.batch_size)
            print(f"| {step} | {m['token_r2']:.2f} | {m['slot_r2']:.2f} | {m['object_psnr']:.1f} | {m['fg_ari']:.3f} | "
                  f"{m['miou']:.3f} | {time.perf_counter() - start:.0f} |", flush=True)  # fmt: skip
        if step == args.steps:
            break
        videos = torch.randint(len(train["frames"]), (job.batch_size,), generator=generator)
        frames = (train["frames"][videos] - mean) / std
        weights = 1 + (args.object_weight - 1) * (train["masks"][videos] > 0).float()[:, :, None]
        loss = ((model(frames).reconstruction - frames).square() * weights).sum() / (weights.sum() * 3)
        optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()


if __name__ == "__main__":
    main()
