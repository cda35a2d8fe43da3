"""ConvS5's efficiency claims (Smith et al., NeurIPS 2023: "trains 3x faster than ConvLSTM, generates 400x faster
than Transformers"), measured side by side on the CPU.

Training: one training step (forward and backward, no optimizer update) of the temporal stack on latent clips
(batch, frames, width, 16, 16), the part in which the models differ (the official Moving-MNIST models share the
encoder and decoder): `--layers` ConvS5 layers (parallel scan) against as many ConvLSTM layers (3x3 gate
convolutions over [input, hidden], hidden size = width, as the official ConvLSTM baseline config; the same
post-norm residual wrapper), which must step through time.

Generation: time per generated frame after a `--context`-frame context, whole models at 64 px with the same TECO
encoder and decoder: ConvS5 (`ConvS5ForVideoPrediction.rollout`: one recurrent step per frame) against the
official noVQ Transformer scheme (each frame one token: a 16x16-stride convolution of the latent grid; a causal
Transformer over the frame tokens; a transposed convolution back to the grid). As in the official sampler, the
Transformer re-runs its whole window for every new frame (no key/value cache), so its cost per frame grows with
the number of frames so far; it is timed at two context lengths.

The scan: forward and backward of the state recurrence alone over the training clips (the width's P = U complex
state channels on the 16x16 grid), `convs5_scan` against the same recurrence stepped in a Python loop
(`convs5_step`), the choice the "no loop over time in training" rule stands on.

Memory allocation: ConvS5 processes whole clips at once, so its activations cross glibc's mmap threshold (32 MB)
at lengths where the ConvLSTM's per-step tensors do not, and glibc would fault in and zero fresh pages for them at
every step. The script first makes glibc keep freed memory for reuse (`measure.keep_freed_memory`, as a caching
allocator would; shown on the environment line); `--default-malloc` keeps glibc's defaults.

Usage: python benchmarks/bench_convs5.py [--threads 2] [--width 64] [--layers 4] [--frames 16 64] [--context 100 300]
"""

import argparse
import math
import time

import torch
import transformers
from measure import environment_line, keep_freed_memory
from torch import nn

from slotssm_hf import ConvS5Config, ConvS5ForVideoPrediction
from slotssm_hf.models.convs5_scan import convs5_scan, convs5_step, discretize_zoh
from slotssm_hf.models.modeling_convs5 import ConvS5Decoder, ConvS5Encoder, ConvS5Layer


