"""Rooted trees: the combinatorial objects that hyperbolic space embeds well.

A :class:`Tree` stores node names and parent indices (the root has parent
``-1``); nodes are numbered so that every parent comes before its children.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Mapping, Sequence, Union

import torch

__all__ = ["Tree", "balanced_tree"]

Nested = Union[Mapping[str, "Nested"], Sequence[str], None]


@dataclass(frozen=True)
class Tree:
    """A rooted tree with named nodes.

    Attributes
    ----------
    names : tuple of str, one per node (unique).
    parents : tuple of int, ``parents[i]`` is the index of node ``i``'s parent;
        ``-1`` for the root, which is node 0.  Parents precede children.
    """

    names: tuple[str, ...]
    parents: tuple[int, ...]

    def __post_init__(self):
        if len(self.names) != len(self.parents):
            raise ValueError(f"names and parents must have the same length, got {len(self.names)} and {len(self.parents)}")
        if not self.names:
            raise ValueError("names must contain at least the root")
        if self.parents[0] != -1:
            raise ValueError(f"parents[0] must be -1 (node 0 is the root), got {self.parents[0]}")
        for i, p in enumerate(self.parents[1:], start=1):
            if not 0 <= p < i:
                raise ValueError(f"parents[{i}] must be in [0, {i - 1}] (parents precede children), got {p}")
        if len(set(self.names)) != len(self.names):
            raise ValueError("names must be unique")

    # construction ------------------------------------------------------------
    @classmethod
    def from_nested(cls, root: str, children: Nested) -> "Tree":
        """Build a tree from ``{name: subtree}`` mappings whose leaves are lists of names (or ``None``).

        Nodes are numbered breadth-first, so depth is non-decreasing with the index.
        """
        names, parents = [root], [-1]
        queue: deque = deque([(0, children)])
        while queue:
            parent, sub = queue.popleft()
            if sub is None:
                continue
            items = sub.items() if isinstance(sub, Mapping) else ((name, None) for name in sub)
            for name, grandchildren in items:
                names.append(str(name))
                parents.append(parent)
                queue.append((len(names) - 1, grandchildren))
        return cls(tuple(names), tuple(parents))

    # structure ---------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.names)

    def children(self, i: int) -> list[int]:
        return [j for j, p in enumerate(self.parents) if p == i]

    @property
    def depths(self) -> list[int]:
        depth = [0] * len(self)
        for i, p in enumerate(self.parents[1:], start=1):
            depth[i] = depth[p] + 1
        return depth

    @property
    def leaves(self) -> list[int]:
        has_child = set(self.parents[1:])
        return [i for i in range(len(self)) if i not in has_child]

    @property
    def edges(self) -> list[tuple[int, int]]:
        """``(parent, child)`` pairs."""
        return [(p, i) for i, p in enumerate(self.parents) if p >= 0]

    def ancestors(self, i: int) -> list[int]:
        """Ancestors of node ``i``, nearest first (the root last)."""
        out = []
        while self.parents[i] >= 0:
            i = self.parents[i]
            out.append(i)
        return out

    def distances(self, dtype: torch.dtype = torch.float64) -> torch.Tensor:
        """Shortest-path lengths (every edge has length 1) between all nodes, shape ``(N, N)``.

        ``d(u, v) = depth(u) + depth(v) - 2·depth(lca(u, v))``.
        """
        n = len(self)
        depth = torch.tensor(self.depths, dtype=dtype)
        # anc[i, j] = 1 if j is i or an ancestor of i
        anc = torch.zeros(n, n, dtype=dtype)
        for i in range(n):
            anc[i, i] = 1
            for a in self.ancestors(i):
                anc[i, a] = 1
        # number of common ancestors (self included) = depth(lca) + 1
        common = anc @ anc.T
        return depth[:, None] + depth[None, :] - 2 * (common - 1)


def balanced_tree(branching: int, depth: int) -> Tree:
    """The complete ``branching``-ary tree of the given depth (``(b^(depth+1) - 1)/(b - 1)`` nodes)."""
    if not isinstance(branching, int) or branching < 1:
        raise ValueError(f"branching must be an integer >= 1, got {branching!r}")
    if not isinstance(depth, int) or depth < 0:
        raise ValueError(f"depth must be an integer >= 0, got {depth!r}")
    names, parents = ["r"], [-1]
    frontier = [0]
    for _ in range(depth):
        nxt = []
        for p in frontier:
            for k in range(branching):
                names.append(f"{names[p]}.{k}")
                parents.append(p)
                nxt.append(len(names) - 1)
        frontier = nxt
    return Tree(tuple(names), tuple(parents))
