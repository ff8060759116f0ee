r"""Tree cuts: the coarser label sets of a taxonomy, ProTeCt's random cut generator and stored cut sets.

.. math::
    \mathrm{mapping}(l) = \text{the index in the cut of the unique cut node } v
    \text{ with } \mathrm{leaf}_l \preceq v

A **tree cut** of a :class:`hyro_edu.hierarchy.taxonomic_tree.TaxonomicTree` is a set of
non-root nodes such that every leaf has exactly one of them as itself or an ancestor
(:class:`hyro_edu.hierarchy.tree_cuts.TreeCut` checks this).  Classifying into a cut is classifying at a mixed level of the
taxonomy; the leaf set and the root's children are two cuts.  ProTeCt :cite:`wu2024protect`
(its ``TreecutGenerator.get_randomcut``; design notes, section 3) draws random cuts to train the
dynamic tree-cut loss and evaluates on 25 stored ones (mean tree-cut accuracy).

:func:`hyro_edu.hierarchy.tree_cuts.random_cut` with dropout rate ``p`` (the rule of :cite:`wu2024protect`, reference 5.4):

1. draw ``u_i ~ U[0, 1)`` for every internal node (in ``internal_nodes`` order, one
   ``torch.rand`` call) and keep node ``i`` iff ``u_i >= p`` (probability ``1 - p``); the root is
   always kept;
2. a node is **expanded** iff it and all its ancestors are kept
   (``dependence @ P == dependence.sum(1)``), otherwise **collapsed**;
3. a collapsed node blocks its descendants, an expanded node blocks itself and its non-root
   ancestors; the cut is the unblocked parameters, i.e. the children of expanded nodes that are
   leaves or collapsed, in parameter (dfs id) order.

The cut's ``mapping`` sends each leaf label to the position of its ancestor-or-self in the cut.
ProTeCt reads it off ``where(codewords[cut])``, which is right only because depth-first ids make
every subtree's leaves contiguous; here it is computed from the ancestors directly, so it does not
depend on any numbering (the design notes' decision for the breadth-first
:class:`hyro_edu.hierarchy.trees.Tree`).

:func:`hyro_edu.hierarchy.tree_cuts.sample_cuts` is ``sample_treecuts.py --multi``: rates 0.9, 0.7, 0.5, 0.3, 0.1 in that
order, drawing until 5 **new** cuts are found per rate (new = a name tuple not seen at any rate),
from one ``torch.Generator`` seeded with 100.  ProTeCt's stored files were drawn with the CUDA
generator and cannot be re-drawn; on the toy world this rule gives the design notes' test vector
(46 draws, sizes 3, 17, 5, 5, 10, ...; tested).  :func:`~hyro_edu.hierarchy.tree_cuts.save_cuts` /
:func:`~hyro_edu.hierarchy.tree_cuts.load_cuts` store a cut set as JSON (ProTeCt pickles ``{idx: [names, tgt_mapping]}``).
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from numbers import Real
from typing import Optional, Sequence, Union

import torch

from hyro_edu.core import checks as _checks
from hyro_edu.hierarchy.taxonomic_tree import TaxonomicTree

__all__ = [
    "TreeCut",
    "dropout_rate",
    "check_cuts",
    "count_cuts",
    "random_cut",
    "sample_cuts",
    "DEFAULT_RATES",
    "save_cuts",
    "load_cuts",
]

#: ProTeCt's dropout rates for the stored cut sets, in drawing order.
DEFAULT_RATES: tuple[float, ...] = (0.9, 0.7, 0.5, 0.3, 0.1)
_FORMAT = "hyro_edu.tree_cuts"


def _check_tree(tree) -> TaxonomicTree:
    if not isinstance(tree, TaxonomicTree):
        raise ValueError(f"tree must be a hyro_edu.hierarchy.taxonomic_tree.TaxonomicTree, got {type(tree).__name__}")
    return tree


def dropout_rate(p, name: str = "dropout") -> float:
    """``p`` as a float if it is a number strictly inside ``(0, 1)``, else ``ValueError`` naming ``name``."""
    if isinstance(p, bool) or not isinstance(p, Real) or not math.isfinite(float(p)) or not 0 < float(p) < 1:
        raise ValueError(f"{name} must be a number in the open interval (0, 1), got {p!r}")
    return float(p)


@dataclass(frozen=True)
class TreeCut:
    """A tree cut: its nodes (dfs ids, increasing), their names, and the leaf-label -> cut-index map.

    Build it with :meth:`~hyro_edu.hierarchy.tree_cuts.TreeCut.from_nodes` or
    :meth:`~hyro_edu.hierarchy.tree_cuts.TreeCut.from_names`, which check that every leaf is
    covered exactly once.  ``params`` are the cut's parameter indices (dfs id - 1), the columns of
    a ``(B, num_params)`` logit matrix that form the cut's classifier.  ``mapping`` has one entry
    per leaf label; ``mapping[l]`` is the position in ``nodes`` of leaf ``l``'s ancestor-or-self.
    """

    nodes: tuple[int, ...]
    names: tuple[str, ...]
    mapping: tuple[int, ...]

    def __post_init__(self):
        if not self.nodes or len(self.names) != len(self.nodes) or list(self.nodes) != sorted(set(self.nodes)):
            raise ValueError(f"nodes must be increasing distinct dfs ids, one per name; got {self.nodes} and {self.names}")
        if not self.mapping or not all(0 <= m < len(self.nodes) for m in self.mapping):
            raise ValueError(f"mapping must send every leaf label to a cut index in [0, {len(self.nodes) - 1}], "
                             f"got {self.mapping}")

    def belongs_to(self, tree: TaxonomicTree) -> bool:
        """Whether this is a cut of ``tree``: same names at the same dfs ids, one mapping entry per label."""
        return (
            len(self.mapping) == tree.num_labels
            and self.nodes[-1] < len(tree)
            and all(tree.names[v] == name for v, name in zip(self.nodes, self.names))
        )

    @classmethod
    def from_nodes(cls, tree: TaxonomicTree, nodes: Sequence[int]) -> "TreeCut":
        """The cut made of these dfs ids (any order; stored sorted).  ``ValueError`` naming
        ``nodes`` if one is the root or out of range, repeats, or a leaf is covered zero times or
        twice."""
        tree = _check_tree(tree)
        if isinstance(nodes, torch.Tensor):
            nodes = nodes.tolist()
        if isinstance(nodes, str) or not isinstance(nodes, Sequence) or len(nodes) == 0:
            raise ValueError(f"nodes must be a non-empty sequence of dfs ids, got {nodes!r}")
        ids = []
        for k, v in enumerate(nodes):
            v = _checks.integer(v, f"nodes[{k}]", 1, len(tree) - 1)
            ids.append(v)
        if len(set(ids)) != len(ids):
            raise ValueError(f"nodes must be distinct, got {list(nodes)}")
        ids.sort()
        position = {v: k for k, v in enumerate(ids)}
        mapping = []
        for l, leaf in enumerate(tree.leaves):
            hits = [position[a] for a in [leaf, *tree.ancestors(leaf)] if a in position]
            if len(hits) != 1:
                raise ValueError(
                    f"nodes must be a tree cut (every leaf covered exactly once); leaf {tree.names[leaf]!r} "
                    f"is covered {len(hits)} times by {[tree.names[v] for v in ids]}"
                )
            mapping.append(hits[0])
        return cls(tuple(ids), tuple(tree.names[v] for v in ids), tuple(mapping))

    @classmethod
    def from_names(cls, tree: TaxonomicTree, names: Sequence[str]) -> "TreeCut":
        """The cut made of the nodes with these names; ``ValueError`` naming ``names`` for a name
        not in the tree (then as :meth:`hyro_edu.hierarchy.tree_cuts.TreeCut.from_nodes`)."""
        tree = _check_tree(tree)
        if isinstance(names, str) or not isinstance(names, Sequence):
            raise ValueError(f"names must be a sequence of node names, got {names!r}")
        ids = []
        for k, name in enumerate(names):
            if not isinstance(name, str) or name not in tree.names:
                raise ValueError(f"names[{k}] must be a node of the tree, got {name!r}")
            ids.append(tree.node(name))
        return cls.from_nodes(tree, ids)

    def __len__(self) -> int:
        return len(self.nodes)

    @property
    def params(self) -> tuple[int, ...]:
        """Parameter indices of the cut's nodes (``node - 1``)."""
        return tuple(v - 1 for v in self.nodes)

    def targets(self, labels: torch.Tensor) -> torch.Tensor:
        """Cut indices of leaf labels: ``mapping[labels]`` (int64, shape of ``labels``)."""
        labels = torch.as_tensor(labels)
        bad = (labels < 0) | (labels >= len(self.mapping))
        if bool(bad.any()):
            raise ValueError(f"labels must be leaf labels in [0, {len(self.mapping) - 1}], got {labels[bad][:5].tolist()}")
        return torch.tensor(self.mapping, dtype=torch.long, device=labels.device)[labels.long()]


