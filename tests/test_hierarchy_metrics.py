"""Hierarchical metrics (MAP, CMAP, CV, top-1 error, per-level mIoU) and the segmentation taxonomies.

The worked examples and their numbers were derived independently of this code (AP by hand and with
scikit-learn 1.9.1); the oracles are torchmetrics and ``hyro_edu.segmentation.evaluation.metric.MeanIoU``.
"""
from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from hyro_edu.hierarchy import metrics as M
from hyro_edu.hierarchy import taxonomies as T
from hyro_edu.hierarchy.trees import Tree

# ----------------------------------------------------------------------------
# the shared example hierarchy H7 and its three rows (worked examples derived independently of this code)
# ----------------------------------------------------------------------------
H7 = [-1, 0, 1, 1, -1, 4, 5]  # 0 "2", 1 "2/1", 2 "2/1/3", 3 "2/1/5", 4 "4", 5 "4/1", 6 "4/1/1"
Y = torch.tensor([[1, 1, 1, 0, 0, 0, 0], [0, 0, 0, 0, 1, 1, 1], [1, 1, 0, 1, 0, 0, 0]])
P = torch.tensor(
    [[0.9, 0.8, 0.3, 0.4, 0.2, 0.1, 0.05], [0.6, 0.2, 0.1, 0.1, 0.6, 0.5, 0.1], [0.3, 0.5, 0.7, 0.1, 0.6, 0.6, 0.2]],
    dtype=torch.float64,
)
NOTE = dict(abs=5e-7)  # the note prints 6 decimals
NOTE4 = dict(abs=5e-5)  # mIoU tables: 4 decimals


def h7_tree() -> Tree:
    """H7 under an extra root "everything": labels = non-root nodes, label i = node i + 1."""
    return Tree(("everything", "2", "2/1", "2/1/3", "2/1/5", "4", "4/1", "4/1/1"), (-1, 0, 1, 2, 2, 0, 5, 6))


def random_forest(n: int, gen: torch.Generator) -> list[int]:
    """A random forest on n labels, relabelled by a random permutation (parents need not precede)."""
    parents = [-1] + [int(torch.randint(-1, i, (1,), generator=gen)) for i in range(1, n)]
    perm = torch.randperm(n, generator=gen).tolist()  # old label i -> new label perm[i]
    out = [0] * n
    for i, p in enumerate(parents):
        out[perm[i]] = -1 if p < 0 else perm[p]
    return out


