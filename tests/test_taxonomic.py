"""ProTeCt's taxonomic machinery: dfs numbering vs the package's bfs Tree, tree cuts, NCL/DTL, LA/HCA/MTA.

The worked examples are those of the design notes (section 3 and 4, the 7-node tree with a depth-1
leaf; the toy world's cut test vector) and of the reference (7.2-7.3, the 7-node balanced tree).
"""
from __future__ import annotations

import json
import math
import os
import random

import pytest
import torch
import torch.nn.functional as F

from hyro_edu.hierarchy.taxonomic_losses import (
    dynamic_tree_cut_loss,
    node_centric_loss,
    protect_loss,
    tree_cut_loss,
)
from hyro_edu.hierarchy.taxonomic_metrics import (
    hierarchical_consistent_accuracy,
    leaf_accuracy,
    mean_tree_cut_accuracy,
    tree_cut_accuracies,
)
from hyro_edu.hierarchy.taxonomic_tree import TaxonomicTree, clean_name
from hyro_edu.hierarchy.taxonomies import toyworld_hierarchy, toyworld_levels
from hyro_edu.hierarchy.tree_cuts import (
    TreeCut,
    count_cuts,
    load_cuts,
    random_cut,
    sample_cuts,
    save_cuts,
)
from hyro_edu.hierarchy.trees import Tree


def seven() -> TaxonomicTree:
    """Design notes' example: root -> {A, c}; A -> {a1, B}; B -> {b1, b2} (c is a depth-1 leaf)."""
    return TaxonomicTree.from_nested("root", {"A": {"a1": None, "B": ["b1", "b2"]}, "c": None})


def balanced7() -> TaxonomicTree:
    """Reference 7.2's tree: root -> {A, B}, A -> {a1, a2}, B -> {b1, b2}."""
    return TaxonomicTree.from_nested("root", {"A": ["a1", "a2"], "B": ["b1", "b2"]})


def random_tree(n: int, seed: int) -> Tree:
    """A random tree (parents precede children; not breadth-first numbered; mixed leaf depths)."""
    rng = random.Random(seed)
    parents = [-1] + [rng.randrange(i) for i in range(1, n)]
    return Tree(tuple(f"n{i}" for i in range(n)), tuple(parents))


def cuts_of(tree, *name_lists):
    return [TreeCut.from_names(tree, names) for names in name_lists]


# ----------------------------------------------------------------------------
# the worked 7-node example: numbering and matrices
# ----------------------------------------------------------------------------
def test_worked_example_numbering():
    t = seven()
    assert t.names == ("root", "A", "a1", "B", "b1", "b2", "c")  # dfs ids 0..6
    assert t.param_names == ("A", "a1", "B", "b1", "b2", "c")  # params 0..5
    assert t.leaves == (2, 4, 5, 6)
    assert t.label_names == ("a1", "b1", "b2", "c")
    assert t.internal_nodes == (0, 1, 3)
    assert t.param_lists == ((0, 5), (1, 2), (3, 4))
    assert t.num_params == 6 and t.num_labels == 4


def test_worked_example_matrices():
    t = seven()
    assert t.sublabels.tolist() == [[0, 0, -1], [0, 1, 0], [0, 1, 1], [1, -1, -1]]
    assert t.codewords.tolist() == [
        [1, 1, 1, 0],  # A
        [1, 0, 0, 0],  # a1
        [0, 1, 1, 0],  # B
        [0, 1, 0, 0],  # b1
        [0, 0, 1, 0],  # b2
        [0, 0, 0, 1],  # c
    ]
    assert t.dependence.tolist() == [[1, 0, 0], [1, 1, 0], [1, 1, 1]]
    assert t.masks.tolist() == [[1, 1, 1, 1, 1, 1], [0, 1, 1, 1, 1, -1], [0, -1, 0, 1, 1, -1]]
    assert t.codeword(0).tolist() == [1, 1, 1, 1]


def test_worked_example_bfs_and_dfs_ids():
    t = seven()
    # the package's Tree numbers breadth-first: root, A, c, a1, B, b1, b2
    assert t.tree.names == ("root", "A", "c", "a1", "B", "b1", "b2")
    assert t.to_dfs(list(range(7))) == [0, 1, 6, 2, 3, 4, 5]
    assert t.to_tree_ids([0, 1, 2, 3, 4, 5, 6]) == [0, 1, 3, 4, 5, 6, 2]
    # bfs leaves come as (c, a1, b1, b2)
    assert [t.tree.names[v] for v in t.tree.leaves] == ["c", "a1", "b1", "b2"]
    assert t.label_of_tree_leaf == (3, 0, 1, 2)
    assert t.tree_leaf_of_label == (1, 2, 3, 0)


