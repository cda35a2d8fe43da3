"""Video files for the tests: synthetic frames that survive lossy coding recognisably, written with PyAV (GIF with
PIL)."""

import av
import numpy as np
from PIL import Image


def synthetic_frames(num_frames, height, width, seed=0):
    """Smooth moving gradients plus a block: content that survives lossy coding recognisably."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    frames = []
    for t in range(num_frames):
        base = np.stack([(x * 2 + t * 7) % 256, (y * 3 + t * 5) % 256, ((x + y) + t * 11) % 256], axis=-1)
        top, left = rng.integers(0, height // 2), rng.integers(0, width // 2)
        base[top : top + height // 4, left : left + width // 4] = rng.integers(0, 256, 3)
        frames.append(base.astype(np.uint8))
    return np.stack(frames)


def write_video(path, frames, codec="h264", fps=25, options=None):
    if str(path).endswith(".gif"):
        images = [Image.fromarray(f) for f in frames]
        images[0].save(path, save_all=True, append_images=images[1:], duration=40, loop=0)
        return path
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps, options=options or {})
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv420p"
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return path
