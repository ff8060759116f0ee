r"""A taxonomy numbered the way ProTeCt numbers it: depth-first ids, labels, codewords and masks.

.. math::
    \mathrm{codeword}(v)_l = \mathbb{1}[\,\mathrm{leaf}_l \preceq v\,], \qquad
    \mathrm{dependence}_{ij} = \mathbb{1}[\,j \preceq i\,]

where :math:`u \preceq v` reads "``u`` is ``v`` or a descendant of ``v``".  ProTeCt
:cite:`wu2024protect` (its ``loader/treelibs.py``) trains one prompt per non-root node of a
taxonomy and numbers the nodes **depth-first** (pre-order, the root is 0).  The package's
:class:`hyro_edu.hierarchy.trees.Tree` built by ``Tree.from_nested`` numbers them
**breadth-first**.  On a tree whose leaves sit at mixed depths the two numberings order the leaves
differently, and ProTeCt's tree-cut target mapping (``hyro_edu.hierarchy.tree_cuts``) is only
correct under the depth-first one.  :class:`~hyro_edu.hierarchy.taxonomic_tree.TaxonomicTree` holds both
and converts between them.

The numbering rules (all tested on the 7-node example of the design notes, root -> {A, c},
A -> {a1, B}, B -> {b1, b2}, whose leaf c has depth 1):

* **node ids** (``dfs`` ids): pre-order depth-first, children visited in increasing id of the
  wrapped :class:`hyro_edu.hierarchy.trees.Tree` (for a tree from nested names or folders: in the
  order given, or sorted folder names).  Example: root 0, A 1, a1 2, B 3, b1 4, b2 5, c 6.
* **parameters**: the non-root nodes, parameter index = dfs id - 1 (one prompt or one logit each).
* **labels**: the leaves sorted by dfs id; label ``l`` is node ``leaves[l]``.  Example: a1 0,
  b1 1, b2 2, c 3; in the breadth-first tree the leaves come as (c, a1, b1, b2).
* **internal nodes**: the nodes with children, root included, stable-sorted by depth (the
  HypModalAlign loader's order; on the toy world this is breadth-first order).
* ``sublabels[l, i]``: the child index, within internal node ``i``'s children, of the child on
  leaf ``l``'s path, or -1 if ``l`` is not under ``i``.
* ``codewords[p, l] = 1`` iff leaf ``l`` is at or below parameter ``p``'s node.
* ``dependence[i, j] = 1`` iff internal node ``j`` is internal node ``i`` or one of its ancestors.
* ``masks[i, p]``: 1 if parameter ``p`` is a descendant of internal node ``i``, 0 if it is ``i``
  itself or one of ``i``'s non-root ancestors, -1 otherwise.  (ProTeCt also writes 1 at
  ``masks[0, -1]`` because the root's parameter index is -1; the root's row is all ones anyway.)

Folder trees follow ProTeCt's data layout: a directory whose sub-directories are the classes,
nested to any depth; files are ignored.  ProTeCt lists folders with ``os.listdir`` (an
arbitrary order); here they are sorted, so the ids are reproducible.  :func:`hyro_edu.hierarchy.taxonomic_tree.clean_name` is
ProTeCt's ``prepro_node_name`` (digits dropped, a trailing "_" removed, "_" -> space), used for
the prompt texts (:attr:`hyro_edu.hierarchy.taxonomic_tree.TaxonomicTree.prompt_names`); node names themselves stay as given.
"""
from __future__ import annotations

import os
import re
from collections import deque
from functools import cached_property
from numbers import Integral
from pathlib import Path
from typing import Mapping, Sequence, Union

import torch

from hyro_edu.hierarchy.trees import Nested, Tree

__all__ = ["clean_name", "TaxonomicTree"]


def clean_name(name: str) -> str:
    """ProTeCt's prompt text of a node name: digits dropped, one trailing "_" removed, "_" -> " ".

    ``clean_name("n02084071_dog_")`` is ``"n dog"``; ``clean_name("pickup_truck")`` is
    ``"pickup truck"`` :cite:`wu2024protect` (``prepro_node_name``).
    """
    if not isinstance(name, str):
        raise ValueError(f"name must be a str, got {type(name).__name__}")
    out = re.sub(r"[0-9]", "", name)
    if out.endswith("_"):
        out = out[:-1]
    return out.replace("_", " ")


