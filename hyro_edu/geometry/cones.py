r"""Entailment cones: a partial order ("``u`` entails ``v``") as nested cones.

Every point ``x`` (the *apex*) carries a cone :math:`\mathfrak{S}_x` around the ray from the
origin through ``x``, continued beyond ``x``; ``x`` entails ``y`` when ``y`` lies in that cone.
The cone is described by two angles, both measured at ``x``:

* the **half-aperture** :math:`\psi(x)`, which depends only on how far ``x`` is from the origin;
* the **exterior angle** :math:`\Xi(x, y)` between the axis (the continued ray) and the geodesic
  from ``x`` to ``y``.

``y`` lies in the cone iff :math:`\Xi(x, y) \le \psi(x)`; the **energy**
:math:`E(x, y) = \max(0, \Xi(x, y) - \psi(x))` is the angle by which ``y`` misses it.

Three geometries (Ganea, Bécigneul & Hofmann, ICML 2018; Desai et al., MERU, ICML 2023):

* Euclidean: :math:`\psi(x) = \arcsin(K / \|x\|)` for :math:`\|x\| \ge K`;
* Poincaré ball: :math:`\psi_c(x) = \arcsin\big(K(1-c\|x\|^2)/(\sqrt c\|x\|)\big)` for
  :math:`\sqrt c\|x\| \ge \varepsilon_K = 2K / (1 + \sqrt{1 + 4K^2})` (:func:`inner_radius`);
* Lorentz model (MERU): :math:`\operatorname{aper}(x) = \arcsin\big(2K/(\sqrt c\|x_s\|)\big)` for
  :math:`\sqrt c\|x_s\| \ge 2K`.

All three are *Clairaut's relation* for geodesics (derived in the book's chapter "Entailment
cones"): :math:`\rho(r)\sin\psi` is constant, with :math:`\rho(r) = r` in the plane and
:math:`\rho(r) = \sinh(\sqrt c\, r)/\sqrt c` at curvature ``-c``; so every cone's boundary is
made of geodesics tangent to the sphere where :math:`\psi = \pi/2`, which makes the cones nested.
The Poincaré and Lorentz cones agree under the isometry :func:`hyro_edu.geometry.lorentz.from_poincare`,
for every ``c`` and ``K``; at ``c = 1`` the Poincaré formula is Ganea's.

**Curvature convention:** ``c > 0`` means curvature ``-c`` (the whole package).

**Numerics** (:mod:`hyro_edu.core.numerics`; no ``+ eps`` biases, unlike both official codes):

* the exterior angle is computed as ``atan2(sin part, cos part)`` from ``δ = y - x``, an exact
  rearrangement of the papers' ``arccos`` formulas that has no cancellation near ``y = x`` and
  finite gradients at ``Ξ = 0`` and ``Ξ = π`` (``arccos`` has infinite derivatives there);
* ``Ξ(x, x)`` and ``Ξ(0, y)`` are undefined (no direction); they are ``π/2`` -- the mean of the
  angle over all directions, and what MERU's code returns for ``y = x`` -- with zero gradient;
* the sine of the half-aperture is clamped to ``1 - finfo.eps``, where ``arcsin`` and its
  derivative are finite; inside the inner ball (outside the valid domain) this gives ``ψ ≈ π/2``
  (MERU's behaviour) unless ``strict=True`` asks for a ``ValueError``.

Training (Ganea et al. 2018): :func:`margin_loss` over the transitive closure of a
:class:`~hyro_edu.hierarchy.trees.Tree` with uniformly sampled non-entailed negatives, and :func:`fit_cones`,
Riemannian SGD in the Poincaré ball followed by the annulus projection (:func:`project_annulus`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from numbers import Real
from typing import Optional, Union

import torch

from hyro_edu.core import checks as _checks
from hyro_edu.geometry import poincare as P
from hyro_edu.core.numerics import artanh_limit, ball_margin, fp32_math, norm_floor
from hyro_edu.hierarchy.trees import Tree

__all__ = [
    "inner_radius",
    "euclidean_half_aperture",
    "euclidean_exterior_angle",
    "euclidean_energy",
    "half_aperture",
    "exterior_angle",
    "energy",
    "lorentz_half_aperture",
    "oxy_angle",
    "lorentz_energy",
    "cone_outline",
    "transitive_closure",
    "positive_pairs",
    "non_entailed_pairs",
    "sample_negatives",
    "pair_energies",
    "margin_loss",
    "project_annulus",
    "rsgd_step",
    "ConeFit",
    "fit_cones",
    "ConeMetrics",
    "evaluate_cones",
]

Curvature = Union[float, torch.Tensor]
GEOMETRIES = ("poincare", "euclidean")


# ----------------------------------------------------------------------------
# private helpers
# ----------------------------------------------------------------------------
def _check_K(K) -> float:
    if isinstance(K, bool) or not isinstance(K, Real) or not math.isfinite(float(K)) or K <= 0:
        raise ValueError(f"K must be a finite number > 0 (the aperture constant), got {K!r}")
    return float(K)


def _check_geometry(geometry: str) -> str:
    if geometry not in GEOMETRIES:
        raise ValueError(f"geometry must be one of {GEOMETRIES}, got {geometry!r}")
    return geometry


def _sqrt(c):
    return math.sqrt(c) if isinstance(c, float) else c.sqrt()


def _norm(x, dim):
    return torch.linalg.vector_norm(x, dim=dim, keepdim=True)


def _floored(z):
    # Norms we divide by: sqrt(finfo.tiny) keeps K/‖x‖ and x/‖x‖ finite at x = 0, and the
    # clamp's zero gradient keeps d‖x‖/dx at 0 out of the chain rule.
    return z.clamp_min(norm_floor(z.dtype))


def _arcsin_aperture(s: torch.Tensor, strict: bool, what: str) -> torch.Tensor:
    """``arcsin(s)`` for the sine ``s > 0`` of a half-aperture; ``s > 1`` is outside the domain."""
    if strict:
        with torch.no_grad():
            # 4 ulps of slack: an apex put exactly on the inner sphere may round to s = 1 + ulp.
            bad = ~(s <= 1 + 4 * torch.finfo(s.dtype).eps)  # also catches NaN
            if bool(bad.any()):
                raise ValueError(
                    f"x must lie in the aperture's valid domain, {what}; got points where "
                    f"sin(psi) would be {s[bad].max().item():.6g} > 1. Pass strict=False to clamp "
                    "the half-aperture to pi/2 there (MERU), or move the points with "
                    "project_annulus (Ganea et al.)."
                )
    # sin ψ <= 1 - eps: arcsin and its derivative 1/sqrt(1 - s²) (<= 1/sqrt(2·eps), 2.9e3 in
    # float32) stay finite.  Inside the valid domain this only touches the last ulp before
    # ψ = π/2; below it (apexes too close to the origin) ψ is π/2 up to sqrt(2·eps), with no
    # gradient, as in MERU's code.
    return torch.asin(s.clamp(max=artanh_limit(s.dtype)))


def _angle(sin_part: torch.Tensor, cos_part: torch.Tensor) -> torch.Tensor:
    """``atan2(sin_part, cos_part)`` in ``[0, π]``; ``π/2`` where both parts vanish."""
    # Both parts are products of the norms involved; below sqrt(finfo.tiny) their squares,
    # which atan2's derivative divides by, underflow to 0.  There the direction is lost (y = x,
    # or an apex at the origin): return π/2 and feed atan2 a harmless (1, 0) so that where()
    # does not multiply an infinite or NaN gradient by 0.
    tiny = norm_floor(sin_part.dtype)
    degenerate = (sin_part.abs() < tiny) & (cos_part.abs() < tiny)
    safe_sin = torch.where(degenerate, torch.ones_like(sin_part), sin_part)
    safe_cos = torch.where(degenerate, torch.zeros_like(cos_part), cos_part)
    out = torch.atan2(safe_sin, safe_cos)
    return torch.where(degenerate, torch.full_like(out, math.pi / 2), out)


def _perp_norm(x, delta, xnorm, dim):
    """‖δ - ⟨x̂, δ⟩ x̂‖, x̂ = x/‖x‖: the part of δ orthogonal to the axis direction."""
    # The unit vector keeps every intermediate bounded (no ⟨x, δ⟩/‖x‖², whose backward pass
    # would overflow for the tiniest x).
    unit = x / _floored(xnorm)
    return _norm(delta - (unit * delta).sum(dim, keepdim=True) * unit, dim)


def _exterior(x, y, c, dim):
    r"""Ξ_c(x, y) for points of the ball (c > 0) or of R^n (c = 0), keepdim.

    With δ = y - x, the direction of log_x(y) is v = (1 - c‖x‖²) δ - c‖δ‖² x (it is the
    numerator of (-x) ⊕_c y, rewritten in δ), so
    Ξ = atan2(‖x‖ ‖v_⊥‖, ⟨x, v⟩) = atan2((1 - c‖x‖²) ‖x‖ ‖δ_⊥‖, (1 - c‖x‖²)⟨x, δ⟩ - c‖δ‖²‖x‖²).
    """
    delta = y - x
    x2 = (x * x).sum(dim, keepdim=True)
    xd = (x * delta).sum(dim, keepdim=True)
    d2 = (delta * delta).sum(dim, keepdim=True)
    one_minus = P._one_minus_cx2(x2, c) if not (isinstance(c, float) and c == 0.0) else 1.0
    # vector_norm, not x2.sqrt(): its gradient at x = 0 is 0, where sqrt's backward gives 0/0
    xnorm = _norm(x, dim)
    sin_part = one_minus * xnorm * _perp_norm(x, delta, xnorm, dim)
    cos_part = one_minus * xd - c * d2 * x2
    return _angle(sin_part, cos_part)


def _psi_euclidean(x, K, dim, strict):
    s = K / _floored(_norm(x, dim))
    return _arcsin_aperture(s, strict, f"||x|| >= K = {K:.6g}")


def _psi_poincare(x, c, K, dim, strict):
    x2 = (x * x).sum(dim, keepdim=True)
    # floor the product sqrt(c)·‖x‖: the backward pass of the division squares it
    s = K * P._one_minus_cx2(x2, c) / _floored(_sqrt(c) * _norm(x, dim))
    eps_k = 2 * K / (1 + math.sqrt(1 + 4 * K * K))
    return _arcsin_aperture(s, strict, f"sqrt(c)*||x|| >= eps_K = {eps_k:.6g} (K = {K:.6g})")


def _pair_energy(x, y, c, K, geometry):
    """E(x, y) for validated (N, n) point sets, keepdim; Poincaré points are projected."""
    if geometry == "euclidean":
        return torch.relu(_exterior(x, y, 0.0, -1) - _psi_euclidean(x, K, -1, False))
    x, y = P._project(x, c, -1), P._project(y, c, -1)
    return torch.relu(_exterior(x, y, c, -1) - _psi_poincare(x, c, K, -1, False))


def _squeeze(t, d, keepdim):
    return t if keepdim else t.squeeze(d)


# ----------------------------------------------------------------------------
# the domain of the aperture
# ----------------------------------------------------------------------------
def inner_radius(K: float, *, c: float = 1.0, geometry: str = "poincare") -> float:
    r"""Smallest Euclidean norm of an apex whose cone is defined.

    Poincaré ball (curvature ``-c``, ``c > 0``): :math:`\varepsilon_K/\sqrt c` with
    :math:`\varepsilon_K = \dfrac{2K}{1 + \sqrt{1 + 4K^2}}`, the root in ``(0, 1)`` of
    :math:`K r^2 + r - K = 0`, i.e. of :math:`K(1 - r^2)/r = 1` (``ψ = π/2`` there).  It is the
    Euclidean radius of the hyperbolic sphere of radius :math:`\operatorname{arsinh}(2K)/\sqrt c`
    around the origin.  Euclidean space: ``K`` (where ``K/‖x‖ = 1``); ``c`` is ignored.

    Property checked in the tests: :math:`\varepsilon_{0.1} = 0.0990195`.
    Returns a Python float.
    """
    K = _check_K(K)
    if _check_geometry(geometry) == "euclidean":
        return K
    c = _checks.curvature(c)
    if not isinstance(c, float):
        raise ValueError(f"c must be a number > 0 here, got a tensor of shape {tuple(c.shape)}")
    return 2 * K / (1 + math.sqrt(1 + 4 * K * K)) / math.sqrt(c)


# ----------------------------------------------------------------------------
# Euclidean cones
# ----------------------------------------------------------------------------
@fp32_math
def euclidean_half_aperture(
    x: torch.Tensor, *, K: float = 0.1, dim: int = -1, keepdim: bool = False, strict: bool = False
) -> torch.Tensor:
    r"""Half-aperture of the Euclidean cone at ``x``: :math:`\psi(x) = \arcsin(K / \|x\|)`.

    Defined for :math:`\|x\| \ge K` (:func:`inner_radius` with ``geometry="euclidean"``); closer to
    the origin it is clamped to ``π/2`` unless ``strict=True`` raises ``ValueError``.  Properties:
    ``ψ = π/2`` at ``‖x‖ = K``; non-increasing in ``‖x‖``; ``‖x‖ sin ψ(x) = K`` (each boundary ray
    of the cone is tangent to the sphere of radius ``K``), which makes cones nested (transitive).
    It is the limit ``c -> 0`` of :func:`half_aperture` with ``K`` replaced by ``K·sqrt(c)``.

    Shapes: ``x (..., n)`` -> ``(...)``.  Ganea et al. 2018 (Euclidean cones), as restated in the
    HVSA (rejected ICLR submission), Appendix A.1.
    """
    K = _check_K(K)
    d = _checks.same_spaces(dim, ("x", x))
    return _squeeze(_psi_euclidean(x, K, d, strict), d, keepdim)


@fp32_math
def euclidean_exterior_angle(
    x: torch.Tensor, y: torch.Tensor, *, dim: int = -1, keepdim: bool = False
) -> torch.Tensor:
    r"""Angle at ``x`` between the ray from 0 through ``x`` (continued) and the segment to ``y``:

    .. math:: \Xi(x, y) = \arccos\frac{\|y\|^2 - \|x\|^2 - \|x - y\|^2}{2\|x\|\,\|x - y\|}
              = \angle(x,\ y - x).

    Properties: in ``[0, π]``; ``0`` for ``y`` further out on the ray, ``π`` for ``y`` between
    ``x`` and the origin (``Ξ(x, 0) = π``); invariant under rotations and under scaling both points
    by the same ``s > 0``; ``π/2`` by convention at ``y = x`` and ``x = 0``.
    Computed as ``atan2(‖x‖‖δ_⊥‖, ⟨x, δ⟩)``, ``δ = y - x`` (module docstring).

    Shapes: ``x, y (..., n)`` (broadcasting) -> ``(...)``.  HVSA, Appendix A.1, Eq. (13).
    """
    d = _checks.same_spaces(dim, ("x", x), ("y", y))
    return _squeeze(_exterior(x, y, 0.0, d), d, keepdim)


@fp32_math
def euclidean_energy(
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    K: float = 0.1,
    dim: int = -1,
    keepdim: bool = False,
    strict: bool = False,
) -> torch.Tensor:
    r"""Cone violation :math:`E(x, y) = \max\big(0, \Xi(x, y) - \psi(x)\big)` for Euclidean cones.

    ``x`` is the apex (the general concept), ``y`` the candidate (the specific one).  Properties:
    ``E >= 0``; ``E = 0`` iff ``y`` is in the cone of ``x``.  Shapes: ``(..., n)`` -> ``(...)``.
    """
    K = _check_K(K)
    d = _checks.same_spaces(dim, ("x", x), ("y", y))
    out = torch.relu(_exterior(x, y, 0.0, d) - _psi_euclidean(x, K, d, strict))
    return _squeeze(out, d, keepdim)


# ----------------------------------------------------------------------------
# Poincaré cones, curvature -c
# ----------------------------------------------------------------------------
@fp32_math
def half_aperture(
    x: torch.Tensor,
    *,
    c: Curvature,
    K: float = 0.1,
    dim: int = -1,
    keepdim: bool = False,
    strict: bool = False,
    project: bool = True,
) -> torch.Tensor:
    r"""Half-aperture of the hyperbolic cone at ``x`` in the Poincaré ball of curvature ``-c``:

    .. math::
        \psi_c(x) = \arcsin\!\Big(\frac{K\,(1 - c\|x\|^2)}{\sqrt c\,\|x\|}\Big)
        = \psi_1(\sqrt c\,x).

    ``c > 0`` means curvature ``-c``.  At ``c = 1`` this is Ganea et al.'s
    :math:`\psi(x) = \arcsin(K(1 - \|x\|^2)/\|x\|)`.  Defined for
    :math:`\sqrt c\|x\| \in [\varepsilon_K, 1)` (:func:`inner_radius`); closer to the origin it is
    clamped to ``π/2`` (MERU's behaviour) unless ``strict=True`` raises ``ValueError``.

    Properties (tested): ``ψ_c(x) = ψ_1(sqrt(c) x)``; ``ψ = π/2`` at ``sqrt(c)‖x‖ = ε_K``;
    non-increasing in ``‖x‖``, tending to 0 at the boundary;
    :math:`\sinh(\sqrt c\,\mathrm{Rad}(x))\sin\psi_c(x) = 2K` (Clairaut's constant); equals
    :func:`lorentz_half_aperture` of :func:`hyro_edu.geometry.lorentz.from_poincare` ``(x)``, every ``c``.

    Shapes: ``x (..., n)`` -> ``(...)``.  Ganea et al. 2018 (hyperbolic cones, ``c = 1``);
    curvature-``c`` form: the scaling ``ψ_c(x) = ψ_1(√c x)`` (derived in the book's chapter
    "Entailment cones"); HVSA, Eq. (10)-(11).
    """
    K = _check_K(K)
    c, d = P._setup(c, dim, ("x", x))
    x = P._point(x, c, d, "x", project)
    return _squeeze(_psi_poincare(x, c, K, d, strict), d, keepdim)


@fp32_math
def exterior_angle(
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    c: Curvature,
    dim: int = -1,
    keepdim: bool = False,
    project: bool = True,
) -> torch.Tensor:
    r"""Exterior angle at ``x`` in the Poincaré ball of curvature ``-c`` (``c > 0``):

    .. math::
        \Xi_c(x, y) = \arccos\frac{\langle x,y\rangle(1 + c\|x\|^2) - \|x\|^2(1 + c\|y\|^2)}
        {\|x\|\,\|x - y\|\sqrt{1 + c^2\|x\|^2\|y\|^2 - 2c\langle x,y\rangle}},

    the angle at ``x`` between the geodesic from the origin through ``x`` (continued beyond ``x``)
    and the geodesic from ``x`` to ``y``.  At ``c = 1`` this is Ganea et al.'s formula.

    Properties (tested): equals the Euclidean angle between ``x`` and ``log^c_x(y)`` (the ball is
    conformal and geodesics from 0 are straight); equals ``π`` minus the angle at ``x`` of the
    geodesic triangle ``0, x, y`` (hyperbolic law of cosines); ``Ξ_c(x, y) = Ξ_1(√c x, √c y)``;
    equals :func:`oxy_angle` of the :func:`hyro_edu.geometry.lorentz.from_poincare` images;
    ``Ξ(x, 0) = π``; ``π/2`` by convention at ``y = x`` (module docstring); tends to the
    Euclidean :func:`euclidean_exterior_angle` as ``c -> 0``.  Computed stably as
    ``atan2((1-c‖x‖²)‖x‖‖δ_⊥‖, (1-c‖x‖²)⟨x,δ⟩ - c‖δ‖²‖x‖²)`` with ``δ = y - x``.

    Shapes: ``x, y (..., n)`` (broadcasting) -> ``(...)``.  Ganea et al. 2018 (``c = 1``);
    HVSA, Eq. (11) and Appendix Eq. (14).
    """
    c, d = P._setup(c, dim, ("x", x), ("y", y))
    x = P._point(x, c, d, "x", project)
    y = P._point(y, c, d, "y", project)
    return _squeeze(_exterior(x, y, c, d), d, keepdim)


@fp32_math
def energy(
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    c: Curvature,
    K: float = 0.1,
    dim: int = -1,
    keepdim: bool = False,
    strict: bool = False,
    project: bool = True,
) -> torch.Tensor:
    r"""Cone violation in the Poincaré ball: :math:`E_c(x, y) = \max(0, \Xi_c(x, y) - \psi_c(x))`.

    Curvature ``-c`` with ``c > 0``.  ``x`` is the apex (general concept), ``y`` the specific one.
    Properties: ``E >= 0``; ``E = 0`` iff ``y`` lies in the cone of ``x``; the angle by which the
    cone's axis must turn to take ``y`` in.  Worked example (``K = 0.1``, checked against the
    ``arccos`` formula in the tests):
    ``x = (0.3, 0.2)/√c, y = (0.5, 0.45)/√c`` give ``ψ = 0.243700``, ``Ξ = 0.354073``,
    ``E = 0.110373`` for every ``c``.

    Shapes: ``x, y (..., n)`` -> ``(...)``.  Ganea et al. 2018; HVSA, Eq. (10).
    """
    K = _check_K(K)
    c, d = P._setup(c, dim, ("x", x), ("y", y))
    x = P._point(x, c, d, "x", project)
    y = P._point(y, c, d, "y", project)
    psi = _psi_poincare(x, c, K, d, strict)
    return _squeeze(torch.relu(_exterior(x, y, c, d) - psi), d, keepdim)


# ----------------------------------------------------------------------------
# Lorentz cones (MERU)
# ----------------------------------------------------------------------------
def _lorentz_space(x, c, dim, name):
    c, d = P._setup(c, dim, (name, x))
    if x.shape[d] < 2:
        raise ValueError(
            f"{name} must have at least 2 coordinates (time and space) along dim, got shape "
            f"{tuple(x.shape)}"
        )
    return c, d, x.narrow(d, 1, x.shape[d] - 1)


@fp32_math
def lorentz_half_aperture(
    x: torch.Tensor,
    *,
    c: Curvature,
    K: float = 0.1,
    dim: int = -1,
    keepdim: bool = False,
    strict: bool = False,
) -> torch.Tensor:
    r"""MERU's half-aperture on the hyperboloid of curvature ``-c`` (``c > 0``):

    .. math:: \operatorname{aper}(x) = \arcsin\!\Big(\frac{2K}{\sqrt c\,\|x_s\|}\Big),

    where :math:`x_s` is the space part of ``x`` (``K`` is MERU's ``min_radius``).  Defined for
    :math:`\sqrt c\|x_s\| \ge 2K`; closer to the origin it is clamped to ``π/2`` (as MERU's code
    does) unless ``strict=True`` raises ``ValueError``.

    Properties (tested): since :math:`\sqrt c\|x_s\| = \sinh(\sqrt c\, d(o, x))`, this is
    Clairaut's relation, and it equals the Poincaré :func:`half_aperture` of the same point
    (:func:`hyro_edu.geometry.lorentz.to_poincare`) for every ``c`` -- Ganea's ψ at ``c = 1``.
    Worked example (tested): ``c = 1``, ``x_s = (1, 0)``: ``0.201358``.

    Shapes: ``x (..., n+1)``, time coordinate first along ``dim`` (as in
    :mod:`hyro_edu.geometry.lorentz`; only the space part is read) -> ``(...)``.  Desai et al. 2023 (MERU),
    entailment loss; ``half_aperture`` in the official code.
    """
    K = _check_K(K)
    c, d, xs = _lorentz_space(x, c, dim, "x")
    s = 2 * K / _floored(_sqrt(c) * _norm(xs, d))  # floored product: see half_aperture
    psi = _arcsin_aperture(s, strict, f"sqrt(c)*||x_space|| >= 2K = {2 * K:.6g}")
    return _squeeze(psi, d, keepdim)


@fp32_math
def oxy_angle(
    x: torch.Tensor, y: torch.Tensor, *, c: Curvature, dim: int = -1, keepdim: bool = False
) -> torch.Tensor:
    r"""MERU's exterior angle at ``x`` of the triangle ``o, x, y`` on the hyperboloid:

    .. math::
        \operatorname{ext}(x, y) = \arccos\frac{y_t + c\,\langle x, y\rangle_L\, x_t}
        {\|x_s\|\sqrt{(c\,\langle x, y\rangle_L)^2 - 1}}.

    ``c > 0`` means curvature ``-c``.  Only the space parts :math:`x_s, y_s` are read; the time
    coordinates are recomputed as :math:`\sqrt{1/c + \|x_s\|^2}` (MERU stores space parts only).
    Computed stably (no cancellation, finite gradients) as
    ``atan2(‖x_s‖‖δ_⊥‖/√c, x_t⟨x_s, δ⟩ - ‖x_s‖²δ_t)`` with ``δ = y_s - x_s`` and
    ``δ_t = y_t - x_t = ⟨δ, x_s + y_s⟩/(x_t + y_t)``: the cosine part is the numerator above
    divided by ``c``, the sine part follows from the hyperbolic law of sines.

    Properties (tested): worked example (MERU's ``arccos`` form) ``c = 1``, ``x_s = (1, 0)``,
    ``y_s = (2, 0.5)``: ``0.749604``; equals the Poincaré :func:`exterior_angle` of
    the :func:`hyro_edu.geometry.lorentz.to_poincare` images for every ``c``; ``ext(x, o) = π`` exactly
    (MERU's ``eps`` gives ``π - 1.4e-3``); ``ext(x, x) = π/2`` (by convention; MERU's code gets it
    from ``0/eps``).

    Shapes: ``x, y (..., n+1)``, time first along ``dim`` -> ``(...)``.  Desai et al. 2023 (MERU);
    ``oxy_angle`` in the official code.
    """
    c, d, xs = _lorentz_space(x, c, dim, "x")
    _checks.tensor(y, "y")
    _checks.same_space(x, y, d, ("x", "y"))
    ys = y.narrow(d, 1, y.shape[d] - 1)
    delta = ys - xs
    x2 = (xs * xs).sum(d, keepdim=True)
    xd = (xs * delta).sum(d, keepdim=True)
    xt = torch.sqrt(1 / c + x2)
    yt = torch.sqrt(1 / c + (ys * ys).sum(d, keepdim=True))
    dt = (delta * (xs + ys)).sum(d, keepdim=True) / (xt + yt)  # y_t - x_t; x_t + y_t >= 2/sqrt(c)
    cos_part = xt * xd - x2 * dt
    xnorm = _norm(xs, d)
    sin_part = xnorm * _perp_norm(xs, delta, xnorm, d) / _sqrt(c)
    return _squeeze(_angle(sin_part, cos_part), d, keepdim)


@fp32_math
def lorentz_energy(
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    c: Curvature,
    K: float = 0.1,
    dim: int = -1,
    keepdim: bool = False,
    strict: bool = False,
) -> torch.Tensor:
    r"""MERU's entailment penalty of one pair: :math:`\max(0, \mathrm{ext} - \mathrm{aper})`.

    Curvature ``-c`` with ``c > 0``.  ``x`` is the apex (in MERU the text embedding), ``y`` the
    entailed point (the image).  MERU's loss is the mean of this over a batch.  Worked example
    (tested): ``c = 1``, ``x_s = (1, 0)``, ``y_s = (2, 0.5)``: ``0.548246``.
    Shapes: ``(..., n+1)`` -> ``(...)``.
    """
    psi = lorentz_half_aperture(x, c=c, K=K, dim=dim, keepdim=True, strict=strict)
    ext = oxy_angle(x, y, c=c, dim=dim, keepdim=True)
    d = _checks.dim_index(x, dim, "x")
    return _squeeze(torch.relu(ext - psi), d, keepdim)


# ----------------------------------------------------------------------------
# drawing (2-D)
# ----------------------------------------------------------------------------
def cone_outline(
    x: torch.Tensor,
    *,
    c: float = 1.0,
    K: float = 0.1,
    geometry: str = "poincare",
    n: int = 64,
    reach: float = 1.0,
) -> torch.Tensor:
    r"""A closed polygon ``(M, 2)`` around the 2-D cone of the apex ``x`` (shape ``(2,)``).

    The two boundary geodesics leave ``x`` at angles ``±ψ(x)`` from the axis; in the Poincaré ball
    (curvature ``-c``) they are followed until they are within ``1e-3`` (relative) of the boundary,
    then the polygon closes along the boundary circle.  Euclidean cones are cut at the circle of
    radius ``reach``.  Float64 throughout.
    """
    _check_geometry(geometry)
    K = _check_K(K)
    _checks.tensor(x, "x")
    if x.shape != (2,):
        raise ValueError(f"x must be one point of the plane, shape (2,), got {tuple(x.shape)}")
    x = x.detach().double()
    phi = math.atan2(x[1].item(), x[0].item())
    if geometry == "poincare":
        c = float(_checks.curvature(c))
        psi = half_aperture(x, c=c, K=K).item()
        edge = (1 - 1e-3) / math.sqrt(c)
        lam = P.conformal_factor(x, c=c).item()
        lengths = torch.cat([torch.zeros(1), torch.logspace(-3, 1.5, n)]).double() / math.sqrt(c)
    else:
        psi = euclidean_half_aperture(x, K=K).item()
        edge = float(reach)
        if not edge > x.norm().item():
            raise ValueError(f"reach must exceed ||x|| = {x.norm().item():.4g}, got {reach!r}")
        lam, lengths = 1.0, torch.linspace(0, 2 * edge, n).double()
    sides = []
    for sign in (-1.0, 1.0):
        u = torch.tensor([math.cos(phi + sign * psi), math.sin(phi + sign * psi)]).double()
        if geometry == "poincare":
            ray = P.expmap(x.expand(len(lengths), 2), lengths[:, None] / lam * u, c=c)
        else:
            ray = x + lengths[:, None] * u
        ray = ray[ray.norm(dim=-1) <= edge]
        sides.append(ray)
    ends = [math.atan2(s[-1, 1].item(), s[-1, 0].item()) for s in sides]
    rel = [math.remainder(a - phi, 2 * math.pi) for a in ends]
    arc = phi + torch.linspace(rel[0], rel[1], n).double()
    arc = edge * torch.stack([arc.cos(), arc.sin()], dim=-1)
    return torch.cat([sides[0], arc, sides[1].flip(0)])


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
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be an integer >= 0, got {n!r}")
    idx = torch.randint(len(candidates), (n,), generator=generator)
    return candidates[idx]


# ----------------------------------------------------------------------------
# the max-margin loss and the trainer
# ----------------------------------------------------------------------------
def _check_pairs(pairs, n_points, name):
    if not isinstance(pairs, torch.Tensor) or pairs.dtype != torch.long:
        raise ValueError(f"{name} must be a long tensor of shape (P, 2)")
    if pairs.dim() != 2 or pairs.shape[1] != 2:
        raise ValueError(f"{name} must have shape (P, 2), got {tuple(pairs.shape)}")
    if len(pairs) and (int(pairs.min()) < 0 or int(pairs.max()) >= n_points):
        raise ValueError(f"{name} must hold node indices in [0, {n_points - 1}]")


@fp32_math
def pair_energies(
    points: torch.Tensor,
    pairs: torch.Tensor,
    *,
    c: float = 1.0,
    K: float = 0.1,
    geometry: str = "poincare",
) -> torch.Tensor:
    """Energies ``E(points[u], points[v])`` for the rows ``(u, v)`` of ``pairs (P, 2)``: ``(P,)``.

    Poincaré ball of curvature ``-c`` (``c > 0``; points are projected into the ball, as in
    :func:`energy`), or Euclidean space (``c`` ignored).  Same values as :func:`energy` /
    :func:`euclidean_energy` (tested), validated once for the whole set.
    """
    _checks.tensor(points, "points")
    if points.dim() != 2:
        raise ValueError(f"points must have shape (N, n), got {tuple(points.shape)}")
    _check_pairs(pairs, len(points), "pairs")
    K = _check_K(K)
    if _check_geometry(geometry) == "poincare":
        c = _checks.curvature(c)
    x, y = points[pairs[:, 0]], points[pairs[:, 1]]
    return _pair_energy(x, y, c, K, geometry).squeeze(-1)


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
    _check_pairs(negatives, len(points), "negatives")
    _check_pairs(positives, len(points), "positives")
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
        out = (1 - ball_margin(dtype)) / math.sqrt(c)
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
    _check_geometry(geometry)
    K = _check_K(K)
    if geometry == "poincare":
        c = float(_checks.curvature(c))
    gap = _check_gap(gap, K, points.dtype, geometry, outer)
    lo, hi = _annulus(K, c, points.dtype, geometry, outer, gap)
    norm = _norm(points, -1)
    first_axis = torch.zeros_like(points)
    first_axis[..., 0] = 1
    direction = torch.where(norm > 0, points / _floored(norm), first_axis)
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
        # floored at eps as in hyro_edu.geometry.poincare, for points that rounding put on the boundary
        one_minus = P._one_minus_cx2((points * points).sum(-1, keepdim=True), c)
        step = lr * one_minus**2 / 4 * grad
        length = 2 / one_minus * _norm(step, -1)  # λ_u ‖step‖: the step's hyperbolic length
    else:
        step = lr * grad
        length = _norm(step, -1)
    if max_step is not None:
        if not (isinstance(max_step, Real) and math.isfinite(max_step) and max_step > 0):
            raise ValueError(f"max_step must be a finite number > 0 or None, got {max_step!r}")
        step = step * (max_step / _floored(length)).clamp(max=1)
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
    _check_geometry(geometry)
    K = _check_K(K)
    if geometry == "poincare":
        c = float(_checks.curvature(c))
    for name, value, low in (("dim", dim, 1), ("steps", steps, 1), ("negatives", negatives, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
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
    _check_pairs(pos_all, n, "train_pairs")
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
    # see hyro_edu.geometry.cayley._solve.)
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
