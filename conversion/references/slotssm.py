"""An independent oracle for the official SlotSSM model, assembled from torch and transformers primitives.

It holds parameters under exactly the official checkpoint's key names (three sub-models: `vitencoder` or
`cnnencoder`, `slotssm`, `vitdecoder` or `sbdecoder`) and computes the official forward pass as the reference
describes it: `nn.TransformerEncoder` (post-norm) image encoder, `nn.TransformerEncoder` (pre-norm) decoder,
`torch.nn.functional.multi_head_attention_forward` for the flash-layout attentions, transformers' own
`Mamba2Mixer` / `MambaMixer` as the time mixer. It shares no code with `modeling_slotssm`, so comparing the two
checks both the model and the checkpoint converter. Used by the tests and by the converter's `--verify`.
"""

import torch
import torch.nn.functional as F
from torch import nn


def mae_sincos_table(dim: int, grid_size: int, num_prefix_rows: int) -> torch.Tensor:
    """The official table, built the way MAE's numpy helper builds it: a meshgrid with the width axis first, a 1-D
    sin|cos embedding of each grid axis, concatenated; zero rows for the prefix tokens."""
    import numpy as np

    def embed_1d(half_dim, positions):
        omega = 1.0 / 10000 ** (np.arange(half_dim // 2, dtype=np.float64) / (half_dim / 2.0))
        angles = np.einsum("m,d->md", positions.reshape(-1), omega)
        return np.concatenate([np.sin(angles), np.cos(angles)], axis=1)

    axis = np.arange(grid_size, dtype=np.float32)
    grid = np.stack(np.meshgrid(axis, axis), axis=0)  # grid[0] varies along the width
    table = np.concatenate([embed_1d(dim // 2, grid[0]), embed_1d(dim // 2, grid[1])], axis=1)
    table = np.concatenate([np.zeros((num_prefix_rows, dim)), table], axis=0)
    return torch.from_numpy(table).float()[None]


class OfficialViTEncoder(nn.Module):
    def __init__(self, image_size, patch_size, num_channels, hidden_size, num_layers, num_heads, intermediate_size,
                 hidden_act, output_size):  # fmt: skip
        super().__init__()
        grid = image_size // patch_size
        self.patch_embedding = nn.Conv2d(num_channels, hidden_size, patch_size, stride=patch_size)
        self.cls_tokens = nn.Parameter(torch.zeros(1, 1, hidden_size))
        self.position_embeddings = nn.Parameter(mae_sincos_table(hidden_size, grid, 1))
        layer = nn.TransformerEncoderLayer(
            hidden_size, num_heads, intermediate_size, dropout=0.0, activation=hidden_act, batch_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
        self.output_proj = nn.Linear(hidden_size, output_size)

    def forward(self, frames):
        x = self.patch_embedding(frames).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_tokens.expand(len(x), -1, -1), x], dim=1) + self.position_embeddings
        return self.output_proj(self.encoder(x))[:, 1:]


class OfficialResidualBlock(nn.Module):
    def __init__(self, channels, kernel_size):
        super().__init__()
        self.norm1 = nn.GroupNorm(1, channels)
        self.conv1 = nn.Conv2d(channels, channels, kernel_size, padding=kernel_size // 2)
        self.norm2 = nn.GroupNorm(1, channels)
        self.conv2 = nn.Conv2d(channels, channels, kernel_size, padding=kernel_size // 2)

    def forward(self, x):
        out = self.conv2(self.norm2(torch.relu(self.conv1(self.norm1(x)))))
        return torch.relu(out + x)


class OfficialCNNEncoder(nn.Module):
    def __init__(self, input_channels, hidden_size, out_channels, kernel_size, downsampling_ratio, num_hidden_layers,
                 blocks_per_layer):  # fmt: skip
        super().__init__()
        self.conv1 = nn.Conv2d(input_channels, hidden_size, downsampling_ratio, stride=downsampling_ratio)
        self.norm1 = nn.GroupNorm(1, hidden_size)
        self.layers = nn.ModuleList(
            nn.Sequential(*(OfficialResidualBlock(hidden_size, kernel_size) for _ in range(blocks_per_layer)))
            for _ in range(num_hidden_layers)
        )
        self.final_norm = nn.GroupNorm(1, hidden_size)
        self.final_conv = nn.Conv2d(hidden_size, out_channels, 1)

    def forward(self, frames):
        x = F.gelu(self.norm1(self.conv1(frames)))
        for layer in self.layers:
            x = layer(x)
        return self.final_conv(self.final_norm(x)).flatten(2).transpose(1, 2)  # the caller's flattening


class FlashLayoutAttention(nn.Module):
    """flash_attn's MHA parameter layout (`Wqkv`, or `Wq` + `Wkv` for cross-attention, and `out_proj`), computed
    with torch's reference multi-head attention (the official code never enables the flash kernel)."""

    def __init__(self, dim, num_heads, cross):
        super().__init__()
        self.num_heads = num_heads
        if cross:
            self.Wq = nn.Linear(dim, dim)
            self.Wkv = nn.Linear(dim, 2 * dim)
        else:
            self.Wqkv = nn.Linear(dim, 3 * dim)
        self.out_proj = nn.Linear(dim, dim)

    def forward(self, x, x_kv=None):
        if x_kv is None:
            weight, bias, x_kv = self.Wqkv.weight, self.Wqkv.bias, x
        else:
            weight = torch.cat([self.Wq.weight, self.Wkv.weight])
            bias = torch.cat([self.Wq.bias, self.Wkv.bias])
        q, kv = x.transpose(0, 1), x_kv.transpose(0, 1)
        out, _ = F.multi_head_attention_forward(
            q, kv, kv, x.shape[-1], self.num_heads, weight, bias, None, None, False, 0.0,
            self.out_proj.weight, self.out_proj.bias, training=False, need_weights=False,
        )  # fmt: skip
        return out.transpose(0, 1)


class OfficialEagerAttention(nn.Module):
    """The official eager multi-head attention (proj_q/k/v/o), normal or inverted, written out step by step."""

    def __init__(self, dim, num_heads, inverted):
        super().__init__()
        self.num_heads, self.inverted = num_heads, inverted
        self.proj_q, self.proj_k = nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.proj_v, self.proj_o = nn.Linear(dim, dim), nn.Linear(dim, dim)

    def forward(self, x, x_kv):
        batch, nq, _ = x.shape
        nk = x_kv.shape[1]

        def heads(t, n):
            return t.view(batch, n, self.num_heads, -1).transpose(1, 2)

        q, k, v = heads(self.proj_q(x), nq), heads(self.proj_k(x_kv), nk), heads(self.proj_v(x_kv), nk)
        logits = (q * q.shape[-1] ** -0.5) @ k.transpose(-1, -2)  # (batch, heads, nq, nk)
        if self.inverted:
            attn = F.softmax(logits.reshape(batch, -1, nk), dim=1).reshape(batch, self.num_heads, nq, nk)
            shown = attn
            attn = attn / (attn.sum(dim=-1, keepdim=True) + 1e-5)
        else:
            attn = shown = F.softmax(logits, dim=-1)
        return self.proj_o((attn @ v).transpose(1, 2).reshape(batch, nq, -1)), shown


def transformers_time_mixer(mamba_version, d_model, d_state, d_conv, expand, headdim):
    from transformers import Mamba2Config, MambaConfig
    from transformers.models.mamba.modeling_mamba import MambaMixer
    from transformers.models.mamba2.modeling_mamba2 import Mamba2Mixer

    d_inner = expand * d_model
    if mamba_version == "mamba2":
        config = Mamba2Config(
            hidden_size=d_model, state_size=d_state, expand=expand, head_dim=headdim, num_heads=d_inner // headdim,
            n_groups=1, conv_kernel=d_conv, chunk_size=256, layer_norm_epsilon=1e-5, num_hidden_layers=1,
        )  # fmt: skip
        return Mamba2Mixer(config, layer_idx=0)
    config = MambaConfig(
        hidden_size=d_model, state_size=d_state, expand=expand, intermediate_size=d_inner,
        time_step_rank=-(-d_model // 16), conv_kernel=d_conv, num_hidden_layers=1,
    )  # fmt: skip
    return MambaMixer(config, layer_idx=0)


class OfficialSlotSSMBlock(nn.Module):
    def __init__(self, d_model, input_d_model, space_heads, cross_heads, inverted, use_ffn, mixer):
        super().__init__()
        self.cross_attn_input_norm = nn.LayerNorm(d_model)
        self.cross_attn_ref_norm = nn.LayerNorm(d_model)
        self.input_proj = nn.Linear(input_d_model, d_model)
        if inverted:
            self.cross_attn = OfficialEagerAttention(d_model, cross_heads, inverted=True)
        else:
            self.cross_attn = FlashLayoutAttention(d_model, cross_heads, cross=True)
        self.time_mixer_norm = nn.LayerNorm(d_model)
        self.time_mixer = mixer
        self.space_attn_norm = nn.LayerNorm(d_model)
        self.space_attn = FlashLayoutAttention(d_model, space_heads, cross=False)
        if use_ffn:
            self.ffn_norm = nn.LayerNorm(d_model)
            self.ffn = nn.Sequential(nn.Linear(d_model, 4 * d_model), nn.GELU(), nn.Linear(4 * d_model, d_model))

    def forward(self, slots, ref):
        B, T, N, D = slots.shape
        r = self.cross_attn_ref_norm(self.input_proj(ref.reshape(B * T, -1, ref.shape[-1])))
        x = self.cross_attn_input_norm(slots.reshape(B * T, N, D))
        if isinstance(self.cross_attn, OfficialEagerAttention):
            out, attn = self.cross_attn(x, r)
        else:
            out, attn = self.cross_attn(x, r), None
        slots = slots + out.reshape(B, T, N, D)
        x = self.time_mixer_norm(slots.permute(0, 2, 1, 3).reshape(B * N, T, D))
        slots = slots + self.time_mixer(x).reshape(B, N, T, D).permute(0, 2, 1, 3)
        x = self.space_attn_norm(slots.reshape(B * T, N, D))
        slots = slots + self.space_attn(x).reshape(B, T, N, D)
        if hasattr(self, "ffn"):
            slots = slots + self.ffn(self.ffn_norm(slots))
        return slots, attn


class OfficialSlotSSM(nn.Module):
    def __init__(self, num_slots, d_model, blocks):
        super().__init__()
        self.init_slots = nn.Parameter(torch.randn(1, 1, num_slots, d_model))
        self.blocks = nn.ModuleList(blocks)

    def forward(self, ref):
        slots = self.init_slots.repeat(ref.shape[0], ref.shape[1], 1, 1)
        attentions = []
        for block in self.blocks:
            slots, attn = block(slots, ref)
            attentions.append(attn)
        return slots, attentions


class OfficialViTDecoder(nn.Module):
    def __init__(self, input_size, hidden_size, num_layers, num_heads, intermediate_size, hidden_act, image_size,
                 patch_size, num_channels, num_cls_tokens):  # fmt: skip
        super().__init__()
        self.grid, self.patch_size, self.num_channels = image_size // patch_size, patch_size, num_channels
        self.num_cls_tokens = num_cls_tokens
        self.mask_token = nn.Parameter(torch.zeros(1, 1, hidden_size))
        table = mae_sincos_table(hidden_size, self.grid, num_cls_tokens)
        self.position_embeddings = nn.Parameter(table, requires_grad=False)
        self.input_proj = nn.Linear(input_size, hidden_size)
        layer = nn.TransformerEncoderLayer(
            hidden_size, num_heads, intermediate_size, dropout=0.0, activation=hidden_act, batch_first=True,
            norm_first=True,
        )  # fmt: skip
        self.encoder = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
        self.pred = nn.Sequential(nn.LayerNorm(hidden_size), nn.Linear(hidden_size, patch_size**2 * num_channels))

    def forward(self, slots):
        M = slots.shape[0]
        x = torch.cat([self.input_proj(slots), self.mask_token.repeat(M, self.grid**2, 1)], dim=1)
        x = self.pred(self.encoder(x + self.position_embeddings)[:, self.num_cls_tokens :])
        g, p, c = self.grid, self.patch_size, self.num_channels
        # "b (h w) (p1 p2 c) -> b c (h p1) (w p2)", written as an explicit pixel loop-free gather.
        x = x.reshape(M, g, g, p, p, c)
        return torch.einsum("nhwpqc->nchpwq", x).reshape(M, c, g * p, g * p)


class OfficialSBDecoder(nn.Module):
    def __init__(self, in_channels, out_channels, initial_size, output_resolution, hidden_size):
        super().__init__()
        self.initial_size = initial_size
        self.norm = nn.LayerNorm(in_channels)
        self.pos = nn.Module()
        axis = torch.linspace(-1, 1, initial_size)
        grid_y, grid_x = torch.meshgrid(axis, axis, indexing="ij")
        self.pos.register_buffer("grid_x", grid_x[None].clone())
        self.pos.register_buffer("grid_y", grid_y[None].clone())

        layers = []
        for i in range(3):
            layer = nn.Module()
            layer.conv = nn.ConvTranspose2d(in_channels if i == 0 else hidden_size, hidden_size, 5, 2, 2, 1)
            layer.norm = nn.GroupNorm(1, hidden_size)
            layers.append(layer)
        if output_resolution // initial_size == 16:
            layers.append(nn.ConvTranspose2d(hidden_size, out_channels + 1, 5, 2, 2, 1))
        else:
            layers.append(nn.Conv2d(hidden_size, out_channels + 1, 5, 1, 2))
        self.cnn_transpose = nn.ModuleList(layers)

    def forward(self, slots):
        B, N, D = slots.shape
        s = self.initial_size
        x = self.norm(slots).reshape(B * N, D, 1, 1).repeat(1, 1, s, s)
        pos = torch.cat([self.pos.grid_x.repeat(D // 2, 1, 1), self.pos.grid_y.repeat(D // 2, 1, 1)])
        x = x + pos
        for layer in self.cnn_transpose[:3]:
            x = F.gelu(layer.norm(layer.conv(x)))
        x = self.cnn_transpose[3](x)
        x = x.reshape(B, N, *x.shape[1:])
        mask = x[:, :, -1:].softmax(dim=1)
        return (x[:, :, :-1] * mask).sum(dim=1), mask


class OfficialReference(nn.Module):
    """The three official sub-models under their checkpoint folder names, built from their config.json dicts.

    forward(frames (B, T, C, H, W)) -> reconstruction (B, T, C, H, W), masks (B, T, N, 1, H, W) or None,
    slots (B, T, N, D) and the per-block cross-attention maps (B*T, heads, N, L) or None.
    """

    def __init__(self, encoder_config: dict, slotssm_config: dict, decoder_config: dict):
        super().__init__()
        enc, slot, dec = encoder_config, slotssm_config, decoder_config
        if enc["model_type"] == "vit_encoder":
            hidden = enc["hidden_size"]
            self.encoder = OfficialViTEncoder(
                enc["image_size"], enc["patch_size"], enc["num_channels"], hidden, enc["num_hidden_layers"],
                enc["num_attention_heads"], enc.get("intermediate_size") or 4 * hidden, enc.get("hidden_act", "gelu"),
                enc.get("output_size") or hidden,
            )  # fmt: skip
        else:
            self.encoder = OfficialCNNEncoder(
                enc["input_channels"], enc["hidden_size"], enc["out_channels"], enc["kernel_size"],
                enc["downsampling_ratio"], enc["num_hidden_layers"], enc["blocks_per_layer"],
            )  # fmt: skip
        d_model = slot["d_model"]
        blocks = [
            OfficialSlotSSMBlock(
                d_model, slot["input_d_model"], slot.get("space_attn_num_heads") or d_model // 64,
                slot.get("encoder_attn_num_heads") or d_model // 64, slot["use_inverted_attention"], slot["use_ffn"],
                transformers_time_mixer(
                    slot["mamba_version"], d_model, slot["mamba_d_state"], slot["mamba_d_conv"],
                    slot["mamba_expand"], slot["mamba_headdim"],
                ),
            )  # fmt: skip
            for _ in range(slot["num_blocks"])
        ]
        self.slotssm = OfficialSlotSSM(slot["num_slots"], d_model, blocks)
        if dec["model_type"] == "vit_decoder":
            hidden = dec["hidden_size"]
            self.decoder = OfficialViTDecoder(
                dec.get("input_size") or hidden, hidden, dec["num_hidden_layers"], dec["num_attention_heads"],
                dec.get("intermediate_size") or 4 * hidden, dec.get("hidden_act", "relu"), dec["image_size"],
                dec["patch_size"], dec["num_channels"], dec["num_cls_tokens"],
            )  # fmt: skip
        else:
            self.decoder = OfficialSBDecoder(
                dec["in_channels"], dec["out_channels"], dec["initial_size"], dec["output_resolution"],
                dec["hidden_size"],
            )  # fmt: skip

    def load_official_state_dicts(self, encoder_state, slotssm_state, decoder_state):
        """Strict loads: every official key must exist here with its shape, and nothing may be missing."""
        self.encoder.load_state_dict(encoder_state)
        self.slotssm.load_state_dict(slotssm_state)
        self.decoder.load_state_dict(decoder_state)

    def forward(self, frames):
        B, T = frames.shape[:2]
        ref = self.encoder(frames.flatten(0, 1))
        slots, attentions = self.slotssm(ref.reshape(B, T, *ref.shape[1:]))
        decoded = self.decoder(slots.flatten(0, 1))
        recon, masks = decoded if isinstance(decoded, tuple) else (decoded, None)
        recon = recon.reshape(B, T, *recon.shape[1:])
        masks = None if masks is None else masks.reshape(B, T, *masks.shape[1:])
        return recon, masks, slots, attentions
