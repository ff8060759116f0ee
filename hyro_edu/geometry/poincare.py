r"""The Poincaré ball of curvature ``-c`` as pure functions.

**Convention (one for the whole package):** ``c > 0`` and the curvature is
``-c``.  The ball is :math:`\mathbb{D}^n_c = \{x \in \mathbb{R}^n : c\|x\|^2 < 1\}`,
of Euclidean radius :math:`1/\sqrt{c}`.  geoopt's ``Stereographic(k)`` uses
``k = -c`` and its ``Lorentz(k)`` uses ``k = 1/c``; see :mod:`hyro_edu.core.curvature`.

Every function takes the curvature as the keyword-only ``c`` (a number or a
tensor that broadcasts against the norms of the inputs, i.e. with size 1 along
the vector axis: ``(B, 1)`` for points ``(B, n)``; a ``ValueError`` names ``c``
otherwise) and the vector axis as ``dim`` (default ``-1``).  ``project`` (default ``True``) clips input points and
output points into the ball, ``sqrt(c)·‖x‖ <= 1 - sqrt(finfo.eps)`` (see
:mod:`hyro_edu.core.numerics`); with ``project=False`` input points must lie strictly
inside the ball or a ``ValueError`` is raised, and outputs are returned as
computed.  Half-precision inputs, and calls under autocast, are computed in
float32.

This module is the documented, validating layer; the unchecked kernels it calls (projection,
the cancellation-free Möbius addition and gyration) live in :mod:`hyro_edu.geometry._ball`,
which :mod:`~hyro_edu.geometry.cones` and :mod:`~hyro_edu.hierarchy.tree_embedding` share.  It
stays one module of about 550 lines because it is one concept, the operations of one model of
hyperbolic space, and each function's length is its docstring (equation, properties, shapes).

References
----------
* Ungar, *A Gyrovector Space Approach to Hyperbolic Geometry* (2008): Möbius
  addition, scalar multiplication, gyrations.
* Ganea, Bécigneul & Hofmann, *Hyperbolic Neural Networks* (NeurIPS 2018):
  the curvature-``c`` gyrovector operations, exp/log maps (their Lemma 1),
  Möbius matrix-vector multiplication, parallel transport.
* Khrulkov et al., *Hyperbolic Image Embeddings* (CVPR 2020): the Möbius
  matrix-vector multiplication that HyperCLIP cites.
* Peng et al., HyperCLIP supplement (CVPR 2025), Eq. (S-1): the hyperbolic
  radius ``Rad_x``.
"""
from __future__ import annotations

from typing import Union

import torch

import hyro_edu.geometry._ball as _ball
from hyro_edu.core import checks as _checks
from hyro_edu.core.numerics import artanh, ball_margin, floored, fp32_math, norm_keepdim, sqrt

__all__ = [
    "project",
    "conformal_factor",
    "inner",
    "tangent_norm",
    "mobius_add",
    "mobius_sub",
    "mobius_scalar_mul",
    "mobius_matvec",
    "expmap0",
    "logmap0",
    "expmap",
    "logmap",
    "dist",
    "pairwise_dist",
    "radius",
    "angle_at_origin",
    "geodesic",
    "gyration",
    "parallel_transport",
]

Curvature = Union[float, torch.Tensor]


# ----------------------------------------------------------------------------
# public API
# ----------------------------------------------------------------------------
@fp32_math
def project(x: torch.Tensor, *, c: Curvature, dim: int = -1) -> torch.Tensor:
    r"""Clip points into the ball: :math:`x \mapsto x \cdot \min(1, m / \|x\|)`, :math:`m = (1-\delta)/\sqrt{c}`.

    ``δ = sqrt(finfo(x.dtype).eps)`` (:func:`hyro_edu.core.numerics.ball_margin`).
    Curvature ``-c`` with ``c > 0``.

    Properties: the identity on points with ``sqrt(c)‖x‖ <= 1 - δ``;
    idempotent; keeps the direction of ``x``; the result satisfies
    ``sqrt(c)‖x‖ <= (1 - δ)(1 + 4·eps)`` (a few ulps of rounding).

    Parameters
    ----------
    x : tensor ``(..., n)``
    c : float or tensor, ``c > 0``
    dim : int, the vector axis.
    """
    c, d = _checks.curvature_and_spaces(c, dim, ("x", x))
    return _ball.project(x, c, d)


