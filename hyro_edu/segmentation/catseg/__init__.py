r"""The CAT-Seg cost-aggregation decoder, as CAT-Seg's official code builds it.

.. math::
    C_{b,p,t,h,w} = \frac{\langle E^V_{b,:,h,w},\, E^L_{b,t,p,:}\rangle}
                         {\|E^V_{b,:,h,w}\|\,\|E^L_{b,t,p,:}\|}
    \qquad\text{(the cosine cost volume)},

then, per class ``t``: embed the cost (``Conv2d(P → hidden, 7×7)``), aggregate it ``num_layers``
times over space (two Swin blocks with shifted windows, guided by the dense image features) and
over classes (a linear-attention transformer *without positional encoding*, guided by the text
embeddings), and upsample it twice (×2, ×2), each time concatenating guidance from an
intermediate CLIP layer, to one logit per class and pixel at 4× the feature grid.

HyRo :cite:`truong2026hyro`, HyperCLIP :cite:`peng2025hyperclip` and H-CLIP :cite:`peng2025hclip`
all keep this decoder unchanged; they differ only in how CLIP's attention weights are
re-parametrised (the released HyperCLIP and HyRo code carries CAT-Seg's
``cat_seg/modeling/transformer/model.py`` over unchanged; HyRo's description of the decoder,
:cite:`truong2026hyro` Sec. "Cost Aggregation Decoder": "Spatial Aggregation (Swin blocks with
shifted windows) and Class Aggregation (a transformer without positional encoding) ... a
lightweight upsampling head progressively blends intermediate CLIP layers (e.g. layers 4 and 8 of
ViT-B/16) to reach a 96×96 resolution").

Shapes for ViT-B/16 at 384×384 (preset ``"vit_b16"``):

=============================  ========================  ==========================================
input                          shape                     what it is
=============================  ========================  ==========================================
``image_features``             ``(B, 512, 24, 24)``      CLIP's dense last layer, projected (D=512)
``text_features``              ``(B or 1, T, P, 512)``   class embeddings, ``P`` prompt templates
``shallow``                    ``(B, 768, 24, 24)``      output of vision block index 3 ("layer 4")
``deep``                       ``(B, 768, 24, 24)``      output of vision block index 7 ("layer 8")
output                         ``(B, T, 96, 96)``        logits
=============================  ========================  ==========================================

Properties (tested in ``tests/test_catseg.py``):

* **permutation equivariance over classes** -- nothing in the decoder knows the order of the
  classes (the class transformer has no positional encoding, everything else acts per class), so
  permuting ``text_features`` along ``T`` permutes the logits the same way;
* **class truncation** -- with ``T > pad_len`` only the ``pad_len`` classes with the largest
  :math:`\max_{p,h,w} C_{b,p,t,h,w}` are decoded, the others get the logit ``-100`` in their
  original positions, and the kept classes get exactly the logits they would get if they were the
  only classes;
* **windows** -- a token never attends across a (shifted) window boundary;
* **linear attention** equals its quadratic form with the kernel ``elu(x) + 1``;
* **size** -- 2,308,961 trainable parameters in the aggregator and 2,359,680 in the two
  transposed convolutions that upsample the intermediate features, for ViT-B/16
  (:data:`REFERENCE_PARAMETER_COUNTS`, :meth:`~hyro_edu.segmentation.catseg.decoder.CATSegDecoder.parameter_groups`).

**Paper versus code (switch ``guidance_order``).**  CAT-Seg's paper :cite:`cho2024catseg` feeds
layer 8 to the 48×48 stage and layer 4 to the 96×96 stage; the official code does the opposite:
vision block index 3 ("layer 4") → ``ConvTranspose2d(768, 256, 2, stride 2)`` → the 48×48 stage,
index 7 ("layer 8") → ``ConvTranspose2d(768, 128, 4, stride 4)`` → the 96×96 stage (the released
code, CAT-Seg repository, ``cat_seg/cat_seg_model.py``: ``layer_indexes``, ``upsample1``,
``upsample2``; CAT-Seg issue #49, where a user reports that the paper's order trains worse).  ``guidance_order="code"``
(default) follows the code, ``"paper"`` the paper.  The transposed convolutions are the same in
both; only which of the two intermediate maps goes through which changes.

**Train versus eval (attributes ``train_pooling``, ``eval_pooling``).**  The class transformer
runs on average-pooled costs: 2×2 in training, 1×1 in the final evaluation (``eval.sh`` sets
``POOLING_SIZES [1,1]``; the validation during training keeps 2×2, CAT-Seg issue #35).  The
module uses ``train_pooling`` in training mode and ``eval_pooling`` in eval mode; set
``decoder.eval_pooling = (2, 2)`` to reproduce the in-training validation.

**Backbones (presets of** :data:`PRESETS` **).**  ``"vit_b16"`` and ``"vit_l14"`` are the official
ViT-B/16 and ViT-L/14@336 decoders (``vitb_384.yaml``, ``vitl_336.yaml`` of CAT-Seg and HyRo): they
differ only in their inputs (joint space 512 / 768, vision width 768 / 1024, guidance blocks
(3, 7) / (7, 15)); both see a 24×24 grid (384 / 16 = 336 / 14).  ``prompt_channels`` ``P`` is the
number of prompt templates per class: the cost volume has ``P`` channels, ``cost_embed`` reads
them, and the text guidance averages the ``P`` unit embeddings.

**Loss (switch** ``loss`` **of** :func:`segmentation_loss` **).**  The official code trains with
per-class BCE over all classes, ignored pixels included as all-negative (:func:`catseg_loss`,
``"bce"``); the HyRo paper states a pixel-wise softmax cross-entropy that ignores label 255
(:func:`pixel_cross_entropy`, ``"ce"``).

Where this implementation chooses (documented, not a change of the maths for CAT-Seg's inputs):

* the text embeddings are L2-normalised per prompt before the text guidance averages them over
  ``P`` (CAT-Seg's text embeddings arrive normalised, so this is the code's result);
* normalisations divide by norms floored at :func:`hyro_edu.core.numerics.norm_floor` and the linear
  attention's denominator is floored at ``finfo.tiny`` (the code adds ``1e-6``; the denominator
  is a sum of ``pad_len × head_dim`` positive terms, far above ``1e-6`` in practice);
* the shifted-window mask sets forbidden scores to ``-inf`` (exactly zero weight; Swin's code
  adds ``-100``, a weight of about ``e^{-100}``);
* as in Swin, a grid no larger than the window (``min(H, W) <= window_size``) is one window and
  the second block does not shift;
* the kept classes of the truncation are returned in ascending index order (the code keeps
  ``topk``'s order; the class transformer is permutation-equivariant, so only the set matters);
* weights use PyTorch's default initialisation; the padding token and padding guidance start at 0.

Layout: :mod:`~hyro_edu.segmentation.catseg.functional` (cost volume, class truncation, linear
attention, windows), :mod:`~hyro_edu.segmentation.catseg.layers` (the ``nn.Module`` layers),
:mod:`~hyro_edu.segmentation.catseg.decoder` (:class:`CATSegDecoder`, :data:`PRESETS`,
:func:`build_catseg_decoder`, :data:`REFERENCE_PARAMETER_COUNTS`, :func:`count_parameters`),
:mod:`~hyro_edu.segmentation.catseg.loss` (the losses).  Every name is importable from here.

References
----------
* :cite:`cho2024catseg` (CAT-Seg), and its released code (CAT-Seg repository,
  ``cat_seg/modeling/transformer/model.py`` and ``cat_seg/cat_seg_model.py``).
* :cite:`liu2021swin` (Swin Transformer): (shifted) window attention and its mask.
* :cite:`katharopoulos2020transformers` (Transformers are RNNs): linear attention, kernel elu(x)+1.
* :cite:`truong2026hyro` (HyRo), Sec. "Cost Aggregation Decoder".
"""
from __future__ import annotations

