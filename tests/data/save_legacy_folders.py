"""Writes `tests/data/legacy_folders/<family>/`: a tiny model of each family's first task head, saved with its
processor, and `io.safetensors` holding a seeded input and the outputs the saving code computed on it.

The folders committed beside this script were written by commit 6ecfb11, before the package was split into
`slotssm_hf.models` and the tooling sub-packages; `tests/test_saved_folders.py` checks that the code of today still
loads them and computes the same outputs. Rerun only to record a new format: `python tests/data/save_legacy_folders.py`.
"""

from pathlib import Path

import torch
from safetensors.torch import save_file

from slotssm_hf import FAMILIES
from slotssm_hf.registry import load

# The smallest configurations of each family's tests; inputs as the family's forward takes them.
TINY = {
    "slotssm": {"variant": "vit-tiny", "decoder_type": "spatial_broadcast", "decoder_initial_size": 4},
    "savi": {
        "image_size": 16, "encoder_features": [8, 8], "encoder_strides": [2, 1], "num_slots": 4, "slot_size": 16,
        "initializer_mlp_size": 16, "slot_attention_qkv_size": 8, "predictor_num_heads": 2, "predictor_qkv_size": 8,
        "predictor_mlp_size": 16, "encoder_mlp_size": 8, "decoder_broadcast_size": 4, "decoder_features": [8, 8, 8],
        "decoder_strides": [2, 2, 1], "decoder_transposed": [True, True, False],
    },
    "convs5": {
        "image_size": 16, "encoder_depths": [8, 16], "decoder_depths": [8, 16], "resnet_num_groups": 4,
        "hidden_size": 16, "num_hidden_layers": 2, "ssm_size": 16, "ssm_num_groups": 4, "num_frames": 8,
        "num_context_frames": 4,
    },
    "grootv": {"embed_dim": 16, "depths": [1, 2, 1, 1], "num_labels": 5},
}  # fmt: skip
TINY["statm"] = TINY["savi"]


def tiny_config(model_type: str):
    fields = dict(TINY[model_type])
    variant = fields.pop("variant", None)
    family = FAMILIES[model_type]
    return family.config(variant, **fields) if variant else family.config_class(**fields)


def inputs_for(config, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    if config.model_type == "grootv":
        return {"pixel_values": torch.randn(2, 3, 64, 64, generator=g)}
    channels = getattr(config, "num_channels", 3)
    video = torch.rand(2, 3, channels, config.image_size, config.image_size, generator=g)
    inputs = {"pixel_values_videos": video}
    if config.model_type in ("savi", "statm"):
        boxes = torch.tensor([[0.1, 0.1, 0.5, 0.6], [0.4, 0.3, 0.9, 0.8], [0.0, 0.0, 0.0, 0.0]])
        inputs["boxes"] = boxes.expand(2, -1, -1).contiguous()
    return inputs


def main():
    root = Path(__file__).parent / "legacy_folders"
    for model_type, family in FAMILIES.items():
        torch.manual_seed(0)
        config = tiny_config(model_type)
        model = load(family.heads[1].class_path)(config).eval()
        folder = root / model_type
        model.save_pretrained(folder)
        if family.processor_path:
            load(family.processor_path)().save_pretrained(folder)
        inputs = inputs_for(config)
        with torch.no_grad():
            outputs = model(**inputs)
        tensors = {f"input.{k}": v for k, v in inputs.items()}
        tensors.update({f"output.{k}": v.contiguous() for k, v in outputs.items() if isinstance(v, torch.Tensor)})
        save_file(tensors, folder / "io.safetensors")
        print(model_type, type(model).__name__, sorted(tensors))


if __name__ == "__main__":
    main()
