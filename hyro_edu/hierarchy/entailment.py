r"""Entailment cones trained on a hierarchy: the partial order, the loss, the trainer, the metrics.

A :class:`~hyro_edu.hierarchy.trees.Tree` is a strict partial order ("``u`` entails ``v``" when
``u`` is a proper ancestor of ``v``).  Entailment-cone embeddings (Ganea, Bécigneul & Hofmann,
ICML 2018) give every node a point whose cone (:mod:`hyro_edu.geometry.cones`) contains the
points of its descendants and misses the others.  This module holds what needs the tree or trains:

* the order: :func:`transitive_closure`, :func:`positive_pairs`, :func:`non_entailed_pairs`,
  :func:`sample_negatives` (uniform non-entailed negatives);
* the max-margin loss :func:`margin_loss` over :func:`hyro_edu.geometry.cones.pair_energies`;
* the optimiser: :func:`project_annulus` (Ganea et al.'s clipping into the annulus where cones
  are defined) and :func:`rsgd_step` (Riemannian SGD in the Poincaré ball);
* the trainer :func:`fit_cones` (:class:`ConeFit`) and the metrics :func:`evaluate_cones`
  (:class:`ConeMetrics`).

**Curvature convention:** ``c > 0`` means curvature ``-c`` (the whole package).  Every function
also takes ``geometry="euclidean"`` (Euclidean cones, ``c`` ignored).  The book's chapter
"Entailment cones" runs all of it; HVSA (rejected ICLR submission), Eq. (9), uses the same loss.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from numbers import Real
from typing import Optional

import torch

import hyro_edu.geometry._ball as _ball
from hyro_edu.core import checks as _checks
from hyro_edu.core.numerics import ball_margin, floored, fp32_math, max_ball_norm, norm_keepdim
from hyro_edu.geometry.cones import (
    GEOMETRIES,
    aperture_constant,
    index_pairs,
    inner_radius,
    pair_energies,
)
from hyro_edu.hierarchy.trees import Tree

__all__ = [
    "transitive_closure",
    "positive_pairs",
    "non_entailed_pairs",
    "sample_negatives",
    "margin_loss",
    "project_annulus",
    "rsgd_step",
    "ConeFit",
    "fit_cones",
    "ConeMetrics",
    "evaluate_cones",
]


# ----------------------------------------------------------------------------
# a taxonomy as a partial order
# ----------------------------------------------------------------------------
def transitive_closure(tree: Tree) -> torch.Tensor:
    """``A (N, N)`` bool, ``A[u, v]`` true iff ``u`` is a proper ancestor of ``v`` (entails it).

    The strict partial order of the tree: irreflexive, antisymmetric and transitive (tested).
    """
    if not isinstance(tree, Tree):
        raise ValueError(f"tree must be a hyro_edu.hierarchy.trees.Tree, got {type(tree).__name__}")
    n = len(tree)
    anc = torch.zeros(n, n, dtype=torch.bool)
    for v, p in enumerate(tree.parents):
        if p >= 0:  # parents precede children, so anc[:, p] is complete already
            anc[:, v] = anc[:, p]
            anc[p, v] = True
    return anc


def positive_pairs(tree: Tree, *, closure: bool = True) -> torch.Tensor:
    """``(P, 2)`` long tensor of ``(general, specific)`` pairs.

    ``closure=True``: every (ancestor, descendant) pair -- the transitive closure.
    ``closure=False``: only the (parent, child) edges -- the transitive reduction.
    """
    if closure:
        return transitive_closure(tree).nonzero()
    return torch.tensor(tree.edges, dtype=torch.long).reshape(-1, 2)


def non_entailed_pairs(tree: Tree) -> torch.Tensor:
    """``(M, 2)`` long tensor: the ordered pairs ``(u, v)``, ``u != v``, where ``u`` does not
    entail ``v`` (not an ancestor of it).

    Their number is ``N (N - 1)`` minus the size of the transitive closure (tested).
    """
    closure = transitive_closure(tree)
    allowed = ~closure
    allowed.fill_diagonal_(False)
    return allowed.nonzero()


def sample_negatives(
    candidates: torch.Tensor, n: int, *, generator: Optional[torch.Generator] = None
) -> torch.Tensor:
    """``n`` rows of ``candidates (M, 2)`` drawn uniformly with replacement.

    ``candidates`` is typically :func:`non_entailed_pairs`.

    Deterministic for a seeded ``generator``.  Ganea et al.'s ``true_neg`` strategy samples among
    non-entailed pairs too, by corrupting one end of a positive pair; here every non-entailed pair
    has the same probability.
    """
    if (
        not isinstance(candidates, torch.Tensor)
        or candidates.dim() != 2
        or candidates.shape[1] != 2
        or len(candidates) == 0
    ):
        shape = tuple(candidates.shape) if isinstance(candidates, torch.Tensor) else candidates
        raise ValueError(f"candidates must be a tensor of shape (M, 2) with M >= 1, got {shape!r}")
    n = _checks.integer(n, "n", 0)
    idx = torch.randint(len(candidates), (n,), generator=generator)
    return candidates[idx]


# ----------------------------------------------------------------------------
# the max-margin loss and the trainer
# ----------------------------------------------------------------------------
def margin_loss(
    points: torch.Tensor,
    positives: torch.Tensor,
    negatives: torch.Tensor,
    *,
    c: float = 1.0,
    K: float = 0.1,
    margin: float = 0.01,
    geometry: str = "poincare",
    reduction: str = "sum",
) -> torch.Tensor:
    r"""Ganea et al.'s max-margin loss over entailment energies:

    .. math::
        \mathcal L = \sum_{(u,v)\in P} E(u, v)
        + \sum_{(u',v')\in N}\max\big(0, \gamma - E(u', v')\big).

    ``positives (P, 2)`` and ``negatives (M, 2)`` hold ``(general, specific)`` index pairs into
    ``points (N, n)``; ``margin`` is γ (``0.01`` in Ganea et al.'s ``params.py``).  Poincaré ball
    of curvature ``-c`` (``c > 0``) or Euclidean space.  ``reduction="sum"`` is the equation;
    ``"mean"`` divides it by ``P`` (so a learning rate does not depend on the batch size).

    Properties (tested): ``L >= 0``; ``L = 0`` iff every positive pair is inside its cone and every
    negative pair is outside by at least γ.  Ganea et al. 2018; HVSA, Eq. (9).
    """
    if not (isinstance(margin, Real) and math.isfinite(margin) and margin >= 0):
        raise ValueError(f"margin must be a finite number >= 0, got {margin!r}")
    if reduction not in ("sum", "mean"):
        raise ValueError(f"reduction must be 'sum' or 'mean', got {reduction!r}")
    index_pairs(negatives, len(points), "negatives")
    index_pairs(positives, len(points), "positives")
    energies = pair_energies(
        points, torch.cat([positives, negatives]), c=c, K=K, geometry=geometry
    )
    e_pos, e_neg = energies[: len(positives)], energies[len(positives) :]
    total = e_pos.sum() + torch.relu(margin - e_neg).sum()
    return total / max(len(positives), 1) if reduction == "mean" else total


def _check_gap(gap, K, dtype, geometry, outer):
    """``gap`` is None (the default gaps) or a number with a non-empty annulus; returns it."""
    if gap is None:
        return None
    eps = torch.finfo(dtype).eps
    if isinstance(gap, bool) or not isinstance(gap, Real) or not math.isfinite(float(gap)):
        raise ValueError(f"gap must be None or a finite number, got {gap!r}")
    gap = float(gap)
    if geometry == "euclidean":
        top = float(outer) - K if outer is not None else math.inf
        where = f"K + gap < outer = {outer!r}" if outer is not None else "gap > 0"
    else:
        # the annulus eps_K + gap <= sqrt(c)·‖x‖ <= 1 - gap must not be empty
        top = (1 - 2 * K / (1 + math.sqrt(1 + 4 * K * K))) / 2
        where = f"eps_K + gap < 1 - gap, i.e. gap < {top:.6g} for K = {K:.6g}"
    # below finfo.eps the outer bound 1 - gap rounds to the boundary itself
    if not eps <= gap < top:
        raise ValueError(
            f"gap must lie in [finfo({dtype}).eps = {eps:.3g}, {top:.6g}) ({where}), got {gap!r}"
        )
    return gap


def _annulus(K, c, dtype, geometry, outer, gap=None):
    if geometry == "euclidean":
        inner = K
        out = float(outer) if outer is not None else math.inf
        scale = 1.0
    else:
        inner = inner_radius(K, c=c)
        out = max_ball_norm(c, dtype)
        scale = 1 / math.sqrt(c)
    if gap is not None:
        # Ganea et al.'s clipping: eps_K + gap <= sqrt(c)·‖x‖ <= 1 - gap (their gap 1e-5, at
        # c = 1); in the plane K + gap <= ‖x‖ <= outer.
        if geometry == "euclidean":
            return inner + gap, out
        return inner + gap * scale, (1 - gap) * scale
    # Default: the same relative gap sqrt(eps) as at the boundary (numerics.ball_margin):
    # there 1 - sin ψ >= sqrt(eps), so arcsin's derivative stays below ~(2·sqrt(eps))^(-1/2)
    # (27 in float32) instead of meeting the clamp at ψ = π/2.
    return inner * (1 + ball_margin(dtype)), out


@fp32_math
@torch.no_grad()
def project_annulus(
    points: torch.Tensor,
    *,
    c: float = 1.0,
    K: float = 0.1,
    geometry: str = "poincare",
    outer: Optional[float] = None,
    gap: Optional[float] = None,
) -> torch.Tensor:
    r"""Radially move points into the annulus where cones are defined (Ganea et al.'s clipping).

    Poincaré ball of curvature ``-c`` (``c > 0``), with the default ``gap=None``:
    :math:`\frac{\varepsilon_K}{\sqrt c}(1 + \delta) \le \|x\| \le \frac{1 - \delta}{\sqrt c}`,
    :math:`\delta = \sqrt{\mathrm{eps}}` (:func:`hyro_edu.core.numerics.ball_margin`; 1.5e-8 in
    float64).  With a number ``gap``, Ganea et al.'s clipping
    :math:`\varepsilon_K + \mathrm{gap} \le \sqrt c\,\|x\| \le 1 - \mathrm{gap}` (their code:
    ``gap = 1e-5`` at ``c = 1``).  Euclidean: ``K(1 + δ) <= ‖x‖`` (default) or
    ``K + gap <= ‖x‖``, and ``‖x‖ <= outer`` (no upper bound by default).  ``gap`` must lie in
    ``[finfo(dtype).eps, (1 - ε_K)/2)`` (Poincaré; otherwise ``ValueError``).  Directions are
    kept; a zero vector is sent along the first axis.  Idempotent (tested).
    Shapes: ``(N, n)`` -> ``(N, n)``.
    """
    _checks.tensor(points, "points")
    _checks.choice(geometry, "geometry", GEOMETRIES)
    K = aperture_constant(K)
    if geometry == "poincare":
        c = float(_checks.curvature(c))
    gap = _check_gap(gap, K, points.dtype, geometry, outer)
    lo, hi = _annulus(K, c, points.dtype, geometry, outer, gap)
    norm = norm_keepdim(points, -1)
    first_axis = torch.zeros_like(points)
    first_axis[..., 0] = 1
    direction = torch.where(norm > 0, points / floored(norm), first_axis)
    target = norm.clamp(lo, hi)
    # leave points already inside bit-identical (as poincare.project does)
    inside = (norm >= lo) & (norm <= hi)
    return torch.where(inside, points, direction * target)


@fp32_math
@torch.no_grad()
def rsgd_step(
    points: torch.Tensor,
    grad: torch.Tensor,
    *,
    lr: float,
    c: float = 1.0,
    K: float = 0.1,
    geometry: str = "poincare",
    outer: Optional[float] = None,
    max_step: Optional[float] = None,
    gap: Optional[float] = None,
) -> torch.Tensor:
    r"""One Riemannian SGD step in the Poincaré ball (Ganea et al. 2018; Nickel & Kiela 2017):

    .. math:: u \leftarrow \Pi\Big(u - \mathrm{lr}\,\frac{(1 - c\|u\|^2)^2}{4}\,\nabla_u\Big),

    the Euclidean gradient rescaled by the inverse metric :math:`(\lambda^c_u)^{-2}` (curvature
    ``-c``, ``c > 0``), a retraction step, then :func:`project_annulus` (Π, with its ``gap``).
    With ``geometry="euclidean"`` it is plain SGD followed by the Euclidean annulus projection.

    ``max_step`` (default ``None``: Ganea et al.'s update) caps each point's step at that
    hyperbolic length :math:`\lambda^c_u\|\Delta u\|` (Euclidean length in the plane), keeping
    its direction: a trust region against the square-root singularity of ψ at the inner sphere.
    Properties (tested): equals the formula above for uncapped steps; capped steps move each
    point by ``max_step`` (to first order); a small step decreases the loss.
    Shapes: ``points, grad (N, n)`` -> ``(N, n)``.
    """
    if not (isinstance(lr, Real) and math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be a finite number > 0, got {lr!r}")
    if geometry == "poincare":
        c = float(_checks.curvature(c))
        # floored at eps (_ball.one_minus_cx2), for points that rounding put on the boundary
        one_minus = _ball.one_minus_cx2((points * points).sum(-1, keepdim=True), c)
        step = lr * one_minus**2 / 4 * grad
        length = 2 / one_minus * norm_keepdim(step, -1)  # λ_u ‖step‖: the step's hyperbolic length
    else:
        step = lr * grad
        length = norm_keepdim(step, -1)
    if max_step is not None:
        if not (isinstance(max_step, Real) and math.isfinite(max_step) and max_step > 0):
            raise ValueError(f"max_step must be a finite number > 0 or None, got {max_step!r}")
        step = step * (max_step / floored(length)).clamp(max=1)
    return project_annulus(points - step, c=c, K=K, geometry=geometry, outer=outer, gap=gap)


@dataclass
class ConeFit:
    """Result of :func:`fit_cones`: the embedding, its settings and the loss curve."""

    points: torch.Tensor
    c: float
    K: float
    geometry: str
    losses: list = field(default_factory=list)


def fit_cones(
    tree: Tree,
    *,
    dim: int = 2,
    c: float = 1.0,
    K: float = 0.1,
    margin: float = 0.1,
    negatives: int = 10,
    steps: int = 600,
    lr: float = 1000.0,
    max_step: Optional[float] = 0.1,
    final: float = 0.05,
    seed: int = 0,
    train_pairs: Optional[torch.Tensor] = None,
    init: Optional[torch.Tensor] = None,
    geometry: str = "poincare",
    outer: Optional[float] = None,
    gap: Optional[float] = None,
    batch_size: Optional[int] = None,
    dtype: torch.dtype = torch.float64,
) -> ConeFit:
    r"""Fit entailment-cone embeddings of ``tree`` by Riemannian SGD on :func:`margin_loss`.

    Every step uses all ``train_pairs`` (default: the transitive closure) as positives -- or,
    with ``batch_size``, the next ``batch_size`` of them in a fresh random order each epoch
    (Ganea et al. use 10) -- and ``negatives`` times as many pairs drawn uniformly from
    :func:`non_entailed_pairs` of the whole tree, the ``"mean"`` reduction, and
    :func:`rsgd_step` (curvature ``-c``, ``c > 0``; or plain SGD with
    ``geometry="euclidean"``, where ``outer`` optionally bounds the norms).  ``gap`` is the
    distance kept from the edges of the annulus (:func:`project_annulus`; default ``None``:
    a relative ``sqrt(eps)``; Ganea et al.'s code: ``1e-5``).

    Step size: ``lr`` and ``max_step`` both decay linearly to ``final`` times their initial value.
    Ganea et al.'s update is ``max_step=None, final=1, gap=1e-5, batch_size=10`` with ``lr``
    around ``1e-4`` (applied here to the per-positive mean of the loss).  The defaults
    instead cap every point's step at a hyperbolic (Euclidean) length ``max_step`` with an ``lr``
    so large that the cap always binds: each point moves ``max_step`` along its (Riemannian)
    gradient direction, the same length in both geometries.  The cap is needed because ψ has a
    square-root singularity at the inner sphere, whose gradient otherwise throws nodes across the
    ball (shown in the book's chapter "Entailment cones").

    Initialisation (unless ``init`` is given): random directions, norms uniform in
    ``[r_in, r_in + 0.5/sqrt(c)]`` with ``r_in`` the inner radius -- Ganea et al.'s random
    initialisation (they then pre-train with Poincaré embeddings, which this small trainer skips).
    Deterministic: a ``torch.Generator`` seeded with ``seed`` drives the initialisation and the
    negatives.  Pure torch.
    """
    _checks.choice(geometry, "geometry", GEOMETRIES)
    K = aperture_constant(K)
    if geometry == "poincare":
        c = float(_checks.curvature(c))
    dim, steps = _checks.integer(dim, "dim", 1), _checks.integer(steps, "steps", 1)
    negatives = _checks.integer(negatives, "negatives", 0)
    if not (isinstance(final, Real) and 0 < final <= 1):
        raise ValueError(f"final must be a number in (0, 1], got {final!r}")
    if batch_size is not None and (
        isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1
    ):
        raise ValueError(f"batch_size must be None or an integer >= 1, got {batch_size!r}")
    gap = _check_gap(gap, K, dtype, geometry, outer)
    gen = torch.Generator().manual_seed(seed)
    n = len(tree)
    pos_all = positive_pairs(tree) if train_pairs is None else train_pairs
    index_pairs(pos_all, n, "train_pairs")
    if batch_size is None or batch_size >= len(pos_all):
        batch_size = None  # full batch: every step sees every training pair
    candidates = non_entailed_pairs(tree)
    if init is None:
        r_in = inner_radius(K, c=c, geometry=geometry)
        span = 0.5 / math.sqrt(c) if geometry == "poincare" else 0.5
        direction = torch.randn(n, dim, generator=gen, dtype=dtype)
        direction = direction / direction.norm(dim=-1, keepdim=True)
        radius = r_in + span * torch.rand(n, 1, generator=gen, dtype=dtype)
        u = direction * radius
    else:
        _checks.tensor(init, "init")
        if init.shape != (n, dim):
            raise ValueError(f"init must have shape ({n}, {dim}), got {tuple(init.shape)}")
        u = init.detach().to(dtype).clone()
    u = project_annulus(u, c=c, K=K, geometry=geometry, outer=outer, gap=gap)
    losses: list = []
    order = torch.empty(0, dtype=torch.long)
    # (Thread settings are left alone: calling torch.set_num_threads(k >= 2),
    # even to restore a value, breaks batched CPU linear algebra in torch 2.14;
    # see hyro_edu.geometry.cayley.solve.)
    for step in range(steps):
        # linear decay to `final` times the initial rate (and step cap)
        frac = 1 - (1 - final) * step / max(steps - 1, 1)
        if batch_size is None:
            pos = pos_all
        else:  # epochs of mini-batches: a new random order whenever the old one runs out
            if len(order) < batch_size:
                order = torch.cat([order, torch.randperm(len(pos_all), generator=gen)])
            pos, order = pos_all[order[:batch_size]], order[batch_size:]
        neg = sample_negatives(candidates, negatives * len(pos), generator=gen)
        u.requires_grad_(True)
        loss = margin_loss(
            u, pos, neg, c=c, K=K, margin=margin, geometry=geometry, reduction="mean"
        )
        (grad,) = torch.autograd.grad(loss, u)
        u = rsgd_step(
            u.detach(),
            grad,
            lr=lr * frac,
            c=c,
            K=K,
            geometry=geometry,
            outer=outer,
            max_step=None if max_step is None else max_step * frac,
            gap=gap,
        )
        losses.append(loss.item())
    return ConeFit(points=u.detach(), c=c, K=K, geometry=geometry, losses=losses)


@dataclass(frozen=True)
class ConeMetrics:
    """How well cones reproduce a partial order.

    Attributes
    ----------
    recall : fraction of the given entailed pairs whose child lies in the parent's cone.
    false_positive_rate : fraction of the non-entailed pairs ``(u, v)`` with ``v`` in ``u``'s cone.
    precision : entailed pairs among all pairs predicted as entailed (given positives and all
        non-entailed pairs).
    f1 : harmonic mean of precision and recall.
    """

    recall: float
    false_positive_rate: float
    precision: float
    f1: float
    n_positive: int
    n_negative: int


@torch.no_grad()
def evaluate_cones(
    points: torch.Tensor,
    tree: Tree,
    *,
    c: float = 1.0,
    K: float = 0.1,
    geometry: str = "poincare",
    pairs: Optional[torch.Tensor] = None,
    negatives: Optional[torch.Tensor] = None,
    threshold: float = 0.0,
) -> ConeMetrics:
    """Score an embedding: a pair counts as entailed when its energy is ``<= threshold``.

    ``pairs``: the entailed pairs to score (default: the transitive closure; pass held-out pairs to
    measure generalisation).  ``negatives``: the non-entailed pairs to score (default: every
    non-entailed ordered pair of ``tree``; pass e.g. a test set of corrupted pairs).
    Poincaré ball of curvature ``-c`` (``c > 0``) or Euclidean.
    """
    pos = positive_pairs(tree) if pairs is None else pairs
    neg = non_entailed_pairs(tree) if negatives is None else negatives
    hit_pos = pair_energies(points, pos, c=c, K=K, geometry=geometry) <= threshold
    hit_neg = pair_energies(points, neg, c=c, K=K, geometry=geometry) <= threshold
    tp, fp = int(hit_pos.sum()), int(hit_neg.sum())
    recall = tp / max(len(pos), 1)
    precision = tp / (tp + fp) if tp + fp else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return ConeMetrics(
        recall=recall,
        false_positive_rate=fp / max(len(neg), 1),
        precision=precision,
        f1=f1,
        n_positive=len(pos),
        n_negative=len(neg),
    )
