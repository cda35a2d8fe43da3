"""Bad and unusual inputs, as a table: each row names a builder (what is under test), the input it is given, and
what must happen: an exception of a given type whose message holds a given fragment, or a stated behaviour.

Another family adds its rows to `CASES` (or to a list of its own, passed to `test_bad_input` through
`pytest.mark.parametrize`), reusing `BadInput` and, where they fit, the builders below. Builders take pytest's
`tmp_path` and return the object under test; `feed` gives it the bad input and returns the result, which
`check` (for a row without `error`) asserts on.
"""

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import torch
from huggingface_hub.errors import StrictDataclassClassValidationError, StrictDataclassFieldValidationError
from safetensors.torch import load_file, save_file
from slotssm_inputs import tiny_config, video
from transformers import DynamicCache

from slotssm_hf import SlotSSMModel, SlotSSMVideoProcessor
from slotssm_hf.conversion.conversion_utils import ConversionError
from slotssm_hf.conversion.convert_slotssm import convert_checkpoint
from slotssm_hf.hub.push import PushError, push_to_hub
from slotssm_hf.synthetic import bouncing_shapes, write_videos
from slotssm_hf.training.train import main as train


@dataclass(frozen=True)
class BadInput:
    """One row: `build(tmp_path)` makes the object under test, `feed(obj)` gives it the bad input. Either `error`
    (an exception type) and `match` (a fragment of its message, a regex), or `check(result, obj)`."""

    id: str
    build: Callable[[Any], Any]
    feed: Callable[[Any], Any]
    error: type[BaseException] | None = None
    match: str = ""
    check: Callable[[Any, Any], None] | None = None


RGBA = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 4), dtype=np.uint8)


def rgba_matches_blended_rgb(result, processor):
    """Each pixel is colour * alpha + white * (1 - alpha), computed here in float64 and rounded like the processor."""
    alpha = RGBA[..., 3:] / 255.0
    blended = np.round(RGBA[..., :3] * alpha + 255 * (1 - alpha)).astype(np.uint8)
    torch.testing.assert_close(result["pixel_values_videos"], processor(blended)["pixel_values_videos"], rtol=0, atol=0)


# Builders.
def processor(tmp_path):
    return SlotSSMVideoProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}, num_frames=4)


def model(tmp_path):
    torch.manual_seed(0)
    return SlotSSMModel(tiny_config()).eval()


def empty_folder(tmp_path):
    (tmp_path / "official").mkdir()
    return tmp_path / "official"


def video_folder(tmp_path):
    """Two short mp4 files without boxes."""
    write_videos(bouncing_shapes(num_videos=2, num_frames=4, image_size=32, cache_dir=str(tmp_path / "cache")),
                 str(tmp_path / "videos"))  # fmt: skip
    return tmp_path / "videos"


def saved_checkpoint(tmp_path):
    """A folder `slotssm-hf push` accepts: pushes below fail before their first request, which would otherwise go
    to a closed port (and fail with another message)."""
    from slotssm_hf import SlotSSMForVideoReconstruction

    torch.manual_seed(0)
    SlotSSMForVideoReconstruction(tiny_config()).save_pretrained(tmp_path / "checkpoint")
    return tmp_path / "checkpoint"


# Inputs.
FRAMES = np.random.default_rng(0).random((6, 40, 40, 3), dtype=np.float32)  # [0, 1] floats
NO_HUB = {"token": "hf_unused", "endpoint": "http://127.0.0.1:9"}


def with_value(frames, t, value):
    frames = frames.copy()
    frames[t, 3, 4, 1] = value
    return frames


def pixels(result):
    return result["pixel_values_videos"]


def same_as_clamped(result, processor):
    """Floats within rounding of [0, 1] are the pixels clamping gives."""
    assert torch.equal(pixels(result), pixels(processor(np.clip(with_value(FRAMES, 2, 0.0), 0, 1))))


def runs_in_float32(dtype):
    def check(result, model):
        clip = video(model.config, batch=1, frames=3)
        with torch.no_grad():
            expected = model(clip.to(dtype).float()).last_hidden_state
        assert result.last_hidden_state.dtype == torch.float32 and torch.equal(result.last_hidden_state, expected)

    return check


def nan_pixel_at_frame(t):
    def feed(model):
        clip = video(model.config, batch=2, frames=5)
        clip[1, t, 0, 3, 4] = float("nan")
        with torch.no_grad():
            return model(clip).last_hidden_state

    return feed


def causal_despite_nan_at_frame(t):
    """The slots before frame t are those of the clean clip (the model is causal); from frame t on they are NaN."""

    def check(result, model):
        with torch.no_grad():
            clean = model(video(model.config, batch=2, frames=5)).last_hidden_state
        assert torch.equal(result[:, :t], clean[:, :t]) and torch.equal(result[0], clean[0])
        assert result[1, t:].isnan().all()

    return check


def forward(dtype=torch.float32, batch=1, **kwargs):
    def feed(model):
        with torch.no_grad():
            return model(video(model.config, batch=batch, frames=3).to(dtype), **kwargs)

    return feed


