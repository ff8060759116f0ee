r"""The intermediate curvature of tree alignment across heterogeneous hyperbolic manifolds.

**Convention:** ``c > 0`` means curvature ``-c`` (as everywhere in :mod:`hyro_edu`).

Wu et al. (ICLR 2026, "Modality Alignment across Trees on Heterogeneous
Hyperbolic Manifolds", Sec. "Heterogeneous Curvature Modeling + Intermediate
Manifold Solving") embed the text tree in a Lorentz manifold of curvature
``-c1`` and the visual tree in one of curvature ``-c2``, and align them on an
intermediate manifold of curvature ``-c3``.  They approximate the distance
between two manifolds (a KL divergence between wrapped normals, their Theorem 1)
by ``D(c1, c3; r)`` and choose

.. math:: c_3^* = \arg\min_{c_3} f(c_3), \qquad
          f(c_3) = D(c_1, c_3; r_1) + D(c_2, c_3; r_2),

by golden-section search, with the gradient of :math:`c_3^*` with respect to
the curvatures from the implicit function theorem.

**Two variants of D** (switch ``variant``), with :math:`u = (\sqrt{c_3} - \sqrt{c_1})\,r`:

* ``"paper"`` -- Theorem 1 as printed (in the summary of the paper we worked from):
  :math:`D = \dfrac{-\sqrt{c_1} + 2\sqrt{c_3}\cosh u}{2\sqrt{c_1 c_3}}`;
* ``"official"`` -- the official code (``manifolds/lorentz.py``, function ``d``):
  :math:`D = \dfrac{-\sqrt{c_1} + 2\sqrt{c_3}\cosh u}{2\sqrt{c_1}\,c_3}`.

They differ by the factor :math:`\sqrt{c_3}` in the denominator.  Both depend on
``r`` and ``c1`` only through :math:`\rho = r\sqrt{c_1}` up to a scale
(``c1 · D_official`` and ``sqrt(c1) · D_paper`` are functions of
``c3/c1`` and ``ρ``).  Neither vanishes at ``c3 = c1``; both tend to
:math:`-\infty` as ``c3 -> 0``, so ``f`` has no global minimum on ``(0, ∞)`` and
the search interval is part of the method.

**Search interval** (switch ``interval``): ``"official"`` is the code's
``[0.9·min(c1, c2), 1.1·max(c1, c2)]``; ``"minmax"`` is ``[min, max]``; a pair
``(lo_factor, hi_factor)`` with ``0 < lo_factor <= 1 <= hi_factor`` gives
``[lo_factor·min, hi_factor·max]``.

**The official code's bugs** (``OptimalC3Function.backward``), documented and
*not* reproduced here:

1. a solution with ``c3 - min(c) < 1e-7`` or ``max(c) - c3 < 1e-7`` (every
   ``c3`` outside ``[min, max]``, not only the ends of the search interval) gets
   the raw gradient ``1.0`` for the boundary curvature and ``None`` for the
   other; ``1.0`` is not multiplied by ``grad_output`` and is not the boundary's
   derivative ``0.9`` or ``1.1``;
2. when ``c1 >= c2`` the maximum is set to ``c2`` (``minc, maxc = c2, c2``), so
   every solution is treated as a boundary solution and the implicit gradient is
   never used;
3. ``r`` receives no gradient (here it does, by the same implicit formula).

One module (about 720 lines, half of them docstrings): ``D``, the search for :math:`c_3^*` and
its implicit gradients are one computation -- the interval, the boundary rule and the gradient
all depend on the variant of ``D`` -- and the only generic piece, :func:`golden_section_search`,
is about 70 lines.

References
----------
* Wu, Fan, Wu, Gao, Li, Jia & Harandi, *Modality Alignment across Trees on
  Heterogeneous Hyperbolic Manifolds* (ICLR 2026): Theorem 1 (D), Propositions 1
  and 2, golden-section search, implicit-function-theorem derivatives.
* Their official code (``MCISLAB-Manifold-Learning/HypModalAlign``, read for
  facts only): the denominator ``2·sqrt(c1)·c3``, the interval, ``tol = 1e-6``,
  ``max_iter = 100``, the rescaling of ``r`` (``engine.py``, ``get_curv_m``).
"""
from __future__ import annotations

import math
from numbers import Integral
from typing import Callable, NamedTuple, Union

import torch
from torch.autograd.function import once_differentiable

from hyro_edu.core import checks as _checks
from hyro_edu.core.numerics import compute_dtype, fp32_math, sqrt

__all__ = [
    "VARIANTS",
    "INTERVALS",
    "GRADIENTS",
    "manifold_distance",
    "manifold_distance_dc3",
    "objective",
    "objective_dc3",
    "search_interval",
    "golden_section_search",
    "GoldenSection",
    "find_intermediate_curvature",
    "IntermediateCurvature",
    "implicit_gradients",
    "optimal_curvature",
    "mean_feature_norm",
    "rescale_radii",
]