def _as_ids(ids, n: int, name: str):
    """An int, a sequence of ints or an integer tensor, each in ``[0, n)``; returned as given type."""
    if isinstance(ids, torch.Tensor):
        if ids.is_floating_point() or ids.dtype == torch.bool:
            raise ValueError(f"{name} must hold integer node ids, got dtype {ids.dtype}")
        bad = (ids < 0) | (ids >= n)
        if bool(bad.any()):
            raise ValueError(f"{name} must be node ids in [0, {n - 1}], got {ids[bad].flatten()[:5].tolist()}")
        return ids
    if isinstance(ids, Integral) and not isinstance(ids, bool):
        if not 0 <= ids < n:
            raise ValueError(f"{name} must be a node id in [0, {n - 1}], got {ids!r}")
        return int(ids)
    if isinstance(ids, Sequence) and not isinstance(ids, str):
        return [_as_ids(i, n, f"{name}[{k}]") for k, i in enumerate(ids)]
    raise ValueError(f"{name} must be an int, a sequence of ints or an integer tensor, got {type(ids).__name__}")


def _map(table: tuple[int, ...], ids, name: str):
    ids = _as_ids(ids, len(table), name)
    if isinstance(ids, torch.Tensor):
        return torch.tensor(table, dtype=torch.long, device=ids.device)[ids.long()]
    if isinstance(ids, int):
        return table[ids]
    return [table[i] for i in ids]


