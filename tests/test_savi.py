"""SAVi / SAVi++: the model against a float64 implementation evaluated on official-layout Flax parameters, the
converter on checkpoints in the official on-disk format, remote-code loading, and bad inputs."""


import numpy as np
import pytest
import torch
from flax_format import write_flax_checkpoint

from slotssm_hf import FAMILIES, SAViConfig, SAViForVideoReconstruction, SAViModel
from slotssm_hf.conversion.conversion_utils import ConversionError
from slotssm_hf.conversion.convert_savi import convert_savi_checkpoint, convert_savi_params
from slotssm_hf.conversion.flax_checkpoint import flatten_tree
from slotssm_hf.models.object_centric import flax_same_padding, flax_transpose_padding
from slotssm_hf.conversion.references.savi import SAViReference

TINY = {
    "image_size": 16, "encoder_features": [8, 8], "encoder_strides": [2, 1], "num_slots": 4, "slot_size": 16,
    "initializer_mlp_size": 16, "slot_attention_qkv_size": 8, "predictor_num_heads": 2, "predictor_qkv_size": 8,
    "predictor_mlp_size": 16, "encoder_mlp_size": 8, "decoder_broadcast_size": 4, "decoder_features": [8, 8, 8],
    "decoder_strides": [2, 2, 1], "decoder_transposed": [True, True, False],
}  # fmt: skip
# Tiny configs covering every switch: CNN + boxes; ResNet + encoder transformer + multi-head slot attention with MLP
# + early fusion + two targets + centres of mass + extra first-frame iterations; learned slots, 2 iterations.
CASES = {
    "cnn-boxes": TINY,
    "resnet-transformer-early-fusion": {
        **TINY, "encoder_type": "resnet", "resnet_stage_sizes": [1, 2], "resnet_width": 8, "resnet_num_groups": 4,
        "encoder_transformer_layers": 1, "encoder_transformer_size": 8, "encoder_transformer_heads": 2,
        "encoder_transformer_mlp_size": 16, "slot_attention_num_heads": 2, "slot_attention_mlp_size": 16,
        "early_fusion": True, "targets": {"flow": 3, "depth": 1}, "center_of_mass": True, "first_frame_iterations": 2,
        "decoder_strides": [2, 2], "decoder_transposed": [True, True], "decoder_features": [8, 8],
    },
    "learned-slots-two-iterations": {**TINY, "initializer_type": "learned", "slot_attention_iterations": 2,
                                     "targets": {"video": 3}},
}  # fmt: skip