@fp32_math
def conformal_factor(
    x: torch.Tensor, *, c: Curvature, dim: int = -1, keepdim: bool = False, project: bool = True
) -> torch.Tensor:
    r""":math:`\lambda^c_x = \dfrac{2}{1 - c\|x\|^2}`, the conformal factor of the metric :math:`g_x = (\lambda^c_x)^2 g^E`.

    Curvature ``-c`` with ``c > 0``.  Properties: :math:`\lambda^c_0 = 2`;
    grows without bound towards the boundary; as ``c -> 0`` it tends to 2, so
    the ball becomes Euclidean space with its metric scaled by 4.

    Shapes: ``x (..., n)`` -> ``(...)`` (``(..., 1)`` with ``keepdim``).
    """
    c, d = _checks.curvature_and_spaces(c, dim, ("x", x))
    x = _ball.point(x, c, d, "x", project)
    lam = 2 / _ball.one_minus_cx2((x * x).sum(d, keepdim=True), c)
    return lam if keepdim else lam.squeeze(d)


@fp32_math
def inner(
    x: torch.Tensor,
    u: torch.Tensor,
    v: torch.Tensor,
    *,
    c: Curvature,
    dim: int = -1,
    keepdim: bool = False,
    project: bool = True,
) -> torch.Tensor:
    r"""Riemannian inner product of tangent vectors at ``x``: :math:`\langle u, v\rangle_x = (\lambda^c_x)^2 \langle u, v\rangle`.

    Curvature ``-c`` with ``c > 0``.  Because the metric is a scalar multiple
    of the Euclidean one (conformal), angles between tangent vectors equal
    Euclidean angles.  Shapes: ``x, u, v (..., n)`` -> ``(...)``.
    """
    c, d = _checks.curvature_and_spaces(c, dim, ("x", x), ("u", u), ("v", v))
    x = _ball.point(x, c, d, "x", project)
    lam = 2 / _ball.one_minus_cx2((x * x).sum(d, keepdim=True), c)
    out = lam**2 * (u * v).sum(d, keepdim=True)
    return out if keepdim else out.squeeze(d)


@fp32_math
def tangent_norm(
    x: torch.Tensor, u: torch.Tensor, *, c: Curvature, dim: int = -1, keepdim: bool = False, project: bool = True
) -> torch.Tensor:
    r"""Riemannian norm of a tangent vector at ``x``: :math:`\|u\|_x = \lambda^c_x \|u\|`.

    Curvature ``-c`` with ``c > 0``.  Property checked in the tests:
    :math:`d_c(x, y) = \|\log^c_x(y)\|_x`.  Shapes: ``x, u (..., n)`` -> ``(...)``.
    """
    c, d = _checks.curvature_and_spaces(c, dim, ("x", x), ("u", u))
    x = _ball.point(x, c, d, "x", project)
    lam = 2 / _ball.one_minus_cx2((x * x).sum(d, keepdim=True), c)
    out = lam * norm_keepdim(u, d)
    return out if keepdim else out.squeeze(d)


