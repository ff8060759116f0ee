r"""The label taxonomy as HVSA's head sees it: labels, their paths, levels and leaves.

HVSA (:cite:`hvsa`, Sec. 3 and 4.1) embeds every node of a label tree except the root. Here the
``L`` labels are numbered ``0..L-1`` and described by a ``parents`` array (``-1`` for a top-level
label, whose parent is the virtual root); :func:`hyro_edu.hvsa.taxonomy.label_taxonomy` turns it
into a :class:`~hyro_edu.hierarchy.trees.Tree` whose node ``l + 1`` is label ``l`` and node 0 the
root.

An image's label vector :math:`y \in \{0, 1\}^L` switches labels on.  ImCLEF07 label sets are
*path-closed* (every ancestor of an on-label is on); :func:`hyro_edu.hvsa.taxonomy.path_labels`
builds such vectors from label indices (one per image or per pixel, ``ignore_index`` for
unlabelled pixels).

*Depth cuts.*  Cut ``k`` (``k = 1`` the top) is the cut of the tree at depth ``k``: the labels at
depth ``k`` and the leaves shallower than ``k`` (a background label that has no children stays
itself at every level, as in the LIP hierarchy).  Each level is a partition of the images, so a
softmax per cut is defined (:func:`hyro_edu.hvsa.taxonomy.level_targets`).  The cuts count from
the top; the paper's per-level metrics mIoU\ :sup:`l` count from the finest level
(:class:`~hyro_edu.hierarchy.taxonomies.LevelTaxonomy`, level 1 = the leaves).
"""
from __future__ import annotations

from dataclasses import dataclass
from numbers import Integral
from typing import Sequence, Union

import torch

from hyro_edu.core import checks as _checks
from hyro_edu.hierarchy.trees import Tree

__all__ = [
    "LabelTaxonomy",
    "label_taxonomy",
    "path_labels",
    "label_vector",
    "on_labels",
    "level_targets",
    "PRIOR_LABELS",
]

#: Which on-labels enter the prior of Eq. (4): all of them, or only the most specific ones.
PRIOR_LABELS = ("path", "leaves")


@dataclass(frozen=True)
class LabelTaxonomy:
    """The ``L`` embedded labels of a tree (root excluded) and the index sets the losses use.

    Attributes
    ----------
    tree : the :class:`~hyro_edu.hierarchy.trees.Tree`; label ``l`` is node ``l + 1``.
    ancestors : ``(L, L)`` bool, ``ancestors[l, m]`` true iff ``m`` is ``l`` or an ancestor of it.
    depths : ``(L,)`` long, 1 for top-level labels.
    leaves : ``(L_leaf,)`` long, the labels without children.
    depth_cuts : tuple of ``(L_k,)`` long tensors, the labels of the cut at depth ``k = 1, 2, ...``
        (module docstring; counted from the top, unlike the metrics' levels).
    """

    tree: Tree
    ancestors: torch.Tensor
    depths: torch.Tensor
    leaves: torch.Tensor
    depth_cuts: tuple

    @property
    def num_labels(self) -> int:
        return len(self.tree) - 1


def label_taxonomy(parents: Union[Tree, Sequence[int]]) -> LabelTaxonomy:
    """A :class:`~hyro_edu.hvsa.taxonomy.LabelTaxonomy` from a ``parents`` array or a ``Tree``.

    ``parents[l]`` is ``-1`` (a top-level label) or the index of ``l``'s parent label, listed
    parents first (``parents[l] < l``), which rules out cycles.  A
    :class:`~hyro_edu.hierarchy.trees.Tree` is taken as is, its root not embedded.  Anything
    else raises ``ValueError`` naming ``parents``.
    """
    if isinstance(parents, Tree):
        tree = parents
    else:
        if isinstance(parents, (str, bytes)) or not isinstance(parents, (Sequence, torch.Tensor)):
            raise ValueError(
                f"parents must be a sequence of integers (one per label) or a Tree, got "
                f"{type(parents).__name__}"
            )
        values = parents.tolist() if isinstance(parents, torch.Tensor) else list(parents)
        if not values:
            raise ValueError("parents must describe at least one label, got an empty sequence")
        for i, p in enumerate(values):
            if isinstance(p, bool) or not isinstance(p, Integral) or not -1 <= p < i:
                raise ValueError(
                    "parents must describe a tree over the labels, listed parents first: "
                    f"parents[{i}] must be -1 (a top-level label) or a label index in "
                    f"[0, {i - 1}], got {p!r}"
                )
        names = ("root",) + tuple(str(i) for i in range(len(values)))
        tree = Tree(names, (-1,) + tuple(int(p) + 1 for p in values))
    n = len(tree) - 1
    if n < 1:
        raise ValueError("parents must describe at least one label besides the root")
    anc = torch.zeros(n, n, dtype=torch.bool)
    for node in range(1, n + 1):
        anc[node - 1, node - 1] = True
        for a in tree.ancestors(node):
            if a > 0:
                anc[node - 1, a - 1] = True
    depths = torch.tensor(tree.depths[1:], dtype=torch.long)
    leaves = torch.tensor([v - 1 for v in tree.leaves if v > 0], dtype=torch.long)
    is_leaf = torch.zeros(n, dtype=torch.bool)
    is_leaf[leaves] = True
    depth_cuts = tuple(
        ((depths == k) | (is_leaf & (depths < k))).nonzero().flatten()
        for k in range(1, int(depths.max()) + 1)
    )
    return LabelTaxonomy(tree, anc, depths, leaves, depth_cuts)


