r"""Wrapped normal distributions on the Poincaré ball and on the Lorentz model.

**Convention:** ``c > 0`` and the curvature is ``-c`` (as everywhere in :mod:`hyro_edu`).

A wrapped normal pushes a Gaussian on the tangent space at the origin onto the
manifold: draw :math:`v \sim \mathcal N(0, \operatorname{diag}\sigma^2)` in the
tangent space at the origin, parallel-transport it to the mean :math:`\mu`, and
follow the geodesic from :math:`\mu` in that direction for time one (the
exponential map).  Its density with respect to the Riemannian volume is

.. math::
    \log \mathcal N_W(z \mid \mu, \sigma)
      = \log \mathcal N(v;\, 0, \operatorname{diag}\sigma^2)
        - (n - 1)\,\log\frac{\sinh(\sqrt c\, r)}{\sqrt c\, r},
    \qquad r = d_c(\mu, z) = \|v\|,

where :math:`v` is the tangent vector that produced :math:`z` (Mathieu et al.
2019, their wrapped normal; Nagano et al. 2019, their sampling and
log-likelihood procedures and the log-determinant of the exponential map).

*Coordinates of* :math:`v`.  Both models measure :math:`v` with the Riemannian
metric at the origin, so ``scale`` means the same thing in both and the two
distributions correspond exactly under the isometry
:func:`hyro_edu.geometry.lorentz.from_poincare` (checked in the tests, isotropic and
diagonal ``scale``):

* Poincaré ball (the convention of pvae, Mathieu et al.'s code): the ball's metric
  at 0 is :math:`4 g^E`, so :math:`v` is divided by :math:`\lambda^c_0 = 2`
  before it is used as a Euclidean tangent vector;
  :math:`z = \exp^c_\mu\big(P_{0\to\mu}(v/\lambda^c_0)\big) = \exp^c_\mu(v / \lambda^c_\mu)`.
* Lorentz model (Nagano et al.): :math:`\tilde v = (0, v)` at the origin
  :math:`o = (1/\sqrt c, 0, \dots, 0)`, where the metric is Euclidean;
  :math:`z = \exp_\mu\big(\mathrm{PT}_{o\to\mu}(\tilde v)\big)`.

Consequently, as ``c -> 0`` the Poincaré wrapped normal tends to the Euclidean
Gaussian :math:`\mathcal N(\mu, \operatorname{diag}\sigma^2/4)` (its density
with respect to the Riemannian volume tends to that Gaussian's Lebesgue density
times :math:`2^{-n}`), and the Lorentz one's space part tends to
:math:`\mathcal N(\mu_s, \operatorname{diag}\sigma^2)`.

Shapes follow ``torch.distributions``: the event axis is the last one; ``loc``
is ``(..., n)`` (ball) or ``(..., n+1)`` (hyperboloid), ``scale`` broadcasts
against ``(..., n)``; ``rsample(sample_shape)`` returns
``sample_shape + batch_shape + event_shape`` and ``log_prob`` drops the event axis.
Computations in half precision or under autocast run in float32
(:func:`hyro_edu.core.numerics.fp32_math`).

One module (about 740 lines, most of them docstrings): the Poincaré and Lorentz versions are
one distribution seen in two isometric models -- they share :func:`log_sinhc`, the ``scale``
convention and the validation, and the tests check them against each other -- and the mixture,
the KL estimate and the ``Distribution`` classes are thin layers over those functions.

References
----------
* Mathieu, Le Lan, Maddison, Tomioka & Teh, *Continuous Hierarchical
  Representations with Poincaré Variational Auto-Encoders* (NeurIPS 2019):
  the wrapped normal on the Poincaré ball, :math:`z = \exp_\mu(v/\lambda_\mu)`,
  and its density, as in their public code (pvae, ``WrappedNormal.rsample``
  and ``log_prob``); the tests' worked examples evaluate those formulas.
* Nagano, Yamaguchi, Fujita & Koyama, *A Wrapped Normal Distribution on
  Hyperbolic Space for Gradient-Based Learning* (ICML 2019): the Lorentz
  construction and the log-determinant :math:`(n-1)\log(\sinh r / r)` (``c = 1``;
  curvature ``-c`` rescales distances by :math:`\sqrt c`, hence
  :math:`(n-1)\log(\sinh(\sqrt c\,r)/(\sqrt c\,r))`; derived in the book's chapter 7).
* HVSA (anonymous, rejected ICLR submission), Eq. (3) (the density as
  printed, see ``convention="hvsa_eq3"``) and Eq. (4) (the label mixture, see
  :func:`mixture_log_prob`) and Eq. (7) (the KL estimate, see
  :func:`kl_to_mixture`; printed with the opposite sign), from the submission
  text.  No code was released, so what HVSA ran is unverified.
"""

from __future__ import annotations

import math
from typing import Union

import torch

