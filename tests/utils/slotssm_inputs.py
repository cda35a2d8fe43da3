"""A tiny SlotSSM configuration (the "vit-tiny" variant) and random videos that fit it."""

import torch

from slotssm_hf import FAMILIES


def tiny_config(**overrides):
    return FAMILIES["slotssm"].config("vit-tiny", **overrides)


def video(config, batch=2, frames=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, frames, config.num_channels, config.image_size, config.image_size, generator=g)