def test_the_codeword_trick_breaks_under_bfs_and_the_mapping_does_not():
    t = seven()
    cut = TreeCut.from_names(t, ["A", "c"])
    assert cut.mapping == (0, 0, 0, 1)  # labels a1, b1, b2, c
    truth_in_bfs_leaf_order = [cut.mapping[l] for l in t.label_of_tree_leaf]
    assert truth_in_bfs_leaf_order == [1, 0, 0, 0]  # c, a1, b1, b2
    # ProTeCt's where(codewords[cut]) read against bfs numbering: codewords over bfs leaves (c, a1, b1, b2)
    bfs = t.tree
    bfs_leaves = bfs.leaves
    rows = []
    for name in ("A", "c"):
        v = bfs.names.index(name)
        rows.append([int(v == leaf or v in bfs.ancestors(leaf)) for leaf in bfs_leaves])
    trick = torch.where(torch.tensor(rows))[0].tolist()
    assert trick == [0, 0, 0, 1] != truth_in_bfs_leaf_order
    # under dfs numbering the same trick gives the mapping
    assert torch.where(t.codewords[list(cut.params)])[0].tolist() == list(cut.mapping)


# ----------------------------------------------------------------------------
# dfs <-> tree-id round trips
# ----------------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(6))
def test_dfs_and_tree_ids_round_trip_on_mixed_depth_trees(seed):
    tree = random_tree(25, seed)
    depths_of_leaves = {tree.depths[v] for v in tree.leaves}
    assert len(depths_of_leaves) > 1  # leaves at mixed depths
    t = TaxonomicTree(tree)
    ids = list(range(len(tree)))
    assert t.to_tree_ids(t.to_dfs(ids)) == ids
    assert t.to_dfs(t.to_tree_ids(ids)) == ids
    assert sorted(t.to_dfs(ids)) == ids  # a permutation
    x = torch.tensor([[3, 0], [7, 24]])
    assert torch.equal(t.to_tree_ids(t.to_dfs(x)), x)
    for v in ids:  # names and parent links agree in both numberings
        d = t.to_dfs(v)
        assert t.names[d] == tree.names[v]
        if v:
            assert t.parents[d] == t.to_dfs(tree.parents[v])
    # pre-order: every subtree is a contiguous range of dfs ids, parents come first
    for d in ids:
        below = [e for e in ids if e == d or d in t.ancestors(e)]
        assert below == list(range(d, d + len(below)))
    # leaf labels both ways
    assert [t.label_of_tree_leaf[k] for k in t.tree_leaf_of_label] == list(range(t.num_labels))
    for k, leaf in enumerate(tree.leaves):
        assert t.leaves[t.label_of_tree_leaf[k]] == t.to_dfs(leaf)


def test_round_trip_through_edges_rebuilds_the_bfs_tree():
    t = seven()
    edges = [(t.names[p], t.names[i]) for i, p in enumerate(t.parents) if p >= 0]
    again = TaxonomicTree.from_edges(edges)
    assert again.names == t.names and again.tree == t.tree


def test_non_bfs_package_tree_keeps_its_own_ids():
    tree = toyworld_levels().tree  # "background" is appended last, a depth-1 leaf with id 67
    t = TaxonomicTree(tree)
    assert t.names[-1] == "background" and t.to_dfs(67) == 67
    assert t.to_tree_ids(t.to_dfs(list(range(68)))) == list(range(68))
    assert t.to_dfs(13) == 3  # "red circle" follows root, round, circle


def test_toy_world_labels_are_the_class_ids():
    from hyro_edu.data.toyworld import ToyWorld

    t = TaxonomicTree(toyworld_hierarchy())
    assert t.label_names == ToyWorld().class_names
    assert t.label_of_tree_leaf == tuple(range(54))
    assert [t.names[v] for v in t.internal_nodes] == [
        "object", "round", "polygon", "symbol", "circle", "ring", "semicircle",
        "square", "triangle", "diamond", "cross", "star", "heart",
    ]