@fp32_math
def mobius_add(x: torch.Tensor, y: torch.Tensor, *, c: Curvature, dim: int = -1, project: bool = True) -> torch.Tensor:
    r"""Möbius addition (Ungar 2008; Ganea et al. 2018):

    .. math::
        x \oplus_c y = \frac{(1 + 2c\langle x,y\rangle + c\|y\|^2)\,x + (1 - c\|x\|^2)\,y}
                            {1 + 2c\langle x,y\rangle + c^2\|x\|^2\|y\|^2}.

    Curvature ``-c`` with ``c > 0``.  Properties: ``0 ⊕ x = x ⊕ 0 = x``;
    ``(-x) ⊕ x = 0``; left cancellation ``(-x) ⊕ (x ⊕ y) = y``; not commutative
    or associative, but ``x ⊕ y = gyr[x, y](y ⊕ x)``; the result stays in the
    ball; as ``c -> 0`` it tends to ``x + y``.

    Computed in the equivalent form :math:`\big(a(x + y) + c\|x + y\|^2 x\big) /
    \big(ab + c\|x + y\|^2\big)` with :math:`a = 1 - c\|x\|^2`,
    :math:`b = 1 - c\|y\|^2`, in which nothing cancels: near the boundary the
    form above loses all digits of ``(-x) ⊕ y`` for nearby ``x, y`` (float32,
    ``x = (0.999, 0)``, ``y = (0.999, 1e-4)``: ``[0, 0.05006]`` instead of
    ``[-0.00249, 0.04990]``); the relative error is now within a few times
    ``eps / min(a, b)``, the conditioning of the problem (tested against 40-digit
    references).

    Shapes: ``x, y (..., n)`` (broadcasting) -> ``(..., n)``.
    """
    c, d = _checks.curvature_and_spaces(c, dim, ("x", x), ("y", y))
    s, x_coef, a, den, s2 = _ball.mobius_add_parts(x, y, c, d, project, ("x", "y"))
    if project:
        # ‖x ⊕ y‖ = sqrt(s2 / den) needs no pass over the output: fold the
        # projection factor into both coefficients.  The floor at finfo.tiny keeps
        # sqrt'(0) = inf out of the chain rule when x ⊕ y = 0.
        den = den / _ball.into_ball((s2 / den).clamp_min(torch.finfo(s2.dtype).tiny).sqrt(), c)
    return (s * (a / den)).addcmul_(x, x_coef / den)


@fp32_math
def mobius_sub(x: torch.Tensor, y: torch.Tensor, *, c: Curvature, dim: int = -1, project: bool = True) -> torch.Tensor:
    r"""Möbius subtraction :math:`x \ominus_c y = x \oplus_c (-y)`.  Curvature ``-c``, ``c > 0``.

    Note the distance uses the *other* order: :math:`d_c(x, y) = \tfrac{2}{\sqrt c}\operatorname{artanh}(\sqrt c\,\|(-x) \oplus_c y\|)`.
    """
    return mobius_add(x, -y, c=c, dim=dim, project=project)


@fp32_math
def mobius_scalar_mul(r, x: torch.Tensor, *, c: Curvature, dim: int = -1, project: bool = True) -> torch.Tensor:
    r"""Möbius scalar multiplication (Ungar 2008; Ganea et al. 2018):

    .. math::
        r \otimes_c x = \frac{1}{\sqrt c}\tanh\!\big(r \operatorname{artanh}(\sqrt c\,\|x\|)\big)\frac{x}{\|x\|},
        \qquad r \otimes_c 0 = 0.

    Curvature ``-c`` with ``c > 0``.  Properties: ``1 ⊗ x = x``;
    ``(r s) ⊗ x = r ⊗ (s ⊗ x)``; ``n ⊗ x = x ⊕ ... ⊕ x`` (``n`` terms);
    keeps the direction of ``x`` for ``r > 0``; scales the hyperbolic radius:
    ``Rad(r ⊗ x) = |r| Rad(x)`` (HyperCLIP supplement, Eq. S-4).

    ``r`` is a number or a tensor that broadcasts against ``x`` with its
    vector axis kept (shape ``(..., 1)`` for ``dim=-1``).
    """
    c, d = _checks.curvature_and_spaces(c, dim, ("x", x))
    r = _checks.broadcast_scalar(r, x, "r")
    if not project:
        _checks.inside_ball(x, c, d, "x")
        return _ball.mobius_scalar_mul(r, x, c, d)
    limit = 1 - ball_margin(x.dtype)
    z = floored(sqrt(c) * norm_keepdim(x, d))
    # Input projection clips z; the output has norm |tanh(r·artanh(z))|/sqrt(c),
    # so output projection clips the tanh.
    t = torch.tanh(r * artanh(z.clamp_max(limit))).clamp(-limit, limit)
    return x * (t / z)


