r"""Hierarchical evaluation: MAP, CMAP, constraint violation, top-1 error and per-level mIoU.

.. math::
    \mathrm{AP}(s, y) = \sum_k (R_k - R_{k-1})\, P_k, \qquad
    \mathrm{CV} = \frac{1}{|D|\,|T|} \sum_{k=1}^{|D|} \sum_{(v_i, v_j) \in T}
        \mathbb{1}\big(s^{(k)}_i - s^{(k)}_j < 0\big), \qquad
    \mathrm{mIoU}^l = \frac{1}{|C_l|} \sum_{c \in C_l} \frac{TP_c}{TP_c + FP_c + FN_c}

These are the metrics of HVSA :cite:`hvsa` (Sec. 5 and appendix B.2, Eqs. 15-16): MAP, CMAP
and CV for hierarchical multi-label classification (taken there from Patel et al. :cite:`patel2022boxmlc`,
whose released code is the repository ``iesl/box-mlc-iclr-2022``), top-1 error for
tieredImageNet-H, and mIoU per hierarchy level for segmentation (taken there from HSSN,
Li et al. :cite:`li2022hssn`).

**Hierarchies.** Every function that needs the label order takes ``hierarchy``, either

* a :class:`~hyro_edu.hierarchy.trees.Tree`: the labels are its **non-root nodes**, label ``i``
  is node ``i + 1`` (the root is "everything" and never a label; the toy world's 66 image-level
  labels are the 66 non-root nodes of its 67-node taxonomy); or
* a parents array (sequence or 1-d integer tensor) of length ``L``: ``parents[i]`` is the parent
  label of label ``i``, ``-1`` for a top-level label. It must be a forest (no cycles). HVSA's
  ImCLEF07 hierarchies are such forests (the root is not a label).

Pairs are written ``(general, specific)``: ``(ancestor, descendant)``. Eq. 15 is read with
``(v_i, v_j) = (general, specific)``: a pair is violated when the specific label scores
**strictly** higher than the general one (ties are not violations).

**MAP** (:func:`mean_average_precision`) is box-mlc's instance-wise ``MeanAvgPrecision``: one AP
per row (instance) over the labels, averaged over the rows. Tied scores form one threshold (as in
scikit-learn's ``average_precision_score``); rows without a positive label are skipped (a choice:
their AP is undefined).

**CMAP** (:func:`coherent_mean_average_precision`, Eq. 16) is the larger MAP of the two coherent
corrections :math:`\delta^m(s)_i = \min_{j \in \mathrm{Anc}(i)\cup\{i\}} s_j` (:func:`ancestor_min`)
and :math:`\delta^M(s)_i = \max_{j \in \mathrm{Des}(i)\cup\{i\}} s_j` (:func:`descendant_max`).

**Per-level mIoU** (:func:`level_mean_iou`) is the confusion-matrix mIoU of the whole split on
labels mapped to level ``l`` by a *level map* (finest class index -> level-``l`` class index, from
:mod:`hyro_edu.hierarchy.taxonomies`). Level 1 is the finest level.

The module is one concept, evaluation against a label hierarchy (HVSA's appendix B.2), and stays
one module (about 600 lines, most of them docstrings): the metrics share the hierarchy
conventions and input checks above.
"""
from __future__ import annotations

from numbers import Integral
from typing import Optional, Sequence, Union

import torch

from hyro_edu.core import checks as _checks
from hyro_edu.hierarchy.trees import Tree

__all__ = [
    "CMAP_FILLS",
    "CV_PAIRS",
    "LEVEL_PREDS",
    "label_parents",
    "ancestor_mask",
    "hierarchy_pairs",
    "average_precision",
    "mean_average_precision",
    "ancestor_min",
    "descendant_max",
    "coherent_mean_average_precision",
    "constraint_violation",
    "top1_error",
    "confusion_matrix",
    "iou_from_confusion",
    "mean_iou",
    "map_to_level",
    "combine_children",
    "level_mean_iou",
]

Hierarchy = Union[Tree, Sequence[int], torch.Tensor]