def test_tree_from_folders(tmp_path):
    root = tmp_path / "animals"
    for rel in ("mammal/cat", "mammal/dog", "bird", "fish/01_trout_"):
        (root / rel).mkdir(parents=True)
    (root / "mammal" / "notes.txt").write_text("ignored")
    t = TaxonomicTree.from_folder(root)
    assert t.names == ("animals", "bird", "fish", "01_trout_", "mammal", "cat", "dog")
    assert t.label_names == ("bird", "01_trout_", "cat", "dog")
    assert t.prompt_names == ("bird", "fish", " trout", "mammal", "cat", "dog")  # no strip in ProTeCt's rule
    assert t.tree == TaxonomicTree.from_nested(
        "animals", {"bird": None, "fish": ["01_trout_"], "mammal": ["cat", "dog"]}
    ).tree


def test_clean_name():
    assert clean_name("n02084071_dog_") == "n dog"
    assert clean_name("pickup_truck") == "pickup truck"
    assert clean_name("water,_ice,_snow") == "water, ice, snow"


# ----------------------------------------------------------------------------
# tree cuts
# ----------------------------------------------------------------------------
def test_worked_example_cut_table():
    t = seven()
    table = {
        (1, 1, 1): (("a1", "b1", "b2", "c"), (0, 1, 2, 3)),
        (1, 1, 0): (("a1", "B", "c"), (0, 1, 1, 2)),
        (1, 0, 0): (("A", "c"), (0, 0, 0, 1)),
        (1, 0, 1): (("A", "c"), (0, 0, 0, 1)),
    }
    p = 0.5
    g, mirror = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    seen = set()
    for _ in range(60):
        cut = random_cut(t, p, generator=g)
        u = torch.rand(3, generator=mirror)  # the draw random_cut consumed, in order root, A, B
        draw = (1,) + tuple(int(x >= p) for x in u[1:])
        assert (cut.names, cut.mapping) == table[draw]
        seen.add(draw)
    assert seen == set(table)
    assert count_cuts(t) == 3


def test_cut_frequencies_match_the_table_probabilities():
    t, p = seven(), 0.3
    g = torch.Generator().manual_seed(0)
    counts = {}
    n = 4000
    for _ in range(n):
        names = random_cut(t, p, generator=g).names
        counts[names] = counts.get(names, 0) + 1
    assert abs(counts[("a1", "b1", "b2", "c")] / n - (1 - p) ** 2) < 0.03
    assert abs(counts[("a1", "B", "c")] / n - (1 - p) * p) < 0.03
    assert abs(counts[("A", "c")] / n - p) < 0.03


@pytest.mark.parametrize("seed", range(4))
def test_generated_cuts_cover_every_leaf_exactly_once(seed):
    t = TaxonomicTree(random_tree(30, seed))
    g = torch.Generator().manual_seed(seed)
    for p in (0.9, 0.5, 0.1):
        for _ in range(20):
            cut = random_cut(t, p, generator=g)
            assert 0 not in cut.nodes and list(cut.nodes) == sorted(cut.nodes)
            rows = t.codewords[list(cut.params)]  # (|cut|, L)
            assert rows.sum(0).tolist() == [1] * t.num_labels
            assert all(rows[cut.mapping[l], l] == 1 for l in range(t.num_labels))


def test_cut_generator_is_deterministic_under_a_seed():
    t = TaxonomicTree(random_tree(30, 7))
    a = sample_cuts(t, seed=5)
    assert a == sample_cuts(t, seed=5)
    assert a != sample_cuts(t, seed=6)
    assert len(a) == 25 and len({c.names for c in a}) == 25
    g1, g2 = torch.Generator().manual_seed(9), torch.Generator().manual_seed(9)
    assert [random_cut(t, 0.5, generator=g1) for _ in range(5)] == [random_cut(t, 0.5, generator=g2) for _ in range(5)]


