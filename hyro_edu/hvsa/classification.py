r"""HVSA's classification loss :math:`\mathcal L_{CLS}` in its four readings (switch ``cls_loss``).

The paper uses "cross-entropy" for image classification and focal loss for segmentation
(:cite:`hvsa` Sec. 4.3); ImCLEF07 instances are one root-to-leaf path each, so "cross-entropy" has
several readings.  Scores :math:`s \in \mathbb R^L` are one logit per label; targets are path-closed
label vectors :math:`y` (:func:`hyro_edu.hvsa.taxonomy.path_labels`).

* ``"bce"`` (default for images):
  :math:`-\frac1{L}\sum_l [y_l\log\sigma(s_l) + (1-y_l)\log(1-\sigma(s_l))]`, averaged over
  images (C-HMCNN's and MBM's loss; MAP, CMAP and CV then use the same scores).
* ``"leaf_ce"``: softmax cross-entropy over the leaves.
* ``"level_ce"``: softmax cross-entropy per level (``depth_cuts`` of
  :class:`hyro_edu.hvsa.taxonomy.LabelTaxonomy`), summed over levels.
* ``"focal"`` (default for pixels): the softmax focal loss of Lin et al. :cite:`lin2017focal` (the paper's
  reference for it) per level, :math:`\mathrm{FL} = -(1 - p_t)^{\gamma_f}\log p_t` with
  :math:`\gamma_f` = ``focal_gamma`` (2), without the class weight :math:`\alpha_t`, averaged over
  the labelled entries of each level (``ignore_index`` skipped) and summed over levels.
"""
from __future__ import annotations

from numbers import Real

import torch
import torch.nn.functional as F

from hyro_edu.core import checks as _checks
from hyro_edu.hvsa.taxonomy import LabelTaxonomy, label_vector, level_targets

__all__ = ["CLS_LOSSES", "focal_loss", "classification_loss"]

# the class index of rows without a target: never a class (levels may have more than 255)
_SKIP = -1

#: Values of ``cls_loss``.
CLS_LOSSES = ("bce", "leaf_ce", "level_ce", "focal")


def focal_loss(
    logits: torch.Tensor, target: torch.Tensor, *, gamma: float = 2.0, ignore_index: int = 255
) -> torch.Tensor:
    r"""Softmax focal loss :math:`-(1 - p_t)^{\gamma}\log p_t`, averaged over labelled entries.

    ``gamma = 0`` is the cross-entropy (tested).  Entries equal to ``ignore_index`` are skipped;
    with none labelled the loss is 0 (keeping the graph).  Shapes: ``logits (N, C)``,
    ``target (N,)`` long -> scalar.  Lin et al. 2017 (focal loss); HVSA :cite:`hvsa` Sec. 4.3.
    """
    if not (isinstance(gamma, Real) and not isinstance(gamma, bool) and gamma >= 0):
        raise ValueError(f"focal_gamma must be a number >= 0, got {gamma!r}")
    valid = target != ignore_index
    if not bool(valid.any()):
        return logits.sum() * 0
    logp = F.log_softmax(logits[valid].float(), dim=-1)
    logp_t = logp.gather(-1, target[valid].unsqueeze(-1)).squeeze(-1)
    # (1 - p_t)^gamma via -expm1(log p_t): exact when p_t is close to 1
    weight = (-torch.expm1(logp_t)).clamp_min(0) ** gamma
    return -(weight * logp_t).mean()


def classification_loss(
    scores: torch.Tensor,
    y: torch.Tensor,
    taxonomy: LabelTaxonomy,
    *,
    cls_loss: str = "bce",
    focal_gamma: float = 2.0,
) -> torch.Tensor:
    r""":math:`\mathcal L_{CLS}` for scores ``(..., L)`` and label vectors ``y (..., L)``.

    ``cls_loss`` selects the reading (module docstring).  Rows of ``y`` that are all zero
    (unlabelled pixels) are skipped by every reading.  ``y`` must be a 0/1 label vector of the
    taxonomy (``ValueError`` naming ``y`` otherwise); the softmax readings need at most one
    on-label per level (one path per image).  Shapes: ``scores, y (..., L)`` -> scalar.
    HVSA :cite:`hvsa`, Sec. 4.3 and Eq. (12).
    """
    _checks.choice(cls_loss, "cls_loss", CLS_LOSSES)
    mask = label_vector(y, taxonomy)
    if scores.shape != mask.shape:
        raise ValueError(
            f"scores must have the shape of y, (..., L); got {tuple(scores.shape)} and "
            f"{tuple(mask.shape)}"
        )
    scores, mask = scores.reshape(-1, mask.shape[-1]), mask.reshape(-1, mask.shape[-1])
    labelled = mask.any(-1)
    if cls_loss == "bce":
        if not bool(labelled.any()):
            return scores.sum() * 0
        return F.binary_cross_entropy_with_logits(
            scores[labelled].float(), mask[labelled].float()
        )
    if cls_loss == "leaf_ce":
        leaves = taxonomy.leaves.to(scores.device)
        sub = mask[:, leaves]
        if bool((sub.sum(-1) > 1).any()):
            raise ValueError("y must switch on at most one leaf per image for cls_loss='leaf_ce'")
        target = torch.where(sub.any(-1), sub.float().argmax(-1), _SKIP)
        return focal_loss(scores[:, leaves], target, gamma=0.0, ignore_index=_SKIP)
    gamma = 0.0 if cls_loss == "level_ce" else focal_gamma
    total = scores.sum() * 0
    for members, target in zip(taxonomy.depth_cuts, level_targets(mask, taxonomy, ignore_index=_SKIP)):
        total = total + focal_loss(
            scores[:, members.to(scores.device)], target, gamma=gamma, ignore_index=_SKIP
        )
    return total
