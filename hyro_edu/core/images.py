r"""One image convention for the package: CLIP's normalisation constants and pixel-range checks.

Every model in the package takes images as float tensors ``(B, 3, H, W)`` with values in
``[0, 1]``; the backbone normalises them with CLIP's per-channel mean and standard deviation
(:data:`CLIP_MEAN`, :data:`CLIP_STD`, the values open_clip ships as ``OPENAI_DATASET_MEAN`` /
``OPENAI_DATASET_STD``):

.. math:: \hat x_{c} = (x_{c} - \mu_{c}) / \sigma_{c}.

:func:`to_unit_range` turns what users have (``uint8`` pixels in ``[0, 255]`` or floats in
``[0, 1]``) into that convention and rejects what it cannot interpret.
"""
from __future__ import annotations

import torch

__all__ = ["CLIP_MEAN", "CLIP_STD", "to_unit_range"]

#: CLIP's RGB mean and standard deviation for images in [0, 1] (Radford et al., 2021).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def to_unit_range(images: torch.Tensor, *, name: str = "images") -> torch.Tensor:
    """``images`` as float32 in ``[0, 1]``: ``uint8`` is divided by 255, floats are checked.

    Shapes are kept. Raises ``TypeError`` for other integer or bool dtypes, and ``ValueError`` for
    floats outside ``[0, 1]`` (e.g. 0-255 floats, or already-normalised images), naming ``name``.
    """
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(images).__name__}")
    if images.dtype == torch.uint8:
        return images.float() / 255.0
    if not images.is_floating_point():
        raise TypeError(f"{name} must be uint8 (0-255) or a float tensor in [0, 1], got dtype {images.dtype}")
    if images.numel():
        lo, hi = float(images.min()), float(images.max())
        if lo < 0.0 or hi > 1.0:
            raise ValueError(
                f"{name} must lie in [0, 1] as floats (or be uint8 0-255); got values in [{lo:.3g}, {hi:.3g}]. "
                "Divide 0-255 floats by 255; pass images before normalisation."
            )
    return images.float()