def test_toy_world_cut_test_vector():
    t = TaxonomicTree(toyworld_hierarchy())
    assert count_cuts(t) == 729
    cuts = sample_cuts(t)  # rates 0.9 .. 0.1, 5 each, seed 100
    assert [len(c) for c in cuts] == [
        3, 17, 5, 5, 10, 5, 10, 10, 10, 10, 27, 22, 17, 27, 39, 49, 27, 20, 32, 32, 49, 54, 27, 32, 49,
    ]
    assert cuts[0].names == ("round", "polygon", "symbol")
    assert cuts[0].mapping == tuple(k // 18 for k in range(54))
    # the rule takes 46 draws
    assert sample_cuts(t, max_draws=46) == cuts
    with pytest.raises(RuntimeError, match="max_draws"):
        sample_cuts(t, max_draws=45)


def test_toy_world_seen_tree_cut_test_vector():
    from hyro_edu.data.toyworld import ToyWorld

    world = ToyWorld()
    seen = {world.class_names[k] for k in world.seen_classes}
    full = toyworld_hierarchy()
    nested = {
        full.names[f]: {full.names[s]: [full.names[l] for l in full.children(s) if full.names[l] in seen]
                        for s in full.children(f)}
        for f in full.children(0)
    }
    t = TaxonomicTree.from_nested("object", nested)
    assert t.num_labels == 36
    assert [len(c) for c in sample_cuts(t)] == [
        3, 13, 5, 5, 8, 5, 8, 8, 8, 8, 19, 16, 13, 19, 27, 33, 19, 14, 22, 22, 33, 36, 19, 22, 33,
    ]


def test_count_cuts_matches_exhaustive_sampling():
    t = TaxonomicTree.from_nested("r", {"A": {"a": ["x", "y"], "b": None}, "c": ["z", "w"]})
    # f(a) = 2, f(A) = 1 + 2*1 = 3, f(c) = 2, root = 3 * 2 = 6
    assert count_cuts(t) == 6
    g = torch.Generator().manual_seed(0)
    assert len({random_cut(t, 0.5, generator=g).names for _ in range(500)}) == 6


def test_cut_sets_round_trip_through_json(tmp_path):
    t = seven()
    cuts = sample_cuts(t, rates=(0.7, 0.2), per_rate=1, seed=1)
    path = tmp_path / "cuts.json"
    save_cuts(path, cuts, t)
    assert load_cuts(path, t) == cuts
    data = json.loads(path.read_text())
    assert data["labels"] == ["a1", "b1", "b2", "c"]
    assert [c["names"] for c in data["cuts"]] == [list(c.names) for c in cuts]
    data["cuts"][0]["mapping"] = [0] * 4
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="mapping"):
        load_cuts(path, t)
    save_cuts(path, cuts, t)
    with pytest.raises(ValueError, match="tree"):
        load_cuts(path, balanced7())


# ----------------------------------------------------------------------------
# metrics: design notes E1-E3 (scores over A, a1, B, b1, b2, c)
# ----------------------------------------------------------------------------
EXAMPLES = {
    "E1": (
        [[3, 5, 1, 0, 0, 1], [2, 1, 3, 4, 2, 0], [1, 0, 2, 1, 3, 1.5], [0, 1, 0, 0, 2, 3]],
        ["a1", "b1", "b2", "c"], 100.0, 75.0, [100.0, 100.0, 75.0], 91.66666666666667,
    ),
    "E2": (
        [[3, 1, 2, 0, 0, 0.5], [2, 1, 3, 2, 4, 0], [2, 0, 3, 4, 1, 1], [1, 2, 0, 0, 1, 0.5]],
        ["a1", "b1", "b1", "a1"], 75.0, 50.0, [75.0, 75.0, 100.0], 83.33333333333333,
    ),
    "E3": (
        [[2, 1, 0, 0, 0, 1.5], [0.5, 3, 1, 1, 0, 1], [1, 0, 2, 1, 3, 0.5], [0, 1, 0, 0, 2, 3]],
        ["c", "c", "c", "c"], 50.0, 25.0, [50.0, 50.0, 50.0], 50.0,
    ),
}


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_design_note_metric_examples(name):
    scores, truth, la, hca, accs, mta = EXAMPLES[name]
    t = seven()
    scores = torch.tensor(scores, dtype=torch.float64)
    y = t.labels_of(truth)
    cuts = cuts_of(t, ["a1", "b1", "b2", "c"], ["a1", "B", "c"], ["A", "c"])
    assert leaf_accuracy(scores, y, t) == pytest.approx(la)
    assert hierarchical_consistent_accuracy(scores, y, t) == pytest.approx(hca)
    assert tree_cut_accuracies(scores, y, t, cuts).tolist() == pytest.approx(accs)
    assert mean_tree_cut_accuracy(scores, y, t, cuts) == pytest.approx(mta)


