"""A float64 SAVi evaluated directly on an official Flax parameter tree, for checking conversions.

Written from the papers' equations and the official module semantics (Flax names and layouts, channels-last
arrays, Flax "SAME" padding), sharing no code with `object_centric.py` / `modeling_savi.py`: convolutions are
patch extraction + einsum, transposed convolutions convolve the zero-dilated input with the unflipped kernel, the
GRU is written out gate by gate. `convert-savi --verify` and the tests compare the converted model against it.
"""

import math
from types import SimpleNamespace

import torch


def settings_from_run(run: dict) -> SimpleNamespace:
    """What the reference needs besides the parameters, read from an official configuration (the values its
    `get_config()` returns) by the official field names, apart from the converter's reading of it: attributes named
    as `SAViReference` reads them from a config. Unset fields take the official modules' defaults."""
    model = run["model"]
    encoder, corrector, predictor = model["encoder"], model["corrector"], model["predictor"]
    initializer, decoder = model["initializer"], model["decoder"]
    backbone, transformer = encoder["backbone"], encoder.get("output_transform") or {}
    kind = backbone["module"].rsplit(".", 1)[-1]
    init_kind = initializer["module"].rsplit(".", 1)[-1]
    side = lambda sizes: [size if isinstance(size, int) else size[0] for size in sizes]  # noqa: E731
    initializers = {"CoordinateEncoderStateInit": "conditional", "ParamStateInit": "learned"}
    return SimpleNamespace(
        encoder_type="cnn" if kind == "CNN" else "resnet",
        encoder_strides=side(backbone.get("strides", [])),
        resnet_stage_sizes={"ResNet18": [2, 2, 2, 2], "ResNet34": [3, 4, 6, 3]}.get(kind),
        resnet_num_groups=32,  # flax.linen.GroupNorm's default, which the official ResNet keeps
        encoder_transformer_layers=transformer.get("num_layers", 0),
        encoder_transformer_heads=transformer.get("num_heads"),
        initializer_type=initializers.get(init_kind, "gaussian"),
        prepend_background=initializer.get("prepend_background", False),
        background_value=initializer.get("background_value", 0.0),
        center_of_mass=initializer.get("center_of_mass", False),
        slot_attention_num_heads=corrector.get("num_heads", 1),
        slot_attention_epsilon=corrector.get("epsilon", 1e-8),
        slot_attention_mlp_size=corrector.get("mlp_size"),
        slot_attention_iterations=corrector.get("num_iterations", 1),
        first_frame_iterations=None,
        predictor_num_heads=predictor["num_heads"],
        decoder_broadcast_size=decoder["resolution"][0],
        decoder_strides=side(decoder["backbone"]["strides"]),
        decoder_transposed=list(decoder["backbone"]["layer_transpose"]),
        early_fusion=decoder.get("early_fusion", False),
        memory_size=None,  # the official STATM buffer keeps every frame
        layer_norm_eps=1e-6,  # Flax's LayerNorm and GroupNorm default
    )


