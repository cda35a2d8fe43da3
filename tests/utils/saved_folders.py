"""Tiny models of every family, their inputs, and folders saved from them with seeded inputs and the outputs the saving
code computed (`io.safetensors`), for the tests that load saved folders with and without the package."""

from pathlib import Path

import torch
from repository import REPO
from safetensors.torch import save_file

from slotssm_hf import FAMILIES
from slotssm_hf.registry import load

# The folders in tests/data/legacy_folders were saved by commit 6ecfb11, before the package was split into
# `slotssm_hf.models` and the tooling sub-packages (`python tests/data/save_legacy_folders.py` wrote them).
LEGACY_FOLDERS = REPO / "tests" / "data" / "legacy_folders"

# The smallest configurations of each family's tests, and cases beyond the families' own code (a timm frame encoder);
# a "variant" entry names the variant they override.
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
TINY["slotssm-timm-encoder"] = {
    **TINY["slotssm"], "encoder_type": "timm", "timm_pretrained": False, "timm_model_name": "vit_tiny_patch16_224",
    "timm_model_kwargs": {"patch_size": 8, "embed_dim": 48, "depth": 2, "num_heads": 2},
    "reconstruction_target": "features",
}  # fmt: skip


def family_of(case: str):
    return FAMILIES[case.split("-")[0]]


def tiny_config(case: str):
    fields = dict(TINY[case])
    variant = fields.pop("variant", None)
    family = family_of(case)
    return family.config(variant, **fields) if variant else family.config_class(**fields)


def inputs_for(config, seed: int = 0) -> dict:
    """Seeded model inputs: two 3-frame clips in [0, 1] (with first-frame boxes for SAVi and STATM-SAVi), or two
    64 px images for GrootV."""
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


def save_folder(case: str, folder: Path) -> Path:
    """A tiny model of the case's family's first task head saved to `folder` with the family's processor, and
    `io.safetensors`: its inputs ("input.<name>") and the tensors of its output ("output.<name>")."""
    family = family_of(case)
    torch.manual_seed(0)
    config = tiny_config(case)
    model = load(family.heads[1].class_path)(config).eval()
    model.save_pretrained(folder)
    if family.processor_path:
        load(family.processor_path)().save_pretrained(folder)
    inputs = inputs_for(config)
    with torch.no_grad():
        outputs = model(**inputs)
    tensors = {f"input.{k}": v for k, v in inputs.items()}
    tensors.update({f"output.{k}": v.contiguous() for k, v in outputs.items() if isinstance(v, torch.Tensor)})
    save_file(tensors, folder / "io.safetensors")
    return folder
