r"""Class scores of a model on one image, as CAT-Seg's evaluation computes them.

.. math::
    \hat y = \mathcal R_{\text{out}}\Big(\tfrac12\big[
    \operatorname{fold}(\sigma(f(\text{crops}))) \oslash \operatorname{fold}(\mathbf 1)
    + \mathcal R_{640}(\sigma(f(\mathcal R_{384}(x))))\big]\Big)
    \quad\text{(the sliding window)}.

The views of the protocol (steps 1-2 of :mod:`hyro_edu.segmentation.evaluation`):
:func:`resize_shortest_edge` (the test mapper), :func:`sliding_window_inference` (the final
evaluation, ``eval.sh``), :func:`whole_image_inference` and :func:`pad_to_multiple` (the
in-training validation); and the class truncation for more than 256 classes
(:func:`select_classes`, :func:`gather_classes`, :func:`scatter_classes`).  Sources:
:cite:`cho2024catseg` and the released code (CAT-Seg repository, ``cat_seg/cat_seg_model.py``,
``forward`` and ``inference_sliding_window``); detectron2 :cite:`wu2019detectron2`
(``structures/image_list.py``, ``modeling/postprocessing.py``).
"""
from __future__ import annotations

import math
from numbers import Integral, Real
from typing import Any, Callable, Optional, Sequence

import torch
import torch.nn.functional as F

from hyro_edu.core import checks as _checks
from hyro_edu.segmentation.catseg import functional as _catseg

__all__ = [
    "Model",
    "CLIP_PIXEL_MEAN",
    "OFFICIAL_SIZE_DIVISIBILITY",
    "check_whole_image_mode",
    "resize_shortest_edge",
    "sliding_window_inference",
    "pad_to_multiple",
    "whole_image_inference",
    "select_classes",
    "gather_classes",
    "scatter_classes",
]

#: The model interface: ``model(images (N, 3, k, k) float 0-255, classes) -> logits (N, T, h, w)``,
#: i.e. ``Callable[[Tensor, Any], Tensor]`` (kept out of the API pages: autodoc would print the
#: alias with ``typing`` names it cannot link offline).
#:
#: :meta private:
Model = Callable[[torch.Tensor, Any], torch.Tensor]

#: The two views of :func:`whole_image_inference`: CAT-Seg's padded canvas, or a plain resize.
WHOLE_IMAGE_MODES = ("official", "resize")
#: CAT-Seg's ``MODEL.CLIP_PIXEL_MEAN`` (OpenAI CLIP's mean on the 0-255 scale). detectron2 pads the
#: *normalised* image with 0, which is this colour in pixel values.
CLIP_PIXEL_MEAN = (122.7709383, 116.7460125, 104.09373615)
#: CAT-Seg's ``MODEL.MASK_FORMER.SIZE_DIVISIBILITY`` default in ``cat_seg/config.py``, which the
#: released configs leave unchanged (they set ``INPUT.SIZE_DIVISIBILITY: 384``, which only the
#: training dataset mapper reads).
OFFICIAL_SIZE_DIVISIBILITY = 32


# ----------------------------------------------------------------------------
# argument checks
# ----------------------------------------------------------------------------
def _size_pair(value, name: str) -> tuple[int, int]:
    if isinstance(value, Integral) and not isinstance(value, bool):
        value = (value, value)
    try:
        h, w = value
    except (TypeError, ValueError):
        raise ValueError(
            f"{name} must be an integer >= 1 or a pair (height, width) of them, got {value!r}"
        ) from None
    return _checks.integer(h, f"{name}[0]"), _checks.integer(w, f"{name}[1]")


def _image_batch(image, name: str = "image") -> tuple[torch.Tensor, bool]:
    """Return ``image`` as a float (B, 3, H, W) batch and whether a batch dimension was added."""
    if not isinstance(image, torch.Tensor):
        raise ValueError(
            f"{name} must be a torch.Tensor of shape (3, H, W) or (B, 3, H, W), "
            f"got {type(image).__name__}"
        )
    if image.dim() not in (3, 4) or image.shape[-3] != 3:
        raise ValueError(
            f"{name} must have shape (3, H, W) or (B, 3, H, W), got {tuple(image.shape)}"
        )
    added = image.dim() == 3
    batch = image.unsqueeze(0) if added else image
    if not batch.is_floating_point():
        batch = batch.float()
    return batch, added


