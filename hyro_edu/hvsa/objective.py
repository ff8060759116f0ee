r"""HVSA's objective, Eq. (12): the KL and reconstruction terms, the metric loss, their sum.

.. math::
    \mathcal L = \mathcal L_{CLS} + \alpha\,\mathcal L_{HM}
               + \beta\,\big(D_{KL} + \mathcal L_{RECON}\big),\qquad \alpha = 0.2,\ \beta = 4

(:cite:`hvsa`, Eq. 12).

* :func:`hyro_edu.hvsa.objective.kl_estimate`: the one-sample estimate
  :math:`\ln q(z\mid x) - \ln p(z\mid y)`, :math:`z \sim q` (Eq. 7 with its sign corrected;
  printed as :math:`\ln p - \ln q`, which a positive :math:`\beta` would reward).
* :class:`hyro_edu.hvsa.objective.Decoder` and :func:`hyro_edu.hvsa.objective.reconstruction_loss`:
  Eq. (8), a unit-variance Gaussian on the (detached) feature, or a BCE on the labels (switch
  ``recon_target``).
* :func:`hyro_edu.hvsa.objective.metric_terms` and :func:`hyro_edu.hvsa.objective.metric_loss`:
  Eqs. (9)-(11) with Appendix Eq. (14) for the angle and Eq. (13) for Euclidean cones, over pairs
  or triplets chosen by ``hm_rule``.
* :func:`hyro_edu.hvsa.objective.total_loss`: Eq. (12), with the switch ``components`` for
  Table 6's ablation.

``L_CLS`` is in :mod:`hyro_edu.hvsa.classification`.  Curvature ``-c``, ``c > 0``, throughout.
"""
from __future__ import annotations

import math
from numbers import Real
from typing import Optional, Sequence, Union

import torch
import torch.nn.functional as F

from hyro_edu.core import checks as _checks
from hyro_edu.core.numerics import fp32_math
from hyro_edu.hierarchy import entailment as _entailment
from hyro_edu.hvsa import latent as _latent
from hyro_edu.hvsa.label_embedding import prior_log_prob
from hyro_edu.hvsa.taxonomy import LabelTaxonomy

__all__ = [
    "KL_MEASURES",
    "RECON_TARGETS",
    "HM_RULES",
    "HM_REDUCTIONS",
    "COMPONENTS",
    "VAE_REDUCTIONS",
    "kl_estimate",
    "Decoder",
    "reconstruction_loss",
    "metric_terms",
    "metric_loss",
    "total_loss",
]

#: Values of ``kl_measure``: both densities w.r.t. the Riemannian volume, or both w.r.t. Lebesgue.
KL_MEASURES = ("riemannian", "lebesgue")
#: Values of ``recon_target``.
RECON_TARGETS = ("feature", "labels")
#: Values of ``hm_rule`` (design of the pairs and triplets of Eq. 9).
HM_RULES = ("ganea", "entail_triplet", "distance_triplet")
#: Values of ``hm_reduction``.
HM_REDUCTIONS = ("sum", "mean")
#: Values of ``components`` (Table 6): classification only; + the VAE terms; the full model.
COMPONENTS = ("cls", "vae", "full")
#: Values of ``vae_reduction``: how :math:`D_{KL}` and :math:`\mathcal L_{RECON}` reduce over the
#: latent and feature dimensions (each is then averaged over samples).  HVSA's Eq. (12) weights
#: their sum by :math:`\beta = 4` but never says how they are reduced.  ``"sum"`` (default): the
#: log-densities of the whole sample, summed over dimensions, as a VAE's ELBO (and pvae) has them;
#: with it the two terms are :math:`O(n)` and :math:`O(D)` against an :math:`O(1)` per-label
#: ``L_CLS``.  ``"mean"``: divided by the latent dimension ``n`` (KL) and the target dimension
#: ``D`` (RECON), i.e. per dimension, a reading under which :math:`\beta = 4` is a moderate weight.
VAE_REDUCTIONS = ("sum", "mean")

Curvature = Union[float, torch.Tensor]


