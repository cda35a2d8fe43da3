"""Long-horizon video prediction on Moving-MNIST, the protocol of ConvS5's results (NVlabs/ConvSSM, TECO's
evaluation): each test sequence's first `context_frames` frames (100 in the official Moving-MNIST configs) go through
the model's parallel scan, the rest of the sequence is rolled out autoregressively (`model.rollout`: every prediction
fed back as the next input), and the rollout is compared with the true frames on frames mapped to [0, 1]: MSE,
PSNR and SSIM per frame (`slotssm_hf.evaluation.metrics.video_prediction_metrics`; SSIM with an 11-tap Gaussian
window of sigma 1.5), and LPIPS where the `lpips` package and its weights are installed; the mean over frames, then
over sequences.

Sequences are read from a `.npy` file in torchvision's Moving-MNIST layout, (frames, sequences, 64, 64) uint8
(`MovingMNIST/raw/mnist_test_seq.npy`, the 20-frame Srivastava test set: use `--context-frames 10`), or a folder
holding one. (The official ConvS5 sequences of 300-1300 frames are generated with its own script; save them in the
same layout.)
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .metrics import video_prediction_metrics

METRIC_NAMES = {"psnr": "PSNR", "ssim": "SSIM", "mse": "MSE", "lpips": "LPIPS"}
TORCHVISION_FILE = "mnist_test_seq.npy"


@dataclass
class VideoPredictionProtocol:
    """context_frames: frames given to the model; total_frames: context plus rollout (None: each sequence's
    length)."""

    context_frames: int = 100
    total_frames: int | None = None
    name: str = "moving-mnist-prediction"


def moving_mnist_file(source: str) -> Path:
    """The `.npy` file of `source`: the file itself, or the torchvision layout's file inside a folder."""
    path = Path(source)
    if path.is_file():
        return path
    found = sorted(path.glob(f"**/{TORCHVISION_FILE}")) or sorted(path.glob("**/*.npy"))
    if not found:
        raise ValueError(f"{source} holds no Moving-MNIST .npy file (torchvision's {TORCHVISION_FILE})")
    return found[0]


def moving_mnist_sequences(source: str):
    """(where, sequence (frames, H, W) uint8) for every sequence of the file (torchvision's layout)."""
    path = moving_mnist_file(source)
    data = np.load(path, mmap_mode="r")
    if data.ndim != 4 or data.dtype != np.uint8:
        raise ValueError(f"{path}: expected (frames, sequences, height, width) uint8 as torchvision's Moving-MNIST, "
                         f"got {data.shape} {data.dtype}")  # fmt: skip
    for index in range(data.shape[1]):
        yield f"{path} (sequence {index})", np.ascontiguousarray(data[:, index])


def lpips_metric():
    """LPIPS (AlexNet) from the `lpips` package, or None where it or its weights are not available."""
    try:
        import lpips

        return lpips.LPIPS(net="alex", verbose=False).eval()
    except Exception:  # not installed, or its backbone weights cannot be fetched offline
        return None


@torch.no_grad()
def prediction_metrics(model, sequence: torch.Tensor, protocol: VideoPredictionProtocol, where: str, lpips=None):
    """The protocol's scores of one preprocessed sequence (frames, C, H, W) in [-1, 1]. `lpips` (an `lpips.LPIPS`)
    takes each predicted and true frame as RGB (grey repeated) in [-1, 1], its input range; the mean over frames."""
    total = min(protocol.total_frames or len(sequence), len(sequence))
    if total <= protocol.context_frames:
        raise ValueError(f"{where}: {len(sequence)} frames leave nothing to predict after {protocol.context_frames} "
                         "context frames (--context-frames)")  # fmt: skip
    context, future = sequence[None, : protocol.context_frames], sequence[None, protocol.context_frames : total]
    predicted = model.rollout(context, future.shape[1])
    scores = video_prediction_metrics(predicted, future)
    if lpips is not None:
        to_rgb = (lambda x: x.expand(-1, 3, -1, -1)) if predicted.shape[2] == 1 else (lambda x: x)
        scores["lpips"] = float(lpips(to_rgb(predicted[0].clamp(-1, 1).float()), to_rgb(future[0].float())).mean())
    return scores


__all__ = ["METRIC_NAMES", "VideoPredictionProtocol", "moving_mnist_sequences", "prediction_metrics"]
