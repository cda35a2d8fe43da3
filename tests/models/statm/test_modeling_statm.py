"""STATM-SAVi: the spatial-temporal predictor and the whole model against a float64 implementation evaluated on
official-layout Flax parameters, parameter counts, the predictor's attention maps and the hidden states transformers'
output capturing records, streaming with the memory buffer as the cache, and Auto loading."""

import math

import pytest
import torch
from savi_checkpoints import TINY, assert_matches_reference, inputs
from statm_checkpoints import STATM_CASES, statm_params

from slotssm_hf import FAMILIES, STATMCache, STATMConfig, STATMForVideoReconstruction, STATMModel
from slotssm_hf.conversion.convert_savi import convert_savi_params
from slotssm_hf.conversion.convert_statm import STATM
from slotssm_hf.conversion.flax_checkpoint import flatten_tree
from slotssm_hf.conversion.references.statm import STATMReference


def converted_model(overrides) -> tuple[STATMConfig, dict, STATMForVideoReconstruction]:
    config = STATMConfig(**overrides)
    flat = flatten_tree(statm_params(config))
    model = STATMForVideoReconstruction(config).eval()
    model.load_state_dict(convert_savi_params(flat, config, STATM))
    return config, flat, model


def test_official_variant_parameter_counts():
    counts = {}
    for name, overrides in FAMILIES["statm"].variants.items():
        config = STATMConfig(**overrides)
        with torch.device("meta"):
            counts[name] = sum(p.numel() for p in STATMForVideoReconstruction(config).parameters())
        official = sum(a.size for k, a in flatten_tree(statm_params(config)).items() if "pos_embedding" not in k)
        # torch's GRU cell adds a (zero) hidden bias to the r and z gates: 2 x slot_size; the tiny variant's slot
        # readout is not in the official model.
        slot_readout = (config.slot_size + 1) * sum(config.targets.values()) if config.decoder_slot_readout else 0
        assert counts[name] == official + 2 * config.slot_size + slot_readout, name
    # The official STATM-SAVi-S has 961,572 parameters (zoo-candidates.md section 8), 8,320 of them the two fixed
    # position grids (recomputed here, not stored).
    assert counts["statm_savi_conditional_small"] == 961_572 - 8_192 - 128 + 256
    official = {name: count for name, count in counts.items() if name.startswith("statm_")}  # not the tiny variant
    assert official == {"statm_savi_conditional_small": 953_508, "statm_savi_pp_conditional": 23_264_005,
                        "statm_savi_conditional": 23_264_005}  # fmt: skip


@pytest.mark.parametrize("case", ["cnn-boxes", "resnet-transformer-multihead-corrector"])
def test_predictor_matches_float64_reference_over_a_memory_of_frames(case):
    config, flat, model = converted_model(STATM_CASES[case])
    predictor, reference = model.statm.predictor.double(), STATMReference(flat, config)
    generator = torch.Generator().manual_seed(1)
    history = [torch.randn(2, config.num_slots, config.slot_size, generator=generator).double() for _ in range(4)]
    with torch.no_grad():
        ours = predictor(history[-1], torch.stack(history, dim=1))
    torch.testing.assert_close(ours, reference.predict(history[-1], history), rtol=0, atol=1e-10)