#: How :func:`ancestor_min` / :func:`descendant_max` treat the labels outside the ancestor
#: (descendant) set: ``"masked"`` leaves them out, ``"zero"`` counts them as 0 (box-mlc's code).
CMAP_FILLS = ("masked", "zero")
#: Which pairs :func:`constraint_violation` counts: ``"closure_diag"`` (every ancestor-descendant
#: pair plus every ``(i, i)``, box-mlc's code), ``"closure"`` (ancestor-descendant pairs),
#: ``"edges"`` (parent-child pairs).
CV_PAIRS = ("closure_diag", "closure", "edges")
#: What :func:`level_mean_iou` receives as ``pred``: ``"mapped_leaf"`` (finest-level classes,
#: mapped like the ground truth) or ``"own_channels"`` (classes of the level itself).
LEVEL_PREDS = ("mapped_leaf", "own_channels")


# ----------------------------------------------------------------------------
# the hierarchy as a partial order on the labels
# ----------------------------------------------------------------------------
def label_parents(hierarchy: Hierarchy) -> tuple[int, ...]:
    """The parents array of the labels: ``p[i]`` is the parent label of label ``i``, ``-1`` at the top.

    For a :class:`~hyro_edu.hierarchy.trees.Tree` the labels are the non-root nodes (label ``i``
    is node ``i + 1``), so the root's children become top-level labels. A parents array is
    returned as a tuple after checking that it is a forest: integers in ``[-1, L - 1]``, no label
    its own ancestor.
    """
    if isinstance(hierarchy, Tree):
        if len(hierarchy) < 2:
            raise ValueError("hierarchy (a Tree) must have at least one node besides the root (the labels)")
        return tuple(p - 1 if p > 0 else -1 for p in hierarchy.parents[1:])
    if isinstance(hierarchy, torch.Tensor):
        if hierarchy.dim() != 1 or hierarchy.is_floating_point() or hierarchy.dtype == torch.bool:
            raise ValueError(
                "hierarchy (a parents array) must be a 1-d integer tensor or a sequence of integers, "
                f"got a {hierarchy.dtype} tensor of shape {tuple(hierarchy.shape)}"
            )
        hierarchy = hierarchy.tolist()
    if isinstance(hierarchy, (str, bytes)) or not isinstance(hierarchy, Sequence) or len(hierarchy) == 0:
        raise ValueError(
            "hierarchy must be a hyro_edu.hierarchy.trees.Tree or a non-empty parents array "
            f"(-1 for a top-level label), got {hierarchy!r}"
        )
    n = len(hierarchy)
    parents = []
    for i, p in enumerate(hierarchy):
        if isinstance(p, bool) or not isinstance(p, Integral) or not -1 <= p < n or p == i:
            raise ValueError(
                f"hierarchy (a parents array) must hold integers in [-1, {n - 1}] with parents[i] != i; "
                f"got parents[{i}] = {p!r}"
            )
        parents.append(int(p))
    # a forest: walking up from any label reaches -1 within n steps
    for i in range(n):
        j, steps = i, 0
        while j >= 0:
            j, steps = parents[j], steps + 1
            if steps > n:
                raise ValueError(
                    f"hierarchy (a parents array) must be a forest, but label {i} lies on a cycle or "
                    f"below one (parents = {parents})"
                )
    return tuple(parents)


def ancestor_mask(hierarchy: Hierarchy) -> torch.Tensor:
    r"""``M (L, L)`` bool with :math:`M_{ij} = [\,j \in \mathrm{Anc}(i) \cup \{i\}\,]`.

    Reflexive, antisymmetric and transitive (the closure with its diagonal); ``M.T`` is the
    descendant-or-self relation.
    """
    parents = label_parents(hierarchy)
    n = len(parents)
    mask = torch.eye(n, dtype=torch.bool)
    for i in range(n):
        j = parents[i]
        while j >= 0:
            mask[i, j] = True
            j = parents[j]
    return mask


