"""`SAViVideoProcessor.preprocess_examples`, the official MOVi evaluation pipeline, against the official ops'
definitions worked out independently here: resize_small's size (float32, round half to even), bilinear and nearest
resizing with half-pixel centres and no antialiasing, flow_to_rgb (Python's colorsys in float64), SAVi++'s depth
transform (log_plus, in float64), the padding of boxes, instances and frames. (Measured against TensorFlow itself on
the same arrays, outside the test suite: identical resizes; flow_to_rgb identical except 1-6 values per million one
uint8 step apart, where TensorFlow's float32 atan2 / pow round differently.)"""

import colorsys

import numpy as np
import pytest
import torch

from slotssm_hf import SAViVideoProcessor
from slotssm_hf.models.video_processing_savi import flow_to_rgb, resize_bilinear, resize_nearest, resize_small_shape


@pytest.mark.parametrize(
    "height,width,size,expected",
    [(128, 128, 64, (64, 64)), (96, 128, 64, (64, 85)), (2, 5, 1, (1, 2)), (6, 10, 4, (4, 7)), (10, 25, 5, (5, 12))],
)
def test_resize_small_keeps_the_aspect_ratio_rounding_half_to_even(height, width, size, expected):
    assert resize_small_shape(height, width, size) == expected  # 2.5 -> 2, 6.67 -> 7, 12.5 -> 12


def test_bilinear_and_nearest_use_half_pixel_centres_without_antialiasing():
    rng = np.random.default_rng(0)
    image = rng.random((2, 3, 8, 12), dtype=np.float32)
    # A factor of 2: each output pixel is the mean of its 2 x 2 block (no wider antialiasing filter).
    halved = image.reshape(2, 3, 4, 2, 6, 2).mean(axis=(3, 5))
    np.testing.assert_allclose(resize_bilinear(torch.from_numpy(image), (4, 6)).numpy(), halved, rtol=0, atol=1e-6)
    # Upsampling: pixel centres (i + 0.5) * in / out - 0.5, clamped at the borders.
    row = torch.tensor([[0.0, 1.0, 2.0, 3.0]])
    np.testing.assert_allclose(resize_bilinear(row, (1, 8))[0].numpy(), [0, 0.25, 0.75, 1.25, 1.75, 2.25, 2.75, 3])
    ids = torch.arange(12).reshape(3, 4)
    assert resize_nearest(ids, (1, 2)).tolist() == [[5, 7]]  # floor((i + 0.5) * scale): rows 1, columns 1 and 3
    assert resize_nearest(ids, (6, 4))[:, 0].tolist() == [0, 0, 4, 4, 8, 8]


def test_flow_to_rgb_is_the_official_hsv_picture_quantised_to_uint8():
    rng = np.random.default_rng(1)
    flow = (rng.standard_normal((2, 5, 7, 2)) * 3).astype(np.float32)
    ours = flow_to_rgb(torch.from_numpy(flow)).numpy()
    scaling = 50.0 / np.hypot(5, 7)
    expected = np.empty(flow.shape[:-1] + (3,))
    for index in np.ndindex(flow.shape[:-1]):
        x, y = flow[index].astype(np.float64)
        hue = (np.arctan2(y, x) / np.pi + 1) / 2
        rgb = colorsys.hsv_to_rgb(hue % 1.0, min(np.hypot(x, y) * scaling, 1.0), 1.0)
        expected[index] = np.floor(np.array(rgb) * 255.5) / 255
    assert np.abs(ours - expected).max() <= 1 / 255 + 1e-6  # float32 against float64: one step at a boundary
    assert np.mean(np.isclose(ours, expected, atol=1e-6)) > 0.99


def movi_like(frames=5, height=8, width=8, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "video": rng.integers(0, 256, (frames, height, width, 3), dtype=np.uint8),
        "segmentations": rng.integers(0, 6, (frames, height, width, 1)).astype(np.uint8),
        "instances": {"bboxes": [np.array([[0.1, 0.2, 0.3, 0.4]] * 2, np.float32), np.array([[0.5, 0.5, 0.9, 0.9]],
                                                                                            np.float32),
                                 np.array([[0.2, 0.2, 0.6, 0.6]], np.float32)],
                      "bbox_frames": [np.array([0, 1]), np.array([2]), np.array([0])]},
        "backward_flow": rng.standard_normal((frames, height, width, 2)).astype(np.float32),
    }  # fmt: skip