@fp32_math
def mobius_matvec(m: torch.Tensor, x: torch.Tensor, *, c: Curvature, dim: int = -1, project: bool = True) -> torch.Tensor:
    r"""Möbius matrix-vector multiplication (Ganea et al. 2018; Khrulkov et al. 2020):

    .. math::
        M \otimes_c x = \frac{1}{\sqrt c}\tanh\!\Big(\frac{\|Mx\|}{\|x\|}\operatorname{artanh}(\sqrt c\,\|x\|)\Big)
                        \frac{Mx}{\|Mx\|}, \qquad M \otimes_c x = 0 \text{ if } Mx = 0.

    Curvature ``-c`` with ``c > 0``.  Properties: equals
    ``expmap0(M @ logmap0(x))``; ``(MN) ⊗ x = M ⊗ (N ⊗ x)``; ``(rM) ⊗ x = r ⊗ (M ⊗ x)``;
    orthogonal ``M`` commute with it and keep the radius; the radius scales by
    ``‖Mx‖/‖x‖`` (HyperCLIP supplement, Eq. S-5).

    Shapes: ``m (p, n)`` (one matrix for all points) or ``m (..., p, n)`` (a
    matrix per point, batch dimensions broadcasting against those of ``x``),
    ``x (..., n)`` along ``dim`` -> ``(..., p)``.  Row convention as in
    ``torch.nn.functional.linear``: ``x @ m.T`` for a single matrix.
    """
    c, d = _checks.curvature_and_spaces(c, dim, ("x", x))
    _checks.tensor(m, "m")
    if m.dim() < 2 or m.shape[-1] != x.shape[d]:
        raise ValueError(
            f"m must be a matrix (..., p, n) whose last size n equals x.shape[dim] = {x.shape[d]}, "
            f"got m of shape {tuple(m.shape)}"
        )
    xl = x.movedim(d, -1)
    if m.dim() == 2:  # one matrix for every point: a single GEMM
        mx = xl @ m.transpose(-1, -2)
    else:
        # A matrix per point: (..., p, n) @ (..., n, 1).  x @ m.mT would treat x
        # (B, n) as one matrix and return every point times every matrix, (B, B, p).
        try:
            torch.broadcast_shapes(m.shape[:-2], xl.shape[:-1])
        except RuntimeError:
            raise ValueError(
                f"the batch dimensions of m {tuple(m.shape[:-2])} must broadcast against those of x "
                f"{tuple(xl.shape[:-1])} (m (..., p, n), x (..., n) along dim)"
            ) from None
        mx = (m @ xl.unsqueeze(-1)).squeeze(-1)
    sqrt_c = sqrt(c)
    if isinstance(sqrt_c, torch.Tensor) and sqrt_c.dim() >= -d:
        sqrt_c = sqrt_c.movedim(d, -1)
    x_norm = norm_keepdim(xl, -1)
    if not project:
        _checks.inside_ball_scaled_norm(sqrt_c * x_norm, "x")
    x_norm = floored(x_norm)
    mx_norm = floored(norm_keepdim(mx, -1))
    z = sqrt_c * x_norm
    if project:
        # Projecting x scales x and Mx alike: ‖Mx‖/‖x‖ is unchanged and only
        # artanh(sqrt(c)‖x‖) sees the clipped norm; the output has norm
        # tanh(...)/sqrt(c), so output projection clips the tanh.
        limit = 1 - ball_margin(z.dtype)
        t = torch.tanh(mx_norm / x_norm * artanh(z.clamp_max(limit))).clamp_max(limit)
    else:
        t = torch.tanh(mx_norm / x_norm * artanh(z))
    # Mx = 0 gives mx * scale = 0 exactly: the floored norms keep scale finite.
    out = mx * (t / (mx_norm * sqrt_c))
    return out.movedim(-1, d)


@fp32_math
def expmap0(v: torch.Tensor, *, c: Curvature, dim: int = -1, project: bool = True) -> torch.Tensor:
    r"""Exponential map at the origin (Ganea et al. 2018, Lemma 1 at ``x = 0``):

    .. math:: \exp^c_0(v) = \tanh(\sqrt c\,\|v\|)\,\frac{v}{\sqrt c\,\|v\|}.

    Curvature ``-c`` with ``c > 0``.  Properties: ``expmap0(0) = 0`` with
    Jacobian ``I`` there; keeps directions; ``Rad(expmap0(v)) = 2‖v‖`` (the
    metric at 0 is ``4·g^E``, so the tangent norm of ``v`` at 0 is ``2‖v‖``);
    inverse of :func:`logmap0`; as ``c -> 0`` it tends to the identity.

    Shapes: ``v (..., n)`` -> ``(..., n)``.
    """
    c, d = _checks.curvature_and_spaces(c, dim, ("v", v))
    z = floored(sqrt(c) * norm_keepdim(v, d))
    t = torch.tanh(z)
    if project:
        # ‖expmap0(v)‖ = tanh(z)/sqrt(c): projecting the output is clipping tanh(z).
        t = t.clamp_max(1 - ball_margin(t.dtype))
    return v * (t / z)


