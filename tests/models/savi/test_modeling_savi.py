"""SAVi / SAVi++: the model's modules against a float64 implementation evaluated on official-layout Flax parameters,
parameter counts and initialisation, continuation from predicted slots, the loss, the hidden states and attention
maps transformers' output capturing records, bad inputs and configurations, Auto loading, and training on boxes from
the collator."""

import math

import numpy as np
import pytest
import torch
from savi_checkpoints import CASES, TINY, inputs, official_params

from slotssm_hf import FAMILIES, SAViConfig, SAViForVideoReconstruction, SAViModel
from slotssm_hf.conversion.convert_savi import convert_savi_params
from slotssm_hf.conversion.flax_checkpoint import flatten_tree
from slotssm_hf.conversion.references.savi import SAViReference
from slotssm_hf.models.object_centric import flax_same_padding, flax_transpose_padding


def test_flax_same_padding_is_asymmetric_like_xla():
    assert flax_same_padding(128, 5, 2) == (1, 2)
    assert flax_same_padding(64, 3, 2) == (0, 1)
    assert flax_same_padding(64, 5, 1) == (2, 2)
    assert flax_transpose_padding(5, 2) == (3, 2)  # what flax 0.3.5 pads, run on CPU (zoo-candidates.md, section 8)


def test_official_variant_parameter_counts():
    counts = {}
    for name, overrides in FAMILIES["savi"].variants.items():
        with torch.device("meta"):
            counts[name] = sum(p.numel() for p in SAViForVideoReconstruction(SAViConfig(**overrides)).parameters())
    # The official SAVi-S has 895,268 parameters, of which 8,320 are the two fixed position grids (recomputed here,
    # not stored); torch's GRU cell adds a (zero) hidden bias to the r and z gates: 2 x 128.
    assert counts["savi_conditional_small"] == 895_268 - 8_192 - 128 + 256
    official = {name: count for name, count in counts.items() if name.startswith("savi_")}  # not the tiny variants
    assert official == {"savi_conditional_small": 887_204, "savi_conditional_medium": 1_132_676,
                        "savi_conditional_large": 22_273_028, "savi_pp_conditional": 23_131_781}  # fmt: skip


def test_continuing_from_the_predicted_slots_equals_one_pass():
    config = SAViConfig(**TINY)
    model = SAViModel(config).eval()
    video, boxes = inputs(config, frames=4)
    with torch.no_grad():
        whole = model(video, boxes=boxes)
        first = model(video[:, :2], boxes=boxes)
        rest = model(video[:, 2:], initial_slots=first.predicted_slots[:, -1])
    torch.testing.assert_close(torch.cat([first.last_hidden_state, rest.last_hidden_state], 1), whole.last_hidden_state)


def test_loss_is_the_official_objective_and_tuple_outputs():
    config = SAViConfig(**{**TINY, "targets": {"video": 3}})
    model = SAViForVideoReconstruction(config).eval()
    video, boxes = inputs(config)
    with torch.no_grad():
        out = model(video, boxes=boxes)
        # squared error summed over frames, pixels and channels, averaged over videos
        assert torch.allclose(out.loss, ((out.reconstruction - video) ** 2).sum(dim=(1, 2, 3, 4)).mean())
        as_tuple = model(video, boxes=boxes, return_dict=False)
    assert torch.equal(as_tuple[0], out.loss) and torch.equal(as_tuple[1], out.reconstruction)
    assert torch.allclose(out.masks.sum(dim=2), torch.ones(()))  # a distribution over slots at every pixel


def test_eager_and_sdpa_give_the_same_output():
    config = SAViConfig(**CASES["resnet-transformer-early-fusion"])
    video, boxes = inputs(config)
    results = []
    for implementation in ("eager", "sdpa"):
        torch.manual_seed(0)
        config._attn_implementation = implementation
        model = SAViForVideoReconstruction(config).eval()
        with torch.no_grad():
            results.append(model(video, boxes=boxes).reconstruction)
    torch.testing.assert_close(results[0], results[1], rtol=1e-5, atol=1e-5)


