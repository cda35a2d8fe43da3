"""Synthetic video data sets against independent checks: colours read back from the pixels, the blinking-balls
rules recomputed in plain Python from the context frames, bounces replayed step by step, mp4 files decoded with
PyAV; Moving MNIST seeded and bouncing like the official generator."""

import collections
import math
import os

import numpy as np
import pytest

from slotssm_hf.synthetic import blinking_color_balls, blinking_color_balls_num_classes, bouncing_shapes, write_videos
from slotssm_hf.synthetic.blinking_balls import BALL_BACKGROUND, NEUTRAL, PALETTE
from slotssm_hf.synthetic.moving_digits import bouncing_trajectory, moving_mnist
from slotssm_hf.synthetic.shapes import BACKGROUND

SHAPES_KWARGS = {"num_videos": 12, "num_frames": 12, "image_size": 48, "min_objects": 3, "max_objects": 6}
BALLS_KWARGS = {"num_videos": 16, "num_context_frames": 12, "num_balls": 4, "image_size": 32, "num_colors": 4}


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("datasets_cache"))


@pytest.fixture(scope="module")
def shapes(cache_dir):
    return bouncing_shapes(**SHAPES_KWARGS, seed=3, cache_dir=cache_dir)


@pytest.fixture(scope="module", params=["earliest", "most_frequent"])
def rule(request):
    return request.param


@pytest.fixture(scope="module")
def balls(rule, cache_dir):
    return blinking_color_balls(**BALLS_KWARGS, rule=rule, seed=5, cache_dir=cache_dir)


def rows(dataset):
    """Examples as dicts of numpy arrays (integers widened to int64 by the numpy format)."""
    formatted = dataset.with_format("numpy")
    return [formatted[i] for i in range(len(formatted))]


def colours_of(pixels):
    """The set of distinct RGB triples among (..., 3) pixels."""
    return {tuple(int(c) for c in colour) for colour in np.unique(pixels.reshape(-1, 3), axis=0)}


def centre_colours(frame, centers):
    """RGB triple at each ball's centre pixel of an (H, W, 3) frame."""
    return [tuple(int(c) for c in frame[row, col]) for row, col in centers]


GENERATORS = {
    "bouncing_shapes": lambda seed, cache: bouncing_shapes(num_videos=3, num_frames=6, image_size=32, seed=seed, cache_dir=cache),
    "blinking_color_balls": lambda seed, cache: blinking_color_balls(num_videos=3, num_context_frames=8, seed=seed, cache_dir=cache),
}  # fmt: skip


@pytest.mark.parametrize("name", GENERATORS)
def test_same_seed_gives_identical_data_and_another_seed_different_data(name, tmp_path):
    make = GENERATORS[name]
    # Separate caches, so the second data set is generated afresh rather than read back.
    first, again = make(0, str(tmp_path / "a")), make(0, str(tmp_path / "b"))
    other = make(1, str(tmp_path / "c"))
    assert first.data.table.equals(again.data.table)
    assert not first.data.table.equals(other.data.table)


def test_a_larger_data_set_starts_with_the_videos_of_a_smaller_one(tmp_path):
    small = bouncing_shapes(num_videos=2, num_frames=6, image_size=32, cache_dir=str(tmp_path))
    large = bouncing_shapes(num_videos=4, num_frames=6, image_size=32, cache_dir=str(tmp_path))
    assert large.data.table.slice(0, 2).equals(small.data.table)


def test_bouncing_shapes_columns_have_the_declared_shapes_and_dtypes(shapes):
    num_frames, size = SHAPES_KWARGS["num_frames"], SHAPES_KWARGS["image_size"]
    assert shapes.features["video"].shape == (num_frames, size, size, 3)
    assert shapes.features["video"].dtype == "uint8"
    assert shapes.features["masks"].shape == (num_frames, size, size)
    assert shapes.features["masks"].dtype == "uint8"
    assert len(shapes) == SHAPES_KWARGS["num_videos"]
    for example in rows(shapes):
        n = int(example["num_objects"])
        assert SHAPES_KWARGS["min_objects"] <= n <= SHAPES_KWARGS["max_objects"]
        assert example["video"].shape == (num_frames, size, size, 3)
        assert example["masks"].shape == (num_frames, size, size)
        assert example["masks"].max() <= n
        assert example["object_colors"].shape == (n, 3)
        assert example["object_centers"].shape == (n, num_frames, 2)
        assert len(example["object_shapes"]) == len(example["object_radii"]) == n


def test_every_mask_region_has_exactly_its_objects_colour_and_the_background_is_plain(shapes):
    for example in rows(shapes):
        video, masks = example["video"], example["masks"]
        assert colours_of(video[masks == 0]) == {BACKGROUND}
        for k in range(1, int(example["num_objects"]) + 1):
            visible = video[masks == k]
            if len(visible):
                assert colours_of(visible) == {tuple(int(c) for c in example["object_colors"][k - 1])}