def test_hca_checks_only_the_root_for_a_depth_one_leaf():
    t = seven()
    # label c; scores over (A, a1, B, b1, b2, c): root picks c, the leaf pass picks c, the A node
    # picks B and the B node b2 -- both off c's path, so they are not checked
    y = t.labels_of(["c"])
    scores = torch.tensor([[0.0, 0.0, 5.0, 0.0, 0.5, 1.0]])
    assert leaf_accuracy(scores, y, t) == 100.0
    assert hierarchical_consistent_accuracy(scores, y, t) == 100.0
    scores[0, 0] = 2.0  # now the root picks A: inconsistent although the leaf pass is right
    assert leaf_accuracy(scores, y, t) == 100.0
    assert hierarchical_consistent_accuracy(scores, y, t) == 0.0


def test_reference_hca_example():
    t = balanced7()  # params A, a1, a2, B, b1, b2
    scores = torch.tensor([
        [1.0, 1, 0, 0, 0, 0],  # a1: root A, A-node a1
        [1.0, 1, 0, 0, 0, 0],  # a2: root A, A-node a1 (wrong)
        [1.0, 0, 0, 0, 1, 0],  # b1: root A (wrong), B-node b1
        [0.0, 0, 0, 1, 0, 1],  # b2: root B, B-node b2
    ])
    leaf_scores = torch.tensor([[1.0, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 1, 0]])  # a1 a2 b1 b1
    y = t.labels_of(["a1", "a2", "b1", "b2"])
    assert leaf_accuracy(leaf_scores, y, t) == 75.0
    assert hierarchical_consistent_accuracy(scores, y, t, leaf_scores=leaf_scores) == 25.0
    # only sample 1 is consistent: fixing sample 4's leaf makes it consistent too
    fixed = leaf_scores.clone()
    fixed[3] = torch.tensor([0.0, 0, 0, 1])
    assert hierarchical_consistent_accuracy(scores, y, t, leaf_scores=fixed) == 50.0


def test_reference_mta_example():
    t = balanced7()
    scores = torch.tensor([
        [5.0, 0, 0, 0, 0, 0],
        [5.0, 0, 0, 0, 0, 0],
        [2.0, 0, 0, 1, 0, 3],
        [0.0, 0, 0, 2, 0, 3],
    ])
    y = t.labels_of(["a1", "a2", "b1", "b2"])
    cut, coarse = cuts_of(t, ["A", "b1", "b2"], ["A", "B"])
    assert cut.mapping == (0, 0, 1, 2) and coarse.mapping == (0, 0, 1, 1)
    assert tree_cut_accuracies(scores, y, t, [cut, coarse]).tolist() == [75.0, 75.0]
    assert mean_tree_cut_accuracy(scores, y, t, [cut, coarse]) == 75.0


def test_metric_properties_on_random_scores():
    t = TaxonomicTree(random_tree(30, 2))
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(200, t.num_params, generator=g)
    y = torch.randint(t.num_labels, (200,), generator=g)
    la, hca = leaf_accuracy(scores, y, t), hierarchical_consistent_accuracy(scores, y, t)
    assert 0 <= hca <= la <= 100 and hca < la  # random scores: some leaf hits are inconsistent
    leaf_cut = TreeCut.from_nodes(t, t.leaves)
    assert mean_tree_cut_accuracy(scores, y, t, [leaf_cut]) == pytest.approx(la)
    leaf_columns = scores[:, [v - 1 for v in t.leaves]]
    assert leaf_accuracy(leaf_columns, y, t) == la
    # perfect path scores give 100 everywhere
    perfect = torch.zeros(len(y), t.num_params)
    for n, l in enumerate(y.tolist()):
        leaf = t.leaves[l]
        for v in [leaf, *t.ancestors(leaf)][:-1]:
            perfect[n, v - 1] = 1.0
    assert hierarchical_consistent_accuracy(perfect, y, t) == 100.0
    assert mean_tree_cut_accuracy(perfect, y, t, sample_cuts(t, per_rate=2)) == 100.0


# ----------------------------------------------------------------------------
# losses
# ----------------------------------------------------------------------------
def tiny() -> TaxonomicTree:
    return TaxonomicTree.from_nested("root", {"A": ["a1", "a2"], "c": None})  # params A, a1, a2, c


