"""`slotssm-hf train --model convs5`: train a ConvS5 video prediction model with the transformers Trainer.

With no further arguments it trains a small ConvS5 on the built-in Moving-MNIST-style videos (`moving_mnist`) on
the CPU, with the official loss and teacher forcing, and evaluates on held-out clips before and after training:
the teacher-forced loss, and MSE / PSNR / SSIM of rollouts (the first `--context-frames` frames of each clip
condition the model, the rest are predicted one frame at a time from its own predictions). It writes the
Trainer's checkpoints, the final model with its video processor and `eval_results.json` to the output folder.

`build_run` gives the pieces (config, model, processor, collator, data) for other drivers.
"""

import json
import sys
from pathlib import Path
from typing import NamedTuple

import torch

from ..cli import ArgumentParser, output_folder, positive_float, positive_int, run_command
from ..registry import FAMILIES
from .train import USER_ERRORS, variant_config

DEFAULT_OUTPUT = "convs5-train"

class ConvS5Run(NamedTuple):
    config: object
    model: object
    processor: object
    collator: object
    train_data: object
    eval_data: object


def build_config(args):
    fields = {"image_size": args.image_size, "num_frames": args.num_frames, "num_context_frames": args.context_frames}
    return variant_config("convs5", args.model_size, fields, "--image-size / --num-frames / --context-frames")


def build_run(args) -> ConvS5Run:
    """Config, model, processor, collator and the built-in training / held-out data (another seed) for `args`
    (as `parse_args` makes them)."""
    from .data import VideoCollator
    from ..models.modeling_convs5 import ConvS5ForVideoPrediction
    from ..synthetic import moving_mnist
    from ..models.video_processing_convs5 import ConvS5VideoProcessor

    config = build_config(args)

    def load(num_videos, seed):
        data = moving_mnist(num_videos=num_videos, num_frames=args.num_frames, image_size=args.image_size, seed=seed)
        # Rows as arrays, not the nested lists of datasets' default format (slow to build for every video).
        return data.select_columns(["video"]).rename_column("video", "pixel_values_videos").with_format("numpy")

    # Built-in frames already have the model's size: no resize, no crop.
    processor = ConvS5VideoProcessor(
        size={"shortest_edge": args.image_size}, crop_size={"height": args.image_size, "width": args.image_size},
        do_resize=False, do_center_crop=False, num_frames=args.num_frames,
    )  # fmt: skip
    return ConvS5Run(
        config=config,
        model=ConvS5ForVideoPrediction(config),
        processor=processor,
        collator=VideoCollator(processor),
        train_data=load(args.train_videos, args.seed),
        eval_data=load(args.eval_videos, args.seed + 10_000),
    )


@torch.no_grad()
def evaluate(model, data, collator, num_context_frames: int, batch_size: int = 8) -> dict:
    """The teacher-forced loss over the clips of `data` ("loss"), and MSE, PSNR and SSIM of rollouts
    ("rollout_mse", ...): each clip's first `num_context_frames` frames condition the model, the remaining ones are
    predicted from its own predictions (the official evaluation's scheme). Averages over clips."""
    from ..evaluation.metrics import video_prediction_metrics

    model.eval()
    parameter = next(model.parameters())
    totals, count = {}, 0
    for start in range(0, len(data), batch_size):
        rows = [data[i] for i in range(start, min(start + batch_size, len(data)))]
        frames = collator(rows)["pixel_values_videos"].to(parameter.device, parameter.dtype)
        if frames.shape[1] <= num_context_frames:
            raise ValueError(
                f"rollout evaluation needs clips longer than the {num_context_frames} context frames, got "
                f"{frames.shape[1]} frames"
            )
        predicted = model.rollout(frames[:, :num_context_frames], frames.shape[1] - num_context_frames)
        rollout = video_prediction_metrics(predicted, frames[:, num_context_frames:])
        metrics = {f"rollout_{name}": value for name, value in rollout.items()}
        metrics["loss"] = model(frames).loss.item()
        for name, value in metrics.items():
            totals[name] = totals.get(name, 0.0) + value * len(rows)
        count += len(rows)
    return {name: value / count for name, value in totals.items()}


def parse_args(argv=None):
    parser = ArgumentParser(prog="slotssm-hf train --model convs5", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-size", choices=list(FAMILIES["convs5"].variants), default="tiny")
    parser.add_argument("--image-size", type=positive_int, default=64)
    parser.add_argument("--num-frames", type=positive_int, default=20, help="frames per clip (training and evaluation)")
    parser.add_argument("--context-frames", type=positive_int, default=10,
                        help="frames that condition each eval rollout (fewer than --num-frames)")
    parser.add_argument("--steps", type=positive_int, default=300)
    parser.add_argument("--batch-size", type=positive_int, default=8)
    parser.add_argument("--learning-rate", type=positive_float, default=1e-3, help="the official Moving-MNIST-300 rate")
    parser.add_argument("--train-videos", type=positive_int, default=512)
    parser.add_argument("--eval-videos", type=positive_int, default=16)
    parser.add_argument("--save-steps", type=positive_int, default=250)
    parser.add_argument("--output-dir", type=output_folder, default=DEFAULT_OUTPUT)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.context_frames >= args.num_frames:
        parser.error(f"argument --context-frames: expected fewer than --num-frames ({args.num_frames}), got "
                     f"{args.context_frames}: the evaluation rolls out the frames after the context")  # fmt: skip
    build_config(args)  # refuses flags that make no valid configuration, before any data is made
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    from transformers import TrainingArguments, set_seed

    from .train import make_trainer_class

    set_seed(args.seed)
    run = build_run(args)
    output_dir = Path(args.output_dir)
    training_args = TrainingArguments(
        output_dir=str(output_dir),
        max_steps=args.steps,
        per_device_train_batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        weight_decay=1e-5,  # the official AdamW settings: b2 0.95, weight decay 1e-5, cosine schedule with warmup
        adam_beta2=0.95,
        lr_scheduler_type="cosine",
        warmup_steps=min(50, args.steps // 10),
        logging_steps=max(1, min(25, args.steps // 10)),
        save_steps=args.save_steps,
        save_total_limit=2,
        use_cpu=not torch.cuda.is_available(),
        label_names=[],
        seed=args.seed,
        data_seed=args.seed,
        report_to=[],
    )
    trainer = make_trainer_class()(
        model=run.model, args=training_args, train_dataset=run.train_data, data_collator=run.collator
    )

    def held_out(prefix):
        metrics = evaluate(trainer.model, run.eval_data, run.collator, args.context_frames, args.batch_size)
        return {f"{prefix}_{name}": value for name, value in metrics.items()}

    untrained = held_out("untrained")
    trainer.train()
    results = {"untrained": untrained, "trained": held_out("eval")}
    final = output_dir / "final"
    trainer.save_model(str(final))
    run.processor.save_pretrained(str(final))
    (final / "eval_results.json").write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))
    print(f"model: {final}")
    return 0


if __name__ == "__main__":
    sys.exit(run_command(main, None, USER_ERRORS))