# ----------------------------------------------------------------------------
# resizing
# ----------------------------------------------------------------------------
def resize_shortest_edge(
    image: torch.Tensor, short_edge: int = 640, max_size: int = 2560
) -> torch.Tensor:
    r"""Resize so that the shorter side is ``short_edge`` and the longer at most ``max_size``.

    detectron2's ``ResizeShortestEdge`` rule (CAT-Seg's test mapper uses 640 and 2560): with
    :math:`s = \text{short\_edge}/\min(H, W)` the new size is :math:`(sH, sW)`; if its longer side
    exceeds ``max_size`` both sides are scaled by ``max_size / max(sH, sW)``; each side is then
    rounded half up. The pixels are resampled bilinearly with antialiasing, which approximates the
    PIL resampling detectron2 uses for uint8 images (values can differ by a grey level or so).

    ``image``: (3, H, W) or (B, 3, H, W); uint8 input is returned as uint8, float as float.
    """
    short_edge = _checks.integer(short_edge, "short_edge")
    max_size = _checks.integer(max_size, "max_size")
    batch, added = _image_batch(image)
    h, w = batch.shape[-2:]
    scale = short_edge / min(h, w)
    new_h, new_w = (short_edge, scale * w) if h < w else (scale * h, short_edge)
    if max(new_h, new_w) > max_size:
        shrink = max_size / max(new_h, new_w)
        new_h, new_w = new_h * shrink, new_w * shrink
    size = (int(new_h + 0.5), int(new_w + 0.5))
    out = F.interpolate(batch, size=size, mode="bilinear", align_corners=False, antialias=True)
    if image.dtype == torch.uint8:
        out = out.round().clamp(0, 255).to(torch.uint8)
    return out[0] if added else out


def _window_starts(length: int, kernel: int, stride: int) -> list[int]:
    starts = list(range(0, length - kernel + 1, stride))
    if starts[-1] + kernel < length:
        # Not reached by the official parameters (640 = 256 + 384): a last window flush with the
        # border keeps every pixel covered instead of leaving it out of the fold.
        starts.append(length - kernel)
    return starts


def _run_model(model: Model, views: torch.Tensor, classes, size: tuple[int, int]) -> torch.Tensor:
    logits = model(views, classes)
    if not _is_logits(logits, views.shape[0]):
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ValueError(
            f"model output must be a tensor of shape (N, T, h, w) with N = {views.shape[0]} "
            f"views, got {shape}"
        )
    return F.interpolate(_float(logits), size=size, mode="bilinear", align_corners=False)


def _is_logits(logits, n: int) -> bool:
    return isinstance(logits, torch.Tensor) and logits.dim() == 4 and logits.shape[0] == n


def _bilinear(x: torch.Tensor, size) -> torch.Tensor:
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def _float(x: torch.Tensor) -> torch.Tensor:
    # half and bfloat16 logits (autocast) are resized and averaged in float32; float64 stays
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


def _activate(x: torch.Tensor, activation: Optional[str]) -> torch.Tensor:
    if activation == "sigmoid":
        return x.sigmoid()
    return x


def _check_activation(activation) -> None:
    if activation not in ("sigmoid", None):
        raise ValueError(
            f"activation must be 'sigmoid' (CAT-Seg) or None (raw logits), got {activation!r}"
        )