@fp32_math
def logmap0(y: torch.Tensor, *, c: Curvature, dim: int = -1, project: bool = True) -> torch.Tensor:
    r"""Logarithmic map at the origin (Ganea et al. 2018, Lemma 1 at ``x = 0``):

    .. math:: \log^c_0(y) = \operatorname{artanh}(\sqrt c\,\|y\|)\,\frac{y}{\sqrt c\,\|y\|}.

    Curvature ``-c`` with ``c > 0``.  Properties: inverse of :func:`expmap0`;
    ``‖logmap0(y)‖ = Rad(y) / 2``; keeps directions.  Shapes: ``(..., n)`` -> ``(..., n)``.
    """
    c, d = _checks.curvature_and_spaces(c, dim, ("y", y))
    z = sqrt(c) * norm_keepdim(y, d)
    if not project:
        _checks.inside_ball_scaled_norm(z, "y")
    z = floored(z)
    # Projecting y first scales it to norm min(‖y‖, max_norm): only the artanh
    # argument changes, so clip z there and keep y/z as the direction.
    zc = z.clamp_max(1 - ball_margin(z.dtype)) if project else z
    return y * (artanh(zc) / z)


@fp32_math
def expmap(x: torch.Tensor, v: torch.Tensor, *, c: Curvature, dim: int = -1, project: bool = True) -> torch.Tensor:
    r"""Exponential map at ``x`` (Ganea et al. 2018, Lemma 1):

    .. math:: \exp^c_x(v) = x \oplus_c \Big(\tanh\!\big(\tfrac{\sqrt c\,\lambda^c_x\|v\|}{2}\big)\frac{v}{\sqrt c\,\|v\|}\Big).

    Curvature ``-c`` with ``c > 0``.  Properties: ``expmap(x, 0) = x``;
    ``d(x, expmap(x, v)) = ‖v‖_x = λ_x‖v‖``; inverse of :func:`logmap`;
    ``expmap(0, v) = expmap0(v)``.  Shapes: ``x, v (..., n)`` -> ``(..., n)``.
    """
    c, d = _checks.curvature_and_spaces(c, dim, ("x", x), ("v", v))
    x = _ball.point(x, c, d, "x", project)
    half_lam = 1 / _ball.one_minus_cx2((x * x).sum(d, keepdim=True), c)  # λ_x / 2
    sv = floored(sqrt(c) * norm_keepdim(v, d))
    # sv·λ_x/2 may overflow to inf for huge v: tanh(inf) = 1 is the right limit.
    second = torch.tanh(sv * half_lam) * v / sv
    out = _ball.mobius_add(x, second, c, d)
    return _ball.project(out, c, d) if project else out


