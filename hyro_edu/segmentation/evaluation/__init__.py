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

Layout: :mod:`~hyro_edu.segmentation.evaluation.inference` computes the class scores of one
image (steps 1-2, and the class truncation); :mod:`~hyro_edu.segmentation.evaluation.metric`
turns them into the mIoU (steps 3-4) and runs the loop (:func:`evaluate`).  Every name is
importable from here.

Reference: CAT-Seg :cite:`cho2024catseg`, the released code (CAT-Seg repository,
``cat_seg/cat_seg_model.py`` (``forward`` and ``inference_sliding_window``),
``cat_seg/modeling/transformer/model.py`` (``pad_len``) and ``train_net.py`` (``VOCbEvaluator``));
detectron2 :cite:`wu2019detectron2`, ``evaluation/sem_seg_evaluation.py``,
``structures/image_list.py`` and ``modeling/postprocessing.py`` (``sem_seg_postprocess``).
"""
from __future__ import annotations

from hyro_edu.segmentation.evaluation.inference import (
    CLIP_PIXEL_MEAN,
    OFFICIAL_SIZE_DIVISIBILITY,
    WHOLE_IMAGE_MODES,
    gather_classes,
    pad_to_multiple,
    resize_shortest_edge,
    scatter_classes,
    select_classes,
    sliding_window_inference,
    whole_image_inference,
)
from hyro_edu.segmentation.evaluation.metric import MIOU_AVERAGES, MeanIoU, collapse_background, evaluate

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
