"""How the slots of a trained `slotssm-hf train` model bind to objects, on the train job's held-out videos: FG-ARI per
video (what the job reports) beside FG-ARI per frame, and the share of object pixels the background slot takes.

FG-ARI per frame scores every frame on its own, so a slot that hands its object to another slot between frames loses
nothing there: the gap between the two is what such trading costs. The background slot of a video is the slot that
claims most of its background pixels; the object pixels it also claims are lost to every object's mask.

Usage: python benchmarks/slot_binding.py MODEL_FOLDER [MODEL_FOLDER ...] [--eval-videos 32] [--seed 0]
(a folder `slotssm-hf train` wrote, or its `final/` folder; the held-out videos are the job's for that seed)
"""

import argparse
import math
from pathlib import Path
from types import SimpleNamespace

import torch

from slotssm_hf.evaluation.metrics import foreground_ari, slot_ids
from slotssm_hf.training.data import builtin_datasets, held_out_collator, model_inputs


def binding(model_dir: Path, eval_videos: int, seed: int) -> dict:
    from transformers import AutoModelForPreTraining, AutoVideoProcessor

    model = AutoModelForPreTraining.from_pretrained(model_dir).eval()
    processor = AutoVideoProcessor.from_pretrained(model_dir)
    size, frames = model.config.image_size, model.config.num_frames
    args = SimpleNamespace(num_frames=frames, image_size=size, train_videos=1, eval_videos=eval_videos, seed=seed)
    _, held_out = builtin_datasets(args)
    batch = held_out_collator(processor, model.config)(list(held_out.with_format("numpy")))
    with torch.no_grad():
        predicted = slot_ids(model(**model_inputs(model, batch)).masks)
    truth = batch["instance_masks"].reshape(predicted.shape)
    per_video, per_frame, background_share = [], [], []
    for true_ids, pred_ids in zip(truth, predicted):
        per_video.append(foreground_ari(true_ids, pred_ids))
        per_frame.extend(foreground_ari(true_frame, pred_frame) for true_frame, pred_frame in zip(true_ids, pred_ids))
        background_slot = torch.bincount(pred_ids[true_ids == 0]).argmax()
        objects = true_ids != 0
        background_share.append(((pred_ids == background_slot) & objects).sum().item() / objects.sum().item())

    def mean(values):
        finite = [value for value in values if not math.isnan(value)]
        return sum(finite) / len(finite)

    return {"video": mean(per_video), "frame": mean(per_frame), "background": mean(background_share)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model_dirs", nargs="+", type=Path)
    parser.add_argument("--eval-videos", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0, help="the train job's --seed")
    args = parser.parse_args(argv)
    print("| model | FG-ARI per video | FG-ARI per frame | object pixels in the background slot |")
    print("|---|---|---|---|")
    for folder in args.model_dirs:
        model_dir = folder / "final" if (folder / "final" / "config.json").is_file() else folder
        result = binding(model_dir, args.eval_videos, args.seed)
        print(f"| {folder} | {result['video']:.3f} | {result['frame']:.3f} | {100 * result['background']:.1f} % |")


if __name__ == "__main__":
    main()
