"""Trees, the shipped taxonomy, distortion measures, Sarkar's construction and fitted embeddings."""
from __future__ import annotations

import math
from collections import deque

import matplotlib
import pytest
import torch

matplotlib.use("Agg")

from hyro_edu import poincare as P
from hyro_edu.hierarchy.taxonomies import CIFAR100_SUPERCLASSES, cifar100_hierarchy
from hyro_edu.hierarchy.tree_embedding import distortion, embedded_distances, fit_embedding, sarkar_embedding
from hyro_edu.hierarchy.trees import Tree, balanced_tree


def bfs_distances(tree: Tree) -> torch.Tensor:
    n = len(tree)
    adj = [[] for _ in range(n)]
    for p, ch in tree.edges:
        adj[p].append(ch)
        adj[ch].append(p)
    out = torch.zeros(n, n, dtype=torch.float64)
    for s in range(n):
        seen = {s: 0}
        queue = deque([s])
        while queue:
            u = queue.popleft()
            for w in adj[u]:
                if w not in seen:
                    seen[w] = seen[u] + 1
                    queue.append(w)
        out[s] = torch.tensor([seen[i] for i in range(n)], dtype=torch.float64)
    return out


def test_tree_distances_match_breadth_first_search():
    for tree in (balanced_tree(3, 3), cifar100_hierarchy(), Tree.from_nested("r", {"a": {"b": ["c", "d"]}, "e": None})):
        assert torch.equal(tree.distances(), bfs_distances(tree))


def test_from_nested_numbers_breadth_first():
    tree = Tree.from_nested("root", {"a": ["a1", "a2"], "b": {"b1": ["b11"]}})
    assert tree.names == ("root", "a", "b", "a1", "a2", "b1", "b11")
    assert tree.parents == (-1, 0, 0, 1, 1, 2, 5)
    assert tree.depths == [0, 1, 1, 2, 2, 2, 3]
    assert tree.leaves == [3, 4, 6]
    assert tree.ancestors(6) == [5, 2, 0]


def test_balanced_tree_size():
    assert len(balanced_tree(2, 6)) == 2**7 - 1
    assert len(balanced_tree(3, 4)) == (3**5 - 1) // 2


def test_cifar100_hierarchy_is_the_real_one():
    tree = cifar100_hierarchy()
    assert len(tree) == 121 and max(tree.depths) == 2
    assert len(CIFAR100_SUPERCLASSES) == 20
    assert all(len(v) == 5 for v in CIFAR100_SUPERCLASSES.values())
    assert tree.names[tree.parents[tree.names.index("dolphin")]] == "aquatic mammals"
    assert tree.names[tree.parents[tree.names.index("tractor")]] == "vehicles 2"


@pytest.mark.parametrize(
    "names,parents,match",
    [
        (("a", "b"), (-1,), "same length"),
        (("a", "b"), (0, 0), r"parents\[0\] must be -1"),
        (("a", "b", "c"), (-1, 2, 0), r"parents\[1\] must be in \[0, 0\]"),
        (("a", "a"), (-1, 0), "unique"),
    ],
)
def test_invalid_trees_are_rejected(names, parents, match):
    with pytest.raises(ValueError, match=match):
        Tree(names, parents)


def test_balanced_tree_rejects_bad_arguments():
    with pytest.raises(ValueError, match="branching must be an integer >= 1"):
        balanced_tree(0, 2)
    with pytest.raises(ValueError, match="depth must be an integer >= 0"):
        balanced_tree(2, -1)


def test_distortion_of_perfect_and_scaled_embeddings():
    d = balanced_tree(2, 3).distances()
    for scale in (1.0, 3.7):
        result = distortion(scale * d, d)
        assert result.worst == pytest.approx(1.0)
        assert result.average == pytest.approx(0.0, abs=1e-12)
        assert result.map == 1.0


def test_distortion_worst_case_is_expansion_times_contraction():
    d = torch.tensor([[0.0, 1, 2], [1, 0, 1], [2, 1, 0]])
    e = torch.tensor([[0.0, 2, 2], [2, 0, 0.5], [2, 0.5, 0]])  # ratios 2, 1, 0.5
    assert distortion(e, d).worst == pytest.approx(4.0)