# ----------------------------------------------------------------------------
# KL (Eq. 7)
# ----------------------------------------------------------------------------
@fp32_math
def kl_estimate(
    z: torch.Tensor,
    loc: torch.Tensor,
    scale: torch.Tensor,
    label_loc: torch.Tensor,
    label_scale: torch.Tensor,
    mask: torch.Tensor,
    *,
    c: Curvature = 1.0,
    geometry: str = "hyperbolic",
    kl_measure: str = "riemannian",
) -> torch.Tensor:
    r"""One-sample KL estimate :math:`\widehat{D}_{KL} = \ln q(z\mid x) - \ln p(z\mid y)`.

    ``z`` is a reparametrised sample of :math:`q = \mathcal N_W(\text{loc}, \text{scale})`
    (:func:`hyro_edu.hvsa.sampling.reparametrise` with ``label_sample="wrapped"``), :math:`p` the
    prior of Eq. (4) over the labels selected by ``mask``
    (:func:`hyro_edu.hvsa.label_embedding.prior_log_prob`).  Its expectation over ``z`` is
    :math:`\mathrm{KL}(q\,\|\,p) \ge 0`.  ``kl_measure="lebesgue"`` takes both densities w.r.t.
    :math:`dz` instead of the Riemannian volume :math:`(\lambda^c_z)^n dz`: the factor cancels and
    the estimate is the same (tested); mixing the two measures would shift it by
    :math:`n\log\lambda^c_z`.  Curvature ``-c``, ``c > 0``.

    Shapes: ``z, loc, scale (..., n)``, ``label_loc, label_scale (L, n)``, ``mask (..., L)`` ->
    ``(...)``.  HVSA :cite:`hvsa`, Eq. (7) (sign corrected); Mathieu et al.
    :cite:`mathieu2019continuous` (the estimator of pvae).
    """
    _checks.choice(kl_measure, "kl_measure", KL_MEASURES)
    log_q = _latent.log_density(z, loc, scale, c=c, geometry=geometry)
    log_p = prior_log_prob(z, label_loc, label_scale, mask, c=c, geometry=geometry)
    if kl_measure == "lebesgue" and geometry == "hyperbolic":
        # density w.r.t. dz = density w.r.t. the volume times lambda_z^n, for q and p alike
        n = z.shape[-1]
        log_lam = math.log(2.0) - torch.log1p(-c * (z * z).sum(-1))
        log_q, log_p = log_q + n * log_lam, log_p + n * log_lam
    return log_q - log_p


# ----------------------------------------------------------------------------
# reconstruction (Eq. 8)
# ----------------------------------------------------------------------------
class Decoder(torch.nn.Module):
    r"""The decoder of Eq. (8): :math:`\log^c_0(z)`, then an MLP (hidden ``(256, 512, 512)``).

    pvae's ``DecWrapped`` (:cite:`mathieu2019continuous`); ``geometry="euclidean"`` skips the log
    map.  Curvature ``-c``, ``c > 0``.  Shapes: ``z (..., n)`` -> ``(..., out_dim)``.
    """

    def __init__(
        self,
        n: int,
        out_dim: int,
        *,
        hidden: Sequence[int] = (256, 512, 512),
        c: float = 1.0,
        geometry: str = "hyperbolic",
    ):
        super().__init__()
        self.c = float(_checks.curvature(c))
        self.geometry = _checks.choice(geometry, "geometry", _latent.GEOMETRIES)
        self.net = _latent.mlp(n, hidden, out_dim)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(_latent.to_tangent(z, c=self.c, geometry=self.geometry))