# ----------------------------------------------------------------------------
# the hierarchy
# ----------------------------------------------------------------------------
def test_h7_pair_counts():
    # note: 5 edges, 8 closure pairs, 15 pairs with the diagonal
    assert len(M.hierarchy_pairs(H7, "edges")) == 5
    assert len(M.hierarchy_pairs(H7, "closure")) == 8
    assert len(M.hierarchy_pairs(H7, "closure_diag")) == 15
    assert {tuple(p) for p in M.hierarchy_pairs(H7, "closure").tolist()} == {
        (0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (4, 5), (4, 6), (5, 6)
    }


def test_tree_labels_are_the_non_root_nodes():
    assert M.label_parents(h7_tree()) == tuple(H7)
    assert torch.equal(M.ancestor_mask(h7_tree()), M.ancestor_mask(H7))
    assert torch.equal(M.ancestor_mask(torch.tensor(H7)), M.ancestor_mask(H7))


def test_ancestor_mask_is_a_partial_order(gen):
    for n in (1, 5, 30):
        a = M.ancestor_mask(random_forest(n, gen)).long()
        assert bool(a.diagonal().all())  # reflexive
        assert bool(((a * a.T) == torch.eye(n, dtype=torch.long)).all())  # antisymmetric
        assert bool(((a @ a > 0).long() <= a).all())  # transitive


# ----------------------------------------------------------------------------
# MAP
# ----------------------------------------------------------------------------
def test_map_examples():
    ap = M.average_precision(P, Y)
    assert float(ap[0]) == pytest.approx(0.916667, **NOTE)  # Ex 1: (1 + 1 + 3/4) / 3
    assert float(ap[0]) == pytest.approx((1 + 1 + 3 / 4) / 3, abs=1e-15)
    assert float(ap[1]) == pytest.approx(0.531746, **NOTE)  # Ex 2: ties at 0.6 and 0.1
    assert float(ap[2]) == pytest.approx(0.359524, **NOTE)
    assert M.mean_average_precision(P, Y) == pytest.approx(0.602646, **NOTE)  # Ex 3


def test_map_ties_are_one_threshold():
    # Ex 2: thresholds 0.6 -> (P, R) = (1/2, 1/3); 0.5 -> (2/3, 2/3); 0.1 -> (3/7, 1)
    expected = (1 / 3) * (1 / 2) + (1 / 3) * (2 / 3) + (1 / 3) * (3 / 7)
    assert float(M.average_precision(P[1:2], Y[1:2])) == pytest.approx(expected, abs=1e-15)


def test_micro_ap_contrast():
    # C-HMCNN's micro-averaged AP (all rows pooled) is 0.622928 on rows 1-3, not the MAP
    pooled = M.average_precision(P.reshape(1, -1), Y.reshape(1, -1))
    assert float(pooled) == pytest.approx(0.622928, **NOTE)


def test_rows_without_positives_are_skipped():
    scores = torch.cat([P, torch.rand(1, 7, dtype=torch.float64)])
    labels = torch.cat([Y, torch.zeros(1, 7, dtype=torch.long)])
    assert math.isnan(float(M.average_precision(scores, labels)[-1]))
    assert M.mean_average_precision(scores, labels) == M.mean_average_precision(P, Y)


def test_ap_against_torchmetrics_without_ties(gen):
    from torchmetrics.functional import retrieval  # a test dependency: the oracle must be there
    s = torch.rand(40, 15, generator=gen, dtype=torch.float64)
    y = torch.rand(40, 15, generator=gen) < 0.3
    y[:, 0] = True
    ours = M.average_precision(s, y)
    ref = torch.stack([retrieval.retrieval_average_precision(s[i], y[i]) for i in range(40)]).double()
    torch.testing.assert_close(ours, ref, rtol=1e-6, atol=1e-6)  # torchmetrics works in float32


def test_ap_against_torchmetrics_with_ties(gen):
    # ties: per-row binary AP over distinct thresholds (precision-recall curve) is the same convention
    from torchmetrics.functional import classification  # a test dependency
    s = (torch.rand(40, 15, generator=gen, dtype=torch.float64) * 4).round() / 4
    y = (torch.rand(40, 15, generator=gen) < 0.3).long()
    y[:, 3] = 1
    ours = M.average_precision(s, y)
    ref = torch.stack([classification.binary_average_precision(s[i], y[i]) for i in range(40)]).double()
    torch.testing.assert_close(ours, ref, rtol=1e-6, atol=1e-6)


@given(st.integers(0, 2**31 - 1))
def test_map_properties(seed):
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(6, 9, generator=g, dtype=torch.float64)
    y = torch.rand(6, 9, generator=g) < 0.4
    y[0, 0] = True
    value = M.mean_average_precision(s, y)
    assert 0.0 <= value <= 1.0
    # invariant under strictly increasing maps (ties stay ties)
    assert M.mean_average_precision(torch.exp(3 * s), y) == pytest.approx(value, abs=1e-12)
    # 1 iff every positive outscores every negative
    assert M.mean_average_precision(s + 10 * y, y) == pytest.approx(1.0, abs=1e-12)


# ----------------------------------------------------------------------------
# CMAP
# ----------------------------------------------------------------------------
def test_cmap_ex1_masked_row3():
    low, high = M.ancestor_min(P[2:], H7), M.descendant_max(P[2:], H7)
    torch.testing.assert_close(low, torch.tensor([[0.3, 0.3, 0.3, 0.1, 0.6, 0.6, 0.2]], dtype=torch.float64))
    torch.testing.assert_close(high, torch.tensor([[0.7, 0.7, 0.7, 0.1, 0.6, 0.6, 0.2]], dtype=torch.float64))
    assert float(M.average_precision(low, Y[2:])) == pytest.approx(0.409524, **NOTE)
    assert float(M.average_precision(high, Y[2:])) == pytest.approx(0.587302, **NOTE)


@pytest.mark.parametrize("log", [False, True], ids=["probabilities", "log-probabilities"])
def test_cmap_ex2_masked(log):
    s = P.log() if log else P
    assert M.mean_average_precision(M.ancestor_min(s, H7), Y) == pytest.approx(0.619312, **NOTE)
    assert M.mean_average_precision(M.descendant_max(s, H7), Y) == pytest.approx(0.678571, **NOTE)
    assert M.coherent_mean_average_precision(s, Y, H7) == pytest.approx(0.678571, **NOTE)
    assert M.coherent_mean_average_precision(s, Y, h7_tree()) == pytest.approx(0.678571, **NOTE)


def test_cmap_ex3_zero_fill_depends_on_the_score_type():
    low = M.ancestor_min(P, H7, fill="zero")
    assert bool((low == 0).all())  # probabilities: every label has a non-member, so the min is 0
    assert M.mean_average_precision(low, Y) == pytest.approx(0.428571, **NOTE)  # 3 of 7 tied
    assert M.coherent_mean_average_precision(P, Y, H7, fill="zero") == pytest.approx(0.678571, **NOTE)
    high = M.descendant_max(P.log(), H7, fill="zero")
    assert bool((high == 0).all())  # log-probabilities: the max is (-)0
    assert M.mean_average_precision(high, Y) == pytest.approx(0.428571, **NOTE)
    assert M.coherent_mean_average_precision(P.log(), Y, H7, fill="zero") == pytest.approx(0.619312, **NOTE)


@given(st.integers(0, 2**31 - 1))
def test_coherent_corrections_properties(seed):
    g = torch.Generator().manual_seed(seed)
    h = random_forest(12, g)
    s = torch.randn(5, 12, generator=g, dtype=torch.float64)
    low, high = M.ancestor_min(s, h), M.descendant_max(s, h)
    # the definition, computed directly with the ancestor mask (+inf / -inf for non-members)
    a = M.ancestor_mask(h)
    inf = torch.tensor(math.inf, dtype=torch.float64)
    torch.testing.assert_close(low, torch.where(a[None], s[:, None, :], inf).amin(-1), rtol=0, atol=0)
    torch.testing.assert_close(high, torch.where(a.T[None], s[:, None, :], -inf).amax(-1), rtol=0, atol=0)
    assert bool((low <= s).all()) and bool((s <= high).all())
    torch.testing.assert_close(M.ancestor_min(low, h), low, rtol=0, atol=0)  # idempotent
    torch.testing.assert_close(M.descendant_max(high, h), high, rtol=0, atol=0)
    for pairs in M.CV_PAIRS:
        if len(M.hierarchy_pairs(h, pairs)):
            assert M.constraint_violation(low, h, pairs=pairs) == 0.0
            assert M.constraint_violation(high, h, pairs=pairs) == 0.0
    # box-mlc's zero fill is exact for min on scores <= 0 and for max on scores >= 0
    neg, pos = -s.abs(), s.abs()
    torch.testing.assert_close(M.ancestor_min(neg, h, fill="zero"), M.ancestor_min(neg, h), rtol=0, atol=0)
    torch.testing.assert_close(M.descendant_max(pos, h, fill="zero"), M.descendant_max(pos, h), rtol=0, atol=0)
    y = torch.rand(5, 12, generator=g) < 0.5
    y[0, 0] = True
    # masked CMAP: the same on probabilities and log-probabilities (any increasing map)
    prob = torch.sigmoid(s)
    assert M.coherent_mean_average_precision(prob, y, h) == pytest.approx(
        M.coherent_mean_average_precision(prob.log(), y, h), abs=1e-12
    )
    assert 0.0 <= M.coherent_mean_average_precision(s, y, h) <= 1.0


# ----------------------------------------------------------------------------
# CV
# ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "pairs, ex2, ex3",
    [("edges", 2 / 5, 2 / 15), ("closure", 3 / 8, 3 / 24), ("closure_diag", 3 / 15, 3 / 45)],
)
def test_cv_table(pairs, ex2, ex3):
    assert M.constraint_violation(P[:1], H7, pairs=pairs) == 0.0  # Ex 1: row 1 is coherent
    assert M.constraint_violation(P[2:], H7, pairs=pairs) == pytest.approx(ex2, abs=1e-15)
    assert M.constraint_violation(P, H7, pairs=pairs) == pytest.approx(ex3, abs=1e-15)
    assert M.constraint_violation(P, h7_tree(), pairs=pairs) == pytest.approx(ex3, abs=1e-15)
    # the note's rounded values
    rounded = {"edges": (0.400, 0.1333), "closure": (0.375, 0.125), "closure_diag": (0.200, 0.0667)}[pairs]
    assert round(M.constraint_violation(P[2:], H7, pairs=pairs), 3) == rounded[0]
    assert round(M.constraint_violation(P, H7, pairs=pairs), 4) == rounded[1]