def test_gaussian_initialiser_draws_from_the_generator():
    config = SAViConfig(**{**TINY, "initializer_type": "gaussian"})
    model = SAViModel(config).eval()
    video, _ = inputs(config)
    with torch.no_grad():
        a = model(video, generator=torch.Generator().manual_seed(1)).last_hidden_state
        b = model(video, generator=torch.Generator().manual_seed(1)).last_hidden_state
        c = model(video, generator=torch.Generator().manual_seed(2)).last_hidden_state
    assert torch.equal(a, b) and not torch.allclose(a, c)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"pixel_values_videos": torch.rand(2, 3, 3, 8, 8)}, r"of shape \(batch, frames, 3, 16, 16\)"),
        ({"pixel_values_videos": torch.zeros(2, 3, 3, 16, 16, dtype=torch.uint8)}, "floating dtype"),
        ({"pixel_values_videos": torch.randn(2, 3, 3, 16, 16)}, r"frames with values in \[0, 1\]"),
        ({"boxes": None}, r"needs boxes of shape \(2, 3, 4\)"),
        ({"boxes": torch.rand(2, 4, 4)}, r"boxes of shape \(2, 3, 4\)"),
        ({"boxes": torch.rand(2, 3, 4) * 64}, r"boxes must lie in \[0, 1\]"),
        ({"initial_slots": torch.rand(2, 5, 16)}, r"initial_slots of shape \(2, 4, 16\)"),
        ({"labels": torch.rand(2, 3, 3, 8, 8)}, r"labels of shape \(2, 3, 3, 16, 16\)"),
    ],
)
def test_bad_inputs_name_what_was_expected(change, message):
    config = SAViConfig(**TINY)
    model = SAViForVideoReconstruction(config)
    video, boxes = inputs(config)
    kwargs = {"pixel_values_videos": video, "boxes": boxes, **change}
    with pytest.raises(ValueError, match=message):
        model(**kwargs)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"decoder_strides": [2, 1, 1]}, "not image_size 16"),
        ({"encoder_strides": [1]}, "one entry per layer"),
        ({"slot_attention_num_heads": 3}, "slot_attention_qkv_size .* multiple of slot_attention_num_heads"),
        ({"targets": {"rgb": 3}}, "targets must map some of"),
        ({"encoder_type": "resnet", "resnet_width": 20}, "multiple of resnet_num_groups"),
        ({"num_slots": 1}, "at least one box slot"),
        ({"first_frame_iterations": 0}, "first_frame_iterations must be None or a positive integer"),
    ],
)
def test_invalid_configuration_names_field_and_reason(overrides, message):
    with pytest.raises(Exception, match=message):
        SAViConfig(**{**TINY, **overrides})


def test_auto_model_loads_a_saved_savi_with_the_package(tmp_path):
    from transformers import AutoModel, AutoModelForPreTraining

    config = SAViConfig(**TINY)
    SAViForVideoReconstruction(config).save_pretrained(tmp_path / "model")
    assert type(AutoModelForPreTraining.from_pretrained(tmp_path / "model")) is SAViForVideoReconstruction
    assert type(AutoModel.from_pretrained(tmp_path / "model")) is SAViModel


def test_bouncing_shapes_boxes_padded_by_the_collator_condition_savi():
    from slotssm_hf import SAViVideoProcessor
    from slotssm_hf.training.data import VideoCollator
    from slotssm_hf.synthetic.shapes import _bouncing_shapes_examples

    # The rows bouncing_shapes stores (its generator, without building a datasets cache).
    rows = list(_bouncing_shapes_examples(2, 3, 16, 2, 3, (0.07, 0.15), (0.02, 0.06), seed=0))
    for row in rows:  # every box holds the pixel centres of its object's first-frame mask
        for k, (y0, x0, y1, x1) in enumerate(row["boxes"] * 16, start=1):
            ys, xs = np.nonzero(row["masks"][0] == k)
            if ys.size:
                assert y0 <= ys.min() + 0.5 and ys.max() + 0.5 <= y1 and x0 <= xs.min() + 0.5 and xs.max() + 0.5 <= x1
    collator = VideoCollator(SAViVideoProcessor.for_config(SAViConfig(**TINY)), num_boxes=3, num_frames=3)
    batch = collator([{"pixel_values_videos": r["video"], "boxes": r["boxes"]} for r in rows])
    counts = [len(r["boxes"]) for r in rows]
    assert batch["boxes"].shape == (2, 3, 4) and batch["boxes_mask"].sum(1).tolist() == counts
    assert not batch["boxes"][~batch["boxes_mask"]].any()
    model = SAViForVideoReconstruction(SAViConfig(**{**TINY, "targets": {"video": 3}}))
    assert model(**batch).loss.isfinite()
    with pytest.raises(ValueError, match="row 0 has 4 boxes, more than num_boxes=3"):
        collator([{"pixel_values_videos": rows[0]["video"], "boxes": [[0, 0, 1, 1]] * 4}])
    with pytest.raises(ValueError, match=r"row 0: expected boxes of shape \(n, 4\)"):
        collator([{"pixel_values_videos": rows[0]["video"], "boxes": [[0, 0, 1]] * 4}])
    with pytest.raises(ValueError, match="row 1 has no 'boxes' entry"):
        collator([{"pixel_values_videos": r["video"], **({"boxes": r["boxes"]} if i == 0 else {})}
                  for i, r in enumerate(rows)])  # fmt: skip


