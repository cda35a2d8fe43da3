"""Seeded synthetic video data sets, generated offline, small enough for CI and rich enough to learn from.

- `bouncing_shapes`: several coloured shapes moving with constant velocity and bouncing elastically off the
  walls, with occlusion-aware instance masks for unsupervised segmentation metrics (FG-ARI, mIoU).
- `blinking_color_balls`: the SlotSSM paper's long-context reasoning benchmark; the target frame depends on
  the whole context, so a model needs memory.
- `write_videos`: the same examples as H.264 mp4 files, so the file path through the video processor can be
  exercised on identical data (optionally in class sub-folders).

Video `i` of a data set depends only on `(seed, i)`, never on `num_videos`, so a larger data set starts with the
videos of a smaller one. Image columns are stored as uint8; `datasets`' numpy and torch formats widen integers to
int64 unless given a dtype, e.g. `dataset.with_format("numpy", columns=["video"], dtype=np.uint8)`.
"""

import hashlib
import os

import numpy as np

from .files import write_atomically

SHAPES = ("circle", "square", "triangle")
BACKGROUND = (16, 16, 16)

# Blinking colour balls: a ball that is not recoloured in a context frame is drawn in the neutral colour.
NEUTRAL = (255, 255, 255)
BALL_BACKGROUND = (0, 0, 0)
PALETTE = {
    "red": (230, 25, 25),
    "green": (25, 200, 25),
    "blue": (30, 60, 240),
    "yellow": (240, 220, 20),
    "magenta": (220, 30, 220),
    "cyan": (20, 210, 220),
    "orange": (245, 130, 20),
    "purple": (120, 40, 170),
}
RULES = ("earliest", "most_frequent")


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
    return _dataset_from_generator(
        _bouncing_shapes_examples, gen_kwargs, _bouncing_shapes_features(num_frames, image_size), cache_dir
    )


def blinking_color_balls(
    num_videos: int = 64,
    num_context_frames: int = 16,
    num_balls: int = 4,
    image_size: int = 32,
    rule: str = "earliest",
    num_colors: int = 6,
    seed: int = 0,
    cache_dir: str | None = None,
):
    """The Blinking Color Balls long-context reasoning benchmark (SlotSSM paper).

    Balls sit at fixed, non-overlapping positions. In every context frame exactly one randomly chosen ball is
    recoloured with a random palette colour and is the only coloured ball of that frame; the others are drawn in
    `NEUTRAL`, so the colours must be remembered across frames. Every ball is recoloured at least once (at
    distinct random frames, the remaining frames pick balls uniformly), so the rule is always defined; this needs
    `num_context_frames >= num_balls`. The target frame colours every ball by `rule`:
        "earliest"       the first colour the ball received
        "most_frequent"  the colour it received most often, ties broken by the colour it received first

    Colours are indices into the first `num_colors` entries of `PALETTE`.

    Columns (T = num_context_frames, H = W = image_size, B = num_balls):
        video           uint8 (T, H, W, 3) context frames, background `BALL_BACKGROUND`
        target          uint8 (H, W, 3) the target frame
        target_colors   B int32 palette indices, one per ball
        label           int64 `np.ravel_multi_index(target_colors, (num_colors,) * B)`, in
                        `range(blinking_color_balls_num_classes(num_balls, num_colors))`
        ball_centers    int32 (B, 2) (row, column) of each ball's centre pixel
        blink_balls     T int32, the ball recoloured in each context frame
        blink_colors    T int32, the palette index it received

    Returns a `datasets.Dataset` cached under `cache_dir` (the `datasets` default when None).
    """
    if rule not in RULES:
        raise ValueError(f"rule must be one of {RULES}, got {rule!r}")
    if not 1 <= num_colors <= len(PALETTE):
        raise ValueError(f"num_colors must be in 1..{len(PALETTE)} (the palette size), got {num_colors}")
    if num_context_frames < num_balls:
        raise ValueError(
            f"num_context_frames ({num_context_frames}) must be >= num_balls ({num_balls}): every ball is recoloured"
        )
    grid = _ball_grid_size(num_balls)
    if image_size // grid < 5:
        raise ValueError(f"image_size {image_size} is too small for {num_balls} balls (needs >= {5 * grid})")
    gen_kwargs = {
        "num_videos": num_videos, "num_context_frames": num_context_frames, "num_balls": num_balls,
        "image_size": image_size, "rule": rule, "num_colors": num_colors, "seed": seed,
    }  # fmt: skip
    features = _blinking_color_balls_features(num_context_frames, image_size, num_balls)
    return _dataset_from_generator(_blinking_color_balls_examples, gen_kwargs, features, cache_dir)


