"""SlotSSMVideoProcessor against a slow per-frame reference (PyAV frames -> PIL bicubic resize -> PIL centre crop ->
[0, 1] -> ImageNet normalisation), on real encoded files written here with PyAV (GIF with PIL)."""

import json
import os
from types import SimpleNamespace

import av
import numpy as np
import pytest
import torch
from av.video.frame import PictureType
from PIL import Image
from transformers import AutoVideoProcessor
from videos import synthetic_frames, write_video

from slotssm_hf import SlotSSMVideoProcessor
from slotssm_hf.models import video_decoding
from slotssm_hf.models.video_decoding import decode_from_keyframes, decode_with_pyav, frame_table, seek_segments

MEAN = torch.tensor([0.485, 0.456, 0.406])[:, None, None]
STD = torch.tensor([0.229, 0.224, 0.225])[:, None, None]


def full_decode(path):
    """Every frame of a file as uint8 (H, W, 3) arrays, decoded plainly (no threads, no seeking, no early stop)."""
    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]


def decoded_frames(path):
    """Every frame of a file as PIL images."""
    return [Image.fromarray(frame) for frame in full_decode(path)]


def reference_clip(images, indices, short_side=128, crop=128):
    """The official per-frame pipeline, one PIL image at a time."""
    out = []
    for i in indices:
        image = images[i].convert("RGB")
        w, h = image.size
        scale = short_side / min(w, h)
        size = (short_side, int(h * scale)) if w <= h else (int(w * scale), short_side)
        image = image.resize(size, Image.BICUBIC)
        left, top = int((image.width - crop) / 2), int((image.height - crop) / 2)
        image = image.crop((left, top, left + crop, top + crop))
        pixels = torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1).float() / 255
        out.append((pixels - MEAN) / STD)
    return torch.stack(out)


def assert_close_to_reference(ours, reference):
    # torchvision's uint8 bicubic resize and PIL's agree to about one intensity level (1/255/0.225 after
    # normalisation); on average they agree far better.
    assert (ours - reference).abs().max() < 2.5 / 255 / 0.225
    assert (ours - reference).abs().mean() < 0.2 / 255 / 0.225


@pytest.mark.parametrize(
    "name,codec",
    [("clip.mp4", "h264"), ("clip.webm", "libvpx-vp9"), ("clip.avi", "mpeg4"), ("clip.mkv", "ffv1"), ("clip.gif", None)],
)
def test_files_match_the_per_frame_reference(tmp_path, name, codec):
    path = write_video(tmp_path / name, synthetic_frames(24, 96, 160), codec)
    out = SlotSSMVideoProcessor()(str(path))
    pixels = out["pixel_values_videos"]
    assert pixels.shape == (1, 16, 3, 128, 128) and pixels.dtype == torch.float32
    assert out["padded_frames"].tolist() == [0]
    assert_close_to_reference(pixels[0], reference_clip(decoded_frames(path), range(16)))


def test_batch_of_files_with_stride_and_uniform_sampling(tmp_path):
    paths = [str(write_video(tmp_path / f"{i}.mp4", synthetic_frames(40, 128, 176, seed=i))) for i in range(2)]
    processor = SlotSSMVideoProcessor(num_frames=8, frame_stride=3)
    pixels = processor(paths)["pixel_values_videos"]
    assert pixels.shape == (2, 8, 3, 128, 128)
    for i, path in enumerate(paths):
        assert_close_to_reference(pixels[i], reference_clip(decoded_frames(path), range(0, 24, 3)))
    uniform = processor(paths[0], sampling="uniform")["pixel_values_videos"][0]
    indices = np.linspace(0, 39, 8).round().astype(int)
    assert_close_to_reference(uniform, reference_clip(decoded_frames(paths[0]), indices))


def test_random_sampling_takes_consecutive_frames_from_random_starts(tmp_path):
    frames = np.repeat(np.arange(60, dtype=np.uint8)[:, None, None, None] * 4, 3, axis=-1) * np.ones((1, 8, 8, 1), np.uint8)
    processor = SlotSSMVideoProcessor(num_frames=5, do_resize=False, do_center_crop=False, do_normalize=False)
    starts = set()
    for _ in range(20):
        clip = processor(frames, sampling="random")["pixel_values_videos"][0, :, 0, 0, 0] * 255 / 4
        index = clip.round().long()
        assert torch.equal(index, index[0] + torch.arange(5))
        starts.add(int(index[0]))
    assert len(starts) > 5 and max(starts) <= 55


