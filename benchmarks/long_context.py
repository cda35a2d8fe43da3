"""Long-context check on Blinking Color Balls: a small SlotSSM, trained briefly on the CPU, remembers each ball's
earliest colour over a long clip far better than chance.

The task (`slotssm_hf.synthetic.blinking_color_balls`, rule "earliest"): balls sit at fixed positions; in every
context frame one ball flashes a random palette colour while the others are grey. The answer is, for every ball,
the first colour it flashed, which may lie at the very beginning of the clip and be overwritten by later flashes,
so the model has to keep it in its slots' state over the whole clip.

The model: a `SlotSSMModel` backbone (ViT encoder, whose position table lets slots know where their ball is;
inverted cross-attention; Mamba2 over time) and a per-ball head kept in this script: the ball's centre (row,
column, scaled to [0, 1], as sin-cos features) becomes a query that attends over one frame's slots, and an MLP
reads the attended slot out as colour logits. The head reads each frame's slots on their own, so whatever it knows
about earlier frames went through the SSM state.

Training is dense, as a curriculum: at every frame t the head is asked for each ball's earliest colour among
frames <= t (balls not flashed yet are left out). Early frames are easy (the ball just flashed) and later ones need
ever longer memory; answering only at the last frame, the loss stayed at chance for hundreds of steps, as no
short-memory answer is much better than chance to start from. Evaluation uses the last frame only: the
benchmark's answer after the whole clip.

Reported: per-ball colour accuracy on held-out videos before and after training, against chance
(1 / num_colors) and against "the last colour the ball flashed" (what a model with only short memory could say;
it is right whenever the ball's last flash repeats its first colour).

Usage: python benchmarks/long_context.py [--frames 32] [--steps 600] [--batch-size 16] [--threads 2]
       [--max-minutes 9]
"""

import argparse
import math
import tempfile
import time

import numpy as np
import torch
import torch.nn.functional as F
import transformers
from torch import nn

from slotssm_hf import SlotSSMConfig, SlotSSMModel
from slotssm_hf.synthetic import blinking_color_balls

IMAGE_SIZE = 32
NUM_BALLS = 4
NUM_COLORS = 6
POSITION_FREQUENCIES = 4  # sin-cos of pi * 2**k * coordinate, k < POSITION_FREQUENCIES
IGNORE = -100  # cross-entropy's ignore_index: a ball that has not flashed yet has no answer


def model_config() -> SlotSSMConfig:
    return SlotSSMConfig(
        image_size=IMAGE_SIZE,
        patch_size=4,
        encoder_hidden_size=64,
        encoder_num_layers=1,
        encoder_num_attention_heads=2,
        num_slots=NUM_BALLS + 1,  # one per ball and one for the background, which the inverted attention must give away
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        mamba_d_state=32,
        mamba_headdim=32,
    )


def sincos_features(points):
    """points (..., 2) in [0, 1] -> (..., 4 * POSITION_FREQUENCIES): sin and cos of each coordinate at octave
    frequencies, so a small MLP can tell nearby positions apart."""
    angles = points[..., None] * (math.pi * 2.0 ** torch.arange(POSITION_FREQUENCIES))
    return torch.cat([angles.sin(), angles.cos()], dim=-1).flatten(-2)


class BallColorClassifier(nn.Module):
    """SlotSSM backbone and a per-ball head: each ball's centre queries the last frame's slots for its colour."""

    def __init__(self, config: SlotSSMConfig, num_colors: int):
        super().__init__()
        dim = config.hidden_size
        self.slotssm = SlotSSMModel(config)
        self.slot_norm = nn.LayerNorm(dim)
        self.slot_keys = nn.Linear(dim, dim)
        self.ball_queries = nn.Sequential(nn.Linear(4 * POSITION_FREQUENCIES, dim), nn.GELU(), nn.Linear(dim, dim))
        self.classifier = nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, num_colors))

    def forward(self, pixel_values_videos, ball_centers):
        """pixel_values_videos (batch, frames, 3, H, W); ball_centers (batch, balls, 2) in [0, 1].
        Returns colour logits after every frame (batch, frames, balls, num_colors)."""
        slots = self.slot_norm(self.slotssm(pixel_values_videos).last_hidden_state)  # (batch, frames, slots, dim)
        queries = self.ball_queries(sincos_features(ball_centers))[:, None]  # (batch, 1, balls, dim)
        scores = queries @ self.slot_keys(slots).transpose(-1, -2) / math.sqrt(slots.shape[-1])
        return self.classifier(scores.softmax(dim=-1) @ slots)


