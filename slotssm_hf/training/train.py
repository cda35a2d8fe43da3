"""`slotssm-hf train` (also `python -m slotssm_hf.training.train`): train a model of the zoo with the
transformers Trainer.

With no arguments it trains the object-centric variant (CNN encoder, inverted cross-attention keyed by content,
spatial-broadcast decoder with per-slot alpha masks) to reconstruct the built-in bouncing-shapes videos on the CPU,
evaluates the FG-ARI / mIoU of the slot masks against the ground-truth instance masks and the reconstruction's PSNR
over whole frames and over object pixels (before and after training), and writes to the output folder: the Trainer's
checkpoints, the final model (`model.safetensors`, `config.json`, model code), the video processor, a model card,
pictures of frames, reconstructions and per-slot masks (`slots.png`, `slots.gif`), and with `--eval-steps N` the
learning curve of those metrics (`learning_curve.md`, `learning_curve.png`).

`--model savi` / `--model statm` train SAVi / STATM-SAVi the same way (their tiny variants: conditional on the
built-in data's first-frame boxes, or for SAVi `tiny-unconditional`), with their own video processor.

Arguments select the data (`--data builtin`, a folder of videos, or a `datasets` dataset saved with
`save_to_disk`), the head, the model size and overrides of its configuration, steps, batch size, precision, gradient
accumulation and resuming. Under `torchrun --nproc_per_node N -m slotssm_hf.training.train` or `accelerate launch
--multi_gpu --num_processes N -m slotssm_hf.training.train` (also without GPUs: accelerate's `--cpu` flag would start a
single process) the same job trains with N processes (DDP; gloo on the CPU); FSDP and DeepSpeed go through the
Trainer's own options (`--fsdp`, `--deepspeed`).
"""

import difflib
import importlib
import json
import math
import os
import sys
from pathlib import Path

import torch
from huggingface_hub.errors import StrictDataclassError

from ..cli import (
    ArgumentParser,
    UsageError,
    non_negative_int,
    output_folder,
    parse_overrides,
    positive_float,
    positive_int,
    run_command,
)
from ..registry import FAMILIES, load

DEFAULT_OUTPUT = "slotssm-train"

# Frames per clip at the start of training, for the families whose slots pass frame to frame through a learned
# transition (SAVi's predictor, and STATM-SAVi's): on whole 8-frame clips from the start, conditional SAVi's decoder
# learns to draw frames from slots its untrained predictor has already lost, and never draws the objects.
CURRICULUM_FRAMES = {"savi": 2, "statm": 2}


def variant_config(model: str, size: str, fields: dict, flags: str):
    """`FAMILIES[model].config(size, **fields)`; refused naming `flags`, from which the train job set `fields`, when
    they make no valid configuration (a derived field such as `decoder_initial_size` is not one the user set)."""
    try:
        return FAMILIES[model].config(size, **fields)
    except StrictDataclassError as error:
        settings = ", ".join(f"{name}={value}" for name, value in fields.items())
        raise UsageError(f"argument {flags}: {model} {size} cannot be built with {settings}, which the train job "
                         f"sets from them: {error}") from error  # fmt: skip


def build_config(args, num_labels: int | None = None):
    family = FAMILIES[args.model]
    fields = {"image_size": args.image_size, "num_frames": args.num_frames}
    if family.variants[args.model_size].get("decoder_type") == "spatial_broadcast":
        # Upsampling by 16 rather than 8: the decoder does most of a step's work at full resolution, and from a grid
        # half as wide it does a quarter of it (steps at 32 px 3x faster on one thread, 2x on two; FG-ARI per step
        # as good).
        fields["decoder_initial_size"] = args.image_size // 16
    if num_labels is not None:
        fields["num_labels"] = num_labels
    config = variant_config(args.model, args.model_size, fields, "--image-size / --num-frames")
    known = config.to_dict()
    for name, value in args.config_overrides or ():
        if name not in known:
            close = difflib.get_close_matches(name, known, n=1)
            raise UsageError(f"argument --config-overrides: key {name} isn't in the original config dict of "
                             f"{type(config).__name__}" + (f"; did you mean {close[0]}?" if close else ""))  # fmt: skip
        try:
            setattr(config, name, value)  # the config's strict fields refuse a value of the wrong type
        except StrictDataclassError as error:
            raise UsageError(f"argument --config-overrides: {name}={value!r}: {error}") from error
    config.validate()
    return config


