"""The object-discovery protocol's metrics on hand-made segmentations with answers worked out by hand, against
scikit-learn's ARI and scipy's assignment; the per-slot masks of a model output; LPIPS as the `lpips` package
defines its inputs; and the SlotSSM / ConvS5 processors taking MOVi and Moving-MNIST samples."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment
from sklearn.metrics import adjusted_rand_score

from slotssm_hf import ConvS5VideoProcessor, SlotSSMVideoProcessor
from slotssm_hf.evaluation.metrics import hungarian_miou, mean_best_overlap, video_ari
from slotssm_hf.evaluation.object_discovery import mean_metrics, slot_masks, video_metrics
from slotssm_hf.evaluation.video_prediction import VideoPredictionProtocol, prediction_metrics

# One 4 x 4 video of two frames: objects 1 and 2 of 4 pixels each on 8 background pixels.
FRAME = np.array([[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 0, 0], [2, 2, 0, 0]])
TRUE = np.stack([FRAME, FRAME])


def test_one_slot_for_both_objects_counts_twice_in_mbo_once_in_hungarian_miou():
    pred = np.where(TRUE == 0, 0, 7)  # slot 7 covers both objects
    # Each object's best overlap is slot 7: IoU 8 / 16 = 1/2 for both. One-to-one: one object gets slot 7 (1/2),
    # the other only the background slot (IoU 0).
    assert mean_best_overlap(TRUE, pred) == pytest.approx(0.5)
    assert hungarian_miou(TRUE, pred) == pytest.approx(0.25)
    iou = np.array([[0.0, 0.5], [0.0, 0.5]])  # objects x slots (0, 7)
    rows, cols = linear_sum_assignment(iou, maximize=True)
    assert hungarian_miou(TRUE, pred) == pytest.approx(iou[rows, cols].sum() / 2)


def test_a_slot_that_switches_objects_halfway_loses_in_every_video_metric():
    pred = TRUE.copy()
    pred[1] = np.choose(FRAME, [0, 2, 1])  # frame 2: the slots of the two objects swapped
    metrics = video_metrics(TRUE, pred, np.ones_like(TRUE, bool))
    # FG-ARI over the video: 16 object pixels, pairs: index 24, expected 392/15, max 56 -> -1/14 (worked by hand).
    assert metrics["fg_ari"] == pytest.approx(-1 / 14)
    # Per frame each segmentation is perfect: without the first frame, FG-ARI is 1.
    assert metrics["fg_ari_first_excluded"] == 1.0
    assert metrics["mbo"] == pytest.approx(4 / 12) and metrics["miou"] == pytest.approx(4 / 12)
    fg = TRUE != 0
    assert metrics["fg_ari"] == pytest.approx(adjusted_rand_score(TRUE[fg], pred[fg]))
    assert metrics["ari"] == pytest.approx(adjusted_rand_score(TRUE.ravel(), pred.ravel()))


def test_padded_pixels_do_not_count_and_a_video_without_foreground_scores_one():
    rng = np.random.default_rng(0)
    true, pred = rng.integers(0, 4, (3, 5, 5)), rng.integers(0, 3, (3, 5, 5))
    valid = np.ones_like(true, bool)
    valid[2] = False  # a padded frame
    pred_changed = pred.copy()
    pred_changed[2] = 0
    assert video_ari(true, pred, valid) == video_ari(true, pred_changed, valid)
    keep = valid & (true != 0)
    assert video_ari(true, pred, valid, ignore_background=True) == pytest.approx(
        adjusted_rand_score(true[keep], pred[keep]))
    # The official convention: no foreground pixel left -> 1.0 (and counted in the mean); mBO / mIoU are nan there
    # and left out of the means, as VideoSAUR does.
    background = np.zeros_like(true)
    assert video_ari(background, pred, ignore_background=True) == 1.0
    scores = video_metrics(background, pred, valid)
    assert np.isnan(scores["mbo"]) and np.isnan(scores["miou"])
    means = mean_metrics([scores, {**scores, "fg_ari": 0.5, "mbo": 0.25, "miou": 0.75}])
    assert means["fg_ari"] == 0.75 and means["mbo"] == 0.25 and means["miou"] == 0.75


def test_slot_masks_are_the_alpha_masks_else_the_last_attention_upsampled_nearest():
    alphas = torch.rand(2, 3, 5, 1, 8, 8)  # (batch, frames, slots, 1, H, W)
    assert torch.equal(slot_masks(SimpleNamespace(masks=alphas, attentions=None), (8, 8)), alphas[:, :, :, 0])
    # (batch, frames, heads, slots, tokens) of a 4 x 4 token grid, per slot block: the last block's, mean over heads,
    # each token repeated over its 2 x 2 pixels.
    attentions = (torch.rand(2, 3, 4, 5, 16), torch.rand(2, 3, 4, 5, 16))
    expected = attentions[-1].mean(dim=2).reshape(2, 3, 5, 4, 4).repeat_interleave(2, -2).repeat_interleave(2, -1)
    masks = slot_masks(SimpleNamespace(masks=None, attentions=attentions), (8, 8))
    torch.testing.assert_close(masks, expected, rtol=0, atol=0)
    with pytest.raises(ValueError, match="neither per-slot masks nor attention maps .* output_attentions=True"):
        slot_masks(SimpleNamespace(masks=None, attentions=None), (8, 8))


def test_lpips_compares_rgb_frames_in_minus_one_to_one_one_score_per_frame(monkeypatch):
    lpips = pytest.importorskip("lpips", reason="LPIPS is optional (pip install lpips); video prediction skips it")

    def no_download(*args, **kwargs):
        raise AssertionError("the test must not download weights")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_download)
    torch.manual_seed(0)
    # pnet_rand: a random AlexNet trunk instead of torchvision's ImageNet download; the linear layers are the
    # package's own file. What is checked is the call, not the weights.
    metric = lpips.LPIPS(net="alex", pnet_rand=True, verbose=False).eval()
    generator = torch.Generator().manual_seed(0)
    sequence = torch.rand(6, 1, 32, 32, generator=generator) * 2 - 1  # (frames, 1, H, W) in [-1, 1]: Moving-MNIST
    predicted = torch.rand(1, 3, 1, 32, 32, generator=generator) * 2.4 - 1.2  # overshoots [-1, 1]
    model = SimpleNamespace(rollout=lambda context, steps: predicted[:, :steps])  # a stand-in of ConvS5's rollout
    scores = prediction_metrics(model, sequence, VideoPredictionProtocol(context_frames=3), "sequence 0", metric)
    with torch.no_grad():  # lpips.LPIPS called directly: one RGB frame at a time, in [-1, 1]
        expected = [metric(predicted[0, t : t + 1].clamp(-1, 1).repeat(1, 3, 1, 1),
                           sequence[3 + t : 4 + t].repeat(1, 3, 1, 1)).item() for t in range(3)]  # fmt: skip
    assert scores["lpips"] == pytest.approx(np.mean(expected), rel=1e-5)


def test_slotssm_processor_takes_a_movi_sample_with_aligned_segmentations():
    video = np.zeros((3, 64, 96, 3), np.uint8)
    segmentations = np.zeros((3, 64, 96, 1), np.uint8)
    segmentations[:, 10:20, 40:50] = 4
    batch = SlotSSMVideoProcessor().preprocess_examples({"video": video, "segmentations": segmentations},
                                                        num_frames=4)  # fmt: skip
    assert batch["pixel_values_videos"].shape == (1, 4, 3, 128, 128)
    # Short side 64 -> 128 (x2), long side 96 -> 192, centre crop 128 drops 32 columns on the left.
    expected = np.zeros((128, 128), np.int64)
    expected[20:40, 80 - 32 : 100 - 32] = 4
    assert (batch["segmentations"][0, :3] == torch.from_numpy(expected)).all()
    assert batch["padding_mask"][0].flatten(1).all(1).tolist() == [True, True, True, False]
    assert batch["segmentations"][0, 3].eq(0).all()


def test_convs5_processor_takes_a_moving_mnist_sequence():
    sequence = np.random.default_rng(0).integers(0, 256, (5, 64, 64), dtype=np.uint8)  # (frames, H, W), grey
    batch = ConvS5VideoProcessor().preprocess_examples(sequence)
    expected = 2 * torch.from_numpy(sequence).float() / 255 - 1
    assert batch["pixel_values_videos"].shape == (1, 5, 1, 64, 64)
    torch.testing.assert_close(batch["pixel_values_videos"][0, :, 0], expected, rtol=0, atol=1e-5)
