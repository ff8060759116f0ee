r"""CAT-Seg's functional pieces: the cost volume, class truncation, linear attention and windows.

.. math::
    C_{b,p,t,h,w} = \cos(E^V_{b,:,h,w}, E^L_{b,t,p,:}),\qquad
    \mathrm{out}_i = \frac{\phi(q_i)^\top \sum_j \phi(k_j) v_j^\top}{\phi(q_i)^\top \sum_j \phi(k_j)} .

Pure functions (no parameters) that the layers of :mod:`hyro_edu.segmentation.catseg.layers` and
:class:`~hyro_edu.segmentation.catseg.decoder.CATSegDecoder` are built from, plus the input checks
and the normalisation they share.  :func:`select_classes` is also the class truncation of the
evaluation protocol (:mod:`hyro_edu.segmentation.evaluation`).  Sources: :cite:`cho2024catseg`
and the released code (CAT-Seg repository, ``cat_seg/modeling/transformer/model.py``);
:cite:`liu2021swin` (windows); :cite:`katharopoulos2020transformers` (linear attention).
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from hyro_edu.core import checks as _checks
from hyro_edu.core.numerics import norm_floor

__all__ = [
    "DROPPED_CLASS_LOGIT",
    "check_rank",
    "normalise",
    "unit_cost_volume",
    "cost_volume",
    "select_classes",
    "linear_attention",
    "window_partition",
    "window_merge",
    "shifted_window_mask",
]

#: The logit the official code gives to classes dropped by the truncation (sigmoid ≈ 4e-44).
DROPPED_CLASS_LOGIT = -100.0


# ----------------------------------------------------------------------------
# checks and normalisation shared by the decoder, its layers and the loss
# ----------------------------------------------------------------------------
def check_rank(x, name: str, rank: int, layout: str) -> torch.Tensor:
    """``x`` if it is a floating-point tensor with ``rank`` dimensions, else ``ValueError`` naming ``layout``."""
    _checks.tensor(x, name)
    if x.dim() != rank:
        raise ValueError(f"{name} must have {rank} dimensions {layout}, got shape {tuple(x.shape)}")
    return x


def normalise(x: torch.Tensor, dim: int) -> torch.Tensor:
    """``x / ‖x‖`` along ``dim`` (unit vectors; a zero vector stays zero)."""
    # Divide by the norm floored at sqrt(finfo.tiny): a zero feature vector gives a zero cost
    # instead of 0/0; the floor never binds for CLIP features (norms of order 1 to 10).
    return x / torch.linalg.vector_norm(x, dim=dim, keepdim=True).clamp_min(norm_floor(x.dtype))


# ----------------------------------------------------------------------------
# the cost volume and class truncation
# ----------------------------------------------------------------------------
def cost_volume(image_features: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
    r"""The cosine cost volume :math:`C_{b,p,t,h,w} = \cos(E^V_{b,:,h,w}, E^L_{b,t,p,:})`.

    ``einsum('bdhw,btpd->bpthw')`` over L2-normalised features, the ``corr`` of the released code
    (CAT-Seg repository, ``cat_seg/modeling/transformer/model.py``; :cite:`cho2024catseg`).
    Properties: values in ``[-1, 1]``; invariant under positive rescaling of either input;
    permuting the classes of ``text_features`` permutes axis 2 of the result.

    Shapes: ``image_features (B, D, H, W)``, ``text_features (B or 1, T, P, D)`` ->
    ``(B, P, T, H, W)``.
    """
    check_rank(image_features, "image_features", 4, "(B, D, H, W)")
    check_rank(text_features, "text_features", 4, "(B or 1, T, P, D)")
    b, d = image_features.shape[:2]
    if text_features.shape[-1] != d:
        raise ValueError(
            f"text_features must have the embedding size D = {d} of image_features in its last "
            f"dimension, got shape {tuple(text_features.shape)}"
        )
    if text_features.shape[0] not in (1, b):
        raise ValueError(f"text_features must have batch size 1 or B = {b}, got {text_features.shape[0]}")
    text = normalise(text_features, -1).expand(b, -1, -1, -1)
    return unit_cost_volume(normalise(image_features, 1), text)


def unit_cost_volume(image_unit: torch.Tensor, text_unit: torch.Tensor) -> torch.Tensor:
    """:func:`cost_volume` of inputs that are already unit vectors, without checks.

    Shapes: ``image_unit (B, D, H, W)``, ``text_unit (B, T, P, D)`` -> ``(B, P, T, H, W)``.
    """
    return torch.einsum("bdhw,btpd->bpthw", image_unit, text_unit)


def select_classes(cost: torch.Tensor, k: int) -> torch.Tensor:
    r"""Indices of the ``k`` classes with the largest :math:`\max_{p,h,w} C_{b,p,t,h,w}`, per image.

    CAT-Seg's class truncation (:cite:`cho2024catseg`; ``pad_len`` in the released code, CAT-Seg
    repository, ``cat_seg/modeling/transformer/model.py``), used when ``T > pad_len``; the dropped
    classes get :data:`DROPPED_CLASS_LOGIT`.
    Shapes: ``cost (B, P, T, H, W)`` -> LongTensor ``(B, k)``, ascending within each row.
    """
    check_rank(cost, "cost", 5, "(B, P, T, H, W)")
    k = _checks.integer(k, "k", 1, cost.shape[2])
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
    :cite:`katharopoulos2020transformers`, Sec. 3.2 and 3.2.1.
    """
    for name, t in (("q", q), ("k", k), ("v", v)):
        check_rank(t, name, 4, "(N, L, heads, d)")
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
    windows ``⌊(y - shift)/window⌋`` (:cite:`liu2021swin`, Sec. 3.2, "efficient batch computation").

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
