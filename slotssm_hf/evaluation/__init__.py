"""The papers' evaluation protocols and their metrics, and the `slotssm-hf evaluate` command:

- `metrics`: ARI / FG-ARI as the official SAVi metric, mBO (VideoSAUR), Hungarian mIoU, PSNR, SSIM;
- `object_discovery`: unsupervised video object discovery on MOVi (SAVi's table protocol: official preprocessing,
  temporal slices with the recurrent state carried across, per-video scores over all frames);
- `video_prediction`: ConvS5's long-horizon video prediction on Moving-MNIST (rollouts after the context frames);
- `image_classification`: GrootV's top-1 / top-5 on an image folder with the official evaluation transform;
- `evaluate`: the command line (`slotssm-hf evaluate MODEL --dataset FOLDER_OR_HUB_ID --split validation`).

Importing this package costs NumPy and torch only.
"""

from .image_classification import ImageClassificationProtocol
from .metrics import (
    adjusted_rand_index,
    foreground_ari,
    hungarian_miou,
    mean_best_overlap,
    object_discovery_metrics,
    psnr,
    slot_ids,
    ssim,
    video_ari,
    video_prediction_metrics,
)
from .object_discovery import ObjectDiscoveryProtocol, run_in_slices, video_metrics

__all__ = [
    "ImageClassificationProtocol",
    "ObjectDiscoveryProtocol",
    "adjusted_rand_index",
    "foreground_ari",
    "hungarian_miou",
    "mean_best_overlap",
    "object_discovery_metrics",
    "psnr",
    "run_in_slices",
    "slot_ids",
    "ssim",
    "video_ari",
    "video_metrics",
    "video_prediction_metrics",
]