from hyro_edu.core import checks as _checks
from hyro_edu.geometry import lorentz as L
from hyro_edu.geometry import poincare as P
from hyro_edu.core.numerics import compute_dtype, fp32_math, sqrt

__all__ = [
    "log_sinhc",
    "log_sinhc_switch",
    "log_det_expmap",
    "poincare_wrap",
    "poincare_unwrap",
    "poincare_log_prob",
    "lorentz_wrap",
    "lorentz_unwrap",
    "lorentz_log_prob",
    "mixture_log_prob",
    "kl_to_mixture",
    "PoincareWrappedNormal",
    "LorentzWrappedNormal",
]

Curvature = Union[float, torch.Tensor]

_LOG_2PI = math.log(2 * math.pi)
_CONVENTIONS = ("mathieu", "hvsa_eq3")

# Taylor coefficients of log(sinh(x)/x) = sum_k 2^(2k) B_2k x^(2k) / (2k (2k)!), k = 1..6
# (B_2k the Bernoulli numbers); the first omitted one (k = 7) is 2/127702575.
_SERIES = (1 / 6, -1 / 180, 1 / 2835, -1 / 37800, 1 / 467775, -691 / 3831077250)
_FIRST_OMITTED = 2 / 127702575


def log_sinhc_switch(dtype: torch.dtype) -> float:
    r"""Where :func:`log_sinhc` switches from its series to its closed form:

    .. math:: x_0 = \big(\mathrm{eps} / (6 c_7)\big)^{1/12}.

    ``c_7 = 2/127702575`` is the first omitted Taylor coefficient of :math:`\log(\sinh x / x)`;
    ``eps = finfo(dtype).eps``.  1.02 in float32, 0.19 in float64.  Below ``x0`` the six-term
    series is used: its truncation error :math:`c_7 x^{14}` is at most :math:`\mathrm{eps}\,x^2/6`,
    an eps-relative error of the result :math:`x^2/6 + \dots`.  Above ``x0`` the closed form loses
    at most :math:`\sim 6\,\mathrm{eps}\,(1 + |\log 2x|)/x^2` relative accuracy (a difference of
    two logarithms), 1e-6 (float32) and 1e-13 (float64) at ``x0``; below it that form would be
    useless (``log(1 + x²/6)`` keeps only ``eps/x²`` relative digits: 70% error at ``x = 1e-3`` in
    float32).  The tests check :func:`log_sinhc` against mpmath on both sides of ``x0``.
    Returns a Python float.
    """
    eps = torch.finfo(dtype).eps
    return (eps / (6 * _FIRST_OMITTED)) ** (1 / 12)


# ----------------------------------------------------------------------------
# validation helpers
# ----------------------------------------------------------------------------
def _scale(scale, n: int, dtype, device) -> torch.Tensor:
    if isinstance(scale, torch.Tensor):
        if scale.dim() == 0:  # a single standard deviation: isotropic
            scale = scale.unsqueeze(0)
        _checks.tensor(scale, "scale")
    elif isinstance(scale, (int, float)) and not isinstance(scale, bool):
        scale = torch.tensor([float(scale)], dtype=dtype, device=device)
    else:
        raise ValueError(
            f"scale must be a number > 0 or a floating-point tensor, got {type(scale).__name__}"
        )
    with torch.no_grad():
        bad = ~torch.isfinite(scale) | (scale <= 0)
        if bool(bad.any()):
            raise ValueError(
                "scale must be finite and > 0 (the standard deviations of the tangent "
                f"Gaussian); got values {scale[bad].flatten()[:5].tolist()}"
            )
    if scale.shape[-1] not in (1, n):
        raise ValueError(
            f"scale must have last size n = {n} (one standard deviation per tangent "
            f"direction) or 1 (isotropic), got shape {tuple(scale.shape)}"
        )
    return scale


def _batch_shape(loc_space_shape, scale: torch.Tensor, c, names) -> torch.Size:
    shapes = [torch.Size(loc_space_shape), scale.shape]
    if isinstance(c, torch.Tensor):
        shapes.append(c.shape if c.dim() > 0 else torch.Size([1]))
    try:
        full = torch.broadcast_shapes(*shapes)
    except RuntimeError:
        c_part = f" and c (shape {tuple(c.shape)})" if isinstance(c, torch.Tensor) else ""
        raise ValueError(
            f"{names[0]} (space shape {tuple(loc_space_shape)}), scale (shape "
            f"{tuple(scale.shape)}){c_part} must broadcast against each other (c, if a "
            "tensor, with the vector axis kept as size 1)"
        ) from None
    return full[:-1]


