"""The pure-PyTorch tree scan: the MST against SciPy's and against Kruskal's algorithm under the stated tie rule, the
BFS levels against SciPy's breadth-first tree, and the two-pass scan against a brute-force sum over tree paths
(float64), the dense form, and numerical gradients."""

import sys

import pytest
import scipy.sparse
import scipy.sparse.csgraph
import torch
from tree_scan_oracle import path_product_oracle, tree_graph

from slotssm_hf.models.tree_scan import (
    bfs_levels,
    grid_edge_costs,
    grid_edges,
    grid_tree,
    minimum_spanning_tree,
    tree_scan,
    tree_scan_ref,
)

GRIDS = [(1, 1), (1, 6), (5, 1), (2, 2), (4, 5), (7, 3)]


def scipy_tree(costs: torch.Tensor, height: int, width: int):
    """SciPy's minimum spanning tree of one grid graph, as a sparse matrix."""
    first, second = grid_edges(height, width)
    graph = scipy.sparse.coo_matrix(
        (costs.double().numpy(), (first.numpy(), second.numpy())), shape=(height * width,) * 2
    )
    return scipy.sparse.csgraph.minimum_spanning_tree(graph)


def kruskal(costs: list[float], height: int, width: int) -> set[int]:
    """Kruskal's algorithm with a stable sort (equal costs in edge-index order) and a plain union-find."""
    first, second = (t.tolist() for t in grid_edges(height, width))
    root = list(range(height * width))

    def find(v):
        while root[v] != v:
            v = root[v]
        return v

    chosen = set()
    for edge in sorted(range(len(costs)), key=lambda e: costs[e]):
        a, b = find(first[edge]), find(second[edge])
        if a != b:
            root[a] = b
            chosen.add(edge)
    return chosen


