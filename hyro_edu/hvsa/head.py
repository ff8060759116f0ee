r"""The HVSA head: backbone features in, label scores and the loss terms of Eq. (12) out.

.. math::
    s_l = \big\langle W\log^c_b\hat x + w_0,\ f_l\big\rangle,\qquad
    \mathcal L = \mathcal L_{CLS} + \alpha\mathcal L_{HM} + \beta(D_{KL} + \mathcal L_{RECON}).

The head composes the modules of :mod:`hyro_edu.hvsa`: the visual encoder
(:class:`~hyro_edu.hvsa.visual_embedding.VisualEncoder`, Eq. 5), the label embedding
(:class:`~hyro_edu.hvsa.label_embedding.LabelEmbedding`, Eq. 4), the decoder
(:class:`~hyro_edu.hvsa.objective.Decoder`, Eq. 8) and the losses
(:mod:`hyro_edu.hvsa.objective`, :mod:`hyro_edu.hvsa.classification`).  Prediction
(:cite:`hvsa` Sec. 4.3): the posterior mean :math:`\hat x` is mapped back by the log map, projected
linearly to ``d`` dimensions (:math:`\log^c_b\hat x = \log^c_b\exp^c_b\tilde\mu_x = \tilde\mu_x`
is taken exactly, as the encoder's tangent output: in float32 the round trip through the ball
saturates at the boundary clamp, :math:`\|\log^c_b\hat x\| \le \operatorname{artanh}(1 -
\text{margin})/\sqrt c \approx 4.3`, with zero gradient along :math:`\tilde\mu_x`), and scored by an inner product with the label embeddings
``f`` (``score_with="f"``, default) or with the tangent label means
:math:`\tilde\mu_l = \log^c_0\mu_l` (``score_with="mu"``, projection to ``n`` dimensions).

Inputs are image-level features ``(B, D)`` or per-pixel features ``(B, D, H, W)``.  For pixels,
``L_CLS`` is dense and KL and RECON use up to ``pixel_samples`` random labelled pixels per image.
``geometry="euclidean"`` is Table 7's variant: identity maps, Gaussians, Euclidean cones (Eq. 13).
Hyperbolic maths runs in float32 under autocast (:func:`hyro_edu.core.numerics.fp32_math`).
Curvature ``-c``, ``c > 0``.
"""
from __future__ import annotations

from typing import Optional, Sequence, Union

import torch

from hyro_edu.core import checks as _checks
from hyro_edu.geometry import wrapped_normal as W
from hyro_edu.hierarchy.trees import Tree
from hyro_edu.hvsa import latent as _latent
from hyro_edu.hvsa import objective as _objective
from hyro_edu.hvsa.classification import CLS_LOSSES, classification_loss
from hyro_edu.hvsa.label_embedding import LabelEmbedding
from hyro_edu.hvsa.sampling import LABEL_SAMPLES, reparametrise
from hyro_edu.hvsa.taxonomy import (
    PRIOR_LABELS,
    label_taxonomy,
    label_vector,
    on_labels,
    path_labels,
)
from hyro_edu.hvsa.visual_embedding import VisualEncoder

__all__ = ["SCORE_WITH", "HVSAHead"]

#: Values of ``score_with``.
SCORE_WITH = ("f", "mu")