def path_labels(
    targets: torch.Tensor, taxonomy: LabelTaxonomy, *, ignore_index: int = 255
) -> torch.Tensor:
    r"""Path-closed label vectors :math:`y` from label indices: ``y[..., m] = 1`` iff ``m`` is the
    target or one of its ancestors.

    ``targets (...)`` long, each in ``[0, L-1]`` or ``ignore_index`` (an all-zero row).  Other
    values are labels outside the taxonomy and raise ``ValueError`` naming ``targets``.
    Shapes: ``(...)`` -> ``(..., L)`` float.
    """
    if not isinstance(targets, torch.Tensor) or targets.dtype not in (
        torch.long, torch.int, torch.int16, torch.uint8
    ):
        raise ValueError("targets must be an integer tensor of label indices")
    targets = targets.long()
    n = taxonomy.num_labels
    valid = targets != ignore_index
    bad = valid & ((targets < 0) | (targets >= n))
    if bool(bad.any()):
        raise ValueError(
            f"targets must hold label indices in [0, {n - 1}] or ignore_index = {ignore_index}; "
            f"got values {targets[bad].unique()[:5].tolist()} outside the taxonomy"
        )
    anc = taxonomy.ancestors.to(targets.device)
    rows = anc[torch.where(valid, targets, torch.zeros_like(targets))]
    return (rows & valid.unsqueeze(-1)).float()


def label_vector(y: torch.Tensor, taxonomy: LabelTaxonomy, name: str = "y") -> torch.Tensor:
    """``y`` as a bool tensor ``(..., L)`` if it is a 0/1 or bool label vector of the taxonomy.

    A last size other than ``L`` (labels outside the taxonomy) or values other than 0 and 1
    raise ``ValueError`` naming ``name``.
    """
    if not isinstance(y, torch.Tensor) or y.dim() < 1:
        raise ValueError(f"{name} must be a tensor of label vectors (..., L)")
    n = taxonomy.num_labels
    if y.shape[-1] != n:
        raise ValueError(
            f"{name} must have last size L = {n} (one entry per label of the taxonomy), got shape "
            f"{tuple(y.shape)}"
        )
    if y.dtype != torch.bool:
        if not bool(((y == 0) | (y == 1)).all()):
            raise ValueError(f"{name} must hold only 0 and 1 (multi-hot label vectors)")
        y = y != 0
    return y


def on_labels(
    y: torch.Tensor, taxonomy: LabelTaxonomy, *, prior_labels: str = "path", name: str = "y"
) -> torch.Tensor:
    r"""The labels that enter the prior :math:`p(z\mid y)` of Eq. (4): a bool mask ``(..., L)``.

    ``prior_labels="path"`` (default): every on-label.  ``"leaves"``: the most specific on-labels,
    those with no on-child (for a path-closed ``y`` from a leaf: that leaf alone).

    **An image with no positive label raises** ``ValueError`` naming ``y`` (or ``name``): its
    prior is the empty mixture (Eq. (4) divides by :math:`\sum_l y_l = 0`), a zero density whose
    KL is infinite.  Leave such images (or ``ignore_index`` pixels) out before calling.
    Shapes: ``y (..., L)`` -> ``(..., L)`` bool.  HVSA :cite:`hvsa`, Eq. (4).
    """
    _checks.choice(prior_labels, "prior_labels", PRIOR_LABELS)
    mask = label_vector(y, taxonomy, name)
    empty = ~mask.any(-1)
    if bool(empty.any()):
        raise ValueError(
            f"{name} must switch on at least one label per image; {int(empty.sum())} row(s) "
            "are empty "
            f"(first at index {tuple(empty.nonzero()[0].tolist())}): the prior of Eq. (4) is then "
            "the empty mixture and the KL infinite. Leave unlabelled images out of the KL term."
        )
    if prior_labels == "leaves":
        # a label is dropped if one of its proper descendants is on
        strict = taxonomy.ancestors.to(mask.device) & ~torch.eye(
            taxonomy.num_labels, dtype=torch.bool, device=mask.device
        )
        has_on_child = (mask.float() @ strict.float()) > 0
        mask = mask & ~has_on_child
    return mask


def level_targets(
    y: torch.Tensor, taxonomy: LabelTaxonomy, *, ignore_index: int = 255
) -> list:
    """Per-cut class targets: for the cut at depth ``k``, the position in ``taxonomy.depth_cuts[k-1]`` of the
    one on-label of that level, or ``ignore_index`` where none is on.

    ``y (..., L)`` label vectors (path-closed for the result to mean "the depth-``k`` ancestor").
    More than one on-label at a level (several paths: a multi-label image) raises ``ValueError``
    naming ``y``: a softmax per level needs one class.  Returns a list of long tensors ``(...)``.
    """
    mask = label_vector(y, taxonomy).float()
    out = []
    for k, members in enumerate(taxonomy.depth_cuts, start=1):
        sub = mask[..., members.to(mask.device)]
        count = sub.sum(-1)
        if bool((count > 1).any()):
            raise ValueError(
                f"y must switch on at most one label of level {k} per image (one path) for a "
                f"per-level softmax; got up to {int(count.max())}"
            )
        idx = sub.argmax(-1)
        out.append(torch.where(count > 0, idx, torch.full_like(idx, ignore_index)))
    return out
