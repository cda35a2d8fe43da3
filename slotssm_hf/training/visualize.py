"""Pictures of what the slots do: input frames, reconstructions and per-slot masks over time, as a PNG grid or a
GIF, drawn with PIL only."""

import os
from pathlib import Path

import numpy as np
import torch

from ..atomic_files import write_atomically

# Distinct colours for slot segmentation overlays (RGB).
SLOT_COLORS = np.array(
    [
        (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
        (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128), (220, 190, 255),
    ],
    dtype=np.float32,
)  # fmt: skip


def to_uint8_frames(pixel_values, mean, std) -> np.ndarray:
    """Normalised frames (T, C, H, W) back to uint8 (T, H, W, 3) for display."""
    pixel_values = torch.as_tensor(pixel_values).detach().float().cpu()
    mean = torch.as_tensor(mean, dtype=torch.float32)[:, None, None]
    std = torch.as_tensor(std, dtype=torch.float32)[:, None, None]
    pixels = (pixel_values * std + mean).clamp(0, 1) * 255
    return pixels.round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def pixel_range(processor) -> tuple[list[float], list[float]]:
    """The per-channel (mean, std) that map a processor's frames back to [0, 1] pixels (frames * std + mean): its
    normalisation, or none where it does not normalise."""
    if not getattr(processor, "do_normalize", False):
        return [0.0] * 3, [1.0] * 3
    return list(processor.image_mean), list(processor.image_std)


def slot_rows(frames: np.ndarray, masks, reconstruction: np.ndarray | None = None) -> list[np.ndarray]:
    """Rows of a slot picture, each (T, H, W, 3) uint8: the frames, the reconstruction (if given), the
    segmentation (each pixel in the colour of the slot that claims it, blended with the frame), then one row per
    slot showing the frame through that slot's mask. masks: (T, num_slots, H, W) in [0, 1], one video's
    `slotssm_hf.evaluation.object_discovery.slot_masks`."""
    masks = torch.as_tensor(masks).detach().float().cpu().numpy()
    if masks.ndim == 5:
        masks = masks[:, :, 0]
    num_slots = masks.shape[1]
    colors = SLOT_COLORS[np.arange(num_slots) % len(SLOT_COLORS)]
    segmentation = colors[masks.argmax(axis=1)]  # (T, H, W, 3)
    rows = [frames]
    if reconstruction is not None:
        rows.append(reconstruction)
    rows.append((0.5 * frames + 0.5 * segmentation).astype(np.uint8))
    for slot in range(num_slots):
        rows.append((frames * masks[:, slot, :, :, None] + 255 * (1 - masks[:, slot, :, :, None])).astype(np.uint8))
    return rows


def grid_image(rows: list[np.ndarray], gap: int = 2):
    """A PIL image with one row per entry of `rows` (each (T, H, W, 3)) and one column per frame."""
    from PIL import Image

    num_rows, (frames, height, width, _) = len(rows), rows[0].shape
    canvas = np.full((num_rows * (height + gap) - gap, frames * (width + gap) - gap, 3), 255, np.uint8)
    for r, row in enumerate(rows):
        for t in range(frames):
            canvas[r * (height + gap) : r * (height + gap) + height, t * (width + gap) : t * (width + gap) + width] = row[t]
    return Image.fromarray(canvas)


def save_slot_pictures(path_stem: str, frames: np.ndarray, masks, reconstruction: np.ndarray | None = None,
                       scale: int = 2) -> list[str]:  # fmt: skip
    """Write `path_stem.png` (rows over all frames) and `path_stem.gif` (one column of rows per frame, animated),
    each written under a temporary name and renamed when complete. Returns the two paths."""
    from PIL import Image

    rows = slot_rows(frames, masks, reconstruction)
    picture = grid_image(rows)
    picture = picture.resize((picture.width * scale, picture.height * scale), Image.NEAREST)
    animation = [grid_image([row[t : t + 1] for row in rows]) for t in range(len(frames))]
    animation = [frame.resize((frame.width * scale, frame.height * scale), Image.NEAREST) for frame in animation]
    folder = os.path.dirname(os.path.abspath(path_stem))
    os.makedirs(folder, exist_ok=True)
    paths = []
    for suffix, save in [
        (".png", lambda f: picture.save(f, format="PNG")),
        (".gif", lambda f: animation[0].save(f, format="GIF", save_all=True, append_images=animation[1:], duration=200, loop=0)),
    ]:
        write_atomically(path_stem + suffix, save)
        paths.append(path_stem + suffix)
    return paths


# The learning curve's metrics: key in the Trainer's logs, title, format.
CURVE_METRICS = {
    "fg_ari": ("FG-ARI", "{:.3f}"),
    "miou": ("mIoU", "{:.3f}"),
    "psnr": ("PSNR (dB)", "{:.1f}"),
    "object_psnr": ("object PSNR (dB)", "{:.1f}"),
}


def learning_curve(log_history: list[dict], path_stem: str) -> list[str]:
    """The metrics of every evaluation of a run (the Trainer's `state.log_history`; the evaluation before training,
    logged with the prefix `untrained_`, is step 0) against the training step: `path_stem.md` (a table) and
    `path_stem.png` (one panel per metric; needs matplotlib), each written under a temporary name and renamed when
    complete. Returns the paths written."""
    points = {}
    for entry in log_history:
        for prefix in ("untrained_", "eval_"):
            values = {key: entry[prefix + key] for key in CURVE_METRICS if prefix + key in entry}
            if values:
                points[0 if prefix == "untrained_" else entry["step"]] = values
    steps = sorted(points)
    keys = [key for key in CURVE_METRICS if all(key in points[step] for step in steps)]
    if not steps or not keys:
        raise ValueError("the log history holds no evaluation with FG-ARI, mIoU or PSNR to draw")
    lines = ["| step | " + " | ".join(CURVE_METRICS[key][0] for key in keys) + " |", "|---" * (len(keys) + 1) + "|"]
    lines += [f"| {step} | " + " | ".join(CURVE_METRICS[key][1].format(points[step][key]) for key in keys) + " |"
              for step in steps]  # fmt: skip
    write_atomically(path_stem + ".md", lambda name: Path(name).write_text("\n".join(lines) + "\n"))
    try:
        import matplotlib
    except ImportError:
        print("the learning curve's plot needs matplotlib (pip install matplotlib); its table is written")
        return [path_stem + ".md"]
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(keys), figsize=(3.2 * len(keys), 3))
    for axis, key in zip(np.atleast_1d(axes), keys):
        axis.plot(steps, [points[step][key] for step in steps], marker="o")
        axis.set_title(CURVE_METRICS[key][0])
        axis.set_xlabel("training step")
        axis.grid(alpha=0.3)
    figure.tight_layout()
    write_atomically(path_stem + ".png", lambda name: figure.savefig(name, format="png", dpi=110))
    plt.close(figure)
    return [path_stem + ".md", path_stem + ".png"]


__all__ = [
    "learning_curve", "pixel_range", "save_slot_pictures", "slot_rows", "grid_image", "to_uint8_frames"
]
