"""FG-ARI and mIoU against brute-force definitions and scikit-learn; the video prediction metrics (MSE, PSNR,
SSIM) against their definitions."""

import itertools

import numpy as np
import pytest
import torch
from sklearn.metrics import adjusted_rand_score

from slotssm_hf.evaluation.metrics import (
    adjusted_rand_index,
    foreground_ari,
    hungarian_miou,
    object_discovery_metrics,
    slot_ids,
    video_prediction_metrics,
)
from slotssm_hf.training.metrics import ObjectDiscoveryMetrics


def brute_force_ari(a, b):
    """The Rand index adjusted for chance by explicit pair counting over all pixel pairs."""
    a, b = np.asarray(a).ravel(), np.asarray(b).ravel()
    n = len(a)
    pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
    same_a = np.array([a[i] == a[j] for i, j in pairs])
    same_b = np.array([b[i] == b[j] for i, j in pairs])
    index = np.sum(same_a & same_b)
    expected = same_a.sum() * same_b.sum() / len(pairs)
    maximum = (same_a.sum() + same_b.sum()) / 2
    return 1.0 if maximum == expected else (index - expected) / (maximum - expected)


@pytest.mark.parametrize("seed", range(6))
def test_ari_matches_pair_counting_and_sklearn(seed):
    rng = np.random.default_rng(seed)
    a = rng.integers(0, rng.integers(1, 5), size=40)
    b = rng.integers(0, rng.integers(1, 5), size=40)
    assert adjusted_rand_index(a, b) == pytest.approx(brute_force_ari(a, b), abs=1e-12)
    assert adjusted_rand_index(a, b) == pytest.approx(adjusted_rand_score(a, b), abs=1e-12)


@pytest.mark.parametrize(
    "a,b",
    [([0, 0, 0, 0], [1, 1, 1, 1]), ([0, 1, 2, 3], [3, 2, 1, 0]), ([0, 0, 1, 1], [5, 5, 7, 7]), ([0, 0, 1, 1], [0, 1, 0, 1])],
)
def test_ari_edge_cases_follow_sklearn(a, b):
    assert adjusted_rand_index(a, b) == pytest.approx(adjusted_rand_score(a, b), abs=1e-12)


def test_fg_ari_ignores_how_the_background_is_split():
    true = np.array([[0, 0, 1, 1], [0, 2, 2, 1]])
    pred = np.array([[3, 4, 5, 5], [0, 6, 6, 5]])  # objects perfectly separated, background scattered
    assert foreground_ari(true, pred) == 1.0
    fg = true != 0
    scrambled = pred.copy()
    scrambled[fg] = [5, 6, 6, 5, 6]
    assert foreground_ari(true, scrambled) == pytest.approx(adjusted_rand_score(true[fg], scrambled[fg]))
    assert np.isnan(foreground_ari(np.zeros((2, 2)), pred[:, :2]))


def brute_force_miou(true, pred, num_slots):
    objects = [k for k in np.unique(true) if k != 0]
    best = 0.0
    for assignment in itertools.permutations(range(num_slots), min(len(objects), num_slots)):
        ious = []
        for obj, slot in zip(objects, assignment):
            inter = np.sum((true == obj) & (pred == slot))
            union = np.sum((true == obj) | (pred == slot))
            ious.append(inter / union)
        best = max(best, sum(ious) / len(objects))
    return best


@pytest.mark.parametrize("seed", range(5))
def test_miou_matches_the_best_assignment_by_brute_force(seed):
    rng = np.random.default_rng(seed)
    num_slots = int(rng.integers(2, 5))
    true = rng.integers(0, int(rng.integers(2, 6)), size=(3, 6, 6))
    pred = np.where(rng.random(true.shape) < 0.6, true % num_slots, rng.integers(0, num_slots, true.shape))
    assert hungarian_miou(true, pred) == pytest.approx(brute_force_miou(true, pred, num_slots), abs=1e-12)