@torch.no_grad()
def sliding_window_inference(
    model: Model,
    image: torch.Tensor,
    classes: Any,
    *,
    kernel: int = 384,
    overlap: float = 0.333,
    out_res: int | Sequence[int] = 640,
    output_size: Optional[Sequence[int]] = None,
    global_view: bool = True,
    activation: Optional[str] = "sigmoid",
) -> torch.Tensor:
    r"""Class scores by CAT-Seg's sliding window: crops of ``out_res`` and a global view, averaged.

    .. math::
        \hat y = \mathcal R_{\text{out}}\Big(\tfrac12\big[
        \operatorname{fold}(\sigma(f(\text{crops}))) \oslash \operatorname{fold}(\mathbf 1)
        + \mathcal R_{640}(\sigma(f(\mathcal R_{384}(x))))\big]\Big)

    with crops of size ``kernel`` taken from :math:`\mathcal R_{640}(x)` at stride
    ``int(kernel * (1 - overlap))`` (256 for the defaults, so 2 × 2 crops), :math:`\sigma` the
    sigmoid, :math:`\mathcal R` bilinear resizing (``align_corners=False``) and :math:`\oslash`
    division by the number of crops covering each pixel.

    Properties (checked in the tests): for a model that commutes with translations (a per-pixel
    map), the folded crops equal the model applied to the whole ``out_res`` image, so the
    windowing adds nothing of its own; every pixel is covered; the model sees
    ``crops + 1`` views per image (5 for the defaults).

    Args:
        model: ``model(images, classes) -> logits``; ``images`` (N, 3, kernel, kernel) float,
            logits (N, T, h, w).
        image: (3, H, W) or (B, 3, H, W); integer images are converted to float (0-255 values
            stay 0-255).
        classes: passed to ``model`` unchanged.
        kernel: crop size (CAT-Seg: 384).
        overlap: fraction of a crop shared with the next, in [0, 1) (CAT-Seg: 0.333).
        out_res: working resolution, an integer or (height, width), each >= ``kernel`` (640).
        output_size: (height, width) of the result; default: the input's (H, W).
        global_view: average with the global view (CAT-Seg: True).
        activation: ``"sigmoid"`` (CAT-Seg) or ``None`` to fold raw logits.

    Returns:
        Scores of shape ``(B, T, *output_size)``, or ``(T, *output_size)`` for an unbatched ``image``.
    """
    kernel = _checks.integer(kernel, "kernel")
    if isinstance(overlap, bool) or not isinstance(overlap, Real) or not 0 <= overlap < 1:
        raise ValueError(f"overlap must be a number in [0, 1), got {overlap!r}")
    out_h, out_w = _size_pair(out_res, "out_res")
    if out_h < kernel or out_w < kernel:
        raise ValueError(
            f"out_res must be >= kernel = {kernel} in both sides, got ({out_h}, {out_w})"
        )
    _check_activation(activation)
    batch, added = _image_batch(image)
    size = batch.shape[-2:] if output_size is None else _size_pair(output_size, "output_size")
    stride = max(1, int(kernel * (1 - overlap)))
    rows, cols = _window_starts(out_h, kernel, stride), _window_starts(out_w, kernel, stride)

    results = []
    for single in batch:
        work = _bilinear(single[None], (out_h, out_w))[0]
        views = [work[:, r : r + kernel, c : c + kernel] for r in rows for c in cols]
        if global_view:
            views.append(_bilinear(single[None], (kernel, kernel))[0])
        logits = _run_model(model, torch.stack(views), classes, (kernel, kernel))
        scores = _activate(logits, activation)
        num_classes = scores.shape[1]
        folded = scores.new_zeros(num_classes, out_h, out_w)
        count = scores.new_zeros(1, out_h, out_w)
        for i, (r, c) in enumerate((r, c) for r in rows for c in cols):
            folded[:, r : r + kernel, c : c + kernel] += scores[i]
            count[:, r : r + kernel, c : c + kernel] += 1
        folded = folded / count  # every pixel lies in at least one window (_window_starts)
        if global_view:
            whole = _bilinear(scores[-1:], (out_h, out_w))[0]
            folded = (folded + whole) / 2
        results.append(_bilinear(folded[None], tuple(size))[0])
    out = torch.stack(results)
    return out[0] if added else out


def check_whole_image_mode(mode) -> None:
    """``ValueError`` unless ``mode`` is one of :data:`WHOLE_IMAGE_MODES`."""
    if mode not in WHOLE_IMAGE_MODES:
        raise ValueError(
            "mode must be 'official' (CAT-Seg's padded canvas) or 'resize' (plain resize), "
            f"got {mode!r}"
        )


def _pad_colour(pad_value, like: torch.Tensor) -> torch.Tensor:
    """``pad_value`` (one number, or one per colour channel) as a (1, 3, 1, 1) tensor."""
    if isinstance(pad_value, Real) and not isinstance(pad_value, bool):
        pad_value = (pad_value,) * 3
    try:
        values = [float(v) for v in pad_value]
    except (TypeError, ValueError):
        values = []
    if len(values) != 3 or not all(math.isfinite(v) for v in values):
        raise ValueError(
            f"pad_value must be a finite number or three of them (RGB), got {pad_value!r}"
        )
    return torch.tensor(values, dtype=like.dtype, device=like.device).view(1, 3, 1, 1)


