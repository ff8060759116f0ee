r"""Embedding trees in Euclidean space and in the Poincaré ball, and measuring how well it worked.

* :func:`distortion` -- worst-case and average distortion, and mean average
  precision (MAP) of the tree's neighbourhoods (Nickel & Kiela 2017; Sala et
  al. 2018).
* :func:`sarkar_embedding` -- Sarkar's combinatorial construction in the
  hyperbolic plane (Sarkar 2011, as used by Sala et al. 2018): every node sits
  at hyperbolic distance ``tau`` from its parent, children spread evenly
  around it.  Worst-case distortion tends to 1 as ``tau`` grows, which needs
  points ever closer to the boundary: precision limits how good it gets.
* :func:`fit_embedding` -- gradient descent on the relative-error stress
  :math:`\frac{1}{|P|}\sum_{(u,v) \in P}(\alpha\, d_E(u,v) / d_T(u,v) - 1)^2`
  in either geometry, with the same optimiser, steps and learnable scale
  :math:`\alpha`, so the two geometries are compared on equal terms.

Curvature convention: ``c > 0`` means curvature ``-c``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

import hyro_edu.geometry._ball as _ball
from hyro_edu.core import checks as _checks
from hyro_edu.geometry import poincare as P
from hyro_edu.hierarchy.trees import Tree

__all__ = ["Distortion", "distortion", "sarkar_embedding", "fit_embedding", "embedded_distances"]


@dataclass(frozen=True)
class Distortion:
    """How far embedded distances are from tree distances.

    worst : ``max(ρ) / min(ρ)`` over node pairs, ``ρ = d_emb / d_tree``; 1 is perfect.
        It is invariant to a global rescaling of the embedding.
    average : mean of ``|α ρ - 1|`` at the rescaling ``α = Σρ / Σρ²`` that best
        fits ``α ρ ≈ 1``; 0 is perfect.
    map : mean average precision of recovering each node's tree neighbours
        from embedded distances; 1 is perfect.
    """

    worst: float
    average: float
    map: float


def _pairs(n: int):
    return torch.triu_indices(n, n, offset=1)


def distortion(d_embedded: torch.Tensor, d_tree: torch.Tensor) -> Distortion:
    """Distortion of an embedding given both ``(N, N)`` distance matrices."""
    if d_embedded.shape != d_tree.shape or d_tree.dim() != 2 or d_tree.shape[0] != d_tree.shape[1]:
        raise ValueError(
            f"d_embedded and d_tree must be square matrices of the same shape, got {tuple(d_embedded.shape)} "
            f"and {tuple(d_tree.shape)}"
        )
    n = d_tree.shape[0]
    i, j = _pairs(n)
    de, dt = d_embedded[i, j].double(), d_tree[i, j].double()
    if bool((dt <= 0).any()):
        raise ValueError("d_tree must be positive between distinct nodes")
    rho = de / dt
    worst = (rho.max() / rho.min()).item() if bool(rho.min() > 0) else math.inf
    alpha = rho.sum() / (rho * rho).sum()
    average = (alpha * rho - 1).abs().mean().item()
    return Distortion(worst=worst, average=average, map=_mean_average_precision(d_embedded.double(), d_tree.double()))


def _mean_average_precision(d_embedded: torch.Tensor, d_tree: torch.Tensor) -> float:
    n = d_tree.shape[0]
    aps = []
    for u in range(n):
        others = torch.cat([torch.arange(u), torch.arange(u + 1, n)])
        neighbours = d_tree[u, others] == 1
        if not bool(neighbours.any()):
            continue
        order = torch.argsort(d_embedded[u, others], stable=True)
        hits = neighbours[order].double()
        ranks = torch.arange(1, len(others) + 1, dtype=torch.float64)
        precision_at_hits = (hits.cumsum(0) / ranks)[hits.bool()]
        aps.append(precision_at_hits.mean().item())
    return sum(aps) / len(aps)


def embedded_distances(points: torch.Tensor, *, geometry: str, c: float = 1.0) -> torch.Tensor:
    """All pairwise distances of ``points (N, n)``: Euclidean, or Poincaré with curvature ``-c``."""
    if geometry == "euclidean":
        return torch.cdist(points, points)
    if geometry == "poincare":
        return P.pairwise_dist(points, points, c=c)
    raise ValueError(f"geometry must be 'euclidean' or 'poincare', got {geometry!r}")


def sarkar_embedding(tree: Tree, *, tau: float, c: float = 1.0, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Sarkar's construction of ``tree`` in the Poincaré disk of curvature ``-c``: points ``(N, 2)``.

    The root is at the origin.  For a node ``x`` move it to the origin with the
    isometry ``y -> (-x) ⊕ y``; its parent then lies in some direction ``θ``,
    and its ``k`` children go at hyperbolic distance ``tau`` in the directions
    ``θ + 2π j / (k + 1)``, ``j = 1..k``; move back with ``y -> x ⊕ y``.
    Points are not projected, so a ``tau`` too large for ``dtype`` shows up as
    points rounded onto the boundary (``inf`` distances).
    """
    c = _checks.curvature(c)
    if not (isinstance(tau, (int, float)) and math.isfinite(tau) and tau > 0):
        raise ValueError(f"tau must be a finite number > 0, got {tau!r}")
    n = len(tree)
    pts = torch.zeros(n, 2, dtype=dtype)
    r_local = math.tanh(math.sqrt(c) * tau / 2) / math.sqrt(c)  # Euclidean norm at distance tau from 0
    for x in range(n):
        kids = tree.children(x)
        if not kids:
            continue
        if tree.parents[x] < 0:
            base, slots = 0.0, len(kids)
            angles = [base + 2 * math.pi * j / slots for j in range(len(kids))]
        else:
            local_parent = _mobius_add_unprojected(-pts[x], pts[tree.parents[x]], c)
            base = math.atan2(local_parent[1].item(), local_parent[0].item())
            angles = [base + 2 * math.pi * j / (len(kids) + 1) for j in range(1, len(kids) + 1)]
        for kid, angle in zip(kids, angles):
            local = torch.tensor([math.cos(angle), math.sin(angle)], dtype=dtype) * r_local
            pts[kid] = _mobius_add_unprojected(pts[x], local, c)
    return pts