def reconstruction_loss(
    output: torch.Tensor,
    target: torch.Tensor,
    *,
    recon_target: str = "feature",
    vae_reduction: str = "sum",
) -> torch.Tensor:
    r""":math:`\mathcal L_{RECON} = -\ln p(x\mid z)` up to a constant, averaged over samples.

    ``recon_target="feature"``: unit-variance Gaussian, :math:`\tfrac12\|x - \mathrm{dec}(z)\|^2`
    summed over dimensions, with the target **detached** (a trainable backbone must not shrink its
    own features to lower the loss).  ``"labels"``: the BCE of the decoder's logits against the
    label vector :math:`y`, summed over labels (C2AE :cite:`yeh2017c2ae` reconstructs labels).
    ``vae_reduction="mean"`` divides by ``D`` (:data:`VAE_REDUCTIONS`).
    Properties: ``>= 0``; 0 iff the output equals the feature.
    Shapes: ``output, target (..., D)`` -> scalar.  HVSA :cite:`hvsa`, Eq. (8).
    """
    _checks.choice(recon_target, "recon_target", RECON_TARGETS)
    _checks.choice(vae_reduction, "vae_reduction", VAE_REDUCTIONS)
    if output.shape != target.shape:
        raise ValueError(
            f"output and target must have the same shape, got {tuple(output.shape)} and "
            f"{tuple(target.shape)}"
        )
    target = target.detach().to(output.dtype)
    if recon_target == "feature":
        per = 0.5 * ((target - output) ** 2).sum(-1)
    else:
        per = F.binary_cross_entropy_with_logits(output, target, reduction="none").sum(-1)
    if vae_reduction == "mean":
        per = per / output.shape[-1]
    return per.mean()


# ----------------------------------------------------------------------------
# hierarchy-aware metric loss (Eqs. 9-11, 13, 14)
# ----------------------------------------------------------------------------
def metric_terms(taxonomy: LabelTaxonomy, *, hm_rule: str = "ganea"):
    r"""The index sets of Eq. (9) over the labels (root excluded), by ``hm_rule``:

    * ``"ganea"`` (default): returns ``(positives (P, 2), negatives (M, 2))``: every
      (ancestor, descendant) pair of the transitive closure, and every ordered pair ``(u, v)``,
      ``u != v``, where ``u`` is not an ancestor of ``v`` (Ganea et al. :cite:`ganea2018cones`).
    * ``"entail_triplet"``: ``triplets (T, 3)`` of ``(a, p, n)`` with ``p`` a descendant of ``a``,
      ``n`` neither ``a`` nor a descendant, and ``D(a, p) < D(a, n)``.
    * ``"distance_triplet"``: the literal rule of Sec. 4.2, every ``(a, p, n)`` of distinct labels
      with ``D(a, p) < D(a, n)``; siblings and parents become positives, and the loss has a
      positive floor (two points cannot contain each other: tested).

    ``D`` is the shortest-path length in the tree, the virtual root included
    (:meth:`hyro_edu.hierarchy.trees.Tree.distances`).  HVSA :cite:`hvsa`, Eq. (9) and Sec. 4.2.
    """
    _checks.choice(hm_rule, "hm_rule", HM_RULES)
    tree = taxonomy.tree
    if hm_rule == "ganea":
        pos = _entailment.positive_pairs(tree)
        neg = _entailment.non_entailed_pairs(tree)
        pos = pos[(pos > 0).all(-1)] - 1  # drop the root, renumber nodes as labels
        neg = neg[(neg > 0).all(-1)] - 1
        return pos, neg
    dist = tree.distances()[1:, 1:]
    n = len(dist)
    a, p, m = torch.meshgrid(torch.arange(n), torch.arange(n), torch.arange(n), indexing="ij")
    keep = (a != p) & (a != m) & (p != m) & (dist[a, p] < dist[a, m])
    if hm_rule == "entail_triplet":
        desc = _entailment.transitive_closure(tree)[1:, 1:]  # desc[u, v]: u is an ancestor of v
        keep &= desc[a, p] & ~desc[a, m]
    return torch.stack([a[keep], p[keep], m[keep]], dim=-1)


