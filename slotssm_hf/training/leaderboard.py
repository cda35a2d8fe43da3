"""`slotssm-hf benchmark` (also `python benchmarks/zoo_leaderboard.py`): every object-centric family of the zoo
trained with the same budget on the same data and seeds, then compared on the same held-out videos.

Each entry is a `slotssm-hf train` run (`--model`, `--model-size`) on the built-in bouncing shapes with the same
steps, batch, clip length and seed, and a recipe (`--recipes`): the shared one (the train job's learning rate,
clipping and warm-up, the same for all) and/or the family's official one (`OFFICIAL_RECIPES`). The table reads, for
every row: FG-ARI and mIoU of its slot masks against the instance masks of the held-out videos, the reconstruction's
PSNR over whole frames and over object pixels alone, in [0, 1] pixel units whatever the family's input normalisation
(all four the train job's evaluation), training frames/s (the Trainer's clips/s times the clip length, evaluation
excluded) and streaming ms/frame (the first held-out video fed one frame at a time through `stream`, which carries
the model's recurrent state; the median over its frames). Its first row is no model: the FG-ARI and mIoU of a fixed
2 x 2 grid of the frame on the same videos (`grid_reference`), the score of regions that follow no object.

Writes to the output folder, besides each entry's train-job folder: `leaderboard.md` (the table and the command
that made it), `leaderboard.json`, `leaderboard.png` (one bar chart per metric; needs matplotlib) and `slots.png`
(each entry's slot picture of the same held-out video, side by side), each under a temporary name renamed
when complete. `--quick` trains for two steps on a few short videos: a check that the pipeline and the table are
whole, not a comparison.
"""

import json
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..atomic_files import write_atomically
from ..cli import ArgumentParser, output_folder, positive_int, run_command
from .train import USER_ERRORS
from .train import main as train
from .train import parse_args as train_args


@dataclass(frozen=True)
class Entry:
    name: str
    model: str
    model_size: str

    @property
    def folder(self) -> str:
        return f"{self.model}-{self.model_size}"


@dataclass(frozen=True)
class Recipe:
    """A train job's optimisation: peak learning rate, gradient clipping, and the linear warm-up before the cosine
    decay as a fraction of the steps (None: the train job's own)."""

    learning_rate: float
    max_grad_norm: float
    warmup_fraction: float | None = None

    def train_flags(self, steps: int) -> list[str]:
        flags = ["--learning-rate", str(self.learning_rate), "--max-grad-norm", str(self.max_grad_norm)]
        return flags + ([] if self.warmup_fraction is None else ["--warmup-steps", str(round(self.warmup_fraction * steps))])


# The same for every family: the train job's defaults.
SHARED_RECIPE = Recipe(learning_rate=1e-3, max_grad_norm=1.0)
# Each family's own, from its official training configuration, with the warm-up scaled to the budget: SAVi and
# STATM-SAVi train with Adam at 2e-4, clipping at 0.05 and 2500 warm-up steps of 100k (2.5 %). SlotSSM's train.py uses
# Adam at 3e-4, clipping at 1.0 and 1000 warm-up steps of a run it sets in epochs, so of no fixed length: its warm-up
# takes the same 2.5 % of the budget.
OFFICIAL_RECIPES = {
    "slotssm": Recipe(learning_rate=3e-4, max_grad_norm=1.0, warmup_fraction=0.025),
    "savi": Recipe(learning_rate=2e-4, max_grad_norm=0.05, warmup_fraction=0.025),
    "statm": Recipe(learning_rate=2e-4, max_grad_norm=0.05, warmup_fraction=0.025),
}
RECIPES = ("shared", "official")


ENTRIES = (
    Entry("SlotSSM", "slotssm", "tiny"),
    Entry("SAVi, conditional", "savi", "tiny"),
    Entry("SAVi, unconditional", "savi", "tiny-unconditional"),
    Entry("STATM-SAVi, conditional", "statm", "tiny"),
)

# The table's first row: a fixed partition of the frame, no model (`grid_reference`).
GRID_REFERENCE = "fixed 2 x 2 grid (no model)"
# key: (column title, format); arrows say which way is better.
COLUMNS = {
    "fg_ari": ("FG-ARI ↑", "{:.3f}"),
    "miou": ("mIoU ↑", "{:.3f}"),
    "psnr": ("PSNR ↑", "{:.1f}"),
    "object_psnr": ("object PSNR ↑", "{:.1f}"),
    "train_frames_per_second": ("train frames/s ↑", "{:.0f}"),
    "stream_ms_per_frame": ("stream ms/frame ↓", "{:.1f}"),
}


