"""The ConvS5 video processor: its defaults give the frames of the official Moving-MNIST pipeline."""

import numpy as np
import torch

from slotssm_hf import ConvS5VideoProcessor


def test_processor_defaults_give_the_official_frames():
    rng = np.random.default_rng(0)
    video = rng.integers(0, 256, (6, 64, 64), dtype=np.uint8)
    pixels = ConvS5VideoProcessor()(np.repeat(video[..., None], 3, -1), num_frames=6)["pixel_values_videos"]
    assert pixels.shape == (1, 6, 1, 64, 64)
    torch.testing.assert_close(pixels[0, :, 0], torch.from_numpy(2 * (video / 255.0) - 1).float(), atol=1e-6, rtol=0)
