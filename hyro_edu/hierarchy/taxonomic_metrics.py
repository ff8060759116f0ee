r"""ProTeCt's taxonomic open-set metrics: leaf accuracy (LA), hierarchical consistent accuracy (HCA)
and mean tree-cut accuracy (MTA).

.. math::
    \mathrm{LA} = \frac{100}{N} \sum_n \mathbb{1}[\hat y_{\mathrm{leaf}}(x_n) = y_n], \quad
    \mathrm{HCA} = \frac{100}{N} \sum_n \mathbb{1}[\hat y_{\mathrm{leaf}}(x_n) = y_n]
        \prod_{v \in A(y_n)} \mathbb{1}[\hat y_v(x_n) = c_v(y_n)], \quad
    \mathrm{MTA} = \frac{1}{T} \sum_{t=1}^{T} \frac{100}{N} \sum_n \mathbb{1}[\hat y_t(x_n) = m_t(y_n)]

All three read one score matrix ``scores (N, num_params)``: a score per sample and non-root node of
a :class:`hyro_edu.hierarchy.taxonomic_tree.TaxonomicTree` (columns in dfs order, as ProTeCt's
per-node prompts give them).  A prediction is the argmax over a set of columns (the first column
wins a tie, as ``torch.argmax``):

* :math:`\hat y_{\mathrm{leaf}}`: over **all** leaves;
* :math:`\hat y_v`: over the children of internal node ``v``, and :math:`c_v(y)` is the child on
  ``y``'s path; :math:`A(y)` is the set of internal nodes on ``y``'s path, root included (only those
  are checked; for a depth-1 leaf only the root);
* :math:`\hat y_t`: over the nodes of cut ``t`` (:class:`hyro_edu.hierarchy.tree_cuts.TreeCut`),
  and :math:`m_t` is the cut's mapping.

Values are percentages, sample-weighted over the whole split (ProTeCt's ``averageMeter``).
Definitions from ProTeCt's code :cite:`wu2024protect` (``metrics.hierConsistency``,
``engine.eval_one_epoch``, ``evalmta.py``; reference 7.1-7.3), whose node passes and leaf pass are
separate forward passes: :func:`hyro_edu.hierarchy.taxonomic_metrics.hierarchical_consistent_accuracy` takes an optional separate
``leaf_scores`` for that reason.  Properties (tested): ``0 <= HCA <= LA <= 100``; MTA on the single
leaf cut equals LA; the worked examples of both references.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch

from hyro_edu.core import checks as _checks
from hyro_edu.hierarchy.taxonomic_tree import TaxonomicTree
from hyro_edu.hierarchy.tree_cuts import TreeCut, check_cuts

__all__ = [
    "leaf_accuracy",
    "hierarchical_consistent_accuracy",
    "tree_cut_accuracies",
    "mean_tree_cut_accuracy",
]


def _inputs(scores, labels, tree, *, leaf_ok: bool = False):
    if not isinstance(tree, TaxonomicTree):
        raise ValueError(f"tree must be a hyro_edu.hierarchy.taxonomic_tree.TaxonomicTree, got {type(tree).__name__}")
    _checks.tensor(scores, "scores")
    widths = (tree.num_params, tree.num_labels) if leaf_ok else (tree.num_params,)
    if scores.dim() != 2 or scores.shape[1] not in widths:
        want = " or (N, num_labels) = (N, %d)" % tree.num_labels if leaf_ok else ""
        raise ValueError(
            f"scores must have shape (N, num_params) = (N, {tree.num_params}){want}, got {tuple(scores.shape)}"
        )
    labels = tree.check_labels(labels).to(scores.device)
    if len(labels) != len(scores) or len(labels) == 0:
        raise ValueError(f"labels must have one entry per row of scores ({len(scores)}) and at least one, got {len(labels)}")
    return scores, labels


def _leaf_predictions(scores: torch.Tensor, tree: TaxonomicTree) -> torch.Tensor:
    if scores.shape[1] == tree.num_labels and scores.shape[1] != tree.num_params:
        return scores.argmax(1)
    cols = torch.tensor([v - 1 for v in tree.leaves], dtype=torch.long, device=scores.device)
    return scores[:, cols].argmax(1)


def leaf_accuracy(scores: torch.Tensor, labels: torch.Tensor, tree: TaxonomicTree) -> float:
    """LA: percentage of samples whose argmax over all leaves is their label :cite:`wu2024protect` (7.1).

    Shapes: ``scores (N, num_params)`` (the leaf columns are used) or ``(N, num_labels)`` (leaf
    logits in label order), ``labels (N,)`` leaf labels.  ``ValueError`` for labels not in the tree.
    """
    scores, labels = _inputs(scores, labels, tree, leaf_ok=True)
    return 100.0 * (_leaf_predictions(scores, tree) == labels).double().mean().item()


def hierarchical_consistent_accuracy(
    scores: torch.Tensor,
    labels: torch.Tensor,
    tree: TaxonomicTree,
    *,
    leaf_scores: Optional[torch.Tensor] = None,
) -> float:
    """HCA: percentage of samples right at every internal node of their path and at the leaf
    :cite:`wu2024protect` (7.2, ``is_incorrect |= ~iscorrect`` over node passes and the leaf pass).

    Shapes: ``scores (N, num_params)``, ``labels (N,)``; ``leaf_scores`` (optional) ``(N, num_params)``
    or ``(N, num_labels)``, the leaf pass if it is a separate forward pass (default: ``scores``).
    Never above :func:`hyro_edu.hierarchy.taxonomic_metrics.leaf_accuracy` of the same leaf scores.
    """
    scores, labels = _inputs(scores, labels, tree)
    if leaf_scores is None:
        leaf_pred = _leaf_predictions(scores, tree)
    else:
        leaf_scores, _ = _inputs(leaf_scores, labels, tree, leaf_ok=True)
        leaf_pred = _leaf_predictions(leaf_scores, tree)
    incorrect = leaf_pred != labels
    sub = tree.sublabels.to(scores.device)[labels]
    for i, params in enumerate(tree.param_lists):
        cols = torch.tensor(params, dtype=torch.long, device=scores.device)
        pred = scores[:, cols].argmax(1)
        incorrect |= (sub[:, i] >= 0) & (pred != sub[:, i])
    return 100.0 * (~incorrect).double().mean().item()


def tree_cut_accuracies(scores: torch.Tensor, labels: torch.Tensor, tree: TaxonomicTree,
                        cuts: Sequence[TreeCut]) -> torch.Tensor:
    """Accuracy (percent) in each cut: argmax over the cut's nodes vs ``mapping[label]``
    :cite:`wu2024protect` (7.3).  Shapes: ``scores (N, num_params)``, ``labels (N,)``; returns
    float64 ``(T,)`` for ``T = len(cuts)``.  ``ValueError`` for an empty ``cuts``."""
    scores, labels = _inputs(scores, labels, tree)
    cuts = check_cuts(cuts)
    out = []
    for k, cut in enumerate(cuts):
        if not cut.belongs_to(tree):
            raise ValueError(f"cuts[{k}] is not a cut of this tree")
        cols = torch.tensor(cut.params, dtype=torch.long, device=scores.device)
        hit = scores[:, cols].argmax(1) == cut.targets(labels)
        out.append(100.0 * hit.double().mean())
    return torch.stack(out).cpu()


def mean_tree_cut_accuracy(scores: torch.Tensor, labels: torch.Tensor, tree: TaxonomicTree,
                           cuts: Sequence[TreeCut]) -> float:
    """MTA: the mean of :func:`~hyro_edu.hierarchy.taxonomic_metrics.tree_cut_accuracies` over the
    ``T`` cuts (ProTeCt: the 25 stored ones of :func:`hyro_edu.hierarchy.tree_cuts.sample_cuts`)
    :cite:`wu2024protect` (7.3).  ProTeCt also logs the standard deviation over the cuts, e.g.
    ``tree_cut_accuracies(...).std(correction=0)`` (NumPy's default)."""
    return tree_cut_accuracies(scores, labels, tree, cuts).mean().item()
