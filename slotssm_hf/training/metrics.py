"""The Trainer's hook for object-discovery metrics. The metrics themselves (FG-ARI, mIoU, mBO, PSNR, SSIM, ...) live
in `slotssm_hf.evaluation.metrics`, with the papers' protocols."""

import numpy as np
import torch

from ..evaluation.metrics import object_discovery_metrics, psnr, slot_ids


class ObjectDiscoveryMetrics:
    """FG-ARI and mIoU for the Trainer, from a model that outputs per-slot `masks` and ground-truth instance masks
    passed under `label_names=["instance_masks"]` (batch, frames, H, W); with the processor's normalisation and the
    inputs kept for metrics, also the reconstruction's PSNR over the whole frames and over the object pixels alone:

        trainer = Trainer(..., args=TrainingArguments(..., include_for_metrics=["inputs"]),
                          compute_metrics=ObjectDiscoveryMetrics(*pixel_range(processor)),
                          preprocess_logits_for_metrics=ObjectDiscoveryMetrics.preprocess_logits)

    `preprocess_logits` keeps only the slot id of each pixel (and the reconstruction), so evaluation does not hold
    every mask in memory.
    """

    def __init__(self, image_mean=None, image_std=None):
        """image_mean, image_std: per channel, the processor's normalisation
        (`slotssm_hf.training.visualize.pixel_range(processor)`)."""
        self.image_mean, self.image_std = (
            None if values is None else torch.as_tensor(values, dtype=torch.float32).reshape(-1, 1, 1)
            for values in (image_mean, image_std)
        )

    @staticmethod
    def preprocess_logits(outputs, labels):
        tensors = [t for t in (outputs if isinstance(outputs, (tuple, list)) else [outputs]) if torch.is_tensor(t)]
        masks = [t for t in tensors if t.dim() == 6]
        if not masks:
            raise ValueError("the model outputs no per-slot masks (batch, frames, num_slots, 1, H, W) to evaluate")
        ids = slot_ids(masks[0]).to(torch.uint8)
        # The reconstruction: frames (batch, frames, C, H, W) of the masks' size.
        frames = [t for t in tensors if t.dim() == 5 and (t.shape[:2], t.shape[-2:]) == (ids.shape[:2], ids.shape[-2:])]
        return (ids, frames[0].float()) if frames else ids

    def __call__(self, eval_prediction) -> dict:
        predictions = eval_prediction.predictions
        ids, reconstruction = predictions if isinstance(predictions, tuple) else (predictions, None)
        metrics = object_discovery_metrics(ids, eval_prediction.label_ids)
        inputs = getattr(eval_prediction, "inputs", None)
        if reconstruction is None or inputs is None or self.image_mean is None:
            return metrics
        to_pixels = lambda frames: torch.as_tensor(np.asarray(frames)).float() * self.image_std + self.image_mean
        reconstruction, frames = to_pixels(reconstruction).clamp(0, 1), to_pixels(inputs)
        objects = torch.as_tensor(np.asarray(eval_prediction.label_ids))[:, :, None].expand_as(frames) > 0
        squared = (reconstruction.double() - frames.double()).square()
        # Per video: the mean squared error over its object pixels (all frames, all channels) as PSNR; videos
        # without objects are left out.
        object_mse = [error[mask].mean() for error, mask in zip(squared, objects) if mask.any()]
        metrics["psnr"] = psnr(reconstruction, frames).mean().item()
        object_psnr = [-10 * torch.log10(mse).item() for mse in object_mse]
        metrics["object_psnr"] = float(np.mean(object_psnr)) if object_psnr else float("nan")
        return metrics


__all__ = ["ObjectDiscoveryMetrics"]