Scalar = Union[float, torch.Tensor]

VARIANTS = ("official", "paper")
INTERVALS = {"official": (0.9, 1.1), "minmax": (1.0, 1.0)}
GRADIENTS = ("implicit", "unrolled")
GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0  # 0.618..., the golden-section ratio


# ----------------------------------------------------------------------------
# validation and preparation
# ----------------------------------------------------------------------------
def _variant(variant) -> str:
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    return variant


def _interval_factors(interval) -> tuple[float, float]:
    if isinstance(interval, str):
        if interval not in INTERVALS:
            raise ValueError(
                f"interval must be one of {tuple(INTERVALS)} or a pair (lo_factor, hi_factor), got {interval!r}"
            )
        return INTERVALS[interval]
    try:
        lo_f, hi_f = (float(v) for v in interval)
    except (TypeError, ValueError):
        raise ValueError(
            f"interval must be one of {tuple(INTERVALS)} or a pair (lo_factor, hi_factor), got {interval!r}"
        ) from None
    if not (math.isfinite(lo_f) and math.isfinite(hi_f) and 0 < lo_f <= 1 <= hi_f):
        raise ValueError(
            "interval must contain the curvatures: factors (lo_factor, hi_factor) with "
            f"0 < lo_factor <= 1 <= hi_factor, so that [lo_factor*min(c1, c2), hi_factor*max(c1, c2)] "
            f"contains c1 and c2; got {interval!r}"
        )
    return lo_f, hi_f


def _search_options(tol, max_iter):
    if isinstance(tol, torch.Tensor):
        raise ValueError("tol must be a number > 0, got a tensor")
    _checks.positive(tol, "tol")
    if isinstance(max_iter, bool) or not isinstance(max_iter, Integral) or max_iter < 1:
        raise ValueError(f"max_iter must be an integer >= 1, got {max_iter!r}")
    return float(tol), int(max_iter)


def _out_dtype(*values) -> torch.dtype:
    dtypes = [v.dtype for v in values if isinstance(v, torch.Tensor)]
    if not dtypes:
        return torch.get_default_dtype()
    dtype = dtypes[0]
    for d in dtypes[1:]:
        dtype = torch.promote_types(dtype, d)
    return compute_dtype(dtype)


def _broadcast(named: dict, dtype: torch.dtype) -> list[torch.Tensor]:
    device = next((v.device for v in named.values() if isinstance(v, torch.Tensor)), None)
    tensors = [
        v.to(dtype) if isinstance(v, torch.Tensor) else torch.tensor(v, dtype=dtype, device=device)
        for v in named.values()
    ]
    try:
        return list(torch.broadcast_tensors(*tensors))
    except RuntimeError:
        shapes = ", ".join(f"{k} {tuple(t.shape)}" for k, t in zip(named, tensors))
        raise ValueError(f"{', '.join(named)} must broadcast against each other, got shapes {shapes}") from None


def _arg_limit(dtype: torch.dtype) -> float:
    # cosh(u) and sinh(u) overflow at |u| = log(finfo.max) + log 2 (89 in float32,
    # 710 in float64).  Half of log(finfo.max) leaves a factor sqrt(finfo.max)
    # of headroom for the divisions by sqrt(c1)·c3 and the products with r·c3.
    return math.log(torch.finfo(dtype).max) / 2


def _cosh_sinh_arg(c1, c3, r):
    u = (sqrt(c3) - sqrt(c1)) * r
    if isinstance(u, torch.Tensor):
        # Saturate instead of overflowing (see _arg_limit); D is then a huge
        # finite number and its gradient is 0 where the clamp acts.
        lim = _arg_limit(u.dtype)
        return u.clamp(-lim, lim)
    return u


def _as_tensor(x, like: torch.Tensor) -> torch.Tensor:
    return x if isinstance(x, torch.Tensor) else torch.tensor(x, dtype=like.dtype, device=like.device)


# ----------------------------------------------------------------------------
# D, its derivative, f and g
# ----------------------------------------------------------------------------
def _distance(c1, c3, r, variant):
    u = _cosh_sinh_arg(c1, c3, r)
    num = 2 * sqrt(c3) * torch.cosh(u) - sqrt(c1)
    den = 2 * sqrt(c1) * (c3 if variant == "official" else sqrt(c3))
    return num / den


def _distance_dc3(c1, c3, r, variant):
    u = _cosh_sinh_arg(c1, c3, r)
    s1, s3 = sqrt(c1), sqrt(c3)
    if variant == "official":
        return (s1 - s3 * torch.cosh(u) + c3 * r * torch.sinh(u)) / (2 * s1 * c3 * c3)
    return (s1 + 2 * r * c3 * torch.sinh(u)) / (4 * s1 * c3 * s3)