@fp32_math
def logmap(x: torch.Tensor, y: torch.Tensor, *, c: Curvature, dim: int = -1, project: bool = True) -> torch.Tensor:
    r"""Logarithmic map at ``x`` (Ganea et al. 2018, Lemma 1):

    .. math:: \log^c_x(y) = \frac{2}{\sqrt c\,\lambda^c_x}\operatorname{artanh}(\sqrt c\,\|w\|)\frac{w}{\|w\|},
              \qquad w = (-x) \oplus_c y.

    Curvature ``-c`` with ``c > 0``.  Properties: inverse of :func:`expmap`;
    ``‖logmap(x, y)‖_x = d(x, y)``; ``logmap(0, y) = logmap0(y)``.

    Computed without forming ``artanh`` near 1 or a cancelling Möbius sum: the
    length comes from the arsinh form of :func:`dist`, the direction from the
    cancellation-free ``(-x) ⊕ y`` (see the comments in the code).  The formula
    above lost 1e-2 of relative accuracy in float32 at ``x = (0.999, 0)``,
    ``y = (-0.5994, 0.7992)``.  Shapes: ``x, y (..., n)`` -> ``(..., n)``.
    """
    c, d = _checks.curvature_and_spaces(c, dim, ("x", x), ("y", y))
    x = _ball.point(x, c, d, "x", project)
    y = _ball.point(y, c, d, "y", project)
    # With s = y - x, a = 1 - c‖x‖², b = 1 - c‖y‖², D = ab + c‖s‖² (see _ball.mobius_add):
    # w = (-x) ⊕ y = (a·s - c‖s‖²·x) / D, ‖w‖ = ‖s‖/sqrt(D), and
    # artanh(sqrt(c)‖w‖) = arsinh(sqrt(c)‖s‖ / sqrt(ab)), the form dist uses.  So
    # log_x y = (a / sqrt(c)) arsinh(sqrt(c)‖s‖/sqrt(ab)) · (a·s - c‖s‖²·x) / (‖s‖ sqrt(D)):
    # no artanh near 1 and no cancelling sum (the textbook form lost 1e-2 relative
    # accuracy in float32 at x = (0.999, 0), y = (-0.5994, 0.7992)).
    s = y - x
    s2 = _ball.sq_norm(s, d)
    a = _ball.one_minus_cx2(_ball.sq_norm(x, d), c)
    b = _ball.one_minus_cx2(_ball.sq_norm(y, d), c)
    ab = a * b
    den = _ball.gyro_denominator(a, b, c, s2)
    sqrt_c = sqrt(c)
    # ‖s‖ floored at sqrt(finfo.tiny) (the norm floor) by flooring s2 at tiny
    # before the square root: at y = x the ratio arsinh(z)/‖s‖ takes its limit
    # sqrt(c/ab), and sqrt'(0) = inf never enters the chain rule.
    s_norm = s2.clamp_min(torch.finfo(s2.dtype).tiny).sqrt()
    coef = a * torch.asinh(sqrt_c * s_norm / ab.sqrt()) / (sqrt_c * s_norm * den.sqrt())
    return (s * (a * coef)).addcmul_(x, -(c * s2) * coef)


@fp32_math
def dist(
    x: torch.Tensor, y: torch.Tensor, *, c: Curvature, dim: int = -1, keepdim: bool = False, project: bool = True
) -> torch.Tensor:
    r"""Geodesic distance:

    .. math:: d_c(x, y) = \frac{2}{\sqrt c}\operatorname{artanh}\big(\sqrt c\,\|(-x) \oplus_c y\|\big)
              = \frac{2}{\sqrt c}\operatorname{arsinh}\Big(\frac{\sqrt c\,\|x - y\|}
                {\sqrt{(1 - c\|x\|^2)(1 - c\|y\|^2)}}\Big).

    The second form (from ``cosh(√c d) = 1 + 2c‖x-y‖²/((1-c‖x‖²)(1-c‖y‖²))``
    and ``cosh 2t = 1 + 2 sinh² t``) is what is computed: it never forms the
    Möbius sum, whose denominator ``~(1 - c‖x‖‖y‖)²`` cancels catastrophically
    for nearby points far from the origin, and it has no ``arcosh(1 + small)``.
    Curvature ``-c`` with ``c > 0``.  Properties: a metric (symmetric,
    ``d(x, x) = 0``, triangle inequality); invariant under Möbius translations
    ``d(a ⊕ x, a ⊕ y) = d(x, y)`` and rotations; ``d(0, y) = Rad(y)``; as
    ``c -> 0`` it tends to ``2‖x - y‖``.  Shapes: ``(..., n)`` -> ``(...)``.
    """
    c, d = _checks.curvature_and_spaces(c, dim, ("x", x), ("y", y))
    x2 = (x * x).sum(d, keepdim=True)
    y2 = (y * y).sum(d, keepdim=True)
    if project:
        # Fold the input projections into the formula: x -> sx·x, y -> sy·y.
        tiny = torch.finfo(x2.dtype).tiny  # keeps sqrt'(0) out of the chain rule at x = 0
        sx = _ball.into_ball(x2.clamp_min(tiny).sqrt(), c)
        sy = _ball.into_ball(y2.clamp_min(tiny).sqrt(), c)
        diff = x * sx - y * sy
        x2, y2 = x2 * (sx * sx), y2 * (sy * sy)
    else:
        _checks.inside_ball_scaled_norm((c * x2).sqrt(), "x")
        _checks.inside_ball_scaled_norm((c * y2).sqrt(), "y")
        diff = x - y
    sqrt_c = sqrt(c)
    den = (_ball.one_minus_cx2(x2, c) * _ball.one_minus_cx2(y2, c)).sqrt()
    out = 2 / sqrt_c * torch.asinh(sqrt_c * norm_keepdim(diff, d) / den)
    return out if keepdim else out.squeeze(d)