def random_problem(batch, height, width, channels=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    features = torch.randn(batch, height, width, 5, generator=g, dtype=torch.float64)
    u = torch.randn(batch, height * width, channels, generator=g, dtype=torch.float64)
    w = torch.rand(batch, height * width, channels, generator=g, dtype=torch.float64)
    return features, u, w


# Minimum spanning tree


@pytest.mark.parametrize("height,width", GRIDS)
def test_mst_has_scipys_weight_and_with_distinct_costs_its_edges(height, width):
    features, _, _ = random_problem(3, height, width)
    costs = grid_edge_costs(features)
    tree = minimum_spanning_tree(costs, height, width)
    first, second = grid_edges(height, width)
    for b in range(3):
        expected = scipy_tree(costs[b], height, width)
        assert tree[b].sum() == height * width - 1
        assert costs[b][tree[b]].sum().item() == pytest.approx(expected.sum(), rel=1e-12)
        ours = set(zip(first[tree[b]].tolist(), second[tree[b]].tolist()))
        assert ours == set(zip(*(idx.tolist() for idx in expected.nonzero())))


@pytest.mark.parametrize("levels", [1, 2, 3])
def test_mst_breaks_ties_by_edge_index_like_a_stable_kruskal(levels):
    """Constant regions (zero features, equal cosines) give equal costs; the tie rule makes the tree unique."""
    height, width = 6, 7
    g = torch.Generator().manual_seed(levels)
    num_edges = (height - 1) * width + height * (width - 1)
    # Costs from 1 up: SciPy reads a zero in a sparse matrix as a missing edge.
    costs = 1 + torch.randint(0, levels, (4, num_edges), generator=g).float()
    tree = minimum_spanning_tree(costs, height, width)
    for b in range(4):
        assert set(tree[b].nonzero().squeeze(1).tolist()) == kruskal(costs[b].tolist(), height, width)
        assert costs[b][tree[b]].sum().item() == scipy_tree(costs[b], height, width).sum()
    assert torch.equal(tree, minimum_spanning_tree(costs, height, width))


def test_mst_refuses_costs_of_the_wrong_shape_or_not_finite():
    with pytest.raises(ValueError, match=r"costs must be \(batch, 31\) for a 4x5 grid"):
        minimum_spanning_tree(torch.rand(2, 30), 4, 5)
    with pytest.raises(ValueError, match="finite"):
        minimum_spanning_tree(torch.full((1, 31), float("nan")), 4, 5)


# Breadth-first levels


@pytest.mark.parametrize("height,width", GRIDS)
def test_bfs_levels_give_scipys_parents_and_depths(height, width):
    features, _, _ = random_problem(2, height, width)
    mask = minimum_spanning_tree(grid_edge_costs(features), height, width)
    levels = bfs_levels(mask, height, width)
    num_pixels = height * width
    assert sorted(levels.order.tolist()) == list(range(2 * num_pixels))
    for b in range(2):
        graph = tree_graph(mask[b], height, width)
        _, predecessors = scipy.sparse.csgraph.breadth_first_order(graph, 0, directed=False)
        depth = scipy.sparse.csgraph.shortest_path(graph, unweighted=True, directed=False, indices=0)
        for position, node in enumerate(levels.order.tolist()):
            if node // num_pixels != b:
                continue
            pixel = node % num_pixels
            parent = levels.order[levels.parent[position]].item() % num_pixels
            assert parent == (pixel if pixel == 0 else predecessors[pixel])
            bounds = levels.bounds
            level = next(d for d in range(len(bounds) - 1) if bounds[d] <= position < bounds[d + 1])
            assert level == depth[pixel]


def test_bfs_refuses_a_mask_that_is_not_a_spanning_tree():
    mask = torch.zeros(1, 31, dtype=torch.bool)
    with pytest.raises(ValueError, match="19 edges"):
        bfs_levels(mask, 4, 5)
    # All 15 vertical edges (five columns), and (0,0)-(0,1), (1,0)-(1,1), (1,1)-(1,2), (1,2)-(1,3): 19 edges, a cycle
    # between the first two columns, and the last column left out.
    mask[0, :16] = True
    mask[0, 19:22] = True
    with pytest.raises(ValueError, match="not a spanning tree"):
        bfs_levels(mask, 4, 5)


# The scan


@pytest.mark.parametrize("height,width", [(1, 1), (1, 5), (3, 4), (4, 4)])
def test_scan_is_the_sum_over_pixels_of_path_products(height, width):
    features, u, w = random_problem(2, height, width)
    tree = grid_tree(features)
    mask = minimum_spanning_tree(grid_edge_costs(features), height, width)
    expected = path_product_oracle(u, w, mask, height, width)
    torch.testing.assert_close(tree_scan(u, w, tree), expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(tree_scan_ref(u, w, tree), expected, rtol=1e-12, atol=1e-12)


def test_scan_gradients_match_numerical_differences():
    features, u, w = random_problem(2, 3, 4, channels=2)
    tree = grid_tree(features)
    u.requires_grad_(True)
    w.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda u, w: tree_scan(u, w, tree), (u, w))


def test_scan_gradients_match_autograd_through_the_dense_form():
    features, u, w = random_problem(2, 6, 5, channels=4, seed=1)
    tree = grid_tree(features)
    u.requires_grad_(True)
    w.requires_grad_(True)
    grad_y = torch.randn_like(u)
    fast = torch.autograd.grad(tree_scan(u, w, tree), (u, w), grad_y)
    dense = torch.autograd.grad(tree_scan_ref(u, w, tree), (u, w), grad_y)
    for ours, expected in zip(fast, dense):
        torch.testing.assert_close(ours, expected, rtol=1e-10, atol=1e-12)


def test_root_weight_is_unused():
    features, u, w = random_problem(2, 4, 4)
    tree = grid_tree(features)
    changed = w.clone()
    changed[:, 0] = 0.123
    assert torch.equal(tree_scan(u, w, tree), tree_scan(u, changed, tree))


def test_float32_scan_is_close_to_float64():
    features, u, w = random_problem(3, 9, 11, channels=8)
    tree = grid_tree(features)
    expected = tree_scan(u, w, tree).float()
    torch.testing.assert_close(tree_scan(u.float(), w.float(), tree), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "u_shape,w_shape,dtype,message",
    [
        ((2, 15, 3), (2, 15, 3), torch.float32, r"\(batch, length\) = \(2, 16\)"),
        ((2, 16, 3), (2, 16, 4), torch.float32, "same shape"),
        ((2, 16), (2, 16), torch.float32, "channels"),
        ((2, 16, 3), (2, 16, 3), torch.int64, "floating point"),
    ],
)
def test_scan_refuses_inputs_that_do_not_fit_the_tree(u_shape, w_shape, dtype, message):
    tree = grid_tree(torch.randn(2, 4, 4, 3))
    with pytest.raises(ValueError, match=message):
        tree_scan(torch.ones(u_shape, dtype=dtype), torch.ones(w_shape, dtype=dtype), tree)


def test_tree_features_must_be_channels_last_float():
    with pytest.raises(ValueError, match=r"\(batch, height, width, channels\)"):
        grid_tree(torch.randn(4, 4, 3))


# Dispatch to the official TreeScan extension. The stand-in follows the extension's calling conventions (per-sample
# breadth-first arrays, inputs (batch, channels, length) in pixel order, weights in breadth-first order, the root's
# weight zeroed in place) and runs its recurrences node by node in Python.


def _stand_in_passes(values, weights, sorted_index, sorted_parent, sorted_child):
    """Leaves-to-root sums (breadth-first layout) and root-to-leaves outputs (pixel order) of one sample."""
    length = sorted_index.shape[0]
    up = values[:, sorted_index.long()].clone()
    for i in reversed(range(length)):
        for child in sorted_child[i].tolist():
            if child <= 0:
                break
            up[:, i] += weights[:, child] * up[:, child]
    down = torch.zeros_like(up)
    for i in range(length):
        parent = sorted_parent[i].item()
        w = weights[:, i] if i else torch.zeros_like(weights[:, 0])
        down[:, i] = w * down[:, parent] + (1 - w * w) * up[:, i]
    out = torch.empty_like(down)
    out[:, sorted_index.long()] = down
    return up, down, out


class StandInTreeScanKernels:
    @staticmethod
    def tree_scan_refine_forward(inputs, weights, sorted_index, sorted_parent, sorted_child, coef):
        assert sorted_index.dtype == torch.int32 and weights.shape == inputs.shape and bool((coef == 1).all())
        weights[:, :, 0] = 0
        results = [_stand_in_passes(*args) for args in zip(inputs, weights, sorted_index, sorted_parent, sorted_child)]
        return torch.stack([r[2] for r in results]), torch.stack([r[0] for r in results])

    @staticmethod
    def tree_scan_refine_backward_feature(inputs, weights, sorted_index, sorted_parent, sorted_child, out, up, grad,
                                          coef):  # fmt: skip
        arrays = zip(grad, weights, sorted_index, sorted_parent, sorted_child)
        return torch.stack([_stand_in_passes(*args)[2] for args in arrays])

    @staticmethod
    def tree_scan_refine_backward_edge_weight(inputs, weights, sorted_index, sorted_parent, sorted_child, out, up, grad,
                                              coef):  # fmt: skip
        result = torch.zeros_like(weights)
        for b in range(inputs.shape[0]):
            up_g, down_g, _ = _stand_in_passes(grad[b], weights[b], sorted_index[b], sorted_parent[b], sorted_child[b])
            y = out[b][:, sorted_index[b].long()]  # breadth-first layout
            for i in range(1, inputs.shape[2]):
                p, w = sorted_parent[b, i].item(), weights[b, :, i]
                outside, outside_g = y[:, p] - w * up[b, :, i], down_g[:, p] - w * up_g[:, i]
                result[b, :, i] = up_g[:, i] * outside + up[b, :, i] * outside_g
        return result


def test_cuda_dispatch_runs_the_official_extension_with_the_same_results(monkeypatch):
    from slotssm_hf.models import tree_scan as module

    features, u, w = random_problem(2, 4, 5, channels=3, seed=2)
    tree = grid_tree(features)
    u.requires_grad_(True)
    w.requires_grad_(True)
    grad_y = torch.randn_like(u)
    expected = tree_scan(u, w, tree)
    expected_grads = torch.autograd.grad(expected, (u, w), grad_y)
    monkeypatch.setattr(module, "KERNEL_DEVICE_TYPES", frozenset({"cpu"}))
    monkeypatch.setattr(module, "load_official_kernels", lambda: StandInTreeScanKernels)
    assert tree_scan(u, w, tree, use_kernel=False).grad_fn.name().startswith("_TreeScan")
    out = tree_scan(u, w, tree)
    assert out.grad_fn.name() != expected.grad_fn.name()  # the extension's path ran
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)
    for ours, theirs in zip(torch.autograd.grad(out, (u, w), grad_y), expected_grads):
        torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-12)


def test_the_extension_is_used_only_on_cuda_when_enabled_and_installed(monkeypatch):
    from slotssm_hf.models import tree_scan as module

    monkeypatch.setattr(module, "load_official_kernels", lambda: "kernels")
    x = torch.ones(1)
    assert module.official_kernels_for(x, enabled=True) is None  # a CPU tensor
    monkeypatch.setattr(module, "KERNEL_DEVICE_TYPES", frozenset({"cpu"}))
    assert module.official_kernels_for(x, enabled=True) == "kernels"
    assert module.official_kernels_for(x, enabled=False) is None
    monkeypatch.setattr(module, "load_official_kernels", lambda: None)  # not installed
    assert module.official_kernels_for(x, enabled=True) is None


def test_a_missing_extension_loads_as_none(monkeypatch):
    from slotssm_hf.models import tree_scan as module

    module.load_official_kernels.cache_clear()
    monkeypatch.setitem(sys.modules, "tree_scan", None)  # importing it now fails
    try:
        assert module.load_official_kernels() is None
    finally:
        module.load_official_kernels.cache_clear()