def pad_to_multiple(image: torch.Tensor, size_divisibility: int, pad_value) -> torch.Tensor:
    r"""Pad an image at the bottom and right to a multiple of ``size_divisibility`` :math:`d`.

    The result has size :math:`d\lceil H/d\rceil \times d\lceil W/d\rceil`, as detectron2's
    ``ImageList.from_tensors(images, d)`` pads one image: the new pixels get ``pad_value`` (one
    number or one per channel); the image stays in the top-left corner; ``d = 1`` pads nothing.
    Shapes: (B, 3, H, W) -> (B, 3, d⌈H/d⌉, d⌈W/d⌉), or the same without B; integer images are
    converted to float.
    """
    size_divisibility = _checks.integer(size_divisibility, "size_divisibility")
    batch, added = _image_batch(image)
    h, w = batch.shape[-2:]
    new_h = -(-h // size_divisibility) * size_divisibility
    new_w = -(-w // size_divisibility) * size_divisibility
    canvas = _pad_colour(pad_value, batch).expand(batch.shape[0], 3, new_h, new_w).clone()
    canvas[..., :h, :w] = batch
    return canvas[0] if added else canvas


@torch.no_grad()
def whole_image_inference(
    model: Model,
    image: torch.Tensor,
    classes: Any,
    *,
    input_size: int = 384,
    output_size: Optional[Sequence[int]] = None,
    activation: Optional[str] = "sigmoid",
    mode: str = "official",
    size_divisibility: int = OFFICIAL_SIZE_DIVISIBILITY,
    pad_value=CLIP_PIXEL_MEAN,
) -> torch.Tensor:
    r"""Class scores from one view of the whole image (no sliding window).

    ``mode="official"`` (default) is the non-sliding path of CAT-Seg's ``CATSeg.forward``, which
    the in-training validation runs (``TEST.SLIDING_WINDOW False``; GitHub issue #35):

    .. math::
        \hat y = \mathcal R_{\text{out}}\big(\sigma(f(\mathcal R_{k}(
        \operatorname{pad}_d(x))))_{[:H,\,:W]}\big)

    1. pad the image at the bottom and right to a multiple of ``size_divisibility`` :math:`d`
       (:func:`pad_to_multiple`; detectron2's ``ImageList.from_tensors``). The official code pads
       the CLIP-normalised image with 0, i.e. with the CLIP mean colour in pixel values
       (``pad_value``, default :data:`CLIP_PIXEL_MEAN`); :math:`d` is CAT-Seg's
       ``MODEL.MASK_FORMER.SIZE_DIVISIBILITY``, 32 (:data:`OFFICIAL_SIZE_DIVISIBILITY`);
    2. resize the padded canvas bilinearly to ``input_size`` squared (:math:`\mathcal R_k`) and run
       the model; take the sigmoid :math:`\sigma`;
    3. ``sem_seg_postprocess``: keep the rows and columns ``[:H, :W]`` of the score map, where
       :math:`H \times W` is the unpadded image size, and resize bilinearly to ``output_size``. The
       score map is :math:`96^2` and :math:`H, W \ge 96`, so the crop keeps everything: **the
       padding is not cut back out** but stretched into the output together with the image.

    ``mode="resize"`` resizes the image straight to ``input_size`` squared and the scores straight
    to ``output_size``: no padding, no stretching. The two agree exactly when :math:`H` and
    :math:`W` are multiples of :math:`d`. Otherwise, with :math:`p < d` padded columns, the
    official output column at relative position :math:`u \in [0, 1]` shows canvas position
    :math:`u (W + p)`: the image is stretched by :math:`(W + p)/W` towards the top-left, and its
    last :math:`p/(W + p)` shows the scores of the padding (likewise for the rows).

    Shapes and ``activation`` as in :func:`sliding_window_inference` (``image`` (3, H, W) or
    (B, 3, H, W), 0-255 values; result ``(B, T, *output_size)`` or ``(T, *output_size)``).
    """
    input_size = _checks.integer(input_size, "input_size")
    _check_activation(activation)
    check_whole_image_mode(mode)
    batch, added = _image_batch(image)
    height, width = batch.shape[-2:]
    size = (height, width) if output_size is None else _size_pair(output_size, "output_size")
    canvas = batch if mode == "resize" else pad_to_multiple(batch, size_divisibility, pad_value)
    view = _bilinear(canvas, (input_size, input_size))
    logits = model(view, classes)
    if not _is_logits(logits, view.shape[0]):
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ValueError(
            f"model output must be a tensor of shape (N, T, h, w) with N = {view.shape[0]}, "
            f"got {shape}"
        )
    scores = _activate(_float(logits), activation)
    if mode == "official":
        scores = scores[..., :height, :width]  # sem_seg_postprocess: a no-op for a 96² map
    out = _bilinear(scores, tuple(size))
    return out[0] if added else out


# ----------------------------------------------------------------------------
# class truncation (> 256 classes)
# ----------------------------------------------------------------------------
def select_classes(cost: torch.Tensor, max_classes: int = 256) -> Optional[torch.Tensor]:
    r"""The ``max_classes`` classes with the highest cost anywhere in the image; None if all fit.

    CAT-Seg's class-aggregation transformer works on a fixed length ``pad_len = 256``. With more
    classes (ADE-847, PC-459) it keeps, per image, the classes with the largest
    :math:`\max_{p,h,w} \text{cost}_{p,t,h,w}` (the initial CLIP cosine similarity).

    A thin wrapper of :func:`hyro_edu.segmentation.catseg.select_classes` (the one implementation,
    which the decoder uses) that also takes a cost without the prompt axis and returns None when
    nothing is truncated.

    Args:
        cost: (B, T, H, W) or (B, P, T, H, W) (P prompt templates, as in CAT-Seg), floating point.
        max_classes: the truncation length (CAT-Seg: 256).

    Returns:
        None if ``T <= max_classes``; otherwise a LongTensor (B, max_classes) of kept class
        indices in ascending order (the class aggregation is permutation-equivariant, so only
        the set matters).
    """
    max_classes = _checks.integer(max_classes, "max_classes")
    if not isinstance(cost, torch.Tensor) or cost.dim() not in (4, 5):
        raise ValueError("cost must be a tensor of shape (B, T, H, W) or (B, P, T, H, W)")
    if cost.dim() == 4:
        cost = cost.unsqueeze(1)  # one prompt: (B, 1, T, H, W)
    if cost.shape[2] <= max_classes:
        return None
    return _catseg.select_classes(cost, max_classes)


def gather_classes(x: torch.Tensor, indices: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """Keep the classes ``indices`` (B, K) along axis ``dim`` of ``x`` (batch first)."""
    tensors = isinstance(x, torch.Tensor) and isinstance(indices, torch.Tensor)
    if not tensors or indices.dim() != 2:
        raise ValueError("x must be a tensor and indices a LongTensor of shape (B, K)")
    dim = dim % x.dim()
    if dim == 0 or indices.shape[0] != x.shape[0]:
        raise ValueError(
            f"dim must be a non-batch axis and indices must have B = {x.shape[0]} rows"
        )
    view = [1] * x.dim()
    view[0], view[dim] = indices.shape
    target = list(x.shape)
    target[dim] = indices.shape[1]
    return x.gather(dim, indices.reshape(view).expand(target))


def scatter_classes(
    logits: torch.Tensor,
    indices: torch.Tensor,
    num_classes: int,
    fill_value: float = _catseg.DROPPED_CLASS_LOGIT,
) -> torch.Tensor:
    """Put the kept classes' logits back among all ``num_classes``; the rest get ``fill_value``.

    ``logits`` (B, K, H, W) for the classes ``indices`` (B, K) -> (B, num_classes, H, W); CAT-Seg
    fills dropped classes with -100 (sigmoid about 4e-44; the decoder's
    :data:`~hyro_edu.segmentation.catseg.DROPPED_CLASS_LOGIT`), so they never win the arg-max.
    """
    num_classes = _checks.integer(num_classes, "num_classes")
    is_4d = isinstance(logits, torch.Tensor) and logits.dim() == 4
    if not is_4d or indices.shape != logits.shape[:2]:
        raise ValueError("logits must have shape (B, K, H, W) and indices (B, K)")
    if int(indices.max()) >= num_classes or int(indices.min()) < 0:
        raise ValueError(f"indices must lie in [0, {num_classes - 1}]")
    b, _, h, w = logits.shape
    out = logits.new_full((b, num_classes, h, w), fill_value)
    return out.scatter(1, indices[:, :, None, None].expand(-1, -1, h, w), logits)
