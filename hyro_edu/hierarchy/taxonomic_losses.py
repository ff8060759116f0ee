r"""ProTeCt's two training losses on per-node logits: node-centric (NCL) and dynamic tree-cut (DTL).

.. math::
    \mathcal{L}_{\mathrm{NCL}} = \frac{1}{|V'|} \sum_{v \in V'} \frac{1}{|B_v|} \sum_{n \in B_v}
        -\log \operatorname{softmax}\big(s_n[\mathrm{ch}(v)]\big)_{c_v(y_n)}, \qquad
    \mathcal{L}_{\mathrm{DTL}} = \frac{1}{B} \sum_{n=1}^{B}
        -\log \operatorname{softmax}\big(s_n[\mathcal{Y}_t]\big)_{m_t(y_n)}

with :math:`s_n` the logits of sample ``n`` over the parameters (non-root nodes, in dfs order) of a
:class:`hyro_edu.hierarchy.taxonomic_tree.TaxonomicTree`, :math:`\mathrm{ch}(v)` the children of
internal node ``v``, :math:`B_v` the samples of the batch whose leaf is under ``v``,
:math:`c_v(y)` the child of ``v`` on ``y``'s path (``sublabels``), :math:`V'` the internal nodes with
:math:`B_v \neq \emptyset`, and :math:`(\mathcal{Y}_t, m_t)` the nodes and mapping of a tree cut
(:class:`hyro_edu.hierarchy.tree_cuts.TreeCut`), drawn afresh for every batch with dropout 0.1.
ProTeCt :cite:`wu2024protect` (reference 5.3) trains :math:`\mathcal{L}_{\mathrm{DTL}} + \lambda
\mathcal{L}_{\mathrm{NCL}}` with :math:`\lambda = 0.5` (CIFAR, SUN) or 1 (ImageNet, MaPLe).

Properties (tested): both losses are cross-entropies, so ``>= 0`` and finite with finite
gradients for finite logits; both equal hand-computed values on a 4-parameter tree; the DTL on the
leaf cut is the flat leaf cross-entropy; the NCL is ``log 2`` on zero logits of a binary tree.
Logits are used as given (scale them by CLIP's temperature before).
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from hyro_edu.core import checks as _checks
from hyro_edu.hierarchy.taxonomic_tree import TaxonomicTree
from hyro_edu.hierarchy.tree_cuts import TreeCut, random_cut

__all__ = ["node_centric_loss", "tree_cut_loss", "dynamic_tree_cut_loss", "protect_loss"]


def _logits(logits, tree: TaxonomicTree) -> torch.Tensor:
    _checks.tensor(logits, "logits")
    if logits.dim() != 2 or logits.shape[1] != tree.num_params:
        raise ValueError(
            f"logits must have shape (B, num_params) = (B, {tree.num_params}), one column per non-root "
            f"node in dfs order; got {tuple(logits.shape)}"
        )
    return logits


def _tree(tree) -> TaxonomicTree:
    if not isinstance(tree, TaxonomicTree):
        raise ValueError(f"tree must be a hyro_edu.hierarchy.taxonomic_tree.TaxonomicTree, got {type(tree).__name__}")
    return tree


def _batch(logits, labels, tree):
    tree = _tree(tree)
    logits = _logits(logits, tree)
    labels = tree.check_labels(labels).to(logits.device)
    if len(labels) != len(logits):
        raise ValueError(f"labels must have one entry per row of logits ({len(logits)}), got {len(labels)}")
    if len(labels) == 0:
        raise ValueError("logits and labels must hold at least one sample")
    return logits, labels, tree


def node_centric_loss(logits: torch.Tensor, labels: torch.Tensor, tree: TaxonomicTree) -> torch.Tensor:
    """The node-centric loss (module docstring, left): per internal node, the cross-entropy over
    its children on the samples under it, averaged over the internal nodes that have samples.

    Shapes: ``logits (B, num_params)`` float, ``labels (B,)`` leaf labels; returns a scalar.
    Internal nodes with no sample of the batch under them are left out of the mean (ProTeCt's
    ``mean_i CE_i`` over nodes; an empty node has no cross-entropy).  :cite:`wu2024protect`, 5.3.
    """
    logits, labels, tree = _batch(logits, labels, tree)
    sub = tree.sublabels.to(logits.device)[labels]  # (B, num_internal)
    terms = []
    for i, params in enumerate(tree.param_lists):
        under = sub[:, i] >= 0
        if not bool(under.any()):
            continue
        cols = torch.tensor(params, dtype=torch.long, device=logits.device)
        terms.append(F.cross_entropy(logits[under][:, cols], sub[under, i]))
    return torch.stack(terms).mean()


def tree_cut_loss(logits: torch.Tensor, labels: torch.Tensor, tree: TaxonomicTree, cut: TreeCut) -> torch.Tensor:
    """Cross-entropy over one tree cut's nodes with targets mapped to their cut ancestor.

    Shapes: ``logits (B, num_params)``, ``labels (B,)``; returns a scalar (mean over the batch).
    On the cut made of all leaves it is the flat leaf cross-entropy (tested).  :cite:`wu2024protect`, 5.3.
    """
    logits, labels, tree = _batch(logits, labels, tree)
    if not isinstance(cut, TreeCut) or not cut.belongs_to(tree):
        raise ValueError(f"cut must be a hyro_edu.hierarchy.tree_cuts.TreeCut of this tree, got {cut!r}")
    cols = torch.tensor(cut.params, dtype=torch.long, device=logits.device)
    return F.cross_entropy(logits[:, cols], cut.targets(labels))


def dynamic_tree_cut_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    tree: TaxonomicTree,
    *,
    dropout: float = 0.1,
    generator: Optional[torch.Generator] = None,
) -> torch.Tensor:
    """The dynamic tree-cut loss: :func:`hyro_edu.hierarchy.taxonomic_losses.tree_cut_loss` on a fresh
    :func:`hyro_edu.hierarchy.tree_cuts.random_cut` with this ``dropout`` (ProTeCt uses 0.1).

    Shapes as :func:`~hyro_edu.hierarchy.taxonomic_losses.tree_cut_loss`.  Deterministic for a
    seeded ``generator``.  :cite:`wu2024protect`, 5.3-5.4.
    """
    tree = _tree(tree)
    return tree_cut_loss(logits, labels, tree, random_cut(tree, dropout, generator=generator))


def protect_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    tree: TaxonomicTree,
    *,
    weight: float = 0.5,
    dropout: float = 0.1,
    generator: Optional[torch.Generator] = None,
) -> torch.Tensor:
    r"""ProTeCt's total loss :math:`\mathcal{L}_{\mathrm{DTL}} + \lambda\,\mathcal{L}_{\mathrm{NCL}}`,
    with ``weight`` :math:`= \lambda \geq 0`.

    Shapes as :func:`hyro_edu.hierarchy.taxonomic_losses.node_centric_loss`.  :cite:`wu2024protect`, 5.3.
    """
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not weight >= 0 or weight == float("inf"):
        raise ValueError(f"weight must be a finite number >= 0, got {weight!r}")
    dtl = dynamic_tree_cut_loss(logits, labels, tree, dropout=dropout, generator=generator)
    return dtl + weight * node_centric_loss(logits, labels, tree)