from hyro_edu.segmentation.catseg.decoder import (
    GUIDANCE_ORDERS,
    PRESETS,
    REFERENCE_PARAMETER_COUNTS,
    CATSegDecoder,
    build_catseg_decoder,
    count_parameters,
)
from hyro_edu.segmentation.catseg.functional import (
    DROPPED_CLASS_LOGIT,
    cost_volume,
    linear_attention,
    select_classes,
    shifted_window_mask,
    window_merge,
    window_partition,
)
from hyro_edu.segmentation.catseg.layers import (
    AggregatorLayer,
    ClassAggregation,
    ClassAttention,
    SpatialAggregation,
    SwinBlock,
    UpBlock,
    WindowAttention,
)
from hyro_edu.segmentation.catseg.loss import LOSSES, catseg_loss, pixel_cross_entropy, segmentation_loss

__all__ = [
    "PRESETS",
    "GUIDANCE_ORDERS",
    "REFERENCE_PARAMETER_COUNTS",
    "DROPPED_CLASS_LOGIT",
    "cost_volume",
    "select_classes",
    "linear_attention",
    "window_partition",
    "window_merge",
    "shifted_window_mask",
    "count_parameters",
    "LOSSES",
    "catseg_loss",
    "pixel_cross_entropy",
    "segmentation_loss",
    "WindowAttention",
    "SwinBlock",
    "SpatialAggregation",
    "ClassAttention",
    "ClassAggregation",
    "AggregatorLayer",
    "UpBlock",
    "CATSegDecoder",
    "build_catseg_decoder",
]