def blinking_color_balls_num_classes(num_balls: int = 4, num_colors: int = 6) -> int:
    """Number of distinct `label` values of `blinking_color_balls`: one per assignment of colours to balls."""
    return num_colors**num_balls


def write_videos(dataset, folder: str, fps: int = 8, class_folders: bool = False, crf: int = 18) -> list[str]:
    """Write each example's `video` (T, H, W, 3) uint8 as an H.264 (yuv420p) mp4, `folder/{index:05d}.mp4`.

    With `class_folders`, files go to `folder/{class}/{index:05d}.mp4`, where `class` is the `label` column's
    class name (a `ClassLabel`) or the integer label zero-padded to a common width, so that sorting the folder
    names (as folder-of-videos loaders do) keeps the integer order. `crf` sets the H.264 quality (lower is closer
    to lossless). Each file is written under a temporary name and renamed, so no half-written mp4 is left behind.
    Returns the paths in example order.
    """
    if "video" not in dataset.column_names:
        raise ValueError(f"the dataset has no 'video' column (columns: {dataset.column_names})")
    if class_folders and "label" not in dataset.column_names:
        raise ValueError(f"class_folders=True needs a 'label' column (columns: {dataset.column_names})")
    class_names = _class_folder_names(dataset) if class_folders else None
    videos = dataset.with_format("numpy", columns=["video"])
    paths = []
    for index in range(len(videos)):
        target_dir = os.path.join(folder, class_names[index]) if class_folders else folder
        os.makedirs(target_dir, exist_ok=True)
        path = os.path.join(target_dir, f"{index:05d}.mp4")
        video = _as_uint8_video(videos[index]["video"], index)
        write_atomically(path, lambda name: _encode_h264(video, name, fps, crf))
        paths.append(path)
    return paths


# ---------------------------------------------------------------------------------------------------------------
# Building data sets


def _dataset_from_generator(generator, gen_kwargs, features, cache_dir):
    """`Dataset.from_generator` with a fingerprint of the arguments and the generator module's source, so a cached
    copy is reused only when it would be generated identically (the default fingerprint misses edits to helpers)."""
    import sys

    import datasets

    with open(sys.modules[generator.__module__].__file__, "rb") as module_file:
        source = module_file.read()
    fingerprint = hashlib.sha256(repr((generator.__name__, sorted(gen_kwargs.items()), source)).encode()).hexdigest()
    return datasets.Dataset.from_generator(
        generator, features=features, gen_kwargs=gen_kwargs, cache_dir=cache_dir, fingerprint=fingerprint[:32]
    )


def _video_rng(seed, index):
    """Per-video generator: video `index` is the same whatever the data set size."""
    return np.random.default_rng([seed, index])


# ---------------------------------------------------------------------------------------------------------------
# Bouncing shapes


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
        rng = _video_rng(seed, index)
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


# ---------------------------------------------------------------------------------------------------------------
# Blinking colour balls


def _blinking_color_balls_features(num_context_frames, image_size, num_balls):
    import datasets

    return datasets.Features(
        {
            "video": datasets.Array4D((num_context_frames, image_size, image_size, 3), "uint8"),
            "target": datasets.Array3D((image_size, image_size, 3), "uint8"),
            "target_colors": datasets.List(datasets.Value("int32"), length=num_balls),
            "label": datasets.Value("int64"),
            "ball_centers": datasets.Array2D((num_balls, 2), "int32"),
            "blink_balls": datasets.List(datasets.Value("int32"), length=num_context_frames),
            "blink_colors": datasets.List(datasets.Value("int32"), length=num_context_frames),
        }
    )


def _blinking_color_balls_examples(num_videos, num_context_frames, num_balls, image_size, rule, num_colors, seed):
    palette = np.array(list(PALETTE.values())[:num_colors], dtype=np.uint8)
    for index in range(num_videos):
        rng = _video_rng(seed, index)
        centers = _ball_centers(rng, num_balls, image_size)
        ball_ids = _ball_id_map(centers, _ball_radius(num_balls, image_size), image_size)
        blink_balls = _blink_schedule(rng, num_balls, num_context_frames)
        blink_colors = rng.integers(num_colors, size=num_context_frames)
        target_colors = _target_colors(blink_balls, blink_colors, num_balls, num_colors, rule)
        yield {
            "video": _render_context_frames(ball_ids, blink_balls, palette[blink_colors], num_balls),
            "target": _render_target_frame(ball_ids, palette[target_colors]),
            "target_colors": target_colors,
            "label": int(np.ravel_multi_index(tuple(target_colors), (num_colors,) * num_balls)),
            "ball_centers": centers,
            "blink_balls": blink_balls,
            "blink_colors": blink_colors,
        }


def _ball_grid_size(num_balls):
    """Balls occupy distinct cells of a square grid with one spare row and column, so layouts vary."""
    return int(np.ceil(np.sqrt(num_balls))) + 1