def test_temporal_attention_over_one_frame_is_the_value_projection():
    # With the current frame alone in the memory the softmax has one key: MHA_time(c, [c]) = out(value(c)).
    config, _, model = converted_model(TINY)
    block = model.statm.predictor.double()
    slots = torch.randn(2, config.num_slots, config.slot_size, dtype=torch.float64)
    with torch.no_grad():
        time = block.time_attention.o_proj(block.time_attention.v_proj(slots))
        hidden = block.space_norm(slots + block.space_attention(slots)[0]) + block.time_norm(slots + time)
        expected = block.mlp_norm(hidden + block.mlp(hidden))
        torch.testing.assert_close(block(slots, slots[:, None]), expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("case", STATM_CASES)
def test_model_matches_float64_reference_on_the_flax_arrays(case):
    config, flat, model = converted_model(STATM_CASES[case])
    video, boxes = inputs(config, frames=4)
    reference = STATMReference(flat, config)(video.permute(0, 1, 3, 4, 2).double(), boxes.double())
    assert_matches_reference(model, reference, video, boxes)


@pytest.mark.parametrize("memory_size", [None, 2])
def test_a_prefix_then_single_frames_equals_the_full_pass(memory_size):
    config = STATMConfig(**{**TINY, "memory_size": memory_size})
    model = STATMForVideoReconstruction(config).eval()
    video, boxes = inputs(config, frames=5)
    with torch.no_grad():
        whole = model(video, boxes=boxes)
        assert whole.cache is None  # use_cache defaults to config.use_cache (False)
        step = model(video[:, :2], boxes=boxes, use_cache=True)
        cache, parts = step.cache, [step.reconstruction]
        for t in range(2, 5):
            step = model(video[:, t : t + 1], cache=cache)
            assert step.cache is cache  # updated in place
            parts.append(step.reconstruction)
    torch.testing.assert_close(torch.cat(parts, dim=1), whole.reconstruction, rtol=0, atol=1e-6)
    torch.testing.assert_close(cache.predicted_slots, whole.predicted_slots[:, -1], rtol=0, atol=1e-6)
    assert cache.seen_frames == 5 and cache.get_seq_length() == (memory_size or 5)


def test_the_memory_changes_the_prediction_and_a_bounded_memory_forgets():
    config = STATMConfig(**TINY)
    model = STATMModel(config).eval()
    video, boxes = inputs(config, frames=4)
    with torch.no_grad():
        full = model(video, boxes=boxes).predicted_slots[:, -1]
        windowed = model.__class__(STATMConfig(**{**TINY, "memory_size": 1}))
        windowed.load_state_dict(model.state_dict())
        short = windowed.eval()(video, boxes=boxes).predicted_slots[:, -1]
        # Only the frames before the last can make the difference.
        assert (full - short).abs().max() > 1e-3
        memory = STATMCache(memory_size=1)
        memory.append(torch.ones(2, config.num_slots, config.slot_size))
        assert memory.append(torch.zeros(2, config.num_slots, config.slot_size)).shape[1] == 1


def test_initial_slots_start_an_empty_memory_as_the_official_sliced_evaluation():
    config = STATMConfig(**TINY)
    model = STATMModel(config).eval()
    video, boxes = inputs(config, frames=4)
    with torch.no_grad():
        first = model(video[:, :2], boxes=boxes)
        second = model(video[:, 2:], initial_slots=first.predicted_slots[:, -1], use_cache=True)
    assert second.cache.get_seq_length() == 2  # the buffer restarted at the slice


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda m, v, b: m(v, boxes=b, cache=STATMCache(), initial_slots=torch.zeros(2, 4, 16)), "either cache"),
        (lambda m, v, b: m(v[:1], cache=m(v, boxes=b, use_cache=True).cache),
         r"its memory has shape \(2, 2, 4, 16\); 1 videos need"),
        (lambda m, v, b: m(v), r"needs boxes of shape \(2, 3, 4\)"),
        (lambda m, v, b: m(v, boxes=b, cache=STATMCache(memory_size=3)), "the cache keeps 3 frames"),
    ],
)
def test_bad_calls_name_what_was_expected(call, message):
    config = STATMConfig(**TINY)
    video, boxes = inputs(config, frames=2)
    with pytest.raises(ValueError, match=message):
        call(STATMModel(config).eval(), video, boxes)


def test_activation_checkpointing_gives_the_same_gradients():
    config = STATMConfig(**TINY)
    video, boxes = inputs(config)
    grads = []
    for checkpointing in (False, True):
        torch.manual_seed(0)
        model = STATMForVideoReconstruction(config).train()
        if checkpointing:
            model.activation_checkpointing_enable()
            assert model.statm.predictor.gradient_checkpointing  # the block recomputes its forward in backward
        model(video, boxes=boxes, labels=torch.zeros(2, 3, 3, 16, 16)).loss.backward()
        grads.append(model.statm.predictor.time_attention.k_proj.weight.grad)
    torch.testing.assert_close(grads[0], grads[1])
    assert grads[0].abs().sum() > 0  # the memory is on the gradient path


def test_invalid_memory_size_is_refused():
    with pytest.raises(Exception, match="memory_size must be None"):
        STATMConfig(**{**TINY, "memory_size": 0})


