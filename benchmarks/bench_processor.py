"""Frames per second from mp4 files to `pixel_values_videos`: SlotSSMVideoProcessor against transformers'
VideoMAE video processor, on the same files and settings.

Settings for both: 16-frame clips, short-side bicubic resize to 128, centre crop 128, rescale, ImageNet mean/std,
float32 output (batch, 16, 3, 128, 128). The files are written first (H.264, yuv420p, 25 fps, x264's default
keyframe placement: at most 250 frames apart, more at scene cuts): 128 frames each at 320x240 and 640x480, and 1500
frames (a minute) at 320x240. Two kinds of content over a moving gradient: "jumping", a block that jumps to a random
place every frame (x264 codes nearly every frame as a P-frame), and "moving", discs on smooth paths (x264 codes most
frames as B-frames, as it does camera video); the table gives the share of B-frames. transformers' video processors
decode files with torchcodec only, which cannot load without system FFmpeg libraries here, so the baseline decodes
with transformers' own PyAV reader (`transformers.video_utils.load_video(..., backend="pyav")`) and then runs
`VideoMAEVideoProcessor` on the decoded frames: the pipeline a transformers user has on this machine. Clip choices:
the first 16 frames ("start"), 16 frames spread over the whole video ("uniform"), and 16 consecutive frames from a
random start ("random", the training default; both pipelines get the same starts).

Each cell is the median over `--repeats` passes over all files (one warm-up pass first), the two pipelines
interleaved; the ratio is ours / transformers in frames per second. Goal: at least 2x.

Usage: python benchmarks/bench_processor.py [--threads 2] [--files 8] [--repeats 5]
"""

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import av
import numpy as np
import torch
import transformers
from av.video.frame import PictureType
from measure import environment_line
from transformers import VideoMAEVideoProcessor
from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, PILImageResampling
from transformers.video_utils import load_video

from slotssm_hf import SlotSSMVideoProcessor
from slotssm_hf.models.video_decoding import clip_positions

NUM_FRAMES = 16
CASES = [  # width, height, frames, content, clips
    (320, 240, 128, "jumping", ["start", "uniform"]),
    (640, 480, 128, "jumping", ["start", "uniform"]),
    (320, 240, 128, "moving", ["uniform"]),
    (640, 480, 128, "moving", ["uniform"]),
    (320, 240, 1500, "jumping", ["uniform", "random"]),
]


def write_file(path: Path, width: int, height: int, frames: int, content: str, seed: int):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    phases, colours = rng.uniform(0, 2 * np.pi, (4, 2)), rng.integers(0, 256, (4, 3))
    with av.open(str(path), "w") as container:
        stream = container.add_stream("h264", rate=25)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for t in range(frames):
            image = np.stack([(x + 3 * t) % 256, (y + 2 * t) % 256, (x + y + t) % 256], axis=-1).astype(np.uint8)
            if content == "jumping":
                top, left = rng.integers(0, height // 2), rng.integers(0, width // 2)
                image[top : top + height // 3, left : left + width // 3] = rng.integers(0, 256, 3)
            else:
                for (phase_x, phase_y), colour in zip(phases, colours):
                    centre_x = width * (0.5 + 0.35 * np.cos(0.05 * t + phase_x))
                    centre_y = height * (0.5 + 0.35 * np.sin(0.07 * t + phase_y))
                    image[(x - centre_x) ** 2 + (y - centre_y) ** 2 < (height / 8) ** 2] = colour
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())


def b_frame_share(path: Path) -> float:
    with av.open(str(path)) as container:
        types = [frame.pict_type for frame in container.decode(video=0)]
    return sum(kind == PictureType.B for kind in types) / len(types)


def transformers_pipeline(processor, sampling):
    def run(paths, seed):
        # The clips ours takes for this seed: its per-video seeds are drawn in order from numpy's global generator.
        video_seeds = iter(np.random.RandomState(seed).randint(0, 2**31, size=len(paths)))

        def indices(metadata, **kwargs):
            rng = np.random.RandomState(next(video_seeds))
            return clip_positions(metadata.total_num_frames, NUM_FRAMES, 1, sampling, rng)

        clips = [load_video(str(path), backend="pyav", sample_indices_fn=indices)[0] for path in paths]
        return processor(clips, return_tensors="pt")["pixel_values"]

    return run


def ours_pipeline(processor, sampling):
    def run(paths, seed):
        np.random.seed(seed)
        return processor([str(path) for path in paths], sampling=sampling)["pixel_values_videos"]

    return run


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--files", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    transformers.logging.set_verbosity_error()

    ours = SlotSSMVideoProcessor()
    videomae = VideoMAEVideoProcessor(
        size={"shortest_edge": 128},
        crop_size={"height": 128, "width": 128},
        resample=PILImageResampling.BICUBIC,
        image_mean=IMAGENET_DEFAULT_MEAN,
        image_std=IMAGENET_DEFAULT_STD,
    )
    print(environment_line())
    print(f"{args.files} H.264 files per row; {NUM_FRAMES}-frame clips; median of {args.repeats} passes")
    header = f"{'frame size':>10}  {'frames':>6}  {'content':>7}  {'B-frames':>8}  {'clip':>7}  {'ours frames/s':>13}  {'transformers frames/s':>21}  {'ours / transformers':>19}  {'max |diff|':>10}"
    print(header)
    print("-" * len(header))
    with tempfile.TemporaryDirectory() as folder:
        for width, height, frames, content, samplings in CASES:
            paths = [Path(folder) / f"{width}x{height}-{frames}-{content}-{i}.mp4" for i in range(args.files)]
            for seed, path in enumerate(paths):
                write_file(path, width, height, frames, content, seed)
            b_frames = statistics.mean(b_frame_share(path) for path in paths)
            for sampling in samplings:
                pipelines = {"ours": ours_pipeline(ours, sampling), "hf": transformers_pipeline(videomae, sampling)}
                outputs = {name: run(paths, 0) for name, run in pipelines.items()}  # warm-up, and the same result
                difference = (outputs["ours"] - outputs["hf"]).abs().max().item()
                times = {name: [] for name in pipelines}
                for seed in range(1, args.repeats + 1):
                    for name, run in pipelines.items():
                        start = time.perf_counter()
                        run(paths, seed)
                        times[name].append(time.perf_counter() - start)
                rate = {name: args.files * NUM_FRAMES / statistics.median(t) for name, t in times.items()}
                print(
                    f"{f'{width}x{height}':>10}  {frames:>6}  {content:>7}  {b_frames:>8.0%}  {sampling:>7}  "
                    f"{rate['ours']:>13.0f}  {rate['hf']:>21.0f}  {rate['ours'] / rate['hf']:>18.2f}x  {difference:>10.3g}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
