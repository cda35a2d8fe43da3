"""Fine-tune a SlotSSM video classifier on a folder of videos with one sub-folder per class, starting from a
reconstruction (pre-training) checkpoint: the backbone is loaded, a new classification head is added.

    python examples/finetune_classification.py VIDEO_FOLDER OUT [--init-from CHECKPOINT] [--steps 200]

The result loads with `AutoModelForVideoClassification` and `pipeline("video-classification", model=OUT)`. Each
video gives a random clip per epoch, drawn from a seed of (`--seed`, epoch, video), so a run resumed with
`--resume-from-checkpoint` ends with the weights of the uninterrupted run.
"""

import argparse

import numpy as np
from transformers import Trainer, TrainingArguments

from slotssm_hf import (
    SlotSSMConfig,
    SlotSSMForVideoClassification,
    SlotSSMVideoProcessor,
    VideoCollator,
    video_folder_dataset,
)
from slotssm_hf.training.data import EpochCallback, SeededClips


def accuracy(eval_prediction):
    return {"accuracy": float(np.mean(eval_prediction.predictions.argmax(-1) == eval_prediction.label_ids))}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("videos", help="folder/<class name>/<video files>")
    parser.add_argument("out")
    parser.add_argument("--init-from", help="a SlotSSM checkpoint (e.g. from slotssm-hf train); random weights if absent")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--learning-rate", type=float, default=1e-4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--resume-from-checkpoint", help="a checkpoint folder in OUT, or 'last'")
    args = parser.parse_args()

    data = video_folder_dataset(args.videos)
    names = data.features["labels"].names
    labels = {"num_labels": len(names), "id2label": dict(enumerate(names)), "label2id": {n: i for i, n in enumerate(names)}}
    split = data.train_test_split(test_size=max(len(names), len(data) // 5), seed=0, stratify_by_column="labels")
    if args.init_from:
        model = SlotSSMForVideoClassification.from_pretrained(args.init_from, **labels)
        processor = SlotSSMVideoProcessor.from_pretrained(args.init_from)
    else:
        model = SlotSSMForVideoClassification(SlotSSMConfig(**labels))
        processor = SlotSSMVideoProcessor()

    training = TrainingArguments(
        args.out, max_steps=args.steps, per_device_train_batch_size=args.batch_size, learning_rate=args.learning_rate,
        eval_strategy="steps", eval_steps=max(1, args.steps // 4), save_steps=max(1, args.steps // 4),
        logging_steps=max(1, args.steps // 20), report_to=[], seed=args.seed, data_seed=args.seed,
        remove_unused_columns=False,  # the collator reads each row's clip_seed
    )  # fmt: skip
    # Clips from seeds rather than the global generator, which a resumed run would draw from at other times.
    train_clips, eval_clips = SeededClips(split["train"], args.seed), SeededClips(split["test"], args.seed + 1)
    trainer = Trainer(
        model=model,
        args=training,
        train_dataset=train_clips,
        eval_dataset=eval_clips,
        data_collator=VideoCollator(processor, sampling="random"),
        callbacks=[EpochCallback(train_clips)],
        compute_metrics=accuracy,
    )
    resume = args.resume_from_checkpoint
    trainer.train(resume_from_checkpoint=True if resume == "last" else resume)
    print(trainer.evaluate())
    trainer.save_model(args.out)
    processor.save_pretrained(args.out)


if __name__ == "__main__":
    main()