def test_losses_hand_computed_on_a_tiny_tree():
    t = tiny()
    logits = torch.tensor([[1.0, 0.0, 2.0, 0.0], [0.0, 0.0, 0.0, 3.0]], dtype=torch.float64)
    y = t.labels_of(["a2", "c"])
    sp = lambda x: math.log1p(math.exp(-x))  # -log sigmoid(x)
    root = (sp(1.0) + sp(3.0)) / 2  # A vs c for both samples
    node_a = sp(2.0)  # a2 vs a1, only the sample under A
    assert node_centric_loss(logits, y, t).item() == pytest.approx((root + node_a) / 2)
    coarse = TreeCut.from_names(t, ["A", "c"])
    assert tree_cut_loss(logits, y, t, coarse).item() == pytest.approx((sp(1.0) + sp(3.0)) / 2)
    leaves = TreeCut.from_names(t, ["a1", "a2", "c"])
    expected = ((math.log(2 + math.exp(2.0)) - 2.0) + (math.log(2 + math.exp(3.0)) - 3.0)) / 2
    assert tree_cut_loss(logits, y, t, leaves).item() == pytest.approx(expected)
    g1, g2 = torch.Generator().manual_seed(4), torch.Generator().manual_seed(4)
    total = protect_loss(logits, y, t, weight=0.5, dropout=0.5, generator=g1)
    dtl = dynamic_tree_cut_loss(logits, y, t, dropout=0.5, generator=g2)
    assert total.item() == pytest.approx(dtl.item() + 0.5 * node_centric_loss(logits, y, t).item())


def test_node_centric_loss_is_log2_on_zero_logits_of_a_binary_tree():
    t = balanced7()
    y = torch.tensor([0, 3, 1])
    assert node_centric_loss(torch.zeros(3, t.num_params), y, t).item() == pytest.approx(math.log(2))


def test_leaf_cut_loss_is_the_flat_leaf_cross_entropy():
    t = TaxonomicTree(random_tree(20, 1))
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(16, t.num_params, generator=g)
    y = torch.randint(t.num_labels, (16,), generator=g)
    leaves = TreeCut.from_nodes(t, t.leaves)
    flat = F.cross_entropy(logits[:, [v - 1 for v in t.leaves]], y)
    assert tree_cut_loss(logits, y, t, leaves).item() == pytest.approx(flat.item())


def test_losses_are_nonnegative_with_finite_gradients():
    t = TaxonomicTree(random_tree(25, 3))
    g = torch.Generator().manual_seed(2)
    for scale in (1.0, 30.0):
        logits = (scale * torch.randn(32, t.num_params, generator=g)).requires_grad_()
        y = torch.randint(t.num_labels, (32,), generator=g)
        for loss in (
            node_centric_loss(logits, y, t),
            dynamic_tree_cut_loss(logits, y, t, generator=g),
            protect_loss(logits, y, t, generator=g),
        ):
            assert loss.item() >= 0 and math.isfinite(loss.item())
            (grad,) = torch.autograd.grad(loss, logits)
            assert torch.isfinite(grad).all() and grad.abs().sum() > 0
    # a confident correct prediction drives both losses towards 0
    perfect = torch.zeros(4, t.num_params)
    y = torch.tensor([0, 1, 2, 3])
    for n, l in enumerate(y.tolist()):
        leaf = t.leaves[l]
        for v in [leaf, *t.ancestors(leaf)][:-1]:
            perfect[n, v - 1] = 50.0
    assert node_centric_loss(perfect, y, t).item() < 1e-6
    assert dynamic_tree_cut_loss(perfect, y, t, generator=g).item() < 1e-6


# ----------------------------------------------------------------------------
# bad input
# ----------------------------------------------------------------------------
def test_cycles_and_two_parents_are_rejected():
    with pytest.raises(ValueError, match="edges.*cycle"):
        TaxonomicTree.from_edges([("r", "a"), ("a", "a")])
    with pytest.raises(ValueError, match="edges.*two parents"):
        TaxonomicTree.from_edges([("r", "a"), ("r", "b"), ("a", "x"), ("b", "x")])
    with pytest.raises(ValueError, match="edges.*cycle"):
        TaxonomicTree.from_edges([("r", "a"), ("x", "y"), ("y", "x")])
    with pytest.raises(ValueError, match="edges.*cycle"):
        TaxonomicTree.from_edges([("a", "b"), ("b", "a")])
    with pytest.raises(ValueError, match="edges.*exactly one root"):
        TaxonomicTree.from_edges([("r", "a"), ("s", "b")])
    with pytest.raises(ValueError, match="children.*'x'.*two parents"):
        TaxonomicTree.from_nested("r", {"a": ["x"], "b": ["x"]})
    with pytest.raises(ValueError, match="children.*'r'"):
        TaxonomicTree.from_nested("r", {"a": ["r"]})