def test_official_pipeline_pads_boxes_instances_and_frames_as_the_official_code():
    example = movi_like()
    batch = SAViVideoProcessor(size={"shortest_edge": 4}).preprocess_examples(example, num_frames=7, max_instances=2)
    assert batch["pixel_values_videos"].shape == (1, 7, 3, 4, 4) and batch["flow"].shape == (1, 7, 3, 4, 4)
    # First-frame boxes: instance 0 visible in frame 0; instance 1 only later (the no-track box); instance 2 dropped.
    assert torch.equal(batch["boxes"][0], torch.tensor([[0.1, 0.2, 0.3, 0.4], [0, 0, 0, 0]]))
    # Ids beyond max_instances are background; nearest picks pixels 1, 3, 5, 7; padded frames are zeros.
    ids = example["segmentations"][..., 0].astype(np.int64)[:, 1::2, 1::2]
    ids[ids > 2] = 0
    assert batch["segmentations"][0, :5].tolist() == ids.tolist() and batch["segmentations"][0, 5:].eq(0).all()
    assert batch["padding_mask"][0].flatten(1).all(1).tolist() == [True] * 5 + [False] * 2
    assert batch["pixel_values_videos"][0, 5:].eq(0).all()
    frames = example["video"].astype(np.float32) * np.float32(1 / 255)
    halved = frames.reshape(5, 4, 2, 4, 2, 3).mean(axis=(2, 4)).transpose(0, 3, 1, 2)
    np.testing.assert_allclose(batch["pixel_values_videos"][0, :5].numpy(), halved, rtol=0, atol=1e-6)
    # The flow is resized, its components scaled by the size ratio (1/2), then drawn.
    flow = example["backward_flow"].reshape(5, 4, 2, 4, 2, 2).mean(axis=(2, 4)) * 0.5
    drawn = flow_to_rgb(torch.from_numpy(flow)).permute(0, 3, 1, 2).numpy()
    np.testing.assert_allclose(batch["flow"][0, :5].numpy(), drawn, rtol=0, atol=1 / 255 + 1e-6)


def test_depth_is_log_plus_transformed_after_the_resize_when_the_model_reconstructs_depth():
    example = movi_like()
    example["depth"] = np.random.default_rng(2).uniform(2.5, 30.0, (5, 8, 8, 1)).astype(np.float32)
    processor = SAViVideoProcessor(size={"shortest_edge": 4})
    savi_pp = processor.preprocess_examples(example, num_frames=7, targets={"flow": 3, "depth": 1})
    # The official transform_depth(transform='log_plus') after resize_small, in float64: log(1 + the 2 x 2 mean).
    resized = example["depth"].astype(np.float64).reshape(5, 4, 2, 4, 2, 1).mean(axis=(2, 4)).transpose(0, 3, 1, 2)
    np.testing.assert_allclose(savi_pp["depth"][0, :5].numpy(), np.log(1.0 + resized), rtol=1e-6, atol=0)
    assert savi_pp["depth"][0, 5:].eq(0).all()  # zero-padded frames: log(1 + 0)
    # The labels the model's loss takes: the targets along channels in config.targets order.
    assert torch.equal(savi_pp["labels"], torch.cat([savi_pp["flow"], savi_pp["depth"]], dim=2))
    # A model that does not reconstruct depth (SAVi-S/M/L) gets the depth untransformed, as the official configs.
    savi = processor.preprocess_examples(example, num_frames=7, targets={"flow": 3})
    np.testing.assert_allclose(savi["depth"][0, :5].numpy(), resized, rtol=1e-6, atol=0)
    assert torch.equal(savi["labels"], savi["flow"])
    assert "labels" not in processor.preprocess_examples(example, num_frames=7)


def test_a_target_the_example_lacks_or_of_other_channels_is_refused_by_name():
    processor = SAViVideoProcessor(size={"shortest_edge": 4})
    with pytest.raises(ValueError, match="example 0: the model reconstructs depth .* no field 'depth'"):
        processor.preprocess_examples(movi_like(), targets={"flow": 3, "depth": 1})
    with pytest.raises(ValueError, match="reconstructs flow with 2 channels .* official pipeline gives 3"):
        processor.preprocess_examples(movi_like(), targets={"flow": 2})


def test_dense_boxes_as_load_movi_gives_them_match_the_sparse_instances():
    example = movi_like()
    dense = np.zeros((5, 3, 4), np.float32)
    for k, (boxes, frames) in enumerate(zip(example["instances"]["bboxes"], example["instances"]["bbox_frames"])):
        dense[frames, k] = boxes
    processor = SAViVideoProcessor(size={"shortest_edge": 8})
    sparse = processor.preprocess_examples(example, max_instances=4)
    densified = processor.preprocess_examples({**{k: v for k, v in example.items() if k != "instances"},
                                               "boxes": dense}, max_instances=4)  # fmt: skip
    assert torch.equal(sparse["boxes"], densified["boxes"]) and sparse["boxes"].shape == (1, 4, 4)
    assert sparse["pixel_values_videos"].shape == (1, 24, 3, 8, 8)  # the official 24 frames by default


def test_quantised_flow_and_mismatched_segmentations_are_refused_by_field():
    processor = SAViVideoProcessor()
    example = movi_like()
    with pytest.raises(ValueError, match="field 'backward_flow' is still quantised"):
        processor.preprocess_examples({**example, "backward_flow": np.zeros((5, 8, 8, 2), np.uint16)})
    with pytest.raises(ValueError, match="field 'segmentations' has shape"):
        processor.preprocess_examples({**example, "segmentations": np.zeros((5, 4, 8), np.uint8)})