@fp32_math
def pairwise_dist(x: torch.Tensor, y: torch.Tensor, *, c: Curvature, project: bool = True) -> torch.Tensor:
    r"""All distances :math:`D_{ij} = d_c(x_i, y_j)` between two point sets.

    Curvature ``-c`` with ``c > 0`` (a number).  Shapes: ``x (N, n)``,
    ``y (M, n)`` -> ``(N, M)``; memory ``O(N·M·n)``.
    """
    _checks.tensor(x, "x")
    _checks.tensor(y, "y")
    if x.dim() != 2 or y.dim() != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(
            f"x and y must be matrices (N, n) and (M, n) with the same n, got {tuple(x.shape)} and {tuple(y.shape)}"
        )
    return dist(x.unsqueeze(1), y.unsqueeze(0), c=c, project=project)


@fp32_math
def radius(x: torch.Tensor, *, c: Curvature, dim: int = -1, keepdim: bool = False, project: bool = True) -> torch.Tensor:
    r"""Hyperbolic radius, the distance to the origin (HyperCLIP supplement, Eq. S-1):

    .. math:: \operatorname{Rad}(x) = d_c(0, x) = \frac{2}{\sqrt c}\operatorname{artanh}(\sqrt c\,\|x\|).

    Curvature ``-c`` with ``c > 0``.  Properties: ``Rad(r ⊗ x) = |r| Rad(x)``;
    ``Rad(M ⊗ x) = (‖Mx‖/‖x‖) Rad(x)``; ``Rad(Rx) = Rad(x)`` for orthogonal
    ``R``; ``Rad(expmap0(v)) = 2‖v‖``.  Shapes: ``(..., n)`` -> ``(...)``.
    """
    c, d = _checks.curvature_and_spaces(c, dim, ("x", x))
    sqrt_c = sqrt(c)
    z = sqrt_c * norm_keepdim(x, d)
    if not project:
        _checks.inside_ball_scaled_norm(z, "x")
    if project:  # the norm of the projected point
        z = z.clamp_max(1 - ball_margin(z.dtype))
    out = 2 / sqrt_c * artanh(z)
    return out if keepdim else out.squeeze(d)


@fp32_math
def angle_at_origin(x: torch.Tensor, y: torch.Tensor, *, dim: int = -1, keepdim: bool = False) -> torch.Tensor:
    r"""Angle at the origin between the geodesics from 0 to ``x`` and from 0 to ``y``:

    .. math:: \angle_0(x, y) = 2\operatorname{atan2}\big(\|\hat x - \hat y\|, \|\hat x + \hat y\|\big),
              \qquad \hat x = x / \|x\|.

    The geodesics from the origin are straight rays and the ball is conformal,
    so this is the Euclidean angle between ``x`` and ``y``, for every curvature
    ``-c`` (hence no ``c`` argument).  Kahan's ``atan2`` form is accurate near
    0 and π, where ``arccos`` of the cosine loses half the digits and has an
    infinite derivative.  Properties: symmetric; in ``[0, π]``; invariant under
    rotations ``R`` (``∠(Rx, Ry) = ∠(x, y)``) and under positive rescaling
    of either argument, so Möbius scalar multiplication by ``r > 0`` keeps it.
    Angles with a zero vector are 0 by convention.  Shapes: ``(..., n)`` -> ``(...)``.
    """
    _checks.tensor(x, "x")
    _checks.tensor(y, "y")
    d = _checks.dim_index(x, dim, "x")
    _checks.same_space(x, y, d, ("x", "y"))
    ux = x / floored(norm_keepdim(x, d))
    uy = y / floored(norm_keepdim(y, d))
    out = 2 * torch.atan2(norm_keepdim(ux - uy, d), norm_keepdim(ux + uy, d))
    # a zero vector has no direction: report 0 rather than the 90 degrees atan2 gives
    zero = (norm_keepdim(x, d) == 0) | (norm_keepdim(y, d) == 0)
    out = torch.where(zero, torch.zeros_like(out), out)
    return out if keepdim else out.squeeze(d)