class NonFiniteLossError(FloatingPointError):
    pass


# What `slotssm-hf train` reports as one `error:` line (exit status 2) rather than a traceback: what the user gave
# cannot work (a flag, a configuration field, the data), or training diverged.
USER_ERRORS = (ValueError, StrictDataclassError, NonFiniteLossError)


def make_trainer_class():
    from transformers import Trainer

    class GuardedTrainer(Trainer):
        """Stops at the first non-finite training loss, before the optimizer applies it, so no checkpoint with
        broken weights is ever written. Evaluates with `eval_data_collator` (whole clips, where training takes
        windows of them) when given."""

        def __init__(self, *args, eval_data_collator=None, **kwargs):
            super().__init__(*args, **kwargs)
            self.eval_data_collator = eval_data_collator

        def get_eval_dataloader(self, eval_dataset=None):
            # The Trainer builds every data loader from `data_collator`: the evaluation collator stands in for it
            # while the evaluation loader is built.
            training_collator = self.data_collator
            self.data_collator = self.eval_data_collator or training_collator
            try:
                return super().get_eval_dataloader(eval_dataset)
            finally:
                self.data_collator = training_collator

        def training_step(self, model, inputs, num_items_in_batch=None):
            loss = super().training_step(model, inputs, num_items_in_batch)
            # Every process looks at every process's loss, so all stop at the same step with the same message: a
            # process stopping alone would leave the others applying averaged NaN gradients, or waiting for it.
            losses = self.accelerator.gather(loss.detach().float().reshape(1)).tolist()
            broken = [rank for rank, value in enumerate(losses) if not math.isfinite(value)]
            if broken:
                where = f" on process {', '.join(map(str, broken))} of {len(losses)}" if len(losses) > 1 else ""
                raise NonFiniteLossError(
                    f"the training loss became {losses[broken[0]]} at step {self.state.global_step + 1}{where}; "
                    f"training stopped before applying it. The last good checkpoint (if any) is in "
                    f"{self.args.output_dir}; lower the learning rate or use float32 precision."
                )
            return loss

        def train(self, *args, **kwargs):
            try:
                return super().train(*args, **kwargs)
            except NonFiniteLossError:
                # The run ends here: its callbacks close what they opened (the progress bar, so that the error is
                # printed on a line of its own after it; a reporting integration's run).
                self.control = self.callback_handler.on_train_end(self.args, self.state, self.control)
                raise

    return GuardedTrainer


def write_pictures(model, collator, eval_data, output_dir: Path) -> list[str]:
    """Slots of the first evaluation video: frames, reconstruction (or prediction) and masks, as PNG and GIF."""
    from ..evaluation.object_discovery import slot_masks
    from .data import model_inputs
    from .visualize import pixel_range, save_slot_pictures, to_uint8_frames

    batch = collator([eval_data[0]])
    processor = collator.processor
    model.eval()
    with torch.no_grad():
        out = model(**model_inputs(model, batch), output_attentions=True)
    mean, std = pixel_range(processor)
    frames = to_uint8_frames(batch["pixel_values_videos"][0], mean, std)
    decoded = next((getattr(out, name) for name in ("reconstruction", "predictions") if hasattr(out, name)), None)
    decoded = None if decoded is None else to_uint8_frames(decoded[0], mean, std)
    masks = slot_masks(out, frames.shape[1:3])[0]
    return save_slot_pictures(str(output_dir / "slots"), frames, masks, decoded)


