r"""The evaluation protocol of the open-vocabulary segmentation benchmarks, as CAT-Seg runs it.

HyperCLIP, HyRo and H-CLIP reuse CAT-Seg's evaluation unchanged (``eval.sh``). Per image:

1. the test mapper resizes the shortest edge to 640 (longest edge at most 2560):
   :func:`resize_shortest_edge`;
2. :func:`sliding_window_inference` resizes that image to :math:`640 \times 640` (aspect ratio
   ignored), cuts four :math:`384 \times 384` crops with stride
   :math:`\lfloor 384\,(1 - 0.333) \rfloor = 256` (overlap about 1/3), adds one global view (the
   image resized to :math:`384^2`), runs the model on the five views, upsamples every output to
   :math:`384^2`, applies the sigmoid, folds the crops back (dividing by how many crops cover each
   pixel), averages the folded map with the global map upsampled to :math:`640^2`, and resizes the
   result to the original image size;
3. the prediction is the arg-max over classes; PAS-20b collapses every prediction :math:`\ge 20`
   into the background index 20 (:func:`collapse_background`);
4. the confusion matrix is accumulated over the whole dataset and
   :math:`\mathrm{mIoU} = \frac{1}{|C|}\sum_{c \in C} \frac{TP_c}{TP_c + FP_c + FN_c}`, where
   :math:`C` is the set of classes that occur in the **ground truth** (:class:`MeanIoU` with
   ``average="gt_present"``, the default).

Which classes enter the mean depends on the detectron2 version. CAT-Seg's, HyperCLIP's and HyRo's
``requirements.txt`` install detectron2 from its git main branch, whose ``SemSegEvaluator`` has,
since commit ``f3c1bc19`` (2022-07-06, "Fix semantic errors in code for calculating IoU
metrics"), averaged over the classes present in the ground truth. The v0.6 release (November
2021) averaged over the classes present in the ground truth *or* the predictions; a class that is
only ever predicted then adds an IoU of 0. ``average="union_present"`` reproduces v0.6 (and
torchmetrics' ``MulticlassJaccardIndex(average="macro")``).

The in-training validation of the official code uses no sliding window (CAT-Seg issue #35):
:func:`whole_image_inference` with ``mode="official"`` reproduces that path, padding included.

Inside the CAT-Seg decoder, more than 256 classes (ADE-847, PC-459) are truncated to the 256 with
the highest cost anywhere in the image; the dropped classes get logit :math:`-100`
(:func:`select_classes`, :func:`gather_classes`, :func:`scatter_classes`).

The model is any callable ``model(images, classes) -> logits`` with ``images`` of shape
``(N, 3, k, k)`` (float, unnormalised 0-255 pixel values, as CAT-Seg's sliding window passes them;
the model normalises) and logits of shape ``(N, T, h, w)`` for ``T`` classes at any resolution
``h × w``. ``classes`` is passed through unchanged (class names, prompts or indices).

Reference: CAT-Seg (Cho et al., CVPR 2024), official code ``cat_seg/cat_seg_model.py``
(``forward`` and ``inference_sliding_window``), ``cat_seg/modeling/transformer/model.py``
(``pad_len``) and ``train_net.py`` (``VOCbEvaluator``); detectron2's
``evaluation/sem_seg_evaluation.py``, ``structures/image_list.py`` and
``modeling/postprocessing.py`` (``sem_seg_postprocess``).
"""
from __future__ import annotations

import math
from numbers import Integral, Real
from typing import Any, Callable, Optional, Sequence

import torch
import torch.nn.functional as F

__all__ = [
    "resize_shortest_edge",
    "sliding_window_inference",
    "whole_image_inference",
    "pad_to_multiple",
    "WHOLE_IMAGE_MODES",
    "CLIP_PIXEL_MEAN",
    "OFFICIAL_SIZE_DIVISIBILITY",
    "MeanIoU",
    "MIOU_AVERAGES",
    "collapse_background",
    "select_classes",
    "gather_classes",
    "scatter_classes",
    "evaluate",
]

Model = Callable[[torch.Tensor, Any], torch.Tensor]

