"""The SAVi data convention for `SlotSSMVideoProcessor`: frames resized (short side) and centre-cropped to the
model's size, values in [0, 1] with no mean / std normalisation (the official pipeline's `convert_image_dtype`)."""

from .video_processing_slotssm import SlotSSMVideoProcessor


def savi_video_processor(image_size: int = 64, num_frames: int = 6) -> SlotSSMVideoProcessor:
    """A processor whose defaults produce what SAVi takes: `num_frames` consecutive frames (the official training
    window is 6, evaluation 24), bilinear short-side resize to `image_size` (the official `resize_small`), centre
    crop, rescale to [0, 1], no normalisation. Saved as `video_preprocessor_config.json` like any processor."""
    return SlotSSMVideoProcessor(
        size={"shortest_edge": image_size},
        crop_size={"height": image_size, "width": image_size},
        resample=2,  # PIL / torchvision bilinear
        do_normalize=False,
        image_mean=[0.0, 0.0, 0.0],
        image_std=[1.0, 1.0, 1.0],
        num_frames=num_frames,
    )


__all__ = ["savi_video_processor"]
