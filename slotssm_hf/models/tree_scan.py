"""Tree-topology state-space scan (GrootVL, Xiao et al., NeurIPS 2024) in pure PyTorch.

The 4-connected grid of an H x W feature map is reduced to its minimum spanning tree under the cost
exp(-cos(f_i, f_j)) between neighbouring pixels, the tree is rooted at pixel 0 (top left), and every channel
propagates along it:

    y_i = sum_j S_ij u_j,   S_ij = product of the edge weights on the tree path between i and j (S_ii = 1),

where the weight of the edge between a pixel and its parent is the pixel's own w (per channel). Written from the
paper and the project's notes, with the official code read (not copied) for its conventions: edge order, root,
which pixel's w weights an edge; the official CUDA extension computes the same operator.

Every stage is batched tensor work with Python loops only over rounds or tree levels, never over pixels:
- `minimum_spanning_tree`: Borůvka's algorithm over the whole batch at once, O(E log V) work in at most log2(V)
  rounds. Ties are broken by edge index (edges listed as in `grid_edges`), which makes the order of the edges
  strict, so the tree is unique: the one Kruskal's algorithm finds with a stable sort of the costs.
- `bfs_levels`: breadth-first order from the root, level by level through a table of each pixel's (at most 4)
  tree neighbours, O(V) work in depth steps.
- `tree_scan`: the two-pass dynamic programme, O(V D) work in 2 x depth steps, with a hand-written backward pass
  of the same cost (the operator S is symmetric, so grad_u is the same two passes applied to grad_y, and grad_w
  needs one elementwise step more).

`tree_scan_ref` is the O(V^2) dense form of the same operator, for tests and benchmarks. On CUDA, `tree_scan` runs
the scan with the official `TreeScan` extension (`tree_scan._C`) where it is installed, on the tree built here (so
both paths use the same tree); it is never required.
"""

import functools
import importlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F

# Device types on which the official TreeScan kernels run (a module constant so tests can stand in for CUDA).
KERNEL_DEVICE_TYPES = frozenset({"cuda"})
# Neighbour slots of a grid pixel in the tree-neighbour table, in the order children are visited.
UP, DOWN, LEFT, RIGHT = range(4)