def official_params(config: SAViConfig, seed: int = 0) -> dict:
    """A random parameter tree with the names and shapes the official Flax modules create for `config`."""
    rng = np.random.default_rng(seed)

    def r(*shape, scale=0.3):
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    def dense(i, o, bias=True):
        return {"kernel": r(i, o), "bias": r(o)} if bias else {"kernel": r(i, o)}

    def norm(c):
        return {"scale": 1 + r(c, scale=0.1), "bias": r(c, scale=0.1)}

    def mlp(i, h, o, layernorm=False):
        layers = {"dense_mlp_0": dense(i, h), "dense_mlp_1": dense(h, o)}
        return {"LayerNorm_0": norm(i), **layers} if layernorm else layers

    def block(d, heads, qkv, mlp_size):
        hd = qkv // heads
        attention = {name: {"kernel": r(d, heads, hd), "bias": r(heads, hd)} for name in ("query", "key", "value")}
        attention["out"] = {"kernel": r(heads, hd, d), "bias": r(d)}
        return {"MultiHeadDotProductAttention_0": attention, "LayerNorm_0": norm(d), "LayerNorm_1": norm(d),
                "MLP_0": mlp(d, mlp_size, d)}  # fmt: skip

    def grid(size):
        axis = np.linspace(-1, 1, size, dtype=np.float32)
        return np.stack(np.meshgrid(axis, axis, indexing="ij"), -1)[None]

    c = config
    encoder = {}
    if c.encoder_type == "cnn":
        widths = [c.num_channels, *c.encoder_features]
        encoder["CNN_0"] = {f"conv_{i}": {"kernel": r(k, k, widths[i], widths[i + 1]), "bias": r(widths[i + 1])}
                            for i, k in enumerate(c.encoder_kernel_sizes)}  # fmt: skip
        channels = widths[-1]
    else:
        resnet = {"init_conv": {"kernel": r(3, 3, c.num_channels, c.resnet_width)}, "init_bn": norm(c.resnet_width)}
        channels = c.resnet_width
        for s, size in enumerate(c.resnet_stage_sizes):
            out = c.resnet_width * 2**s
            stage = {}
            for j in range(size):
                cin = channels if j == 0 else out
                blk = {"conv1": {"kernel": r(3, 3, cin, out)}, "bn1": norm(out), "conv2": {"kernel": r(3, 3, out, out)},
                       "bn2": norm(out)}  # fmt: skip
                if cin != out or (s and j == 0):
                    blk.update(proj_conv={"kernel": r(1, 1, cin, out)}, proj_bn=norm(out))
                stage[f"block{j + 1}"] = blk
            resnet[f"stage{s + 1}"] = stage
            channels = out
        encoder["ResNet_0"] = resnet
    encoder["PositionEmbedding_0"] = {
        "pos_embedding": grid(c.encoder_grid_size), "dense_pe_0": dense(2, channels),
        "MLP_0": mlp(channels, c.encoder_mlp_size, channels, layernorm=True),
    }  # fmt: skip
    tokens = channels
    if c.encoder_transformer_layers:
        tokens = c.encoder_transformer_size
        encoder["Dense_0"] = dense(channels, tokens)
        encoder["Transformer_0"] = {f"TransformerBlock{i}": block(tokens, c.encoder_transformer_heads, tokens,
                                                                  c.encoder_transformer_mlp_size)
                                    for i in range(c.encoder_transformer_layers)}  # fmt: skip
    heads, qkv, d = c.slot_attention_num_heads, c.slot_attention_qkv_size, c.slot_size
    hd = qkv // heads
    gru_in = hd if heads > 1 else qkv
    corrector = {
        "LayerNorm_0": norm(d), "LayerNorm_1": norm(tokens), "general_dense_q_0": {"kernel": r(d, heads, hd)},
        "general_dense_k_0": {"kernel": r(tokens, heads, hd)}, "general_dense_v_0": {"kernel": r(tokens, heads, hd)},
        "GRU_0": {"GRUCell_0": {**{g: dense(gru_in, d) for g in ("ir", "iz", "in")},
                                **{g: dense(d, d, bias=False) for g in ("hr", "hz")}, "hn": dense(d, d)}},
    }  # fmt: skip
    if heads > 1:
        corrector["InvertedDotProductAttention_0"] = {"DenseGeneral_0": {"kernel": r(heads, hd, hd), "bias": r(hd)}}
    if c.slot_attention_mlp_size:
        corrector["MLP_0"] = mlp(d, c.slot_attention_mlp_size, d, layernorm=True)
    widths = [d, *c.decoder_features]
    readout_name = "MLP_{}" if c.early_fusion else "Dense_{}"
    inner = "dense_mlp_0" if c.early_fusion else "Dense_0"
    decoder = {
        "PositionEmbedding_0": {"pos_embedding": grid(c.decoder_broadcast_size), "dense_pe_0": dense(2, d)},
        "CNN_0": {f"conv_{i}": {"kernel": r(k, k, widths[i], widths[i + 1]), "bias": r(widths[i + 1])}
                  for i, k in enumerate(c.decoder_kernel_sizes)},
        "alpha_logits": dense(widths[-1], 1),
        "Readout_0": {readout_name.format(i): {inner: dense(widths[-1], channels)}
                      for i, channels in enumerate(c.targets.values())},
    }  # fmt: skip
    params = {"FrameEncoder_0": encoder, "SlotAttention_0": corrector,
              "TransformerBlock_0": block(d, c.predictor_num_heads, c.predictor_qkv_size, c.predictor_mlp_size),
              "SpatialBroadcastDecoder_0": decoder}  # fmt: skip
    if c.initializer_type == "conditional":
        params["CoordinateEncoderStateInit_0"] = {"MLP_0": mlp(2 if c.center_of_mass else 4, c.initializer_mlp_size, d)}
    elif c.initializer_type == "learned":
        params["ParamStateInit_0"] = {"state_init": r(c.num_slots, d, scale=1.0)}
    return params


def clu_checkpoint(params: dict) -> dict:
    """What the official trainer saves: a flax.optim Adam TrainState (parameters under optimizer/target)."""
    moments = {key: {"grad_ema": np.zeros_like(value), "grad_sq_ema": np.zeros_like(value)}
               for key, value in flatten_tree(params).items()}  # fmt: skip
    return {"step": np.int64(100), "optimizer": {"target": params, "state": {"step": np.int64(100),
            "param_states": moments}}, "variables": {}, "rng": np.zeros(2, np.uint32)}  # fmt: skip


def inputs(config: SAViConfig, batch=2, frames=3, seed=0):
    generator = torch.Generator().manual_seed(seed)
    video = torch.rand(batch, frames, config.num_channels, config.image_size, config.image_size, generator=generator)
    corners = torch.rand(batch, config.num_boxes, 2, 2, generator=generator).sort(dim=2).values
    boxes = corners.transpose(2, 3).flatten(2)  # (ymin, xmin, ymax, xmax)
    boxes[:, -1] = 0  # an absent object
    return video, boxes