def test_cv_ex2_violated_pairs_and_tie():
    # row 3: violations (0,1), (1,2), (0,2); the tie (4,5) does not count
    pairs = M.hierarchy_pairs(H7, "closure")
    s = P[2]
    violated = {tuple(p) for p in pairs.tolist() if s[p[1]] > s[p[0]]}
    assert violated == {(0, 1), (1, 2), (0, 2)}
    assert s[4] == s[5]
    assert M.constraint_violation(P[2:], H7, pairs="closure") * 8 == pytest.approx(3)


@given(st.integers(0, 2**31 - 1))
def test_cv_invariant_under_increasing_maps(seed):
    g = torch.Generator().manual_seed(seed)
    h = random_forest(10, g)
    s = torch.rand(8, 10, generator=g, dtype=torch.float64)
    for pairs in M.CV_PAIRS:
        if not len(M.hierarchy_pairs(h, pairs)):
            continue
        cv = M.constraint_violation(s, h, pairs=pairs)
        assert 0.0 <= cv <= 1.0
        assert M.constraint_violation(s.log(), h, pairs=pairs) == cv
        assert M.constraint_violation(s**3 - 2, h, pairs=pairs) == cv


# ----------------------------------------------------------------------------
# top-1 error
# ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "logits, y, error",
    [
        ([[2, 1, 0.5, -1], [0.1, 0.3, 0.2, 0], [1, 1, 0, 0]], [0, 2, 1], 200 / 3),  # 66.67 %
        ([[0, 0, 5, 0], [3, 2, 1, 0]], [2, 0], 0.0),
        ([[0.2, 0.5, 0.1, 0.9], [0.7, 0.1, 0.1, 0.1], [0.3, 0.3, 0.3, 0.1], [0, 0, 0, 1]], [3, 1, 0, 3], 25.0),
    ],
)
def test_top1_error_examples(logits, y, error):
    assert M.top1_error(torch.tensor(logits), torch.tensor(y)) == pytest.approx(error, abs=1e-12)


