"""Seeded synthetic video data sets, generated offline, small enough for CI and rich enough to learn from: one module
per generator, each returning a `datasets.Dataset`.

- `bouncing_shapes` (`shapes`): coloured shapes bouncing off the walls, with instance masks and first-frame boxes.
- `blinking_color_balls` (`blinking_balls`): the SlotSSM paper's long-context reasoning benchmark.
- `moving_mnist` (`moving_digits`): Moving-MNIST-style bouncing digits, the data of the official ConvS5 runs.
- `write_videos` (`common`): any of them as H.264 mp4 files, so the file path through the video processors can be
  exercised on identical data (optionally in class sub-folders).
"""

from .blinking_balls import PALETTE, blinking_color_balls, blinking_color_balls_num_classes
from .common import write_videos
from .moving_digits import moving_mnist
from .shapes import bouncing_shapes

__all__ = [
    "PALETTE", "blinking_color_balls", "blinking_color_balls_num_classes", "bouncing_shapes", "moving_mnist",
    "write_videos",
]  # fmt: skip