def convert(tmp_path, config_overrides, name="model", **kwargs):
    config = SAViConfig(**config_overrides)
    params = official_params(config)
    source = tmp_path / f"{name}-checkpoints"
    source.mkdir()
    write_flax_checkpoint(clu_checkpoint(params), source / "ckpt-3.flax")
    overrides = {k: v for k, v in config_overrides.items()}
    folder = convert_savi_checkpoint(source, tmp_path / name, variant="savi_conditional_small", overrides=overrides,
                                     log=lambda *_: None, **kwargs)  # fmt: skip
    return config, flatten_tree(params), folder


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


@pytest.mark.parametrize("case", CASES)
def test_converted_checkpoint_matches_float64_reference_on_the_flax_arrays(tmp_path, case):
    config, flat, folder = convert(tmp_path, CASES[case])
    video, boxes = inputs(config)
    reference = SAViReference(flat, config)(video.permute(0, 1, 3, 4, 2).double(), boxes.double())
    model = SAViForVideoReconstruction.from_pretrained(folder).eval()
    # In float64 the model and the reference compute the same function: agreement to rounding.
    with torch.no_grad():
        ours = model.double()(video.double(), boxes=boxes.double(), output_attentions=True)
    pairs = {
        "states": ours.last_hidden_state, "states_pred": ours.predicted_slots,
        "outputs": ours.reconstruction.permute(0, 1, 3, 4, 2), "alphas": ours.masks.permute(0, 1, 2, 4, 5, 3),
        "attention": ours.attentions[0],
    }  # fmt: skip
    for name, value in pairs.items():
        torch.testing.assert_close(value, reference[name], rtol=0, atol=1e-10, msg=name)
    # In float32 (as used): measured max error 1.1e-5 over these cases; 10x margin.
    with torch.no_grad():
        ours = model.float()(video, boxes=boxes)
    torch.testing.assert_close(ours.reconstruction.permute(0, 1, 3, 4, 2).double(), reference["outputs"], rtol=0,
                               atol=1e-4)  # fmt: skip


def test_convert_savi_verify_passes_and_writes_a_loadable_folder_with_processor(tmp_path):
    lines = []
    config = SAViConfig(**TINY)
    (tmp_path / "workdir" / "checkpoints-0").mkdir(parents=True)  # as the official trainer lays out its work folder
    folder = tmp_path / "workdir" / "checkpoints-0"
    write_flax_checkpoint({}, folder / "ckpt-1.flax")
    write_flax_checkpoint(clu_checkpoint(official_params(config)), folder / "ckpt-2.flax")
    convert_savi_checkpoint(tmp_path / "workdir", tmp_path / "out", overrides=TINY, verify=True, log=lines.append)
    assert "converting the latest checkpoint in" in lines[0] and lines[0].endswith("ckpt-2.flax")
    assert any("max abs difference" in line for line in lines)
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == ["README.md", "config.json", "configuration_savi.py", "model.safetensors", "modeling_savi.py",
                     "object_centric.py", "pretrained.py", "video_decoding.py", "video_inputs.py",
                     "video_preprocessor_config.json", "video_processing.py", "video_processing_savi.py"]  # fmt: skip
    assert "license: apache-2.0" in (tmp_path / "out" / "README.md").read_text()
    from transformers import AutoVideoProcessor

    processor = AutoVideoProcessor.from_pretrained(tmp_path / "out")
    frames = processor([np.full((8, 20, 20, 3), 255, np.uint8)])["pixel_values_videos"]
    assert frames.shape == (1, 6, 3, 16, 16) and torch.allclose(frames, torch.ones_like(frames))  # [0, 1], no norm


def test_gru_layout_puts_flax_gates_in_torch_order_with_zero_r_z_hidden_biases():
    config = SAViConfig(**TINY)
    flat = flatten_tree(official_params(config))
    state = convert_savi_params(flat, config)
    gru = "SlotAttention_0/GRU_0/GRUCell_0"
    assert torch.equal(state["savi.corrector.gru.weight_ih"][16:32], torch.from_numpy(flat[f"{gru}/iz/kernel"].T))
    assert torch.equal(state["savi.corrector.gru.weight_hh"][32:], torch.from_numpy(flat[f"{gru}/hn/kernel"].T))
    assert torch.equal(state["savi.corrector.gru.bias_hh"][:32], torch.zeros(32))
    assert torch.equal(state["savi.corrector.gru.bias_hh"][32:], torch.from_numpy(flat[f"{gru}/hn/bias"]))