def test_top1_ties_go_to_the_lowest_index():
    assert M.top1_error(torch.tensor([[1.0, 1.0, 0.0]]), torch.tensor([0])) == 0.0
    assert M.top1_error(torch.tensor([[1.0, 1.0, 0.0]]), torch.tensor([1])) == 100.0


# ----------------------------------------------------------------------------
# per-level mIoU: the note's tables
# ----------------------------------------------------------------------------
CITYSCAPES = [
    ([0, 1, 13, 11, 255, 10, 8, 5], [1, 1, 14, 12, 13, 10, 9, 7], (0.1364, 1.0)),
    ([0, 0, 0, 13, 13, 13, 11, 2], [0, 0, 1, 13, 13, 15, 11, 3], (0.3333, 1.0)),
    ([10, 10, 8, 9, 2, 3, 17, 18], [10, 8, 8, 8, 2, 2, 18, 17], (0.1905, 0.7917)),
]
LIP = [
    ([0, 0, 2, 13, 5, 9, 9, 18], [0, 2, 2, 13, 6, 9, 12, 19], (0.2778, 0.7500, 0.6786)),
    ([0, 5, 5, 14, 15, 16, 17, 0], [0, 5, 7, 15, 14, 17, 16, 5], (0.1190, 0.7667, 0.6786)),
    ([0, 0, 0, 2, 13, 5, 9, 255], [0, 0, 13, 2, 13, 9, 9, 0], (0.5333, 0.5556, 0.7333)),
]
PPP = [
    ([0, 1, 2, 2, 3, 4, 5, 6], [0, 1, 2, 3, 3, 4, 6, 5], (0.5714, 1.0, 1.0)),
    ([0, 0, 0, 2, 2, 5, 5, 255], [0, 2, 0, 2, 5, 5, 0, 1], (0.3889, 0.3889, 0.5500)),
    ([1, 1, 2, 3, 4, 0, 0, 6], [2, 1, 2, 4, 3, 0, 6, 6], (0.3333, 0.6667, 0.6786)),
]
TOY = [  # last entry: mIoU^1 with 255 ignored instead of a class
    ([255, 255, 0, 0, 1, 6, 19, 255], [255, 0, 0, 1, 1, 12, 19, 255], (0.4167, 0.4833, 0.8222), 0.4000),
    ([255, 2, 2, 20, 20, 40, 255, 255], [255, 2, 8, 21, 21, 41, 41, 255], (0.1667, 0.5333, 0.7917), 0.0833),
    ([30, 30, 31, 255, 53, 53, 48, 255], [30, 31, 31, 31, 47, 53, 48, 255], (0.4722, 0.4792, 0.7500), 0.5000),
]


