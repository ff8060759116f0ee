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

:func:`pair_energies` evaluates the energies of many ``(general, specific)`` index pairs of one
point set at once.  Training on a partial order (Ganea et al.'s max-margin loss, the annulus
projection, Riemannian SGD, the metrics) is in :mod:`hyro_edu.hierarchy.entailment`; drawing a
2-D cone is :func:`hyro_edu.book.plotting.cone_outline`.  What remains (about 530 lines) is one
concept, the cone of an apex in three models that the tests check against each other, built on
shared private kernels, so it is kept as one module.
"""

from __future__ import annotations

import math
from numbers import Real
from typing import Union

import torch

import hyro_edu.geometry._ball as _ball
from hyro_edu.core import checks as _checks
from hyro_edu.core.numerics import artanh_limit, floored, fp32_math, norm_floor, norm_keepdim, sqrt

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
    "pair_energies",
    "GEOMETRIES",
    "aperture_constant",
    "index_pairs",
]

Curvature = Union[float, torch.Tensor]
GEOMETRIES = ("poincare", "euclidean")


# ----------------------------------------------------------------------------
# validation (shared with hyro_edu.hierarchy.entailment)
# ----------------------------------------------------------------------------
def aperture_constant(K) -> float:
    """``K`` as a float if it is a valid aperture constant (a finite number ``> 0``), else ``ValueError``.

    ``K`` sets the width of every cone (:func:`half_aperture`, :func:`inner_radius`).
    """
    if isinstance(K, bool) or not isinstance(K, Real) or not math.isfinite(float(K)) or K <= 0:
        raise ValueError(f"K must be a finite number > 0 (the aperture constant), got {K!r}")
    return float(K)


def index_pairs(pairs, n_points: int, name: str) -> torch.Tensor:
    """``pairs`` if it is a long tensor ``(P, 2)`` of node indices in ``[0, n_points - 1]``.

    Otherwise ``ValueError`` naming ``name``, the expected shape or range and what was received.
    The rows are ``(general, specific)`` pairs (:func:`pair_energies`).
    """
    if not isinstance(pairs, torch.Tensor) or pairs.dtype != torch.long:
        raise ValueError(f"{name} must be a long tensor of shape (P, 2)")
    if pairs.dim() != 2 or pairs.shape[1] != 2:
        raise ValueError(f"{name} must have shape (P, 2), got {tuple(pairs.shape)}")
    if len(pairs) and (int(pairs.min()) < 0 or int(pairs.max()) >= n_points):
        raise ValueError(f"{name} must hold node indices in [0, {n_points - 1}]")
    return pairs


# ----------------------------------------------------------------------------
# private helpers
# ----------------------------------------------------------------------------
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
                    "hyro_edu.hierarchy.entailment.project_annulus (Ganea et al.)."
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
    unit = x / floored(xnorm)
    return norm_keepdim(delta - (unit * delta).sum(dim, keepdim=True) * unit, dim)


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
    one_minus = _ball.one_minus_cx2(x2, c) if not (isinstance(c, float) and c == 0.0) else 1.0
    # vector_norm, not x2.sqrt(): its gradient at x = 0 is 0, where sqrt's backward gives 0/0
    xnorm = norm_keepdim(x, dim)
    sin_part = one_minus * xnorm * _perp_norm(x, delta, xnorm, dim)
    cos_part = one_minus * xd - c * d2 * x2
    return _angle(sin_part, cos_part)


def _psi_euclidean(x, K, dim, strict):
    s = K / floored(norm_keepdim(x, dim))
    return _arcsin_aperture(s, strict, f"||x|| >= K = {K:.6g}")


def _psi_poincare(x, c, K, dim, strict):
    x2 = (x * x).sum(dim, keepdim=True)
    # floor the product sqrt(c)·‖x‖: the backward pass of the division squares it
    s = K * _ball.one_minus_cx2(x2, c) / floored(sqrt(c) * norm_keepdim(x, dim))
    eps_k = 2 * K / (1 + math.sqrt(1 + 4 * K * K))
    return _arcsin_aperture(s, strict, f"sqrt(c)*||x|| >= eps_K = {eps_k:.6g} (K = {K:.6g})")


def _pair_energy(x, y, c, K, geometry):
    """E(x, y) for validated (N, n) point sets, keepdim; Poincaré points are projected."""
    if geometry == "euclidean":
        return torch.relu(_exterior(x, y, 0.0, -1) - _psi_euclidean(x, K, -1, False))
    x, y = _ball.project(x, c, -1), _ball.project(y, c, -1)
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
    K = aperture_constant(K)
    if _checks.choice(geometry, "geometry", GEOMETRIES) == "euclidean":
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
    K = aperture_constant(K)
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
    K = aperture_constant(K)
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
    K = aperture_constant(K)
    c, d = _checks.curvature_and_spaces(c, dim, ("x", x))
    x = _ball.point(x, c, d, "x", project)
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
    c, d = _checks.curvature_and_spaces(c, dim, ("x", x), ("y", y))
    x = _ball.point(x, c, d, "x", project)
    y = _ball.point(y, c, d, "y", project)
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
    K = aperture_constant(K)
    c, d = _checks.curvature_and_spaces(c, dim, ("x", x), ("y", y))
    x = _ball.point(x, c, d, "x", project)
    y = _ball.point(y, c, d, "y", project)
    psi = _psi_poincare(x, c, K, d, strict)
    return _squeeze(torch.relu(_exterior(x, y, c, d) - psi), d, keepdim)


# ----------------------------------------------------------------------------
# Lorentz cones (MERU)
# ----------------------------------------------------------------------------
def _lorentz_space(x, c, dim, name):
    c, d = _checks.curvature_and_spaces(c, dim, (name, x))
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
    K = aperture_constant(K)
    c, d, xs = _lorentz_space(x, c, dim, "x")
    s = 2 * K / floored(sqrt(c) * norm_keepdim(xs, d))  # floored product: see half_aperture
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
    xnorm = norm_keepdim(xs, d)
    sin_part = xnorm * _perp_norm(xs, delta, xnorm, d) / sqrt(c)
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
# energies of index pairs of one point set
# ----------------------------------------------------------------------------
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
    index_pairs(pairs, len(points), "pairs")
    K = aperture_constant(K)
    if _checks.choice(geometry, "geometry", GEOMETRIES) == "poincare":
        c = _checks.curvature(c)
    x, y = points[pairs[:, 0]], points[pairs[:, 1]]
    return _pair_energy(x, y, c, K, geometry).squeeze(-1)