def hierarchy_pairs(hierarchy: Hierarchy, pairs: str = "closure_diag") -> torch.Tensor:
    """``(P, 2)`` long tensor of ``(general, specific)`` label pairs, sorted.

    ``pairs`` is one of :data:`CV_PAIRS`: ``"edges"`` the ``(parent, child)`` pairs (``L`` minus
    the number of top-level labels), ``"closure"`` every ``(ancestor, descendant)`` pair,
    ``"closure_diag"`` those plus the ``L`` pairs ``(i, i)``.
    """
    _checks.choice(pairs, "pairs", CV_PAIRS)
    if pairs == "edges":
        parents = label_parents(hierarchy)
        out = sorted((p, i) for i, p in enumerate(parents) if p >= 0)
        return torch.tensor(out, dtype=torch.long).reshape(-1, 2)
    relation = ancestor_mask(hierarchy).T.clone()  # [g, s]: g is an ancestor-or-self of s
    if pairs == "closure":
        relation.fill_diagonal_(False)
    return relation.nonzero()


# ----------------------------------------------------------------------------
# input checks
# ----------------------------------------------------------------------------
def _scores(scores, name: str = "scores") -> torch.Tensor:
    """A float64 ``(N, L)`` tensor without NaN (infinities allowed: log-probabilities of 0)."""
    if not isinstance(scores, torch.Tensor):
        try:
            scores = torch.as_tensor(scores, dtype=torch.float64)
        except (TypeError, ValueError, RuntimeError):
            raise ValueError(f"{name} must be a (N, L) tensor of scores, got {type(scores).__name__}") from None
    if not scores.is_floating_point():
        scores = scores.double()
    if scores.dim() != 2 or scores.shape[0] == 0 or scores.shape[1] == 0:
        raise ValueError(f"{name} must have shape (N, L) with N, L >= 1, got {tuple(scores.shape)}")
    if bool(torch.isnan(scores).any()):
        raise ValueError(f"{name} must not contain NaN")
    return scores.detach().double()


def _binary(labels, scores: torch.Tensor, name: str = "labels") -> torch.Tensor:
    """A bool tensor of the shape of ``scores`` from 0/1 (or bool) labels."""
    labels = torch.as_tensor(labels)
    if tuple(labels.shape) != tuple(scores.shape):
        raise ValueError(
            f"{name} must have the shape of scores, {tuple(scores.shape)}, got {tuple(labels.shape)}"
        )
    if labels.dtype != torch.bool:
        if not bool(((labels == 0) | (labels == 1)).all()):
            raise ValueError(f"{name} must hold 0/1 (or bool) values, got values outside {{0, 1}}")
        labels = labels != 0
    return labels


def _with_hierarchy(scores: torch.Tensor, hierarchy: Hierarchy) -> tuple[int, ...]:
    parents = label_parents(hierarchy)
    if scores.shape[1] != len(parents):
        raise ValueError(
            f"scores must have one column per label of the hierarchy, {len(parents)}, "
            f"got shape {tuple(scores.shape)}"
        )
    return parents


def _labels(x, name: str) -> torch.Tensor:
    x = torch.as_tensor(x)
    if x.is_floating_point() or x.is_complex() or x.dtype == torch.bool:
        raise ValueError(f"{name} must hold integer class indices, got dtype {x.dtype}")
    return x.reshape(-1).long()


def _level_map(level_map, name: str = "level_map") -> torch.Tensor:
    m = torch.as_tensor(level_map)
    if m.dim() != 1 or m.numel() == 0 or m.is_floating_point() or m.dtype == torch.bool:
        raise ValueError(
            f"{name} must be a non-empty 1-d sequence of integers (finest class -> level class), "
            f"got {m.dtype} of shape {tuple(m.shape)}"
        )
    if int(m.min()) < 0:
        raise ValueError(f"{name} must hold level class indices >= 0, got {int(m.min())}")
    return m.long()


