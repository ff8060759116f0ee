r"""HVSA's latent space in one of two geometries: the maps into it, its densities, its scales.

*Hyperbolic* (the method, :cite:`hvsa` Sec. 4.1): the Poincaré ball of curvature ``-c``
(``c > 0``).  A network output :math:`\tilde\mu` in the tangent space at the origin becomes the
point :math:`\mu = \exp^c_0(\tilde\mu)` (Eq. 2 at the origin); a distribution is the wrapped
normal :math:`\mathcal N_W(\mu, \sigma)` of Mathieu et al. :cite:`mathieu2019continuous`,

.. math:: \log\mathcal N_W(z\mid\mu,\sigma) = \log\mathcal N(\lambda^c_\mu\log^c_\mu z;\,0,
          \operatorname{diag}\sigma^2) - (n-1)\log\frac{\sinh(\sqrt c\,r)}{\sqrt c\,r},

the correct form of HVSA's Eq. (3) (:func:`hyro_edu.geometry.wrapped_normal.poincare_log_prob`;
``convention="hvsa_eq3"`` keeps the printed exponent 1).

*Euclidean* (Table 7's ablation): the maps are the identity and the distribution is the Gaussian
:math:`\mathcal N(\mu, \operatorname{diag}\sigma^2)`.

Scales are :math:`\sigma = \operatorname{softplus}(s) + \sigma_{\min}`
(:func:`hyro_edu.hvsa.latent.positive_scale`).
"""
from __future__ import annotations

import math
from typing import Optional, Union

import torch
import torch.nn.functional as F

from hyro_edu.core import checks as _checks
from hyro_edu.core.numerics import fp32_math
from hyro_edu.geometry import poincare as P
from hyro_edu.geometry import wrapped_normal as W

__all__ = [
    "mlp",
    "GEOMETRIES",
    "scale_floor",
    "positive_scale",
    "to_latent",
    "to_tangent",
    "log_density",
]

#: The two latent geometries: the method, and Table 7's Euclidean variant.
GEOMETRIES = ("hyperbolic", "euclidean")

Curvature = Union[float, torch.Tensor]
_LOG_2PI = math.log(2 * math.pi)


def mlp(in_dim: int, hidden, out_dim: int) -> torch.nn.Sequential:
    """The multilayer perceptron of HVSA's encoders and decoder: ``Linear`` + ``ReLU`` per hidden
    size, then a final ``Linear`` to ``out_dim``.

    ``hidden`` is a sequence of sizes (HVSA :cite:`hvsa` Sec. 4.3: ``[512, 512, 256]`` for the
    visual encoder, ``[512, 256]`` for the semantic encoder).  Shapes: ``(..., in_dim)`` ->
    ``(..., out_dim)``.
    """
    in_dim = _checks.integer(in_dim, "in_dim")
    out_dim = _checks.integer(out_dim, "out_dim")
    hidden = tuple(hidden)
    sizes = _checks.integers(hidden, "hidden", len(hidden)) if hidden else ()
    layers, prev = [], in_dim
    for h in sizes:
        layers += [torch.nn.Linear(prev, h), torch.nn.ReLU()]
        prev = h
    layers.append(torch.nn.Linear(prev, out_dim))
    return torch.nn.Sequential(*layers)


def scale_floor(dtype: torch.dtype) -> float:
    r"""Smallest standard deviation :func:`hyro_edu.hvsa.latent.positive_scale` returns:
    :math:`\sqrt{\mathrm{eps}}`.

    ``eps = finfo(dtype).eps`` (3.5e-4 in float32, float32 for half dtypes).  Why: a tangent
    vector :math:`v` recovered from a sample carries a rounding error of about ``eps``, which moves
    :math:`\tfrac12(v/\sigma)^2` by about :math:`|v|\,\mathrm{eps}/\sigma^2 = |\varepsilon|\,
    \mathrm{eps}/\sigma`; with :math:`\sigma \ge \sqrt{\mathrm{eps}}` that is at most
    :math:`|\varepsilon|\sqrt{\mathrm{eps}}` nats.  (pvae adds ``1e-5`` to its softplus.)
    """
    if dtype in (torch.float16, torch.bfloat16):
        dtype = torch.float32
    return math.sqrt(torch.finfo(dtype).eps)