def _prepare_distance(c1, c3, r, variant):
    _variant(variant)
    c1 = _checks.curvature(c1, "c1")
    c3 = _checks.curvature(c3, "c3")
    r = _checks.positive(r, "r")
    dtype = _out_dtype(c1, c3, r)
    return _broadcast({"c1": c1, "c3": c3, "r": r}, dtype)


@fp32_math
def manifold_distance(*, c1: Scalar, c3: Scalar, r: Scalar, variant: str = "official") -> torch.Tensor:
    r"""The approximate distance between manifolds of curvature ``-c1`` and ``-c3``.

    .. math:: D(c_1, c_3; r) = \frac{-\sqrt{c_1} + 2\sqrt{c_3}\cosh\big((\sqrt{c_3}-\sqrt{c_1})r\big)}
              {2\sqrt{c_1}\,c_3} \quad(\text{official}), \qquad
              \frac{\cdots}{2\sqrt{c_1 c_3}} \quad(\text{paper}).

    Curvatures ``-c1``, ``-c3`` with ``c1, c3 > 0``; ``r > 0``.  The paper
    summary does not define ``r``; the official code passes a rescaled norm of a
    mean feature (:func:`rescale_radii`), i.e. the distance from the origin of a
    feature mapped with ``exp_0``.  With that meaning the official D is exactly
    :math:`\tfrac12\langle\mu_1 - \mu_3, \mu_1 - \mu_3\rangle_L + 1/(2c_1)` with
    :math:`\mu_c = \exp^c_0(v)`, :math:`\|v\| = r`: a Gaussian KL with the
    (indefinite) Lorentzian form in place of the Euclidean norm, plus a constant.
    It does not track the KL between wrapped normals up to a constant (the
    book's chapter "Intermediate curvature" checks this by Monte Carlo).

    Properties (tested): the Lorentzian identity above;
    ``D(c1, c1; r) = 1/(2 c1)`` (official) and
    ``1/(2 sqrt(c1))`` (paper), for every ``r`` -- D is not a divergence;
    ``c1·D_official`` and ``sqrt(c1)·D_paper`` depend only on ``c3/c1`` and
    ``ρ = r·sqrt(c1)``; the ratio of the variants is ``sqrt(c3)``
    (``D_paper = sqrt(c3)·D_official``); ``D -> -∞`` as ``c3 -> 0``.

    The ``cosh`` argument is clamped at ``log(finfo.max)/2`` so that D stays
    finite (it saturates there and its gradient is 0).

    Shapes: ``c1``, ``c3``, ``r`` numbers or tensors that broadcast; the result
    has their broadcast shape and their (promoted, at least float32) dtype.

    Wu et al. (ICLR 2026), Theorem 1 (``variant="paper"``, as printed in the
    summary we worked from); official code, ``manifolds/lorentz.py`` ``d``
    (``variant="official"``).
    """
    c1, c3, r = _prepare_distance(c1, c3, r, variant)
    return _distance(c1, c3, r, variant)


@fp32_math
def manifold_distance_dc3(*, c1: Scalar, c3: Scalar, r: Scalar, variant: str = "official") -> torch.Tensor:
    r""":math:`\partial D(c_1, c_3; r)/\partial c_3` in closed form, with :math:`u = (\sqrt{c_3}-\sqrt{c_1})r`:

    .. math:: \text{official: } \frac{\sqrt{c_1} - \sqrt{c_3}\cosh u + c_3 r \sinh u}{2\sqrt{c_1}\,c_3^2},
              \qquad \text{paper: } \frac{\sqrt{c_1} + 2 r c_3 \sinh u}{4\sqrt{c_1}\,c_3^{3/2}} .

    Curvature ``-c`` with ``c > 0``.  Properties (tested): equals autograd of
    :func:`manifold_distance`; official: 0 at ``c3 = c1`` for every ``r`` and
    the second derivative there is ``(r²c1 - 1)/(4 c1³)`` (a strict local
    minimum iff ``r·sqrt(c1) > 1``); paper: ``1/(4 c1^{3/2}) > 0`` at
    ``c3 = c1`` (never stationary there).  Shapes as :func:`manifold_distance`.

    The official form is the code's ``partial_d_partial_c3``; the paper form is
    our differentiation of Theorem 1 as printed.
    """
    c1, c3, r = _prepare_distance(c1, c3, r, variant)
    return _distance_dc3(c1, c3, r, variant)


def _prepare_objective(c3, c1, c2, r1, r2, variant):
    _variant(variant)
    named = {
        "c3": _checks.curvature(c3, "c3"),
        "c1": _checks.curvature(c1, "c1"),
        "c2": _checks.curvature(c2, "c2"),
        "r1": _checks.positive(r1, "r1"),
        "r2": _checks.positive(r2, "r2"),
    }
    return _broadcast(named, _out_dtype(*named.values()))