def parse_args(argv=None):
    parser = ArgumentParser(prog="slotssm-hf benchmark", description=__doc__.split("\n\n")[0])
    parser.add_argument("--output-dir", type=output_folder, default="zoo-leaderboard")
    parser.add_argument("--steps", type=positive_int, default=600, help="training steps of every entry")
    parser.add_argument("--image-size", type=positive_int, default=32)
    parser.add_argument("--batch-size", type=positive_int, default=8)
    parser.add_argument("--num-frames", type=positive_int, default=8)
    parser.add_argument("--train-videos", type=positive_int, default=512)
    parser.add_argument("--eval-videos", type=positive_int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--entries", nargs="+", default=[entry.folder for entry in ENTRIES],
                        choices=[entry.folder for entry in ENTRIES], metavar="ENTRY",
                        help=f"entries to run, of: {', '.join(entry.folder for entry in ENTRIES)}")  # fmt: skip
    parser.add_argument("--recipes", nargs="+", default=["shared"], choices=RECIPES,
                        help="train every entry with the shared recipe (the train job's learning rate, clipping and "
                        "warm-up), with its family's official one (warm-up scaled to --steps), or both")  # fmt: skip
    parser.add_argument("--quick", action="store_true", help="a two-step run on a few short videos (for CI)")
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.batch_size, args.num_frames, args.train_videos, args.eval_videos = 2, 2, 3, 4, 2
    for run in runs(args):  # every entry's train job refuses what it cannot run now, not after the others
        train_args(run.train_arguments)
    return args


@dataclass(frozen=True)
class Run:
    """One row of the table: an entry trained with a recipe, in its own folder under the output folder."""

    name: str
    folder: Path
    train_arguments: list[str]


def runs(args) -> list[Run]:
    """The rows `--entries` and `--recipes` ask for, in the table's order: each entry with each recipe."""
    rows = []
    for entry in (entry for entry in ENTRIES if entry.folder in args.entries):
        for recipe_name in (name for name in RECIPES if name in args.recipes):
            official = recipe_name == "official"
            recipe = OFFICIAL_RECIPES[entry.model] if official else SHARED_RECIPE
            folder = Path(args.output_dir) / (entry.folder + ("-official" if official else ""))
            arguments = [
                "--model", entry.model, "--model-size", entry.model_size, "--steps", str(args.steps),
                "--image-size", str(args.image_size), "--batch-size", str(args.batch_size),
                "--num-frames", str(args.num_frames), "--train-videos", str(args.train_videos),
                "--eval-videos", str(args.eval_videos), "--seed", str(args.seed), "--save-steps", str(args.steps),
                "--output-dir", str(folder), *recipe.train_flags(args.steps),
            ]  # fmt: skip
            rows.append(Run(entry.name + (", official recipe" if official else ""), folder, arguments))
    return rows


def evaluate_entry(model_dir: Path, args) -> dict:
    """The entry's row: the train job's FG-ARI, mIoU, reconstruction PSNR (whole frames and object pixels, in [0, 1]
    pixel units whatever the family's input normalisation) and training speed, and (measured here) streaming
    ms/frame."""
    from transformers import AutoModelForPreTraining, AutoVideoProcessor

    from .data import builtin_datasets, held_out_collator

    results = json.loads((model_dir / "eval_results.json").read_text())
    model = AutoModelForPreTraining.from_pretrained(model_dir).eval()
    processor = AutoVideoProcessor.from_pretrained(model_dir)
    _, eval_rows = builtin_datasets(args)
    collator = held_out_collator(processor, model.config)
    return {
        **{key: results["trained"][f"eval_{key}"] for key in ("fg_ari", "miou", "psnr", "object_psnr")},
        "train_frames_per_second": results["training"]["train_samples_per_second"]
        * results["training"]["train_frames_per_clip"],
        "stream_ms_per_frame": 1000 * statistics.median(streaming_seconds(model, processor, collator, eval_rows[0])),
    }


def grid_reference(args) -> dict:
    """FG-ARI and mIoU, on the held-out videos, of a fixed 2 x 2 grid of the frame: the same four regions for every
    video and frame, no model. A partition of the frame into regions that follows no object scores this much, so it
    is the level a model's FG-ARI must clear before it says anything about objects (mIoU tells them apart)."""
    import torch

    from ..evaluation.metrics import object_discovery_metrics
    from .data import builtin_datasets

    _, eval_rows = builtin_datasets(args)
    masks = torch.as_tensor(np.stack(eval_rows.with_format("numpy")["instance_masks"]))
    height, width = masks.shape[-2:]
    rows, columns = torch.arange(height) * 2 // height, torch.arange(width) * 2 // width
    return object_discovery_metrics((rows[:, None] * 2 + columns).expand_as(masks), masks)


