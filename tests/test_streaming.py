"""Frame-by-frame inference: a full pass equals a prefix pass followed by single frames or chunks, for every
variant, and `stream` carries only the recurrent state."""

import numpy as np
import pytest
import torch
from slotssm_inputs import tiny_config, video
from videos import synthetic_frames, write_video

from slotssm_hf import SlotSSMForVideoReconstruction, SlotSSMModel, SlotSSMVideoProcessor, stream

VARIANTS = {
    "mamba2-inverted-vit": {},
    "mamba1-standard-vit-ffn": {"mamba_version": "mamba1", "use_inverted_attention": False, "use_ffn": True},
    "mamba2-standard-cnn-broadcast": {
        "encoder_type": "cnn", "cnn_downsampling_ratio": 4, "use_inverted_attention": False,
        "decoder_type": "spatial_broadcast", "decoder_initial_size": 4, "mamba_chunk_size": 2,
    },
    "mamba1-inverted-cnn": {"encoder_type": "cnn", "cnn_downsampling_ratio": 4, "mamba_version": "mamba1"},
}  # fmt: skip


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("prefix", [1, 4])
def test_prefix_then_single_frames_equals_full_pass(variant, prefix):
    config = tiny_config(**VARIANTS[variant])
    model = SlotSSMForVideoReconstruction(config).eval()
    frames = video(config, frames=9)
    with torch.no_grad():
        full = model(frames)
        out = model(frames[:, :prefix], use_cache=True)
        cache, pieces = out.cache, [out]
        for t in range(prefix, 9):
            out = model(frames[:, t : t + 1], cache=cache, use_cache=True)
            assert out.cache is cache  # updated in place, never grown
            pieces.append(out)
    for field in ("last_hidden_state", "reconstruction", "masks"):
        if getattr(full, field) is not None:
            joined = torch.cat([getattr(piece, field) for piece in pieces], dim=1)
            torch.testing.assert_close(joined, getattr(full, field), rtol=1e-4, atol=1e-5, msg=field)


def test_chunks_of_several_frames_continue_the_video():
    config = tiny_config(mamba_chunk_size=2)
    model = SlotSSMModel(config).eval()
    frames = video(config, frames=11)
    with torch.no_grad():
        full = model(frames).last_hidden_state
        cache, pieces = None, []
        for start, stop in [(0, 3), (3, 4), (4, 9), (9, 11)]:
            out = model(frames[:, start:stop], cache=cache, use_cache=True)
            cache = out.cache
            pieces.append(out.last_hidden_state)
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, rtol=1e-4, atol=1e-5)


def test_no_cache_is_returned_unless_asked():
    config = tiny_config()
    model = SlotSSMModel(config).eval()
    with torch.no_grad():
        assert model(video(config)).cache is None
        assert len(model(video(config), use_cache=True).cache.layers) == config.num_hidden_layers


def test_stream_over_a_file_matches_the_full_pass(tmp_path):
    config = tiny_config(image_size=32)
    model = SlotSSMForVideoReconstruction(config).eval()
    processor = SlotSSMVideoProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    path = write_video(tmp_path / "clip.mp4", synthetic_frames(12, 48, 64))
    with torch.no_grad():
        full = model(processor(str(path), do_sample_frames=False)["pixel_values_videos"])
    outputs = list(stream(model, str(path), processor))
    assert len(outputs) == 12 and all(out.reconstruction.shape == (1, 1, 3, 32, 32) for out in outputs)
    joined = torch.cat([out.last_hidden_state for out in outputs], dim=1)
    torch.testing.assert_close(joined, full.last_hidden_state, rtol=1e-4, atol=1e-5)
    chunks = list(stream(model, str(path), processor, chunk_size=5))
    assert [out.last_hidden_state.shape[1] for out in chunks] == [5, 5, 2]


def test_stream_keeps_only_the_recurrent_state():
    config = tiny_config(image_size=32)
    model = SlotSSMModel(config).eval()
    processor = SlotSSMVideoProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    frames = (np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8) for _ in range(40))
    sizes = []
    for out in stream(model, frames, processor):
        cache = out.cache
        sizes.append(sum(t.numel() for layer in cache.layers for t in [*layer.conv_states.values(), *layer.recurrent_states.values()]))
    assert len(sizes) == 40 and len(set(sizes)) == 1