@fp32_math
def objective(
    *, c3: Scalar, c1: Scalar, c2: Scalar, r1: Scalar, r2: Scalar, variant: str = "official"
) -> torch.Tensor:
    r""":math:`f(c_3) = D(c_1, c_3; r_1) + D(c_2, c_3; r_2)`, the function whose minimiser is :math:`c_3^*`.

    Curvatures ``-c1``, ``-c2``, ``-c3`` with ``c > 0``.  Properties (tested):
    symmetric under ``(c1, r1) <-> (c2, r2)``; ``f -> -∞`` as ``c3 -> 0`` (no
    global minimum on ``(0, ∞)``).  Shapes: broadcast of the inputs.

    Wu et al. (ICLR 2026), the definition of :math:`c_3^*` after Theorem 1.
    """
    c3, c1, c2, r1, r2 = _prepare_objective(c3, c1, c2, r1, r2, variant)
    return _distance(c1, c3, r1, variant) + _distance(c2, c3, r2, variant)


@fp32_math
def objective_dc3(
    *, c3: Scalar, c1: Scalar, c2: Scalar, r1: Scalar, r2: Scalar, variant: str = "official"
) -> torch.Tensor:
    r""":math:`g(c_3; c_1, c_2, r_1, r_2) = \partial f/\partial c_3`, zero at an interior :math:`c_3^*`.

    The sum of two :func:`manifold_distance_dc3` terms.  Curvature ``-c``,
    ``c > 0``.  Shapes: broadcast of the inputs.  Official code:
    ``partial_f_partial_c3``.
    """
    c3, c1, c2, r1, r2 = _prepare_objective(c3, c1, c2, r1, r2, variant)
    return _distance_dc3(c1, c3, r1, variant) + _distance_dc3(c2, c3, r2, variant)


# ----------------------------------------------------------------------------
# the search
# ----------------------------------------------------------------------------
def _bounds(c1, c2, lo_f, hi_f):
    return lo_f * torch.minimum(c1, c2), hi_f * torch.maximum(c1, c2)