# ----------------------------------------------------------------------------
# MAP
# ----------------------------------------------------------------------------
def average_precision(scores, labels) -> torch.Tensor:
    r"""Per-row average precision, ``(N,)`` float64; NaN for a row without a positive label.

    .. math::
        \mathrm{AP} = \sum_k (R_k - R_{k-1})\, P_k

    over the distinct scores :math:`t_1 > t_2 > \dots` of the row taken as thresholds
    (:math:`P_k`, :math:`R_k`: precision and recall of "score :math:`\ge t_k`"; :math:`R_0 = 0`).
    Tied scores are one threshold, so AP is invariant under any strictly increasing map of the
    scores; it lies in ``[0, 1]`` and is 1 iff every positive outscores every negative.
    Equivalently :math:`\mathrm{AP} = \frac{1}{|Y|}\sum_{y \in Y} P(\text{threshold } s_y)`.

    Shapes: ``scores`` ``(N, L)`` (any real scores, no NaN), ``labels`` ``(N, L)`` 0/1 or bool.
    Source: the per-instance AP of box-mlc's ``MeanAvgPrecision`` (Patel et al., ICLR 2022,
    released code ``iesl/box-mlc-iclr-2022``), used by HVSA :cite:`hvsa`, Sec. 5.
    """
    scores = _scores(scores)
    labels = _binary(labels, scores)
    n, length = scores.shape
    order = torch.sort(scores, dim=1, descending=True, stable=True)
    s = order.values
    y = labels.gather(1, order.indices).double()
    tp = y.cumsum(1)
    precision = tp / torch.arange(1, length + 1, dtype=torch.float64)
    # the last position of each run of tied scores: where the threshold of that run is applied
    last = torch.ones_like(s, dtype=torch.bool)
    last[:, :-1] = s[:, :-1] != s[:, 1:]
    index = torch.arange(length).expand(n, length)
    end = torch.where(last, index, torch.full_like(index, length))
    end = end.flip(1).cummin(1).values.flip(1)  # end of the run each position belongs to
    positives = y.sum(1)
    ap = (y * precision.gather(1, end)).sum(1) / positives.clamp_min(1)
    return torch.where(positives > 0, ap, torch.full_like(ap, float("nan")))


def mean_average_precision(scores, labels) -> float:
    r"""Instance-wise MAP: the mean of :func:`average_precision` over the rows with a positive label.

    .. math::
        \mathrm{MAP} = \frac{1}{|D^+|} \sum_{k \in D^+} \mathrm{AP}\big(s^{(k)}, y^{(k)}\big),
        \qquad D^+ = \{k : y^{(k)} \ne 0\}

    In ``[0, 1]``; rows without a positive label are skipped (a choice). Shapes: ``(N, L)`` both.
    Source: box-mlc's ``MeanAvgPrecision`` (released code ``iesl/box-mlc-iclr-2022``), HVSA
    :cite:`hvsa`, Sec. 5 and appendix B.2.
    """
    ap = average_precision(scores, labels)
    kept = ~torch.isnan(ap)
    if not bool(kept.any()):
        raise ValueError("labels must have at least one row with a positive label (MAP skips the others)")
    return float(ap[kept].mean())


# ----------------------------------------------------------------------------
# CMAP: coherent corrections (Eq. 16)
# ----------------------------------------------------------------------------
def _coherent(scores, hierarchy: Hierarchy, fill: str, up: bool) -> torch.Tensor:
    _checks.choice(fill, "fill", CMAP_FILLS)
    scores = _scores(scores)
    parents = _with_hierarchy(scores, hierarchy)
    if fill == "zero":
        if not bool(torch.isfinite(scores).all()):
            raise ValueError("scores must be finite with fill='zero' (0 * inf is undefined)")
        mask = ancestor_mask(parents).double()
        if not up:
            mask = mask.T
        # box-mlc's literal product: non-members contribute a 0 to the min (max)
        product = scores[:, None, :] * mask[None]
        return product.amin(-1) if up else product.amax(-1)
    # masked: propagate along the edges, one level per pass (at most the depth of the forest)
    child = torch.tensor([i for i, p in enumerate(parents) if p >= 0], dtype=torch.long)
    parent = torch.tensor([p for p in parents if p >= 0], dtype=torch.long)
    out = scores.clone()
    for _ in range(len(parents)):
        if up:
            new = out.clone()
            new[:, child] = torch.minimum(out[:, child], out[:, parent])
        else:
            new = out.scatter_reduce(1, parent.expand(out.shape[0], -1), out[:, child], "amax")
        if torch.equal(new, out):
            break
        out = new
    return out