def test_conversion_refuses_unmapped_missing_and_mis_shaped_parameters_by_name():
    config = SAViConfig(**TINY)
    flat = flatten_tree(official_params(config))
    extra = {**flat, "SlotAttention_0/Extra_0/kernel": np.zeros((2, 2), np.float32)}
    with pytest.raises(ConversionError, match="SlotAttention_0/Extra_0/kernel"):
        convert_savi_params(extra, config)
    missing = {k: v for k, v in flat.items() if not k.startswith("TransformerBlock_0/MLP_0")}
    with pytest.raises(ConversionError, match=r"missing: \['savi.predictor.mlp.layers.0.bias'"):
        convert_savi_params(missing, config)
    with pytest.raises(ConversionError, match="wrong shape: .*savi.corrector.q_proj.weight"):
        convert_savi_params(flat, SAViConfig(**{**TINY, "slot_attention_qkv_size": 16}))
    with pytest.raises(ConversionError, match="fixed position grid"):
        convert_savi_params(flat, SAViConfig(**{**TINY, "encoder_strides": [1, 1]}))


def test_failed_conversion_leaves_nothing_and_existing_output_needs_overwrite(tmp_path):
    (tmp_path / "bad.flax").write_bytes(b"not msgpack at all")
    with pytest.raises(ConversionError, match="not a Flax msgpack checkpoint"):
        convert_savi_checkpoint(tmp_path / "bad.flax", tmp_path / "out", log=lambda *_: None)
    with pytest.raises(ConversionError, match="No Flax checkpoint file or folder"):
        convert_savi_checkpoint(tmp_path / "empty-folder-missing", tmp_path / "out", log=lambda *_: None)
    write_flax_checkpoint({"optimizer": {"target": {"Other_0": {"kernel": np.zeros(2, np.float32)}}}},
                          tmp_path / "ckpt-1.flax")  # fmt: skip
    with pytest.raises(ConversionError, match="no SAVi parameters found"):
        convert_savi_checkpoint(tmp_path / "ckpt-1.flax", tmp_path / "out", log=lambda *_: None)
    config = SAViConfig(**TINY)
    write_flax_checkpoint(clu_checkpoint(official_params(config)), tmp_path / "ckpt-2.flax")
    with pytest.raises(ConversionError, match="wrong shape"):  # the default variant does not fit tiny weights
        convert_savi_checkpoint(tmp_path / "ckpt-2.flax", tmp_path / "out", log=lambda *_: None)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.flax", "ckpt-1.flax", "ckpt-2.flax"]
    with pytest.raises(ConversionError, match="unknown variant 'savi_tiny'; the official setups are"):
        convert_savi_checkpoint(tmp_path / "ckpt-2.flax", tmp_path / "out", variant="savi_tiny", log=lambda *_: None)
    with pytest.raises(ConversionError, match=r"\['num_slot'\] are not SAViConfig fields"):
        convert_savi_checkpoint(tmp_path / "ckpt-2.flax", tmp_path / "out", overrides={"num_slot": 11},
                                log=lambda *_: None)  # fmt: skip
    with pytest.raises(ConversionError, match="(?s)not a valid SAViConfig: .*num_slots must be a positive integer"):
        convert_savi_checkpoint(tmp_path / "ckpt-2.flax", tmp_path / "out", overrides={"num_slots": 0},
                                log=lambda *_: None)  # fmt: skip
    (tmp_path / "out").mkdir()
    with pytest.raises(ConversionError, match="already exists"):
        convert_savi_checkpoint(tmp_path / "ckpt-2.flax", tmp_path / "out", overrides=TINY, log=lambda *_: None)


def test_cli_convert_savi(tmp_path, capsys):
    from slotssm_hf.cli import main

    config = SAViConfig(**TINY)
    write_flax_checkpoint(clu_checkpoint(official_params(config)), tmp_path / "ckpt-1.flax")
    sets = [arg for key, value in TINY.items() for arg in ("--set", f"{key}={__import__('json').dumps(value)}")]
    assert main(["convert-savi", str(tmp_path / "ckpt-1.flax"), str(tmp_path / "out"), *sets]) == 0
    assert main(["convert-savi", str(tmp_path / "ckpt-1.flax"), str(tmp_path / "out")]) == 2
    assert "already exists" in capsys.readouterr().err


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


def test_a_missing_or_mis_shaped_gru_gate_is_named():
    config = SAViConfig(**TINY)
    flat = flatten_tree(official_params(config))
    gru = "SlotAttention_0/GRU_0/GRUCell_0"
    without = {k: v for k, v in flat.items() if k != f"{gru}/iz/kernel"}
    with pytest.raises(ConversionError, match=r"savi.corrector.gru.weight_ih: the Flax GRU gates \(r, z, n\) give "):
        convert_savi_params(without, config)
    with pytest.raises(ConversionError, match="savi.corrector.gru.weight_hh: .*not three equal parts"):
        convert_savi_params({**flat, f"{gru}/hz/kernel": np.zeros((16, 8), np.float32)}, config)