def test_trainer_trains_and_evaluates_fg_ari_and_miou(tmp_path):
    from transformers import Trainer, TrainingArguments

    from slotssm_hf import SAViVideoProcessor
    from slotssm_hf.training.data import VideoCollator
    from slotssm_hf.training.metrics import ObjectDiscoveryMetrics
    from slotssm_hf.synthetic.shapes import _bouncing_shapes_examples

    rows = [{"pixel_values_videos": r["video"], "boxes": r["boxes"], "instance_masks": r["masks"]}
            for r in _bouncing_shapes_examples(4, 2, 16, 2, 3, (0.07, 0.15), (0.02, 0.06), seed=0)]  # fmt: skip
    model = SAViForVideoReconstruction(SAViConfig(**{**TINY, "targets": {"video": 3}}))
    args = TrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=2, per_device_eval_batch_size=2,
                             max_steps=2, report_to=[], remove_unused_columns=False, label_names=["instance_masks"],
                             use_cpu=True, save_strategy="no")  # fmt: skip
    trainer = Trainer(
        model=model, args=args, train_dataset=rows, eval_dataset=rows,
        data_collator=VideoCollator(SAViVideoProcessor.for_config(model.config), extra_columns=("instance_masks",),
                                    num_boxes=3, num_frames=2),
        compute_metrics=ObjectDiscoveryMetrics(),
        preprocess_logits_for_metrics=ObjectDiscoveryMetrics.preprocess_logits,
    )  # fmt: skip
    trainer.train()
    metrics = trainer.evaluate()
    assert np.isfinite(metrics["eval_loss"]) and 0 <= metrics["eval_miou"] <= 1 and -1 <= metrics["eval_fg_ari"] <= 1


@pytest.mark.parametrize("case", CASES)
def test_each_module_matches_its_float64_counterpart(case):
    config = SAViConfig(**CASES[case])
    flat = flatten_tree(official_params(config))
    model = SAViForVideoReconstruction(config).double().eval()
    model.load_state_dict(convert_savi_params(flat, config))
    reference = SAViReference(flat, config)
    video, boxes = inputs(config, frames=1)
    frames, boxes = video[:, 0].double(), boxes.double()
    with torch.no_grad():
        tokens = model.savi.encoder(frames)
        torch.testing.assert_close(tokens, reference.encode(frames.permute(0, 2, 3, 1)), rtol=0, atol=1e-10)
        slots = model.savi.initial_state(boxes, 2, tokens)
        torch.testing.assert_close(slots, reference.initial_slots(boxes, 2), rtol=0, atol=1e-10)
        corrected, attention = model.savi.corrector(slots, tokens, 2)
        expected, expected_attention = reference.correct(slots, tokens, 2)
        torch.testing.assert_close(corrected, expected, rtol=0, atol=1e-10)
        torch.testing.assert_close(attention, expected_attention, rtol=0, atol=1e-10)
        predicted = reference.transformer_block(corrected, "TransformerBlock_0", config.predictor_num_heads, False)
        torch.testing.assert_close(model.savi.predictor(corrected), predicted, rtol=0, atol=1e-10)
        decoded, alphas = model.decoder(corrected)
        expected, expected_alphas = reference.decode(corrected)
        torch.testing.assert_close(decoded.permute(0, 2, 3, 1), expected, rtol=0, atol=1e-10)
        torch.testing.assert_close(alphas.permute(0, 1, 3, 4, 2), expected_alphas, rtol=0, atol=1e-10)