def grid_edges(height: int, width: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """The edges of the 4-connected height x width grid as two (E,) tensors of row-major pixel indices (first <
    second): the vertical edges (r, c)-(r+1, c) row by row, then the horizontal edges (r, c)-(r, c+1) row by row,
    the order in which the official code lists them. E = (H-1) W + H (W-1)."""
    index = torch.arange(height * width, device=device).view(height, width)
    first = torch.cat([index[:-1, :].flatten(), index[:, :-1].flatten()])
    second = torch.cat([index[1:, :].flatten(), index[:, 1:].flatten()])
    return first, second


def check_grid_features(features: torch.Tensor, name: str = "features"):
    if not isinstance(features, torch.Tensor) or features.dim() != 4 or not features.is_floating_point():
        got = f"{tuple(features.shape)} {features.dtype}" if isinstance(features, torch.Tensor) else type(features)
        raise ValueError(f"{name} must be a floating-point tensor of shape (batch, height, width, channels), got {got}")


def grid_edge_costs(features: torch.Tensor) -> torch.Tensor:
    """exp(-cosine similarity) between neighbouring pixels of `features` (batch, height, width, channels), one
    per edge of `grid_edges`: (batch, E). Similar neighbours get cheap edges, which the minimum spanning tree
    keeps."""
    check_grid_features(features)
    batch, height, width, channels = features.shape
    first, second = grid_edges(height, width, features.device)
    flat = features.reshape(batch, height * width, channels)
    return torch.exp(-F.cosine_similarity(flat[:, first], flat[:, second], dim=-1))


@torch.no_grad()
def minimum_spanning_tree(costs: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """The minimum spanning tree of each grid graph: a (batch, E) boolean mask over `grid_edges`, with
    height * width - 1 edges per row. `costs` is (batch, E); equal costs are ordered by edge index.

    Borůvka's algorithm on all graphs of the batch at once: every round, each component takes its cheapest edge
    to another component (a scatter-min over the edges), and the components joined by the taken edges merge
    (pointer jumping); each round at least halves the number of components."""
    num_edges = (height - 1) * width + height * (width - 1)
    if costs.dim() != 2 or costs.shape[1] != num_edges:
        raise ValueError(
            f"costs must be (batch, {num_edges}) for a {height}x{width} grid (one per grid edge), got "
            f"{tuple(costs.shape)}"
        )
    if not bool(torch.isfinite(costs).all()):
        raise ValueError("costs must be finite: the minimum spanning tree of NaN or infinite costs is undefined")
    batch, device = costs.shape[0], costs.device
    num_pixels = height * width
    first, second = grid_edges(height, width, device)
    offsets = torch.arange(batch, device=device)[:, None]
    src = (first + offsets * num_pixels).flatten()
    dst = (second + offsets * num_pixels).flatten()
    # A strict order of each graph's edges: by cost, then (stable sort) by index. Each component's cheapest edge is
    # then its minimum rank, and the edge of a rank is looked up in `by_rank`.
    by_rank = torch.sort(costs, dim=1, stable=True).indices
    rank = torch.empty_like(by_rank).scatter_(1, by_rank, torch.arange(num_edges, device=device).expand(batch, -1))
    rank = rank.flatten()
    by_rank = (by_rank + offsets * num_edges).flatten()

    component = torch.arange(batch * num_pixels, device=device)  # each pixel's component, named by one of its pixels
    in_tree = torch.zeros(batch * num_edges, dtype=torch.bool, device=device)
    while True:
        ends_a, ends_b = component[src], component[dst]
        crossing = ends_a != ends_b
        if not bool(crossing.any()):
            break
        cheapest = torch.full_like(component, num_edges)
        cheapest.scatter_reduce_(0, ends_a[crossing], rank[crossing], "amin")
        cheapest.scatter_reduce_(0, ends_b[crossing], rank[crossing], "amin")
        merging = (cheapest < num_edges).nonzero().squeeze(1)  # the components that still have outside edges
        edges = by_rank[(merging // num_pixels) * num_edges + cheapest[merging]]
        in_tree[edges] = True
        target = torch.where(component[src[edges]] == merging, component[dst[edges]], component[src[edges]])
        pointer = torch.arange(batch * num_pixels, device=device)
        pointer[merging] = target
        # With a strict edge order, the only cycles are two components that took the same edge: the smaller one
        # becomes the root of the merged component.
        mutual = (pointer[target] == merging) & (merging < target)
        pointer[merging[mutual]] = merging[mutual]
        while True:
            jumped = pointer[pointer]
            if torch.equal(jumped, pointer):
                break
            pointer = jumped
        component = pointer[component]
    return in_tree.view(batch, num_edges)


@dataclass
class TreeLevels:
    """Rooted trees of a batch of grids, flattened into one forest of batch * length nodes (node b * length + p is
    pixel p of sample b) in breadth-first order: `order[k]` is the node at position k, `parent[k]` the position of
    its parent (the roots, positions 0 .. batch - 1, are their own parents), and positions
    bounds[d] .. bounds[d + 1] - 1 are the nodes at depth d of every tree."""

    order: torch.Tensor
    parent: torch.Tensor
    bounds: tuple[int, ...]
    batch: int
    length: int

    @property
    def depth(self) -> int:
        return len(self.bounds) - 2


@torch.no_grad()
def bfs_levels(tree: torch.Tensor, height: int, width: int) -> TreeLevels:
    """Breadth-first levels of each tree (a (batch, E) mask over `grid_edges`, as `minimum_spanning_tree` returns)
    rooted at pixel 0. Children are visited in the order up, down, left, right of their parent."""
    batch, num_pixels, device = tree.shape[0], height * width, tree.device
    num_edges = (height - 1) * width + height * (width - 1)
    if tree.dim() != 2 or tree.shape[1] != num_edges or tree.dtype != torch.bool:
        raise ValueError(f"tree must be a (batch, {num_edges}) boolean edge mask, got {tuple(tree.shape)} {tree.dtype}")
    if not bool((tree.sum(1) == num_pixels - 1).all()):
        raise ValueError(f"every tree must have {num_pixels - 1} edges (height * width - 1)")
    first, second = grid_edges(height, width, device)
    sample, edge = tree.nonzero(as_tuple=True)
    upper, lower = first[edge] + sample * num_pixels, second[edge] + sample * num_pixels
    vertical = edge < (height - 1) * width
    neighbours = torch.full((batch * num_pixels, 4), -1, dtype=torch.long, device=device)
    neighbours[upper, torch.where(vertical, DOWN, RIGHT)] = lower
    neighbours[lower, torch.where(vertical, UP, LEFT)] = upper

    frontier = torch.arange(batch, device=device) * num_pixels
    parent_node = torch.full((batch * num_pixels,), -1, dtype=torch.long, device=device)
    parent_node[frontier] = frontier
    order, parents, bounds = [frontier], [torch.arange(batch, device=device)], [0, batch]
    while True:
        candidates = neighbours[frontier]
        # In a tree every neighbour but the parent is a child, not yet visited.
        is_child = (candidates >= 0) & (candidates != parent_node[frontier, None])
        children = candidates[is_child]
        if children.numel() == 0:
            break
        parent_node[children] = frontier[:, None].expand_as(candidates)[is_child]
        positions = torch.arange(bounds[-2], bounds[-1], device=device)
        parents.append(positions[:, None].expand_as(candidates)[is_child])
        order.append(children)
        bounds.append(bounds[-1] + children.numel())
        if bounds[-1] > batch * num_pixels:  # a pixel was reached twice
            break
        frontier = children
    if bounds[-1] != batch * num_pixels:
        raise ValueError("the edge mask has a cycle and leaves pixels unconnected: it is not a spanning tree")
    return TreeLevels(torch.cat(order), torch.cat(parents), tuple(bounds), batch, num_pixels)


def grid_tree(features: torch.Tensor) -> TreeLevels:
    """The GrootV tree of a feature map (batch, height, width, channels): the minimum spanning tree under
    `grid_edge_costs`, in breadth-first levels from pixel 0. Not differentiable (the topology is not learnt)."""
    with torch.no_grad():
        costs = grid_edge_costs(features)
        height, width = features.shape[1:3]
        return bfs_levels(minimum_spanning_tree(costs, height, width), height, width)


def _aggregate_up(values: torch.Tensor, weights: torch.Tensor, tree: TreeLevels) -> torch.Tensor:
    """a_v = values_v + sum over children c of w_c a_c, leaves to root (breadth-first layout)."""
    out = values.clone()
    bounds, parent = tree.bounds, tree.parent
    for level in reversed(range(1, len(bounds) - 1)):
        above, start, stop = bounds[level - 1 : level + 2]
        # Into the slice of the level above, by index_put_: on CPU, index_add_ was 2-5x slower at these sizes.
        contributions = weights[start:stop] * out[start:stop]
        out[above:start].index_put_((parent[start:stop] - above,), contributions, accumulate=True)
    return out


def _propagate_down(up: torch.Tensor, weights: torch.Tensor, decay: torch.Tensor, tree: TreeLevels) -> torch.Tensor:
    """y_root = a_root, y_v = w_v y_parent + (1 - w_v^2) a_v, root to leaves: the parent's total, less what it got
    from v's subtree (w_v a_v), passed over the edge, plus v's subtree (breadth-first layout)."""
    out = torch.empty_like(up)
    bounds, parent = tree.bounds, tree.parent
    out[: bounds[1]] = up[: bounds[1]]
    for start, stop in zip(bounds[1:-1], bounds[2:]):
        inflow = decay[start:stop] * up[start:stop]
        out[start:stop] = torch.addcmul(inflow, weights[start:stop], out[parent[start:stop]])
    return out


class _TreeScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, inputs, weights, tree: TreeLevels):
        channels = inputs.shape[-1]
        u = inputs.reshape(-1, channels)[tree.order]
        w = weights.reshape(-1, channels)[tree.order]
        w[: tree.batch] = 0  # the roots have no edge
        decay = 1 - w * w
        up = _aggregate_up(u, w, tree)
        y = _propagate_down(up, w, decay, tree)
        ctx.tree = tree
        ctx.save_for_backward(w, decay, up, y)
        return torch.empty_like(y).index_copy_(0, tree.order, y).view_as(inputs)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_output):
        tree = ctx.tree
        w, decay, up, y = ctx.saved_tensors
        g = grad_output.reshape(-1, w.shape[-1])[tree.order]
        up_g = _aggregate_up(g, w, tree)
        grad_u = _propagate_down(up_g, w, decay, tree)  # S is symmetric
        # The edge of v splits the tree into v's subtree (sums up, up_g seen from v) and the rest (y - w up seen from
        # the parent p): d loss / d w_v = up_g_v (y_p - w_v up_v) + up_v (grad_u_p - w_v up_g_v).
        parent = tree.parent
        grad_w = up_g * torch.addcmul(y[parent], w, up, value=-1)
        grad_w += up * torch.addcmul(grad_u[parent], w, up_g, value=-1)
        grad_w[: tree.batch] = 0
        shape = grad_output.shape
        grad_inputs = torch.empty_like(grad_u).index_copy_(0, tree.order, grad_u).view(shape)
        grad_weights = torch.empty_like(grad_w).index_copy_(0, tree.order, grad_w).view(shape)
        return grad_inputs, grad_weights, None


def check_scan_inputs(inputs, weights, tree: TreeLevels):
    expected = (tree.batch, tree.length)
    for name, tensor in (("inputs", inputs), ("weights", weights)):
        if not isinstance(tensor, torch.Tensor) or tensor.dim() != 3 or tuple(tensor.shape[:2]) != expected:
            got = tuple(tensor.shape) if isinstance(tensor, torch.Tensor) else type(tensor).__name__
            raise ValueError(f"{name} must be (batch, length, channels) with (batch, length) = {expected}, got {got}")
        if not tensor.is_floating_point():
            raise ValueError(f"{name} must be floating point, got {tensor.dtype}")
    if inputs.shape != weights.shape or inputs.dtype != weights.dtype:
        raise ValueError(
            f"inputs and weights must have the same shape and dtype, got {tuple(inputs.shape)} {inputs.dtype} and "
            f"{tuple(weights.shape)} {weights.dtype}"
        )


@functools.cache
def load_official_kernels():
    """The official TreeScan extension module (`tree_scan._C`), or None where it is not installed or fails to load."""
    try:
        return importlib.import_module("tree_scan._C")
    except Exception:  # not installed, or a build that fails to load on this machine
        return None


def official_kernels_for(tensor: torch.Tensor, enabled: bool):
    """The one dispatch point: the official extension when it may run on `tensor`, else None (the torch path)."""
    if not enabled or tensor.device.type not in KERNEL_DEVICE_TYPES:
        return None
    return load_official_kernels()


def official_tree_layout(tree: TreeLevels) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`tree` in the official extension's per-sample breadth-first layout (int32): sorted_index (batch, length), the
    pixel at each position; sorted_parent (batch, length), the parent's position (0 for the root); sorted_child
    (batch, length, 4), the children's positions, first slots filled, 0 after the last."""
    batch, length = tree.batch, tree.length
    # Grouping the forest's positions by sample keeps each sample's breadth-first order.
    by_sample = torch.sort(tree.order // length, stable=True).indices
    local = torch.empty_like(by_sample)
    local[by_sample] = torch.arange(length, device=local.device).repeat(batch)
    sorted_index = (tree.order[by_sample] % length).view(batch, length)
    sorted_parent = local[tree.parent[by_sample]].view(batch, length)
    # Siblings are consecutive positions: a child's slot is its distance from the first of them.
    positions = torch.arange(length, device=local.device).expand(batch, -1)
    first_child = torch.full_like(sorted_parent, length)
    first_child.scatter_reduce_(1, sorted_parent[:, 1:], positions[:, 1:], "amin")
    slot = positions[:, 1:] - first_child.gather(1, sorted_parent[:, 1:])
    sorted_child = torch.zeros(batch, length, 4, dtype=torch.long, device=local.device)
    sorted_child.view(batch, -1).scatter_(1, sorted_parent[:, 1:] * 4 + slot, positions[:, 1:])
    return sorted_index.int(), sorted_parent.int(), sorted_child.int()


class _OfficialTreeScan(torch.autograd.Function):
    """The official extension's scan ("refine"): inputs (batch, channels, length) in pixel order, weights in its
    breadth-first order."""

    @staticmethod
    def forward(ctx, inputs, weights, layout, kernels):
        coef = torch.ones(layout[0].shape, dtype=inputs.dtype, device=inputs.device)
        weights = weights.clone()  # the extension zeroes the root's weight in place
        out, up = kernels.tree_scan_refine_forward(inputs, weights, *layout, coef)
        ctx.kernels = kernels
        ctx.save_for_backward(inputs, weights, *layout, out, up, coef)
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_output):
        inputs, weights, sorted_index, sorted_parent, sorted_child, out, up, coef = ctx.saved_tensors
        layout = (sorted_index, sorted_parent, sorted_child)
        arguments = (inputs, weights, *layout, out, up, grad_output.contiguous(), coef)
        grad_inputs = ctx.kernels.tree_scan_refine_backward_feature(*arguments)
        grad_weights = ctx.kernels.tree_scan_refine_backward_edge_weight(*arguments)
        return grad_inputs, grad_weights, None, None


def tree_scan(inputs: torch.Tensor, weights: torch.Tensor, tree: TreeLevels, use_kernel: bool = True) -> torch.Tensor:
    """y_i = sum_j S_ij u_j for every channel: `inputs` u and `weights` w are (batch, length, channels), pixels
    row-major; S_ij is the product of w over the path from i to j in `tree`, each edge weighted by the w of its
    node farther from the root (the root's own w is unused). Differentiable in `inputs` and `weights`; forward and
    backward are linear in batch * length * channels. With `use_kernel`, CUDA tensors go through the official
    TreeScan extension where it is installed."""
    check_scan_inputs(inputs, weights, tree)
    kernels = official_kernels_for(inputs, use_kernel)
    if kernels is None:
        return _TreeScan.apply(inputs.contiguous(), weights.contiguous(), tree)
    layout = official_tree_layout(tree)
    index = layout[0].long()[:, None, :].expand(-1, inputs.shape[-1], -1)
    breadth_first_weights = weights.transpose(1, 2).gather(2, index).contiguous()
    out = _OfficialTreeScan.apply(inputs.transpose(1, 2).contiguous(), breadth_first_weights, layout, kernels)
    return out.transpose(1, 2)


def tree_scan_ref(inputs: torch.Tensor, weights: torch.Tensor, tree: TreeLevels) -> torch.Tensor:
    """`tree_scan` through a dense matrix per channel, by autograd: O((batch * length)^2) time and memory per channel
    (the forest's matrices are block-diagonal). S = M^T diag(1 - w^2) M, where M[a, v] is the product of w on the
    path from ancestor a down to v (1 on the diagonal): the sum over the common ancestors of i and j telescopes to
    the product along the path through their lowest common ancestor, as the root's w is 0. y = M^T ((1 - w^2) M u)
    applies S without forming it."""
    check_scan_inputs(inputs, weights, tree)
    channels, nodes = inputs.shape[-1], tree.batch * tree.length
    w = weights.reshape(-1, channels)[tree.order].T  # (channels, nodes), breadth-first layout
    w = torch.cat([torch.zeros_like(w[:, : tree.batch]), w[:, tree.batch :]], dim=1)
    eye = torch.eye(nodes, dtype=inputs.dtype, device=inputs.device)
    # The columns of M level by level: a node's column is its own unit vector plus w times its parent's column, and
    # the parents of a level are the level above.
    blocks = [eye[:, : tree.bounds[1]].expand(channels, -1, -1)]
    for above, start, stop in zip(tree.bounds, tree.bounds[1:-1], tree.bounds[2:]):
        parent = tree.parent[start:stop] - above
        blocks.append(eye[:, start:stop] + w[:, None, start:stop] * blocks[-1][..., parent])
    matrix = torch.cat(blocks, dim=-1)  # M: (channels, nodes, nodes)
    u = inputs.reshape(-1, channels)[tree.order].T[..., None]
    y = (matrix.transpose(1, 2) @ ((1 - w * w)[..., None] * (matrix @ u)))[..., 0].T
    return torch.empty_like(y).index_copy(0, tree.order, y).view_as(inputs)