def test_arrays_tensors_and_frame_lists_give_the_same_result():
    frames = synthetic_frames(16, 96, 128)
    processor = SlotSSMVideoProcessor()
    expected = processor(frames)["pixel_values_videos"]
    assert_close_to_reference(expected[0], reference_clip([Image.fromarray(f) for f in frames], range(16)))
    channels_first = torch.from_numpy(frames).permute(0, 3, 1, 2)
    assert torch.equal(processor(channels_first)["pixel_values_videos"], expected)
    assert torch.equal(processor([Image.fromarray(f) for f in frames])["pixel_values_videos"], expected)
    assert torch.equal(processor(channels_first.float() / 255)["pixel_values_videos"], expected)
    batch = processor(np.stack([frames, frames[::-1].copy()]))["pixel_values_videos"]
    assert batch.shape == (2, 16, 3, 128, 128) and torch.equal(batch[0], expected[0])


def test_short_video_is_padded_with_its_last_frame_and_says_so(tmp_path):
    path = write_video(tmp_path / "short.mp4", synthetic_frames(6, 128, 128))
    out = SlotSSMVideoProcessor()(str(path))
    pixels = out["pixel_values_videos"][0]
    assert out["padded_frames"].tolist() == [10]
    assert all(torch.equal(pixels[t], pixels[5]) for t in range(6, 16))
    assert_close_to_reference(pixels, reference_clip(decoded_frames(path), [0, 1, 2, 3, 4, 5] + [5] * 10))


def test_round_trip_through_auto_video_processor(tmp_path):
    processor = SlotSSMVideoProcessor(num_frames=8, size={"shortest_edge": 64}, crop_size={"height": 64, "width": 64})
    processor.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "video_preprocessor_config.json").read_text())
    assert saved["num_frames"] == 8 and saved["sampling"] == "start" and saved["video_processor_type"] == "SlotSSMVideoProcessor"
    loaded = AutoVideoProcessor.from_pretrained(tmp_path)
    assert isinstance(loaded, SlotSSMVideoProcessor)
    frames = synthetic_frames(10, 80, 80)
    assert torch.equal(loaded(frames)["pixel_values_videos"], processor(frames)["pixel_values_videos"])


def test_defaults_are_the_official_pipeline():
    processor = SlotSSMVideoProcessor()
    assert processor.num_frames == 16 and processor.frame_stride == 1
    assert processor.size == {"shortest_edge": 128} and processor.crop_size == {"height": 128, "width": 128}
    assert list(processor.image_mean) == [0.485, 0.456, 0.406] and list(processor.image_std) == [0.229, 0.224, 0.225]
    assert int(processor.resample) == int(Image.BICUBIC)


def test_corrupt_empty_and_wrong_inputs_name_the_problem(tmp_path):
    processor = SlotSSMVideoProcessor()
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(2000))
    with pytest.raises(ValueError, match=rf"could not decode video file {corrupt}"):
        processor(str(corrupt))
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(write_video(tmp_path / "full.mp4", synthetic_frames(20, 64, 64)).read_bytes()[:300])
    with pytest.raises(ValueError, match=rf"could not decode video file {truncated}"):
        processor(str(truncated))
    with pytest.raises(ValueError, match="video file not found: .*missing.mp4"):
        processor(str(tmp_path / "missing.mp4"))
    with pytest.raises(ValueError, match="the video has no frames"):
        processor(np.zeros((0, 32, 32, 3), np.uint8))
    with pytest.raises(ValueError, match=r"expected frames of shape \(frames, height, width, channels\).*1, 3 or 4 \(RGBA\) channels, got shape \(4, 32, 32, 5\)"):
        processor(np.zeros((4, 32, 32, 5), np.uint8))
    with pytest.raises(ValueError, match="expected uint8 or floating-point pixels, got torch.int32"):
        processor(np.zeros((4, 32, 32, 3), np.int32))
    with pytest.raises(ValueError, match="sampling must be one of"):
        processor(np.zeros((4, 32, 32, 3), np.uint8), sampling="middle")
    with pytest.raises(ValueError, match="video_backend must be one of"):
        processor(np.zeros((4, 32, 32, 3), np.uint8), video_backend="opencv2")


