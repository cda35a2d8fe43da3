"""The Trainer's hook for object-discovery metrics. The metrics themselves (FG-ARI, mIoU, mBO, PSNR, SSIM, ...) live
in `slotssm_hf.evaluation.metrics`, with the papers' protocols."""

import torch

from ..evaluation.metrics import object_discovery_metrics, slot_ids


class ObjectDiscoveryMetrics:
    """FG-ARI and mIoU for the Trainer, from a model that outputs per-slot `masks` and ground-truth instance masks
    passed under `label_names=["instance_masks"]` (batch, frames, H, W):

        trainer = Trainer(..., compute_metrics=ObjectDiscoveryMetrics(),
                          preprocess_logits_for_metrics=ObjectDiscoveryMetrics.preprocess_logits)

    `preprocess_logits` keeps only the slot ids of each pixel, so evaluation does not hold every mask in memory.
    """

    @staticmethod
    def preprocess_logits(outputs, labels):
        masks = [t for t in (outputs if isinstance(outputs, (tuple, list)) else [outputs]) if torch.is_tensor(t) and t.dim() == 6]
        if not masks:
            raise ValueError("the model outputs no per-slot masks (batch, frames, num_slots, 1, H, W) to evaluate")
        return slot_ids(masks[0]).to(torch.uint8)

    def __call__(self, eval_prediction) -> dict:
        return object_discovery_metrics(eval_prediction.predictions, eval_prediction.label_ids)


__all__ = ["ObjectDiscoveryMetrics"]
