"""Evaluation metrics.

Object-centric: FG-ARI and mIoU between slot masks and ground-truth instance masks, computed per video over all its
frames (a slot must keep tracking the same object to score) and averaged over videos. Instance ids: 0 is
background, k > 0 is object k. Predicted ids are slot indices.

Video prediction: MSE, PSNR and SSIM of predicted frames, per frame and averaged, as the ConvS5 evaluation (TECO's
metrics: frames in [0, 1], PSNR from the per-frame MSE, SSIM with an 11-tap Gaussian window of sigma 1.5 over the
valid positions, averaged over channels).
"""

import math

import numpy as np
import torch


def slot_ids(masks) -> torch.Tensor:
    """The slot that claims each pixel: masks (batch, frames, num_slots, [1,] H, W) -> ids (batch, frames, H, W)."""
    masks = torch.as_tensor(masks)
    if masks.dim() == 6:
        masks = masks.squeeze(3)
    if masks.dim() != 5:
        raise ValueError(f"expected masks of shape (batch, frames, num_slots, [1,] height, width), got {tuple(masks.shape)}")
    return masks.argmax(dim=2)


def _contingency(true_ids: torch.Tensor, pred_ids: torch.Tensor) -> torch.Tensor:
    """Counts n[i, j] of pixels with true label i and predicted label j (labels re-indexed densely), float64."""
    _, true_index = torch.unique(true_ids, return_inverse=True)
    _, pred_index = torch.unique(pred_ids, return_inverse=True)
    table = torch.zeros(int(true_index.max()) + 1, int(pred_index.max()) + 1, dtype=torch.float64)
    table.index_put_((true_index, pred_index), torch.ones(len(true_index), dtype=torch.float64), accumulate=True)
    return table


def adjusted_rand_index(true_ids, pred_ids) -> float:
    """ARI between two labelings of the same pixels (any shapes, flattened); 1.0 where it is undefined (both
    labelings put everything in one cluster, or every pixel in its own), as scikit-learn does."""
    true_ids, pred_ids = torch.as_tensor(true_ids).flatten(), torch.as_tensor(pred_ids).flatten()
    n = len(true_ids)
    if n < 2:
        return 1.0
    table = _contingency(true_ids, pred_ids)

    def pairs(counts):
        return (counts * (counts - 1) / 2).sum()

    index, rows, cols = pairs(table), pairs(table.sum(1)), pairs(table.sum(0))
    expected = rows * cols / (n * (n - 1) / 2)
    maximum = (rows + cols) / 2
    if maximum == expected:
        return 1.0
    return float((index - expected) / (maximum - expected))


def foreground_ari(true_ids, pred_ids) -> float:
    """FG-ARI of one video: the ARI over the pixels whose true id is not background (nan if there are none)."""
    true_ids, pred_ids = torch.as_tensor(true_ids), torch.as_tensor(pred_ids)
    foreground = true_ids != 0
    if not foreground.any():
        return float("nan")
    return adjusted_rand_index(true_ids[foreground], pred_ids[foreground])


def mean_best_overlap_iou(true_ids, pred_ids) -> float:
    """mIoU of one video: ground-truth objects are matched one-to-one to slots (Hungarian, maximising IoU over all
    frames); the mean IoU over objects, an unmatched object counting 0 (nan if there are no objects)."""
    from scipy.optimize import linear_sum_assignment

    true_ids, pred_ids = torch.as_tensor(true_ids).flatten(), torch.as_tensor(pred_ids).flatten()
    objects = torch.unique(true_ids[true_ids != 0])
    if len(objects) == 0:
        return float("nan")
    slots = torch.unique(pred_ids)
    true_onehot = (true_ids[:, None] == objects[None]).double()
    pred_onehot = (pred_ids[:, None] == slots[None]).double()
    intersection = true_onehot.T @ pred_onehot
    union = true_onehot.sum(0)[:, None] + pred_onehot.sum(0)[None] - intersection
    iou = (intersection / union).numpy()
    rows, cols = linear_sum_assignment(iou, maximize=True)
    return float(iou[rows, cols].sum() / len(objects))


