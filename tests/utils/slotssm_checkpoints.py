"""Official-layout SlotSSM checkpoints: the three config.json dicts of the official training run, small variants
covering every architectural switch, and checkpoints with random weights under exactly the official key names,
shapes and config.json fields."""

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from slotssm_hf.conversion.references.slotssm import OfficialReference


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


ARCHITECTURES = {
    "vit_encoder": ("vitencoder", "VitEncoder"),
    "cnn_encoder": ("cnnencoder", "CNNEncoder"),
    "slot_ssm": ("slotssm", "SlotSSM"),
    "vit_decoder": ("vitdecoder", "VitDecoder"),
    "spatial_broadcast_decoder": ("sbdecoder", "SBDecoder"),
}


def write_official_checkpoint(step_folder: Path, configs, weights_format="safetensors", dtype=None):
    """Save an official-layout checkpoint with random weights; return the reference holding them."""
    reference = OfficialReference(*configs).eval()
    with torch.no_grad():
        for param in reference.parameters():
            param.add_(torch.randn_like(param) * 0.05)
    for config, module in zip(configs, (reference.encoder, reference.slotssm, reference.decoder)):
        folder_name, architecture = ARCHITECTURES[config["model_type"]]
        folder = step_folder / folder_name
        folder.mkdir(parents=True)
        (folder / "config.json").write_text(json.dumps({**config, "architectures": [architecture]}))
        state = {k: v.contiguous() for k, v in module.state_dict().items()}
        if dtype is not None:
            state = {k: v if k.endswith("A_log") else v.to(dtype) for k, v in state.items()}
        if weights_format == "safetensors":
            save_file(state, folder / "model.safetensors", metadata={"format": "pt"})
        else:
            torch.save(state, folder / "pytorch_model.bin")
    return reference