def streaming_seconds(model, processor, collator, row) -> list[float]:
    """Seconds per frame of one video fed to `stream` frame by frame (the first frame's boxes where needed)."""
    from ..streaming import stream

    boxes = collator([row]).get("boxes")
    frames = list(np.asarray(row["pixel_values_videos"], dtype=np.uint8))
    chunks = stream(model, frames, processor, **({} if boxes is None else {"boxes": boxes}))
    seconds, start = [], time.perf_counter()
    for _ in chunks:
        seconds.append(time.perf_counter() - start)
        start = time.perf_counter()
    return seconds


def markdown_table(rows: dict[str, dict]) -> str:
    """One line per row; a column the row does not have (the grid reference's) shows a dash."""
    header = "| model | " + " | ".join(title for title, _ in COLUMNS.values()) + " |"
    lines = [header, "|" + "---|" * (len(COLUMNS) + 1)]
    for name, row in rows.items():
        cells = (fmt.format(row[key]) if key in row else "—" for key, (_, fmt) in COLUMNS.items())
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def bar_chart(rows: dict[str, dict], path: Path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(COLUMNS), figsize=(3.2 * len(COLUMNS), 3.6))
    names = list(rows)
    for axis, (key, (title, _)) in zip(axes, COLUMNS.items()):
        heights = [rows[name].get(key, float("nan")) for name in names]
        axis.bar(range(len(names)), heights, color=[f"C{i}" for i in range(len(names))])
        axis.set_title(title)
        axis.set_xticks(range(len(names)), names, rotation=35, ha="right", fontsize=8)
    figure.tight_layout()
    write_atomically(path, lambda name: figure.savefig(name, format="png", dpi=110))
    plt.close(figure)


def side_by_side(pictures: dict[str, Path], path: Path, gap: int = 8):
    """Each entry's slot picture under its name, side by side."""
    from PIL import Image, ImageDraw

    images = {name: Image.open(picture).convert("RGB") for name, picture in pictures.items()}
    label_height = 14
    height = label_height + max(image.height for image in images.values())
    canvas = Image.new("RGB", (sum(image.width + gap for image in images.values()) - gap, height), "white")
    draw, left = ImageDraw.Draw(canvas), 0
    for name, image in images.items():
        draw.text((left + 2, 1), name, fill="black")
        canvas.paste(image, (left, label_height))
        left += image.width + gap
    write_atomically(path, lambda name: canvas.save(name, format="PNG"))


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    rows, pictures = {}, {}
    for run in runs(args):
        train(run.train_arguments)
        rows[run.name] = evaluate_entry(run.folder / "final", args)
        pictures[run.name] = run.folder / "slots.png"
    command = "slotssm-hf benchmark " + " ".join(argv)
    reference = grid_reference(args)
    table = markdown_table({GRID_REFERENCE: reference, **rows})
    budget = (f"{args.steps} steps of batch {args.batch_size} x {args.num_frames} frames (fewer while a model's "
              f"curriculum lengthens its clips) at {args.image_size} px on {args.train_videos} training videos, seed "
              f"{args.seed}; metrics on {args.eval_videos} held-out videos of {args.num_frames} frames")
    write_atomically(output_dir / "leaderboard.md",
                     lambda name: Path(name).write_text(f"{table}\n\n{budget}. Made with `{command.strip()}`.\n"))
    write_atomically(output_dir / "leaderboard.json",
                     lambda name: Path(name).write_text(json.dumps({"command": command, "rows": rows,
                                                                    "grid_reference": reference}, indent=2)))
    bar_chart({GRID_REFERENCE: reference, **rows}, output_dir / "leaderboard.png")
    side_by_side(pictures, output_dir / "slots.png")
    print(table)
    print(f"\n{budget}.\nwritten: " + ", ".join(str(output_dir / name) for name in
          ("leaderboard.md", "leaderboard.json", "leaderboard.png", "slots.png")))  # fmt: skip
    return 0


def command_line(argv=None) -> int:
    """`slotssm-hf benchmark`: `main`, with the train job's `USER_ERRORS` reported as one `error:` line (exit status
    2)."""
    return run_command(main, argv, USER_ERRORS)


if __name__ == "__main__":
    sys.exit(command_line())