def object_discovery_metrics(pred_ids, true_ids) -> dict:
    """Mean FG-ARI and mIoU over videos. pred_ids, true_ids: (batch, frames, H, W) integer ids (or (frames, H, W)
    for one video); videos without foreground are left out of the means."""
    pred_ids, true_ids = torch.as_tensor(np.asarray(pred_ids)), torch.as_tensor(np.asarray(true_ids))
    if pred_ids.shape != true_ids.shape:
        raise ValueError(f"predicted ids {tuple(pred_ids.shape)} and true ids {tuple(true_ids.shape)} differ in shape")
    if pred_ids.dim() == 3:
        pred_ids, true_ids = pred_ids[None], true_ids[None]
    ari = np.array([foreground_ari(t, p) for t, p in zip(true_ids, pred_ids)])
    iou = np.array([mean_best_overlap_iou(t, p) for t, p in zip(true_ids, pred_ids)])
    return {"fg_ari": float(np.nanmean(ari)), "miou": float(np.nanmean(iou))}


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


def psnr(predictions, targets, max_value: float = 1.0) -> torch.Tensor:
    """Peak signal-to-noise ratio of every frame: (..., C, H, W) -> (...), in dB."""
    mse = (predictions.double() - targets.double()).square().mean(dim=(-3, -2, -1))
    return 20 * math.log10(max_value) - 10 * torch.log10(mse)


def ssim(predictions, targets, max_value: float = 1.0, filter_size: int = 11, filter_sigma: float = 1.5,
         k1: float = 0.01, k2: float = 0.03) -> torch.Tensor:  # fmt: skip
    """Structural similarity of every frame: (..., C, H, W) -> (...), the mean over channels and over the valid
    (unpadded) window positions of the local SSIM map."""
    import torch.nn.functional as F

    x, y = predictions.double(), targets.double()
    shape = x.shape
    offsets = torch.arange(filter_size, dtype=torch.float64) - (filter_size - 1) / 2
    taps = torch.exp(-0.5 * (offsets / filter_sigma) ** 2)
    window = (taps[:, None] * taps[None, :] / taps.sum() ** 2)[None, None]

    def local_mean(image):
        return F.conv2d(image.reshape(-1, 1, *shape[-2:]), window)

    mean_x, mean_y = local_mean(x), local_mean(y)
    var_x = local_mean(x * x) - mean_x**2
    var_y = local_mean(y * y) - mean_y**2
    covariance = local_mean(x * y) - mean_x * mean_y
    c1, c2 = (k1 * max_value) ** 2, (k2 * max_value) ** 2
    ssim_map = ((2 * mean_x * mean_y + c1) * (2 * covariance + c2)) / (
        (mean_x**2 + mean_y**2 + c1) * (var_x + var_y + c2)
    )
    return ssim_map.mean(dim=(-2, -1)).reshape(shape[:-2]).mean(dim=-1)


def video_prediction_metrics(predictions, targets) -> dict:
    """MSE, PSNR and SSIM of predicted frames (batch, frames, C, H, W) in [-1, 1] against the true ones, as the
    official ConvS5 evaluation reports them: on frames mapped to [0, 1], per frame, averaged over frames and
    videos."""
    predictions = (predictions.double().clamp(-1, 1) + 1) / 2
    targets = (targets.double() + 1) / 2
    return {
        "mse": (predictions - targets).square().mean().item(),
        "psnr": psnr(predictions, targets).mean().item(),
        "ssim": ssim(predictions, targets).mean().item(),
    }


__all__ = [
    "psnr",
    "ssim",
    "video_prediction_metrics",
    "adjusted_rand_index",
    "foreground_ari",
    "mean_best_overlap_iou",
    "object_discovery_metrics",
    "slot_ids",
    "ObjectDiscoveryMetrics",
]