def test_seek_segments_start_afresh_exactly_where_a_keyframe_lets_frames_be_skipped():
    rng = np.random.default_rng(0)
    for _ in range(300):
        total = int(rng.integers(1, 60))
        keyframes = sorted({0, *rng.choice(total, size=rng.integers(0, 8)).tolist()})
        targets = sorted(set(rng.choice(total, size=rng.integers(1, 10)).tolist()))
        segments = seek_segments(targets, keyframes)
        assert [target for _, run in segments for target in run] == targets
        assert all(start == max(k for k in keyframes if k <= run[0]) for start, run in segments)
        firsts = {run[0] for _, run in segments}
        for previous, target in zip(targets, targets[1:]):
            assert (target in firsts) == any(previous < k <= target for k in keyframes)


class PacketCounter:
    """A PyAV container, as far as `frame_table` uses one, that counts the packets read."""

    def __init__(self, container):
        self.container, self.read = container, 0

    def demux(self, stream):
        for packet in self.container.demux(stream):
            self.read += 1
            yield packet


@pytest.fixture
def decoder_spy(monkeypatch):
    """Counts the frames the decoder hands out while clips are decoded from keyframes; can drop one of them."""
    spy = SimpleNamespace(decoded=0, drop=None)
    decode_packets = video_decoding.decode_packets

    def counting(*args):
        for frame in decode_packets(*args):
            spy.decoded += 1
            if spy.decoded != spy.drop:
                yield frame

    monkeypatch.setattr(video_decoding, "decode_packets", counting)
    return spy


KEYFRAME_FILES = [  # keyframes every 8 frames; B-frames where the codec has them
    ("closed.mp4", "libx264", {"x264-params": "keyint=8:min-keyint=8:scenecut=0:bframes=3"}),
    ("open.mkv", "libx264", {"x264-params": "keyint=8:min-keyint=8:scenecut=0:bframes=3:open-gop=1"}),
    # a fixed I/P/B pattern whose B-frames no frame refers to
    ("bframes.mp4", "libx264", {"x264-params": "keyint=8:min-keyint=8:scenecut=0:bframes=3:b-adapt=0:b-pyramid=none"}),
    ("vp9.webm", "libvpx-vp9", {"g": "8", "keyint_min": "8"}),
    ("hevc.mp4", "libx265", {"x265-params": "keyint=8:min-keyint=8:scenecut=0:bframes=3:log-level=error"}),
]


@pytest.mark.parametrize("name,codec,options", KEYFRAME_FILES)
def test_clips_decoded_from_keyframes_equal_a_full_decode_and_skip_frames(tmp_path, decoder_spy, name, codec, options):
    path = write_video(tmp_path / name, synthetic_frames(60, 64, 96), codec, options=options)
    full = full_decode(path)
    with av.open(str(path)) as container:
        b_frames = {i for i, frame in enumerate(container.decode(video=0)) if frame.pict_type == PictureType.B}
    with av.open(str(path)) as container:
        timestamps, keyframes = frame_table(container, container.streams.video[0], None)
    assert len(timestamps) == len(full) == 60 and keyframes == list(range(0, 60, 8))
    for positions in ([0, 1, 2], [5, 20, 21, 40, 59], np.linspace(0, 59, 8).round().astype(int), [33, 34, 35, 36]):
        decoder_spy.decoded = 0
        with av.open(str(path)) as container:
            clip, metadata = decode_from_keyframes(container, container.streams.video[0], lambda *_: np.asarray(positions))
        assert metadata.frames_indices == list(positions)
        assert all(np.array_equal(frame, full[i]) for frame, i in zip(clip, positions, strict=True))
        # At most the runs from each keyframe to its last target are decoded (an open GOP also shows up to 3
        # B-frames from before each keyframe); unwanted frames that no frame refers to are skipped.
        segments = seek_segments(sorted(set(positions)), keyframes)
        needed = sum(run[-1] - start + 1 for start, run in segments)
        assert decoder_spy.decoded <= needed + (3 * len(segments) if name == "open.mkv" else 0)
        if name == "bframes.mp4":
            unwanted_b = {i for start, run in segments for i in range(start, run[-1]) if i not in run} & b_frames
            assert decoder_spy.decoded == needed - len(unwanted_b)
        assert decoder_spy.decoded < positions[-1] + 1 or positions[-1] < 8
        if name.endswith(".mp4"):  # a stated frame count: packets are read only as far as the clip needs
            with av.open(str(path)) as container:
                counter = PacketCounter(container)
                frame_table(counter, container.streams.video[0], positions[-1])
            assert counter.read <= positions[-1] + 1 + 4  # and the few decoded before that frame is shown


