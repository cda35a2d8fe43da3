"""A brute-force oracle of the tree scan: SciPy's breadth-first tree of a spanning-tree mask over the grid edges, and
the sum over tree paths of products of edge weights, walked in Python in float64."""

import itertools

import numpy as np
import scipy.sparse
import scipy.sparse.csgraph
import torch

from slotssm_hf.models.tree_scan import grid_edges


def tree_graph(mask: torch.Tensor, height: int, width: int):
    """The edges of a (E,) mask over `grid_edges` as a SciPy sparse graph."""
    first, second = grid_edges(height, width)
    ones = np.ones(int(mask.sum()))
    return scipy.sparse.coo_matrix((ones, (first[mask].numpy(), second[mask].numpy())), shape=(height * width,) * 2)


def path_product_oracle(u, w, tree_mask, height, width):
    """y_i = sum_j (product of w along the tree path i..j) u_j, each edge weighted by the w of its end farther from
    pixel 0, by walking parent pointers of SciPy's breadth-first tree in Python; float64."""
    num_pixels = height * width
    out = torch.zeros_like(u)
    for b in range(u.shape[0]):
        graph = tree_graph(tree_mask[b], height, width)
        _, predecessors = scipy.sparse.csgraph.breadth_first_order(graph, 0, directed=False)

        def ancestors(i):
            chain = [i]
            while predecessors[chain[-1]] >= 0:
                chain.append(predecessors[chain[-1]])
            return chain

        for i, j in itertools.product(range(num_pixels), repeat=2):
            up_i, up_j = ancestors(i), ancestors(j)
            common = set(up_i) & set(up_j)
            product = torch.ones(u.shape[-1], dtype=u.dtype)
            for node in up_i + up_j:  # the nodes below the lowest common ancestor own the path's edges
                if node not in common:
                    product = product * w[b, node]
            out[b, i] += product * u[b, j]
    return out