@pytest.mark.parametrize("early_fusion", [False, True])
def test_slot_readout_adds_each_slots_linear_map_under_its_mask(early_fusion):
    """With `decoder_slot_readout`, the targets are those of the decoder without it (same other weights, the same
    alpha masks) plus, at every pixel, the alpha-weighted sum over slots of W slot_k + b, W and b random; in float64."""
    config = SAViConfig(**{**TINY, "targets": {"video": 3, "depth": 1}, "early_fusion": early_fusion})
    plain = SAViForVideoReconstruction(config).double().eval()
    config.decoder_slot_readout = True
    with_readout = SAViForVideoReconstruction(config).double().eval()
    missing, unexpected = with_readout.load_state_dict(plain.state_dict(), strict=False)
    assert sorted(missing) == ["decoder.slot_readout.bias", "decoder.slot_readout.weight"] and not unexpected
    slots = torch.randn(2, config.num_slots, config.slot_size, dtype=torch.float64)
    weight, bias = with_readout.decoder.slot_readout.weight, with_readout.decoder.slot_readout.bias
    with torch.no_grad():
        bias.normal_()
        targets, alphas = with_readout.decoder(slots)
        plain_targets, plain_alphas = plain.decoder(slots)
    per_slot = torch.einsum("bkd,cd->bkc", slots, weight) + bias  # (batch, slots, channels)
    expected = plain_targets + torch.einsum("bkc,bkhw->bchw", per_slot, plain_alphas[:, :, 0])
    assert torch.equal(alphas, plain_alphas)
    torch.testing.assert_close(targets, expected, rtol=0, atol=1e-12)


def test_initialisation_follows_the_flax_defaults():
    model = SAViForVideoReconstruction(FAMILIES["savi"].config("savi_conditional_small"))
    # LeCun normal truncated at two standard deviations, fan-in = input channels x kernel area (also for the
    # transposed convolutions, whose torch weight holds the inputs first).
    layers = ((model.decoder.backbone.convs[1].weight, 64 * 25), (model.savi.predictor.mlp.layers[0].weight, 128))
    for weight, fan_in in layers:
        std = (1 / fan_in) ** 0.5
        assert abs(weight.std().item() / std - 1) < 0.05
        assert weight.abs().max().item() <= 2 * std / 0.87962566103423978 + 1e-6
    assert not model.decoder.backbone.convs[1].bias.any() and not model.savi.corrector.gru.bias_hh.any()
    for gate in model.savi.corrector.gru.weight_hh.detach().chunk(3):  # orthogonal recurrent kernels per gate
        torch.testing.assert_close(gate @ gate.T, torch.eye(128), atol=1e-5, rtol=0)
    resnet = SAViModel(SAViConfig(**CASES["resnet-transformer-early-fusion"])).encoder.backbone
    assert not resnet.stages[0][0].bn2.weight.any() and resnet.stages[0][0].bn1.weight.eq(1).all()


def test_activation_checkpointing_gives_the_same_gradients():
    config = SAViConfig(**CASES["resnet-transformer-early-fusion"])
    video, boxes = inputs(config)
    labels = torch.rand(2, 3, 4, 16, 16)
    grads = []
    for checkpointing in (False, True):
        torch.manual_seed(0)
        model = SAViForVideoReconstruction(config).train()
        if checkpointing:
            model.activation_checkpointing_enable()
        model(video, boxes=boxes, labels=labels).loss.backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
    torch.testing.assert_close(grads[0], grads[1])


def reference_attention_weights(reference, queries, keys, path: str, num_heads: int):
    """Softmax over the keys of Flax's scaled query-key products, from the reference's parameters at `path`:
    queries (*batch, length, d), keys (*batch, kv_length, d) -> (*batch, heads, length, kv_length)."""
    query = reference.dense(queries, f"{path}/query").unflatten(-1, (num_heads, -1))
    key = reference.dense(keys, f"{path}/key").unflatten(-1, (num_heads, -1))
    return torch.einsum("...qhd,...khd->...hqk", query / math.sqrt(query.shape[-1]), key).softmax(dim=-1)