class ConvLSTMLayer(nn.Module):
    """A ConvLSTM layer in ConvS5's wrapper: gates i, f, o, g from one 3x3 convolution of [u_t, h_{t-1}],
    c_t = f c_{t-1} + i g, h_t = o tanh(c_t); output LayerNorm(u + h) over channels."""

    def __init__(self, width: int):
        super().__init__()
        self.gates = nn.Conv2d(2 * width, 4 * width, 3, padding=1)
        self.norm = nn.LayerNorm(width)

    def forward(self, hidden_states):
        batch, frames, width, height, grid = hidden_states.shape
        h = c = hidden_states.new_zeros(batch, width, height, grid)
        outputs = []
        for u in hidden_states.unbind(1):  # inherent to the model: each step needs the previous hidden state
            i, f, o, g = self.gates(torch.cat([u, h], dim=1)).chunk(4, dim=1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
            outputs.append(h)
        return self.norm((hidden_states + torch.stack(outputs, 1)).movedim(2, -1)).movedim(-1, 2)


class FrameTransformerPredictor(nn.Module):
    """The official noVQ Transformer scheme on ConvS5's encoder and decoder: one token per frame, a causal
    Transformer over the frames, the token unprojected to the latent grid and decoded."""

    def __init__(self, config: ConvS5Config, embed_dim: int, num_layers: int, num_heads: int):
        super().__init__()
        latent, width = config.latent_size, config.encoder_depths[-1]
        self.encoder = ConvS5Encoder(config)
        self.proj = nn.Conv2d(width, embed_dim, latent, stride=latent)
        layer = nn.TransformerEncoderLayer(embed_dim, num_heads, 4 * embed_dim, dropout=0.0, batch_first=True,
                                           norm_first=True, activation="gelu")  # fmt: skip
        self.transformer = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
        self.unproj = nn.ConvTranspose2d(embed_dim, config.hidden_size, latent, stride=latent, bias=False)
        self.decoder = ConvS5Decoder(config)

    def positions(self, frames: int, dim: int):
        position = torch.arange(frames, dtype=torch.float32)[:, None]
        frequencies = torch.exp(-math.log(10000.0) * torch.arange(0, dim, 2, dtype=torch.float32) / dim)
        return torch.cat([torch.sin(position * frequencies), torch.cos(position * frequencies)], dim=-1)

    def next_frame(self, tokens):
        """tokens (batch, frames, embed_dim) of the frames so far -> the predicted next frame."""
        frames = tokens.shape[1]
        mask = nn.Transformer.generate_square_subsequent_mask(frames)
        hidden = self.transformer(tokens + self.positions(frames, tokens.shape[-1]), mask=mask, is_causal=True)
        return torch.tanh(self.decoder(self.unproj(hidden[:, -1, :, None, None])))

    def encode(self, frames):
        """frames (batch, frames, C, H, W) -> tokens (batch, frames, embed_dim)."""
        return self.proj(self.encoder(frames.flatten(0, 1))).flatten(1).unflatten(0, frames.shape[:2])

    def generate_from(self, tokens, num_steps: int):
        """Generate `num_steps` frames after the frames whose tokens are given, as the official sampler: every
        new frame runs the Transformer over all frames so far, and is encoded to the next token."""
        for _ in range(num_steps):
            frame = self.next_frame(tokens)[:, None]
            tokens = torch.cat([tokens, self.encode(frame)], dim=1)
        return frame


def convs5_generate_from(model, cache, frame, num_steps: int):
    """Generate `num_steps` frames after `frame`, continuing the recurrent state in `cache` (as `rollout`)."""
    for _ in range(num_steps):
        outputs = model(frame, cache=cache, use_cache=True)
        frame = outputs.predictions
    return frame


def fastest_time(step, repeats: int) -> float:
    """The fastest of `repeats` runs after a warm-up: other processes on the machine only ever slow a run down."""
    step()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return min(times)


def parameters(module) -> int:
    return sum(p.numel() for p in module.parameters())


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--width", type=int, default=64, help="width U = ConvS5 state size = ConvLSTM hidden size")
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--frames", type=int, nargs="+", default=[16, 64], help="training clip lengths")
    parser.add_argument("--context", type=int, nargs="+", default=[100, 300], help="frames before generation")
    parser.add_argument("--generate", type=int, default=4, help="frames generated per timing")
    parser.add_argument("--embed-dim", type=int, default=1024, help="Transformer width (the official 1024)")
    parser.add_argument("--transformer-layers", type=int, default=8, help="Transformer depth (the official 8)")
    parser.add_argument("--default-malloc", action="store_true", help="keep glibc's allocation defaults")
    args = parser.parse_args()
    if not args.default_malloc:
        keep_freed_memory()
    torch.set_num_threads(args.threads)
    transformers.logging.set_verbosity_error()
    torch.manual_seed(0)

    width = args.width
    config = ConvS5Config(hidden_size=width, ssm_size=2 * width, num_hidden_layers=args.layers,
                          encoder_depths=[32, 64, 128], decoder_depths=[32, 64, 128])  # fmt: skip
    model = ConvS5ForVideoPrediction(config)
    convs5_stack = model.convs5.layers  # HiPPO-initialised
    lstm_stack = nn.ModuleList(ConvLSTMLayer(width) for _ in range(args.layers))

    def train_step(stack, clip):
        def step():
            stack.zero_grad(set_to_none=True)
            hidden = clip
            for layer in stack:
                hidden = layer(hidden)[0] if isinstance(layer, ConvS5Layer) else layer(hidden)
            hidden.square().mean().backward()

        return step

    ssm = model.convs5.layers[0].ssm
    with torch.no_grad():
        dt_lambda, _ = discretize_zoh(ssm.Lambda_re, ssm.Lambda_im, ssm.log_step, ssm.B_real, ssm.B_imag, True)

    def scan_step(scan, bu):
        def step():
            bu.grad = None
            scan(bu).square().mean().backward()

        return step

    def stepped(bu):
        states, state = [], None
        for t in range(bu.shape[1]):
            state = convs5_step(bu[:, t], dt_lambda, state)
            states.append(state)
        return torch.stack(states, dim=1)

    rows = []
    for frames in args.frames:
        bu = torch.randn(args.batch, frames, 2, width, 256, requires_grad=True)
        loop = fastest_time(scan_step(stepped, bu), args.repeats)
        scan = fastest_time(scan_step(lambda b: convs5_scan(b, dt_lambda), bu), args.repeats)
        rows.append((f"state scan fwd+bwd, {args.batch} x {frames} frames", "step loop", loop, scan))
    for frames in args.frames:
        clip = torch.randn(args.batch, frames, width, 16, 16)
        convs5 = fastest_time(train_step(convs5_stack, clip), args.repeats)
        lstm = fastest_time(train_step(lstm_stack, clip), args.repeats)
        rows.append((f"train step, {args.batch} x {frames} frames", "ConvLSTM", lstm, convs5))

    model.eval()
    transformer = FrameTransformerPredictor(config, args.embed_dim, args.transformer_layers, num_heads=16).eval()
    for context in args.context:
        # The context is consumed before the clock starts (ConvS5: the parallel scan; Transformer: the encodings).
        frames = torch.rand(1, context, 1, 64, 64) * 2 - 1
        with torch.no_grad():
            outputs = model(frames, use_cache=True)
            last, cache = outputs.predictions[:, -1:], outputs.cache
            tokens = transformer.encode(frames)
            convs5 = fastest_time(lambda: convs5_generate_from(model, cache, last, args.generate), args.repeats)
            baseline = fastest_time(lambda: transformer.generate_from(tokens, args.generate), args.repeats)
        rows.append((f"generation per frame, after {context} frames", "Transformer", baseline / args.generate,
                     convs5 / args.generate))  # fmt: skip

    print(environment_line())
    print(
        f"float32; fastest of {args.repeats} after 1 warm-up. Temporal stacks: {args.layers} layers of width {width} "
        f"(ConvS5 {parameters(convs5_stack):,} parameters, ConvLSTM {parameters(lstm_stack):,}); whole models for "
        f"generation (ConvS5 {parameters(model):,}, Transformer {parameters(transformer):,} with "
        f"{args.transformer_layers} layers of width {args.embed_dim})"
    )
    print(f"| {'measurement':<38} | {'baseline':<11} | {'baseline s':>10} | {'ConvS5 s':>9} | {'speed-up':>8} |")
    print(f"|{'-' * 40}|{'-' * 13}|{'-' * 12}|{'-' * 11}|{'-' * 10}|")
    for what, name, baseline, convs5 in rows:
        print(f"| {what:<38} | {name:<11} | {baseline:>10.4f} | {convs5:>9.4f} | {baseline / convs5:>7.1f}x |")


if __name__ == "__main__":
    main()
