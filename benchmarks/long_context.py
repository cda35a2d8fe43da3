"""Long-context check on Blinking Color Balls: a small SlotSSM, trained briefly on the CPU, recalls each ball's
earliest colour over a long clip far better than chance.

The task (`slotssm_hf.synthetic.blinking_color_balls`, rule "earliest"): balls sit at fixed positions; in every
context frame one ball flashes a random palette colour while the others are white. The answer is, for every ball,
the first colour it flashed, which may lie at the very start of the clip and be followed by other colours, so the
model has to carry it in its slots' state through the whole clip.

The model (kept in this script): the encoder and slot blocks of a `SlotSSMModel` (ViT encoder, inverted
cross-attention, Mamba2 over time, slot self-attention), with one slot per ball started from that ball's position
(its centre as sin-cos features through a small MLP) and one learned background slot, as SAVi conditions its slots
on first-frame cues; the backbone's own learned initial slots are left unused. Ball slot b therefore answers for
ball b, and a linear head reads its colour from the slot alone, frame by frame: whatever it knows about earlier
frames went through the SSM state.

Training is dense, over a curriculum of clip lengths: after every frame t each ball slot is asked for its ball's
earliest colour among frames <= t, or "not flashed yet", on the first `length` frames of each clip; `length` starts
at --start-frames and doubles whenever the mean loss of the last 50 steps falls below --advance-loss, up to
--frames (clips are causal, so a prefix is a shorter clip). Trained on 32-frame clips from the start, the loss
stayed at the class prior for over a thousand steps. Short prefixes first teach the slots to find their ball and
see its colour, then to keep the first one; longer clips then only have to stretch that memory. How long the
shortest prefixes take varies from run to run (about 1000 to 4000 steps here), so training stops on --max-minutes
rather than on a step count. Evaluation reads only the last of all --frames frames, the benchmark's
answer after the whole clip, on held-out videos.

Reported: per-ball colour accuracy before and after training, against chance (1 / num_colors) and against "the
last colour the ball flashed" (what a model with only short memory could say; it is right when the ball's last
flash repeats its first colour).

Usage: python benchmarks/long_context.py [--frames 64] [--steps 20000] [--start-frames 4] [--advance-loss 0.1]
       [--batch-size 16] [--threads 2] [--max-minutes 9]
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
NOT_FLASHED = NUM_COLORS  # the extra class: the ball has not flashed yet
POSITION_FREQUENCIES = 4  # sin-cos of pi * 2**k * coordinate, k < POSITION_FREQUENCIES


def model_config() -> SlotSSMConfig:
    return SlotSSMConfig(
        image_size=IMAGE_SIZE,
        patch_size=4,
        encoder_hidden_size=64,
        encoder_num_layers=1,
        encoder_num_attention_heads=2,
        num_slots=NUM_BALLS + 1,
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


class BallColorModel(nn.Module):
    """SlotSSM blocks with one slot per ball, started from the ball's position, and a linear colour head."""

    def __init__(self, config: SlotSSMConfig):
        super().__init__()
        dim = config.hidden_size
        self.slotssm = SlotSSMModel(config)
        self.ball_slots = nn.Sequential(nn.Linear(4 * POSITION_FREQUENCIES, dim), nn.GELU(), nn.Linear(dim, dim))
        self.background_slot = nn.Parameter(torch.randn(1, 1, dim))
        self.norm = nn.LayerNorm(dim)
        self.classifier = nn.Linear(dim, NUM_COLORS + 1)

    def forward(self, pixel_values_videos, ball_centers):
        """pixel_values_videos (batch, frames, 3, H, W); ball_centers (batch, balls, 2) in [0, 1].
        Returns logits (batch, frames, balls, NUM_COLORS + 1): each ball's earliest colour so far, or NOT_FLASHED."""
        batch, frames = pixel_values_videos.shape[:2]
        tokens = self.slotssm.encoder(pixel_values_videos.flatten(0, 1)).tokens.unflatten(0, (batch, frames))
        ball_slots = self.ball_slots(sincos_features(ball_centers))
        initial = torch.cat([ball_slots, self.background_slot.expand(batch, -1, -1)], dim=1)
        slots = initial[:, None].expand(-1, frames, -1, -1)
        for layer in self.slotssm.layers:
            slots, _ = layer(slots, tokens)
        return self.classifier(self.norm(slots[:, :, :NUM_BALLS]))