class SAViReference:
    """`SAViReference(flat_params, config)(video, boxes)`: flat_params maps official parameter paths
    ("FrameEncoder_0/CNN_0/conv_0/kernel", ...) to arrays; config a SAViConfig or `settings_from_run` of the
    official configuration; video (batch, frames, H, W, C) in [0, 1]; boxes
    (batch, num_boxes, 4). Returns {"states", "states_pred", "outputs" (batch, frames, H, W, channels), "alphas"
    (batch, frames, slots, H, W, 1), "attention" (batch, frames, heads, slots, tokens)}, all float64."""

    def __init__(self, flat_params: dict, config):
        self.params = {key: torch.as_tensor(value).double() for key, value in flat_params.items()}
        self.config = config
        self.eps = config.layer_norm_eps

    def p(self, path):
        return self.params[path]

    # -- primitives -----------------------------------------------------------------------------------------
    def dense(self, x, path, bias=True):
        kernel = self.p(f"{path}/kernel")
        y = x @ kernel.reshape(kernel.shape[0], -1)
        if bias:
            y = y + self.p(f"{path}/bias").reshape(-1)
        return y

    def layer_norm(self, x, path):
        mean = x.mean(-1, keepdim=True)
        var = ((x - mean) ** 2).mean(-1, keepdim=True)
        return (x - mean) / torch.sqrt(var + self.eps) * self.p(f"{path}/scale").reshape(-1) + self.p(
            f"{path}/bias"
        ).reshape(-1)

    def group_norm(self, x, path, groups):
        n, h, w, c = x.shape
        g = x.reshape(n, h, w, groups, c // groups)
        mean = g.mean(dim=(1, 2, 4), keepdim=True)
        var = ((g - mean) ** 2).mean(dim=(1, 2, 4), keepdim=True)
        g = (g - mean) / torch.sqrt(var + self.eps)
        return g.reshape(n, h, w, c) * self.p(f"{path}/scale").reshape(-1) + self.p(f"{path}/bias").reshape(-1)

    @staticmethod
    def _valid_conv(x, kernel, stride):
        """Cross-correlation of padded NHWC `x` with an HWIO kernel, no padding."""
        kh, kw = kernel.shape[:2]
        patches = x.unfold(1, kh, stride).unfold(2, kw, stride)  # (n, oh, ow, c, kh, kw)
        return torch.einsum("nhwcij,ijco->nhwo", patches, kernel)

    def conv(self, x, path, stride, bias=True):
        kernel = self.p(f"{path}/kernel")
        pads = []
        for size, k in ((x.shape[1], kernel.shape[0]), (x.shape[2], kernel.shape[1])):
            out = math.ceil(size / stride)
            total = max((out - 1) * stride + k - size, 0)
            pads.append((total // 2, total - total // 2))
        x = torch.nn.functional.pad(x, (0, 0, *pads[1], *pads[0]))
        y = self._valid_conv(x, kernel, stride)
        return y + self.p(f"{path}/bias") if bias else y

    def conv_transpose(self, x, path, stride):
        """lax.conv_transpose, "SAME": zero-dilate the input by the stride, pad, convolve with the kernel as is."""
        kernel = self.p(f"{path}/kernel")
        k = kernel.shape[0]
        n, h, w, c = x.shape
        dilated = x.new_zeros(n, (h - 1) * stride + 1, (w - 1) * stride + 1, c)
        dilated[:, ::stride, ::stride] = x
        total = k + stride - 2
        before = k - 1 if stride > k - 1 else math.ceil(total / 2)
        padded = torch.nn.functional.pad(dilated, (0, 0, before, total - before, before, total - before))
        return self._valid_conv(padded, kernel, 1) + self.p(f"{path}/bias")

    def mlp(self, x, path, num_layers, layernorm=None, residual=False):
        h = self.layer_norm(x, f"{path}/LayerNorm_0") if layernorm == "pre" else x
        for i in range(num_layers):
            h = self.dense(h, f"{path}/dense_mlp_{i}")
            if i < num_layers - 1:
                h = torch.relu(h)
        return h + x if residual else h

    def attention(self, x, path, num_heads, inputs_kv=None):
        """Multi-head attention with Flax's query/key/value/out DenseGeneral layers: x attends to itself, or to
        `inputs_kv` (b, kv_length, d) when given."""
        inputs_kv = x if inputs_kv is None else inputs_kv
        b, length, _ = x.shape
        q = self.dense(x, f"{path}/query").reshape(b, length, num_heads, -1)
        k, v = (self.dense(inputs_kv, f"{path}/{name}").reshape(b, inputs_kv.shape[1], num_heads, -1)
                for name in ("key", "value"))  # fmt: skip
        weights = torch.softmax(torch.einsum("bqhd,bkhd->bhqk", q / math.sqrt(q.shape[-1]), k), dim=-1)
        out = torch.einsum("bhqk,bkhd->bqhd", weights, v)
        kernel = self.p(f"{path}/out/kernel")
        return torch.einsum("bqhd,hdo->bqo", out, kernel) + self.p(f"{path}/out/bias")

    def transformer_block(self, x, path, num_heads, pre_norm):
        mha = f"{path}/MultiHeadDotProductAttention_0"
        if pre_norm:
            x = x + self.attention(self.layer_norm(x, f"{path}/LayerNorm_0"), mha, num_heads)
            return x + self.mlp(self.layer_norm(x, f"{path}/LayerNorm_1"), f"{path}/MLP_0", 2)
        x = self.layer_norm(x + self.attention(x, mha, num_heads), f"{path}/LayerNorm_0")
        return self.layer_norm(x + self.mlp(x, f"{path}/MLP_0", 2), f"{path}/LayerNorm_1")

    def position_embedding(self, x, path):
        """x (n, h, w, c) + Dense(grid): the grid is the (y, x) coordinates, each evenly spaced over [-1, 1]."""
        _, h, w, _ = x.shape
        ys = torch.tensor([-1 + 2 * i / (h - 1) if h > 1 else -1.0 for i in range(h)], dtype=torch.float64)
        xs = torch.tensor([-1 + 2 * j / (w - 1) if w > 1 else -1.0 for j in range(w)], dtype=torch.float64)
        grid = torch.stack([ys[:, None].expand(h, w), xs[None, :].expand(h, w)], dim=-1)
        return x + self.dense(grid, f"{path}/dense_pe_0")

    def gru(self, h, x, path):
        def lin(name, inp, bias):
            return self.dense(inp, f"{path}/{name}", bias=bias)

        r = torch.sigmoid(lin("ir", x, True) + lin("hr", h, False))
        z = torch.sigmoid(lin("iz", x, True) + lin("hz", h, False))
        n = torch.tanh(lin("in", x, True) + r * lin("hn", h, True))
        return (1 - z) * n + z * h

    # -- SAVi ------------------------------------------------------------------------------------------------
    def encode(self, frames):
        cfg, root = self.config, "FrameEncoder_0"
        x = frames
        if cfg.encoder_type == "cnn":
            for i, stride in enumerate(cfg.encoder_strides):
                x = torch.relu(self.conv(x, f"{root}/CNN_0/conv_{i}", stride))
        else:
            res = f"{root}/ResNet_0"
            groups = cfg.resnet_num_groups
            x = self.group_norm(self.conv(x, f"{res}/init_conv", 1, bias=False), f"{res}/init_bn", groups)
            for s, size in enumerate(cfg.resnet_stage_sizes):
                for j in range(size):
                    blk = f"{res}/stage{s + 1}/block{j + 1}"
                    stride = 2 if s and j == 0 else 1
                    y = torch.relu(self.group_norm(self.conv(x, f"{blk}/conv1", stride, False), f"{blk}/bn1", groups))
                    y = self.group_norm(self.conv(y, f"{blk}/conv2", 1, False), f"{blk}/bn2", groups)
                    if f"{blk}/proj_conv/kernel" in self.params:
                        x = self.group_norm(self.conv(x, f"{blk}/proj_conv", stride, False), f"{blk}/proj_bn", groups)
                    x = torch.relu(x + y)
        x = self.position_embedding(x, f"{root}/PositionEmbedding_0")
        x = self.mlp(x, f"{root}/PositionEmbedding_0/MLP_0", 2, layernorm="pre")
        x = x.reshape(x.shape[0], -1, x.shape[-1])
        if cfg.encoder_transformer_layers:
            x = torch.relu(self.dense(x, f"{root}/Dense_0"))
            for layer in range(cfg.encoder_transformer_layers):
                x = self.transformer_block(x, f"{root}/Transformer_0/TransformerBlock{layer}",
                                           cfg.encoder_transformer_heads, pre_norm=True)  # fmt: skip
        return x

    def initial_slots(self, boxes, batch):
        cfg = self.config
        if cfg.initializer_type == "learned":
            return self.p("ParamStateInit_0/state_init").expand(batch, -1, -1)
        boxes = torch.as_tensor(boxes).double()
        if cfg.prepend_background:
            boxes = torch.cat([torch.full((batch, 1, 4), cfg.background_value, dtype=torch.float64), boxes], 1)
        if cfg.center_of_mass:
            boxes = torch.stack([(boxes[..., 0] + boxes[..., 2]) / 2, (boxes[..., 1] + boxes[..., 3]) / 2], -1)
        return self.mlp(boxes, "CoordinateEncoderStateInit_0/MLP_0", 2)

    def correct(self, slots, inputs, iterations):
        cfg, root = self.config, "SlotAttention_0"
        heads = cfg.slot_attention_num_heads
        b, n, _ = inputs.shape
        inputs = self.layer_norm(inputs, f"{root}/LayerNorm_1")
        k = self.dense(inputs, f"{root}/general_dense_k_0", bias=False).reshape(b, n, heads, -1)
        v = self.dense(inputs, f"{root}/general_dense_v_0", bias=False).reshape(b, n, heads, -1)
        for _ in range(iterations):
            q = self.dense(self.layer_norm(slots, f"{root}/LayerNorm_0"), f"{root}/general_dense_q_0", bias=False)
            q = q.reshape(b, slots.shape[1], heads, -1)
            logits = torch.einsum("bqhd,bkhd->bhqk", q / math.sqrt(q.shape[-1]), k)
            attn = torch.softmax(logits, dim=2)  # over the slots
            weights = attn / (attn.sum(-1, keepdim=True) + cfg.slot_attention_epsilon)
            updates = torch.einsum("bhqk,bkhd->bqhd", weights, v)
            if heads > 1:
                kernel = self.p(f"{root}/InvertedDotProductAttention_0/DenseGeneral_0/kernel")
                updates = torch.einsum("bqhd,hde->bqe", updates, kernel) + self.p(
                    f"{root}/InvertedDotProductAttention_0/DenseGeneral_0/bias"
                )
            else:
                updates = updates[:, :, 0]
            slots = self.gru(slots, updates, f"{root}/GRU_0/GRUCell_0")
            if cfg.slot_attention_mlp_size:
                slots = self.mlp(slots, f"{root}/MLP_0", 2, layernorm="pre", residual=True)
        return slots, attn

    def decode(self, slots):
        cfg, root = self.config, "SpatialBroadcastDecoder_0"
        b, k, d = slots.shape
        size = cfg.decoder_broadcast_size
        x = slots.reshape(b * k, 1, 1, d).expand(-1, size, size, -1)
        x = self.position_embedding(x, f"{root}/PositionEmbedding_0")
        for i, (stride, transposed) in enumerate(zip(cfg.decoder_strides, cfg.decoder_transposed)):
            layer = f"{root}/CNN_0/conv_{i}"
            x = torch.relu(self.conv_transpose(x, layer, stride) if transposed else self.conv(x, layer, stride))
        h, w, c = x.shape[1:]
        logits = self.dense(x, f"{root}/alpha_logits").reshape(b, k, h, w, 1)
        alphas = torch.softmax(logits, dim=1)
        readouts = sorted({key.split("/")[2] for key in self.params if key.startswith(f"{root}/Readout_0/")},
                          key=lambda name: int(name.rsplit("_", 1)[1]))  # fmt: skip
        # misc.Dense wraps nn.Dense ("Dense_i/Dense_0"); SAVi++'s hidden-layer-free MLPs ("MLP_i/dense_mlp_0").
        paths = [f"{root}/Readout_0/{name}/" + ("Dense_0" if name.startswith("Dense") else "dense_mlp_0")
                 for name in readouts]  # fmt: skip
        features = x.reshape(b, k, h, w, c)
        if cfg.early_fusion:
            fused = (features * alphas).sum(1)
            outputs = torch.cat([self.dense(fused, path) for path in paths], -1)
        else:
            outputs = (torch.cat([self.dense(features, path) for path in paths], -1) * alphas).sum(1)
        return outputs, alphas

    def predict(self, slots, history):
        """The next frame's slots from this frame's corrected `slots`; `history`: every corrected slots so far (the
        current last), which SAVi's predictor does not read."""
        return self.transformer_block(slots, "TransformerBlock_0", self.config.predictor_num_heads, pre_norm=False)

    @torch.no_grad()
    def __call__(self, video, boxes=None):
        cfg = self.config
        video = torch.as_tensor(video).double()
        b, t = video.shape[:2]
        tokens = self.encode(video.reshape(b * t, *video.shape[2:]))
        tokens = tokens.reshape(b, t, *tokens.shape[1:])
        state = self.initial_slots(boxes, b)
        states, predicted, attentions = [], [], []
        for i in range(t):
            iterations = (cfg.first_frame_iterations or cfg.slot_attention_iterations) if i == 0 else (
                cfg.slot_attention_iterations)  # fmt: skip
            slots, attn = self.correct(state, tokens[:, i], iterations)
            state = self.predict(slots, states + [slots])
            states.append(slots)
            predicted.append(state)
            attentions.append(attn)
        states = torch.stack(states, 1)
        outputs, alphas = self.decode(states.reshape(b * t, *states.shape[2:]))
        return {
            "states": states,
            "states_pred": torch.stack(predicted, 1),
            "outputs": outputs.reshape(b, t, *outputs.shape[1:]),
            "alphas": alphas.reshape(b, t, *alphas.shape[1:]),
            "attention": torch.stack(attentions, 1),
        }


__all__ = ["SAViReference"]