def ancestor_min(scores, hierarchy: Hierarchy, *, fill: str = "masked") -> torch.Tensor:
    r"""The coherent correction :math:`\delta^m`: each score lowered to the least of its ancestors'.

    .. math::
        \delta^m(s)_i = \min_{j \in \mathrm{Anc}(i) \cup \{i\}} s_j

    Properties: :math:`\delta^m(s)_{\text{specific}} \le \delta^m(s)_{\text{general}}` for every
    pair (so :func:`constraint_violation` is 0), :math:`\delta^m(s) \le s`, idempotent, and it
    commutes with increasing maps of the scores. ``fill="zero"`` is box-mlc's ``(adjᵀ·s).min``:
    labels outside :math:`\mathrm{Anc}(i)\cup\{i\}` enter the min as 0, which equals the masked
    result only for scores :math:`\le 0` (log-probabilities); on probabilities it gives 0
    wherever some label lies outside the set. Scores must be finite then.

    Shapes: ``scores`` ``(N, L)``, ``L`` labels of ``hierarchy`` (see the module docstring);
    returns ``(N, L)`` float64. Source: HVSA :cite:`hvsa`, appendix B.2, Eq. 16.
    """
    return _coherent(scores, hierarchy, fill, up=True)


def descendant_max(scores, hierarchy: Hierarchy, *, fill: str = "masked") -> torch.Tensor:
    r"""The coherent correction :math:`\delta^M`: each score raised to the greatest of its descendants'.

    .. math::
        \delta^M(s)_i = \max_{j \in \mathrm{Des}(i) \cup \{i\}} s_j

    Properties: no pair is violated afterwards, :math:`\delta^M(s) \ge s`, idempotent.
    ``fill="zero"`` is box-mlc's ``(adj·s).max`` (outsiders enter as 0): equal to the masked
    result only for scores :math:`\ge 0` (probabilities); on log-probabilities it is 0 almost
    everywhere.

    Shapes: ``scores`` ``(N, L)``; returns ``(N, L)`` float64. Source: HVSA :cite:`hvsa`,
    appendix B.2, Eq. 16.
    """
    return _coherent(scores, hierarchy, fill, up=False)


def coherent_mean_average_precision(scores, labels, hierarchy: Hierarchy, *, fill: str = "masked") -> float:
    r"""CMAP, the MAP after the better of the two coherent corrections.

    .. math::
        \mathrm{CMAP} = \max\big(\mathrm{MAP}(\delta^m(s)),\ \mathrm{MAP}(\delta^M(s))\big)

    with :math:`\delta^m` = :func:`ancestor_min` and :math:`\delta^M` = :func:`descendant_max`.
    In ``[0, 1]``; with ``fill="masked"`` (default) it is invariant under strictly increasing
    maps of the scores (probabilities or log-probabilities give the same CMAP), with
    ``fill="zero"`` (box-mlc's code) it is not.

    Shapes: ``scores``, ``labels`` ``(N, L)``. Source: HVSA :cite:`hvsa`, appendix B.2, Eq. 16;
    Patel et al. (ICLR 2022), released code ``iesl/box-mlc-iclr-2022``.
    """
    low = mean_average_precision(ancestor_min(scores, hierarchy, fill=fill), labels)
    high = mean_average_precision(descendant_max(scores, hierarchy, fill=fill), labels)
    return max(low, high)


