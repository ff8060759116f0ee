r"""The mIoU of CAT-Seg's benchmarks: :class:`MeanIoU`, PAS-20b's :func:`collapse_background`, and the loop.

.. math::
    \mathrm{mIoU} = \frac{1}{|C|}\sum_{c \in C} \frac{TP_c}{TP_c + FP_c + FN_c}

over one confusion matrix accumulated on the whole dataset (steps 3-4 of
:mod:`hyro_edu.segmentation.evaluation`); :func:`evaluate` runs the protocol image by image with
the views of :mod:`hyro_edu.segmentation.evaluation.inference`.  Sources: :cite:`cho2024catseg`
and the released code (CAT-Seg repository, ``train_net.py``, ``VOCbEvaluator``); detectron2
:cite:`wu2019detectron2` (``evaluation/sem_seg_evaluation.py``).
"""
from __future__ import annotations

import math
from numbers import Integral
from typing import Any, Optional

import torch

from hyro_edu.core import checks as _checks
from hyro_edu.core.distributed import all_reduce, shard
from hyro_edu.segmentation.evaluation.inference import (
    Model,
    check_whole_image_mode,
    resize_shortest_edge,
    sliding_window_inference,
    whole_image_inference,
)

__all__ = ["MeanIoU", "collapse_background", "evaluate"]

#: How :class:`MeanIoU` chooses the classes it averages over (see the class docstring).
MIOU_AVERAGES = ("gt_present", "union_present")


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

    Several processes (``distributed=True``, the default, and an initialised
    ``torch.distributed`` process group): each process updates with its own share of the images
    and :meth:`hyro_edu.segmentation.evaluation.metric.MeanIoU.compute` (which every process must
    call) sums the confusion matrices of all processes first
    (:func:`hyro_edu.core.distributed.all_reduce`), so every process gets the mIoU of the whole
    dataset.  In a plain process nothing changes.
    """

    def __init__(
        self,
        num_classes: int,
        ignore_index: Optional[int] = 255,
        device=None,
        *,
        average: str = "gt_present",
        distributed: bool = True,
    ):
        self.distributed = bool(distributed)
        self.num_classes = _checks.integer(num_classes, "num_classes")
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

    def total_confusion(self) -> torch.Tensor:
        """The confusion matrix summed over the process group (``distributed``), or this process's."""
        return all_reduce(self.confusion) if self.distributed else self.confusion

    def iou(self, confusion: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Per-class IoU (float64) of ``confusion`` (default: this process's matrix); NaN for the
        classes left out of the mean (see ``average``)."""
        m = (self.confusion if confusion is None else confusion).double()
        tp = m.diagonal()
        in_gt = m.sum(1)
        union = in_gt + m.sum(0) - tp
        valid = (in_gt > 0) if self.average == "gt_present" else (union > 0)
        return torch.where(valid, tp / union.clamp_min(1), torch.full_like(tp, math.nan))

    def compute(self) -> dict:
        """``{"miou", "iou", "pixel_accuracy", "average"}``; mIoU and accuracy lie in [0, 1] (over
        every process's images: :meth:`hyro_edu.segmentation.evaluation.metric.MeanIoU.total_confusion`)."""
        confusion = self.total_confusion()
        iou = self.iou(confusion)
        valid = ~torch.isnan(iou)
        total = int(confusion.sum())
        correct = float(confusion.diagonal().sum())
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
    num_foreground = _checks.integer(num_foreground, "num_foreground")
    if not isinstance(pred, torch.Tensor) or pred.is_floating_point():
        raise ValueError("pred must be an integer tensor of class indices")
    return torch.where(pred >= num_foreground, torch.full_like(pred, num_foreground), pred)


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
    (shortest edge 640), scored at its original size with :func:`~hyro_edu.segmentation.evaluation.inference.sliding_window_inference` (the
    final evaluation, ``eval.sh``) or, if ``sliding_window`` is False, with
    :func:`~hyro_edu.segmentation.evaluation.inference.whole_image_inference` in ``whole_image_mode`` (default ``"official"``: the in-training
    validation of the official code), and its arg-max (collapsed for PAS-20b) is accumulated in
    :class:`MeanIoU` with ``average`` (default ``"gt_present"``, detectron2 main as the official
    requirements install it; ``"union_present"`` for detectron2 v0.6).

    Returns ``MeanIoU.compute()`` plus ``"num_images"``.  In each of several processes (an
    initialised process group) it scores every ``W``-th image (:func:`hyro_edu.core.distributed.shard`)
    and all of them get the mIoU of the ``n`` images; every process must call it.
    """
    if limit is not None:
        limit = _checks.integer(limit, "limit")
    check_whole_image_mode(whole_image_mode)
    classes = dataset.eval_class_names if classes is None else classes
    metric = MeanIoU(dataset.num_classes, dataset.ignore_index, device=device, average=average)
    collapse_at = getattr(dataset, "collapse_background_at", None)
    n = len(dataset) if limit is None else min(limit, len(dataset))
    indices = shard(n)  # all of them in one process; every W-th image in each of W processes
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