def test_batch_metrics_average_videos_and_check_shapes():
    true = np.array([[[[0, 1], [2, 2]]], [[[1, 1], [0, 0]]]])  # (2 videos, 1 frame, 2, 2)
    pred = np.array([[[[0, 1], [2, 2]]], [[[3, 0], [0, 0]]]])
    metrics = object_discovery_metrics(pred, true)
    assert metrics["fg_ari"] == pytest.approx((1.0 + adjusted_rand_score([1, 1], [3, 0])) / 2)
    assert metrics["miou"] == pytest.approx((1.0 + 0.5) / 2)
    with pytest.raises(ValueError, match=r"predicted ids \(2, 1, 2, 2\) and true ids \(2, 1, 2, 3\) differ"):
        object_discovery_metrics(pred, np.zeros((2, 1, 2, 3)))


def test_trainer_hooks_reduce_masks_to_slot_ids_and_keep_the_reconstruction():
    masks, reconstruction = torch.rand(2, 3, 4, 1, 5, 5).softmax(dim=2), torch.rand(2, 3, 3, 5, 5)
    ids, kept = ObjectDiscoveryMetrics.preprocess_logits((reconstruction, masks, torch.rand(2, 3, 4, 8)), None)
    assert ids.shape == (2, 3, 5, 5) and torch.equal(ids.long(), slot_ids(masks)) and torch.equal(kept, reconstruction)
    # Without frames of the masks' size there is nothing to score the reconstruction on: the ids alone.
    assert torch.equal(ObjectDiscoveryMetrics.preprocess_logits((masks, torch.rand(2, 3, 3, 4, 4)), None).long(), ids.long())
    with pytest.raises(ValueError, match="outputs no per-slot masks"):
        ObjectDiscoveryMetrics.preprocess_logits((torch.rand(2, 3, 3, 5, 5),), None)


def test_trainer_hooks_report_the_psnr_of_frames_and_of_object_pixels():
    """PSNR in [0, 1] pixels, against float64 loops: the mean over frames of each frame's PSNR, and per video the PSNR
    of the mean squared error over its object pixels (every channel), averaged over the videos that have objects."""
    from transformers import EvalPrediction

    rng = np.random.default_rng(0)
    mean, std = np.array([0.4, 0.5, 0.6]), np.array([0.2, 0.25, 0.3])
    frames = rng.normal(size=(3, 2, 3, 4, 4))
    reconstruction = frames + rng.normal(scale=0.3, size=frames.shape)
    true = rng.integers(0, 3, size=(3, 2, 4, 4))
    true[2] = 0  # a video without objects
    masks = torch.rand(3, 2, 4, 1, 4, 4)
    ids, kept = ObjectDiscoveryMetrics.preprocess_logits((torch.tensor(reconstruction, dtype=torch.float32), masks), None)
    metrics = ObjectDiscoveryMetrics(torch.tensor(mean)[:, None, None], torch.tensor(std)[:, None, None])(
        EvalPrediction(predictions=(ids.numpy(), kept.numpy()), label_ids=true, inputs=frames.astype(np.float32))
    )
    pixels = frames * std[:, None, None] + mean[:, None, None]
    drawn = np.clip(reconstruction * std[:, None, None] + mean[:, None, None], 0, 1)
    frame_psnr = [-10 * np.log10(np.mean((drawn[v, t] - pixels[v, t]) ** 2)) for v in range(3) for t in range(2)]
    object_psnr = []
    for v in range(2):
        errors = [(drawn[v, t, c, y, x] - pixels[v, t, c, y, x]) ** 2
                  for t in range(2) for c in range(3) for y in range(4) for x in range(4) if true[v, t, y, x] > 0]
        object_psnr.append(-10 * np.log10(np.mean(errors)))
    assert metrics["psnr"] == pytest.approx(np.mean(frame_psnr), abs=1e-4)  # float32 frames: about 1e-6 dB apart
    assert metrics["object_psnr"] == pytest.approx(np.mean(object_psnr), abs=1e-4)
    assert {"fg_ari", "miou"} <= set(metrics)