def cache_of(batch=1, **config_overrides):
    """The cache a (possibly other) model returns after frames of `batch` videos."""
    torch.manual_seed(0)
    other = SlotSSMModel(tiny_config(**config_overrides)).eval()
    with torch.no_grad():
        return other(video(other.config, batch=batch, frames=2), use_cache=True).cache


def nan_weights(folder):
    state = load_file(folder / "model.safetensors")
    state["decoder.input_proj.bias"][0] = float("nan")
    save_file(state, folder / "model.safetensors", metadata={"format": "pt"})
    return folder


CASES = [
    # SlotSSMVideoProcessor
    BadInput("processor-float-0-255", processor, lambda p: p(FRAMES * 255), ValueError,
             r"video 0: floating-point pixels must be in \[0, 1\], got values from .* to 25\d.*divide 0-255 floats"),
    BadInput("processor-float-nan", processor, lambda p: p(with_value(FRAMES, 2, np.nan)), ValueError,
             "video 0: the frames hold NaN or infinite pixel values"),
    BadInput("processor-float-inf", processor, lambda p: p(with_value(FRAMES, 5, -np.inf)), ValueError,
             "NaN or infinite pixel values"),
    BadInput("processor-float-within-rounding", processor, lambda p: p(with_value(FRAMES, 2, -1e-3)),
             check=same_as_clamped),
    BadInput("processor-num-frames-0", processor, lambda p: p(FRAMES, num_frames=0), ValueError,
             "num_frames must be a positive integer, got 0"),
    BadInput("processor-num-frames-negative", lambda t: SlotSSMVideoProcessor(num_frames=-2), lambda p: p(FRAMES),
             ValueError, "num_frames must be a positive integer, got -2"),
    BadInput("processor-num-frames-float", processor, lambda p: p(FRAMES, num_frames=2.5),
             StrictDataclassFieldValidationError, "Field 'num_frames' with value 2.5"),
    BadInput("processor-frame-stride-0", processor, lambda p: p(FRAMES, frame_stride=0), ValueError,
             "frame_stride must be a positive integer, got 0"),
    BadInput("processor-frame-stride-negative", processor, lambda p: p(FRAMES, frame_stride=-1), ValueError,
             "frame_stride must be a positive integer, got -1"),
    BadInput("processor-fps-0", processor, lambda p: p(FRAMES, fps=0), ValueError,
             r"fps must be a positive number \(or None\), got 0"),
    BadInput("processor-frames-of-different-sizes", processor, lambda p: p([FRAMES[0], FRAMES[1], FRAMES[2, :30]]),
             ValueError, r"video 0: every frame must have the shape of the first, \(40, 40, 3\); frame 2 has shape "
             r"\(30, 40, 3\)"),
    BadInput("processor-no-frames", processor, lambda p: p(np.zeros((0, 32, 32, 3), np.uint8)), ValueError,
             "the video has no frames"),
    BadInput("processor-empty-list", processor, lambda p: p([]), ValueError, "expected at least one video"),
    BadInput("processor-five-channels", processor, lambda p: p(np.zeros((4, 32, 32, 5), np.uint8)), ValueError,
             r"expected frames of shape \(frames, height, width, channels\) .* with 1, 3 or 4 \(RGBA\) channels"),
    BadInput("processor-rgba-without-conversion", processor,
             lambda p: p(np.zeros((4, 32, 32, 4), np.uint8), do_convert_rgb=False), ValueError,
             "RGBA frames need do_convert_rgb=True"),
    BadInput("processor-rgba-is-blended-over-white", processor, lambda p: p(RGBA), check=rgba_matches_blended_rgb),
    BadInput("processor-fps-without-a-frame-rate", processor, lambda p: p(FRAMES, fps=5), ValueError,
             "sampling at fps=5 needs the video's frame rate; it is unknown for this video"),
    BadInput("processor-int32-pixels", processor, lambda p: p(np.zeros((4, 32, 32, 3), np.int32)), ValueError,
             "expected uint8 or floating-point pixels, got torch.int32"),
    BadInput("processor-unknown-sampling", processor, lambda p: p(FRAMES, sampling="middle"), ValueError,
             "sampling must be one of"),
    BadInput("processor-unknown-kwarg", processor, lambda p: p(FRAMES, num_frame=4), TypeError, "num_frame"),
    BadInput("processor-missing-file", processor, lambda p: p("/nonexistent/clip.mp4"), ValueError,
             "video file not found: /nonexistent/clip.mp4"),
    BadInput("processor-clip-seeds-count", processor, lambda p: p([FRAMES, FRAMES], clip_seeds=[1]), ValueError,
             r"clip_seeds must hold one seed per video \(2\), got 1"),
    # SlotSSMModel inputs
    BadInput("model-float64-pixels", model, forward(torch.float64), check=runs_in_float32(torch.float64)),
    BadInput("model-bfloat16-pixels", model, forward(torch.bfloat16), check=runs_in_float32(torch.bfloat16)),
    BadInput("model-uint8-pixels", model, forward(torch.uint8), ValueError, "a floating dtype, got .* torch.uint8"),
    BadInput("model-wrong-image-size", model, lambda m: m(torch.zeros(1, 2, 3, 16, 16)), ValueError,
             r"expected pixel_values_videos of shape \(batch, frames, 3, 32, 32\)"),
    BadInput("model-frames-axis-missing", model, lambda m: m(torch.zeros(1, 3, 32, 32)), ValueError,
             r"got \(1, 3, 32, 32\)"),
    BadInput("model-no-frames", model, lambda m: m(torch.zeros(1, 0, 3, 32, 32)), ValueError, "at least one frame"),
    BadInput("model-nan-pixel-mamba2", model, nan_pixel_at_frame(2), check=causal_despite_nan_at_frame(2)),
    BadInput("model-nan-pixel-mamba1", lambda t: SlotSSMModel(tiny_config(mamba_version="mamba1")).eval(),
             nan_pixel_at_frame(3), check=causal_despite_nan_at_frame(3)),
    # Caches
    BadInput("cache-empty-dynamic-cache", model, forward(cache=DynamicCache(), use_cache=True), ValueError,
             r"the cache must come from a previous call of this model with use_cache=True .*got a DynamicCache with "
             r"layers \[\], where this model needs 2 linear-attention layers"),
    BadInput("cache-not-a-cache", model, forward(cache=(torch.zeros(1),), use_cache=True), ValueError,
             "the cache must come from a previous call of this model.*got a tuple"),
    BadInput("cache-other-batch-size", model, forward(batch=2, cache=cache_of(batch=1), use_cache=True), ValueError,
             r"the cache must come from a previous call .*its layer 0 holds .*\(3, 160, 4\).* needs .*\(6, 160, 4\).* "
             "for 2 videos of 3 slots"),
    BadInput("cache-other-model-depth", model, forward(cache=cache_of(num_hidden_layers=1), use_cache=True),
             ValueError, "needs 2 linear-attention layers, one per slot block"),
    BadInput("cache-other-model-state-size", model, forward(cache=cache_of(mamba_d_state=8), use_cache=True),
             ValueError, r"its layer 0 holds \(conv, SSM\) states of shapes"),
    # convert-slotssm
    BadInput("convert-output-is-source", empty_folder, lambda f: convert_checkpoint(f, f, overwrite=True),
             ConversionError, "the output .* and the source .* overlap"),
    BadInput("convert-output-inside-source", empty_folder, lambda f: convert_checkpoint(f, f / "out", overwrite=True),
             ConversionError, "overlap"),
    BadInput("convert-source-inside-output", empty_folder, lambda f: convert_checkpoint(f, f.parent, overwrite=True),
             ConversionError, "overlap"),
    BadInput("convert-source-not-official", empty_folder, lambda f: convert_checkpoint(f, f.parent / "out"),
             ConversionError, "holds neither the official sub-model folders"),
    # slotssm-hf push (each fails before its first request)
    BadInput("push-repo-id-without-namespace", saved_checkpoint, lambda f: push_to_hub(f, "name", **NO_HUB),
             PushError, "needs a namespace"),
    BadInput("push-invalid-dataset-id", saved_checkpoint,
             lambda f: push_to_hub(f, "org/name", datasets=["bad id"], **NO_HUB), PushError,
             "'bad id' is not a valid dataset id"),
    BadInput("push-invalid-branch", saved_checkpoint, lambda f: push_to_hub(f, "org/name", revision="a:b", **NO_HUB),
             PushError, "--revision 'a:b' is not a valid branch name"),
    BadInput("push-non-finite-weights", saved_checkpoint, lambda f: push_to_hub(nan_weights(f), "org/name", **NO_HUB),
             PushError, r"holds NaN or infinite values \(decoder.input_proj.bias\)"),
    BadInput("push-pickle-file", saved_checkpoint,
             lambda f: (torch.save({}, f / "model.pt"), push_to_hub(f, "org/name", **NO_HUB)), PushError,
             r"pickle files \(model.pt\)"),
    # slotssm-hf train (each fails before its first step)
    BadInput("train-override-unknown-field", empty_folder, lambda f: train(["--config-overrides", "num_slotz=3"]),
             ValueError, "key num_slotz isn't in the original config dict"),
    BadInput("train-override-invalid-value", empty_folder, lambda f: train(["--config-overrides", "num_slots=0"]),
             StrictDataclassClassValidationError, "num_slots must be a positive integer, got 0"),
    BadInput("train-conditional-savi-on-data-without-boxes", video_folder,
             lambda f: train(["--model", "savi", "--data", str(f), "--output-dir", str(f.parent / "out")]),
             ValueError, "savi tiny starts its slots from first-frame boxes: the data needs a 'boxes' column"),
]  # fmt: skip


def test_case_ids_are_unique():
    ids = [case.id for case in CASES]
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.id)
def test_bad_input(case, tmp_path):
    assert (case.error is None) != (case.check is None), "a row needs either an error or a check"
    under_test = case.build(tmp_path)
    if case.error is None:
        case.check(case.feed(under_test), under_test)
        return
    with pytest.raises(case.error) as raised:
        case.feed(under_test)
    assert re.search(case.match, str(raised.value), re.DOTALL), f"{raised.value!s} does not match {case.match!r}"