@fp32_math
def geodesic(t, x: torch.Tensor, y: torch.Tensor, *, c: Curvature, dim: int = -1, project: bool = True) -> torch.Tensor:
    r"""The geodesic through ``x`` (at ``t = 0``) and ``y`` (at ``t = 1``), at constant speed:

    .. math:: \gamma_{x \to y}(t) = x \oplus_c \big(t \otimes_c ((-x) \oplus_c y)\big).

    Curvature ``-c`` with ``c > 0``.  Properties: ``d(x, γ(t)) = |t|·d(x, y)``;
    ``d(γ(s), γ(t)) = |s - t|·d(x, y)``.  ``t`` is a number or a tensor that
    broadcasts against the inputs with the vector axis kept (e.g. ``(T, 1)``
    for a curve of ``T`` points between two vectors ``(n,)``).
    """
    c, d = _checks.curvature_and_spaces(c, dim, ("x", x), ("y", y))
    t = _checks.broadcast_scalar(t, x, "t")
    x = _ball.point(x, c, d, "x", project)
    y = _ball.point(y, c, d, "y", project)
    direction = _ball.mobius_add(-x, y, c, d)
    out = _ball.mobius_add(x, _ball.mobius_scalar_mul(t, direction, c, d), c, d)
    return _ball.project(out, c, d) if project else out


@fp32_math
def gyration(
    u: torch.Tensor, v: torch.Tensor, w: torch.Tensor, *, c: Curvature, dim: int = -1, project: bool = True
) -> torch.Tensor:
    r"""Gyration :math:`\operatorname{gyr}[u, v]w = -(u \oplus_c v) \oplus_c \big(u \oplus_c (v \oplus_c w)\big)` (Ungar 2008), in closed form:

    .. math::
        \operatorname{gyr}[u,v]w = w + 2\,\frac{A u + B v}{D},\quad
        A = -c^2\langle u,w\rangle\|v\|^2 + c\langle v,w\rangle + 2c^2\langle u,v\rangle\langle v,w\rangle,\\
        B = -c^2\langle v,w\rangle\|u\|^2 - c\langle u,w\rangle,\quad
        D = 1 + 2c\langle u,v\rangle + c^2\|u\|^2\|v\|^2.

    Curvature ``-c`` with ``c > 0``.  Properties: an orthogonal linear map in
    ``w`` (keeps norms and inner products); ``gyr[u, 0] = gyr[0, v] = I``;
    ``u ⊕ v = gyr[u, v](v ⊕ u)``.  ``u`` and ``v`` are points, ``w`` any vector.
    """
    c, d = _checks.curvature_and_spaces(c, dim, ("u", u), ("v", v), ("w", w))
    u = _ball.point(u, c, d, "u", project)
    v = _ball.point(v, c, d, "v", project)
    return _ball.gyration(u, v, w, c, d)


@fp32_math
def parallel_transport(
    x: torch.Tensor, y: torch.Tensor, v: torch.Tensor, *, c: Curvature, dim: int = -1, project: bool = True
) -> torch.Tensor:
    r"""Parallel transport of the tangent vector ``v`` from ``x`` to ``y`` along the geodesic:

    .. math:: P^c_{x \to y}(v) = \frac{\lambda^c_x}{\lambda^c_y}\operatorname{gyr}[y, -x]\,v.

    Curvature ``-c`` with ``c > 0``.  Properties: keeps Riemannian inner
    products ``<P u, P v>_y = <u, v>_x``; ``P_{0→y}(v) = (1 - c‖y‖²) v``;
    ``P_{y→x}(P_{x→y}(v)) = v``.  Shapes: ``x, y, v (..., n)`` -> ``(..., n)``.
    """
    c, d = _checks.curvature_and_spaces(c, dim, ("x", x), ("y", y), ("v", v))
    x = _ball.point(x, c, d, "x", project)
    y = _ball.point(y, c, d, "y", project)
    a_y = _ball.one_minus_cx2((y * y).sum(d, keepdim=True), c)
    lam_ratio = a_y / _ball.one_minus_cx2((x * x).sum(d, keepdim=True), c)
    return _ball.gyration(y, -x, v, c, d) * lam_ratio