def load_split(num_videos: int, frames: int, seed: int, cache_dir: str) -> dict:
    """One split as tensors: pixels (N, T, 3, H, W) uint8; centres (N, balls, 2) in [0, 1]; earliest_so_far
    (N, T, balls), each ball's first colour after every frame or NOT_FLASHED; the answer (N, balls); and the last
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
    videos, blink_balls, blink_colors = np.arange(num_videos), dataset["blink_balls"], dataset["blink_colors"]
    earliest = np.full((num_videos, NUM_BALLS), NOT_FLASHED)
    earliest_so_far = np.empty((num_videos, frames, NUM_BALLS), dtype=np.int64)
    last_colors = np.zeros((num_videos, NUM_BALLS), dtype=np.int64)
    for t in range(frames):
        balls, colors = blink_balls[:, t], blink_colors[:, t]
        first_flash = earliest[videos, balls] == NOT_FLASHED
        earliest[videos[first_flash], balls[first_flash]] = colors[first_flash]
        earliest_so_far[:, t] = earliest
        last_colors[videos, balls] = colors
    answer = dataset["target_colors"].astype(np.int64)
    assert (earliest == answer).all(), "the earliest colours disagree with the generator's target_colors"
    return {
        "pixels": torch.from_numpy(dataset["video"].astype(np.uint8)).permute(0, 1, 4, 2, 3),
        "centers": torch.from_numpy(dataset["ball_centers"].astype(np.float32) / (IMAGE_SIZE - 1)),
        "earliest_so_far": torch.from_numpy(earliest_so_far),
        "colors": torch.from_numpy(answer),
        "last_colors": torch.from_numpy(last_colors),
    }


def normalize(pixels_uint8):
    return pixels_uint8.float() / 127.5 - 1.0


@torch.no_grad()
def accuracy(model, split: dict, batch_size: int) -> float:
    """Per-ball accuracy of the colour predicted after the last frame (every ball has flashed by then)."""
    model.eval()
    correct = 0
    for start in range(0, len(split["colors"]), batch_size):
        stop = start + batch_size
        logits = model(normalize(split["pixels"][start:stop]), split["centers"][start:stop])[:, -1, :, :NUM_COLORS]
        correct += (logits.argmax(-1) == split["colors"][start:stop]).sum().item()
    model.train()
    return correct / split["colors"].numel()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=64, help="context frames per clip (default 64)")
    parser.add_argument(
        "--steps", type=int, default=20000, help="at most this many steps (--max-minutes usually ends it first)"
    )
    parser.add_argument("--start-frames", type=int, default=4, help="clip length the curriculum starts from")
    parser.add_argument(
        "--advance-loss", type=float, default=0.1, help="double the clip length when the mean loss drops below this"
    )
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
    model = BallColorModel(model_config()).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.learning_rate)
    last_flash = (test["last_colors"] == test["colors"]).float().mean().item()
    print(
        f"Blinking Color Balls, rule 'earliest': {NUM_BALLS} balls, {NUM_COLORS} colours, {args.frames} context "
        f"frames of {IMAGE_SIZE} px; {args.train_videos} training / {args.test_videos} held-out videos; "
        f"{sum(p.numel() for p in model.parameters()) / 1e3:.0f}k parameters, {torch.get_num_threads()} threads"
    )
    before = accuracy(model, test, args.batch_size)
    print(f"held-out per-ball colour accuracy before training: {before:.3f}", flush=True)

    generator = torch.Generator().manual_seed(args.seed)
    start, step, losses, length = time.perf_counter(), 0, [], min(args.start_frames, args.frames)
    while step < args.steps and time.perf_counter() - start < args.max_minutes * 60:
        batch = torch.randint(len(train["colors"]), (args.batch_size,), generator=generator)
        logits = model(normalize(train["pixels"][batch, :length]), train["centers"][batch])
        loss = F.cross_entropy(logits.flatten(0, 2), train["earliest_so_far"][batch, :length].flatten())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        step += 1
        losses.append(loss.item())
        if step % 50 == 0:
            mean_loss, losses = np.mean(losses), []
            seconds = time.perf_counter() - start
            print(f"step {step}: {length} frames, loss {mean_loss:.3f}, {seconds:.0f} s", flush=True)
            if mean_loss < args.advance_loss and length < args.frames:
                length = min(2 * length, args.frames)
    minutes = (time.perf_counter() - start) / 60
    final = accuracy(model, test, args.batch_size)
    chance = 1 / NUM_COLORS
    print(f"trained {step} steps in {minutes:.1f} min" + ("" if step == args.steps else " (stopped by --max-minutes)"))
    print(
        f"held-out per-ball colour accuracy after {args.frames} frames: {final:.3f}; chance {chance:.3f} "
        f"({final / chance:.1f}x chance); 'last colour the ball flashed' {last_flash:.3f}"
    )


if __name__ == "__main__":
    main()
