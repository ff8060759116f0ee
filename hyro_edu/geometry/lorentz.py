r"""The Lorentz (hyperboloid) model of curvature ``-c`` as pure functions.

**Convention:** ``c > 0`` and the curvature is ``-c`` (as everywhere in
:mod:`hyro_edu`).  Points are ambient vectors ``x = (x_0, x_1, ..., x_n)`` with
the *time* coordinate first along ``dim``, on the upper sheet

.. math:: \mathbb{L}^n_c = \{x \in \mathbb{R}^{n+1} : \langle x, x\rangle_L = -1/c,\ x_0 > 0\},
          \qquad \langle x, y\rangle_L = -x_0 y_0 + \sum_{i \ge 1} x_i y_i .

The origin is ``o = (1/sqrt(c), 0, ..., 0)``.  The tangent space at ``o`` is
``{(0, v)}``; :func:`expmap0` and :func:`logmap0` take and return its *space*
part ``v`` (``n`` numbers), which is how CLIP features enter the model in MERU
and in the tree-alignment method.  geoopt's ``Lorentz(k)`` is this model with
``k = 1/c`` (:func:`hyro_edu.core.curvature.to_geoopt_lorentz_k`).

Every public function computes in float32 or float64 (half inputs and autocast
are promoted, :func:`hyro_edu.core.numerics.fp32_math`).  Points that these
functions create stay within ``numerics.max_radius(c, dtype)`` of the origin,
the same capacity as the Poincaré ball, so the two models hold the same points
and :func:`to_poincare` / :func:`from_poincare` convert without loss.

References
----------
* Nickel & Kiela, *Learning Continuous Hierarchies in the Lorentz Model* (ICML
  2018) and Nagano et al. (ICML 2019): exp/log maps, parallel transport.
* Desai et al., *Hyperbolic Image-Text Representations* (MERU, ICML 2023):
  space-component parametrisation, learnable log-curvature with a clamp.
"""
from __future__ import annotations

import math
from typing import Union

import torch

import hyro_edu.geometry._ball as _ball
from hyro_edu.core import checks as _checks
from hyro_edu.core.numerics import ball_margin, floored, fp32_math, sqrt

__all__ = [
    "inner",
    "origin",
    "lift",
    "project",
    "expmap0",
    "logmap0",
    "expmap",
    "logmap",
    "dist",
    "pairwise_dist",
    "radius",
    "parallel_transport",
    "to_poincare",
    "from_poincare",
    "LearnableCurvature",
]

Curvature = Union[float, torch.Tensor]


# ----------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------
def _time(x, dim):
    return x.narrow(dim, 0, 1)


def _space(x, dim):
    return x.narrow(dim, 1, x.shape[dim] - 1)


def _linner(x, y, dim):
    prod = x * y
    return prod.narrow(dim, 1, x.shape[dim] - 1).sum(dim, keepdim=True) - prod.narrow(dim, 0, 1)


def _max_arg(dtype) -> float:
    # Capacity: the exp maps keep sqrt(c)·(distance from the origin) at most
    # 2·artanh(1 - sqrt(eps)) -- the radius a projected point of the Poincaré
    # ball can have (hyro_edu.core.numerics.max_radius): 8.66 in float32, 18.7 in
    # float64.  Both models then hold the same points.  The rounding error of
    # <x, x>_L = -1/c grows like eps·c·x_0², and the cap is where c·x_0² reaches
    # about 1/eps: beyond it float32 rounds x_0 to ‖x_s‖ (points on the light
    # cone), so the cap bounds how far points go, not how accurate they are.
    return 2 * math.atanh(1 - ball_margin(dtype))


def _overflow_arg(dtype) -> float:
    # sinh/cosh arguments that are not distances from the origin (the distance
    # between two points can reach twice the capacity) are capped at
    # log(finfo.max)/3 - 1 so that products of three coordinates stay finite.
    return math.log(torch.finfo(dtype).max) / 3 - 1


