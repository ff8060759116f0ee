r"""Reparametrised samples of the label (and image) distributions: HVSA Sec. 4.2 and its readings.

The paper draws the embedding of a class for metric learning as :math:`z = \mu + \varepsilon\sigma`
(:cite:`hvsa` Sec. 4.2), a Euclidean sample, although Sec. 4.1 defines wrapped normals.  The switch
``label_sample`` (with :math:`\mu = \exp^c_0\tilde\mu`, curvature ``-c``, ``c > 0``):

* ``"wrapped"`` (default): :math:`z = \exp^c_\mu(\sigma\odot\varepsilon/\lambda^c_\mu)`, a sample of
  :math:`\mathcal N_W(\mu,\sigma)` (:func:`hyro_edu.geometry.wrapped_normal.poincare_wrap`);
  :math:`d_c(\mu, z) = \|\sigma\odot\varepsilon\|`;
* ``"tangent0"``: :math:`z = \exp^c_0(\tilde\mu + \sigma\odot\varepsilon)`;
* ``"euclidean"``: :math:`z = \mu + \sigma\odot\varepsilon`, projected into the ball (it leaves
  the ball often in high dimension: :func:`hyro_edu.hvsa.sampling.euclidean_exit_rate`);
* ``"mean"``: :math:`z = \mu`, no sampling.

For ``geometry="euclidean"`` the first three coincide: :math:`z = \mu + \sigma\odot\varepsilon`.
"""
from __future__ import annotations

from typing import Optional, Union

import torch

from hyro_edu.core import checks as _checks
from hyro_edu.core.numerics import fp32_math
from hyro_edu.geometry import poincare as P
from hyro_edu.geometry import wrapped_normal as W
from hyro_edu.hvsa import latent as _latent

__all__ = ["LABEL_SAMPLES", "reparametrise", "euclidean_exit_rate"]

#: Values of ``label_sample``.
LABEL_SAMPLES = ("wrapped", "tangent0", "euclidean", "mean")

Curvature = Union[float, torch.Tensor]


@fp32_math
def reparametrise(
    mu_tilde: torch.Tensor,
    sigma: torch.Tensor,
    *,
    c: Curvature = 1.0,
    label_sample: str = "wrapped",
    geometry: str = "hyperbolic",
    eps: Optional[torch.Tensor] = None,
    generator: Optional[torch.Generator] = None,
) -> torch.Tensor:
    r"""A reparametrised sample ``z`` for tangent means ``mu_tilde`` and scales ``sigma``.

    The readings of ``label_sample`` are in the module docstring; ``eps`` is the standard normal
    noise (drawn with ``generator`` if ``None``).  ``sigma`` must be finite and ``> 0``
    (``ValueError`` naming ``sigma``).  Differentiable w.r.t. ``mu_tilde`` and ``sigma``.

    Worked example (tested; :math:`c = 1`, :math:`\tilde\mu = (0.6, 0)`, :math:`\sigma = 0.3`,
    :math:`\varepsilon = (1, -1)`): ``wrapped`` gives :math:`d(\mu, z) = 0.3\sqrt2`, ``tangent0``
    :math:`\exp_0((0.9, -0.3))`, ``euclidean`` :math:`\mu + (0.3, -0.3)`.
    Shapes: ``mu_tilde (..., n)``, ``sigma`` broadcasting against it -> ``(..., n)``.
    HVSA :cite:`hvsa` Sec. 4.2; Mathieu et al. :cite:`mathieu2019continuous` (the wrapped sample).
    """
    _checks.choice(label_sample, "label_sample", LABEL_SAMPLES)
    geometry = _checks.choice(geometry, "geometry", _latent.GEOMETRIES)
    _checks.tensor(mu_tilde, "mu_tilde")
    _checks.positive(sigma, "sigma")
    mu = _latent.to_latent(mu_tilde, c=c, geometry=geometry)
    if label_sample == "mean":
        return mu
    if eps is None:
        eps = torch.randn(
            mu_tilde.shape, generator=generator, dtype=mu_tilde.dtype, device=mu_tilde.device
        )
    step = sigma * eps
    if geometry == "euclidean":
        return mu + step
    if label_sample == "wrapped":
        return W.poincare_wrap(mu, step.expand_as(mu), c=c)
    if label_sample == "tangent0":
        return P.expmap0(mu_tilde + step, c=c)
    return P.project(mu + step, c=c)


@torch.no_grad()
def euclidean_exit_rate(
    sigma: float,
    *,
    n: int = 512,
    c: float = 1.0,
    mu_tilde: Optional[torch.Tensor] = None,
    samples: int = 10_000,
    generator: Optional[torch.Generator] = None,
) -> float:
    r"""How often the paper's Euclidean sample :math:`\mu + \sigma\varepsilon` leaves the ball:

    .. math:: \Pr\big[\sqrt c\,\|\exp^c_0(\tilde\mu) + \sigma\varepsilon\| \ge 1\big],
              \qquad \varepsilon\sim\mathcal N(0, I_n),

    estimated from ``samples`` draws (``mu_tilde`` defaults to the origin).  At the origin it is
    the chi-square tail :math:`Q(n/2, 1/(2c\sigma^2))` (tested): :math:`\|\sigma\varepsilon\|
    \approx \sigma\sqrt n`, so at ``n = 512`` almost every sample leaves the ball once
    :math:`\sigma > 1/\sqrt{512} \approx 0.044`.  Curvature ``-c``, ``c > 0``.
    Returns a Python float in ``[0, 1]``.  HVSA :cite:`hvsa` Sec. 4.2.
    """
    _checks.positive(sigma, "sigma")
    n = _checks.integer(n, "n")
    c = float(_checks.curvature(c))
    samples = _checks.integer(samples, "samples")
    mu = torch.zeros(n, dtype=torch.float64)
    if mu_tilde is not None:
        if mu_tilde.shape != (n,):
            raise ValueError(f"mu_tilde must have shape ({n},), got {tuple(mu_tilde.shape)}")
        mu = P.expmap0(mu_tilde.to(torch.float64), c=c)
    eps = torch.randn(samples, n, dtype=torch.float64, generator=generator)
    norm = torch.linalg.vector_norm(mu + sigma * eps, dim=-1)
    return float((c**0.5 * norm >= 1).double().mean())
