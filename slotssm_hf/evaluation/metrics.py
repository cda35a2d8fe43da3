"""The metrics of the papers' protocols, one implementation each.

Object discovery (segmentations as integer ids: ground truth 0 = background, k > 0 = object k; predictions = the
index of the slot whose mask is largest at the pixel). Every score is of one *video*, all its frames taken together
(a slot must keep the same object over time to score), then averaged over videos:

- `video_ari(true, pred, valid, ignore_background)`: the adjusted Rand index over the valid pixels (`valid`, the
  official padding mask); with `ignore_background=True` over the valid pixels whose true id is not 0: FG-ARI. As
  the official SAVi metric (`savi/lib/metrics.py`), a video where the index is undefined (every pixel in one
  cluster in both labelings, or no pixels at all, e.g. no foreground) scores 1.0.
- `mean_best_overlap(true, pred)`: mBO as VideoSAUR reports it: each ground-truth object (its mask over all frames)
  takes the slot mask of highest IoU with it (slots may be reused); the mean over the objects present.
- `hungarian_miou(true, pred)`: mIoU with one-to-one matching: objects are matched to slots by the Hungarian
  algorithm maximising the total IoU; the mean over the objects present, an unmatched object counting 0.
- `foreground_ari(true, pred)`: FG-ARI of one video for training-time monitoring: nan (left out of means) where a
  video has no foreground, instead of the official 1.0.

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
        raise ValueError(
            f"expected masks of shape (batch, frames, num_slots, [1,] height, width), got {tuple(masks.shape)}"
        )
    return masks.argmax(dim=2)


def contingency(true_ids, pred_ids, valid=None) -> torch.Tensor:
    """Counts n[i, j] of the (valid) pixels with true label i and predicted label j, labels re-indexed densely in
    increasing order, float64. Any shapes (flattened); `valid` a boolean mask of the same shape, or None."""
    true_ids, pred_ids = torch.as_tensor(true_ids).flatten(), torch.as_tensor(pred_ids).flatten()
    if valid is not None:
        valid = torch.as_tensor(valid).flatten().bool()
        true_ids, pred_ids = true_ids[valid], pred_ids[valid]
    if len(true_ids) == 0:
        return torch.zeros(0, 0, dtype=torch.float64)
    _, true_index = torch.unique(true_ids, return_inverse=True)
    pred_labels, pred_index = torch.unique(pred_ids, return_inverse=True)
    columns = len(pred_labels)
    counts = torch.bincount(true_index * columns + pred_index, minlength=(int(true_index.max()) + 1) * columns)
    return counts.reshape(-1, columns).double()


def ari_of_contingency(table: torch.Tensor) -> float:
    """The adjusted Rand index of a contingency table; 1.0 where it is undefined (both labelings put every point in
    one cluster, or every point in its own, or there are no points), as the official SAVi metric and scikit-learn."""
    def pairs(counts):
        return (counts * (counts - 1) / 2).sum()

    n = table.sum()
    index, rows, cols = pairs(table), pairs(table.sum(1)), pairs(table.sum(0))
    expected = rows * cols / torch.clamp(n * (n - 1) / 2, min=1)
    maximum = (rows + cols) / 2
    if maximum == expected:
        return 1.0
    return float((index - expected) / (maximum - expected))


def adjusted_rand_index(true_ids, pred_ids) -> float:
    """ARI between two labelings of the same pixels (any shapes, flattened); 1.0 where it is undefined."""
    return ari_of_contingency(contingency(true_ids, pred_ids))


def video_ari(true_ids, pred_ids, valid=None, ignore_background: bool = False) -> float:
    """ARI of one video over all its frames, as the official SAVi metric (`Ari`, `AriNoBg`): `true_ids`,
    `pred_ids` (frames, H, W) integer ids, `valid` (frames, H, W) the padding mask (True / 1 where the ground
    truth counts) or None; `ignore_background` leaves out the pixels whose true id is 0 (FG-ARI). 1.0 where the
    index is undefined, including a video with no pixel left (the official convention)."""
    true_ids, pred_ids = torch.as_tensor(true_ids), torch.as_tensor(pred_ids)
    keep = torch.ones_like(true_ids, dtype=torch.bool) if valid is None else torch.as_tensor(valid).bool()
    if ignore_background:
        keep = keep & (true_ids != 0)
    return ari_of_contingency(contingency(true_ids, pred_ids, keep))


def foreground_ari(true_ids, pred_ids) -> float:
    """FG-ARI of one video: the ARI over the pixels whose true id is not background (nan if there are none)."""
    true_ids, pred_ids = torch.as_tensor(true_ids), torch.as_tensor(pred_ids)
    foreground = true_ids != 0
    if not foreground.any():
        return float("nan")
    return adjusted_rand_index(true_ids[foreground], pred_ids[foreground])


def object_slot_iou(true_ids, pred_ids, valid=None) -> torch.Tensor:
    """IoU (objects, slots) float64 between every ground-truth object present in the video (ids != 0, in increasing
    order) and every predicted label present, each mask taken over all frames; only `valid` pixels count."""
    true_ids, pred_ids = torch.as_tensor(true_ids).flatten(), torch.as_tensor(pred_ids).flatten()
    if valid is not None:
        valid = torch.as_tensor(valid).flatten().bool()
        true_ids, pred_ids = true_ids[valid], pred_ids[valid]
    objects = torch.unique(true_ids[true_ids != 0])
    slots = torch.unique(pred_ids)
    true_onehot = (true_ids[:, None] == objects[None]).double()
    pred_onehot = (pred_ids[:, None] == slots[None]).double()
    intersection = true_onehot.T @ pred_onehot
    union = true_onehot.sum(0)[:, None] + pred_onehot.sum(0)[None] - intersection
    return intersection / union


def mean_best_overlap(true_ids, pred_ids, valid=None) -> float:
    """mBO of one video (VideoSAUR's `VideoIoU(ignore_background=True, matching="overlap")`): for each object, the
    best IoU of any slot mask with it over all frames; the mean over objects (nan if there are none)."""
    iou = object_slot_iou(true_ids, pred_ids, valid)
    if iou.shape[0] == 0:
        return float("nan")
    return float(iou.max(dim=1).values.mean())


def hungarian_miou(true_ids, pred_ids, valid=None) -> float:
    """mIoU of one video: objects matched one-to-one to slots (Hungarian, maximising the total IoU over all
    frames); the mean IoU over objects, an unmatched object counting 0 (nan if there are no objects)."""
    from scipy.optimize import linear_sum_assignment

    iou = object_slot_iou(true_ids, pred_ids, valid)
    if iou.shape[0] == 0:
        return float("nan")
    rows, cols = linear_sum_assignment(iou.numpy(), maximize=True)
    return float(iou[rows, cols].sum() / iou.shape[0])


def object_discovery_metrics(pred_ids, true_ids) -> dict:
    """Mean FG-ARI and mIoU over videos, for training-time monitoring. pred_ids, true_ids: (batch, frames, H, W)
    integer ids (or (frames, H, W) for one video); videos without foreground are left out of the means."""
    pred_ids, true_ids = torch.as_tensor(np.asarray(pred_ids)), torch.as_tensor(np.asarray(true_ids))
    if pred_ids.shape != true_ids.shape:
        raise ValueError(f"predicted ids {tuple(pred_ids.shape)} and true ids {tuple(true_ids.shape)} differ in shape")
    if pred_ids.dim() == 3:
        pred_ids, true_ids = pred_ids[None], true_ids[None]
    ari = np.array([foreground_ari(t, p) for t, p in zip(true_ids, pred_ids)])
    iou = np.array([hungarian_miou(t, p) for t, p in zip(true_ids, pred_ids)])
    return {"fg_ari": float(np.nanmean(ari)), "miou": float(np.nanmean(iou))}


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
    "adjusted_rand_index",
    "contingency",
    "foreground_ari",
    "hungarian_miou",
    "mean_best_overlap",
    "object_discovery_metrics",
    "object_slot_iou",
    "psnr",
    "slot_ids",
    "ssim",
    "video_ari",
    "video_prediction_metrics",
]