def test_objects_in_a_video_have_distinct_colours_unlike_the_background(shapes):
    for example in rows(shapes):
        colours = [tuple(int(c) for c in colour) for colour in example["object_colors"]]
        assert len(set(colours)) == len(colours)
        assert BACKGROUND not in colours


def test_visible_object_pixels_lie_within_the_objects_extent(shapes):
    size = SHAPES_KWARGS["image_size"]
    pixel_centres = np.arange(size) + 0.5
    for example in rows(shapes):
        for k, (radius, centers) in enumerate(zip(example["object_radii"], example["object_centers"]), start=1):
            for frame_masks, (row, col) in zip(example["masks"], centers):
                rows_k, cols_k = np.nonzero(frame_masks == k)
                assert np.all(np.abs(pixel_centres[rows_k] - row) <= radius + 1e-4)
                assert np.all(np.abs(pixel_centres[cols_k] - col) <= radius + 1e-4)


def replay_bounces(start, speed, direction, low, high, num_steps):
    """Positions of a point moving `speed` per step between two walls, reflecting at each, one step at a time."""
    positions = [start]
    for _ in range(num_steps):
        position = positions[-1] + direction * speed
        if position > high or position < low:
            wall = high if position > high else low
            position, direction = 2 * wall - position, -direction
        positions.append(position)
    return np.array(positions)


def test_objects_move_at_constant_speed_and_bounce_elastically_inside_the_frame(shapes):
    size = SHAPES_KWARGS["image_size"]
    bounces = 0
    for example in rows(shapes):
        for radius, centers in zip(example["object_radii"], example["object_centers"].astype(np.float64)):
            low, high = float(radius), size - float(radius)
            assert np.all((centers >= low - 1e-4) & (centers <= high + 1e-4)), "the shape leaves the frame"
            assert np.abs(centers[-1] - centers[0]).max() > 0.5, "the object does not move"
            for axis in range(2):
                track = centers[:, axis]
                steps = np.diff(track)
                # A step spanning a bounce is shorter, so the longest step is the constant speed.
                speed = np.abs(steps).max()
                replays = [replay_bounces(track[0], speed, d, low, high, len(steps)) for d in (1.0, -1.0)]
                assert any(np.allclose(replay, track, atol=1e-3) for replay in replays)
                bounces += int(np.sum(np.sign(steps[1:]) != np.sign(steps[:-1])))
    assert bounces > 0


def test_later_objects_occlude_earlier_ones_in_some_videos(shapes):
    """An object is occluded in a frame when far fewer of its pixels are visible than in its best frame."""
    occluded = 0
    for example in rows(shapes):
        for k in range(1, int(example["num_objects"]) + 1):
            visible = (example["masks"] == k).sum(axis=(1, 2))
            occluded += int(np.any(visible < 0.5 * visible.max()))
    assert occluded > 0


def test_blinking_context_frames_colour_exactly_one_ball_and_show_the_rest_neutral(balls):
    for example in rows(balls):
        for frame in example["video"]:
            at_centres = centre_colours(frame, example["ball_centers"])
            coloured = [colour for colour in at_centres if colour != NEUTRAL]
            assert len(coloured) == 1
            assert colours_of(frame) <= {BALL_BACKGROUND, NEUTRAL, coloured[0]}
            assert coloured[0] in PALETTE.values()


def test_every_ball_is_recoloured_at_least_once(balls):
    for example in rows(balls):
        per_frame = [centre_colours(frame, example["ball_centers"]) for frame in example["video"]]
        for ball in range(BALLS_KWARGS["num_balls"]):
            assert any(colours[ball] != NEUTRAL for colours in per_frame)


def expected_target_colour(history, rule):
    """The rule on one ball's colours in context order, in plain Python."""
    if rule == "earliest":
        return history[0]
    counts = collections.Counter(history)
    most = max(counts.values())
    return next(colour for colour in history if counts[colour] == most)


def test_target_frame_colours_each_ball_by_the_rule_read_from_the_context_pixels(balls, rule):
    for example in rows(balls):
        histories = collections.defaultdict(list)
        for frame in example["video"]:
            for ball, colour in enumerate(centre_colours(frame, example["ball_centers"])):
                if colour != NEUTRAL:
                    histories[ball].append(colour)
        target = centre_colours(example["target"], example["ball_centers"])
        assert target == [expected_target_colour(histories[ball], rule) for ball in range(len(target))]