def _on_hyperboloid(x: torch.Tensor, c: Curvature, name: str) -> None:
    """``x`` must satisfy ``<x, x>_L = -1/c`` (to rounding) and ``x_0 > 0``."""
    with torch.no_grad():
        x0 = x[..., :1]
        residual = (c * L.inner(x, x, keepdim=True) + 1).abs()
        # lift() rounds x_0 with a relative error of eps, so c<x, x>_L + 1 carries
        # an error of a few eps·c·x_0² (the cancellation of -x_0² against ‖x_s‖²).
        # sqrt(eps)·(1 + c·x_0²) is far above that rounding and still rejects points
        # that are not on the hyperboloid, e.g. a Poincaré point or a raw feature.
        tol = math.sqrt(torch.finfo(x.dtype).eps) * (1 + c * x0 * x0)
        bad = ~(x0 > 0) | ~(residual <= tol)
        if bool(bad.any()):
            worst = residual[bad].max().item()
            raise ValueError(
                f"{name} must lie on the hyperboloid <{name}, {name}>_L = -1/c with "
                f"{name}_0 > 0 (make points with hyro_edu.geometry.lorentz.lift or expmap0); got "
                f"|c<{name},{name}>_L + 1| = {worst:.3g} and min {name}_0 = "
                f"{x0.min().item():.3g}"
            )


def _setup_ball(c, *named):
    c = _checks.curvature(c)
    _checks.same_spaces(-1, *named)
    for name, t in named:
        if name != "v":
            _checks.inside_ball(t, c, -1, name)
    return c


def _convention(convention: str) -> str:
    if convention not in _CONVENTIONS:
        raise ValueError(f"convention must be one of {_CONVENTIONS}, got {convention!r}")
    return convention