# Hand-made segmentations of one 4 x 4 video (two frames) with known answers, worked out by pair counting:
# objects 1 and 2 of 4 pixels each on 8 background pixels; "split" cuts object 1 into halves of 2 pixels;
# "swapped" exchanges the slots of the two objects between the frames (a slot that stops tracking its object).
FRAME = np.array([[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 0, 0], [2, 2, 0, 0]])


def hand_made(case):
    true = np.stack([FRAME, FRAME])
    pred = true.copy()
    if case == "permuted":
        pred = np.choose(true, [3, 0, 5])  # background -> 3, object 1 -> 0, object 2 -> 5
    elif case == "merged":
        pred[true == 2] = 1
    elif case == "split":
        pred[:, 0, 2:] = 4  # object 1's top row to another slot
    elif case == "swapped":
        pred[1] = np.choose(FRAME, [0, 2, 1])
    return pred, true


@pytest.mark.parametrize(
    "case,fg_ari,miou",
    [
        ("perfect", 1.0, 1.0),
        ("permuted", 1.0, 1.0),  # slot ids are arbitrary
        ("merged", 0.0, (4 / 8 + 0) / 2),  # one slot for both objects: no better than chance; 1 IoU of 1/2
        ("split", 8 / 11, (2 / 4 + 1) / 2),  # pairs: index 40, expected 56/3, max 48
        ("swapped", -1 / 14, (4 / 12 + 4 / 12) / 2),  # pairs: index 24, expected 392/15, max 56
    ],
)
def test_metrics_of_hand_made_segmentations(case, fg_ari, miou):
    pred, true = hand_made(case)
    metrics = object_discovery_metrics(pred, true)
    assert metrics["fg_ari"] == pytest.approx(fg_ari, abs=1e-12)
    assert metrics["miou"] == pytest.approx(miou, abs=1e-12)


def ssim_by_windows(x, y, size=11, sigma=1.5, c1=0.01**2, c2=0.03**2):
    """SSIM of two 2-D images from its definition: weighted statistics of every whole 11 x 11 window."""
    taps = np.exp(-0.5 * ((np.arange(size) - size // 2) / sigma) ** 2)
    weights = np.outer(taps, taps) / taps.sum() ** 2
    values = []
    for i in range(x.shape[0] - size + 1):
        for j in range(x.shape[1] - size + 1):
            a, b = x[i : i + size, j : j + size], y[i : i + size, j : j + size]
            mean_a, mean_b = (weights * a).sum(), (weights * b).sum()
            var_a, var_b = (weights * (a - mean_a) ** 2).sum(), (weights * (b - mean_b) ** 2).sum()
            cov = (weights * (a - mean_a) * (b - mean_b)).sum()
            values.append(
                (2 * mean_a * mean_b + c1) * (2 * cov + c2) / ((mean_a**2 + mean_b**2 + c1) * (var_a + var_b + c2))
            )
    return np.mean(values)


def test_video_prediction_metrics_follow_their_definitions():
    g = torch.Generator().manual_seed(0)
    targets = torch.rand(2, 3, 2, 16, 16, generator=g) * 2 - 1
    predictions = (targets + 0.3 * torch.randn(targets.shape, generator=g)).clamp(-1, 1)
    metrics = video_prediction_metrics(predictions, targets)
    x, y = ((predictions.double() + 1) / 2).numpy(), ((targets.double() + 1) / 2).numpy()
    per_frame_mse = ((x - y) ** 2).mean(axis=(2, 3, 4))
    expected_ssim = np.mean([ssim_by_windows(x[b, t, c], y[b, t, c]) for b in range(2) for t in range(3) for c in range(2)])
    np.testing.assert_allclose(metrics["mse"], per_frame_mse.mean(), rtol=1e-10)
    np.testing.assert_allclose(metrics["psnr"], (-10 * np.log10(per_frame_mse)).mean(), rtol=1e-10)
    np.testing.assert_allclose(metrics["ssim"], expected_ssim, rtol=1e-10)
    assert video_prediction_metrics(targets, targets)["ssim"] == pytest.approx(1.0)