#: How :class:`MeanIoU` chooses the classes it averages over (see the class docstring).
MIOU_AVERAGES = ("gt_present", "union_present")
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
def _positive_int(value, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _size_pair(value, name: str) -> tuple[int, int]:
    if isinstance(value, Integral) and not isinstance(value, bool):
        value = (value, value)
    try:
        h, w = value
    except (TypeError, ValueError):
        raise ValueError(
            f"{name} must be an integer >= 1 or a pair (height, width) of them, got {value!r}"
        ) from None
    return _positive_int(h, f"{name}[0]"), _positive_int(w, f"{name}[1]")


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
    short_edge = _positive_int(short_edge, "short_edge")
    max_size = _positive_int(max_size, "max_size")
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
        Scores of shape (B, T, *output_size), or (T, *output_size) for an unbatched ``image``.
    """
    kernel = _positive_int(kernel, "kernel")
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


def _check_mode(mode) -> None:
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
    size_divisibility = _positive_int(size_divisibility, "size_divisibility")
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
    (B, 3, H, W), 0-255 values; result (B, T, *output_size) or (T, *output_size)).
    """
    input_size = _positive_int(input_size, "input_size")
    _check_activation(activation)
    _check_mode(mode)
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
# the metric
# ----------------------------------------------------------------------------
class MeanIoU:
    r"""Mean intersection over union, accumulated over a dataset in one confusion matrix.

    .. math::
        \mathrm{IoU}_c = \frac{M_{cc}}{\sum_j M_{cj} + \sum_i M_{ic} - M_{cc}}, \qquad
        \mathrm{mIoU} = \frac{1}{|C|} \sum_{c \in C} \mathrm{IoU}_c

    where :math:`M_{ij}` counts pixels of ground-truth class :math:`i` predicted as :math:`j`
    (pixels whose label is ``ignore_index`` are skipped), and :math:`C` depends on ``average``:

    * ``"gt_present"`` (default): :math:`C = \{c : \sum_j M_{cj} > 0\}`, the classes that occur in
      the ground truth. This is detectron2's ``SemSegEvaluator`` on its main branch since commit
      ``f3c1bc19`` (2022-07-06), the version that CAT-Seg's, HyperCLIP's and HyRo's
      ``requirements.txt`` install (``git+https://github.com/facebookresearch/detectron2.git``),
      so it is the average behind their published numbers. A class that is predicted but absent
      from the ground truth changes the IoU of the classes it is confused with, not the
      number of terms. Its per-class IoU is NaN.
    * ``"union_present"``: :math:`C = \{c : \sum_j M_{cj} + \sum_i M_{ic} > 0\}`, the classes in
      the ground truth *or* the predictions; every class that is only predicted adds a term 0.
      This is detectron2 v0.6 (November 2021) and torchmetrics'
      ``MulticlassJaccardIndex(average="macro")``.

    Properties (checked in the tests): ``"gt_present"`` :math:`\ge` ``"union_present"``, with
    equality when every predicted class occurs in the ground truth; accumulating batch by batch
    gives exactly the one-shot result on the concatenated data (integer counts).

    ``update(pred, target)``: ``pred`` class indices (any shape) or scores with the class axis at
    ``dim=1`` (one more dimension than ``target``); ``target`` labels in ``[0, num_classes)`` or
    ``ignore_index``.
    """

    def __init__(
        self,
        num_classes: int,
        ignore_index: Optional[int] = 255,
        device=None,
        *,
        average: str = "gt_present",
    ):
        self.num_classes = _positive_int(num_classes, "num_classes")
        if ignore_index is not None:
            if isinstance(ignore_index, bool) or not isinstance(ignore_index, Integral):
                raise ValueError(f"ignore_index must be an integer or None, got {ignore_index!r}")
            if 0 <= ignore_index < num_classes:
                raise ValueError(
                    f"ignore_index must lie outside the class range [0, {num_classes - 1}], "
                    f"got {ignore_index}"
                )
        if average not in MIOU_AVERAGES:
            raise ValueError(
                "average must be 'gt_present' (detectron2 main, the official numbers) or "
                f"'union_present' (detectron2 v0.6, torchmetrics macro), got {average!r}"
            )
        self.ignore_index = ignore_index
        self.average = average
        self.confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)

    def reset(self) -> None:
        """Forget everything accumulated so far."""
        self.confusion.zero_()

    @torch.no_grad()
    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Add one batch (any number of images) to the confusion matrix."""
        if not isinstance(pred, torch.Tensor) or not isinstance(target, torch.Tensor):
            raise ValueError("pred and target must be torch.Tensors")
        if pred.dim() == target.dim() + 1:
            if pred.shape[1] != self.num_classes:
                raise ValueError(
                    f"pred scores must have num_classes = {self.num_classes} channels at dim=1, "
                    f"got {pred.shape[1]}"
                )
            pred = pred.argmax(dim=1)
        if pred.shape != target.shape:
            raise ValueError(
                "pred and target must have the same shape, "
                f"got {tuple(pred.shape)} and {tuple(target.shape)}"
            )
        if pred.is_floating_point() or target.is_floating_point():
            raise ValueError("pred (class indices) and target (labels) must be integer tensors")
        pred = pred.reshape(-1).to(self.confusion.device, torch.int64)
        target = target.reshape(-1).to(self.confusion.device, torch.int64)
        if self.ignore_index is not None:
            keep = target != self.ignore_index
            pred, target = pred[keep], target[keep]
        n = self.num_classes
        if target.numel() and (int(target.min()) < 0 or int(target.max()) >= n):
            bad = target[(target < 0) | (target >= n)].unique()[:5].tolist()
            raise ValueError(
                f"target labels must be in [0, {n - 1}] or ignore_index={self.ignore_index}, "
                f"got {bad}"
            )
        if pred.numel() and (int(pred.min()) < 0 or int(pred.max()) >= n):
            bad = pred[(pred < 0) | (pred >= n)].unique()[:5].tolist()
            raise ValueError(f"pred class indices must be in [0, {n - 1}], got {bad}")
        self.confusion += torch.bincount(target * n + pred, minlength=n * n).reshape(n, n)

    def iou(self) -> torch.Tensor:
        """Per-class IoU (float64); NaN for the classes left out of the mean (see ``average``)."""
        m = self.confusion.double()
        tp = m.diagonal()
        in_gt = m.sum(1)
        union = in_gt + m.sum(0) - tp
        valid = (in_gt > 0) if self.average == "gt_present" else (union > 0)
        return torch.where(valid, tp / union.clamp_min(1), torch.full_like(tp, math.nan))

    def compute(self) -> dict:
        """``{"miou", "iou", "pixel_accuracy", "average"}``; mIoU and accuracy lie in [0, 1]."""
        iou = self.iou()
        valid = ~torch.isnan(iou)
        total = int(self.confusion.sum())
        correct = float(self.confusion.diagonal().sum())
        return {
            "miou": float(iou[valid].mean()) if bool(valid.any()) else math.nan,
            "iou": iou,
            "pixel_accuracy": correct / total if total else math.nan,
            "average": self.average,
        }


def collapse_background(pred: torch.Tensor, num_foreground: int = 20) -> torch.Tensor:
    """PAS-20b: every prediction ``>= num_foreground`` becomes the background ``num_foreground``.

    The PAS-20b vocabulary has 59 names (the 20 VOC classes, then 39 further PASCAL-Context classes
    standing for "background"); the labels have 21 classes (background = 20). CAT-Seg's
    ``VOCbEvaluator`` maps predictions >= 20 to 20 before counting. Idempotent; indices below
    ``num_foreground`` are unchanged.
    """
    num_foreground = _positive_int(num_foreground, "num_foreground")
    if not isinstance(pred, torch.Tensor) or pred.is_floating_point():
        raise ValueError("pred must be an integer tensor of class indices")
    return torch.where(pred >= num_foreground, torch.full_like(pred, num_foreground), pred)


# ----------------------------------------------------------------------------
# class truncation (> 256 classes)
# ----------------------------------------------------------------------------
def select_classes(cost: torch.Tensor, max_classes: int = 256) -> Optional[torch.Tensor]:
    r"""The ``max_classes`` classes with the highest cost anywhere in the image; None if all fit.

    CAT-Seg's class-aggregation transformer works on a fixed length ``pad_len = 256``. With more
    classes (ADE-847, PC-459) it keeps, per image, the classes with the largest
    :math:`\max_{p,h,w} \text{cost}_{p,t,h,w}` (the initial CLIP cosine similarity).

    Args:
        cost: (B, T, H, W) or (B, P, T, H, W) (P prompt templates, as in CAT-Seg).
        max_classes: the truncation length (CAT-Seg: 256).

    Returns:
        None if ``T <= max_classes``; otherwise a LongTensor (B, max_classes) of kept class
        indices in ascending order (the class aggregation is permutation-equivariant, so only
        the set matters).
    """
    max_classes = _positive_int(max_classes, "max_classes")
    if not isinstance(cost, torch.Tensor) or cost.dim() not in (4, 5):
        raise ValueError("cost must be a tensor of shape (B, T, H, W) or (B, P, T, H, W)")
    class_dim = 1 if cost.dim() == 4 else 2
    num_classes = cost.shape[class_dim]
    if num_classes <= max_classes:
        return None
    per_class = cost.movedim(class_dim, 1).flatten(2).amax(dim=2)  # (B, T)
    return per_class.topk(max_classes, dim=1).indices.sort(dim=1).values


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
    logits: torch.Tensor, indices: torch.Tensor, num_classes: int, fill_value: float = -100.0
) -> torch.Tensor:
    """Put the kept classes' logits back among all ``num_classes``; the rest get ``fill_value``.

    ``logits`` (B, K, H, W) for the classes ``indices`` (B, K) -> (B, num_classes, H, W); CAT-Seg
    fills dropped classes with -100 (sigmoid about 4e-44), so they never win the arg-max.
    """
    num_classes = _positive_int(num_classes, "num_classes")
    is_4d = isinstance(logits, torch.Tensor) and logits.dim() == 4
    if not is_4d or indices.shape != logits.shape[:2]:
        raise ValueError("logits must have shape (B, K, H, W) and indices (B, K)")
    if int(indices.max()) >= num_classes or int(indices.min()) < 0:
        raise ValueError(f"indices must lie in [0, {num_classes - 1}]")
    b, _, h, w = logits.shape
    out = logits.new_full((b, num_classes, h, w), fill_value)
    return out.scatter(1, indices[:, :, None, None].expand(-1, -1, h, w), logits)


# ----------------------------------------------------------------------------
# the loop
# ----------------------------------------------------------------------------
@torch.no_grad()
def evaluate(
    model: Model,
    dataset,
    *,
    classes: Any = None,
    sliding_window: bool = True,
    device=None,
    limit: Optional[int] = None,
    progress: bool = False,
    average: str = "gt_present",
    whole_image_mode: str = "official",
) -> dict:
    """mIoU of ``model`` on a benchmark with the official protocol, image by image.

    ``dataset`` is a :class:`hyro_edu.data.benchmarks.SegmentationBenchmark` (or anything with
    samples ``{"image": (3, H, W) uint8, "label": (H, W)}`` and the attributes ``num_classes``,
    ``ignore_index``, ``eval_class_names`` and ``collapse_background_at``). ``classes`` defaults
    to ``dataset.eval_class_names`` and is passed to ``model`` unchanged. Each image is resized
    (shortest edge 640), scored at its original size with :func:`sliding_window_inference` (the
    final evaluation, ``eval.sh``) or, if ``sliding_window`` is False, with
    :func:`whole_image_inference` in ``whole_image_mode`` (default ``"official"``: the in-training
    validation of the official code), and its arg-max (collapsed for PAS-20b) is accumulated in
    :class:`MeanIoU` with ``average`` (default ``"gt_present"``, detectron2 main as the official
    requirements install it; ``"union_present"`` for detectron2 v0.6).

    Returns ``MeanIoU.compute()`` plus ``"num_images"``.
    """
    if limit is not None:
        limit = _positive_int(limit, "limit")
    _check_mode(whole_image_mode)
    classes = dataset.eval_class_names if classes is None else classes
    metric = MeanIoU(dataset.num_classes, dataset.ignore_index, device=device, average=average)
    collapse_at = getattr(dataset, "collapse_background_at", None)
    n = len(dataset) if limit is None else min(limit, len(dataset))
    indices = range(n)
    if progress:
        try:
            from tqdm.auto import tqdm

            indices = tqdm(indices, desc="evaluating", unit="img")
        except ImportError:  # progress is optional
            pass
    for i in indices:
        sample = dataset[i]
        image, label = sample["image"].to(device), sample["label"].to(device)
        height, width = label.shape
        resized = resize_shortest_edge(image.float())
        if sliding_window:
            scores = sliding_window_inference(model, resized, classes, output_size=(height, width))
        else:
            scores = whole_image_inference(model, resized, classes, output_size=(height, width),
                                           mode=whole_image_mode)
        pred = scores.argmax(dim=0)
        if collapse_at is not None:
            pred = collapse_background(pred, collapse_at)
        metric.update(pred, label)
    result = metric.compute()
    result["num_images"] = n
    return result