# ----------------------------------------------------------------------------
# CV (Eq. 15)
# ----------------------------------------------------------------------------
def constraint_violation(scores, hierarchy: Hierarchy, *, pairs: str = "closure_diag") -> float:
    r"""The fraction of (instance, pair) couples whose specific label outscores the general one.

    .. math::
        \mathrm{CV} = \frac{1}{|D|\,|T|} \sum_{k=1}^{|D|} \sum_{(g, s) \in T}
            \mathbb{1}\big(s^{(k)}_g - s^{(k)}_s < 0\big)

    Eq. 15 read with :math:`(v_i, v_j)` = (general, specific); ties are not violations.
    :math:`T` is chosen by ``pairs`` (:data:`CV_PAIRS`): ``"closure_diag"`` (default; box-mlc's
    code: the closure with the diagonal, whose ``L`` pairs ``(i, i)`` never count but enlarge
    :math:`|T|`), ``"closure"`` or ``"edges"``. Properties: in ``[0, 1]`` (a fraction, not a
    percentage), 0 after :func:`ancestor_min` or :func:`descendant_max`, invariant under strictly
    increasing maps of the scores. Labels are not used.

    Shapes: ``scores`` ``(N, L)``. Source: HVSA :cite:`hvsa`, appendix B.2, Eq. 15 (from
    Patel et al., ICLR 2022).
    """
    _checks.choice(pairs, "pairs", CV_PAIRS)
    scores = _scores(scores)
    parents = _with_hierarchy(scores, hierarchy)
    index = hierarchy_pairs(parents, pairs)
    if index.shape[0] == 0:
        raise ValueError(f"hierarchy has no pairs of kind pairs={pairs!r} (every label is top-level)")
    violated = scores[:, index[:, 1]] > scores[:, index[:, 0]]
    return float(violated.double().mean())


# ----------------------------------------------------------------------------
# top-1 error
# ----------------------------------------------------------------------------
def top1_error(logits, targets) -> float:
    r"""Top-1 error in percent, ties resolved to the lowest class index.

    .. math::
        \mathrm{err} = \frac{100}{N} \sum_{k=1}^{N} \mathbb{1}\big(\hat y_k \ne y_k\big), \qquad
        \hat y_k = \min \operatorname*{arg\,max}_c z_{kc}

    In ``[0, 100]``. Shapes: ``logits`` ``(N, C)`` (no NaN), ``targets`` ``(N,)`` in ``[0, C)``.
    Source: HVSA :cite:`hvsa`, Sec. 5 and appendix B.2 (tieredImageNet-H); the tie rule is a choice.
    """
    logits = _scores(logits, "logits")
    targets = torch.as_tensor(targets)
    if targets.is_floating_point() or targets.dtype == torch.bool or tuple(targets.shape) != logits.shape[:1]:
        raise ValueError(
            f"targets must be integer class indices of shape ({logits.shape[0]},) for logits of shape "
            f"{tuple(logits.shape)}, got {targets.dtype} of shape {tuple(targets.shape)}"
        )
    c = logits.shape[1]
    if int(targets.min()) < 0 or int(targets.max()) >= c:
        raise ValueError(f"targets must be class indices in [0, {c - 1}], got {targets.unique()[:5].tolist()}")
    is_max = logits == logits.max(1, keepdim=True).values
    index = torch.arange(c).expand_as(logits)
    pred = torch.where(is_max, index, torch.full_like(index, c)).min(1).values
    return 100.0 * float((pred != targets.long()).double().mean())


# ----------------------------------------------------------------------------
# mIoU per level
# ----------------------------------------------------------------------------
def confusion_matrix(pred, target, num_classes: int, *, ignore_index: Optional[int] = 255) -> torch.Tensor:
    r"""``M (C, C)`` int64: :math:`M_{ij}` counts pixels of ground truth ``i`` predicted as ``j``.

    Pixels whose ``target`` is ``ignore_index`` are skipped (their ``pred`` may be anything).
    Shapes: ``pred`` and ``target`` integer tensors of the same shape (any), classes in
    ``[0, num_classes)``. Sums over the split by adding the matrices of its parts.
    """
    num_classes = _checks.integer(num_classes, "num_classes")
    pred_raw, target_raw = torch.as_tensor(pred), torch.as_tensor(target)
    if pred_raw.shape != target_raw.shape:
        raise ValueError(
            f"pred and target must have the same shape, got {tuple(pred_raw.shape)} and {tuple(target_raw.shape)}"
        )
    pred, target_flat = _labels(pred_raw, "pred"), _labels(target_raw, "target")
    if ignore_index is not None:
        keep = target_flat != ignore_index
        pred, target_flat = pred[keep], target_flat[keep]
    for name, x in (("target", target_flat), ("pred", pred)):
        bad = (x < 0) | (x >= num_classes)
        if bool(bad.any()):
            extra = f" or ignore_index={ignore_index}" if name == "target" and ignore_index is not None else ""
            raise ValueError(
                f"{name} must hold class indices in [0, {num_classes - 1}]{extra}, got {x[bad].unique()[:5].tolist()}"
            )
    flat = torch.bincount(target_flat * num_classes + pred, minlength=num_classes * num_classes)
    return flat.reshape(num_classes, num_classes)