def test_most_frequent_rule_differs_from_earliest_on_some_videos(cache_dir):
    earliest, most_frequent = (
        blinking_color_balls(**BALLS_KWARGS, rule=rule, seed=5, cache_dir=cache_dir)
        for rule in ("earliest", "most_frequent")
    )
    assert list(earliest["label"]) != list(most_frequent["label"])


def test_target_colors_and_label_encode_the_target_pixels(balls):
    num_balls, num_colors = BALLS_KWARGS["num_balls"], BALLS_KWARGS["num_colors"]
    palette = list(PALETTE.values())[:num_colors]
    for example in rows(balls):
        target_colors = [int(c) for c in example["target_colors"]]
        assert [palette[c] for c in target_colors] == centre_colours(example["target"], example["ball_centers"])
        label = 0
        for colour in target_colors:  # mixed radix, first ball most significant
            label = label * num_colors + colour
        assert example["label"] == label < blinking_color_balls_num_classes(num_balls, num_colors)
    assert blinking_color_balls_num_classes(num_balls, num_colors) == 4**4


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"rule": "latest"}, "rule"),
        ({"num_context_frames": 3, "num_balls": 4}, "num_context_frames"),
        ({"num_colors": len(PALETTE) + 1}, "num_colors"),
        ({"image_size": 8}, "image_size"),
    ],
)
def test_blinking_color_balls_rejects_impossible_settings(kwargs, message):
    with pytest.raises(ValueError, match=message):
        blinking_color_balls(**kwargs)


def decode(path):
    """(T, H, W, 3) uint8 frames of an mp4, decoded with PyAV."""
    import av

    with av.open(path) as container:
        return np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)])


def test_written_videos_decode_to_the_source_frames(tmp_path):
    dataset = bouncing_shapes(num_videos=2, num_frames=8, image_size=32, cache_dir=str(tmp_path / "cache"))
    folder = tmp_path / "videos"
    paths = write_videos(dataset, str(folder), fps=8)
    assert paths == [str(folder / "00000.mp4"), str(folder / "00001.mp4")]
    assert sorted(os.listdir(folder)) == ["00000.mp4", "00001.mp4"], "temporary files were left behind"
    for path, example in zip(paths, rows(dataset)):
        decoded = decode(path)
        assert decoded.shape == example["video"].shape
        assert np.abs(decoded.astype(np.int64) - example["video"]).mean() < 10


def test_class_folders_group_videos_by_zero_padded_label(tmp_path):
    dataset = blinking_color_balls(num_videos=6, num_context_frames=4, num_colors=3, cache_dir=str(tmp_path / "cache"))
    paths = write_videos(dataset, str(tmp_path / "videos"), class_folders=True)
    labels = [int(label) for label in dataset["label"]]
    assert [os.path.basename(os.path.dirname(path)) for path in paths] == [f"{label:02d}" for label in labels]
    assert [os.path.basename(path) for path in paths] == [f"{i:05d}.mp4" for i in range(6)]
    assert all(decode(path).shape == (4, 32, 32, 3) for path in paths)


def test_write_videos_refuses_odd_frame_sizes_and_leaves_nothing_behind(tmp_path):
    dataset = bouncing_shapes(num_videos=1, num_frames=2, image_size=33, cache_dir=str(tmp_path / "cache"))
    folder = tmp_path / "videos"
    with pytest.raises(ValueError, match="even"):
        write_videos(dataset, str(folder))
    assert not folder.exists() or os.listdir(folder) == []


def test_class_folders_need_a_label_column(tmp_path):
    dataset = bouncing_shapes(num_videos=1, num_frames=2, image_size=16, cache_dir=str(tmp_path / "cache"))
    with pytest.raises(ValueError, match="label"):
        write_videos(dataset, str(tmp_path / "videos"), class_folders=True)


def test_moving_mnist_is_seeded_and_bounces_like_the_official_generator(tmp_path):
    small = moving_mnist(num_videos=2, num_frames=12, image_size=32, digit_size=12, seed=3, cache_dir=str(tmp_path))
    large = moving_mnist(num_videos=3, num_frames=12, image_size=32, digit_size=12, seed=3, cache_dir=str(tmp_path))
    videos = np.asarray(large.with_format("numpy")["video"], dtype=np.uint8)
    assert videos.shape == (3, 12, 32, 32, 1) and videos.max() > 127
    np.testing.assert_array_equal(np.asarray(small.with_format("numpy")["video"]), videos[:2])
    assert not np.array_equal(videos[0], videos[1])
    corners = bouncing_trajectory(np.random.default_rng(0), 400, 36)
    steps = np.abs(np.diff(corners, axis=0))
    assert corners.min() >= 0 and corners.max() <= 36 and (corners == 0).any() and (corners == 36).any()
    assert steps.max() <= math.ceil(0.15 * 36)  # the official step: 0.15 of the free canvas per frame
