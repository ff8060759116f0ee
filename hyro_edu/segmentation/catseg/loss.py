r"""The training losses of the CAT-Seg decoder: per-class BCE (the released code) or pixel-wise CE (HyRo).

.. math::
    \mathcal L_{\text{bce}} = \frac{1}{|\Omega|\,T}\sum_{x,t} \mathrm{BCE}\big(\sigma(z_t(x)), [y(x) = t]\big),
    \qquad
    \mathcal L_{\text{ce}} = -\frac{1}{|\Omega|}\sum_{x} \log \operatorname{softmax}_t(z(x))_{y(x)} .

:func:`segmentation_loss` picks one by name (:data:`LOSSES`).  Sources: the released code
(CAT-Seg repository, ``cat_seg/cat_seg_model.py``, ``forward`` in training) for ``"bce"``, which
the released code of HyperCLIP :cite:`peng2025hyperclip` and HyRo :cite:`truong2026hyro` keeps;
the HyRo paper :cite:`truong2026hyro`, "Loss & Training", for ``"ce"``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from hyro_edu.core import checks as _checks
from hyro_edu.segmentation.catseg.functional import check_rank

__all__ = ["LOSSES", "catseg_loss", "pixel_cross_entropy", "segmentation_loss"]

#: Training losses (:func:`segmentation_loss`): ``"bce"`` is what the CAT-Seg, HyperCLIP and HyRo
#: code trains with (:func:`catseg_loss`); ``"ce"`` is the pixel-wise softmax cross-entropy the
#: HyRo paper states (:func:`pixel_cross_entropy`).
LOSSES = ("bce", "ce")


def _loss_inputs(logits, target, num_classes, ignore_index) -> tuple[torch.Tensor, torch.Tensor]:
    """Checked loss inputs: the logits upsampled to the target size, the mask of valid pixels."""
    check_rank(logits, "logits", 4, "(B, T, h, w)")
    if not isinstance(target, torch.Tensor) or target.dim() != 3:
        raise ValueError(f"target must be a tensor of shape (B, H, W), got {getattr(target, 'shape', type(target))}")
    if target.dtype.is_floating_point or target.dtype == torch.bool or target.is_complex():
        raise ValueError(f"target must hold integer class indices, got dtype {target.dtype}")
    if target.shape[0] != logits.shape[0]:
        raise ValueError(f"target must have the batch size B = {logits.shape[0]} of logits, got {target.shape[0]}")
    num_classes = _checks.integer(num_classes, "num_classes", 1)
    if num_classes != logits.shape[1]:
        raise ValueError(
            f"num_classes must equal the number of logit channels T = {logits.shape[1]}, got {num_classes}"
        )
    ignore_index = _checks.integer(ignore_index, "ignore_index", -(2**62))
    if 0 <= ignore_index < num_classes:
        raise ValueError(f"ignore_index must lie outside the class range [0, {num_classes - 1}], got {ignore_index}")
    valid = target != ignore_index
    labels = target[valid]
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError(
            f"target must hold class indices in [0, {num_classes - 1}] or ignore_index = {ignore_index}, "
            f"got values in [{int(labels.min())}, {int(labels.max())}]"
        )
    z = F.interpolate(logits, size=target.shape[-2:], mode="bilinear", align_corners=False)
    return z, valid


def catseg_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    num_classes: int,
    ignore_index: int = 255,
    *,
    exclude_ignored: bool = False,
) -> torch.Tensor:
    r"""CAT-Seg's training loss: per-class binary cross-entropy against one-hot targets.

    .. math::
        \mathcal L = \frac{1}{|\Omega|\,T}\sum_{x \in \Omega}\sum_{t=1}^{T}
            \mathrm{BCE}\big(\sigma(z_{t}(x)),\, [y(x) = t]\big),

    with the logits ``z`` bilinearly upsampled to the target size (``align_corners=False``) and
    ``T = num_classes``.  Ignored pixels (``y = ignore_index``) get the all-zero target.

    ``exclude_ignored=False`` (default, the released code, CAT-Seg repository,
    ``cat_seg/cat_seg_model.py``): :math:`\Omega` is *every* pixel, so ignored pixels still push
    all their logits down and count in the mean.
    ``exclude_ignored=True`` (our correction): :math:`\Omega` is the non-ignored pixels only
    (the loss is 0, with a zero gradient, when every pixel is ignored).

    Shapes: ``logits (B, T, h, w)`` float, ``target (B, H, W)`` integer -> a scalar.
    Raises ``ValueError`` when ``num_classes`` differs from ``T``, or ``target`` holds a value
    outside ``[0, T)`` other than ``ignore_index``.
    """
    z, valid = _loss_inputs(logits, target, num_classes, ignore_index)
    onehot = F.one_hot(target.clamp(0, num_classes - 1).long(), num_classes).movedim(-1, 1)
    onehot = (onehot * valid[:, None]).to(z.dtype)  # ignored pixels: all-zero target
    per_entry = F.binary_cross_entropy_with_logits(z, onehot, reduction="none")
    if not exclude_ignored:
        return per_entry.mean()
    weight = valid[:, None].to(z.dtype)
    # a mean over the valid entries; max(count, 1) only avoids 0/0 when every pixel is ignored
    return (per_entry * weight).sum() / max(int(valid.sum()) * num_classes, 1)


def pixel_cross_entropy(
    logits: torch.Tensor,
    target: torch.Tensor,
    num_classes: int,
    ignore_index: int = 255,
) -> torch.Tensor:
    r"""The HyRo paper's training loss: pixel-wise softmax cross-entropy over the ``T`` classes.

    .. math::
        \mathcal L = -\frac{1}{|\Omega|}\sum_{x \in \Omega}
            \log \frac{\exp z_{y(x)}(x)}{\sum_{t=1}^{T} \exp z_t(x)},
        \qquad \Omega = \{x : y(x) \ne \texttt{ignore\_index}\},

    with the logits ``z`` bilinearly upsampled to the target size (``align_corners=False``), as
    :func:`catseg_loss` does.  Unlike CAT-Seg's BCE the classes compete (a softmax over ``T``) and
    ignored pixels never enter (the loss is 0, with a zero gradient, when every pixel is ignored).

    Shapes and errors as :func:`catseg_loss`.  Reference: HyRo :cite:`truong2026hyro`, "Loss & Training"
    (the equation of the pixel-wise cross-entropy); the released code trains with
    :func:`catseg_loss` instead.
    """
    z, valid = _loss_inputs(logits, target, num_classes, ignore_index)
    labels = torch.where(valid, target, torch.zeros_like(target)).long()
    per_pixel = F.cross_entropy(z, labels, reduction="none")  # (B, H, W)
    # a mean over the valid pixels; max(count, 1) only avoids 0/0 when every pixel is ignored
    return (per_pixel * valid.to(z.dtype)).sum() / max(int(valid.sum()), 1)


def segmentation_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    num_classes: int,
    *,
    loss: str = "bce",
    ignore_index: int = 255,
    exclude_ignored: bool = False,
) -> torch.Tensor:
    """The training loss named by ``loss`` (:data:`LOSSES`): ``"bce"`` -> :func:`catseg_loss`
    (``exclude_ignored`` applies), ``"ce"`` -> :func:`pixel_cross_entropy` (ignored pixels never
    count).  Shapes as :func:`catseg_loss`."""
    _checks.choice(loss, "loss", LOSSES)
    if loss == "ce":
        return pixel_cross_entropy(logits, target, num_classes, ignore_index)
    return catseg_loss(logits, target, num_classes, ignore_index, exclude_ignored=exclude_ignored)