def iou_from_confusion(confusion: torch.Tensor) -> torch.Tensor:
    r"""Per-class IoU ``(C,)`` float64; NaN for a class with an empty union (absent from both).

    .. math::
        \mathrm{IoU}_c = \frac{M_{cc}}{\sum_j M_{cj} + \sum_i M_{ic} - M_{cc}}
    """
    if not isinstance(confusion, torch.Tensor) or confusion.dim() != 2 or confusion.shape[0] != confusion.shape[1]:
        raise ValueError(f"confusion must be a square (C, C) tensor, got {getattr(confusion, 'shape', confusion)!r}")
    m = confusion.double()
    tp = m.diagonal()
    union = m.sum(0) + m.sum(1) - tp
    return torch.where(union > 0, tp / union.clamp_min(1), torch.full_like(tp, float("nan")))


def mean_iou(pred, target, num_classes: int, *, ignore_index: Optional[int] = 255) -> float:
    r"""mIoU from one confusion matrix, over the classes with a non-empty union.

    .. math::
        \mathrm{mIoU} = \frac{1}{|C|} \sum_{c \in C} \frac{TP_c}{TP_c + FP_c + FN_c}, \qquad
        C = \{c : TP_c + FP_c + FN_c > 0\}

    In ``[0, 1]``; ``target == ignore_index`` pixels are skipped. This is
    ``hyro_edu.segmentation.evaluation.metric.MeanIoU(average="union_present")`` and
    torchmetrics' macro ``JaccardIndex`` (checked in the tests). Shapes: ``pred``, ``target``
    integer tensors of the same shape (one image or a whole split, flattened).
    """
    iou = iou_from_confusion(confusion_matrix(pred, target, num_classes, ignore_index=ignore_index))
    kept = ~torch.isnan(iou)
    if not bool(kept.any()):
        raise ValueError("target must contain at least one pixel that is not ignore_index")
    return float(iou[kept].mean())


def map_to_level(labels, level_map, *, ignore_index: Optional[int] = 255) -> torch.Tensor:
    """Finest-level class indices mapped to level ``l``: ``level_map[labels]``, ``ignore_index`` kept.

    Shapes: ``labels`` integer tensor of any shape with values in ``[0, len(level_map))`` or
    ``ignore_index``; ``level_map`` ``(C_1,)`` integers ``>= 0``; returns int64 of ``labels``' shape.
    """
    return _to_level(labels, _level_map(level_map), ignore_index, "labels")


def _to_level(labels, m: torch.Tensor, ignore_index: Optional[int], name: str) -> torch.Tensor:
    raw = torch.as_tensor(labels)
    x = _labels(raw, name).reshape(raw.shape)
    ignored = (x == ignore_index) if ignore_index is not None else torch.zeros_like(x, dtype=torch.bool)
    bad = ~ignored & ((x < 0) | (x >= m.numel()))
    if bool(bad.any()):
        extra = f" or ignore_index={ignore_index}" if ignore_index is not None else ""
        raise ValueError(
            f"{name} must be in [0, {m.numel() - 1}] (the length of level_map){extra}, "
            f"got {x[bad].unique()[:5].tolist()}"
        )
    out = m[torch.where(ignored, torch.zeros_like(x), x)]
    return torch.where(ignored, x, out)