def positive_scale(raw: torch.Tensor, floor: Optional[float] = None) -> torch.Tensor:
    r""":math:`\sigma = \operatorname{softplus}(s) + \sigma_{\min}`, elementwise.

    ``floor`` defaults to :func:`hyro_edu.hvsa.latent.scale_floor` of ``raw``'s dtype (a floor, not
    a clamp, so the gradient never vanishes).  Properties: ``σ > floor``; increasing in ``s``.
    Shapes: elementwise.  The posterior scale of pvae's ``EncWrapped``; HVSA :cite:`hvsa` Sec. 4.1.
    """
    floor = scale_floor(raw.dtype) if floor is None else floor
    return F.softplus(raw) + floor


def to_latent(v: torch.Tensor, *, c: Curvature = 1.0, geometry: str = "hyperbolic") -> torch.Tensor:
    r"""A tangent vector at the origin as a latent point: :math:`\exp^c_0(v)`, or ``v`` itself.

    Curvature ``-c``, ``c > 0`` (ignored for ``geometry="euclidean"``).  The result is projected
    into the ball (:func:`hyro_edu.geometry.poincare.expmap0`).
    Shapes: ``(..., n)`` -> ``(..., n)``.  HVSA :cite:`hvsa`, Eqs. (2) and (5), at the origin.
    """
    if _checks.choice(geometry, "geometry", GEOMETRIES) == "euclidean":
        return v
    return P.expmap0(v, c=c)


def to_tangent(
    x: torch.Tensor, *, c: Curvature = 1.0, geometry: str = "hyperbolic"
) -> torch.Tensor:
    r"""A latent point back in the tangent space at the origin: :math:`\log^c_0(x)`, or ``x``.

    Curvature ``-c``, ``c > 0``.  Inverse of :func:`hyro_edu.hvsa.latent.to_latent`.
    Shapes: ``(..., n)`` -> ``(..., n)``.  HVSA :cite:`hvsa`, Sec. 4.3 ("logarithm mapping layer").
    """
    if _checks.choice(geometry, "geometry", GEOMETRIES) == "euclidean":
        return x
    return P.logmap0(x, c=c)


@fp32_math
def log_density(
    z: torch.Tensor,
    loc: torch.Tensor,
    scale: torch.Tensor,
    *,
    c: Curvature = 1.0,
    geometry: str = "hyperbolic",
    convention: str = "mathieu",
) -> torch.Tensor:
    r"""Log-density of a latent distribution at ``z``.

    ``geometry="hyperbolic"``: the wrapped normal (module docstring) w.r.t. the Riemannian volume,
    curvature ``-c`` (``c > 0``), ``convention`` as in
    :func:`hyro_edu.geometry.wrapped_normal.poincare_log_prob`.  ``"euclidean"``:
    :math:`\log\mathcal N(z;\mu,\operatorname{diag}\sigma^2)` (``c`` ignored).
    ``scale`` must be finite and ``> 0`` (``ValueError`` naming ``scale``).
    Shapes: ``z, loc (..., n)``, ``scale`` broadcasting against them -> ``(...)``.
    HVSA :cite:`hvsa`, Eq. (3) (corrected) and Table 7.
    """
    if _checks.choice(geometry, "geometry", GEOMETRIES) == "hyperbolic":
        return W.poincare_log_prob(z, loc, scale, c=c, convention=convention)
    _checks.same_spaces(-1, ("z", z), ("loc", loc))
    _checks.positive(scale, "scale")
    scale = torch.as_tensor(scale, dtype=z.dtype, device=z.device)
    u = (z - loc) / scale
    return (-0.5 * u * u - torch.log(scale) - 0.5 * _LOG_2PI).sum(-1)
