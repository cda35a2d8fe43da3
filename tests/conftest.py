import sys
from pathlib import Path

import pytest
import torch
import transformers

# Test helpers live in tests/utils and are imported by module name, never from another test module.
sys.path.insert(0, str(Path(__file__).parent / "utils"))


@pytest.fixture(autouse=True)
def _quiet_and_seeded():
    """Deterministic tests; transformers' notices about missing CUDA kernels are expected on a CPU."""
    transformers.logging.set_verbosity_error()
    torch.manual_seed(0)


def official_configs(**overrides):
    """The three config.json dicts of an official checkpoint from the official train.py run; `overrides` holds
    per-sub-model updates as {"encoder": {...}, "slotssm": {...}, "decoder": {...}}."""
    encoder = {
        "model_type": "vit_encoder", "image_size": 128, "patch_size": 8, "num_channels": 3, "hidden_size": 256,
        "num_hidden_layers": 6, "num_attention_heads": 4, "output_size": 256, "intermediate_size": None,
        "hidden_act": "gelu", "hidden_dropout_prob": 0.0, "num_cls_tokens": 1, "learn_initial_cls_tokens": True,
        "initializer_range": 0.02, "image_norm_mode": "zero_one", "output_dim": 256,
    }  # fmt: skip
    slotssm = {
        "model_type": "slot_ssm", "num_slots": 6, "num_blocks": 4, "d_model": 256, "use_cross_attn": True,
        "space_attn_num_heads": 4, "input_d_model": 256, "use_inverted_attention": True, "encoder_attn_num_heads": 1,
        "use_ffn": False, "mamba_version": "mamba2", "attn_impl": "flash_attention_2", "mamba_d_state": 128,
        "mamba_d_conv": 4, "mamba_expand": 2, "mamba_headdim": 64,
    }  # fmt: skip
    decoder = {
        "model_type": "vit_decoder", "input_size": 256, "hidden_size": 256, "num_hidden_layers": 4,
        "num_attention_heads": 4, "intermediate_size": None, "hidden_act": "relu", "hidden_dropout_prob": 0.0,
        "image_size": 128, "patch_size": 8, "num_channels": 3, "num_cls_tokens": 6,
    }  # fmt: skip
    configs = {"encoder": encoder, "slotssm": slotssm, "decoder": decoder}
    for part, update in overrides.items():
        configs[part] = {**configs[part], **update}
    return configs["encoder"], configs["slotssm"], configs["decoder"]


CNN_ENCODER = {
    "model_type": "cnn_encoder", "input_channels": 3, "input_resolution": 64, "kernel_size": 5, "hidden_size": 32,
    "out_channels": 32, "image_norm_mode": "zero_one", "downsampling_ratio": 4, "num_hidden_layers": 2,
    "blocks_per_layer": 1,
}  # fmt: skip
SB_DECODER = {
    "model_type": "spatial_broadcast_decoder", "in_channels": 128, "out_channels": 3, "initial_size": 8,
    "output_resolution": 64, "hidden_size": 32,
}  # fmt: skip

# Small official-layout variants covering every architectural switch (the default run is tested on its own).
OFFICIAL_VARIANTS = {
    "mamba1-ffn-standard-cross-attention": {
        "encoder": {"hidden_size": 64, "output_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2, "image_size": 64},
        "slotssm": {"d_model": 128, "input_d_model": 64, "num_blocks": 2, "space_attn_num_heads": 2, "mamba_version": "mamba1",
                    "mamba_d_state": 16, "use_ffn": True, "use_inverted_attention": False, "encoder_attn_num_heads": 2},
        "decoder": {"input_size": 128, "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2, "image_size": 64},
    },
    "cnn-encoder-spatial-broadcast-x8": {
        "encoder": CNN_ENCODER,
        "slotssm": {"d_model": 128, "input_d_model": 32, "num_slots": 4, "num_blocks": 2, "space_attn_num_heads": 2,
                    "mamba_headdim": 32, "mamba_d_state": 16},
        "decoder": SB_DECODER,
    },
    "cnn-encoder-spatial-broadcast-x16": {
        "encoder": CNN_ENCODER,
        "slotssm": {"d_model": 128, "input_d_model": 32, "num_slots": 4, "num_blocks": 2, "space_attn_num_heads": 2,
                    "mamba_headdim": 32, "mamba_d_state": 16},
        "decoder": {**SB_DECODER, "initial_size": 4},
    },
    "nine-slots-96px": {
        "encoder": {"hidden_size": 64, "output_size": 128, "num_hidden_layers": 2, "num_attention_heads": 2, "image_size": 96,
                    "patch_size": 12},
        "slotssm": {"d_model": 128, "input_d_model": 128, "num_slots": 9, "num_blocks": 3, "space_attn_num_heads": 2,
                    "mamba_headdim": 32, "mamba_d_state": 32, "encoder_attn_num_heads": 2},
        "decoder": {"input_size": 128, "hidden_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2, "image_size": 96,
                    "patch_size": 12, "num_cls_tokens": 9},
    },
}  # fmt: skip
