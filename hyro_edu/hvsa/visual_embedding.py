r"""HVSA's visual embedding and posterior (Eq. 5): features to a wrapped normal in the ball.

.. math::
    \hat x = \exp^c_b(\tilde\mu_x),\qquad (\tilde\mu_x, s_x) = h(x),\qquad
    q(z\mid x) = \mathcal N_W(\hat x, \sigma_x),\quad \sigma_x = \operatorname{softplus}(s_x)
    + \sigma_{\min},

with :math:`\exp^c_b(v) = b \oplus_c \tanh(\sqrt c\,\lambda^c_b\|v\|/2)\,v/(\sqrt c\|v\|)` (Eq. 2,
curvature ``-c``, ``c > 0``).  ``h`` is an MLP (hidden ``[512, 512, 256]``, :cite:`hvsa` Sec. 4.3)
with two heads in :math:`\mathbb R^n` (pvae's ``EncWrapped``, :cite:`mathieu2019continuous`).

Switches:

* ``base_point``: ``"origin"`` (``b = 0``, default; the paper's prediction uses the map at the
  origin) or ``"learned"`` (``b = \exp^c_0(\tilde b)``, :math:`\tilde b` a parameter, zero at
  initialisation).  Going back to the tangent space then needs the correct log map at ``b``
  (:func:`hyro_edu.geometry.poincare.logmap`); Eq. (2)'s printed log map
  (:func:`hyro_edu.hvsa.visual_embedding.printed_logmap`) is wrong for ``b != 0``.
* ``posterior_scale``: ``"learned"`` (the MLP's second head, default) or ``"fixed"`` (every
  :math:`\sigma_x` equals ``fixed_scale``; :math:`\hat x` is then deterministic in the prediction
  and the posterior's spread is a constant).

``geometry="euclidean"`` (Table 7): :math:`\hat x = b + \tilde\mu_x` and Gaussian posteriors.
"""
from __future__ import annotations

from typing import Optional, Sequence, Union

import torch

from hyro_edu.core import checks as _checks
from hyro_edu.core.numerics import artanh, floored, fp32_math, norm_keepdim
from hyro_edu.geometry import poincare as P
from hyro_edu.hvsa import latent as _latent

__all__ = ["POSTERIOR_SCALES", "BASE_POINTS", "printed_logmap", "VisualEncoder"]

#: Values of ``posterior_scale``.
POSTERIOR_SCALES = ("learned", "fixed")
#: Values of ``base_point``.
BASE_POINTS = ("origin", "learned")


@fp32_math
def printed_logmap(x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    r"""HVSA's Eq. (2) log map *as printed* (curvature ``-1``), kept to show that it is wrong:

    .. math:: \log_x(u) = \frac{2}{\lambda_x}\operatorname{artanh}
              \Big(\frac{\|u - x\|}{\sqrt{1 - \|x\|^2}}\Big)\frac{u - x}{\|u - x\|}.

    It agrees with the correct :func:`hyro_edu.geometry.poincare.logmap` (whose argument uses
    :math:`(-x)\oplus u`) only at ``x = 0`` (tested).  The ``artanh`` argument is clamped at
    ``1 - eps`` (:func:`hyro_edu.core.numerics.artanh`), where the printed formula leaves its
    domain.  Shapes: ``x, u (..., n)`` -> ``(..., n)``.  HVSA :cite:`hvsa`, Eq. (2).
    """
    _checks.same_spaces(-1, ("x", x), ("u", u))
    x2 = (x * x).sum(-1, keepdim=True)
    lam = 2 / (1 - x2)
    delta = u - x
    # the norm is floored at sqrt(finfo.tiny) so that u = x gives 0, not 0/0
    dn = floored(norm_keepdim(delta, -1))
    return (2 / lam) * artanh(dn / (1 - x2).sqrt()) * delta / dn


class VisualEncoder(torch.nn.Module):
    r"""Features ``(..., in_dim)`` to the posterior of Eq. (5) (module docstring).

    ``forward(x)`` returns ``(mu_tilde, x_hat, sigma)``, each ``(..., n)``: the tangent output,
    the point :math:`\hat x` (the posterior mean) and the posterior scale.
    :meth:`hyro_edu.hvsa.visual_embedding.VisualEncoder.tangent` maps points back to the tangent
    space at the base point.
    Curvature ``-c``, ``c > 0``.  HVSA :cite:`hvsa`, Eq. (5) and Sec. 4.3.
    """

    def __init__(
        self,
        in_dim: int,
        *,
        n: int = 512,
        hidden: Sequence[int] = (512, 512, 256),
        c: float = 1.0,
        geometry: str = "hyperbolic",
        posterior_scale: str = "learned",
        fixed_scale: float = 1.0,
        base_point: str = "origin",
        scale_floor: Optional[float] = None,
    ):
        super().__init__()
        self.n = _checks.integer(n, "n")
        self.c = float(_checks.curvature(c))
        self.geometry = _checks.choice(geometry, "geometry", _latent.GEOMETRIES)
        self.posterior_scale = _checks.choice(posterior_scale, "posterior_scale", POSTERIOR_SCALES)
        self.fixed_scale = float(_checks.positive(fixed_scale, "fixed_scale"))
        self.base_point = _checks.choice(base_point, "base_point", BASE_POINTS)
        self.scale_floor = scale_floor
        heads = 2 * self.n if self.posterior_scale == "learned" else self.n
        self.encoder = _latent.mlp(in_dim, hidden, heads)
        if self.base_point == "learned":
            self.base_tangent = torch.nn.Parameter(torch.zeros(self.n))

    def base(self) -> Optional[torch.Tensor]:
        """The base point ``b (n,)``, or ``None`` for the origin."""
        if self.base_point == "origin":
            return None
        return _latent.to_latent(self.base_tangent, c=self.c, geometry=self.geometry)

    def to_point(self, mu_tilde: torch.Tensor) -> torch.Tensor:
        r""":math:`\hat x = \exp^c_b(\tilde\mu_x)` (Eq. 2); ``b + \tilde\mu_x`` if Euclidean."""
        b = self.base()
        if b is None:
            return _latent.to_latent(mu_tilde, c=self.c, geometry=self.geometry)
        if self.geometry == "euclidean":
            return b + mu_tilde
        return P.expmap(b.expand_as(mu_tilde), mu_tilde, c=self.c)

    def tangent(self, x_hat: torch.Tensor) -> torch.Tensor:
        r""":math:`\log^c_b(\hat x)`, the correct log map at the base point.

        The inverse of :meth:`hyro_edu.hvsa.visual_embedding.VisualEncoder.to_point`.
        """
        b = self.base()
        if b is None:
            return _latent.to_tangent(x_hat, c=self.c, geometry=self.geometry)
        if self.geometry == "euclidean":
            return x_hat - b
        return P.logmap(b.expand_as(x_hat), x_hat, c=self.c)

    def forward(self, x: torch.Tensor):
        out = self.encoder(x)
        mu_tilde = out[..., : self.n]
        if self.posterior_scale == "learned":
            sigma = _latent.positive_scale(out[..., self.n :], self.scale_floor)
        else:
            sigma = torch.full_like(mu_tilde, self.fixed_scale)
        return mu_tilde, self.to_point(mu_tilde), sigma