def test_map_counts_neighbours_ranked_behind_strangers():
    # path a - b - c: b's neighbours are a and c.  Embed so that, seen from a, c is nearer than b.
    d = torch.tensor([[0.0, 1, 2], [1, 0, 1], [2, 1, 0]])
    e = torch.tensor([[0.0, 2, 1], [2, 0, 1], [1, 1, 0]])
    # a: neighbour b at rank 2 -> AP 1/2; b: neighbours a, c at ranks 2, 1 -> AP 1; c: neighbour b at rank 1 (tie broken
    # stably in index order: a and b both at 1, a first) -> rank 2 -> AP 1/2
    assert distortion(e, d).map == pytest.approx((0.5 + 1.0 + 0.5) / 3)


def test_distortion_rejects_bad_shapes():
    with pytest.raises(ValueError, match="square matrices of the same shape"):
        distortion(torch.zeros(3, 3), torch.zeros(3, 4))


def test_sarkar_edges_have_length_tau():
    tree = balanced_tree(3, 3)
    for tau, c in [(1.5, 1.0), (3.0, 0.5)]:
        pts = sarkar_embedding(tree, tau=tau, c=c)
        assert torch.equal(pts[0], torch.zeros(2, dtype=torch.float64))
        parents = torch.tensor([p for p, _ in tree.edges])
        children = torch.tensor([ch for _, ch in tree.edges])
        lengths = P.dist(pts[parents], pts[children], c=c, project=False)
        torch.testing.assert_close(lengths, torch.full_like(lengths, tau))


def test_sarkar_distortion_improves_with_tau_until_precision_runs_out():
    tree = balanced_tree(3, 2)
    d = tree.distances()

    def worst(tau, dtype):
        pts = sarkar_embedding(tree, tau=tau, dtype=dtype)
        if not bool((pts.norm(dim=-1) < 1).all()):
            return math.inf
        return distortion(P.pairwise_dist(pts, pts, c=1.0, project=False), d).worst

    assert worst(8.0, torch.float64) < worst(4.0, torch.float64) < worst(2.0, torch.float64)
    assert worst(8.0, torch.float64) < 1.4
    assert worst(14.0, torch.float32) == math.inf  # float32 rounds depth-2 leaves onto the boundary


def test_sarkar_rejects_bad_tau():
    with pytest.raises(ValueError, match="tau must be a finite number > 0"):
        sarkar_embedding(balanced_tree(2, 1), tau=0.0)


def test_fit_embedding_learns_in_both_geometries():
    tree = balanced_tree(2, 3)
    d = tree.distances()
    for geometry in ("euclidean", "poincare"):
        fit = fit_embedding(tree, geometry=geometry, steps=300, seed=1)
        assert fit.losses[-1] < 0.5 * fit.losses[0]
        result = distortion(embedded_distances(fit.points, geometry=geometry), d)
        assert result.map > 0.5
    poincare_points = fit.points
    assert bool((poincare_points.norm(dim=-1) < 1).all())


def test_fit_embedding_rejects_bad_arguments():
    with pytest.raises(ValueError, match="geometry must be 'euclidean' or 'poincare'"):
        fit_embedding(balanced_tree(2, 1), geometry="sphere")
    with pytest.raises(ValueError, match="steps must be an integer >= 1"):
        fit_embedding(balanced_tree(2, 1), geometry="euclidean", steps=0)


def test_plotting_curves_are_geometric():
    from hyro_edu.book.plotting import geodesic_curve, hyperbolic_circle

    x, y = torch.tensor([0.2, -0.3]), torch.tensor([-0.5, 0.4])
    curve = geodesic_curve(x, y, c=1.0, n=11)
    torch.testing.assert_close(curve[0], x.double())
    torch.testing.assert_close(curve[-1], y.double())
    steps = P.dist(curve[:-1], curve[1:], c=1.0)
    torch.testing.assert_close(steps, torch.full_like(steps, P.dist(x.double(), y.double(), c=1.0).item() / 10))
    ring = hyperbolic_circle(x, 1.5, c=2.0)
    torch.testing.assert_close(P.dist(x.double().expand_as(ring), ring, c=2.0), torch.full((len(ring),), 1.5, dtype=torch.float64))


def test_figures_and_widget_build():
    import matplotlib.pyplot as plt

    from hyro_edu.book.plotting import disk_axes, draw_tree, poincare_scene
    from hyro_edu.book.widgets import poincare_explorer

    fig, ax = plt.subplots()
    poincare_scene(ax, c=0.5)
    tree = balanced_tree(2, 2)
    draw_tree(disk_axes(ax, 1.0), tree, sarkar_embedding(tree, tau=2.0), c=1.0)
    plt.close(fig)
    box = poincare_explorer(c=2.0)
    assert len(box.children) == 3
    plt.close("all")
