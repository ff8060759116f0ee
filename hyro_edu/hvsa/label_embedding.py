r"""HVSA's probabilistic label embedding and the label prior of Eq. (4).

.. math::
    p(z\mid y) = \frac{1}{\sum_l y_l}\sum_{l=1}^{L}\mathbb 1(y_l = 1)\,
    \mathcal N_W(z\mid\mu_l,\sigma_l),\qquad
    \mu_l = \exp^c_0(\tilde\mu_l),\quad (\tilde\mu_l, s_l) = g(f_l),\quad
    \sigma_l = \operatorname{softplus}(s_l) + \sigma_{\min}.

Every label ``l`` (every node of the taxonomy but the root) has a learnable embedding
:math:`f_l \in \mathbb R^d`, initialised from :math:`\mathcal N(0, 1/d)` (our choice; the paper
says "randomly-initialized").  The semantic encoder ``g`` is an MLP (hidden ``[512, 256]``,
:cite:`hvsa` Sec. 4.3) with two heads, :math:`\tilde\mu_l, s_l \in \mathbb R^n`.  Curvature
``-c``, ``c > 0``.  The prior is a uniform mixture over the on-labels
(the sum of :func:`hyro_edu.geometry.wrapped_normal.mixture_log_prob` with ``weights = y``,
over the gathered on-labels); which labels are
on is the switch ``prior_labels`` (:func:`hyro_edu.hvsa.taxonomy.on_labels`).
"""
from __future__ import annotations

import math
from typing import Optional, Sequence, Union

import torch

from hyro_edu.core import checks as _checks
from hyro_edu.core.numerics import fp32_math
from hyro_edu.hvsa import latent as _latent

__all__ = ["prior_log_prob", "LabelEmbedding"]

Curvature = Union[float, torch.Tensor]


@fp32_math
def prior_log_prob(
    z: torch.Tensor,
    loc: torch.Tensor,
    scale: torch.Tensor,
    mask: torch.Tensor,
    *,
    c: Curvature = 1.0,
    geometry: str = "hyperbolic",
    convention: str = "mathieu",
) -> torch.Tensor:
    r"""Log of the label prior :math:`p(z\mid y)` of Eq. (4) (module docstring).

    ``mask (..., L)`` (bool or 0/1) selects the on-labels
    (:func:`hyro_edu.hvsa.taxonomy.on_labels`); a row with none raises ``ValueError`` naming
    ``mask`` (the empty mixture has density 0).  ``geometry="hyperbolic"``: wrapped normals in the
    ball of curvature ``-c`` (``c > 0``) w.r.t. the Riemannian volume; ``"euclidean"``: Gaussians.

    Only each row's on-labels are scored (gathered, at most the largest on-count ``k`` per row,
    padded with weight 0), not all ``L`` components: :math:`O(k)` per row.
    Properties (tested): one on-label gives that label's density; equals the log of the average of
    the on-components (and the masked sum over all ``L``); off-labels get zero gradient.
    Shapes: ``z (..., n)``, ``loc (L, n)``, ``scale`` broadcasting against ``(L, n)``,
    ``mask (..., L)`` -> ``(...)``.  HVSA :cite:`hvsa`, Eq. (4).
    """
    _checks.choice(geometry, "geometry", _latent.GEOMETRIES)
    if not isinstance(mask, torch.Tensor) or mask.dim() < 1 or mask.shape[-1] != loc.shape[-2]:
        raise ValueError(
            f"mask must be a tensor (..., L) with L = {loc.shape[-2]} (one entry per label of "
            f"loc), got {getattr(mask, 'shape', type(mask).__name__)}"
        )
    weights = mask.to(z.dtype)
    # one host sync per call: the emptiest row (must be > 0) and the fullest (k, below)
    fewest, k = torch.stack(torch.aminmax((weights > 0).sum(-1).flatten())).tolist()
    if fewest <= 0:
        raise ValueError(
            "mask must switch on at least one label per row: the prior of Eq. (4) of an image "
            "without positive labels is the empty mixture (density 0, KL infinite)"
        )
    # Only the on-labels of each row enter the mixture: gather them (k per row, k the largest
    # count; shorter rows padded with weight 0, which drops the component) instead of scoring z
    # against all L components and masking.  Same value and gradients (tested); O(k), not O(L).
    if k < weights.shape[-1]:
        weights, idx = weights.topk(k, dim=-1)  # (..., k), the on-labels first
        scale = torch.as_tensor(scale, dtype=loc.dtype, device=loc.device).expand(loc.shape)
        loc, scale = loc[idx], scale[idx]  # (..., k, n)
    # log N_W (or log N) of each gathered component: wrapped_normal.mixture_log_prob's sum,
    # without its second validation pass over the weights
    comp = _latent.log_density(z.unsqueeze(-2), loc, scale, c=c, geometry=geometry,
                               convention=convention)
    pi = weights / weights.sum(-1, keepdim=True)
    positive = pi > 0
    # log 0 = -inf drops a component; the inner where keeps d log(pi) = 1/0 out of the backward
    log_w = torch.where(positive, torch.where(positive, pi, torch.ones_like(pi)).log(), -torch.inf)
    return torch.logsumexp(log_w + comp, dim=-1)


class LabelEmbedding(torch.nn.Module):
    r"""Learnable label embeddings :math:`f_l` and the semantic encoder (module docstring).

    ``forward()`` returns ``(mu_tilde, mu, sigma)``: the tangent means ``(L, n)``, the label means
    ``(L, n)`` (points of the ball for ``geometry="hyperbolic"``) and the scales ``(L, n)``; the
    embeddings are the parameter ``f (L, d)``.
    ``d`` (default 512) is the embedding size, ``n`` (default ``d``) the latent dimension,
    ``hidden`` the encoder's hidden sizes (default ``(512, 256)``), ``scale_floor`` the
    :math:`\sigma_{\min}` of :func:`hyro_edu.hvsa.latent.positive_scale`.  Curvature ``-c``,
    ``c > 0``.  HVSA :cite:`hvsa`, Sec. 4.1 and 4.3.
    """

    def __init__(
        self,
        num_labels: int,
        *,
        d: int = 512,
        n: Optional[int] = None,
        hidden: Sequence[int] = (512, 256),
        c: float = 1.0,
        geometry: str = "hyperbolic",
        scale_floor: Optional[float] = None,
    ):
        super().__init__()
        num_labels = _checks.integer(num_labels, "num_labels")
        d = _checks.integer(d, "d")
        n = d if n is None else _checks.integer(n, "n")
        self.c = float(_checks.curvature(c))
        self.geometry = _checks.choice(geometry, "geometry", _latent.GEOMETRIES)
        self.scale_floor = scale_floor
        self.n = n
        self.f = torch.nn.Parameter(torch.randn(num_labels, d) / math.sqrt(d))  # N(0, 1/d)
        self.encoder = _latent.mlp(d, hidden, 2 * n)

    def forward(self):
        out = self.encoder(self.f)
        mu_tilde, raw = out[..., : self.n], out[..., self.n :]
        mu = _latent.to_latent(mu_tilde, c=self.c, geometry=self.geometry)
        return mu_tilde, mu, _latent.positive_scale(raw, self.scale_floor)
