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

HyRo, HyperCLIP and H-CLIP all keep this decoder unchanged; they differ only in how CLIP's
attention weights are re-parametrised (reference §0; HyRo's description of the decoder:
"Spatial Aggregation (Swin blocks with shifted windows) and Class Aggregation (a transformer
without positional encoding) ... a lightweight upsampling head progressively blends intermediate
CLIP layers (e.g. layers 4 and 8 of ViT-B/16) to reach a 96×96 resolution").

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
  (:data:`REFERENCE_PARAMETER_COUNTS`, :meth:`CATSegDecoder.parameter_groups`).

**Paper versus code (switch ``guidance_order``).**  CAT-Seg's paper feeds layer 8 to the 48×48
stage and layer 4 to the 96×96 stage; the official code does the opposite: vision block index 3
("layer 4") → ``ConvTranspose2d(768, 256, 2, stride 2)`` → the 48×48 stage, index 7 ("layer 8")
→ ``ConvTranspose2d(768, 128, 4, stride 4)`` → the 96×96 stage (reference §4.1, CAT-Seg issue
#49, where a user reports that the paper's order trains worse).  ``guidance_order="code"``
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

References
----------
* Cho et al., *CAT-Seg: Cost Aggregation for Open-Vocabulary Semantic Segmentation* (CVPR 2024),
  official code ``cat_seg/modeling/transformer/model.py`` and ``cat_seg/cat_seg_model.py``, as
  summarised in the project reference ``ovss-hyro-hyperclip-hclip-catseg.md`` §4.1-4.4.
* Liu et al., *Swin Transformer* (ICCV 2021): (shifted) window attention and its mask.
* Katharopoulos et al., *Transformers are RNNs* (ICML 2020): linear attention, kernel elu(x)+1.
* Truong et al., HyRo (CVPR 2026), Sec. "Cost Aggregation Decoder".
"""
from __future__ import annotations

from numbers import Integral
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from hyro_edu.core import checks as _checks
from hyro_edu.core.numerics import norm_floor

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

#: ``"code"``: block index 3 → 48×48 stage, index 7 → 96×96 (official code); ``"paper"``: swapped.
GUIDANCE_ORDERS = ("code", "paper")

#: Trainable parameters of the ViT-B/16 decoder, hand-derived from the official code in the
#: reference (§4.2, item 7): the aggregator, and the two ``ConvTranspose2d`` upsamplers of the
#: intermediate CLIP features (which the official code keeps outside the aggregator).
REFERENCE_PARAMETER_COUNTS = {"aggregator": 2_308_961, "upsampling": 2_359_680}

#: The logit the official code gives to classes dropped by the truncation (sigmoid ≈ 4e-44).
DROPPED_CLASS_LOGIT = -100.0

#: Training losses (:func:`segmentation_loss`): ``"bce"`` is what the CAT-Seg, HyperCLIP and HyRo
#: code trains with (:func:`catseg_loss`); ``"ce"`` is the pixel-wise softmax cross-entropy the
#: HyRo paper states (:func:`pixel_cross_entropy`).
LOSSES = ("bce", "ce")

# The official ViT-B/16 configuration (CAT-Seg's vitb_384.yaml).
_VIT_B16 = dict(
    embed_dim=512,
    vision_width=768,
    prompt_channels=1,
    hidden_dim=128,
    num_heads=4,
    num_layers=2,
    window_size=12,
    mlp_ratio=4,
    pad_len=256,
    train_pooling=(2, 2),
    eval_pooling=(1, 1),
    appearance_guidance_dim=128,
    text_guidance_dim=128,
    decoder_guidance_dims=(256, 128),
    decoder_guidance_proj_dims=(32, 16),
    decoder_dims=(64, 32),
    guidance_order="code",
    intermediate_layers=(3, 7),
)

#: Keyword arguments of :class:`CATSegDecoder` for :func:`build_catseg_decoder`.
PRESETS: dict[str, dict] = {
    "vit_b16": _VIT_B16,
    # The official ViT-L/14@336 configuration (CAT-Seg and HyRo vitl_336.yaml): the same widths
    # as ViT-B/16 except the inputs -- text and appearance guidance from the 768-d joint space,
    # the transposed convolutions from the 1024-wide vision tower, blocks 7 and 15.
    "vit_l14": {
        **_VIT_B16,
        "embed_dim": 768,
        "vision_width": 1024,
        "intermediate_layers": (7, 15),
    },
    # A CPU-sized decoder for the toy world: 64-px images, patch 8 -> an 8x8 grid, 32x32 logits.
    # Window 4 on the 8x8 grid keeps four windows and a real shift (2) in the second Swin block;
    # pad_len 64 holds the toy world's 54 leaf classes plus "background" without truncation.
    "tiny": dict(
        embed_dim=64,
        vision_width=64,
        prompt_channels=1,
        hidden_dim=32,
        num_heads=4,
        num_layers=2,
        window_size=4,
        mlp_ratio=4,
        pad_len=64,
        train_pooling=(2, 2),
        eval_pooling=(1, 1),
        appearance_guidance_dim=32,
        text_guidance_dim=32,
        decoder_guidance_dims=(32, 16),
        decoder_guidance_proj_dims=(8, 4),
        decoder_dims=(16, 8),
        guidance_order="code",
        intermediate_layers=None,
    ),
}


# ----------------------------------------------------------------------------
# validation helpers
# ----------------------------------------------------------------------------
def _int(value, name: str, low: int, high: Optional[int] = None) -> int:
    ok = isinstance(value, Integral) and not isinstance(value, bool)
    if not ok or value < low or (high is not None and value > high):
        allowed = f"an integer >= {low}" if high is None else f"an integer in [{low}, {high}]"
        raise ValueError(f"{name} must be {allowed}, got {value!r}")
    return int(value)


def _ints(values, name: str, length: int, low: int) -> tuple[int, ...]:
    if not isinstance(values, Sequence) or isinstance(values, str) or len(values) != length:
        raise ValueError(f"{name} must be a sequence of {length} integers >= {low}, got {values!r}")
    return tuple(_int(v, f"{name}[{i}]", low) for i, v in enumerate(values))


def _rank(x, name: str, rank: int, layout: str) -> torch.Tensor:
    _checks.tensor(x, name)
    if x.dim() != rank:
        raise ValueError(f"{name} must have {rank} dimensions {layout}, got shape {tuple(x.shape)}")
    return x


def _normalise(x: torch.Tensor, dim: int) -> torch.Tensor:
    # Divide by the norm floored at sqrt(finfo.tiny): a zero feature vector gives a zero cost
    # instead of 0/0; the floor never binds for CLIP features (norms of order 1 to 10).
    return x / torch.linalg.vector_norm(x, dim=dim, keepdim=True).clamp_min(norm_floor(x.dtype))


# ----------------------------------------------------------------------------
# functional pieces
# ----------------------------------------------------------------------------
def cost_volume(image_features: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
    r"""The cosine cost volume :math:`C_{b,p,t,h,w} = \cos(E^V_{b,:,h,w}, E^L_{b,t,p,:})`.

    ``einsum('bdhw,btpd->bpthw')`` over L2-normalised features (reference §4.2, step 1).
    Properties: values in ``[-1, 1]``; invariant under positive rescaling of either input;
    permuting the classes of ``text_features`` permutes axis 2 of the result.

    Shapes: ``image_features (B, D, H, W)``, ``text_features (B or 1, T, P, D)`` ->
    ``(B, P, T, H, W)``.
    """
    _rank(image_features, "image_features", 4, "(B, D, H, W)")
    _rank(text_features, "text_features", 4, "(B or 1, T, P, D)")
    b, d = image_features.shape[:2]
    if text_features.shape[-1] != d:
        raise ValueError(
            f"text_features must have the embedding size D = {d} of image_features in its last "
            f"dimension, got shape {tuple(text_features.shape)}"
        )
    if text_features.shape[0] not in (1, b):
        raise ValueError(f"text_features must have batch size 1 or B = {b}, got {text_features.shape[0]}")
    text = _normalise(text_features, -1).expand(b, -1, -1, -1)
    return _cosine_cost(_normalise(image_features, 1), text)


def _cosine_cost(image_unit: torch.Tensor, text_unit: torch.Tensor) -> torch.Tensor:
    # (B, D, H, W) x (B, T, P, D) unit vectors -> (B, P, T, H, W)
    return torch.einsum("bdhw,btpd->bpthw", image_unit, text_unit)


def select_classes(cost: torch.Tensor, k: int) -> torch.Tensor:
    r"""Indices of the ``k`` classes with the largest :math:`\max_{p,h,w} C_{b,p,t,h,w}`, per image.

    CAT-Seg's class truncation (reference §4.2, step 2), used when ``T > pad_len``.
    Shapes: ``cost (B, P, T, H, W)`` -> LongTensor ``(B, k)``, ascending within each row.
    """
    _rank(cost, "cost", 5, "(B, P, T, H, W)")
    k = _int(k, "k", 1, cost.shape[2])
    best = cost.transpose(1, 2).flatten(2).amax(dim=2)  # (B, T)
    return best.topk(k, dim=1).indices.sort(dim=1).values


def linear_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, multiplicity: Optional[torch.Tensor] = None
) -> torch.Tensor:
    r"""Linear attention with the feature map :math:`\phi(x) = \operatorname{elu}(x) + 1`:

    .. math::
        \mathrm{out}_i = \frac{\phi(q_i)^\top \sum_j m_j\,\phi(k_j)\, v_j^\top}
                              {\phi(q_i)^\top \sum_j m_j\,\phi(k_j)}
                       = \sum_j \frac{m_j\,\phi(q_i)^\top\phi(k_j)}{\sum_{j'} m_{j'}\,\phi(q_i)^\top\phi(k_{j'})}\, v_j ,

    with key multiplicities :math:`m_j` (default 1: plain linear attention).  A key/value pair
    with multiplicity ``m`` gives exactly what ``m`` copies of it give; the class transformer uses
    this for its ``pad_len - T`` identical padding tokens.  The left form costs ``O(L d^2)``
    instead of the ``O(L^2 d)`` of the right (quadratic) form; both are equal (tested).
    Properties: each output is a convex combination of the values (``φ > 0``); permuting the
    sequence permutes the output (no positional information).  The official code divides ``v``
    by ``L`` and multiplies the result back (a float16 guard, the identity in exact arithmetic);
    it is left out here.

    Shapes: ``q (N, L, heads, d)``, ``k (N, S, heads, d)``, ``v (N, S, heads, dv)``,
    ``multiplicity (S,)`` non-negative -> ``(N, L, heads, dv)``.
    Katharopoulos et al. (ICML 2020), Sec. 3.2 and 3.2.1.
    """
    for name, t in (("q", q), ("k", k), ("v", v)):
        _rank(t, name, 4, "(N, L, heads, d)")
    if q.shape[-1] != k.shape[-1] or k.shape[:3] != v.shape[:3] or q.shape[0] != k.shape[0] or q.shape[2] != k.shape[2]:
        raise ValueError(
            "q (N, L, heads, d), k (N, S, heads, d) and v (N, S, heads, dv) must agree in N, heads, S "
            f"and d; got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}"
        )
    qf, kf = F.elu(q) + 1, F.elu(k) + 1
    if multiplicity is not None:
        if multiplicity.shape != (k.shape[1],) or bool((multiplicity < 0).any()):
            raise ValueError(
                f"multiplicity must be a non-negative tensor of shape (S,) = ({k.shape[1]},), "
                f"got {tuple(multiplicity.shape)}"
            )
        kf = kf * multiplicity.to(kf.dtype)[None, :, None, None]
    kv = torch.einsum("nshd,nshe->nhde", kf, v)
    den = torch.einsum("nlhd,nhd->nlh", qf, kf.sum(dim=1))
    # φ > 0, so den > 0 in exact arithmetic; the floor only stops a 0/0 when every φ underflows.
    den = den.clamp_min(torch.finfo(den.dtype).tiny)
    return torch.einsum("nlhd,nhde->nlhe", qf, kv) / den[..., None]


def window_partition(x: torch.Tensor, window: int) -> torch.Tensor:
    """Cut ``x (N, H, W, C)`` into non-overlapping ``window × window`` tiles.

    Returns ``(N · H/window · W/window, window², C)``: image-major, then windows in row-major order,
    then the tokens of a window in row-major order.  :func:`window_merge` is its inverse.
    """
    n, h, w, c = x.shape
    if h % window or w % window:
        raise ValueError(f"window_size {window} must divide the feature grid, got H = {h}, W = {w}")
    x = x.reshape(n, h // window, window, w // window, window, c).transpose(2, 3)
    return x.reshape(-1, window * window, c)


def window_merge(windows: torch.Tensor, window: int, h: int, w: int) -> torch.Tensor:
    """Inverse of :func:`window_partition`: ``(N · nW, window², C)`` -> ``(N, H, W, C)``."""
    c = windows.shape[-1]
    x = windows.reshape(-1, h // window, w // window, window, window, c).transpose(2, 3)
    return x.reshape(-1, h, w, c)


def shifted_window_mask(h: int, w: int, window: int, shift: int, *, device=None) -> torch.Tensor:
    r"""Which tokens of a window of the *rolled* grid may attend to each other.

    The shifted block rolls the grid by ``(-shift, -shift)`` and cuts it into windows; the windows
    at the bottom and right edges then hold tokens from opposite sides of the image.  Label each
    rolled position by the band it came from along each axis, ``[0, H - window)``,
    ``[H - window, H - shift)``, ``[H - shift, H)`` (and the same along ``W``); two tokens may attend
    iff they carry the same label.  In the original (unrolled) coordinates this makes the shifted
    windows ``⌊(y - shift)/window⌋`` (Liu et al. 2021, Sec. 3.2, "efficient batch computation").

    Returns a bool tensor ``(nW, window², window²)`` (``True`` = allowed), ``nW = HW / window²``,
    in the window order of :func:`window_partition`.
    """
    labels = torch.zeros(h, w, dtype=torch.long, device=device)
    bands = ((0, -window), (-window, -shift), (-shift, None))
    for i, (y0, y1) in enumerate(bands):
        for j, (x0, x1) in enumerate(bands):
            labels[slice(y0, y1), slice(x0, x1)] = 3 * i + j
    tiles = window_partition(labels[None, :, :, None], window)[..., 0]  # (nW, window²)
    return tiles[:, :, None] == tiles[:, None, :]


def count_parameters(module: nn.Module, *, depth: int = 1, trainable_only: bool = True) -> dict[str, int]:
    """Number of (trainable) parameters per sub-module, named by the first ``depth`` parts of the names.

    Returns ``{prefix: count, ..., "total": count}`` in registration order; shared parameters are
    counted once; ``total`` equals ``sum(p.numel() for p in module.parameters() if p.requires_grad)``.
    Example: ``count_parameters(decoder)["layers"]`` is the size of all aggregator layers;
    ``depth=2`` splits them into ``layers.0``, ``layers.1``.
    """
    if not isinstance(module, nn.Module):
        raise ValueError(f"module must be a torch.nn.Module, got {type(module).__name__}")
    depth = _int(depth, "depth", 1)
    counts: dict[str, int] = {}
    for name, p in module.named_parameters():
        if trainable_only and not p.requires_grad:
            continue
        key = ".".join(name.split(".")[:depth])
        counts[key] = counts.get(key, 0) + p.numel()
    counts["total"] = sum(counts.values())
    return counts


def _loss_inputs(logits, target, num_classes, ignore_index) -> tuple[torch.Tensor, torch.Tensor]:
    """Checked loss inputs: the logits upsampled to the target size, the mask of valid pixels."""
    _rank(logits, "logits", 4, "(B, T, h, w)")
    if not isinstance(target, torch.Tensor) or target.dim() != 3:
        raise ValueError(f"target must be a tensor of shape (B, H, W), got {getattr(target, 'shape', type(target))}")
    if target.dtype.is_floating_point or target.dtype == torch.bool or target.is_complex():
        raise ValueError(f"target must hold integer class indices, got dtype {target.dtype}")
    if target.shape[0] != logits.shape[0]:
        raise ValueError(f"target must have the batch size B = {logits.shape[0]} of logits, got {target.shape[0]}")
    num_classes = _int(num_classes, "num_classes", 1)
    if num_classes != logits.shape[1]:
        raise ValueError(
            f"num_classes must equal the number of logit channels T = {logits.shape[1]}, got {num_classes}"
        )
    ignore_index = _int(ignore_index, "ignore_index", -(2**62))
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

    ``exclude_ignored=False`` (default, the official code, reference §4.3): :math:`\Omega` is
    *every* pixel, so ignored pixels still push all their logits down and count in the mean.
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

    Shapes and errors as :func:`catseg_loss`.  Reference: HyRo (Truong et al.), "Loss & Training"
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
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
    if loss == "ce":
        return pixel_cross_entropy(logits, target, num_classes, ignore_index)
    return catseg_loss(logits, target, num_classes, ignore_index, exclude_ignored=exclude_ignored)


# ----------------------------------------------------------------------------
# spatial aggregation: Swin blocks with appearance guidance
# ----------------------------------------------------------------------------
class _MLP(nn.Sequential):
    def __init__(self, dim: int, hidden: int, act: type[nn.Module]):
        super().__init__(nn.Linear(dim, hidden), act(), nn.Linear(hidden, dim))


class WindowAttention(nn.Module):
    r"""Multi-head self-attention inside windows; queries and keys see the guidance, values do not.

    .. math::
        q = W_q [x; g],\quad k = W_k [x; g],\quad v = W_v x,\qquad
        \mathrm{out} = W_o\,\mathrm{softmax}\big(q k^\top/\sqrt{d_h} + M\big)\, v,

    with :math:`M = -\infty` where the mask forbids a pair, 0 elsewhere.  No relative position
    bias (the official block has none, reference §4.2).  Shapes: ``x (N·nW, n, dim + guidance_dim)``
    (the guidance, if any, in the last ``guidance_dim`` channels), ``mask (nW, n, n)`` bool or
    ``None`` -> ``(N·nW, n, dim)``.
    """

    def __init__(self, dim: int, guidance_dim: int, num_heads: int):
        super().__init__()
        self.dim, self.guidance_dim, self.num_heads = dim, guidance_dim, num_heads
        self.q = nn.Linear(dim + guidance_dim, dim)
        self.k = nn.Linear(dim + guidance_dim, dim)
        self.v = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        n_win, n, _ = x.shape
        heads = self.num_heads

        def split(t):
            return t.reshape(n_win, n, heads, -1).transpose(1, 2)  # (N·nW, heads, n, d_h)

        q, k, v = split(self.q(x)), split(self.k(x)), split(self.v(x[..., : self.dim]))
        scores = (q * q.shape[-1] ** -0.5) @ k.transpose(-1, -2)
        if mask is not None:
            n_w = mask.shape[0]
            scores = scores.reshape(-1, n_w, heads, n, n)
            scores = scores.masked_fill(~mask[None, :, None], float("-inf")).reshape(n_win, heads, n, n)
        out = scores.softmax(dim=-1) @ v  # every row allows its own token: no all -inf row
        return self.proj(out.transpose(1, 2).reshape(n_win, n, self.dim))


class SwinBlock(nn.Module):
    r"""A pre-LN Swin block with (shifted) window attention guided by appearance features.

    .. math::
        x \leftarrow x + \mathrm{unroll}\big(\mathrm{WA}(\mathrm{roll}([\mathrm{LN}_1(x); g]))\big),\qquad
        x \leftarrow x + \mathrm{MLP}(\mathrm{LN}_2(x)),

    ``WA`` the :class:`WindowAttention` on ``window × window`` tiles, ``roll`` a cyclic shift by
    ``(-shift, -shift)`` (identity for ``shift = 0``) with the :func:`shifted_window_mask`, MLP
    ``dim → mlp_ratio·dim → dim`` with GELU.  Properties: tokens only mix within their (shifted)
    window; every other operation acts per token.  If ``min(H, W) <= window_size`` the whole grid
    is one window and there is no shift (Swin's rule).

    Shapes: ``x (N, H, W, dim)``, ``guidance (N, H, W, guidance_dim)`` (already layer-normed) or
    ``None`` when ``guidance_dim = 0`` -> ``(N, H, W, dim)``.  Reference §4.2, step 5.
    """

    def __init__(self, dim: int, guidance_dim: int, num_heads: int, window_size: int, shift: int, mlp_ratio: int = 4):
        super().__init__()
        self.window_size, self.shift = window_size, shift
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, guidance_dim, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = _MLP(dim, mlp_ratio * dim, nn.GELU)

    def window_and_shift(self, h: int, w: int) -> tuple[int, int]:
        """The window and shift used on an ``h × w`` grid (Swin's rule for small grids)."""
        if min(h, w) <= self.window_size:
            return min(h, w), 0
        return self.window_size, self.shift

    def forward(self, x: torch.Tensor, guidance: Optional[torch.Tensor] = None) -> torch.Tensor:
        _, h, w, _ = x.shape
        window, shift = self.window_and_shift(h, w)
        y = self.norm1(x)
        if guidance is not None:
            y = torch.cat([y, guidance], dim=-1)
        if shift:
            y = torch.roll(y, shifts=(-shift, -shift), dims=(1, 2))
        mask = shifted_window_mask(h, w, window, shift, device=x.device) if shift else None
        y = window_merge(self.attn(window_partition(y, window), mask), window, h, w)
        if shift:
            y = torch.roll(y, shifts=(shift, shift), dims=(1, 2))
        x = x + y
        return x + self.mlp(self.norm2(x))


class SpatialAggregation(nn.Module):
    """Two :class:`SwinBlock` s (shift 0, then ``window_size // 2``) applied to every class separately.

    The appearance guidance is layer-normed once and shared by all classes.  Shapes:
    ``x (B, T, H, W, dim)``, ``guidance (B, H, W, guidance_dim)`` or ``None`` ->
    ``(B, T, H, W, dim)`` (internally a batch of ``B·T`` grids).  Reference §4.2, step 5.
    """

    def __init__(self, dim: int, guidance_dim: int, num_heads: int, window_size: int, mlp_ratio: int = 4):
        super().__init__()
        self.block1 = SwinBlock(dim, guidance_dim, num_heads, window_size, 0, mlp_ratio)
        self.block2 = SwinBlock(dim, guidance_dim, num_heads, window_size, window_size // 2, mlp_ratio)
        self.guidance_norm = nn.LayerNorm(guidance_dim) if guidance_dim > 0 else None

    def forward(self, x: torch.Tensor, guidance: Optional[torch.Tensor] = None) -> torch.Tensor:
        b, t, h, w, c = x.shape
        x = x.reshape(b * t, h, w, c)
        if guidance is not None:
            g = self.guidance_norm(guidance)
            guidance = g[:, None].expand(b, t, h, w, g.shape[-1]).reshape(b * t, h, w, -1)
        x = self.block2(self.block1(x, guidance), guidance)
        return x.reshape(b, t, h, w, c)


# ----------------------------------------------------------------------------
# class aggregation: linear attention over classes with text guidance
# ----------------------------------------------------------------------------
class ClassAttention(nn.Module):
    r"""Multi-head linear attention over the class axis: ``q = W_q[x; g]``, ``k = W_k[x; g]``, ``v = W_v x``.

    No positional encoding and no output projection (as the official code).  ``padding``, if
    given, is ``(token (dim,), guidance (guidance_dim,) or None, count)``: one more key/value pair
    from ``[token; guidance]``, counted ``count`` times (:func:`linear_attention`'s multiplicity),
    which equals appending ``count`` copies of the padding token to the sequence as keys and
    values.  No query is computed for the padding (the official code discards those outputs).
    Shapes: ``x (N, L, dim)``, ``guidance (N, L, guidance_dim)`` or ``None`` -> ``(N, L, dim)``.
    """

    def __init__(self, dim: int, guidance_dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.q = nn.Linear(dim + guidance_dim, dim)
        self.k = nn.Linear(dim + guidance_dim, dim)
        self.v = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, guidance: Optional[torch.Tensor] = None, padding=None) -> torch.Tensor:
        n, length, dim = x.shape
        xg = x if guidance is None else torch.cat([x, guidance], dim=-1)
        q, k, v = self.q(xg), self.k(xg), self.v(x)
        multiplicity = None
        if padding is not None:
            token, pad_guidance, count = padding
            tg = token if pad_guidance is None else torch.cat([token, pad_guidance])
            k = torch.cat([k, self.k(tg).expand(n, 1, dim)], dim=1)
            v = torch.cat([v, self.v(token).expand(n, 1, dim)], dim=1)
            multiplicity = torch.ones(length + 1, dtype=x.dtype, device=x.device)
            multiplicity[-1] = count

        def heads(t):
            return t.reshape(n, t.shape[1], self.num_heads, -1)

        return linear_attention(heads(q), heads(k), heads(v), multiplicity=multiplicity).reshape(n, length, dim)


class ClassAggregation(nn.Module):
    r"""Class aggregation: a pre-LN transformer layer over the classes of every (pooled) pixel.

    .. math::
        \bar x = \mathrm{AvgPool}_{k}(x),\quad
        \bar x \leftarrow \bar x + \mathrm{LinAttn}(\mathrm{LN}_1(\bar x), g),\quad
        \bar x \leftarrow \bar x + \mathrm{MLP}(\mathrm{LN}_2(\bar x)),\quad
        x \leftarrow x + \mathrm{Up}_{\text{bilinear}}(\bar x),

    with the class sequence padded to ``pad_len`` by a learnable token (and the text guidance by a
    learnable guidance vector) when ``T < pad_len``, MLP ``dim → mlp_ratio·dim → dim`` with ReLU,
    and bilinear upsampling with ``align_corners=True``.  Property: permutation-equivariant over
    classes.

    The ``pad_len - T`` padding tokens are identical, and their outputs are discarded, so they
    enter only as one key/value pair of multiplicity ``pad_len - T`` (:class:`ClassAttention`);
    this equals the literal padding of the official code (tested) at a cost linear in ``T``
    instead of ``pad_len``.

    Shapes: ``x (B, T, H, W, dim)``, ``guidance (B, T, guidance_dim)`` or ``None``,
    ``pooling (kh, kw)`` -> ``(B, T, H, W, dim)``.  Reference §4.2, step 5.
    """

    def __init__(self, dim: int, guidance_dim: int, num_heads: int, pad_len: int, mlp_ratio: int = 4):
        super().__init__()
        self.pad_len = pad_len
        self.attention = ClassAttention(dim, guidance_dim, num_heads)
        self.mlp = _MLP(dim, mlp_ratio * dim, nn.ReLU)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.padding_tokens = nn.Parameter(torch.zeros(dim)) if pad_len > 0 else None
        self.padding_guidance = nn.Parameter(torch.zeros(guidance_dim)) if pad_len > 0 and guidance_dim > 0 else None

    def forward(self, x: torch.Tensor, guidance: Optional[torch.Tensor], pooling: tuple[int, int]) -> torch.Tensor:
        b, t, h, w, c = x.shape
        pooled = x.reshape(b * t, h, w, c).permute(0, 3, 1, 2)
        if tuple(pooling) != (1, 1):
            pooled = F.avg_pool2d(pooled, pooling)
        hp, wp = pooled.shape[-2:]
        n = b * hp * wp
        seq = pooled.reshape(b, t, c, hp * wp).permute(0, 3, 1, 2).reshape(n, t, c)  # (B·hp·wp, T, C)
        if guidance is not None:
            guidance = guidance[:, None].expand(b, hp * wp, t, guidance.shape[-1]).reshape(n, t, -1)
        padding = None
        if self.padding_tokens is not None and t < self.pad_len:
            pad_guidance = self.padding_guidance if guidance is not None else None
            padding = (self.norm1(self.padding_tokens), pad_guidance, self.pad_len - t)
        seq = seq + self.attention(self.norm1(seq), guidance, padding)
        seq = seq + self.mlp(self.norm2(seq))
        out = seq.reshape(b, hp, wp, t, c).permute(0, 3, 4, 1, 2).reshape(b * t, c, hp, wp)
        if (hp, wp) != (h, w):
            out = F.interpolate(out, size=(h, w), mode="bilinear", align_corners=True)
        return x + out.reshape(b, t, c, h, w).permute(0, 1, 3, 4, 2)


class AggregatorLayer(nn.Module):
    """One aggregator layer: :class:`SpatialAggregation`, then :class:`ClassAggregation`.

    Shapes: ``x (B, T, H, W, dim)``, ``appearance (B, H, W, g_a)`` or ``None``,
    ``text (B, T, g_t)`` or ``None``, ``pooling (kh, kw)`` -> ``(B, T, H, W, dim)``.
    """

    def __init__(self, dim, appearance_dim, text_dim, num_heads, window_size, pad_len, mlp_ratio=4):
        super().__init__()
        self.spatial = SpatialAggregation(dim, appearance_dim, num_heads, window_size, mlp_ratio)
        self.classes = ClassAggregation(dim, text_dim, num_heads, pad_len, mlp_ratio)

    def forward(self, x, appearance, text, pooling):
        return self.classes(self.spatial(x, appearance), text, pooling)


# ----------------------------------------------------------------------------
# upsampling decoder
# ----------------------------------------------------------------------------
def _group_norm(channels: int) -> nn.GroupNorm:
    # the official DoubleConv uses channels // 16 groups (64 -> 4, 32 -> 2); at least one here
    return nn.GroupNorm(max(1, channels // 16), channels)


class UpBlock(nn.Module):
    r"""One upsampling stage: ``ConvT(in → in - g, 2, stride 2)``, concat guidance, DoubleConv.

    .. math::
        y = \mathrm{DC}\big([\mathrm{ConvT}(x);\ g]\big),\qquad
        \mathrm{DC} = (\mathrm{Conv}_{3\times3}^{\text{no bias}} \to \mathrm{GN} \to \mathrm{ReLU})^{\times 2},

    GroupNorm with ``out // 16`` groups (at least 1).  The guidance ``(B, g, 2h, 2w)`` is shared by
    the ``T`` classes of its image.  Shapes: ``x (B·T, in, h, w)``, ``guidance (B, g, 2h, 2w)`` ->
    ``(B·T, out, 2h, 2w)``.  Reference §4.2, step 6.
    """

    def __init__(self, in_channels: int, guidance_channels: int, out_channels: int):
        super().__init__()
        self.up = nn.ConvTranspose2d(in_channels, in_channels - guidance_channels, kernel_size=2, stride=2)
        self.conv = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
            _group_norm(out_channels),
            nn.ReLU(),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
            _group_norm(out_channels),
            nn.ReLU(),
        )

    def forward(self, x: torch.Tensor, guidance: torch.Tensor) -> torch.Tensor:
        x = self.up(x)
        b = guidance.shape[0]
        t = x.shape[0] // b
        guidance = guidance[:, None].expand(b, t, *guidance.shape[1:]).reshape(b * t, *guidance.shape[1:])
        return self.conv(torch.cat([x, guidance], dim=1))


# ----------------------------------------------------------------------------
# the decoder
# ----------------------------------------------------------------------------
class CATSegDecoder(nn.Module):
    r"""CAT-Seg's cost-aggregation decoder (official code, reference §4.1-4.2).

    .. math::
        C = \cos(E^V, E^L) \;\to\; \mathrm{Conv}_{7\times7}(C) \;\to\;
        [\mathrm{SpatialAgg} \to \mathrm{ClassAgg}]^{\times L} \;\to\;
        \mathrm{Up}_1(\cdot, G_1) \to \mathrm{Up}_2(\cdot, G_2) \to \mathrm{Conv}_{3\times3} .

    Modules (names as in :func:`count_parameters`): ``upsample1`` ``ConvT(C_vis → g_1, 2, s2)`` and
    ``upsample2`` ``ConvT(C_vis → g_2, 4, s4)`` of the intermediate CLIP features (outside the
    aggregator in the official code); ``cost_embed`` ``Conv2d(P → hidden, 7×7, pad 3)`` per class;
    ``appearance_guidance`` ``Conv3×3(D → g_a) + ReLU`` on the dense features;
    ``decoder_guidance`` ``Conv3×3(g_i → g'_i) + ReLU`` after each upsampler; ``text_guidance``
    ``Linear(D → g_t) + ReLU`` on the L2-normalised mean over prompts; ``layers`` the
    :class:`AggregatorLayer` s; ``up1``, ``up2`` the :class:`UpBlock` s; ``head``
    ``Conv3×3(decoder_dims[1] → 1)``.

    Parameters (keyword-only; defaults are the official ViT-B/16 values)
    ----------------------------------------------------------------------
    embed_dim : D, the joint embedding size of ``image_features`` and ``text_features`` (512).
    vision_width : C_vis, the width of the intermediate CLIP features (768).
    prompt_channels : P, the prompt templates per class (1).
    hidden_dim, num_heads, num_layers, mlp_ratio : aggregator width (128), heads (4; must divide
        ``hidden_dim``), layers (2), MLP ratio of both transformers (4).
    window_size : Swin window (12); the second block of each layer shifts by ``window_size // 2``.
    pad_len : the class transformer's sequence length (256); more classes are truncated to the
        ``pad_len`` with the highest cost, fewer are padded.  ``0`` disables both.
    train_pooling, eval_pooling : average-pooling window of the class stage ((2, 2), (1, 1)).
    appearance_guidance_dim, text_guidance_dim : projected guidance widths (128, 128).
    decoder_guidance_dims : output widths of ``upsample1`` and ``upsample2`` ((256, 128)).
    decoder_guidance_proj_dims : their projected widths, concatenated in ``up1``/``up2`` ((32, 16)).
    decoder_dims : output widths of ``up1`` and ``up2`` ((64, 32)).
    guidance_order : ``"code"`` (default) or ``"paper"``; see :attr:`stage_layers`.
    intermediate_layers : informative only: the vision-block indices ``(shallow, deep)`` whose
        outputs the caller passes ((3, 7) for ViT-B/16, (7, 15) for ViT-L/14; ``None`` if unknown).

    Forward: ``image_features (B, D, H, W)``, ``text_features (B or 1, T, P, D)``,
    ``shallow (B, C_vis, H, W)``, ``deep (B, C_vis, H, W)`` -> logits ``(B, T, 4H, 4W)``.
    ``H`` and ``W`` must be multiples of the window (or at most the window) and at least the
    pooling size.  Bad input raises ``ValueError``.
    """

    def __init__(
        self,
        *,
        embed_dim: int = 512,
        vision_width: int = 768,
        prompt_channels: int = 1,
        hidden_dim: int = 128,
        num_heads: int = 4,
        num_layers: int = 2,
        window_size: int = 12,
        mlp_ratio: int = 4,
        pad_len: int = 256,
        train_pooling: Sequence[int] = (2, 2),
        eval_pooling: Sequence[int] = (1, 1),
        appearance_guidance_dim: int = 128,
        text_guidance_dim: int = 128,
        decoder_guidance_dims: Sequence[int] = (256, 128),
        decoder_guidance_proj_dims: Sequence[int] = (32, 16),
        decoder_dims: Sequence[int] = (64, 32),
        guidance_order: str = "code",
        intermediate_layers: Optional[Sequence[int]] = (3, 7),
    ):
        super().__init__()
        self.embed_dim = _int(embed_dim, "embed_dim", 1)
        self.vision_width = _int(vision_width, "vision_width", 1)
        self.prompt_channels = _int(prompt_channels, "prompt_channels", 1)
        self.hidden_dim = _int(hidden_dim, "hidden_dim", 1)
        self.num_heads = _int(num_heads, "num_heads", 1, hidden_dim)
        if hidden_dim % num_heads:
            raise ValueError(f"num_heads must divide hidden_dim = {hidden_dim}, got {num_heads}")
        self.num_layers = _int(num_layers, "num_layers", 1)
        self.window_size = _int(window_size, "window_size", 1)
        self.mlp_ratio = _int(mlp_ratio, "mlp_ratio", 1)
        self.pad_len = _int(pad_len, "pad_len", 0)
        self.train_pooling = _ints(train_pooling, "train_pooling", 2, 1)
        self.eval_pooling = _ints(eval_pooling, "eval_pooling", 2, 1)
        g_a = _int(appearance_guidance_dim, "appearance_guidance_dim", 1)
        g_t = _int(text_guidance_dim, "text_guidance_dim", 1)
        g_up = _ints(decoder_guidance_dims, "decoder_guidance_dims", 2, 1)
        g_dec = _ints(decoder_guidance_proj_dims, "decoder_guidance_proj_dims", 2, 1)
        dec = _ints(decoder_dims, "decoder_dims", 2, 1)
        if g_dec[0] >= hidden_dim or g_dec[1] >= dec[0]:
            raise ValueError(
                "decoder_guidance_proj_dims must be smaller than the width entering each stage "
                f"(hidden_dim = {hidden_dim}, decoder_dims[0] = {dec[0]}), got {g_dec}"
            )
        for i, d in enumerate(dec):
            if d % max(1, d // 16):
                raise ValueError(f"decoder_dims[{i}] must be divisible by its GroupNorm groups {d // 16}, got {d}")
        if guidance_order not in GUIDANCE_ORDERS:
            raise ValueError(f"guidance_order must be one of {GUIDANCE_ORDERS}, got {guidance_order!r}")
        self.guidance_order = guidance_order
        self.intermediate_layers = (
            None if intermediate_layers is None else _ints(intermediate_layers, "intermediate_layers", 2, 0)
        )

        self.upsample1 = nn.ConvTranspose2d(vision_width, g_up[0], kernel_size=2, stride=2)
        self.upsample2 = nn.ConvTranspose2d(vision_width, g_up[1], kernel_size=4, stride=4)
        self.cost_embed = nn.Conv2d(prompt_channels, hidden_dim, kernel_size=7, padding=3)
        self.appearance_guidance = nn.Sequential(nn.Conv2d(embed_dim, g_a, 3, padding=1), nn.ReLU())
        self.decoder_guidance = nn.ModuleList(
            nn.Sequential(nn.Conv2d(g_in, g_out, 3, padding=1), nn.ReLU()) for g_in, g_out in zip(g_up, g_dec)
        )
        self.text_guidance = nn.Sequential(nn.Linear(embed_dim, g_t), nn.ReLU())
        self.layers = nn.ModuleList(
            AggregatorLayer(hidden_dim, g_a, g_t, num_heads, window_size, pad_len, mlp_ratio) for _ in range(num_layers)
        )
        self.up1 = UpBlock(hidden_dim, g_dec[0], dec[0])
        self.up2 = UpBlock(dec[0], g_dec[1], dec[1])
        self.head = nn.Conv2d(dec[1], 1, 3, padding=1)

    # -- introspection --------------------------------------------------------------------------
    @property
    def stage_layers(self) -> tuple:
        """``(source of the 2× stage, source of the 4× stage)``: block indices when known, else names.

        ``"code"``: ``(3, 7)`` for ViT-B/16 (shallow → 2×, deep → 4×); ``"paper"``: ``(7, 3)``.
        """
        names = ("shallow", "deep") if self.guidance_order == "code" else ("deep", "shallow")
        if self.intermediate_layers is None:
            return names
        index = dict(zip(("shallow", "deep"), self.intermediate_layers))
        return tuple(index[n] for n in names)

    def parameter_groups(self) -> dict[str, int]:
        """Trainable parameters split as the reference counts them (:data:`REFERENCE_PARAMETER_COUNTS`).

        ``upsampling``: ``upsample1`` + ``upsample2`` (in the official code they live next to CLIP,
        not in the aggregator); ``aggregator``: everything else; ``total``: both.
        """
        by_module = count_parameters(self)
        up = by_module.get("upsample1", 0) + by_module.get("upsample2", 0)
        return {"aggregator": by_module["total"] - up, "upsampling": up, "total": by_module["total"]}

    @property
    def pooling(self) -> tuple[int, int]:
        """The class-stage pooling in the current mode (``train_pooling`` or ``eval_pooling``)."""
        return self.train_pooling if self.training else self.eval_pooling

    def extra_repr(self) -> str:
        return (
            f"embed_dim={self.embed_dim}, vision_width={self.vision_width}, P={self.prompt_channels}, "
            f"hidden_dim={self.hidden_dim}, heads={self.num_heads}, layers={self.num_layers}, "
            f"window={self.window_size}, pad_len={self.pad_len}, pooling=train {self.train_pooling} / "
            f"eval {self.eval_pooling}, guidance_order={self.guidance_order!r}"
        )

    # -- forward --------------------------------------------------------------------------------
    def _check_inputs(self, image_features, text_features, shallow, deep):
        _rank(image_features, "image_features", 4, "(B, D, H, W)")
        _rank(text_features, "text_features", 4, "(B or 1, T, P, D)")
        _rank(shallow, "shallow", 4, "(B, C_vis, H, W)")
        _rank(deep, "deep", 4, "(B, C_vis, H, W)")
        b, d, h, w = image_features.shape
        if d != self.embed_dim:
            raise ValueError(
                f"image_features must have embed_dim = {self.embed_dim} channels, "
                f"got shape {tuple(image_features.shape)}"
            )
        bt, t, p, dt = text_features.shape
        if dt != self.embed_dim:
            raise ValueError(
                f"text_features must have embed_dim = {self.embed_dim} features in its last dimension, "
                f"got shape {tuple(text_features.shape)}"
            )
        if t < 1:
            raise ValueError(
                f"text_features must hold at least one class (T >= 1), got shape {tuple(text_features.shape)}"
            )
        if p != self.prompt_channels:
            raise ValueError(f"text_features must have P = prompt_channels = {self.prompt_channels} prompts, got {p}")
        if bt not in (1, b):
            raise ValueError(f"text_features must have batch size 1 or B = {b}, got {bt}")
        for name, g in (("shallow", shallow), ("deep", deep)):
            if tuple(g.shape) != (b, self.vision_width, h, w):
                raise ValueError(
                    f"{name} must have shape (B, vision_width, H, W) = {(b, self.vision_width, h, w)}, "
                    f"got {tuple(g.shape)}"
                )
        window = min(h, w) if min(h, w) <= self.window_size else self.window_size
        if h % window or w % window:
            raise ValueError(
                f"window_size = {self.window_size} must divide the feature grid (or be >= its smaller side), "
                f"got H = {h}, W = {w}"
            )
        kh, kw = self.pooling
        if kh > h or kw > w:
            raise ValueError(f"the pooling size {(kh, kw)} must not exceed the feature grid {(h, w)}")

    def forward(
        self, image_features: torch.Tensor, text_features: torch.Tensor, shallow: torch.Tensor, deep: torch.Tensor
    ) -> torch.Tensor:
        """Logits ``(B, T, 4H, 4W)``; see the class docstring for the inputs."""
        self._check_inputs(image_features, text_features, shallow, deep)
        b, _, h, w = image_features.shape
        num_classes = text_features.shape[1]
        text = _normalise(text_features, -1).expand(b, -1, -1, -1)  # (B, T, P, D)
        cost = _cosine_cost(_normalise(image_features, 1), text)  # (B, P, T, H, W), step (1)

        kept = None
        if 0 < self.pad_len < num_classes:  # class truncation (reference §4.2, step 2)
            kept = select_classes(cost, self.pad_len)  # (B, K)
            cost = cost.gather(2, kept[:, None, :, None, None].expand(-1, cost.shape[1], -1, h, w))
            text = text.gather(1, kept[:, :, None, None].expand(-1, -1, *text.shape[2:]))
        t = cost.shape[2]

        # (3) per-class embedding of the cost: (B·T, P, H, W) -> (B, T, H, W, hidden)
        x = self.cost_embed(cost.transpose(1, 2).reshape(b * t, -1, h, w))
        x = x.reshape(b, t, self.hidden_dim, h, w).permute(0, 1, 3, 4, 2)

        # (4) guidance
        appearance = self.appearance_guidance(image_features).permute(0, 2, 3, 1)  # (B, H, W, g_a)
        text_guidance = self.text_guidance(_normalise(text.mean(dim=2), -1))  # (B, T, g_t)
        first, second = (shallow, deep) if self.guidance_order == "code" else (deep, shallow)
        stage1 = self.decoder_guidance[0](self.upsample1(first))  # (B, g'_1, 2H, 2W)
        stage2 = self.decoder_guidance[1](self.upsample2(second))  # (B, g'_2, 4H, 4W)

        # (5) aggregation
        pooling = self.pooling
        for layer in self.layers:
            x = layer(x, appearance, text_guidance, pooling)

        # (6) upsampling decoder, per class
        y = x.permute(0, 1, 4, 2, 3).reshape(b * t, self.hidden_dim, h, w)
        y = self.head(self.up2(self.up1(y, stage1), stage2))
        logits = y.reshape(b, t, 4 * h, 4 * w)
        if kept is None:
            return logits
        out = logits.new_full((b, num_classes, 4 * h, 4 * w), DROPPED_CLASS_LOGIT)
        return out.scatter(1, kept[:, :, None, None].expand(-1, -1, 4 * h, 4 * w), logits)


def build_catseg_decoder(preset: str = "vit_b16", **overrides) -> CATSegDecoder:
    """A :class:`CATSegDecoder` from a named preset of :data:`PRESETS`, with keyword overrides.

    ``"vit_b16"``: the official ViT-B/16 decoder (24×24 grid -> 96×96 logits, 4,668,641 trainable
    parameters).  ``"vit_l14"``: the official ViT-L/14@336 decoder (the same widths, fed by a
    768-d joint space and 1024-wide vision blocks 7 and 15).  ``"tiny"``: a CPU-sized decoder for
    the toy world (8×8 grid -> 32×32 logits; ``embed_dim = vision_width = 64``; override them to
    match your toy CLIP, e.g. ``build_catseg_decoder("tiny", embed_dim=32, vision_width=48)``).
    """
    if preset not in PRESETS:
        raise ValueError(f"preset must be one of {tuple(PRESETS)}, got {preset!r}")
    unknown = set(overrides) - set(PRESETS[preset])
    if unknown:
        raise ValueError(f"overrides must be CATSegDecoder arguments {tuple(PRESETS[preset])}, got {sorted(unknown)}")
    return CATSegDecoder(**{**PRESETS[preset], **overrides})