def count_cuts(tree: TaxonomicTree) -> int:
    r"""Number of distinct cuts that :func:`hyro_edu.hierarchy.tree_cuts.random_cut` can return.

    :math:`f(\mathrm{leaf}) = 1`, :math:`f(v) = 1 + \prod_{c} f(c)` for a non-root internal node
    (collapsed, or expanded with any cut of each child) and :math:`\prod_c f(c)` at the root (always
    expanded).  The 7-node design example has 3; the toy world :math:`9^3 = 729`.
    """
    tree = _check_tree(tree)
    f = [1] * len(tree)
    for v in reversed(range(len(tree))):  # children have larger dfs ids
        kids = tree.children(v)
        if kids:
            f[v] = math.prod(f[c] for c in kids) + (0 if v == 0 else 1)
    return f[0]


def random_cut(tree: TaxonomicTree, dropout: float, *, generator: Optional[torch.Generator] = None) -> TreeCut:
    """One random tree cut by ProTeCt's rule (module docstring, steps 1-3) :cite:`wu2024protect`.

    ``dropout`` in ``(0, 1)`` is the probability that a non-root internal node is collapsed (the
    root never is).  Consumes exactly one ``torch.rand(len(tree.internal_nodes))`` from
    ``generator``, so a seeded generator makes it deterministic.  The result always covers every
    leaf exactly once (checked by :meth:`hyro_edu.hierarchy.tree_cuts.TreeCut.from_nodes`).
    """
    tree = _check_tree(tree)
    p = dropout_rate(dropout)
    u = torch.rand(len(tree.internal_nodes), generator=generator)
    kept = (u >= p).long()
    kept[0] = 1  # internal_nodes[0] is the root (sorted by depth)
    dep = tree.dependence
    expanded = (dep @ kept) == dep.sum(1)
    masks = tree.masks
    blocked = ((masks[~expanded] == 1).any(0)) | ((masks[expanded] == 0).any(0))
    nodes = (torch.nonzero(~blocked).flatten() + 1).tolist()
    return TreeCut.from_nodes(tree, nodes)