def _cap(space, c, d):
    # Clip the space part so that the point's distance from the origin is at most _max_arg/sqrt(c).
    sqrt_c = sqrt(c)
    norm = torch.linalg.vector_norm(space, dim=d, keepdim=True)
    max_norm = math.sinh(_max_arg(space.dtype)) / sqrt_c
    return torch.where(norm > max_norm, space / floored(norm) * max_norm, space)


def _ambient(x, d, name):
    if x.shape[d] < 2:
        raise ValueError(f"{name} must have at least 2 coordinates (time and space) along dim, got shape {tuple(x.shape)}")


def _lift(space, c, d):
    t = torch.sqrt(1 / c + (space * space).sum(d, keepdim=True))
    return torch.cat([t, space], dim=d)


def _dist(x, y, c, d):
    # The hyperbolic law of cosines in the triangle (o, x, y), with radii
    # r = arsinh(sqrt(c)‖x_s‖)/sqrt(c) and the angle θ between the space parts:
    #   cosh(√c d) = cosh(√c(r_x - r_y)) + 2 sinh(√c r_x) sinh(√c r_y) sin²(θ/2),
    # i.e. sinh²(√c d/2) = sinh²(√c Δr/2) + c‖x_s‖‖y_s‖‖x̂ - ŷ‖²/4.
    # Both terms are >= 0, so nothing cancels: unlike arcosh(-c<x, y>_L) or the
    # chord <x-y, x-y>_L, which subtract numbers of size x_0², it stays accurate
    # for nearby points far from the origin.  Only the space parts are read.
    sqrt_c = sqrt(c)
    xs, ys = _space(x, d), _space(y, d)
    nx = torch.linalg.vector_norm(xs, dim=d, keepdim=True)
    ny = torch.linalg.vector_norm(ys, dim=d, keepdim=True)
    half_dr = (torch.asinh(sqrt_c * nx) - torch.asinh(sqrt_c * ny)) / 2
    chord = torch.linalg.vector_norm(xs / floored(nx) - ys / floored(ny), dim=d, keepdim=True)
    s2 = torch.sinh(half_dr) ** 2 + c * nx * ny * chord**2 / 4
    # sqrt'(0) is infinite: the floor (the clamp passes no gradient) keeps d(x, x) differentiable.
    return 2 / sqrt_c * torch.asinh(s2.clamp_min(torch.finfo(s2.dtype).tiny).sqrt())


# ----------------------------------------------------------------------------
# public API
# ----------------------------------------------------------------------------
@fp32_math
def inner(x: torch.Tensor, y: torch.Tensor, *, dim: int = -1, keepdim: bool = False) -> torch.Tensor:
    r"""Lorentzian inner product :math:`\langle x, y\rangle_L = -x_0 y_0 + \sum_{i\ge1} x_i y_i`.

    Properties: ``<x, x>_L = -1/c`` on the hyperboloid of curvature ``-c``;
    ``<x, y>_L <= -1/c`` for two points, with equality iff ``x = y``; tangent
    vectors ``u`` at ``x`` satisfy ``<x, u>_L = 0`` and ``<u, u>_L >= 0``.
    Shapes: ``(..., n+1)`` -> ``(...)``.
    """
    _checks.tensor(x, "x")
    d = _checks.dim_index(x, dim, "x")
    _checks.tensor(y, "y")
    _checks.same_space(x, y, d, ("x", "y"))
    out = _linner(x, y, d)
    return out if keepdim else out.squeeze(d)


