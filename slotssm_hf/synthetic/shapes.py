"""Bouncing shapes: several coloured shapes moving with constant velocity and bouncing elastically off the walls,
with occlusion-aware instance masks for unsupervised segmentation metrics (FG-ARI, mIoU) and first-frame boxes for
conditional slot initialisation."""

import numpy as np

from .common import dataset_from_generator, video_rng

SHAPES = ("circle", "square", "triangle")
BACKGROUND = (16, 16, 16)


def bouncing_shapes(
    num_videos: int = 64,
    num_frames: int = 16,
    image_size: int = 64,
    min_objects: int = 2,
    max_objects: int = 4,
    radius_range: tuple[float, float] = (0.07, 0.15),
    speed_range: tuple[float, float] = (0.02, 0.06),
    seed: int = 0,
    cache_dir: str | None = None,
):
    """Multi-object bouncing shapes (circles, squares, triangles) with instance masks.

    Each video holds between `min_objects` and `max_objects` objects of distinct colours; object `k` (1-based)
    is drawn over objects `1..k-1`, so the depth order is fixed per video. Radii and speeds are fractions of
    `image_size` (speed per frame); every shape fits its centre's `[-radius, radius]` square, and centres bounce
    so that shapes never leave the frame.

    Columns (T = num_frames, H = W = image_size, N = num_objects):
        video           uint8 (T, H, W, 3); background `BACKGROUND`, object k in `object_colors[k - 1]`
        masks           uint8 (T, H, W); 0 = background, k = object k visible at that pixel
        num_objects     int32
        object_shapes   N class labels over `SHAPES`
        object_colors   uint8 (N, 3) RGB
        object_radii    float32 (N,) in pixels
        object_centers  float32 (N, T, 2) (row, column) in pixels, pixel i spanning [i, i + 1)
        boxes           float32 (N, 4) each object's first-frame box (ymin, xmin, ymax, xmax) as fractions of
                        `image_size` (its shape's whole extent, occluded parts included): what conditional SAVi
                        takes (`VideoCollator(num_boxes=...)` pads it)

    Returns a `datasets.Dataset` cached under `cache_dir` (the `datasets` default when None).
    """
    if not 1 <= min_objects <= max_objects <= 255:
        raise ValueError(f"need 1 <= min_objects <= max_objects <= 255 (uint8 masks), got {min_objects}, {max_objects}")
    if not 0 < radius_range[0] <= radius_range[1] < 0.5:
        raise ValueError(
            f"radius_range must satisfy 0 < low <= high < 0.5 (fractions of image_size), got {radius_range}"
        )
    if not 0 <= speed_range[0] <= speed_range[1]:
        raise ValueError(f"speed_range must satisfy 0 <= low <= high, got {speed_range}")
    gen_kwargs = {
        "num_videos": num_videos, "num_frames": num_frames, "image_size": image_size, "min_objects": min_objects,
        "max_objects": max_objects, "radius_range": tuple(radius_range), "speed_range": tuple(speed_range),
        "seed": seed,
    }  # fmt: skip
    return dataset_from_generator(
        _bouncing_shapes_examples, gen_kwargs, _bouncing_shapes_features(num_frames, image_size), cache_dir
    )



def _bouncing_shapes_features(num_frames, image_size):
    import datasets

    return datasets.Features(
        {
            "video": datasets.Array4D((num_frames, image_size, image_size, 3), "uint8"),
            "masks": datasets.Array3D((num_frames, image_size, image_size), "uint8"),
            "num_objects": datasets.Value("int32"),
            "object_shapes": datasets.List(datasets.ClassLabel(names=list(SHAPES))),
            "object_colors": datasets.Array2D((None, 3), "uint8"),
            "object_radii": datasets.List(datasets.Value("float32")),
            "object_centers": datasets.Array3D((None, num_frames, 2), "float32"),
            "boxes": datasets.Array2D((None, 4), "float32"),
        }
    )


