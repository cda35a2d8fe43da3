"""Run by tests/test_train.py under `torchrun --nproc_per_node 2`: only process 1 sees a NaN pixel, hence a NaN
loss, at the first step. Each process writes what stopped it, and whether its weights are still the initial ones,
to OUTPUT_DIR/process-RANK.txt (one file each: lines the processes printed would interleave)."""

import os
import sys
from pathlib import Path

import torch
from slotssm_inputs import tiny_config
from transformers import TrainingArguments

from slotssm_hf import SlotSSMForVideoReconstruction
from slotssm_hf.training.train import NonFiniteLossError, make_trainer_class


def batches(rows):
    pixels = torch.zeros(len(rows), 2, 3, 32, 32)
    if os.environ["RANK"] == "1":
        pixels[0, 0, 0, 0, 0] = float("nan")
    return {"pixel_values_videos": pixels}


def main(output_dir: str):
    torch.manual_seed(0)
    model = SlotSSMForVideoReconstruction(tiny_config())
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    args = TrainingArguments(output_dir, max_steps=3, per_device_train_batch_size=2, save_steps=1, report_to=[],
                             use_cpu=True, ddp_backend="gloo", remove_unused_columns=False)  # fmt: skip
    trainer = make_trainer_class()(model=model, args=args, train_dataset=[{"x": i} for i in range(8)],
                                   data_collator=batches)  # fmt: skip
    try:
        trainer.train()
        outcome = "finished training"
    except NonFiniteLossError as error:
        unchanged = all(torch.equal(initial[k], v) for k, v in model.state_dict().items())
        outcome = f"stopped, weights unchanged: {unchanged}: {error}"
    (Path(output_dir) / f"process-{os.environ['RANK']}.txt").write_text(outcome)
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
