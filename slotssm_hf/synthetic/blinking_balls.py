"""Blinking Color Balls: the SlotSSM paper's long-context reasoning benchmark; the target frame depends on the whole
context, so a model needs memory."""

import numpy as np

from .common import dataset_from_generator, video_rng

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
    return dataset_from_generator(_blinking_color_balls_examples, gen_kwargs, features, cache_dir)


def blinking_color_balls_num_classes(num_balls: int = 4, num_colors: int = 6) -> int:
    """Number of distinct `label` values of `blinking_color_balls`: one per assignment of colours to balls."""
    return num_colors**num_balls



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
        rng = video_rng(seed, index)
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
