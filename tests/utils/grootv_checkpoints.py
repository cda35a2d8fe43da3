"""Official-layout GrootV checkpoints: the published parameter counts, the official parameter and buffer shapes by
name, random weights in that layout, and images to compare models on."""

import math

import torch

# GrootV-T/S/B as built here; the paper and README give 30M / 51M / 91M.
PUBLISHED_PARAMETERS = {"tiny": 29_958_600, "small": 51_331_624, "base": 90_597_096}


def official_shapes(embed_dim: int, depths: list[int], num_classes: int) -> dict:
    """The parameter and buffer shapes of the official GrootV (`models/grootv.py`, `models/tree_scanning.py`) by
    name, written out from the official code's structure (norms wrapped in nn.Sequential with layout permutations,
    TreeSSM with stacked x_proj / dt_projs parameters, d_state 1)."""
    shapes = {
        "patch_embed.conv1.weight": (embed_dim // 2, 3, 3, 3), "patch_embed.conv1.bias": (embed_dim // 2,),
        "patch_embed.norm1.1.weight": (embed_dim // 2,), "patch_embed.norm1.1.bias": (embed_dim // 2,),
        "patch_embed.conv2.weight": (embed_dim, embed_dim // 2, 3, 3), "patch_embed.conv2.bias": (embed_dim,),
        "patch_embed.norm2.1.weight": (embed_dim,), "patch_embed.norm2.1.bias": (embed_dim,),
    }  # fmt: skip
    for i, depth in enumerate(depths):
        d, rank = embed_dim * 2**i, math.ceil(embed_dim * 2**i / 16)
        for j in range(depth):
            p = f"levels.{i}.blocks.{j}."
            shapes.update({
                p + "norm1.0.weight": (d,), p + "norm1.0.bias": (d,),
                p + "TreeSSM.in_proj.weight": (4 * d, d), p + "TreeSSM.conv2d.weight": (2 * d, 1, 3, 3),
                p + "TreeSSM.x_proj_weight": (1, rank + 2, 2 * d), p + "TreeSSM.dt_projs_weight": (1, 2 * d, rank),
                p + "TreeSSM.dt_projs_bias": (1, 2 * d), p + "TreeSSM.A_logs": (2 * d, 1), p + "TreeSSM.Ds": (2 * d,),
                p + "TreeSSM.out_norm.weight": (2 * d,), p + "TreeSSM.out_norm.bias": (2 * d,),
                p + "TreeSSM.h_norm.weight": (2 * d,), p + "TreeSSM.h_norm.bias": (2 * d,),
                p + "TreeSSM.out_proj.weight": (d, 2 * d),
                p + "norm2.0.weight": (d,), p + "norm2.0.bias": (d,),
                p + "mlp.fc1.weight": (4 * d, d), p + "mlp.fc1.bias": (4 * d,),
                p + "mlp.fc2.weight": (d, 4 * d), p + "mlp.fc2.bias": (d,),
            })  # fmt: skip
        shapes[f"levels.{i}.norm.0.weight"] = shapes[f"levels.{i}.norm.0.bias"] = (d,)
        if i < len(depths) - 1:
            shapes[f"levels.{i}.downsample.conv.weight"] = (2 * d, d, 3, 3)
            shapes[f"levels.{i}.downsample.norm.1.weight"] = shapes[f"levels.{i}.downsample.norm.1.bias"] = (2 * d,)
    features = embed_dim * 2 ** (len(depths) - 1)
    head = int(features * 1.5)
    shapes["conv_head.0.weight"] = (head, features, 1, 1)
    for name in ("weight", "bias", "running_mean", "running_var"):
        shapes[f"conv_head.1.0.{name}"] = (head,)
    shapes["head.weight"], shapes["head.bias"] = (num_classes, head), (num_classes,)
    return shapes


def official_state_dict(embed_dim: int, depths: list[int], num_classes: int, seed: int = 0) -> dict:
    """Random weights in the official layout."""
    g = torch.Generator().manual_seed(seed)
    state = {
        k: torch.rand(s, generator=g) if "running_var" in k else 0.1 * torch.randn(s, generator=g)
        for k, s in official_shapes(embed_dim, depths, num_classes).items()
    }
    state["conv_head.1.0.num_batches_tracked"] = torch.tensor(1000)
    return state


def images(batch=2, size=64, seed=0):
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))
