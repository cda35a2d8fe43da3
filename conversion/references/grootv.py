"""A float64 evaluation of the official GrootV image classifier directly on its state dict (the official key names:
`patch_embed.*`, `levels.{i}.blocks.{j}.TreeSSM.*`, `conv_head.*`, `head.*`), for checking conversions: the oracle
of `slotssm-hf convert-grootv --verify`.

Written from the paper and the official module semantics with torch's functional operations, sharing no code with
`modeling_grootv.py` or `tree_scan.py`: the architecture is read off the state dict's keys and shapes (levels,
blocks, widths, the optional layer-scale gammas), never from a GrootVConfig; the minimum spanning tree is Kruskal's
algorithm over the grid's edges sorted by cost (ties by edge index, the order the official code lists them: the
vertical edges row by row, then the horizontal ones) with a union-find, walked node by node; the tree scan is the
official two-pass recurrence run one node at a time in breadth-first order from the top-left pixel:
up, a_v = u_v + sum over children c of w_c a_c; down, y_root = a_root, y_v = w_v y_parent + (1 - w_v^2) a_v.
Slow by design: use small images (64 x 64).
"""

import math

import torch
import torch.nn.functional as F

STEM_EPS = 1e-6  # build_norm_layer's LayerNorm epsilon: stem, block, level and downsampling norms
TREE_SSM_EPS = 1e-5  # the TreeSSM's own nn.LayerNorm(d_inner) defaults
BATCH_NORM_EPS = 1e-5


def grid_edges(height: int, width: int) -> list[tuple[int, int]]:
    """The official edge list: (r, c)-(r+1, c) for every row but the last, then (r, c)-(r, c+1), row-major."""
    vertical = [(r * width + c, (r + 1) * width + c) for r in range(height - 1) for c in range(width)]
    horizontal = [(r * width + c, r * width + c + 1) for r in range(height) for c in range(width - 1)]
    return vertical + horizontal


def spanning_tree_order(features: torch.Tensor) -> tuple[list[int], list[int]]:
    """features (H, W, D): the breadth-first order of the minimum spanning tree under exp(-cos) edge costs, rooted at
    pixel 0, and each node's parent (-1 for the root)."""
    height, width, _ = features.shape
    flat = features.reshape(height * width, -1)
    edges = grid_edges(height, width)
    first, second = zip(*edges)
    costs = torch.exp(-F.cosine_similarity(flat[list(first)], flat[list(second)], dim=-1)).tolist()
    parent_of = list(range(height * width))

    def root(node):
        while parent_of[node] != node:
            parent_of[node] = parent_of[parent_of[node]]
            node = parent_of[node]
        return node

    neighbours = [[] for _ in range(height * width)]
    for index in sorted(range(len(edges)), key=lambda e: (costs[e], e)):
        a, b = edges[index]
        ra, rb = root(a), root(b)
        if ra != rb:
            parent_of[ra] = rb
            neighbours[a].append(b)
            neighbours[b].append(a)
    order, parent, seen = [0], [-1] * (height * width), {0}
    for node in order:  # the list grows while it is walked: breadth first
        for other in neighbours[node]:
            if other not in seen:
                seen.add(other)
                parent[other] = node
                order.append(other)
    return order, parent


def tree_scan(u: torch.Tensor, w: torch.Tensor, order: list[int], parent: list[int]) -> torch.Tensor:
    """y_i = sum_j (product of w along the tree path i..j, each edge weighted by its child's w) u_j; u, w (L, D)."""
    up = u.clone()
    for node in reversed(order[1:]):
        up[parent[node]] = up[parent[node]] + w[node] * up[node]
    y = up.clone()
    for node in order[1:]:
        y[node] = w[node] * y[parent[node]] + (1 - w[node] ** 2) * up[node]
    return y