def origin(n: int, *, c: Curvature, dtype: torch.dtype | None = None, device=None) -> torch.Tensor:
    """The origin ``(1/sqrt(c), 0, ..., 0)`` of the ``n``-dimensional hyperboloid of curvature ``-c``: shape ``(n+1,)``.

    ``dtype`` defaults to ``torch.get_default_dtype()``; a tensor ``c`` keeps its
    gradient (and supplies dtype and device when they are not given).
    """
    c = _checks.curvature(c)
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be an integer >= 1 (the space dimension), got {n!r}")
    if isinstance(c, torch.Tensor):
        if c.dim() != 0:
            raise ValueError(f"c must be a number or a 0-dimensional tensor for origin(), got shape {tuple(c.shape)}")
        dtype = dtype or c.dtype
        device = device or c.device
        time = c.to(dtype).rsqrt().reshape(1)
        return torch.cat([time, torch.zeros(n, dtype=dtype, device=device)])
    dtype = dtype or torch.get_default_dtype()
    o = torch.zeros(n + 1, dtype=dtype, device=device)
    o[0] = 1 / math.sqrt(c)
    return o


@fp32_math
def lift(space: torch.Tensor, *, c: Curvature, dim: int = -1) -> torch.Tensor:
    r"""The point with space part ``space``: :math:`x = (\sqrt{1/c + \|x_s\|^2},\ x_s)`.

    Curvature ``-c`` with ``c > 0``.  Shapes: ``(..., n)`` -> ``(..., n+1)``.
    """
    c, d = _checks.curvature_and_spaces(c, dim, ("space", space))
    return _lift(space, c, d)


@fp32_math
def project(x: torch.Tensor, *, c: Curvature, dim: int = -1) -> torch.Tensor:
    """Project onto the hyperboloid by recomputing the time coordinate from the space part.

    Curvature ``-c`` with ``c > 0``.  Idempotent; exact on points already on it.
    """
    c, d = _checks.curvature_and_spaces(c, dim, ("x", x))
    _ambient(x, d, "x")
    return _lift(_space(x, d), c, d)


@fp32_math
def expmap0(v: torch.Tensor, *, c: Curvature, dim: int = -1) -> torch.Tensor:
    r"""Exponential map at the origin, from the space part ``v`` of a tangent vector ``(0, v)``:

    .. math:: \exp^c_o(v) = \Big(\frac{\cosh(\sqrt c\,\|v\|)}{\sqrt c},\ \frac{\sinh(\sqrt c\,\|v\|)}{\sqrt c\,\|v\|}\,v\Big).

    Curvature ``-c`` with ``c > 0``.  Properties: ``d(o, expmap0(v)) = ‖v‖``;
    inverse of :func:`logmap0`; agrees with the Poincaré ball's ``expmap0``
    under :func:`to_poincare` after halving ``v`` (the ball's metric at 0 is
    ``4·g^E``).  Shapes: ``(..., n)`` -> ``(..., n+1)``.

    The distance from the origin is capped at ``numerics.max_radius(c, dtype)``
    (8.66/sqrt(c) in float32): the same capacity as the Poincaré ball.
    """
    c, d = _checks.curvature_and_spaces(c, dim, ("v", v))
    sqrt_c = sqrt(c)
    z = floored(sqrt_c * torch.linalg.vector_norm(v, dim=d, keepdim=True))
    z_capped = z.clamp_max(_max_arg(z.dtype))
    space = v * (torch.sinh(z_capped) / z)
    return _lift(space, c, d)


@fp32_math
def logmap0(x: torch.Tensor, *, c: Curvature, dim: int = -1) -> torch.Tensor:
    r"""Logarithmic map at the origin, returning the space part ``v`` of the tangent vector:

    .. math:: \log^c_o(x) = \frac{\operatorname{arsinh}(\sqrt c\,\|x_s\|)}{\sqrt c\,\|x_s\|}\,x_s .

    (``arsinh(sqrt(c)‖x_s‖) = arcosh(sqrt(c) x_0)`` on the hyperboloid; the
    ``arsinh`` form only reads the space part and is accurate near ``o``.)
    Curvature ``-c`` with ``c > 0``.  Shapes: ``(..., n+1)`` -> ``(..., n)``.
    """
    c, d = _checks.curvature_and_spaces(c, dim, ("x", x))
    _ambient(x, d, "x")
    xs = _space(x, d)
    z = floored(sqrt(c) * torch.linalg.vector_norm(xs, dim=d, keepdim=True))
    return xs * (torch.asinh(z) / z)