def test_folder_cycles_are_rejected(tmp_path):
    root = tmp_path / "world"
    (root / "a" / "b").mkdir(parents=True)
    os.symlink(root / "a", root / "a" / "b" / "loop")
    with pytest.raises(ValueError, match="path.*cycle"):
        TaxonomicTree.from_folder(root)
    with pytest.raises(ValueError, match="path"):
        TaxonomicTree.from_folder(tmp_path / "missing")


def test_labels_not_in_the_tree_are_rejected():
    t = seven()
    scores = torch.zeros(2, t.num_params)
    bad = torch.tensor([0, 4])
    for call in (
        lambda: leaf_accuracy(scores, bad, t),
        lambda: hierarchical_consistent_accuracy(scores, bad, t),
        lambda: mean_tree_cut_accuracy(scores, bad, t, [TreeCut.from_nodes(t, t.leaves)]),
        lambda: node_centric_loss(scores, bad, t),
        lambda: dynamic_tree_cut_loss(scores, bad, t),
        lambda: t.check_labels([-1]),
    ):
        with pytest.raises(ValueError, match="labels must be leaf labels"):
            call()
    with pytest.raises(ValueError, match=r"names\[1\] must be a leaf"):
        t.labels_of(["a1", "B"])  # B is internal
    with pytest.raises(ValueError, match=r"names\[0\] must be a node"):
        TreeCut.from_names(t, ["zebra", "c"])
    with pytest.raises(ValueError, match="scores must have shape"):
        leaf_accuracy(torch.zeros(2, 5), torch.tensor([0, 1]), t)


def test_invalid_cuts_are_rejected():
    t = seven()
    with pytest.raises(ValueError, match="nodes must be a tree cut.*'b1' is covered 2 times"):
        TreeCut.from_names(t, ["A", "b1", "c"])
    with pytest.raises(ValueError, match="nodes must be a tree cut.*'c' is covered 0 times"):
        TreeCut.from_names(t, ["A"])
    with pytest.raises(ValueError, match=r"nodes\[0\]"):
        TreeCut.from_nodes(t, [0])  # the root is never in a cut
    other = TreeCut.from_names(balanced7(), ["A", "B"])  # a cut of another tree
    scores, y = torch.zeros(1, t.num_params), torch.tensor([0])
    with pytest.raises(ValueError, match="cut must be .* of this tree"):
        tree_cut_loss(scores, y, t, other)
    with pytest.raises(ValueError, match=r"cuts\[0\] is not a cut of this tree"):
        mean_tree_cut_accuracy(scores, y, t, [other])
    with pytest.raises(ValueError, match="mapping must send"):
        TreeCut((1, 6), ("A", "c"), (0, 0, 0, 2))


def test_empty_cut_lists_are_rejected(tmp_path):
    t = seven()
    scores, y = torch.zeros(1, t.num_params), torch.tensor([0])
    for call in (
        lambda: mean_tree_cut_accuracy(scores, y, t, []),
        lambda: tree_cut_accuracies(scores, y, t, []),
        lambda: save_cuts(tmp_path / "c.json", [], t),
    ):
        with pytest.raises(ValueError, match="cuts must hold at least one cut"):
            call()
    with pytest.raises(ValueError, match="rates must be a non-empty"):
        sample_cuts(t, rates=[])
    with pytest.raises(ValueError, match="distinct cuts asked for"):
        sample_cuts(t, per_rate=1, rates=(0.5, 0.4, 0.3, 0.2))  # the tree has 3


@pytest.mark.parametrize("p", [0, 1, 0.0, 1.0, -0.1, 1.5, float("nan"), True, "0.5"])
def test_dropout_rates_outside_the_open_unit_interval_are_rejected(p):
    t = seven()
    with pytest.raises(ValueError, match=r"dropout must be a number in the open interval \(0, 1\)"):
        random_cut(t, p)
    with pytest.raises(ValueError, match=r"rates\[1\] must be a number in the open interval"):
        sample_cuts(t, rates=(0.5, p), per_rate=1)
    with pytest.raises(ValueError, match="dropout"):
        dynamic_tree_cut_loss(torch.zeros(1, t.num_params), torch.tensor([0]), t, dropout=p)