class GrootVReference:
    """`GrootVReference(state_dict)(images)`: the official classifier's logits for images (batch, 3, H, W), float64."""

    def __init__(self, state_dict: dict):
        self.p = {key: value.double() for key, value in state_dict.items() if value.is_floating_point()}
        self.levels = 1 + max(int(key.split(".")[1]) for key in self.p if key.startswith("levels."))
        self.depths = [
            1 + max(int(key.split(".")[3]) for key in self.p if key.startswith(f"levels.{i}.blocks."))
            for i in range(self.levels)
        ]

    def layer_norm(self, x, prefix, eps):
        return F.layer_norm(x, x.shape[-1:], self.p[f"{prefix}.weight"], self.p[f"{prefix}.bias"], eps)

    def tree_ssm(self, x, prefix):
        """x (B, H, W, C) channels last."""
        p = lambda name: self.p[f"{prefix}.{name}"]  # noqa: E731
        batch, height, width, _ = x.shape
        xz = x @ p("in_proj.weight").T
        x, z = xz.chunk(2, dim=-1)
        kernel = p("conv2d.weight")
        x = F.silu(F.conv2d(x.permute(0, 3, 1, 2), kernel, padding=kernel.shape[-1] // 2, groups=kernel.shape[0]))
        xs = x.flatten(2)  # (B, D, L)
        rank = p("dt_projs_weight").shape[-1]
        dt, b, c = torch.split(torch.einsum("bdl,cd->bcl", xs, p("x_proj_weight")[0]), [rank, 1, 1], dim=1)
        dt = F.softplus(torch.einsum("brl,dr->bdl", dt, p("dt_projs_weight")[0]) + p("dt_projs_bias")[0][:, None])
        weights = torch.exp(dt * -torch.exp(p("A_logs")))  # (B, D, L); A_logs (D, 1)
        inputs = dt * b * xs
        outputs = []
        for i in range(batch):
            order, parent = spanning_tree_order(x[i].permute(1, 2, 0))
            outputs.append(tree_scan(inputs[i].T, weights[i].T, order, parent))  # (L, D)
        y = self.layer_norm(torch.stack(outputs), f"{prefix}.h_norm", TREE_SSM_EPS) * c.transpose(1, 2)
        y = y + p("Ds") * xs.transpose(1, 2)
        y = self.layer_norm(y, f"{prefix}.out_norm", TREE_SSM_EPS).view(batch, height, width, -1)
        return (y * F.silu(z)) @ p("out_proj.weight").T

    def block(self, x, prefix):
        gamma1, gamma2 = self.p.get(f"{prefix}.gamma1", 1.0), self.p.get(f"{prefix}.gamma2", 1.0)
        x = x + gamma1 * self.tree_ssm(self.layer_norm(x, f"{prefix}.norm1.0", STEM_EPS), f"{prefix}.TreeSSM")
        hidden = F.gelu(self.layer_norm(x, f"{prefix}.norm2.0", STEM_EPS) @ self.p[f"{prefix}.mlp.fc1.weight"].T
                        + self.p[f"{prefix}.mlp.fc1.bias"])  # fmt: skip
        return x + gamma2 * (hidden @ self.p[f"{prefix}.mlp.fc2.weight"].T + self.p[f"{prefix}.mlp.fc2.bias"])

    @torch.no_grad()
    def __call__(self, images):
        p = self.p
        x = F.conv2d(images.double(), p["patch_embed.conv1.weight"], p["patch_embed.conv1.bias"], stride=2, padding=1)
        x = F.gelu(self.layer_norm(x.permute(0, 2, 3, 1), "patch_embed.norm1.1", STEM_EPS))
        x = F.conv2d(x.permute(0, 3, 1, 2), p["patch_embed.conv2.weight"], p["patch_embed.conv2.bias"], stride=2,
                     padding=1)  # fmt: skip
        x = self.layer_norm(x.permute(0, 2, 3, 1), "patch_embed.norm2.1", STEM_EPS)
        for i, depth in enumerate(self.depths):
            for j in range(depth):
                x = self.block(x, f"levels.{i}.blocks.{j}")
            x = self.layer_norm(x, f"levels.{i}.norm.0", STEM_EPS)
            if f"levels.{i}.downsample.conv.weight" in p:
                x = F.conv2d(x.permute(0, 3, 1, 2), p[f"levels.{i}.downsample.conv.weight"], stride=2, padding=1)
                x = self.layer_norm(x.permute(0, 2, 3, 1), f"levels.{i}.downsample.norm.1", STEM_EPS)
        x = F.conv2d(x.permute(0, 3, 1, 2), p["conv_head.0.weight"])
        mean, var = p["conv_head.1.0.running_mean"], p["conv_head.1.0.running_var"]
        x = (x - mean[:, None, None]) / torch.sqrt(var[:, None, None] + BATCH_NORM_EPS)
        x = F.gelu(x * p["conv_head.1.0.weight"][:, None, None] + p["conv_head.1.0.bias"][:, None, None])
        pooled = x.mean(dim=(2, 3))
        return pooled @ p["head.weight"].T + p["head.bias"] if "head.weight" in p else pooled


def max_logit_difference(model, state_dict: dict, size: int = 64, seed: int = 0) -> float:
    """Max abs difference between `model`'s logits (float32) and the reference's on seeded images."""
    images = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(seed))
    expected = GrootVReference(state_dict)(images)
    with torch.no_grad():
        ours = model.float().eval()(images).logits.double()
    return (ours - expected).abs().max().item() if not math.isnan(expected.sum()) else math.inf


__all__ = ["GrootVReference", "max_logit_difference", "spanning_tree_order", "tree_scan"]