@fp32_math
def expmap(x: torch.Tensor, u: torch.Tensor, *, c: Curvature, dim: int = -1) -> torch.Tensor:
    r"""Exponential map at ``x`` of the tangent vector ``u`` (``<x, u>_L = 0``):

    .. math:: \exp^c_x(u) = \cosh(\sqrt c\,\|u\|_L)\,x + \frac{\sinh(\sqrt c\,\|u\|_L)}{\sqrt c\,\|u\|_L}\,u,
              \qquad \|u\|_L = \sqrt{\langle u, u\rangle_L}.

    Curvature ``-c`` with ``c > 0``.  Properties: ``d(x, expmap(x, u)) = ‖u‖_L``;
    inverse of :func:`logmap`.  The result is re-projected onto the
    hyperboloid (its time coordinate recomputed) to stop rounding drift, and
    its distance from the origin capped as in :func:`expmap0`.
    Shapes: ``x, u (..., n+1)`` -> ``(..., n+1)``.
    """
    c, d = _checks.curvature_and_spaces(c, dim, ("x", x), ("u", u))
    _ambient(x, d, "x")
    sqrt_c = sqrt(c)
    unorm = _linner(u, u, d).clamp_min(0).sqrt()
    z = floored(sqrt_c * unorm)
    z_capped = z.clamp_max(_max_arg(z.dtype))
    out = torch.cosh(z_capped) * x + (torch.sinh(z_capped) / z) * u
    return _lift(_cap(_space(out, d), c, d), c, d)


@fp32_math
def logmap(x: torch.Tensor, y: torch.Tensor, *, c: Curvature, dim: int = -1) -> torch.Tensor:
    r"""Logarithmic map at ``x``: the tangent vector at ``x`` whose geodesic reaches ``y`` at time 1:

    .. math:: \log^c_x(y) = d_c(x, y)\,\frac{w}{\|w\|_L},\qquad w = y + c\,\langle x, y\rangle_L\, x .

    Curvature ``-c`` with ``c > 0``.  ``w`` is the component of ``y`` tangent
    at ``x``.  Properties: ``‖logmap(x, y)‖_L = d(x, y)``; ``<x, logmap(x, y)>_L = 0``.
    Shapes: ``x, y (..., n+1)`` -> ``(..., n+1)``.
    """
    c, d = _checks.curvature_and_spaces(c, dim, ("x", x), ("y", y))
    _ambient(x, d, "x")
    w = y + c * _linner(x, y, d) * x
    # ‖w‖_L = sinh(sqrt(c)·d)/sqrt(c) on the hyperboloid; using it (rather than
    # <w, w>_L, a product of up to six coordinates) avoids overflow far out.
    z = floored(sqrt(c) * _dist(x, y, c, d))
    return w * (z / torch.sinh(z.clamp_max(_overflow_arg(z.dtype))))


@fp32_math
def dist(
    x: torch.Tensor, y: torch.Tensor, *, c: Curvature, dim: int = -1, keepdim: bool = False
) -> torch.Tensor:
    r"""Geodesic distance :math:`d_c(x, y) = \frac{1}{\sqrt c}\operatorname{arcosh}(-c\,\langle x, y\rangle_L)`.

    Computed from the hyperbolic law of cosines in the triangle (origin, x, y),
    :math:`\sinh^2(\tfrac{\sqrt c\,d}{2}) = \sinh^2(\tfrac{\sqrt c\,(r_x - r_y)}{2})
    + \tfrac{c}{4}\|x_s\|\|y_s\|\,\|\hat x_s - \hat y_s\|^2`, a sum of non-negative
    terms that stays accurate for nearby points, near the origin or far from it
    (the ``arcosh`` form and the chord ``<x-y, x-y>_L`` both cancel there).
    Curvature ``-c`` with ``c > 0``.  Properties: a metric; equals the
    Poincaré distance of :func:`to_poincare` images.  Shapes: ``(..., n+1)`` -> ``(...)``.
    """
    c, d = _checks.curvature_and_spaces(c, dim, ("x", x), ("y", y))
    _ambient(x, d, "x")
    out = _dist(x, y, c, d)
    return out if keepdim else out.squeeze(d)