def steps_per_epoch(args, num_videos: int) -> int:
    processes = int(os.environ.get("WORLD_SIZE", "1"))
    return max(1, math.ceil(num_videos / (args.batch_size * processes)) // args.gradient_accumulation_steps)


def clip_curriculum(args, num_videos: int):
    """`--curriculum-frames` (or the family's default) lengthened to `--num-frames` over the first half of the run,
    or None: whole clips throughout."""
    from .data import ClipCurriculum

    start = args.curriculum_frames or CURRICULUM_FRAMES.get(args.model, args.num_frames)
    if start >= args.num_frames:
        return None
    half_run = math.ceil(args.steps / 2 / steps_per_epoch(args, num_videos))
    return ClipCurriculum(start, args.num_frames, ramp_epochs=half_run)


def mean_clip_frames(curriculum, args, num_videos: int) -> float:
    """Frames per training clip, averaged over the run's steps."""
    if curriculum is None:
        return float(args.num_frames)
    per_epoch = steps_per_epoch(args, num_videos)
    return sum(curriculum(step // per_epoch) for step in range(args.steps)) / args.steps


def parse_args(argv=None):
    parser = ArgumentParser(prog="slotssm-hf train", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="builtin", help="builtin, a folder of videos, or a save_to_disk folder")
    families = {name: family for name, family in FAMILIES.items() if family.train_module == __name__.rsplit(".")[-1]}
    parser.add_argument("--model", choices=[*FAMILIES], default="slotssm",
                        help="the model family (each family's train job has its own further arguments)")
    parser.add_argument("--head", default="reconstruction", help="a head the family's train job has: "
                        + "; ".join(f"{name}: {', '.join(family.train_heads())}" for name, family in families.items()))
    parser.add_argument("--model-size", default="tiny", help="a named variant of the family: "
                        + "; ".join(f"{name}: {', '.join(family.variants)}" for name, family in families.items()))
    parser.add_argument("--config-overrides", type=parse_overrides, default=None,
                        help="overrides of the variant's configuration, as transformers' example scripts take them: "
                        "'num_slots=6,hidden_size=96,use_ffn=true' (values read as JSON)")
    parser.add_argument("--image-size", type=positive_int, default=32)
    parser.add_argument("--num-frames", type=positive_int, default=8,
                        help="frames per video (built-in data) and per evaluation clip")
    parser.add_argument("--curriculum-frames", type=positive_int, default=None,
                        help="train on clips of this many frames first, lengthened evenly to --num-frames over the "
                        "first half of the run (default: " + ", ".join(f"{n} for {m}" for m, n in
                        CURRICULUM_FRAMES.items()) + "; whole clips from the start for the others)")
    parser.add_argument("--steps", type=positive_int, default=2000)
    parser.add_argument("--batch-size", type=positive_int, default=8)
    parser.add_argument("--learning-rate", type=positive_float, default=1e-3)
    parser.add_argument("--max-grad-norm", type=positive_float, default=1.0, help="gradient clipping")
    parser.add_argument("--warmup-steps", type=non_negative_int, default=None,
                        help="linear warm-up before the cosine decay (default: 50, at most a tenth of --steps)")
    parser.add_argument("--gradient-accumulation-steps", type=positive_int, default=1)
    parser.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default="fp32")
    parser.add_argument("--train-videos", type=positive_int, default=512, help="built-in data: training videos")
    parser.add_argument("--eval-videos", type=positive_int, default=32, help="built-in data: evaluation videos")
    parser.add_argument("--eval-steps", type=non_negative_int, default=0,
                        help="evaluate every N steps (0: at the end only)")
    parser.add_argument("--save-steps", type=positive_int, default=250)
    parser.add_argument("--output-dir", type=output_folder, default=DEFAULT_OUTPUT)
    parser.add_argument("--resume-from-checkpoint", default=None, help="a checkpoint folder, or 'last'")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--init-from", default=None, help="start from this pretrained SlotSSM folder")
    parser.add_argument("--fsdp", default="", help="the Trainer's fsdp option (multi-process runs)")
    parser.add_argument("--deepspeed", default=None, help="a DeepSpeed config file for the Trainer")
    parser.add_argument("--no-pictures", action="store_true")
    args = parser.parse_args(argv)
    family = FAMILIES[args.model]
    for flag, value, known in (("--head", args.head, family.train_heads()), ("--model-size", args.model_size, family.variants)):
        if value not in known:
            parser.error(f"{flag} {value!r} is not one of {args.model}'s: {', '.join(known)}")
    build_config(args)  # refuses flags and overrides that make no valid configuration, before any data is made
    return args


def family_train_job(argv) -> tuple[str, list[str]]:
    """The module that trains the family `--model` names (registry.Family.train_module), and the other arguments."""
    chooser = ArgumentParser(prog="slotssm-hf train", add_help=False)
    chooser.add_argument("--model", choices=[*FAMILIES], default="slotssm")
    chosen, rest = chooser.parse_known_args(argv)
    module = FAMILIES[chosen.model].train_module
    if module is None:
        trainable = [name for name, family in FAMILIES.items() if family.train_module]
        chooser.error(f"{chosen.model} has no train job yet; the families that train: {', '.join(trainable)}")
    return module, rest


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    module, rest = family_train_job(argv)
    if module != __name__.rsplit(".")[-1]:
        return importlib.import_module(f"{__package__}.{module}").main(rest)
    args = parse_args(argv)
    from transformers import TrainingArguments, set_seed

    from .data import (
        EpochCallback, SeededClips, boxes_per_video, held_out_collator, load_datasets, training_collator
    )  # fmt: skip
    from .metrics import ObjectDiscoveryMetrics
    from .visualize import pixel_range
    from ..hub.model_card import render_model_card

    set_seed(args.seed)
    output_dir = Path(args.output_dir)
    train_data, eval_data, label_names = load_datasets(args)
    if args.head == "classification" and not label_names:
        raise ValueError("--head classification needs labelled data: class sub-folders or a ClassLabel 'labels' column")
    if args.head != "classification" and "labels" in train_data.column_names:
        train_data, eval_data = train_data.remove_columns("labels"), eval_data.remove_columns("labels")
    config = build_config(args, len(label_names) if args.head == "classification" else None)
    if label_names and args.head == "classification":
        config.id2label = dict(enumerate(label_names))
        config.label2id = {name: i for i, name in enumerate(label_names)}
    family = FAMILIES[args.model]
    head = load(family.train_heads()[args.head].class_path)
    model = head.from_pretrained(args.init_from, config=config) if args.init_from else head(config)

    # Built-in frames already have the model's size: no resize, no crop.
    resize = args.data != "builtin"
    processor = load(family.processor_path)(
        size={"shortest_edge": args.image_size},
        crop_size={"height": args.image_size, "width": args.image_size},
        do_resize=resize,
        do_center_crop=resize,
        num_frames=args.num_frames,
    )
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    # Slot masks come from alpha-masking decoders: SlotSSM's spatial-broadcast decoder, and every SAVi-type decoder.
    masks_out = getattr(config, "decoder_type", "spatial_broadcast") == "spatial_broadcast"
    object_metrics = "instance_masks" in eval_data.column_names and masks_out
    num_boxes = boxes_per_video(config)
    unused = [name for name, used in (("instance_masks", object_metrics), ("boxes", num_boxes)) if not used]
    train_data, eval_data = (
        data.remove_columns([name for name in unused if name in data.column_names]) for data in (train_data, eval_data)
    )
    if num_boxes and "boxes" not in train_data.column_names:
        raise ValueError(f"{args.model} {args.model_size} starts its slots from first-frame boxes: the data needs a "
                         "'boxes' column of (num_objects, 4) (ymin, xmin, ymax, xmax) in [0, 1]")
    eval_collator = held_out_collator(processor, config)
    # Random clips from seeds of (seed, epoch, row) rather than a global generator, so that a resumed run trains
    # on the clips the uninterrupted run did (the evaluation clips stay those of epoch 0).
    # Rows as numpy arrays: datasets' default format builds nested Python lists of every video, which took half of a
    # default training step's time.
    curriculum = clip_curriculum(args, len(train_data))
    train_clips = SeededClips(train_data.with_format("numpy"), args.seed, curriculum)
    eval_clips = SeededClips(eval_data.with_format("numpy"), args.seed + 1)
    training_args = TrainingArguments(
        output_dir=str(output_dir),
        max_steps=args.steps,
        per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=args.batch_size,
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        learning_rate=args.learning_rate,
        lr_scheduler_type="cosine",
        warmup_steps=min(50, args.steps // 10) if args.warmup_steps is None else args.warmup_steps,
        max_grad_norm=args.max_grad_norm,
        logging_steps=max(1, min(25, args.steps // 10)),
        eval_strategy="steps" if args.eval_steps else "no",
        eval_steps=args.eval_steps or None,
        save_steps=args.save_steps,
        save_total_limit=2,
        bf16=args.precision == "bf16",
        fp16=args.precision == "fp16",
        use_cpu=not torch.cuda.is_available(),
        ddp_backend="gloo" if distributed and not torch.cuda.is_available() else None,
        label_names=["instance_masks"] if object_metrics else (["labels"] if args.head == "classification" else []),
        fsdp=args.fsdp,
        deepspeed=args.deepspeed,
        seed=args.seed,
        data_seed=args.seed,
        include_for_metrics=["inputs"] if object_metrics else [],  # the frames, for the reconstruction's PSNR
        remove_unused_columns=False,  # the collator reads only the columns it needs, clip_seed among them
        report_to=[],
        disable_tqdm=False,
    )
    trainer = make_trainer_class()(
        model=model,
        args=training_args,
        train_dataset=train_clips,
        eval_dataset=eval_clips,
        data_collator=training_collator(processor, config),
        eval_data_collator=eval_collator,
        callbacks=[EpochCallback(train_clips)],
        compute_metrics=ObjectDiscoveryMetrics(*pixel_range(processor)) if object_metrics else None,
        preprocess_logits_for_metrics=ObjectDiscoveryMetrics.preprocess_logits if object_metrics else None,
    )
    untrained = trainer.evaluate(metric_key_prefix="untrained")
    resume = args.resume_from_checkpoint
    training = trainer.train(resume_from_checkpoint=True if resume == "last" else resume).metrics
    training["train_frames_per_clip"] = mean_clip_frames(curriculum, args, len(train_data))
    trained = trainer.evaluate(metric_key_prefix="eval")
    results = {"untrained": untrained, "trained": trained, "training": training}
    if trainer.is_world_process_zero():
        final = output_dir / "final"
        trainer.save_model(str(final))
        processor.save_pretrained(str(final))
        (final / "eval_results.json").write_text(json.dumps(results, indent=2))
        provenance = f"Trained with `slotssm-hf train` on `{args.data}` data for {args.steps} steps."
        card = render_model_card(trainer.model, final.name, provenance, eval_results=results, has_processor=True)
        card.save(final / "README.md")
        pictures = [] if args.no_pictures else write_pictures(trainer.model, eval_collator, eval_data, output_dir)
        if args.eval_steps and object_metrics:
            from .visualize import learning_curve

            # The Trainer's log starts anew with training: the evaluation before it is step 0.
            history = [{**untrained, "step": 0}, *trainer.state.log_history]
            pictures += learning_curve(history, str(output_dir / "learning_curve"))
        summary = {
            "untrained": {k.removeprefix("untrained_"): v for k, v in untrained.items()},
            "trained": {k.removeprefix("eval_"): v for k, v in trained.items()},
        }
        print(json.dumps(summary, indent=2))
        print(f"model: {final}" + "".join(f"\npicture: {p}" for p in pictures))
    if torch.distributed.is_initialized():
        # Every process waits for the first to finish writing, then the process group is torn down in order
        # (a process that exits while gloo's threads still run aborts).
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
    return 0


def command_line(argv=None) -> int:
    """`slotssm-hf train`: `main`, with the failures of `USER_ERRORS` reported as one `error:` line (exit status 2)."""
    try:
        return run_command(main, argv, USER_ERRORS)
    finally:
        if torch.distributed.is_initialized():  # a failed run's processes: gloo aborts one that exits without this
            torch.distributed.destroy_process_group()


if __name__ == "__main__":
    # Run as a script (`python -m`, torchrun), this file is a second copy of the module: the train jobs raise the
    # package module's NonFiniteLossError, which that module's command line reports.
    from slotssm_hf.training import train

    sys.exit(train.command_line())