def sample_cuts(
    tree: TaxonomicTree,
    rates: Sequence[float] = DEFAULT_RATES,
    per_rate: int = 5,
    *,
    seed: int = 100,
    max_draws: int = 100_000,
) -> tuple[TreeCut, ...]:
    """``per_rate`` new cuts per dropout rate, rates in the given order (ProTeCt's stored sets).

    New means a tuple of names not drawn before at any rate.  All draws come from one
    ``torch.Generator().manual_seed(seed)`` through :func:`hyro_edu.hierarchy.tree_cuts.random_cut`, so the result is a function
    of the arguments (tested).  With the defaults: 25 cuts, 5 each at 0.9, 0.7, 0.5, 0.3, 0.1.
    ``ValueError`` if ``rates`` is empty, a rate is outside ``(0, 1)``, or more cuts are asked for
    than :func:`hyro_edu.hierarchy.tree_cuts.count_cuts` allows; ``RuntimeError`` if ``max_draws`` draws do not find them.
    """
    tree = _check_tree(tree)
    if isinstance(rates, (str, bytes)) or not isinstance(rates, Sequence) or len(rates) == 0:
        raise ValueError(f"rates must be a non-empty sequence of dropout rates in (0, 1), got {rates!r}")
    rates = [dropout_rate(r, f"rates[{k}]") for k, r in enumerate(rates)]
    per_rate = _checks.integer(per_rate, "per_rate", 1)
    max_draws = _checks.integer(max_draws, "max_draws", 1)
    seed = _checks.integer(seed, "seed", 0)
    total = count_cuts(tree)
    if per_rate * len(rates) > total:
        raise ValueError(
            f"per_rate * len(rates) = {per_rate * len(rates)} distinct cuts asked for, but the tree has only {total}"
        )
    generator = torch.Generator().manual_seed(seed)
    seen: set[tuple[str, ...]] = set()
    out: list[TreeCut] = []
    draws = 0
    for p in rates:
        found = 0
        while found < per_rate:
            if draws >= max_draws:
                raise RuntimeError(f"max_draws={max_draws} draws found only {len(out)} of {per_rate * len(rates)} cuts")
            cut = random_cut(tree, p, generator=generator)
            draws += 1
            if cut.names in seen:
                continue
            seen.add(cut.names)
            out.append(cut)
            found += 1
    return tuple(out)