@fp32_math
def pairwise_dist(x: torch.Tensor, y: torch.Tensor, *, c: Curvature) -> torch.Tensor:
    """All distances between ``x (N, n+1)`` and ``y (M, n+1)``: ``(N, M)``.  Curvature ``-c``, ``c > 0``."""
    _checks.tensor(x, "x")
    _checks.tensor(y, "y")
    if x.dim() != 2 or y.dim() != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(
            f"x and y must be matrices (N, n+1) and (M, n+1) with the same n, got {tuple(x.shape)} and {tuple(y.shape)}"
        )
    return dist(x.unsqueeze(1), y.unsqueeze(0), c=c)


@fp32_math
def radius(x: torch.Tensor, *, c: Curvature, dim: int = -1, keepdim: bool = False) -> torch.Tensor:
    r"""Distance to the origin, :math:`\frac{1}{\sqrt c}\operatorname{arsinh}(\sqrt c\,\|x_s\|)`.  Curvature ``-c``, ``c > 0``."""
    c, d = _checks.curvature_and_spaces(c, dim, ("x", x))
    _ambient(x, d, "x")
    sqrt_c = sqrt(c)
    out = torch.asinh(sqrt_c * torch.linalg.vector_norm(_space(x, d), dim=d, keepdim=True)) / sqrt_c
    return out if keepdim else out.squeeze(d)


@fp32_math
def parallel_transport(
    x: torch.Tensor, y: torch.Tensor, v: torch.Tensor, *, c: Curvature, dim: int = -1
) -> torch.Tensor:
    r"""Parallel transport of the tangent vector ``v`` from ``x`` to ``y`` along the geodesic:

    .. math:: P_{x\to y}(v) = v + \frac{c\,\langle y, v\rangle_L}{1 - c\,\langle x, y\rangle_L}\,(x + y).

    Curvature ``-c`` with ``c > 0`` (Nagano et al. 2019 give the ``c = 1`` case).
    Properties: keeps ``<u, v>_L``; the result is tangent at ``y``.
    Shapes: ``x, y, v (..., n+1)`` -> ``(..., n+1)``.
    """
    c, d = _checks.curvature_and_spaces(c, dim, ("x", x), ("y", y), ("v", v))
    _ambient(x, d, "x")
    # 1 - c<x, y>_L >= 2 for points on the hyperboloid: no division hazard.
    coef = c * _linner(y, v, d) / (1 - c * _linner(x, y, d))
    return v + coef * (x + y)


@fp32_math
def to_poincare(x: torch.Tensor, *, c: Curvature, dim: int = -1) -> torch.Tensor:
    r"""Map to the Poincaré ball of the same curvature: :math:`p = x_s / (1 + \sqrt c\, x_0)`.

    An isometry onto :math:`\mathbb{D}^n_c`.  Shapes: ``(..., n+1)`` -> ``(..., n)``.
    """
    c, d = _checks.curvature_and_spaces(c, dim, ("x", x))
    _ambient(x, d, "x")
    return _space(x, d) / (1 + sqrt(c) * _time(x, d))  # denominator >= 2