def _ball_radius(num_balls, image_size):
    return 0.3 * (image_size // _ball_grid_size(num_balls))


def _ball_centers(rng, num_balls, image_size):
    """(B, 2) int32 centre pixels in distinct random grid cells, jittered so each disc stays inside its cell."""
    grid = _ball_grid_size(num_balls)
    cell = image_size // grid
    cells = rng.choice(grid * grid, size=num_balls, replace=False)
    corner = np.stack([cells // grid, cells % grid], axis=-1) * cell
    margin = int(np.ceil(_ball_radius(num_balls, image_size)))
    jitter = rng.integers(margin, cell - 1 - margin, size=(num_balls, 2), endpoint=True)
    return (corner + jitter).astype(np.int32)


def _ball_id_map(centers, radius, image_size):
    """(H, W) int: 0 for background, b + 1 inside ball b (a disc around its centre pixel)."""
    rows, cols = np.arange(image_size)[:, None], np.arange(image_size)[None, :]
    inside = (rows - centers[:, 0, None, None]) ** 2 + (cols - centers[:, 1, None, None]) ** 2 <= radius**2
    return np.where(inside.any(0), inside.argmax(0) + 1, 0)


def _blink_schedule(rng, num_balls, num_frames):
    """(T,) the ball recoloured in each frame: uniform picks, with every ball placed at one distinct random frame
    so that each ball is recoloured at least once."""
    balls = rng.integers(num_balls, size=num_frames)
    balls[rng.choice(num_frames, size=num_balls, replace=False)] = rng.permutation(num_balls)
    return balls


def _target_colors(blink_balls, blink_colors, num_balls, num_colors, rule):
    """(B,) palette index per ball by `rule`, from the (T,) recoloured balls and the (T,) colours they got."""
    num_frames = len(blink_balls)
    first_seen = np.full((num_balls, num_colors), num_frames)
    np.minimum.at(first_seen, (blink_balls, blink_colors), np.arange(num_frames))
    if rule == "earliest":
        return first_seen.argmin(1)
    counts = np.zeros((num_balls, num_colors), dtype=np.int64)
    np.add.at(counts, (blink_balls, blink_colors), 1)
    # More occurrences win; among equal counts the colour seen first wins (absent colours can never win).
    return (counts * (num_frames + 1) - first_seen).argmax(1)


def _render_context_frames(ball_ids, blink_balls, blink_rgb, num_balls):
    """(T, H, W, 3): ball `blink_balls[t]` in `blink_rgb[t]`, the other balls neutral."""
    num_frames = len(blink_balls)
    tables = np.empty((num_frames, num_balls + 1, 3), dtype=np.uint8)
    tables[:] = NEUTRAL
    tables[:, 0] = BALL_BACKGROUND
    tables[np.arange(num_frames), blink_balls + 1] = blink_rgb
    return tables[np.arange(num_frames)[:, None, None], ball_ids[None]]


def _render_target_frame(ball_ids, ball_rgb):
    """(H, W, 3): every ball in its target colour."""
    return np.concatenate([np.array([BALL_BACKGROUND], dtype=np.uint8), ball_rgb])[ball_ids]


# ---------------------------------------------------------------------------------------------------------------
# Writing videos


def _class_folder_names(dataset):
    """Sub-folder name per example from the `label` column."""
    import datasets

    labels = [int(label) for label in dataset["label"]]
    feature = dataset.features["label"]
    if isinstance(feature, datasets.ClassLabel):
        return [feature.int2str(label) for label in labels]
    width = len(str(max(labels, default=0)))
    return [f"{label:0{width}d}" for label in labels]


def _as_uint8_video(video, index):
    """The numpy formatter widens uint8 to int64; narrow it back, refusing anything that is not 8-bit RGB."""
    is_8bit = np.issubdtype(video.dtype, np.integer) and video.size and 0 <= video.min() and video.max() <= 255
    if video.ndim != 4 or video.shape[-1] != 3 or not is_8bit:
        raise ValueError(
            f"example {index}: expected 'video' as (T, H, W, 3) integers in 0..255, got shape {video.shape} "
            f"dtype {video.dtype}"
        )
    return video.astype(np.uint8)


def _encode_h264(video, path, fps, crf):
    """Encode (T, H, W, 3) uint8 to the mp4 file `path`."""
    height, width = video.shape[1:3]
    if height % 2 or width % 2:
        raise ValueError(f"H.264 with yuv420p needs even height and width, got {height}x{width}")
    import av

    with av.open(path, mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps, options={"crf": str(crf)})
        stream.height, stream.width = video.shape[1:3]
        stream.pix_fmt = "yuv420p"
        for frame in video:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