def load_split(num_videos: int, frames: int, seed: int, cache_dir: str) -> dict:
    """Tensors of one split: pixels (N, T, 3, H, W) uint8, centres (N, balls, 2) in [0, 1], the answer (N, balls),
    the earliest colour so far after every frame (N, T, balls; IGNORE before a ball's first flash), and the last
    colour each ball flashed (N, balls)."""
    dataset = blinking_color_balls(
        num_videos=num_videos,
        num_context_frames=frames,
        num_balls=NUM_BALLS,
        image_size=IMAGE_SIZE,
        rule="earliest",
        num_colors=NUM_COLORS,
        seed=seed,
        cache_dir=cache_dir,
    ).with_format("numpy")[:]
    video = torch.from_numpy(dataset["video"].astype(np.uint8)).permute(0, 1, 4, 2, 3)
    videos, blink_balls, blink_colors = np.arange(num_videos), dataset["blink_balls"], dataset["blink_colors"]
    earliest = np.full((num_videos, NUM_BALLS), IGNORE)
    earliest_so_far = np.empty((num_videos, frames, NUM_BALLS), dtype=np.int64)
    last_colors = np.zeros((num_videos, NUM_BALLS), dtype=np.int64)
    for t in range(frames):
        balls, colors = blink_balls[:, t], blink_colors[:, t]
        first_flash = earliest[videos, balls] == IGNORE
        earliest[videos[first_flash], balls[first_flash]] = colors[first_flash]
        earliest_so_far[:, t] = earliest
        last_colors[videos, balls] = colors
    answer = dataset["target_colors"].astype(np.int64)
    assert (earliest == answer).all(), "the earliest colours disagree with the generator's target_colors"
    return {
        "pixels": video,
        "centers": torch.from_numpy(dataset["ball_centers"].astype(np.float32) / (IMAGE_SIZE - 1)),
        "colors": torch.from_numpy(answer),
        "earliest_so_far": torch.from_numpy(earliest_so_far),
        "last_colors": torch.from_numpy(last_colors),
    }


def to_model_input(pixels_uint8):
    return pixels_uint8.float() / 127.5 - 1.0


@torch.no_grad()
def accuracy(model, split: dict, batch_size: int) -> float:
    model.eval()
    correct = 0
    for start in range(0, len(split["colors"]), batch_size):
        stop = start + batch_size
        logits = model(to_model_input(split["pixels"][start:stop]), split["centers"][start:stop])[:, -1]
        correct += (logits.argmax(-1) == split["colors"][start:stop]).sum().item()
    model.train()
    return correct / split["colors"].numel()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=32, help="context frames per clip (default 32)")
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--train-videos", type=int, default=4096)
    parser.add_argument("--test-videos", type=int, default=512)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max-minutes", type=float, default=9.0, help="stop training early after this long")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    transformers.logging.set_verbosity_error()
    torch.manual_seed(args.seed)

    with tempfile.TemporaryDirectory() as cache_dir:
        train = load_split(args.train_videos, args.frames, seed=args.seed, cache_dir=cache_dir)
        test = load_split(args.test_videos, args.frames, seed=args.seed + 10_000, cache_dir=cache_dir)
    model = BallColorClassifier(model_config(), NUM_COLORS)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.learning_rate, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, args.learning_rate, total_steps=args.steps, pct_start=0.1)
    chance = 1 / NUM_COLORS
    last_flash = (test["last_colors"] == test["colors"]).float().mean().item()
    print(
        f"Blinking Color Balls, rule 'earliest': {NUM_BALLS} balls, {NUM_COLORS} colours, {args.frames} context "
        f"frames of {IMAGE_SIZE} px; {args.train_videos} training / {args.test_videos} held-out videos; "
        f"{sum(p.numel() for p in model.parameters()) / 1e3:.0f}k parameters, {torch.get_num_threads()} threads"
    )
    print(f"held-out per-ball accuracy before training: {accuracy(model, test, args.batch_size):.3f}", flush=True)

    generator = torch.Generator().manual_seed(args.seed)
    start, step, running = time.perf_counter(), 0, []
    while step < args.steps and time.perf_counter() - start < args.max_minutes * 60:
        batch = torch.randint(len(train["colors"]), (args.batch_size,), generator=generator)
        logits = model(to_model_input(train["pixels"][batch]), train["centers"][batch])
        loss = F.cross_entropy(logits.flatten(0, 2), train["earliest_so_far"][batch].flatten(), ignore_index=IGNORE)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        step += 1
        running.append(loss.item())
        if step % 50 == 0:
            print(
                f"step {step}: loss {np.mean(running):.3f}, {time.perf_counter() - start:.0f} s", flush=True
            )
            running = []
    minutes = (time.perf_counter() - start) / 60
    final = accuracy(model, test, args.batch_size)
    print(f"trained {step} steps in {minutes:.1f} min" + ("" if step == args.steps else " (stopped by --max-minutes)"))
    print(
        f"held-out per-ball colour accuracy: {final:.3f}; chance {chance:.3f} ({final / chance:.1f}x chance); "
        f"'last colour the ball flashed' {last_flash:.3f}"
    )


if __name__ == "__main__":
    main()