class TaxonomicTree:
    r"""A :class:`hyro_edu.hierarchy.trees.Tree` with ProTeCt's depth-first numbering and matrices.

    ``TaxonomicTree(tree)`` wraps ``tree`` (any valid :class:`hyro_edu.hierarchy.trees.Tree`;
    its own ids are the "tree ids", breadth-first for trees from ``Tree.from_nested`` and from
    the constructors :meth:`~hyro_edu.hierarchy.taxonomic_tree.TaxonomicTree.from_nested`,
    :meth:`~hyro_edu.hierarchy.taxonomic_tree.TaxonomicTree.from_edges` and
    :meth:`~hyro_edu.hierarchy.taxonomic_tree.TaxonomicTree.from_folder`).  The depth-first ids ("dfs ids") visit
    children in increasing tree id.  :meth:`~hyro_edu.hierarchy.taxonomic_tree.TaxonomicTree.to_dfs` and
    :meth:`~hyro_edu.hierarchy.taxonomic_tree.TaxonomicTree.to_tree_ids` convert node ids both ways and are inverse
    permutations (tested on mixed-depth trees); ``label_of_tree_leaf`` and ``tree_leaf_of_label``
    do the same for leaf classes (label order vs the order of ``tree.leaves``).

    Every other attribute uses dfs ids, parameter indices (dfs id - 1), labels (index into
    ``leaves``) or internal-node indices (index into ``internal_nodes``), as listed in
    :mod:`hyro_edu.hierarchy.taxonomic_tree` and :cite:`wu2024protect` (``loader/treelibs.py``).
    The matrices are int64 tensors, built once and cached: do not modify them in place.
    """

    def __init__(self, tree: Tree):
        if not isinstance(tree, Tree):
            raise ValueError(f"tree must be a hyro_edu.hierarchy.trees.Tree, got {type(tree).__name__}")
        if len(tree) < 2:
            raise ValueError("tree must have at least one node below the root (a label)")
        self.tree = tree
        kids = [[] for _ in range(len(tree))]
        for i, p in enumerate(tree.parents[1:], start=1):
            kids[p].append(i)
        order, stack = [], [0]
        while stack:
            v = stack.pop()
            order.append(v)
            stack.extend(reversed(kids[v]))
        #: tree id of dfs node ``d``
        self.tree_of_dfs: tuple[int, ...] = tuple(order)
        inverse = [0] * len(order)
        for d, t in enumerate(order):
            inverse[t] = d
        #: dfs id of tree node ``t``
        self.dfs_of_tree: tuple[int, ...] = tuple(inverse)
        self.names: tuple[str, ...] = tuple(tree.names[t] for t in order)
        self.parents: tuple[int, ...] = tuple(-1 if t == 0 else inverse[tree.parents[t]] for t in order)
        self._children: tuple[tuple[int, ...], ...] = tuple(
            tuple(inverse[c] for c in kids[t]) for t in order
        )
        depth = [0] * len(order)
        for d in range(1, len(order)):
            depth[d] = depth[self.parents[d]] + 1
        self.depths: tuple[int, ...] = tuple(depth)
        self.leaves: tuple[int, ...] = tuple(d for d in range(len(order)) if not self._children[d])
        self.internal_nodes: tuple[int, ...] = tuple(
            sorted((d for d in range(len(order)) if self._children[d]), key=lambda d: depth[d])
        )
        self._label = {v: l for l, v in enumerate(self.leaves)}
        self._internal = {v: i for i, v in enumerate(self.internal_nodes)}
        self._index = {name: d for d, name in enumerate(self.names)}
        tree_leaves = tree.leaves
        self.label_of_tree_leaf: tuple[int, ...] = tuple(self._label[inverse[t]] for t in tree_leaves)
        back = [0] * len(tree_leaves)
        for k, l in enumerate(self.label_of_tree_leaf):
            back[l] = k
        self.tree_leaf_of_label: tuple[int, ...] = tuple(back)

    # construction ------------------------------------------------------------
    @classmethod
    def from_tree(cls, tree: Tree) -> "TaxonomicTree":
        """Same as ``TaxonomicTree(tree)``."""
        return cls(tree)

    @classmethod
    def from_nested(cls, root: str, children: Nested) -> "TaxonomicTree":
        """From ``{name: subtree}`` mappings whose leaves are lists of names or ``None`` (as
        ``Tree.from_nested``, breadth-first tree ids).  A name that occurs twice is a node with
        two parents: ``ValueError`` naming it."""
        seen: dict[str, str] = {}
        stack = [(str(root), children, None)]
        while stack:
            name, sub, parent = stack.pop()
            if name in seen:
                raise ValueError(
                    f"children must describe a tree: node {name!r} occurs twice, under {seen[name]!r} "
                    f"and under {parent!r} (a node with two parents)"
                )
            seen[name] = parent
            if sub is None:
                continue
            if isinstance(sub, Mapping):
                stack.extend((str(k), v, name) for k, v in sub.items())
            elif isinstance(sub, Sequence) and not isinstance(sub, str):
                stack.extend((str(k), None, name) for k in sub)
            else:
                raise ValueError(f"children must be nested mappings, lists of names or None; got {sub!r} under {name!r}")
        return cls(Tree.from_nested(str(root), children))

    @classmethod
    def from_edges(cls, edges: Sequence[tuple[str, str]]) -> "TaxonomicTree":
        """From ``(parent, child)`` name pairs; children keep the order of their first edge.

        ``ValueError`` naming ``edges`` when a node has two parents, when there is not exactly
        one root (a node that is nobody's child), or when some nodes form a cycle (they cannot be
        reached from the root).
        """
        if isinstance(edges, (str, bytes)) or not isinstance(edges, Sequence) or not edges:
            raise ValueError(f"edges must be a non-empty sequence of (parent, child) pairs, got {edges!r}")
        parent_of: dict[str, str] = {}
        kids: dict[str, list[str]] = {}
        for k, edge in enumerate(edges):
            if not isinstance(edge, Sequence) or isinstance(edge, str) or len(edge) != 2:
                raise ValueError(f"edges[{k}] must be a (parent, child) pair, got {edge!r}")
            p, c = str(edge[0]), str(edge[1])
            if p == c:
                raise ValueError(f"edges must describe a tree: edges[{k}] is a cycle {p!r} -> {p!r}")
            if c in parent_of:
                if parent_of[c] == p:
                    raise ValueError(f"edges must describe a tree: edge ({p!r}, {c!r}) occurs twice")
                raise ValueError(
                    f"edges must describe a tree: node {c!r} has two parents ({parent_of[c]!r} and {p!r})"
                )
            parent_of[c] = p
            kids.setdefault(p, []).append(c)
        nodes = list(dict.fromkeys([n for e in edges for n in (str(e[0]), str(e[1]))]))
        roots = [n for n in nodes if n not in parent_of]
        if len(roots) != 1:
            raise ValueError(f"edges must describe a tree with exactly one root, found roots {roots}"
                             + (" (every node has a parent: a cycle)" if not roots else ""))
        reached, queue = {roots[0]}, deque([roots[0]])
        while queue:
            for c in kids.get(queue.popleft(), []):
                reached.add(c)
                queue.append(c)
        if len(reached) != len(nodes):
            cyc = [n for n in nodes if n not in reached]
            raise ValueError(f"edges must describe a tree: nodes {cyc} form a cycle (unreachable from {roots[0]!r})")

        def nest(name):
            sub = kids.get(name)
            return None if sub is None else {c: nest(c) for c in sub}

        return cls(Tree.from_nested(roots[0], nest(roots[0])))

    @classmethod
    def from_folder(cls, path: Union[str, os.PathLike]) -> "TaxonomicTree":
        """From a directory whose sub-directories are the classes, nested to any depth (ProTeCt's
        layout); the root is named after ``path``.  Sub-directories are taken in sorted order and
        files are ignored.  ``ValueError`` naming ``path`` if it is not a directory, has no
        sub-directory, holds a symbolic-link cycle, or a folder name occurs twice."""
        root = Path(path)
        if not root.is_dir():
            raise ValueError(f"path must be a directory, got {str(path)!r}")

        def walk(folder: Path, seen: frozenset):
            real = folder.resolve()
            if real in seen:
                raise ValueError(f"path must hold a tree of folders: {str(folder)!r} links back to an ancestor (a cycle)")
            subs = sorted(p for p in folder.iterdir() if p.is_dir())
            if not subs:
                return None
            return {p.name: walk(p, seen | {real}) for p in subs}

        nested = walk(root, frozenset())
        if nested is None:
            raise ValueError(f"path must contain class sub-directories, {str(path)!r} has none")
        name = root.resolve().name or str(root)
        try:
            return cls.from_nested(name, nested)
        except ValueError as err:
            raise ValueError(f"path {str(path)!r}: {err}") from None

    # structure ---------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.names)

    def __repr__(self) -> str:
        return (f"TaxonomicTree(root={self.names[0]!r}, nodes={len(self)}, labels={self.num_labels}, "
                f"internal={len(self.internal_nodes)})")

    @property
    def num_params(self) -> int:
        """The number of parameters, i.e. of non-root nodes, ``len(self) - 1``."""
        return len(self) - 1

    @property
    def num_labels(self) -> int:
        """Number of leaves (classes)."""
        return len(self.leaves)

    def children(self, node: int) -> tuple[int, ...]:
        """dfs ids of ``node``'s children, in order."""
        return self._children[_as_ids(node, len(self), "node")]

    def ancestors(self, node: int) -> list[int]:
        """dfs ids of ``node``'s proper ancestors, nearest first (the root last)."""
        node = _as_ids(node, len(self), "node")
        out = []
        while self.parents[node] >= 0:
            node = self.parents[node]
            out.append(node)
        return out

    def node(self, name: str) -> int:
        """dfs id of the node called ``name``; ``ValueError`` if there is none."""
        if name not in self._index:
            raise ValueError(f"name must be a node of the tree, got {name!r}")
        return self._index[name]

    def labels_of(self, names: Sequence[str]) -> torch.Tensor:
        """Labels (int64, shape ``(len(names),)``) of leaf names; ``ValueError`` for a name that is
        not a leaf of the tree."""
        out = []
        for k, name in enumerate(names):
            d = self._index.get(name)
            if d is None or d not in self._label:
                raise ValueError(f"names[{k}] must be a leaf of the tree, got {name!r}")
            out.append(self._label[d])
        return torch.tensor(out, dtype=torch.long)

    def label(self, node: int) -> int:
        """Label of the leaf with dfs id ``node``; ``ValueError`` if it is not a leaf."""
        node = _as_ids(node, len(self), "node")
        if node not in self._label:
            raise ValueError(f"node must be a leaf, got {node} ({self.names[node]!r}, which has children)")
        return self._label[node]

    def internal_index(self, node: int) -> int:
        """Index in ``internal_nodes`` of the internal node with dfs id ``node``."""
        node = _as_ids(node, len(self), "node")
        if node not in self._internal:
            raise ValueError(f"node must be an internal node, got {node} ({self.names[node]!r}, a leaf)")
        return self._internal[node]

    @property
    def label_names(self) -> tuple[str, ...]:
        """Leaf names in label order."""
        return tuple(self.names[v] for v in self.leaves)

    @property
    def param_names(self) -> tuple[str, ...]:
        """Node names of the parameters (``names[1:]``)."""
        return self.names[1:]

    @property
    def prompt_names(self) -> tuple[str, ...]:
        """:func:`hyro_edu.hierarchy.taxonomic_tree.clean_name` of every parameter's name (ProTeCt's prompt class texts)."""
        return tuple(clean_name(n) for n in self.param_names)

    @property
    def param_lists(self) -> tuple[tuple[int, ...], ...]:
        """Per internal node (in ``internal_nodes`` order): its children's parameter indices
        (ProTeCt's ``param_list``)."""
        return tuple(tuple(c - 1 for c in self._children[v]) for v in self.internal_nodes)

    # numberings --------------------------------------------------------------
    def to_dfs(self, tree_ids):
        """dfs ids of the nodes with these tree ids (int, sequence or integer tensor, same type out)."""
        return _map(self.dfs_of_tree, tree_ids, "tree_ids")

    def to_tree_ids(self, dfs_ids):
        """Tree ids (of ``tree``) of the nodes with these dfs ids; inverse of
        :meth:`~hyro_edu.hierarchy.taxonomic_tree.TaxonomicTree.to_dfs`."""
        return _map(self.tree_of_dfs, dfs_ids, "dfs_ids")

    # ProTeCt's matrices --------------------------------------------------------
    def _below(self, node: int) -> range:
        """dfs ids of ``node``'s subtree (itself included): a contiguous range in pre-order."""
        end = node + 1
        while end < len(self) and self.depths[end] > self.depths[node]:
            end += 1
        return range(node, end)

    def codeword(self, node: int) -> torch.Tensor:
        """``(num_labels,)`` int64: 1 for the leaves at or below ``node`` (a dfs id; the root's is all ones)."""
        node = _as_ids(node, len(self), "node")
        out = torch.zeros(self.num_labels, dtype=torch.long)
        for d in self._below(node):
            if d in self._label:
                out[self._label[d]] = 1
        return out

    @cached_property
    def codewords(self) -> torch.Tensor:
        """``(num_params, num_labels)`` int64: row ``p`` is
        :meth:`~hyro_edu.hierarchy.taxonomic_tree.TaxonomicTree.codeword` of node ``p + 1``."""
        return torch.stack([self.codeword(d) for d in range(1, len(self))])

    @cached_property
    def sublabels(self) -> torch.Tensor:
        """``(num_labels, num_internal)`` int64: child index under internal node ``i`` on leaf ``l``'s path, or -1."""
        out = torch.full((self.num_labels, len(self.internal_nodes)), -1, dtype=torch.long)
        for l, leaf in enumerate(self.leaves):
            child = leaf
            for a in self.ancestors(leaf):
                out[l, self._internal[a]] = self._children[a].index(child)
                child = a
        return out

    @cached_property
    def dependence(self) -> torch.Tensor:
        """``(num_internal, num_internal)`` int64: ``[i, j] = 1`` iff internal node ``j`` is ``i`` or an ancestor of ``i``."""
        m = len(self.internal_nodes)
        out = torch.zeros(m, m, dtype=torch.long)
        for i, v in enumerate(self.internal_nodes):
            out[i, i] = 1
            for a in self.ancestors(v):
                out[i, self._internal[a]] = 1
        return out

    @cached_property
    def masks(self) -> torch.Tensor:
        """``(num_internal, num_params)`` int64: 1 for descendants of internal node ``i``, 0 for ``i``
        and its non-root ancestors, -1 otherwise."""
        out = torch.full((len(self.internal_nodes), self.num_params), -1, dtype=torch.long)
        for i, v in enumerate(self.internal_nodes):
            for d in self._below(v)[1:]:
                out[i, d - 1] = 1
            for a in [v, *self.ancestors(v)]:
                if a != 0:
                    out[i, a - 1] = 0
        return out

    def check_labels(self, labels, name: str = "labels") -> torch.Tensor:
        """``labels`` as an int64 1-d tensor of labels in ``[0, num_labels)``; ``ValueError`` naming
        ``name`` otherwise (a label not in the tree)."""
        if not isinstance(labels, torch.Tensor):
            try:
                labels = torch.as_tensor(labels)
            except (TypeError, ValueError, RuntimeError):
                raise ValueError(f"{name} must be a 1-d tensor of integer labels, got {type(labels).__name__}") from None
        if labels.dim() != 1 or labels.is_floating_point() or labels.dtype == torch.bool or labels.is_complex():
            raise ValueError(f"{name} must be a 1-d tensor of integer labels, got shape {tuple(labels.shape)} "
                             f"and dtype {labels.dtype}")
        bad = (labels < 0) | (labels >= self.num_labels)
        if bool(bad.any()):
            raise ValueError(f"{name} must be leaf labels of the tree, in [0, {self.num_labels - 1}]; got "
                             f"{labels[bad][:5].tolist()}")
        return labels.long()