def test_level_maps_are_the_notes():
    assert T.cityscapes_levels().level_map(2) == (0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 4, 5, 5, 6, 6, 6, 6, 6, 6)
    lip = T.lip_levels()
    assert lip.level_map(2) == (0, 1, 1, 1, 1, 1, 1, 1, 2, 2, 1, 1, 2, 1, 1, 1, 2, 2, 2, 2)
    assert lip.level_map(3) == (0,) + (1,) * 19
    ppp = T.pascal_person_part_levels()
    assert ppp.level_map(2) == (0, 1, 1, 1, 1, 2, 2)
    assert ppp.level_map(3) == (0, 1, 1, 1, 1, 1, 1)
    toy = T.toyworld_levels()
    assert toy.level_map(1) == tuple(range(55))
    assert toy.level_map(2) == tuple(k // 6 for k in range(54)) + (9,)
    assert toy.level_map(3) == tuple(k // 18 for k in range(54)) + (3,)
    for tax in (T.cityscapes_levels(), lip, ppp, toy):
        assert tax.level_map(1) == tuple(range(tax.num_classes(1)))


@pytest.mark.parametrize("gt, pred, expected", CITYSCAPES)
def test_miou_cityscapes(gt, pred, expected):
    tax = T.cityscapes_levels()
    got = [M.level_mean_iou(torch.tensor(pred), torch.tensor(gt), m) for m in tax.level_maps]
    assert got == pytest.approx(list(expected), **NOTE4)


@pytest.mark.parametrize("gt, pred, expected", LIP)
def test_miou_lip(gt, pred, expected):
    tax = T.lip_levels()
    got = [M.level_mean_iou(torch.tensor(pred), torch.tensor(gt), m) for m in tax.level_maps]
    assert got == pytest.approx(list(expected), **NOTE4)


@pytest.mark.parametrize("gt, pred, expected", PPP)
def test_miou_pascal_person_part(gt, pred, expected):
    tax = T.pascal_person_part_levels()
    got = [M.level_mean_iou(torch.tensor(pred), torch.tensor(gt), m) for m in tax.level_maps]
    assert got == pytest.approx(list(expected), **NOTE4)


@pytest.mark.parametrize("gt, pred, expected, ignored", TOY)
def test_miou_toy(gt, pred, expected, ignored):
    tax = T.toyworld_levels()
    gt_c, pred_c = T.toyworld_pixel_classes(torch.tensor(gt)), T.toyworld_pixel_classes(torch.tensor(pred))
    got = [M.level_mean_iou(pred_c, gt_c, m, ignore_index=tax.ignore_index) for m in tax.level_maps]
    assert got == pytest.approx(list(expected), **NOTE4)
    # the note's last column: background 255 ignored instead of being a class
    assert M.level_mean_iou(torch.tensor(pred), torch.tensor(gt), tuple(range(54))) == pytest.approx(ignored, **NOTE4)


def test_own_channels_and_combined_children():
    # level_pred="own_channels": pred is already a level class; same numbers as mapping the leaves
    tax = T.lip_levels()
    gt, pred, _ = LIP[0]
    m2 = tax.level_map(2)
    mapped = torch.tensor([m2[k] for k in pred])
    assert M.level_mean_iou(mapped, torch.tensor(gt), m2, level_pred="own_channels") == M.level_mean_iou(
        torch.tensor(pred), torch.tensor(gt), m2
    )
    # summing children's probabilities keeps a distribution, and its argmax can differ from the
    # mapped leaf argmax: leaves (0.4, 0.3, 0.3), parents {0}, {1, 2} -> 0.4 vs 0.6
    probs = torch.tensor([[0.4, 0.3, 0.3]])
    level = M.combine_children(probs, [0, 1, 1])
    torch.testing.assert_close(level, torch.tensor([[0.4, 0.6]]))
    assert int(level.argmax(1)) == 1 and [0, 1, 1][int(probs.argmax(1))] == 0


def test_combine_children_keeps_the_total(gen):
    tax = T.cityscapes_levels()
    logits = torch.randn(2, 19, 4, 5, generator=gen, dtype=torch.float64)
    probs = logits.softmax(1)
    level = M.combine_children(probs, tax.level_map(2), dim=1)
    assert level.shape == (2, 7, 4, 5)
    torch.testing.assert_close(level.sum(1), torch.ones(2, 4, 5, dtype=torch.float64))
    # a parent with one child (sky) keeps that child's probability
    torch.testing.assert_close(level[:, 4], probs[:, 10])


def test_miou_against_meaniou_and_torchmetrics(gen):
    from torchmetrics.functional import classification  # a test dependency
    from hyro_edu.segmentation.evaluation.metric import MeanIoU

    for _ in range(5):
        target = torch.randint(0, 8, (3, 20, 20), generator=gen)  # class 8 only ever predicted
        target[torch.rand(3, 20, 20, generator=gen) < 0.1] = 255
        target[target == 5] = 4  # class 5 in neither: left out of the mean
        pred = torch.randint(0, 9, (3, 20, 20), generator=gen)
        pred[pred == 5] = 6
        ours = M.mean_iou(pred, target, 9)
        ref = MeanIoU(9, average="union_present")
        ref.update(pred[:1], target[:1])
        ref.update(pred[1:], target[1:])  # accumulated in parts
        assert ours == pytest.approx(ref.compute()["miou"], abs=1e-12)
        jaccard = classification.multiclass_jaccard_index(pred, target, 9, average="macro", ignore_index=255)
        assert ours == pytest.approx(float(jaccard), abs=1e-6)
        assert M.level_mean_iou(pred, target, tuple(range(9))) == ours


def test_confusion_matrices_add_up(gen):
    pred = torch.randint(0, 6, (200,), generator=gen)
    target = torch.randint(0, 6, (200,), generator=gen)
    whole = M.confusion_matrix(pred, target, 6)
    parts = M.confusion_matrix(pred[:70], target[:70], 6) + M.confusion_matrix(pred[70:], target[70:], 6)
    assert torch.equal(whole, parts) and int(whole.sum()) == 200


# ----------------------------------------------------------------------------
# the taxonomies
# ----------------------------------------------------------------------------
def test_toy_taxonomy_agrees_with_toyworld():
    from hyro_edu.data import toyworld

    world = toyworld.ToyWorld(32)
    tree = T.toyworld_hierarchy()
    assert tree == world.taxonomy
    assert len(tree) == 67 and len(M.label_parents(tree)) == 66
    assert T.TOYWORLD_FAMILIES == toyworld.FAMILIES
    assert T.TOYWORLD_COLOURS == tuple(toyworld.COLOURS)
    assert T.TOYWORLD_BACKGROUND == toyworld.BACKGROUND
    levels = T.toyworld_levels()
    assert levels.class_names[:54] == world.class_names and levels.class_names[54] == "background"
    m2, m3 = levels.level_map(2), levels.level_map(3)
    for k in range(world.num_classes):
        assert levels.class_nodes[k] == world.node_of(k)
        assert levels.level_names(2)[m2[k]] == world.shape_of(k)
        assert levels.level_names(3)[m3[k]] == world.family_of(k)


def test_toyworld_pixel_classes_on_a_scene():
    from hyro_edu.data import toyworld

    scene = toyworld.ToyWorld(32).scene(0)
    classes = T.toyworld_pixel_classes(scene.mask)
    assert torch.equal(classes == 54, scene.mask == toyworld.BACKGROUND)
    assert torch.equal(classes[scene.mask != 255], scene.mask[scene.mask != 255])


def test_taxonomy_trees():
    city = T.cityscapes_levels()
    assert city.class_names == T.CITYSCAPES_CLASSES
    assert city.level_names(2) == tuple(T.CITYSCAPES_CATEGORIES)
    for cat, members in T.CITYSCAPES_CATEGORIES.items():
        for name in members:
            assert city.level_names(2)[city.level_map(2)[T.CITYSCAPES_CLASSES.index(name)]] == cat
    lip = T.lip_levels()
    assert lip.class_names == T.LIP_CLASSES and lip.level_names(3) == ("background", "human")
    ppp = T.pascal_person_part_levels()
    assert ppp.class_names == T.PASCAL_PERSON_PART_CLASSES
    for tax in (city, lip, ppp, T.toyworld_levels()):
        # each coarser level groups the finer one: the maps compose
        for level in range(2, tax.num_levels):
            fine, coarse = tax.level_map(level), tax.level_map(level + 1)
            for k in range(tax.num_classes(1)):
                for j in range(tax.num_classes(1)):
                    if fine[k] == fine[j]:
                        assert coarse[k] == coarse[j]


# ----------------------------------------------------------------------------
# bad input
# ----------------------------------------------------------------------------
def test_bad_input_errors():
    with pytest.raises(ValueError, match="labels must have the shape of scores"):
        M.mean_average_precision(P, Y[:, :6])
    with pytest.raises(ValueError, match="labels must hold 0/1"):
        M.mean_average_precision(P, Y * 2)
    with pytest.raises(ValueError, match="scores must not contain NaN"):
        M.mean_average_precision(torch.full((1, 3), math.nan), [[1, 0, 0]])
    with pytest.raises(ValueError, match="at least one row with a positive"):
        M.mean_average_precision(P, torch.zeros_like(Y))
    with pytest.raises(ValueError, match="scores must have one column per label"):
        M.constraint_violation(P[:, :6], H7)
    with pytest.raises(ValueError, match="hierarchy .* must be a forest"):
        M.constraint_violation(P[:, :3], [1, 2, 0])
    with pytest.raises(ValueError, match=r"hierarchy .* integers in \[-1, 2\]"):
        M.ancestor_min(P[:, :3], [-1, 0, 3])
    with pytest.raises(ValueError, match=r"parents\[1\] = 1"):
        M.label_parents([-1, 1])
    with pytest.raises(ValueError, match="pairs must be one of"):
        M.constraint_violation(P, H7, pairs="all")
    with pytest.raises(ValueError, match="fill must be one of"):
        M.coherent_mean_average_precision(P, Y, H7, fill="inf")
    with pytest.raises(ValueError, match="scores must be finite with fill='zero'"):
        M.ancestor_min(P.log() - torch.tensor([math.inf] + [0.0] * 6, dtype=torch.float64), H7, fill="zero")
    with pytest.raises(ValueError, match=r"targets must be class indices in \[0, 3\]"):
        M.top1_error(torch.zeros(2, 4), torch.tensor([0, 4]))
    with pytest.raises(ValueError, match="targets must be integer class indices of shape"):
        M.top1_error(torch.zeros(2, 4), torch.tensor([0, 1, 2]))


def test_bad_segmentation_input_errors():
    with pytest.raises(ValueError, match="level_map must have one entry per class"):
        M.combine_children(torch.rand(1, 19, 2, 2), T.lip_levels().level_map(2))
    with pytest.raises(ValueError, match=r"target must be in \[0, 6\] \(the length of level_map\)"):
        M.level_mean_iou(torch.tensor([0, 1]), torch.tensor([0, 9]), (0, 1, 1, 1, 1, 2, 2))
    with pytest.raises(ValueError, match=r"pred must hold finest-level classes in \[0, 6\]"):
        M.level_mean_iou(torch.tensor([0, 9]), torch.tensor([0, 1]), (0, 1, 1, 1, 1, 2, 2))
    with pytest.raises(ValueError, match=r"pred must hold class indices in \[0, 2\]"):
        M.level_mean_iou(torch.tensor([0, 5]), torch.tensor([0, 1]), (0, 1, 1, 1, 1, 2, 2), level_pred="own_channels")
    with pytest.raises(ValueError, match="level_pred must be one of"):
        M.level_mean_iou(torch.tensor([0]), torch.tensor([0]), (0,), level_pred="summed")
    with pytest.raises(ValueError, match="pred and target must have the same shape"):
        M.level_mean_iou(torch.tensor([0, 1, 1]), torch.tensor([0, 1]), (0, 1))
    with pytest.raises(ValueError, match=r"target must hold class indices in \[0, 3\] or ignore_index=255"):
        M.mean_iou(torch.tensor([0, 1]), torch.tensor([0, 7]), 4)
    with pytest.raises(ValueError, match="level_map must hold level class indices >= 0"):
        M.map_to_level(torch.tensor([0]), (0, -1))
    with pytest.raises(ValueError, match="labels must hold integer class indices"):
        M.map_to_level(torch.tensor([0.0]), (0, 1))
    with pytest.raises(ValueError, match=r"level must be an integer in \[1, 2\]"):
        T.cityscapes_levels().level_map(3)
    with pytest.raises(ValueError, match="exactly one ancestor-or-self of every class"):
        tax = T.pascal_person_part_levels()
        T.LevelTaxonomy(tax.tree, tax.class_nodes, (tax.class_nodes, tax.level_nodes[1][:2]))
    with pytest.raises(ValueError, match=r"mask must hold leaf classes in \[0, 53\] or 255"):
        T.toyworld_pixel_classes(torch.tensor([54]))