def save_cuts(path: Union[str, os.PathLike], cuts: Sequence[TreeCut], tree: TaxonomicTree) -> None:
    """Write ``cuts`` to ``path`` as JSON: the tree's leaf names in label order and, per cut, its
    names and mapping.  ``ValueError`` if ``cuts`` is empty or a cut does not belong to ``tree``."""
    tree = _check_tree(tree)
    cuts = check_cuts(cuts)
    for k, cut in enumerate(cuts):
        if TreeCut.from_nodes(tree, cut.nodes) != cut:
            raise ValueError(f"cuts[{k}] is not a cut of this tree")
    data = {
        "format": _FORMAT,
        "version": 1,
        "labels": list(tree.label_names),
        "cuts": [{"names": list(c.names), "mapping": list(c.mapping)} for c in cuts],
    }
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=1)


def load_cuts(path: Union[str, os.PathLike], tree: TaxonomicTree) -> tuple[TreeCut, ...]:
    """Read a file written by :func:`hyro_edu.hierarchy.tree_cuts.save_cuts` and rebuild its cuts on ``tree``.

    ``ValueError`` if the file's labels are not ``tree``'s, a name is not in ``tree``, or a stored
    mapping differs from the one recomputed from the names.
    """
    tree = _check_tree(tree)
    with open(path, encoding="utf-8") as fh:
        data = json.load(fh)
    if not isinstance(data, dict) or data.get("format") != _FORMAT or data.get("version") != 1:
        raise ValueError(f"path must be a tree-cut file written by save_cuts, got {str(path)!r}")
    if tuple(data["labels"]) != tree.label_names:
        raise ValueError(f"tree must be the tree the cuts were saved with; the labels of {str(path)!r} differ")
    out = []
    for k, entry in enumerate(data["cuts"]):
        cut = TreeCut.from_names(tree, entry["names"])
        if list(cut.mapping) != list(entry["mapping"]):
            raise ValueError(f"cut {k} of {str(path)!r} has a mapping that does not match its names")
        out.append(cut)
    return check_cuts(out)


def check_cuts(cuts, name: str = "cuts") -> tuple[TreeCut, ...]:
    """``cuts`` as a tuple if it is a non-empty sequence of
    :class:`~hyro_edu.hierarchy.tree_cuts.TreeCut`, else ``ValueError`` naming ``name``."""
    if isinstance(cuts, TreeCut) or not isinstance(cuts, Sequence):
        raise ValueError(f"{name} must be a sequence of TreeCut, got {type(cuts).__name__}")
    if len(cuts) == 0:
        raise ValueError(f"{name} must hold at least one cut, got an empty list")
    for k, c in enumerate(cuts):
        if not isinstance(c, TreeCut):
            raise ValueError(f"{name}[{k}] must be a hyro_edu.hierarchy.tree_cuts.TreeCut, got {type(c).__name__}")
    return tuple(cuts)