@fp32_math
def search_interval(
    *, c1: Scalar, c2: Scalar, interval="official"
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""The interval searched for :math:`c_3^*`: :math:`[\,\ell\min(c_1,c_2),\ h\max(c_1,c_2)\,]`.

    ``interval="official"``: ``(ℓ, h) = (0.9, 1.1)`` (the official code);
    ``"minmax"``: ``(1, 1)``, Proposition 2's interval; or a pair
    ``(ℓ, h)`` with ``0 < ℓ <= 1 <= h``.  Curvature ``-c`` with ``c > 0``.
    Differentiable (``torch.minimum`` splits the gradient of a tie equally).
    Shapes: broadcast of ``c1`` and ``c2``.
    """
    lo_f, hi_f = _interval_factors(interval)
    named = {"c1": _checks.curvature(c1, "c1"), "c2": _checks.curvature(c2, "c2")}
    c1, c2 = _broadcast(named, _out_dtype(*named.values()))
    return _bounds(c1, c2, lo_f, hi_f)


class GoldenSection(NamedTuple):
    """Final brackets ``[a, b]`` of :func:`golden_section_search`; ``iterations`` per element."""

    a: torch.Tensor
    b: torch.Tensor
    iterations: torch.Tensor

    @property
    def midpoint(self) -> torch.Tensor:
        return (self.a + self.b) / 2


def golden_section_search(
    fn: Callable[[torch.Tensor], torch.Tensor],
    lo: torch.Tensor,
    hi: torch.Tensor,
    *,
    tol: float = 1e-6,
    max_iter: int = 100,
) -> GoldenSection:
    r"""Golden-section search for a minimiser of ``fn`` on ``[lo, hi]``, elementwise.

    Each step evaluates :math:`x_1 = a + (1-\varphi)(b-a)` and
    :math:`x_2 = a + \varphi(b-a)`, :math:`\varphi = (\sqrt5-1)/2`, and keeps
    :math:`[a, x_2]` if :math:`f(x_1) < f(x_2)`, else :math:`[x_1, b]`; an
    element stops after the step that makes ``b - a < tol`` (absolute), or after
    ``max_iter`` steps.  This is the official code's loop, vectorised.

    Properties (tested): every bracket shrinks by :math:`\varphi` per step; for a
    unimodal ``fn`` the minimiser stays inside the bracket; if ``fn`` increases
    on ``[lo, hi]`` then ``a == lo`` throughout (and ``b == hi`` if it decreases).

    Autograd: the comparisons are evaluated without gradient, while ``a`` and
    ``b`` are affine in ``lo`` and ``hi``; so a gradient that flows through this
    search ("unrolled") is that of a fixed affine combination of ``lo`` and
    ``hi`` -- the derivative of the bracket, not of the minimiser.

    Shapes: ``lo`` and ``hi`` of one shape; ``fn`` maps a tensor of that shape
    to one of the same shape.
    """
    tol, max_iter = _search_options(tol, max_iter)
    if lo.shape != hi.shape:
        raise ValueError(f"lo and hi must have the same shape, got {tuple(lo.shape)} and {tuple(hi.shape)}")
    if bool((hi < lo).any()):
        raise ValueError("hi must be >= lo elementwise")
    a, b = lo, hi
    active = torch.ones_like(lo, dtype=torch.bool)
    iterations = torch.zeros_like(lo, dtype=torch.long)
    for _ in range(max_iter):
        x1 = a + (1 - GOLDEN) * (b - a)
        x2 = a + GOLDEN * (b - a)
        with torch.no_grad():
            left = fn(x1.detach()) < fn(x2.detach())
        a = torch.where(active & ~left, x1, a)
        b = torch.where(active & left, x2, b)
        iterations = iterations + active.long()
        active = active & ((b - a) >= tol).detach()
        if not bool(active.any()):
            break
    return GoldenSection(a, b, iterations)


class IntermediateCurvature(NamedTuple):
    """What :func:`find_intermediate_curvature` found.

    ``c3``: the minimiser (``lo`` or ``hi`` exactly at a boundary solution, the
    final bracket's midpoint otherwise); ``at_lower`` / ``at_upper``: boundary
    solutions (the search kept that end and ``f`` does not decrease into the
    interval there); ``lo``, ``hi``: the search interval; ``iterations``.
    """

    c3: torch.Tensor
    at_lower: torch.Tensor
    at_upper: torch.Tensor
    lo: torch.Tensor
    hi: torch.Tensor
    iterations: torch.Tensor


def _prepare_search(c1, c2, r1, r2, variant, interval, tol, max_iter, search_dtype):
    _variant(variant)
    lo_f, hi_f = _interval_factors(interval)
    tol, max_iter = _search_options(tol, max_iter)
    named = {
        "c1": _checks.curvature(c1, "c1"),
        "c2": _checks.curvature(c2, "c2"),
        "r1": _checks.positive(r1, "r1"),
        "r2": _checks.positive(r2, "r2"),
    }
    out_dtype = _out_dtype(*named.values())
    if search_dtype is None:
        search_dtype = out_dtype
    if search_dtype not in (torch.float32, torch.float64):
        raise ValueError(f"search_dtype must be torch.float32, torch.float64 or None, got {search_dtype}")
    c1_, c2_, r1_, r2_ = _broadcast(named, out_dtype)
    with torch.no_grad():
        lo, hi = _bounds(c1_.to(search_dtype), c2_.to(search_dtype), lo_f, hi_f)
        for name, c, r in (("r1", c1_, r1_), ("r2", c2_, r2_)):
            c, r = c.to(search_dtype), r.to(search_dtype)
            gap = torch.maximum((hi.sqrt() - c.sqrt()).abs(), (lo.sqrt() - c.sqrt()).abs())
            worst = (r * gap).max().item()
            if not worst < _arg_limit(search_dtype):
                raise ValueError(
                    f"{name} is too large for these curvatures: {name}*|sqrt(c3) - sqrt(c)| reaches {worst:.4g} "
                    f"on the search interval and must stay below {_arg_limit(search_dtype):.4g} "
                    f"(log(finfo.max)/2 of {search_dtype}), where cosh in D would overflow"
                )
    return (c1_, c2_, r1_, r2_), (lo_f, hi_f), tol, max_iter, search_dtype, out_dtype


def _solve(c1, c2, r1, r2, variant, lo_f, hi_f, tol, max_iter):
    """The search on same-shape tensors of one dtype, without gradient."""
    with torch.no_grad():
        lo, hi = _bounds(c1, c2, lo_f, hi_f)

        def f(c3):
            return _distance(c1, c3, r1, variant) + _distance(c2, c3, r2, variant)

        def g(c3):
            return _distance_dc3(c1, c3, r1, variant) + _distance_dc3(c2, c3, r2, variant)

        res = golden_section_search(f, lo, hi, tol=tol, max_iter=max_iter)
        # Boundary solutions: the search never left that end, and f does not
        # decrease into the interval there; the minimiser is the end itself.
        at_lower = (res.a == lo) & (g(lo) >= 0)
        at_upper = (res.b == hi) & (g(hi) <= 0) & ~at_lower
        c3 = torch.where(at_lower, lo, torch.where(at_upper, hi, res.midpoint))
    return IntermediateCurvature(c3, at_lower, at_upper, lo, hi, res.iterations)


@fp32_math
def find_intermediate_curvature(
    *,
    c1: Scalar,
    c2: Scalar,
    r1: Scalar,
    r2: Scalar,
    variant: str = "official",
    interval="official",
    tol: float = 1e-6,
    max_iter: int = 100,
    search_dtype: torch.dtype | None = torch.float64,
) -> IntermediateCurvature:
    r"""The intermediate curvature :math:`c_3^*`, found by golden-section search (no gradient).

    .. math:: c_3^* = \arg\min_{c_3 \in [\ell\min(c_1,c_2),\ h\max(c_1,c_2)]}
              D(c_1, c_3; r_1) + D(c_2, c_3; r_2).

    Curvatures ``-c1``, ``-c2``, ``-c3`` with ``c > 0``.  Golden-section search
    (:func:`golden_section_search`, ``tol`` and ``max_iter`` as in the official
    code) on the interval of :func:`search_interval`; a boundary solution is
    returned as the boundary itself (the official code returns the midpoint of
    the last bracket, at most ``tol/2`` away).

    ``search_dtype`` (default float64): the dtype the search runs in.  Near its
    minimum ``f`` is flat to within float32 rounding over a relative width of
    about ``sqrt(finfo(float32).eps) ≈ 3e-4``, which is why the official float32
    search and a float64 search differ in the 4th significant digit.  ``None``
    searches in the inputs' dtype (float32 reproduces the official behaviour).

    Properties (tested): ``lo <= c3 <= hi``; the worked examples of the
    official code's comments; symmetric under ``(c1, r1) <-> (c2, r2)``; at an
    interior solution ``g(c3) ≈ 0`` and ``∂g/∂c3 >= 0``.

    Raises ``ValueError`` for ``c <= 0``, ``r <= 0``, non-finite inputs, an
    interval that does not contain both curvatures, or ``r`` so large that
    ``cosh`` would overflow on the interval.

    Shapes: numbers or tensors that broadcast; every field has the broadcast
    shape; ``c3`` has the inputs' dtype (at least float32).

    Wu et al. (ICLR 2026): the definition of :math:`c_3^*` and golden-section
    search; official code ``solve_c3_no_grad``.
    """
    tensors, (lo_f, hi_f), tol, max_iter, search_dtype, out_dtype = _prepare_search(
        c1, c2, r1, r2, variant, interval, tol, max_iter, search_dtype
    )
    c1_, c2_, r1_, r2_ = (t.detach().to(search_dtype) for t in tensors)
    res = _solve(c1_, c2_, r1_, r2_, variant, lo_f, hi_f, tol, max_iter)
    return IntermediateCurvature(
        res.c3.to(out_dtype), res.at_lower, res.at_upper, res.lo.to(out_dtype), res.hi.to(out_dtype), res.iterations
    )


def _partials(c3, c1, c2, r1, r2, variant):
    """∂g/∂(c3, c1, c2, r1, r2) elementwise, by autograd of the closed-form g."""
    with torch.enable_grad():
        xs = [t.detach().requires_grad_(True) for t in (c3, c1, c2, r1, r2)]
        g = _distance_dc3(xs[1], xs[0], xs[3], variant) + _distance_dc3(xs[2], xs[0], xs[4], variant)
        # Elements are independent, so the gradient of the sum is the elementwise partial.
        return torch.autograd.grad(g.sum(), xs)


def _ift(c3, c1, c2, r1, r2, variant):
    g_c3, g_c1, g_c2, g_r1, g_r2 = _partials(c3, c1, c2, r1, r2, variant)
    # At an interior minimum ∂g/∂c3 = f'' >= 0.  At a degenerate minimum
    # (f'' = 0) dc3*/dc is unbounded; flooring f'' at eps times the size of the
    # mixed partials caps |dc3*/dc| at 1/eps (4.5e15 in float64) so that
    # gradients stay finite in every dtype.
    floor = torch.finfo(c3.dtype).eps * (g_c1.abs() + g_c2.abs())
    den = torch.maximum(g_c3, floor).clamp_min(torch.finfo(c3.dtype).tiny)
    return -g_c1 / den, -g_c2 / den, -g_r1 / den, -g_r2 / den


@fp32_math
def implicit_gradients(
    *, c3: Scalar, c1: Scalar, c2: Scalar, r1: Scalar, r2: Scalar, variant: str = "official"
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    r"""The implicit-function-theorem derivatives of an interior minimiser :math:`c_3^*`.

    With :math:`g = \partial f/\partial c_3`, :math:`g(c_3^*(\theta), \theta) = 0`
    for :math:`\theta \in \{c_1, c_2, r_1, r_2\}` gives

    .. math:: \frac{d c_3^*}{d\theta} = -\frac{\partial g/\partial\theta}{\partial g/\partial c_3}
              = -\Big(\frac{\partial^2 f}{\partial c_3^2}\Big)^{-1} \frac{\partial^2 f}{\partial\theta\,\partial c_3}.

    Returns ``(dc3/dc1, dc3/dc2, dc3/dr1, dc3/dr2)`` evaluated at the given
    ``c3`` (which should be an interior minimiser).  Curvature ``-c``, ``c > 0``.
    Second derivatives by autograd of the closed-form ``g``.  ``∂g/∂c3`` is
    floored at ``eps·(|∂g/∂c1| + |∂g/∂c2|)`` (finite at degenerate minima).

    Properties (tested): matches central finite differences of the minimiser and
    one differentiated Newton step; scale invariance (both variants), from
    ``c3*(λc1, λc2, r1/sqrt λ, r2/sqrt λ) = λ c3*``:
    ``c1·dc3/dc1 + c2·dc3/dc2 - (r1·dc3/dr1 + r2·dc3/dr2)/2 = c3*``.
    Shapes: broadcast of the inputs.

    Wu et al. (ICLR 2026), "Derivatives via Implicit Function Theorem";
    official code ``OptimalC3Function.backward`` (interior branch).
    """
    c3, c1, c2, r1, r2 = _prepare_objective(c3, c1, c2, r1, r2, variant)
    return _ift(c3, c1, c2, r1, r2, variant)


def _boundary_weights(c1, c2):
    """d min(c1, c2)/dc1 and dc2 (a tie is split equally), and d max/dc1, dc2."""
    half = torch.full_like(c1, 0.5)
    w_min1 = torch.where(c1 < c2, torch.ones_like(c1), torch.where(c1 > c2, torch.zeros_like(c1), half))
    w_max1 = torch.where(c1 > c2, torch.ones_like(c1), torch.where(c1 < c2, torch.zeros_like(c1), half))
    return w_min1, 1 - w_min1, w_max1, 1 - w_max1


class _OptimalC3(torch.autograd.Function):
    """c3* with implicit-function-theorem gradients (interior) or boundary gradients."""

    @staticmethod
    def forward(ctx, c1, c2, r1, r2, variant, lo_f, hi_f, tol, max_iter):
        res = _solve(c1, c2, r1, r2, variant, lo_f, hi_f, tol, max_iter)
        ctx.save_for_backward(c1, c2, r1, r2, res.c3, res.at_lower, res.at_upper)
        ctx.variant, ctx.factors = variant, (lo_f, hi_f)
        return res.c3

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        c1, c2, r1, r2, c3, at_lower, at_upper = ctx.saved_tensors
        lo_f, hi_f = ctx.factors
        d_c1, d_c2, d_r1, d_r2 = _ift(c3, c1, c2, r1, r2, ctx.variant)
        w_min1, w_min2, w_max1, w_max2 = _boundary_weights(c1, c2)
        # At a boundary solution c3* is the boundary: its derivative is that of
        # lo = lo_f·min(c1, c2) or hi = hi_f·max(c1, c2), and r does not enter.
        zero = torch.zeros_like(c3)
        d_c1 = torch.where(at_lower, lo_f * w_min1, torch.where(at_upper, hi_f * w_max1, d_c1))
        d_c2 = torch.where(at_lower, lo_f * w_min2, torch.where(at_upper, hi_f * w_max2, d_c2))
        boundary = at_lower | at_upper
        d_r1 = torch.where(boundary, zero, d_r1)
        d_r2 = torch.where(boundary, zero, d_r2)
        return grad_out * d_c1, grad_out * d_c2, grad_out * d_r1, grad_out * d_r2, None, None, None, None, None


@fp32_math
def optimal_curvature(
    *,
    c1: Scalar,
    c2: Scalar,
    r1: Scalar,
    r2: Scalar,
    variant: str = "official",
    interval="official",
    tol: float = 1e-6,
    max_iter: int = 100,
    gradient: str = "implicit",
    search_dtype: torch.dtype | None = torch.float64,
) -> torch.Tensor:
    r"""The intermediate curvature :math:`c_3^*` as a differentiable function of ``c1, c2, r1, r2``.

    .. math:: c_3^* = \arg\min_{c_3 \in [\ell\min(c_1,c_2),\, h\max(c_1,c_2)]} f(c_3), \qquad
              \frac{dc_3^*}{dc_i} = -\frac{\partial g/\partial c_i}{\partial g/\partial c_3}
              \ \text{(interior)}, \qquad
              \frac{dc_3^*}{dc_i} = \ell\,\frac{\partial\min(c_1,c_2)}{\partial c_i}
              \ \text{(lower boundary)}.

    Curvatures ``-c1``, ``-c2``, ``-c3`` with ``c > 0``.  The value is that of
    :func:`find_intermediate_curvature` (same options).  ``gradient``:

    * ``"implicit"`` (default): a custom autograd function; the backward pass
      uses the implicit function theorem at an interior solution (no unrolling;
      second derivatives by autograd of the closed-form ``g``; ``r`` gets its
      gradient too) and the boundary's derivative at a boundary solution
      (``0.9·∂min/∂ci`` or ``1.1·∂max/∂ci`` for the official interval, a tie
      split equally); the result is multiplied by ``grad_output``;
    * ``"unrolled"``: autograd through the golden-section loop (the official
      code's returned midpoint, no boundary snapping).  Its gradient is the
      derivative of the final bracket, exact only at boundary solutions.

    Properties (tested): implicit gradients match central finite differences
    (float64), one differentiated Newton step, and the worked examples; at
    boundary solutions they match the unrolled gradient; gradients are finite
    (also in float32, at ``c1 = c2``, at boundaries).

    Shapes: numbers or tensors that broadcast; the result has the broadcast
    shape and the inputs' dtype (at least float32).

    Wu et al. (ICLR 2026), Proposition 2 and "Derivatives via Implicit Function
    Theorem"; official code ``OptimalC3Function``.
    """
    if gradient not in GRADIENTS:
        raise ValueError(f"gradient must be one of {GRADIENTS}, got {gradient!r}")
    tensors, (lo_f, hi_f), tol, max_iter, search_dtype, out_dtype = _prepare_search(
        c1, c2, r1, r2, variant, interval, tol, max_iter, search_dtype
    )
    c1_, c2_, r1_, r2_ = (t.to(search_dtype) for t in tensors)
    if gradient == "implicit":
        c3 = _OptimalC3.apply(c1_, c2_, r1_, r2_, variant, lo_f, hi_f, tol, max_iter)
    else:
        lo, hi = _bounds(c1_, c2_, lo_f, hi_f)
        c1d, c2d, r1d, r2d = (t.detach() for t in (c1_, c2_, r1_, r2_))

        def f(c3):
            return _distance(c1d, c3, r1d, variant) + _distance(c2d, c3, r2d, variant)

        c3 = golden_section_search(f, lo, hi, tol=tol, max_iter=max_iter).midpoint
    return c3.to(out_dtype)


# ----------------------------------------------------------------------------
# what r is in the official code
# ----------------------------------------------------------------------------
def mean_feature_norm(features: torch.Tensor, *, dim: int = -1) -> torch.Tensor:
    r"""The official code's raw ``r``: :math:`r = \big\|\operatorname{mean}_{b,k} x_{b,k}\big\|`.

    The norm of the mean, over every axis except ``dim`` (batch and depth), of
    the tree-node features -- in the official code L2-normalised Euclidean
    features before the exponential map, zero-padded slots included, detached.
    Properties (tested): ``0 <= r <= 1`` for unit features (equality iff all
    are equal); zero-padding shrinks it.  Shapes: ``(..., d)`` -> ``()``.

    Official code, ``engine.py`` (``r_image``, ``r_text``); the book's chapter "Intermediate
    curvature" computes the bound this puts on ``r`` for ProTeCt's CIFAR-100 tree.
    """
    _checks.tensor(features, "features")
    d = _checks.dim_index(features, dim, "features")
    moved = features.detach().movedim(d, -1)
    return torch.linalg.vector_norm(moved.reshape(-1, moved.shape[-1]).mean(0))


def rescale_radii(r1: Scalar, r2: Scalar, *, c1: Scalar, c2: Scalar) -> tuple[torch.Tensor, torch.Tensor]:
    r"""The official code's rescaling of ``r``: ``r1' = max(1/sqrt(c1), (r1/r2)/sqrt(c2))``, ``r2' = r1'·r2/r1``.

    .. math:: r_1' = \max\!\Big(\frac{1}{\sqrt{c_1}},\ \frac{r_1/r_2}{\sqrt{c_2}}\Big), \qquad
              r_2' = r_1'\,\frac{r_2}{r_1}.

    Curvatures ``-c1``, ``-c2`` with ``c > 0``; ``r1, r2 > 0`` (raw radii, e.g.
    :func:`mean_feature_norm` of the image and the text tree).  Computed without
    gradient, as in the code.

    Properties (tested): the ratio is kept, ``r1'/r2' = r1/r2``; both
    ``r1'·sqrt(c1) >= 1`` and ``r2'·sqrt(c2) >= 1``, and the smaller of the two
    equals 1 exactly -- the value at which ``c3 = c`` stops being a strict local
    minimum of the official ``D(c, ·)`` (see :func:`manifold_distance_dc3`).

    Shapes: broadcast of the inputs.  Official code ``engine.py`` ``get_curv_m``;
    example (tested): ``c1 = 0.05, c2 = 0.025, r1 = 0.4, r2 = 0.8``
    give ``(4.4721, 8.9443)``.
    """
    named = {
        "r1": _checks.positive(r1, "r1"),
        "r2": _checks.positive(r2, "r2"),
        "c1": _checks.curvature(c1, "c1"),
        "c2": _checks.curvature(c2, "c2"),
    }
    r1, r2, c1, c2 = (t.detach() for t in _broadcast(named, _out_dtype(*named.values())))
    ratio = r1 / r2
    r1_new = torch.maximum(1 / c1.sqrt(), ratio / c2.sqrt())
    return r1_new, r1_new / ratio