def test_files_the_packets_cannot_number_are_decoded_in_order(tmp_path, decoder_spy):
    path = write_video(tmp_path / "gop.mp4", synthetic_frames(40, 64, 96), "libx264", options={"g": "8"})
    decoder_spy.drop = 3  # a packet without a frame: a wanted frame never comes, the numbering no longer holds
    with av.open(str(path)) as container:
        assert decode_from_keyframes(container, container.streams.video[0], lambda *_: np.arange(6)) is None
    decoder_spy.drop = None
    # MPEG-TS: seeking lands past the keyframe asked for, so the clip is decoded from the first frame.
    transport = write_video(tmp_path / "gop.ts", synthetic_frames(40, 64, 96), "libx264", options={"g": "8"})
    for file in (path, transport):
        clip, metadata = decode_with_pyav(str(file), lambda *_: np.array([3, 17, 30, 39]))
        assert metadata.frames_indices == [3, 17, 30, 39]
        full = full_decode(file)
        assert all(np.array_equal(frame, full[i]) for frame, i in zip(clip, [3, 17, 30, 39]))


def test_frames_an_edit_list_hides_get_no_number(tmp_path):
    # Frames timed before zero: the mp4 muxer writes an edit list that starts at zero, so the first packets are
    # decoded but never shown, as in files cut without re-encoding.
    path = tmp_path / "cut.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25, options={"g": "8"})
        stream.height, stream.width, stream.pix_fmt = 64, 96, "yuv420p"
        for t, pixels in enumerate(synthetic_frames(30, 64, 96)):
            frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
            frame.pts = t - 3
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    full = full_decode(path)
    with av.open(str(path)) as container:
        timestamps, keyframes = frame_table(container, container.streams.video[0], None)
    assert len(timestamps) == len(full) < 30 and keyframes[0] == 0
    for positions in ([0, 1, 2], [10, 11, 12], [5, 20], [len(full) - 1]):
        with av.open(str(path)) as container:
            clip, metadata = decode_from_keyframes(container, container.streams.video[0], lambda *_: np.array(positions))
        assert all(np.array_equal(frame, full[i]) for frame, i in zip(clip, positions, strict=True))


@pytest.mark.parametrize("sampling", ["random", "uniform"])
def test_files_with_keyframes_give_the_clip_of_their_decoded_frames(tmp_path, sampling):
    name, codec, options = KEYFRAME_FILES[0]
    path = write_video(tmp_path / name, synthetic_frames(60, 64, 96), codec, options=options)
    processor = SlotSSMVideoProcessor(num_frames=6)
    for seed in range(3):
        np.random.seed(seed)
        from_file = processor(str(path), sampling=sampling, return_metadata=True)
        np.random.seed(seed)
        from_array = processor(np.stack(full_decode(path)), sampling=sampling, return_metadata=True)
        assert torch.equal(from_file["pixel_values_videos"], from_array["pixel_values_videos"])
        indices = from_file["video_metadata"][0].frames_indices
        assert indices == from_array["video_metadata"][0].frames_indices


def _process_in_worker(path):
    return SlotSSMVideoProcessor()(path)["pixel_values_videos"]


@pytest.mark.timeout(120)
def test_processor_runs_in_forked_dataloader_workers_after_use_in_the_parent(tmp_path):
    path = str(write_video(tmp_path / "clip.mp4", synthetic_frames(20, 64, 64)))
    expected = SlotSSMVideoProcessor()(path)["pixel_values_videos"]  # the parent's decoding threads now exist
    loader = torch.utils.data.DataLoader(
        [path, path], batch_size=None, num_workers=2, multiprocessing_context="fork", collate_fn=_process_in_worker
    )
    results = list(loader)
    assert len(results) == 2 and all(torch.equal(result, expected) for result in results)
