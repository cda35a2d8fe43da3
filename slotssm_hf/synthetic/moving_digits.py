"""Seeded Moving-MNIST-style videos, generated offline: the data of the official ConvS5 Moving-MNIST runs, with
digits from a glyph set this module draws instead of the MNIST download.

The trajectories follow the official generator (Srivastava et al.'s scheme as the ConvS5 repository runs it):
each digit starts at a uniform position in [0, 1]^2 of the free canvas with a uniform direction, moves
`step_length` per frame, and bounces off the edges; digits are pasted with a pixel-wise maximum. The glyphs are
5 x 7 dot-matrix digits, upscaled and softened to about the stroke width of MNIST digits in a 28-pixel box.

Video `i` depends only on `(seed, i)`, never on `num_videos`.
"""

import numpy as np

from .common import dataset_from_generator, video_rng

GLYPH_ROWS = {
    0: (" ### ", "#   #", "#  ##", "# # #", "##  #", "#   #", " ### "),
    1: ("  #  ", " ##  ", "  #  ", "  #  ", "  #  ", "  #  ", " ### "),
    2: (" ### ", "#   #", "    #", "   # ", "  #  ", " #   ", "#####"),
    3: (" ### ", "#   #", "    #", "  ## ", "    #", "#   #", " ### "),
    4: ("   # ", "  ## ", " # # ", "#  # ", "#####", "   # ", "   # "),
    5: ("#####", "#    ", "#### ", "    #", "    #", "#   #", " ### "),
    6: ("  ## ", " #   ", "#    ", "#### ", "#   #", "#   #", " ### "),
    7: ("#####", "    #", "   # ", "  #  ", " #   ", " #   ", " #   "),
    8: (" ### ", "#   #", "#   #", " ### ", "#   #", "#   #", " ### "),
    9: (" ### ", "#   #", "#   #", " ####", "    #", "   # ", " ##  "),
}
STEP_LENGTH = 0.15  # the official generator's step, as a fraction of the free canvas per frame


def digit_glyphs(digit_size: int = 28) -> np.ndarray:
    """The ten digits as uint8 images (10, digit_size, digit_size): each dot-matrix glyph scaled to fill about 70%
    of the box height, blurred once with a 3 x 3 box so the strokes get soft edges, and centred."""
    scale = max(1, round(0.7 * digit_size / 7))
    glyphs = np.zeros((10, digit_size, digit_size), np.float64)
    for digit, rows in GLYPH_ROWS.items():
        bitmap = np.kron(np.array([[c == "#" for c in row] for row in rows], np.float64), np.ones((scale, scale)))
        height, width = bitmap.shape[0] + 2, bitmap.shape[1] + 2  # the blur spills one pixel around the glyph
        padded = np.pad(bitmap, 2)
        soft = sum(padded[i : i + height, j : j + width] for i in range(3) for j in range(3)) / 9
        top, left = (digit_size - height) // 2, (digit_size - width) // 2
        glyphs[digit, top : top + height, left : left + width] = soft
    return np.round(255 * np.clip(glyphs * 1.5, 0, 1)).astype(np.uint8)


def bouncing_trajectory(rng, num_frames: int, canvas: int, step_length: float = STEP_LENGTH):
    """Top-left corners (num_frames, 2) (row, column) in [0, canvas] of one digit, as the official generator:
    uniform start and direction, `step_length` per frame, reflected at the edges (the position is recorded after
    each step)."""
    position = rng.uniform(0, 1, 2)
    theta = rng.uniform(0, 2 * np.pi)
    velocity = np.array([np.sin(theta), np.cos(theta)])
    corners = np.empty((num_frames, 2))
    for t in range(num_frames):
        position = position + velocity * step_length
        for axis in range(2):
            if position[axis] <= 0 or position[axis] >= 1:
                position[axis] = np.clip(position[axis], 0, 1)
                velocity[axis] = -velocity[axis]
        corners[t] = position
    return (corners * canvas).astype(np.int64)


def moving_mnist(
    num_videos: int = 64,
    num_frames: int = 300,
    image_size: int = 64,
    num_digits: int = 2,
    digit_size: int = 28,
    step_length: float = STEP_LENGTH,
    seed: int = 0,
    cache_dir: str | None = None,
):
    """Moving-MNIST-style videos of `num_digits` bouncing digits.

    Columns (T = num_frames, H = W = image_size):
        video    uint8 (T, H, W, 1), one channel (as the official data's arrays)
        digits   int32 (num_digits,), the digit of each glyph

    Returns a `datasets.Dataset` cached under `cache_dir` (the `datasets` default when None).
    """
    if not 9 <= digit_size <= image_size:
        raise ValueError(f"need 9 <= digit_size <= image_size, got digit_size={digit_size}, image_size={image_size}")
    if num_digits < 1 or num_frames < 1 or num_videos < 1:
        raise ValueError(
            f"num_digits, num_frames and num_videos must be positive, got {num_digits}, {num_frames}, {num_videos}"
        )
    import datasets

    features = datasets.Features(
        {
            "video": datasets.Array4D((num_frames, image_size, image_size, 1), "uint8"),
            "digits": datasets.List(datasets.Value("int32")),
        }
    )
    gen_kwargs = {
        "num_videos": num_videos, "num_frames": num_frames, "image_size": image_size, "num_digits": num_digits,
        "digit_size": digit_size, "step_length": step_length, "seed": seed,
    }  # fmt: skip
    return dataset_from_generator(_moving_mnist_examples, gen_kwargs, features, cache_dir)


def _moving_mnist_examples(num_videos, num_frames, image_size, num_digits, digit_size, step_length, seed):
    glyphs = digit_glyphs(digit_size)
    for index in range(num_videos):
        rng = video_rng(seed, index)
        video = np.zeros((num_frames, image_size, image_size), np.uint8)
        digits = rng.integers(0, 10, num_digits)
        for digit in digits:
            corners = bouncing_trajectory(rng, num_frames, image_size - digit_size, step_length)
            for t, (top, left) in enumerate(corners):
                window = video[t, top : top + digit_size, left : left + digit_size]
                np.maximum(window, glyphs[digit], out=window)
        yield {"video": video[..., None], "digits": digits.astype(np.int32)}


__all__ = ["moving_mnist", "digit_glyphs", "bouncing_trajectory"]