@fp32_math
def from_poincare(p: torch.Tensor, *, c: Curvature, dim: int = -1) -> torch.Tensor:
    r"""Map from the Poincaré ball: :math:`x = \Big(\frac{1 + c\|p\|^2}{\sqrt c\,(1 - c\|p\|^2)},\ \frac{2p}{1 - c\|p\|^2}\Big)`.

    Inverse of :func:`to_poincare`.  The time coordinate is recomputed from the
    space part (:func:`lift`) so the result lies on the hyperboloid to rounding.
    ``p`` must lie inside the ball (``sqrt(c)‖p‖ < 1``).  Shapes: ``(..., n)`` -> ``(..., n+1)``.
    """
    c, d = _checks.curvature_and_spaces(c, dim, ("p", p))
    _checks.inside_ball(p, c, d, "p")
    # 1 - c‖p‖² > 0 inside the ball; floored at eps (rounding may put p on the boundary).
    denom = _ball.one_minus_cx2((p * p).sum(d, keepdim=True), c)
    return _lift(_cap(2 * p / denom, c, d), c, d)


class LearnableCurvature(torch.nn.Module):
    r"""A learnable curvature ``c > 0`` (curvature ``-c``), stored as ``log c``, clamped in place.

    .. math:: c = \exp(\ell), \qquad
              \ell \leftarrow \min\big(\max(\ell, \log(c_{\rm init}/s)), \log(c_{\rm init} s)\big)
              \ \text{before every use}

    with ``s = spread`` (10 in MERU and HypModalAlign).  Each call of ``forward()``
    first clamps the stored parameter ``log_c`` *in place, outside autograd*
    (under ``torch.no_grad()``), then returns ``log_c.exp()``.  What happens:

    * the returned ``c`` always lies in ``[c_init / spread, c_init * spread]``;
    * ``dc / d log_c = c``, never 0: the gradient passes through ``exp``
      unclamped, also when ``c`` sits on a bound, so a curvature on a bound moves
      back as soon as the loss gradient points inwards;
    * an optimiser step may carry ``log_c`` past a bound between two calls
      (Adam's momentum does); the next ``forward()`` resets it onto the bound,
      so it never drifts further out.

    (Clamping inside autograd, ``log_c.clamp(lo, hi).exp()``, would instead pass
    an exactly zero gradient once ``log_c`` is past a bound, and the curvature
    would stay on the bound for the rest of training.)  This is the scheme of
    MERU's ``forward`` (Desai et al., ICML 2023), which clamps ``curv.data`` at
    the start of every forward pass, and of HypModalAlign's ``clamp_curv``
    (Wu et al., ICLR 2026), which does it at every step.  The log
    parametrisation keeps ``c > 0`` for any update; the clamp keeps the
    float32 maths in a known range.  Calling the module more than once before
    ``backward()`` is safe (``exp`` saves its output, not ``log_c``).

    Shapes: ``forward()`` returns a 0-dimensional tensor.
    """

    def __init__(self, c_init: float = 1.0, *, spread: float = 10.0, learnable: bool = True):
        super().__init__()
        c_init = _checks.curvature(c_init, name="c_init")
        if not (isinstance(spread, (int, float)) and math.isfinite(spread) and spread >= 1):
            raise ValueError(f"spread must be a finite number >= 1, got {spread!r}")
        self.log_c = torch.nn.Parameter(torch.tensor(math.log(c_init)), requires_grad=learnable)
        self.bounds = (math.log(c_init / spread), math.log(c_init * spread))

    def forward(self) -> torch.Tensor:
        # In place and outside the graph (as MERU): the clamp itself has no
        # backward, so d c / d log_c = c stays non-zero on the bounds.
        with torch.no_grad():
            self.log_c.clamp_(*self.bounds)
        return self.log_c.exp()

    def extra_repr(self) -> str:
        lo, hi = (math.exp(b) for b in self.bounds)
        c = self.log_c.detach().clamp(*self.bounds).exp().item()  # a repr must not change state
        return f"c={c:.4g}, range=[{lo:.4g}, {hi:.4g}]"