def combine_children(probabilities: torch.Tensor, level_map, *, dim: int = 1) -> torch.Tensor:
    r"""A flat model's level-``l`` probabilities: each parent gets the sum of its children's.

    .. math::
        p^{(l)}_c = \sum_{k : \mathrm{map}_l(k) = c} p_k

    HVSA's appendix B.2 says only that, for hierarchy-agnostic methods, the scores of a non-leaf
    level are computed "by combining the segmentation predictions of its subclasses"; the sum of
    the children's probabilities is the reading taken here (the probability of the union of
    disjoint events). Properties: the total over the class axis is unchanged (a distribution stays
    a distribution), and the argmax of the result may differ from the mapped argmax of the leaves
    (see :func:`level_mean_iou`'s ``level_pred``). Feed probabilities (e.g. a softmax), not logits.

    Shapes: ``probabilities`` ``(..., C_1, ...)`` with the class axis at ``dim``; ``level_map``
    ``(C_1,)``; returns ``(..., C_l, ...)``, ``C_l = max(level_map) + 1``.
    Source: HVSA :cite:`hvsa`, appendix B.2.
    """
    _checks.tensor(probabilities, "probabilities")
    d = _checks.dim_index(probabilities, dim, "probabilities")
    m = _level_map(level_map).to(probabilities.device)
    if probabilities.shape[d] != m.numel():
        raise ValueError(
            f"level_map must have one entry per class of probabilities along dim={dim}, "
            f"{probabilities.shape[d]}, got length {m.numel()}"
        )
    shape = list(probabilities.shape)
    shape[d] = int(m.max()) + 1
    out = probabilities.new_zeros(shape)
    return out.index_add(d, m, probabilities)


def level_mean_iou(
    pred,
    target,
    level_map,
    *,
    level_pred: str = "mapped_leaf",
    ignore_index: Optional[int] = 255,
) -> float:
    r"""mIoU at hierarchy level ``l``: :func:`mean_iou` on labels mapped by ``level_map``.

    .. math::
        \mathrm{mIoU}^l = \mathrm{mIoU}\big(\hat y^{(l)},\ \mathrm{map}_l(y)\big)

    ``target`` holds finest-level labels (or ``ignore_index``), mapped by :func:`map_to_level`.
    ``level_pred`` (:data:`LEVEL_PREDS`) says what ``pred`` holds:

    * ``"mapped_leaf"`` (default): finest-level classes, mapped like the target -- a flat model's
      argmax, HVSA's rule for hierarchy-agnostic methods (appendix B.2);
    * ``"own_channels"``: classes of level ``l`` already, in ``[0, max(level_map)]`` -- the argmax
      of a hierarchical model's own level-``l`` scores (our choice for HVSA), or the argmax of
      :func:`combine_children`.

    With the identity map this is :func:`mean_iou` with ``len(level_map)`` classes. In ``[0, 1]``.
    Shapes: ``pred``, ``target`` integer tensors of the same shape; ``level_map`` ``(C_1,)``.
    Source: HVSA :cite:`hvsa`, Sec. 5 and appendix B.2 (following Li et al., CVPR 2022).
    """
    _checks.choice(level_pred, "level_pred", LEVEL_PREDS)
    m = _level_map(level_map)
    raw = torch.as_tensor(pred)
    if raw.shape != torch.as_tensor(target).shape:
        raise ValueError(
            f"pred and target must have the same shape, got {tuple(raw.shape)} and "
            f"{tuple(torch.as_tensor(target).shape)}"
        )
    target_l = _to_level(target, m, ignore_index, "target")
    if level_pred == "mapped_leaf":
        p = _labels(raw, "pred")
        if ignore_index is not None:  # predictions on ignored pixels are dropped anyway
            p = torch.where(target_l.reshape(-1) == ignore_index, torch.zeros_like(p), p)
        bad = (p < 0) | (p >= m.numel())
        if bool(bad.any()):
            raise ValueError(
                f"pred must hold finest-level classes in [0, {m.numel() - 1}] (the length of level_map) "
                f"with level_pred='mapped_leaf', got {p[bad].unique()[:5].tolist()}"
            )
        pred = m[p].reshape(raw.shape)
    return mean_iou(pred, target_l, int(m.max()) + 1, ignore_index=ignore_index)