@fp32_math
def metric_loss(
    points: torch.Tensor,
    terms,
    *,
    c: float = 1.0,
    K: float = 0.1,
    gamma: float = 1.0,
    hm_reduction: str = "mean",
    geometry: str = "hyperbolic",
    negatives: Optional[int] = 10,
    generator: Optional[torch.Generator] = None,
) -> torch.Tensor:
    r"""The hierarchy-aware metric loss of Eq. (9) over label points ``(L, n)``:

    .. math::
        \mathcal L_{HM} = \sum_{(a,p)\in\mathcal P} E(z_a, z_p)
          + \sum_{(a,n)\in\mathcal N}\max\big(0, \gamma - E(z_a, z_n)\big),\qquad
        E(x, y) = \max\big(0, \Xi(x, y) - \psi(x)\big),

    with :math:`\psi(x) = \arcsin(K(1 - c\|x\|^2)/(\sqrt c\|x\|))` (Eq. 10) and the exterior angle
    :math:`\Xi` of Appendix Eq. (14) (:func:`hyro_edu.geometry.cones.energy`; Eq. (11) as printed
    misplaces a bracket); ``geometry="euclidean"`` uses the Euclidean cones of Eq. (13).
    ``terms`` is :func:`hyro_edu.hvsa.objective.metric_terms`: for ``"ganea"`` pairs, all positives
    and ``negatives`` times as many negatives drawn uniformly (``None``: all of them); for the triplet rules each
    triplet ``(a, p, n)`` adds :math:`E(z_a, z_p) + [\gamma - E(z_a, z_n)]_+`.
    ``hm_reduction="mean"`` (default) divides by the number of pairs (``ganea``) or triplets.

    Properties (tested): ``>= 0``; 0 at the zero-loss configuration of the small tree of the tests
    (``ganea``); bounded away from 0 for ``distance_triplet``.
    Shapes: ``points (L, n)`` -> scalar.  HVSA :cite:`hvsa` Eqs. (9)-(11), (13), (14);
    Ganea et al. :cite:`ganea2018cones`.
    """
    _checks.choice(hm_reduction, "hm_reduction", HM_REDUCTIONS)
    geometry = _checks.choice(geometry, "geometry", _latent.GEOMETRIES)
    if not (isinstance(gamma, Real) and not isinstance(gamma, bool) and gamma > 0):
        raise ValueError(f"gamma must be a number > 0 (the margin of Eq. 9), got {gamma!r}")
    cone_geometry = "poincare" if geometry == "hyperbolic" else "euclidean"
    if isinstance(terms, tuple):
        pos, neg = terms
        if negatives is not None:
            k = _checks.integer(negatives, "negatives", 0) * len(pos)
            neg = _entailment.sample_negatives(neg, k, generator=generator) if k else neg[:0]
        count = len(pos) + len(neg)
    else:
        pos, neg = terms[:, [0, 1]], terms[:, [0, 2]]
        count = len(terms)
    total = _entailment.margin_loss(
        points, pos, neg, c=c, K=K, margin=gamma, geometry=cone_geometry, reduction="sum"
    )
    return total / max(count, 1) if hm_reduction == "mean" else total


# ----------------------------------------------------------------------------
# Eq. (12)
# ----------------------------------------------------------------------------
def total_loss(
    terms: dict, *, alpha: float = 0.2, beta: float = 4.0, components: str = "full"
) -> torch.Tensor:
    r"""Eq. (12):

    .. math:: \mathcal L_{CLS} + \alpha\mathcal L_{HM} + \beta(D_{KL} + \mathcal L_{RECON}).


    ``terms`` holds the scalars ``"cls"``, and as needed ``"kl"``, ``"recon"``, ``"hm"``.
    ``components`` (Table 6): ``"cls"`` (the classification loss alone), ``"vae"``
    (+ :math:`\beta(D_{KL} + \mathcal L_{RECON})`), ``"full"`` (+ :math:`\alpha\mathcal L_{HM}`).
    HVSA :cite:`hvsa`, Eq. (12) and Table 6.
    """
    _checks.choice(components, "components", COMPONENTS)
    for name, value in (("alpha", alpha), ("beta", beta)):
        if not (isinstance(value, Real) and not isinstance(value, bool) and value >= 0):
            raise ValueError(f"{name} must be a number >= 0, got {value!r}")
    loss = terms["cls"]
    if components in ("vae", "full"):
        loss = loss + beta * (terms["kl"] + terms["recon"])
    if components == "full":
        loss = loss + alpha * terms["hm"]
    return loss