def test_auto_classes_load_a_saved_statm_with_the_package(tmp_path):
    from transformers import AutoConfig, AutoModel, AutoModelForPreTraining

    STATMForVideoReconstruction(STATMConfig(**TINY)).save_pretrained(tmp_path / "model")
    assert type(AutoConfig.from_pretrained(tmp_path / "model")) is STATMConfig
    assert type(AutoModelForPreTraining.from_pretrained(tmp_path / "model")) is STATMForVideoReconstruction
    assert type(AutoModel.from_pretrained(tmp_path / "model")) is STATMModel


@pytest.mark.parametrize("case", STATM_CASES)
def test_predictor_attentions_are_the_spatial_and_temporal_maps_of_every_frame(case):
    # Against the softmax of the reference's queries and keys: across the slots of the frame, and of each slot over
    # its history in the memory buffer (cut to memory_size).
    config, flat, model = converted_model(STATM_CASES[case])
    model.set_attn_implementation("eager")  # the predictor's weights come from the eager attention only
    reference = STATMReference(flat, config)
    video, boxes = inputs(config, frames=4)
    with torch.no_grad():
        out = model.double()(video.double(), boxes=boxes.double(), output_hidden_states=True, output_attentions=True)
    heads, root = config.predictor_num_heads, "TimeSpaceTransformerBlock2_0/MultiHeadDotProductAttention"

    def expected_weights(queries, keys, path):
        query = reference.dense(queries, f"{path}/query").unflatten(-1, (heads, -1))
        key = reference.dense(keys, f"{path}/key").unflatten(-1, (heads, -1))
        return torch.einsum("...qhd,...khd->...hqk", query / math.sqrt(query.shape[-1]), key).softmax(dim=-1)

    assert len(out.predictor_attentions) == 2 * 4
    for t in range(4):
        slots = out.last_hidden_state[:, t]
        memory = out.last_hidden_state[:, max(0, t + 1 - (config.memory_size or t + 1)) : t + 1].transpose(1, 2)
        space, time = out.predictor_attentions[2 * t : 2 * t + 2]
        assert time.shape == (2, config.num_slots, heads, 1, memory.shape[2])
        torch.testing.assert_close(space, expected_weights(slots, slots, f"{root}_0"), rtol=0, atol=1e-10)
        torch.testing.assert_close(time, expected_weights(slots[:, :, None], memory, f"{root}_1"), rtol=0, atol=1e-10)
    assert len(out.hidden_states) == 2 * 4 + 1
    for t in range(4):
        assert torch.equal(out.hidden_states[2 * t + 1], out.last_hidden_state[:, t])
        assert torch.equal(out.hidden_states[2 * t + 2], out.predicted_slots[:, t])


def test_streaming_records_what_the_full_pass_records():
    config = STATMConfig(**{**TINY, "memory_size": 2})
    model = STATMModel(config).eval()
    model.set_attn_implementation("eager")
    video, boxes = inputs(config, frames=4)
    record = {"output_hidden_states": True, "output_attentions": True}
    with torch.no_grad():
        whole = model(video, boxes=boxes, **record)
        parts = [model(video[:, :2], boxes=boxes, use_cache=True, **record)]
        cache = parts[0].cache
        for t in (2, 3):
            parts.append(model(video[:, t : t + 1], cache=cache, **record))
    # Each call starts from the slots the cache predicted; its later hidden states are the whole pass's. Measured:
    # identical; 1e-6 as for the reconstruction above (the encoder runs on batches of other sizes).
    hidden_states = [parts[0].hidden_states[0]] + [h for part in parts for h in part.hidden_states[1:]]
    for name, recorded in [("hidden_states", hidden_states),
                           ("attentions", [a for part in parts for a in part.attentions]),
                           ("predictor_attentions", [a for part in parts for a in part.predictor_attentions])]:
        assert len(recorded) == len(whole[name]), name
        for ours, expected in zip(recorded, whole[name]):
            torch.testing.assert_close(ours, expected, rtol=0, atol=1e-6, msg=name)
    assert torch.equal(parts[2].hidden_states[0], parts[1].predicted_slots[:, -1])