def _gauss_log_prob(v: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    scale = scale.expand(torch.broadcast_shapes(scale.shape, v.shape))
    return (-0.5 * (v / scale) ** 2 - scale.log() - 0.5 * _LOG_2PI).sum(-1)


# ----------------------------------------------------------------------------
# functional core
# ----------------------------------------------------------------------------
@fp32_math
def log_sinhc(x: torch.Tensor) -> torch.Tensor:
    r""":math:`\log\dfrac{\sinh x}{x}`, accurate for every ``x`` (even in ``x``; 0 at ``x = 0``).

    Below a dtype-dependent switch ``x0`` (:func:`log_sinhc_switch`: 1.02 in float32, 0.19 in
    float64) the six-term Taylor series :math:`x^2/6 - x^4/180 + x^6/2835 - \dots` is used,
    above it the closed form :math:`x + \log(-\operatorname{expm1}(-2x)) - \log x - \log 2`,
    which neither overflows (``x`` up to ``finfo.max``) nor cancels catastrophically.

    Properties (tested): equals an mpmath reference to a few ulps of the
    result's own size, including ``1e-20 <= x <= 1e30`` and across ``x0``; the
    gradient :math:`\coth x - 1/x` is finite everywhere and 0 at ``x = 0``.
    Shapes: elementwise.
    """
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise ValueError(f"x must be a floating-point tensor, got {type(x).__name__}")
    x0 = log_sinhc_switch(x.dtype)
    ax = x.abs()
    small = ax < x0
    # Each branch sees only arguments where it is accurate and finite, so that
    # where() never multiplies an inf/NaN gradient of the unused branch by 0.
    xs = torch.where(small, ax, torch.zeros_like(ax))
    xl = torch.where(small, torch.full_like(ax, x0), ax)
    x2 = xs * xs
    acc = torch.full_like(x2, _SERIES[-1])
    for coef in reversed(_SERIES[:-1]):
        acc = coef + x2 * acc
    series = x2 * acc
    closed = xl + torch.log(-torch.expm1(-2 * xl)) - torch.log(xl) - math.log(2.0)
    return torch.where(small, series, closed)


@fp32_math
def log_det_expmap(
    r: torch.Tensor, *, c: Curvature, n: int, convention: str = "mathieu"
) -> torch.Tensor:
    r"""Log-volume change of the exponential map at distance ``r``:

    .. math:: (n-1)\log\frac{\sinh(\sqrt c\,r)}{\sqrt c\,r}.

    In geodesic polar coordinates around :math:`\mu` the Riemannian volume is
    :math:`\big(\sinh(\sqrt c\,r)/(\sqrt c\,r)\big)^{n-1}` times the Euclidean
    volume of the tangent space (Jacobi fields in constant curvature ``-c``:
    the radial direction keeps its length, each of the ``n - 1`` others is
    stretched by that factor).  Curvature ``-c``, ``c > 0``; ``n`` is the
    manifold dimension.  ``convention="hvsa_eq3"`` uses the power 1 instead of
    ``n - 1``, as HVSA's Eq. (3) is printed; the two agree for ``n = 2`` only.

    Properties (tested): 0 at ``r = 0``; ``exp`` of it equals the Jacobian
    determinant of :math:`v \mapsto \exp_\mu(v/\lambda_\mu)` times
    :math:`(\lambda^c_z)^n` (finite differences, ``n = 2, 3``).  Shapes: elementwise.
    """
    c = _checks.curvature(c)
    _convention(convention)
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be an integer >= 1 (the manifold dimension), got {n!r}")
    power = n - 1 if convention == "mathieu" else 1
    return power * log_sinhc(sqrt(c) * r)


@fp32_math
def poincare_wrap(loc: torch.Tensor, v: torch.Tensor, *, c: Curvature) -> torch.Tensor:
    r"""The sample built from a tangent vector ``v`` at the origin:

    .. math:: z = \exp^c_\mu\big(P^c_{0\to\mu}(v/\lambda^c_0)\big) = \exp^c_\mu(v/\lambda^c_\mu).

    ``v`` is in Riemannian-normalised coordinates at 0 (``‖v‖`` is the
    hyperbolic length), the pvae convention; the second form writes the same
    map without transport, :math:`\exp_\mu(G(\mu)^{-1/2} v)` with the metric
    :math:`G(\mu) = (\lambda^c_\mu)^2 I`.  Curvature ``-c``, ``c > 0``.
    Properties (tested): ``d_c(μ, z) = ‖v‖``; inverse of :func:`poincare_unwrap`;
    tends to ``μ + v/2`` as ``c -> 0``.  Shapes: ``loc (..., n)``, ``v (..., n)``
    -> ``(..., n)``.  Points beyond the float capacity are clipped as in
    :func:`hyro_edu.geometry.poincare.expmap`.
    """
    c = _setup_ball(c, ("loc", loc), ("v", v))
    lam = P.conformal_factor(loc, c=c, keepdim=True)
    return P.expmap(loc, v / lam, c=c)


@fp32_math
def poincare_unwrap(loc: torch.Tensor, z: torch.Tensor, *, c: Curvature) -> torch.Tensor:
    r"""The tangent vector at the origin that :func:`poincare_wrap` sends to ``z``:

    .. math:: v = \lambda^c_0\,P^c_{\mu\to0}(\log^c_\mu z) = \lambda^c_\mu \log^c_\mu z.

    Curvature ``-c``, ``c > 0``.  ``‖v‖ = d_c(μ, z)``.  ``loc`` and ``z`` must lie
    inside the ball.  Shapes: ``(..., n)`` -> ``(..., n)``.
    """
    c = _setup_ball(c, ("loc", loc), ("z", z))
    return P.conformal_factor(loc, c=c, keepdim=True) * P.logmap(loc, z, c=c)


@fp32_math
def poincare_log_prob(
    z: torch.Tensor, loc: torch.Tensor, scale, *, c: Curvature, convention: str = "mathieu"
) -> torch.Tensor:
    r"""Log-density of the Poincaré wrapped normal w.r.t. the volume :math:`(\lambda^c_z)^n dz`:

    .. math::
        \log\mathcal N_W(z\mid\mu,\sigma)
          = \log\mathcal N(\lambda^c_\mu\log^c_\mu z;\,0,\operatorname{diag}\sigma^2)
            - (n-1)\log\frac{\sinh(\sqrt c\,r)}{\sqrt c\,r},\qquad r = d_c(\mu, z).

    Curvature ``-c``, ``c > 0``.  Mathieu et al. 2019 (their wrapped normal);
    as in their code (pvae).  ``convention="hvsa_eq3"`` uses the
    power 1 of HVSA Eq. (3) as printed (normalised for ``n = 2`` only).

    Properties (tested): the reference's worked examples; integrates to 1
    (2-D quadrature; radial quadrature in 3-D and 5-D); equals the Lorentz
    density under the isometry; tends to ``log N(z; μ, σ²/4) - n log 2`` as ``c -> 0``.
    Shapes: ``z (..., n)``, ``loc (..., n)``, ``scale`` broadcasting against
    ``(..., n)`` -> ``(...)``.
    """
    c = _setup_ball(c, ("loc", loc), ("z", z))
    _convention(convention)
    scale = _scale(scale, loc.shape[-1], loc.dtype, loc.device)
    _batch_shape(loc.shape, scale, c, ("loc",))
    v = poincare_unwrap(loc, z, c=c)
    r = torch.linalg.vector_norm(v, dim=-1, keepdim=True)  # = d_c(μ, z)
    log_det = log_det_expmap(r, c=c, n=loc.shape[-1], convention=convention).squeeze(-1)
    return _gauss_log_prob(v, scale) - log_det


def _lorentz_origin_like(x: torch.Tensor, c: Curvature) -> torch.Tensor:
    # o = (1/sqrt(c), 0, ..., 0), built so that a tensor c keeps its gradient.
    time = torch.ones_like(x.narrow(-1, 0, 1)) / sqrt(c)
    return torch.cat([time, torch.zeros_like(x.narrow(-1, 1, x.shape[-1] - 1))], dim=-1)


@fp32_math
def lorentz_wrap(loc: torch.Tensor, v: torch.Tensor, *, c: Curvature) -> torch.Tensor:
    r"""The Lorentz sample built from ``v`` (Nagano et al. 2019, their sampling procedure):

    .. math:: z = \exp^c_\mu\big(\mathrm{PT}_{o\to\mu}((0, v))\big).

    Curvature ``-c``, ``c > 0``; ``o = (1/sqrt(c), 0, ..., 0)``.  Properties
    (tested): ``d_c(μ, z) = ‖v‖``; ``to_poincare(z) = poincare_wrap(to_poincare(μ), v)``;
    inverse of :func:`lorentz_unwrap`.  Shapes: ``loc (..., n+1)``, ``v (..., n)``
    -> ``(..., n+1)``.
    """
    c = _checks.curvature(c)
    _checks.tensor(loc, "loc")
    _checks.tensor(v, "v")
    if loc.shape[-1] != v.shape[-1] + 1:
        raise ValueError(
            "v must have one coordinate less than loc (space part only): got loc "
            f"{tuple(loc.shape)}, v {tuple(v.shape)}"
        )
    _on_hyperboloid(loc, c, "loc")
    tangent = torch.cat([torch.zeros_like(v.narrow(-1, 0, 1)), v], dim=-1)
    u = L.parallel_transport(_lorentz_origin_like(loc, c), loc, tangent, c=c)
    return L.expmap(loc, u, c=c)


@fp32_math
def lorentz_unwrap(loc: torch.Tensor, z: torch.Tensor, *, c: Curvature) -> torch.Tensor:
    r"""The ``v`` that :func:`lorentz_wrap` sends to ``z``:

    .. math:: (0, v) = \mathrm{PT}_{\mu\to o}(\log^c_\mu z).

    Curvature ``-c``, ``c > 0``.  ``‖v‖ = d_c(μ, z)`` (the time part of the
    transported vector is 0 up to rounding).  Shapes: ``(..., n+1)`` -> ``(..., n)``.
    """
    c = _checks.curvature(c)
    _checks.tensor(loc, "loc")
    _checks.tensor(z, "z")
    _checks.same_space(loc, z, -1, ("loc", "z"))
    if loc.shape[-1] < 2:
        raise ValueError(
            f"loc must have at least 2 coordinates (time and space), got shape {tuple(loc.shape)}"
        )
    _on_hyperboloid(loc, c, "loc")
    _on_hyperboloid(z, c, "z")
    u = L.logmap(loc, z, c=c)
    back = L.parallel_transport(loc, _lorentz_origin_like(loc, c), u, c=c)
    return back[..., 1:]


@fp32_math
def lorentz_log_prob(z: torch.Tensor, loc: torch.Tensor, scale, *, c: Curvature) -> torch.Tensor:
    r"""Log-density of the Lorentz wrapped normal w.r.t. the Riemannian volume:

    .. math::
        \log\mathcal N_W(z\mid\mu,\sigma) = \log\mathcal N(v;\,0,\operatorname{diag}\sigma^2)
            - (n-1)\log\frac{\sinh(\sqrt c\,r)}{\sqrt c\,r},\qquad
        (0, v) = \mathrm{PT}_{\mu\to o}(\log^c_\mu z),\ r = \|v\|.

    Curvature ``-c``, ``c > 0``.  Nagano et al. 2019 (their log-likelihood,
    ``c = 1``; curvature ``-c`` rescales distances by ``sqrt(c)``).
    Properties (tested): equals :func:`poincare_log_prob` at ``to_poincare(z)``
    with ``to_poincare(μ)`` (the Riemannian volume is invariant under the
    isometry).  Shapes: ``z, loc (..., n+1)``,
    ``scale`` broadcasting against ``(..., n)`` -> ``(...)``.
    """
    c = _checks.curvature(c)
    _checks.tensor(loc, "loc")
    n = loc.shape[-1] - 1
    scale = _scale(scale, n, loc.dtype, loc.device)
    _batch_shape(loc.shape[:-1] + (n,), scale, c, ("loc",))
    v = lorentz_unwrap(loc, z, c=c)
    r = torch.linalg.vector_norm(v, dim=-1, keepdim=True)
    return _gauss_log_prob(v, scale) - log_det_expmap(r, c=c, n=n).squeeze(-1)


@fp32_math
def mixture_log_prob(
    z: torch.Tensor,
    loc: torch.Tensor,
    scale,
    *,
    c: Curvature,
    weights: torch.Tensor | None = None,
    model: str = "poincare",
    convention: str = "mathieu",
) -> torch.Tensor:
    r"""Log-density of a mixture of wrapped normals, by log-sum-exp:

    .. math:: \log p(z) = \log\sum_k \pi_k\,\mathcal N_W(z\mid\mu_k,\sigma_k),
              \qquad \pi_k = w_k / \textstyle\sum_j w_j .

    ``weights`` ``w`` are non-negative (uniform if ``None``).  Passing HVSA's
    binary label vector :math:`y` as ``weights`` gives its Eq. (4),
    :math:`\frac{1}{\sum_l y_l}\sum_l \mathbb 1(y_l = 1)\,\mathcal N_p(z\mid\mu_l,\Sigma_l)`:
    the prior of an image with label set :math:`\{l : y_l = 1\}`.  HVSA released
    no code, so this is our reading of the submission's text, not a verified
    re-implementation.
    Curvature ``-c``, ``c > 0``; ``model`` is ``"poincare"`` or ``"lorentz"``;
    ``convention`` as in :func:`poincare_log_prob` (Poincaré only).

    Properties (tested): one component gives the component's density; equals
    the direct log of the weighted sum; integrates to 1 (2-D quadrature);
    zero weights drop components and keep gradients finite.
    Shapes: ``z (..., N)``, ``loc (..., K, N)``, ``scale`` broadcasting against
    ``(..., K, n)``, ``weights (..., K)`` -> ``(...)``.
    """
    _checks.tensor(z, "z")
    _checks.tensor(loc, "loc")
    if loc.dim() < 2:
        raise ValueError(
            f"loc must have shape (..., K, N): one mean per component, got {tuple(loc.shape)}"
        )
    if model not in ("poincare", "lorentz"):
        raise ValueError(f"model must be 'poincare' or 'lorentz', got {model!r}")
    k = loc.shape[-2]
    if weights is None:
        log_w = torch.full((k,), -math.log(k), dtype=loc.dtype, device=loc.device)
    else:
        _checks.tensor(weights, "weights")
        if weights.shape[-1] != k:
            raise ValueError(
                f"weights must have last size K = {k} (one weight per component of loc), "
                f"got shape {tuple(weights.shape)}"
            )
        with torch.no_grad():
            if bool((~torch.isfinite(weights) | (weights < 0)).any()) or bool(
                (weights.sum(-1) <= 0).any()
            ):
                raise ValueError(
                    "weights must be finite and >= 0 with a positive sum over the K components"
                )
        pi = weights / weights.sum(-1, keepdim=True)
        positive = pi > 0
        # log 0 = -inf drops the component; where() keeps d log(w)/dw = 1/0 out of
        # the backward pass.
        log_w = torch.where(
            positive, torch.where(positive, pi, torch.ones_like(pi)).log(), -torch.inf
        )
    zk = z.unsqueeze(-2)
    if model == "poincare":
        comp = poincare_log_prob(zk, loc, scale, c=c, convention=convention)
    else:
        if convention != "mathieu":
            raise ValueError(
                "convention='hvsa_eq3' is defined for the Poincaré ball only (model='poincare')"
            )
        comp = lorentz_log_prob(zk, loc, scale, c=c)
    return torch.logsumexp(log_w + comp, dim=-1)


def _label_mask(mask, m: int) -> torch.Tensor | None:
    """HVSA's binary label vector y (or a boolean mask) over the M components, as booleans."""
    if mask is None:
        return None
    if not isinstance(mask, torch.Tensor):
        raise ValueError(
            f"mask must be a boolean or 0/1 tensor (..., M), got {type(mask).__name__}"
        )
    if mask.dim() < 1 or mask.shape[-1] != m:
        raise ValueError(
            f"mask must have last size M = {m} (one entry per mixture component), got shape "
            f"{tuple(mask.shape)}"
        )
    if mask.dtype != torch.bool:
        with torch.no_grad():
            if not bool(((mask == 0) | (mask == 1)).all()):
                raise ValueError(
                    "mask must be boolean or hold only 0 and 1 (HVSA's label vector y); got "
                    f"values {mask.unique().flatten()[:5].tolist()}"
                )
        mask = mask != 0
    empty = ~mask.any(-1)
    if bool(empty.any()):
        where = empty.nonzero()[0].tolist()
        raise ValueError(
            "mask selects no component for the posterior at batch index "
            f"{tuple(where)} ({int(empty.sum())} in all): an image with no positive label has an "
            "empty prior (HVSA Eq. (4) divides by sum_l y_l = 0), a zero density whose KL from "
            "any q is +inf; leave such images out of the KL term"
        )
    return mask


@fp32_math
def kl_to_mixture(
    loc: torch.Tensor,
    scale,
    mix_loc: torch.Tensor,
    mix_scale,
    *,
    c: Curvature,
    mask: torch.Tensor | None = None,
    k: int = 1,
    model: str = "poincare",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    r"""Monte Carlo :math:`\mathrm{KL}(q\,\|\,p)` from a wrapped normal ``q`` to a mixture ``p``:

    .. math::
        \widehat{\mathrm{KL}}_k = \frac1k\sum_{j=1}^{k}\big[\log q(z_j) - \log p(z_j)\big],
        \qquad z_j = \exp^c_\mu(\sigma\odot\varepsilon_j/\lambda^c_\mu),\
        \varepsilon_j\sim\mathcal N(0, I),

    (on the hyperboloid :math:`z_j` = :func:`lorentz_wrap` of :math:`\sigma\odot\varepsilon_j`),
    with :math:`q = \mathcal N_W(\mu, \sigma)` and
    :math:`p = \frac{1}{|S|}\sum_{m\in S}\mathcal N_W(\mu_m, \sigma_m)`, the uniform
    mixture over the components selected by ``mask`` (all ``M`` if ``None``).  With
    HVSA's label vector :math:`y` as ``mask`` this is the KL term of its GM-VAE: the
    prior is Eq. (4), and ``k = 1`` is the single-sample estimate of Eq. (7), with the
    sign of a KL (:math:`\log q - \log p`; Eq. (7) is printed with the opposite sign).
    :math:`\log p` is computed exactly at each sample by log-sum-exp over the components
    (:func:`mixture_log_prob`), so the estimate is unbiased for every ``k`` and its
    variance falls like ``1/k``.  Samples are reparameterised (``rsample``), so the
    estimate is differentiable w.r.t. ``loc`` and ``scale`` of ``q``, ``mix_loc`` and
    ``mix_scale`` of the selected components (unselected ones get zero gradient) and a
    tensor ``c``.  Curvature ``-c``, ``c > 0``; densities w.r.t. the Riemannian volume
    (``convention="mathieu"``), which cancels in the ratio.

    Properties (tested): exactly 0 when every selected component equals ``q``; equals
    the tangent-Gaussian KL in expectation when all components share ``q``'s mean;
    agrees with 2-D quadrature within Monte Carlo error; masking a component equals
    removing it; the Poincaré and Lorentz versions give the same estimate for the
    same noise; gradients match finite differences (fixed noise).

    Shapes (``model="poincare"``; for ``"lorentz"`` points have ``n + 1``
    coordinates on the hyperboloid and scales stay ``n``):

    * ``loc (..., n)``: one posterior per batch element; ``scale`` > 0 broadcasting
      against ``(..., n)``;
    * ``mix_loc (..., M, n)``: each posterior's own components, or ``(M, n)`` shared
      by all (HVSA: the ``M = L`` label distributions); ``mix_scale`` broadcasting
      against ``(..., M, n)``;
    * ``mask (..., M)``, boolean or 0/1: the positive labels of each image, so that
      images may have different numbers of them.  Unselected slots must still hold
      valid parameters (any point inside the ball and a positive scale); they are
      ignored.  A row with no selected component raises ``ValueError``: the
      empty mixture has density 0 and the KL is infinite;
    * result ``(...)``: the broadcast batch shape, one estimate per posterior.

    ``k >= 1`` samples per posterior; ``generator`` makes the noise reproducible.
    Mathieu et al. 2019 (the wrapped normal, its ``rsample`` and the Monte Carlo KL
    of the Poincaré VAE); HVSA (anonymous ICLR submission) Eqs. (4) and (7).
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be an integer >= 1 (samples per posterior), got {k!r}")
    if model not in ("poincare", "lorentz"):
        raise ValueError(f"model must be 'poincare' or 'lorentz', got {model!r}")
    _checks.tensor(loc, "loc")
    _checks.tensor(mix_loc, "mix_loc")
    if mix_loc.dim() < 2 or mix_loc.shape[-1] != loc.shape[-1]:
        raise ValueError(
            "mix_loc must have shape (..., M, N) with the same last size N as loc (one point "
            f"per component), got mix_loc {tuple(mix_loc.shape)} and loc {tuple(loc.shape)}"
        )
    mask = _label_mask(mask, mix_loc.shape[-2])
    # Every posterior of the output draws its own noise: expand loc to the full batch shape
    # (a shared loc with a batch of masks is a batch of images with the same q).
    batches = [("loc", loc.shape[:-1]), ("mix_loc", mix_loc.shape[:-2])]
    if isinstance(scale, torch.Tensor) and scale.dim() > 1:
        batches.append(("scale", scale.shape[:-1]))
    if isinstance(mix_scale, torch.Tensor) and mix_scale.dim() > 2:
        batches.append(("mix_scale", mix_scale.shape[:-2]))
    if mask is not None:
        batches.append(("mask", mask.shape[:-1]))
    try:
        batch_shape = torch.broadcast_shapes(*(shape for _, shape in batches))
    except RuntimeError:
        listed = ", ".join(f"{name} {tuple(shape)}" for name, shape in batches)
        raise ValueError(
            "the batch shapes of loc (..., N), scale (..., n), mix_loc (..., M, N), mix_scale "
            f"(..., M, n) and mask (..., M) must broadcast; got batch shapes {listed}"
        ) from None
    loc = loc.expand(batch_shape + loc.shape[-1:])
    if model == "poincare":
        q = PoincareWrappedNormal(loc, scale, c=c)
    else:
        q = LorentzWrappedNormal(loc, scale, c=c)
    z = q.rsample((k,), generator=generator)  # (k, *q.batch_shape, N)
    weights = None if mask is None else mask.to(z.dtype)
    log_p = mixture_log_prob(z, mix_loc, mix_scale, c=c, weights=weights, model=model)
    return (q.log_prob(z) - log_p).mean(0)


# ----------------------------------------------------------------------------
# distribution objects
# ----------------------------------------------------------------------------
class _WrappedNormal:
    _model = ""

    def __init__(self, loc: torch.Tensor, scale, *, c: Curvature):
        self.c = _checks.curvature(c)
        _checks.tensor(loc, "loc")
        self.loc = loc
        self.scale = _scale(scale, self.n, loc.dtype, loc.device)
        self.batch_shape = _batch_shape(loc.shape[:-1] + (self.n,), self.scale, self.c, ("loc",))
        self._check_loc()

    @property
    def event_shape(self) -> torch.Size:
        return self.loc.shape[-1:]

    def _noise(self, sample_shape, generator):
        shape = torch.Size(sample_shape) + self.batch_shape + (self.n,)
        dtype = compute_dtype(self.loc.dtype)
        return torch.randn(shape, dtype=dtype, device=self.loc.device, generator=generator)

    def rsample(
        self, sample_shape=torch.Size(), *, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Reparameterised samples of shape ``sample_shape + batch_shape + event_shape``.

        Gradients flow to ``loc``, ``scale`` and a tensor ``c``.
        """
        v = self._noise(sample_shape, generator) * self.scale
        return self.wrap(v)

    def sample(
        self, sample_shape=torch.Size(), *, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Samples without gradient."""
        with torch.no_grad():
            return self.rsample(sample_shape, generator=generator)

    def __repr__(self) -> str:
        c = self.c if isinstance(self.c, float) else f"tensor{tuple(self.c.shape)}"
        return f"{type(self).__name__}(batch_shape={tuple(self.batch_shape)}, n={self.n}, c={c})"


class PoincareWrappedNormal(_WrappedNormal):
    r"""Wrapped normal on the Poincaré ball of curvature ``-c`` (``c > 0``), pvae convention.

    :math:`z = \exp^c_\mu(v/\lambda^c_\mu)`,
    :math:`v \sim \mathcal N(0, \operatorname{diag}\sigma^2)`;
    see :func:`poincare_wrap` and :func:`poincare_log_prob`.  ``loc (..., n)``
    inside the ball; ``scale`` > 0 broadcasting against ``(..., n)``.
    Mathieu et al. (NeurIPS 2019).
    """

    @property
    def n(self) -> int:
        return self.loc.shape[-1]

    def _check_loc(self):
        _checks.inside_ball(self.loc, self.c, -1, "loc")

    def wrap(self, v: torch.Tensor) -> torch.Tensor:
        """:func:`poincare_wrap` at this ``loc``."""
        return poincare_wrap(self.loc, v, c=self.c)

    def unwrap(self, z: torch.Tensor) -> torch.Tensor:
        """:func:`poincare_unwrap` at this ``loc``."""
        return poincare_unwrap(self.loc, z, c=self.c)

    def log_prob(self, z: torch.Tensor, *, convention: str = "mathieu") -> torch.Tensor:
        """:func:`poincare_log_prob`: ``z (..., n)`` inside the ball -> ``(...)``."""
        return poincare_log_prob(z, self.loc, self.scale, c=self.c, convention=convention)


class LorentzWrappedNormal(_WrappedNormal):
    r"""Wrapped normal on the hyperboloid of curvature ``-c`` (``c > 0``), Nagano et al. 2019.

    :math:`z = \exp^c_\mu(\mathrm{PT}_{o\to\mu}(0, v))`,
    :math:`v \sim \mathcal N(0, \operatorname{diag}\sigma^2)`;
    see :func:`lorentz_wrap` and :func:`lorentz_log_prob`.  ``loc (..., n+1)``
    on the hyperboloid; ``scale`` > 0 broadcasting against ``(..., n)``.
    """

    @property
    def n(self) -> int:
        return self.loc.shape[-1] - 1

    def _check_loc(self):
        if self.loc.shape[-1] < 2:
            raise ValueError(
                "loc must have at least 2 coordinates (time and space), got shape "
                f"{tuple(self.loc.shape)}"
            )
        _on_hyperboloid(self.loc, self.c, "loc")

    def wrap(self, v: torch.Tensor) -> torch.Tensor:
        """:func:`lorentz_wrap` at this ``loc``."""
        return lorentz_wrap(self.loc, v, c=self.c)

    def unwrap(self, z: torch.Tensor) -> torch.Tensor:
        """:func:`lorentz_unwrap` at this ``loc``."""
        return lorentz_unwrap(self.loc, z, c=self.c)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """:func:`lorentz_log_prob`: ``z (..., n+1)`` on the hyperboloid -> ``(...)``."""
        return lorentz_log_prob(z, self.loc, self.scale, c=self.c)