class HVSAHead(torch.nn.Module):
    r"""HVSA on top of a backbone (module docstring).

    Arguments: ``in_dim`` (``D``); ``parents`` (a ``parents`` array over the labels or a
    :class:`~hyro_edu.hierarchy.trees.Tree`, :func:`hyro_edu.hvsa.taxonomy.label_taxonomy`);
    sizes ``d`` (512), ``n`` (``d``), ``visual_hidden`` ((512, 512, 256)), ``semantic_hidden``
    ((512, 256)), ``decoder_hidden`` ((256, 512, 512)); ``c`` (1.0; curvature ``-c``); the
    switches (defaults first) ``geometry`` (hyperbolic, euclidean), ``posterior_scale`` (learned,
    fixed; ``fixed_scale`` 1.0), ``base_point`` (origin, learned), ``label_sample`` (wrapped,
    tangent0, euclidean, mean), ``prior_labels`` (path, leaves), ``score_with`` (f, mu),
    ``recon_target`` (feature, labels), ``hm_rule`` (ganea, entail_triplet, distance_triplet),
    ``hm_reduction`` (mean, sum), ``vae_reduction`` (sum, mean: KL and RECON summed over the
    latent and feature dimensions, or averaged over them,
    :data:`hyro_edu.hvsa.objective.VAE_REDUCTIONS`), ``cls_loss`` (bce for images and focal for pixels when ``None``;
    bce, leaf_ce, level_ce, focal), ``components`` (full, vae, cls); constants ``alpha`` 0.2,
    ``beta`` 4, ``gamma`` 1, ``K`` 0.1, ``focal_gamma`` 2, ``negatives`` 10 per positive pair
    (``None``: all), ``pixel_samples`` 1024, ``ignore_index`` 255.

    ``forward(features, targets=None, *, generator=None)`` returns a dict: ``"scores"``
    (``(B, L)`` or ``(B, L, H, W)``) and ``"x_hat"`` (``(B, n)`` or ``(B, H, W, n)``); with
    ``targets`` also ``"cls"``, ``"kl"``, ``"recon"``, ``"hm"`` (those ``components`` uses) and
    ``"loss"`` (Eq. 12).  ``targets``: label vectors ``(B, L)`` (0/1) or label indices ``(B,)``
    for images; label indices ``(B, H, W)`` (``ignore_index`` for unlabelled pixels) for pixels;
    indices become path-closed vectors (:func:`hyro_edu.hvsa.taxonomy.path_labels`).  An image
    without positive labels raises ``ValueError`` (its prior is empty).
    HVSA :cite:`hvsa`, Sec. 4 and Eq. (12).
    """

    def __init__(
        self,
        in_dim: int,
        parents: Union[Tree, Sequence[int]],
        *,
        d: int = 512,
        n: Optional[int] = None,
        c: float = 1.0,
        visual_hidden: Sequence[int] = (512, 512, 256),
        semantic_hidden: Sequence[int] = (512, 256),
        decoder_hidden: Sequence[int] = (256, 512, 512),
        geometry: str = "hyperbolic",
        posterior_scale: str = "learned",
        fixed_scale: float = 1.0,
        base_point: str = "origin",
        label_sample: str = "wrapped",
        prior_labels: str = "path",
        score_with: str = "f",
        recon_target: str = "feature",
        hm_rule: str = "ganea",
        hm_reduction: str = "mean",
        vae_reduction: str = "sum",
        cls_loss: Optional[str] = None,
        components: str = "full",
        alpha: float = 0.2,
        beta: float = 4.0,
        gamma: float = 1.0,
        K: float = 0.1,
        focal_gamma: float = 2.0,
        negatives: Optional[int] = 10,
        pixel_samples: int = 1024,
        ignore_index: int = 255,
    ):
        super().__init__()
        self.taxonomy = label_taxonomy(parents)
        num_labels = self.taxonomy.num_labels
        self.in_dim = _checks.integer(in_dim, "in_dim")
        d = _checks.integer(d, "d")
        n = d if n is None else _checks.integer(n, "n")
        self.c = float(_checks.curvature(c))
        self.geometry = _checks.choice(geometry, "geometry", _latent.GEOMETRIES)
        self.label_sample = _checks.choice(label_sample, "label_sample", LABEL_SAMPLES)
        self.prior_labels = _checks.choice(prior_labels, "prior_labels", PRIOR_LABELS)
        self.score_with = _checks.choice(score_with, "score_with", SCORE_WITH)
        self.recon_target = _checks.choice(recon_target, "recon_target", _objective.RECON_TARGETS)
        self.hm_rule = _checks.choice(hm_rule, "hm_rule", _objective.HM_RULES)
        self.hm_reduction = _checks.choice(hm_reduction, "hm_reduction", _objective.HM_REDUCTIONS)
        self.vae_reduction = _checks.choice(
            vae_reduction, "vae_reduction", _objective.VAE_REDUCTIONS
        )
        if cls_loss is not None:
            _checks.choice(cls_loss, "cls_loss", CLS_LOSSES)
        self.cls_loss = cls_loss
        self.components = _checks.choice(components, "components", _objective.COMPONENTS)
        self.alpha, self.beta, self.gamma, self.K = alpha, beta, gamma, K
        self.focal_gamma, self.negatives = focal_gamma, negatives
        self.pixel_samples = _checks.integer(pixel_samples, "pixel_samples")
        self.ignore_index = ignore_index

        self.visual = VisualEncoder(
            self.in_dim, n=n, hidden=visual_hidden, c=self.c, geometry=self.geometry,
            posterior_scale=posterior_scale, fixed_scale=fixed_scale, base_point=base_point,
        )
        self.labels = LabelEmbedding(
            num_labels, d=d, n=n, hidden=semantic_hidden, c=self.c, geometry=self.geometry
        )
        self.project = torch.nn.Linear(n, d if score_with == "f" else n)
        recon_dim = self.in_dim if recon_target == "feature" else num_labels
        self.decoder = _objective.Decoder(
            n, recon_dim, hidden=decoder_hidden, c=self.c, geometry=self.geometry
        )
        # Index tensors of the pairs or triplets, kept on the CPU (not buffers): negatives are drawn
        # with a CPU generator, and indexing the label points with them needs no device sync.
        self.hm_terms = _objective.metric_terms(self.taxonomy, hm_rule=hm_rule)

    # ------------------------------------------------------------------
    def _hm_terms(self):
        return self.hm_terms

    def _targets(self, targets, pixel: bool, shape) -> torch.Tensor:
        """Label vectors ``(..., L)`` float from ``targets``."""
        if not isinstance(targets, torch.Tensor):
            raise ValueError(f"targets must be a tensor, got {type(targets).__name__}")
        if pixel or (not targets.is_floating_point() and targets.dtype != torch.bool
                     and targets.dim() == 1):
            if tuple(targets.shape) != tuple(shape):
                raise ValueError(
                    f"targets must have shape {tuple(shape)} (one label index per "
                    f"{'pixel' if pixel else 'image'}), got {tuple(targets.shape)}"
                )
            return path_labels(targets, self.taxonomy, ignore_index=self.ignore_index)
        y = label_vector(targets, self.taxonomy, name="targets")
        if tuple(y.shape[:-1]) != tuple(shape):
            raise ValueError(
                f"targets must have shape {tuple(shape) + (self.taxonomy.num_labels,)}, "
                f"got {tuple(targets.shape)}"
            )
        return y.float()

    def pixel_rows(self, y: torch.Tensor, generator=None) -> torch.Tensor:
        """Flat indices into ``(B·H·W)`` of the pixels used for KL and RECON: for each image, up to
        ``pixel_samples`` labelled pixels (``y (B, H, W, L)`` not all zero) drawn without
        replacement.  Shapes: ``y (B, H, W, L)`` -> ``(P,)`` long."""
        labelled = y.any(-1)  # (B, H, W)
        picks = []
        for b in range(y.shape[0]):
            idx = labelled[b].flatten().nonzero().flatten()
            if len(idx) > self.pixel_samples:
                order = torch.randperm(len(idx), generator=generator)[: self.pixel_samples]
                idx = idx[order.to(idx.device)]
            picks.append(idx + b * labelled[b].numel())
        return torch.cat(picks)

    # ------------------------------------------------------------------
    def forward(self, features: torch.Tensor, targets=None, *, generator=None) -> dict:
        _checks.tensor(features, "features")
        if features.dim() not in (2, 4) or features.shape[1] != self.in_dim:
            raise ValueError(
                f"features must have shape (B, {self.in_dim}) or (B, {self.in_dim}, H, W), got "
                f"{tuple(features.shape)}"
            )
        pixel = features.dim() == 4
        x = features.permute(0, 2, 3, 1) if pixel else features  # (..., D)
        mu_tilde, x_hat, sigma = self.visual(x)
        label_mu_tilde, label_mu, label_sigma = self.labels()
        # log_b(exp_b(mu~)) = mu~ exactly; the float32 round trip through the ball caps its norm
        # at artanh(1 - margin) (about 4.3) and zeroes the radial gradient (test_hvsa_method).
        h = self.project(mu_tilde)
        keys = self.labels.f if self.score_with == "f" else label_mu_tilde
        scores = h @ keys.to(h.dtype).transpose(0, 1)  # (..., L)
        out = {"scores": scores.permute(0, 3, 1, 2) if pixel else scores, "x_hat": x_hat}
        if targets is None:
            return out

        y = self._targets(targets, pixel, x.shape[:-1])
        cls_loss = self.cls_loss or ("focal" if pixel else "bce")
        terms = {"cls": classification_loss(
            scores, y, self.taxonomy, cls_loss=cls_loss, focal_gamma=self.focal_gamma)}
        if self.components != "cls":
            if pixel:
                rows = self.pixel_rows(y, generator)
                flat = lambda t: t.reshape(-1, t.shape[-1])[rows]  # noqa: E731
                xs, ss, ys, fs = flat(x_hat), flat(sigma), flat(y), flat(x)
            else:
                xs, ss, ys, fs = x_hat, sigma, y, x
            mask = on_labels(ys, self.taxonomy, prior_labels=self.prior_labels, name="targets")
            eps = torch.randn(xs.shape, generator=generator, dtype=torch.float32).to(xs.device)
            if self.geometry == "hyperbolic":
                z = W.poincare_wrap(xs, ss * eps, c=self.c)  # z ~ q(z|x) (pvae's rsample)
            else:
                z = xs + ss * eps
            kl = _objective.kl_estimate(
                z, xs, ss, label_mu, label_sigma, mask, c=self.c, geometry=self.geometry
            )
            if self.vae_reduction == "mean":
                kl = kl / z.shape[-1]
            terms["kl"] = kl.mean()
            target = fs if self.recon_target == "feature" else ys
            terms["recon"] = _objective.reconstruction_loss(
                self.decoder(z), target, recon_target=self.recon_target,
                vae_reduction=self.vae_reduction,
            )
        if self.components == "full":
            eps = torch.randn(label_mu_tilde.shape, generator=generator, dtype=torch.float32)
            z_labels = reparametrise(
                label_mu_tilde, label_sigma, c=self.c, label_sample=self.label_sample,
                geometry=self.geometry, eps=eps.to(label_mu_tilde.device),
            )
            terms["hm"] = _objective.metric_loss(
                z_labels, self._hm_terms(), c=self.c, K=self.K, gamma=self.gamma,
                hm_reduction=self.hm_reduction, geometry=self.geometry,
                negatives=self.negatives, generator=generator,
            )
        out.update(terms)
        out["loss"] = _objective.total_loss(
            terms, alpha=self.alpha, beta=self.beta, components=self.components
        )
        return out