@pytest.mark.parametrize("case", CASES)
def test_hidden_states_and_attentions_record_every_stage_of_the_frame_loop(case):
    # Against the float64 reference: each slot-attention map is the reference corrector's after that many
    # iterations from the slots the frame starts from; each predictor map the softmax of its queries and keys.
    config = SAViConfig(**CASES[case])
    config._attn_implementation = "eager"  # the predictor's weights come from the eager attention only
    flat = flatten_tree(official_params(config))
    model = SAViForVideoReconstruction(config).double().eval()
    model.load_state_dict(convert_savi_params(flat, config))
    reference = SAViReference(flat, config)
    video, boxes = inputs(config, frames=3)
    # Only the conditional initialiser takes boxes.
    video, boxes = video.double(), boxes.double() if config.initializer_type == "conditional" else None
    with torch.no_grad():
        out = model(video, boxes=boxes, output_hidden_states=True, output_attentions=True)
    tokens = reference.encode(video.flatten(0, 1).permute(0, 2, 3, 1)).unflatten(0, (2, 3))

    assert len(out.hidden_states) == 2 * 3 + 1
    torch.testing.assert_close(out.hidden_states[0], reference.initial_slots(boxes, 2), rtol=0, atol=1e-10)
    for t in range(3):
        assert torch.equal(out.hidden_states[2 * t + 1], out.last_hidden_state[:, t])
        assert torch.equal(out.hidden_states[2 * t + 2], out.predicted_slots[:, t])

    maps = iter(out.attentions)
    for t in range(3):
        first = config.first_frame_iterations or config.slot_attention_iterations
        for iteration in range(first if t == 0 else config.slot_attention_iterations):
            _, expected = reference.correct(out.hidden_states[2 * t], tokens[:, t], iteration + 1)
            torch.testing.assert_close(next(maps), expected, rtol=0, atol=1e-10)
    assert next(maps, None) is None

    assert len(out.predictor_attentions) == 3
    path = "TransformerBlock_0/MultiHeadDotProductAttention_0"
    for t, weights in enumerate(out.predictor_attentions):
        slots = out.hidden_states[2 * t + 1]
        expected = reference_attention_weights(reference, slots, slots, path, config.predictor_num_heads)
        torch.testing.assert_close(weights, expected, rtol=0, atol=1e-10)


def test_recorded_outputs_follow_the_arguments_and_config_and_come_after_the_slots_in_tuples():
    config = SAViConfig(**TINY)
    model = SAViForVideoReconstruction(config).eval()
    video, boxes = inputs(config)
    tokens = config.encoder_grid_size**2
    with torch.no_grad():
        plain = model(video, boxes=boxes)
        assert plain.hidden_states is None and plain.attentions is None and plain.predictor_attentions is None
        out = model(video, boxes=boxes, output_hidden_states=True, output_attentions=True)
        # SDPA (the default) returns no weights: the predictor's maps need attn_implementation="eager".
        assert len(out.hidden_states) == 7 and len(out.attentions) == 3 and out.predictor_attentions == ()
        assert out.attentions[0].shape == (2, 1, 4, tokens)
        torch.testing.assert_close(out.attentions[0].sum(dim=2), torch.ones(2, 1, tokens))  # over the slots
        model.set_attn_implementation("eager")
        model.config.output_hidden_states = model.config.output_attentions = True
        out = model(video, boxes=boxes)
        as_tuple = model(video, boxes=boxes, return_dict=False)
    assert [w.shape for w in out.predictor_attentions] == [(2, config.predictor_num_heads, 4, 4)] * 3
    # As transformers orders them: the head's outputs, the slots, then the recorded outputs (no labels for the flow
    # target: no loss).
    names = ["reconstruction", "masks", "last_hidden_state", "predicted_slots", "hidden_states", "attentions",
             "predictor_attentions"]  # fmt: skip
    assert list(out.keys()) == names and len(as_tuple) == len(names)
    for name, value in zip(names, as_tuple):
        torch.testing.assert_close(value, out[name], rtol=0, atol=0)


def test_recorded_slots_and_attention_maps_receive_gradients():
    config = SAViConfig(**{**TINY, "targets": {"video": 3}})
    config._attn_implementation = "eager"
    model = SAViForVideoReconstruction(config)
    video, boxes = inputs(config)
    out = model(video, boxes=boxes, output_hidden_states=True, output_attentions=True)
    # Everything but the last frame's prediction (which only starts a next frame) feeds the loss.
    recorded = [*out.hidden_states[:-1], *out.attentions, *out.predictor_attentions[:-1]]
    for tensor in recorded:
        tensor.retain_grad()
    out.loss.backward()
    assert all(tensor.grad is not None and tensor.grad.abs().sum() > 0 for tensor in recorded)


def test_card_says_when_the_decoder_has_the_slot_readout():
    from slotssm_hf.hub.model_card import render_model_card

    def decoder_row(config):
        card = str(render_model_card(SAViForVideoReconstruction(config), "savi", "made here"))
        return next(line for line in card.splitlines() if line.startswith("| decoder |"))

    assert decoder_row(SAViConfig(**TINY)) == "| decoder | spatial broadcast from 4 x 4, alpha masks |"
    with_readout = decoder_row(SAViConfig(**TINY, decoder_slot_readout=True))
    assert "each slot's own linear readout (not in the official model)" in with_readout