def _bouncing_shapes_examples(
    num_videos, num_frames, image_size, min_objects, max_objects, radius_range, speed_range, seed
):
    for index in range(num_videos):
        rng = video_rng(seed, index)
        num_objects = int(rng.integers(min_objects, max_objects + 1))
        shapes = rng.integers(len(SHAPES), size=num_objects)
        radii = rng.uniform(*radius_range, size=num_objects) * image_size
        colors = _distinct_colors(rng, num_objects)
        centers = _bouncing_trajectories(rng, radii, num_frames, image_size, speed_range)
        masks = _render_instance_masks(shapes, radii, centers, image_size)
        color_table = np.concatenate([np.array([BACKGROUND], dtype=np.uint8), colors])
        yield {
            "video": color_table[masks],
            "masks": masks,
            "num_objects": num_objects,
            "object_shapes": shapes.tolist(),
            "object_colors": colors,
            "object_radii": radii.astype(np.float32),
            "object_centers": centers.astype(np.float32),
            "boxes": _first_frame_boxes(radii, centers, image_size),
        }


def _first_frame_boxes(radii, centers, image_size):
    """(N, 4) float32 (ymin, xmin, ymax, xmax) in [0, 1]: every shape fits the square of its radius around its centre
    (and centres bounce so that it stays inside the frame)."""
    first = centers[:, 0]
    corners = np.concatenate([first - radii[:, None], first + radii[:, None]], axis=1) / image_size
    return np.clip(corners, 0, 1).astype(np.float32)


def _distinct_colors(rng, num_colors):
    """(num_colors, 3) uint8 saturated, bright RGB colours, pairwise distinct and far from the dark background:
    hues sit in separate slots of the colour wheel (random offset and order), so no two can coincide."""
    slots = rng.permutation(num_colors) + rng.uniform(0.0, 0.5, size=num_colors)
    hue = (rng.uniform() + slots / num_colors) % 1.0
    saturation = rng.uniform(0.65, 1.0, size=num_colors)
    value = rng.uniform(0.75, 1.0, size=num_colors)
    return np.round(_hsv_to_rgb(hue, saturation, value) * 255).astype(np.uint8)


def _hsv_to_rgb(hue, saturation, value):
    """(N,) each in [0, 1] -> (N, 3) RGB in [0, 1]."""
    k = (np.array([5.0, 3.0, 1.0]) + hue[:, None] * 6.0) % 6.0
    ramp = np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0)
    return value[:, None] * (1.0 - saturation[:, None] * ramp)


def _bouncing_trajectories(rng, radii, num_frames, image_size, speed_range):
    """(N, T, 2) centres moving at constant velocity inside [radius, image_size - radius] on both axes, with
    elastic wall bounces computed in closed form: unfolded straight-line motion, reflected back into the box."""
    num_objects = len(radii)
    low, high = radii[:, None, None], image_size - radii[:, None, None]
    start = rng.uniform(low[:, 0], high[:, 0], size=(num_objects, 2))
    speed = rng.uniform(*speed_range, size=num_objects) * image_size
    angle = rng.uniform(0.0, 2 * np.pi, size=num_objects)
    velocity = speed[:, None] * np.stack([np.sin(angle), np.cos(angle)], axis=-1)
    unfolded = start[:, None, :] + velocity[:, None, :] * np.arange(num_frames)[None, :, None]
    return _reflect_into(unfolded, low, high)


def _reflect_into(position, low, high):
    """Fold positions into [low, high] as a ball bouncing between the two walls would be (a triangle wave)."""
    span = high - low
    phase = np.mod(position - low, 2 * span)
    return low + span - np.abs(phase - span)


def _render_instance_masks(shapes, radii, centers, image_size):
    """(T, H, W) uint8 ids of the visible object per pixel; later objects are drawn over earlier ones."""
    pixel_centres = np.arange(image_size) + 0.5
    masks = np.zeros(centers.shape[1:2] + (image_size, image_size), dtype=np.uint8)
    for k, (shape, radius, center) in enumerate(zip(shapes, radii, centers), start=1):
        dy = pixel_centres[None, :, None] - center[:, 0, None, None]
        dx = pixel_centres[None, None, :] - center[:, 1, None, None]
        masks[_SHAPE_MASKS[SHAPES[shape]](dy, dx, radius)] = k
    return masks


def _circle(dy, dx, radius):
    return dy**2 + dx**2 <= radius**2


def _square(dy, dx, radius):
    return (np.abs(dy) <= radius) & (np.abs(dx) <= radius)


def _triangle(dy, dx, radius):
    """Apex at the top of the [-radius, radius] square, base along its bottom edge."""
    return (dy <= radius) & (np.abs(dx) <= (dy + radius) / 2)


_SHAPE_MASKS = {"circle": _circle, "square": _square, "triangle": _triangle}