def _mobius_add_unprojected(x, y, c):
    # Points may be rounded onto the boundary for large tau; that is the point
    # of the precision experiment, so no projection and no inside-ball check.
    return _ball.mobius_add(x, y, c, -1)


@dataclass
class FittedEmbedding:
    """Result of :func:`fit_embedding`: the points, the learnt scale and the loss curve."""

    points: torch.Tensor
    scale: float
    losses: list[float]


def fit_embedding(
    tree: Tree,
    *,
    geometry: str,
    dim: int = 2,
    c: float = 1.0,
    steps: int = 1500,
    lr: float = 0.05,
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
) -> FittedEmbedding:
    """Fit an embedding of ``tree`` by Adam on the relative-error stress (module docstring).

    Poincaré points are parametrised as ``expmap0(u)`` with ``u`` a free tangent
    vector at the origin; Euclidean points are ``u`` itself.  Both start from
    the same small random ``u`` and learn a global scale ``α = exp(log_α)``.
    """
    if geometry not in ("euclidean", "poincare"):
        raise ValueError(f"geometry must be 'euclidean' or 'poincare', got {geometry!r}")
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
    c = _checks.curvature(c)
    gen = torch.Generator().manual_seed(seed)
    n = len(tree)
    i, j = _pairs(n)
    d_tree = tree.distances(dtype)[i, j]
    u = (1e-2 * torch.randn(n, dim, generator=gen, dtype=dtype)).requires_grad_(True)
    log_alpha = torch.zeros((), dtype=dtype, requires_grad=True)
    opt = torch.optim.Adam([u, log_alpha], lr=lr)
    losses = []
    for _ in range(steps):
        if geometry == "euclidean":
            pts = u
            d = (pts[i] - pts[j]).norm(dim=-1)
        else:
            pts = P.expmap0(u, c=c)
            d = P.dist(pts[i], pts[j], c=c)
        loss = ((log_alpha.exp() * d / d_tree - 1) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    with torch.no_grad():
        pts = u.detach() if geometry == "euclidean" else P.expmap0(u.detach(), c=c)
    return FittedEmbedding(points=pts, scale=log_alpha.exp().item(), losses=losses)
