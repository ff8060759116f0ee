r"""CAT-Seg's aggregator and upsampling layers (``torch.nn.Module`` s).

.. math::
    [\mathrm{SpatialAgg} \to \mathrm{ClassAgg}]^{\times L} \;\to\; \mathrm{Up}_1 \to \mathrm{Up}_2 .

Spatial aggregation: Swin blocks with (shifted) window attention guided by the appearance features
(:cite:`liu2021swin`); class aggregation: a linear-attention transformer over the classes guided by
the text embeddings, without positional encoding (:cite:`katharopoulos2020transformers`); the
upsampling stages that concatenate the intermediate CLIP guidance.  As in the released code
(CAT-Seg repository, ``cat_seg/modeling/transformer/model.py``; :cite:`cho2024catseg`).  They act
on the tensors of :class:`~hyro_edu.segmentation.catseg.decoder.CATSegDecoder`.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from hyro_edu.segmentation.catseg.functional import (
    linear_attention,
    shifted_window_mask,
    window_merge,
    window_partition,
)

# What other modules and the tests use; the package re-exports every layer.
__all__ = ["SwinBlock", "ClassAggregation", "AggregatorLayer", "UpBlock"]


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
    bias (the block of the released code has none, CAT-Seg repository,
    ``cat_seg/modeling/transformer/model.py``).  Shapes: ``x (N·nW, n, dim + guidance_dim)``
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
    ``(-shift, -shift)`` (identity for ``shift = 0``) with the :func:`~hyro_edu.segmentation.catseg.functional.shifted_window_mask`, MLP
    ``dim → mlp_ratio·dim → dim`` with GELU.  Properties: tokens only mix within their (shifted)
    window; every other operation acts per token.  If ``min(H, W) <= window_size`` the whole grid
    is one window and there is no shift (Swin's rule).

    Shapes: ``x (N, H, W, dim)``, ``guidance (N, H, W, guidance_dim)`` (already layer-normed) or
    ``None`` when ``guidance_dim = 0`` -> ``(N, H, W, dim)``.  :cite:`cho2024catseg`; the released code
    (CAT-Seg repository, ``cat_seg/modeling/transformer/model.py``, ``SwinTransformerBlockWrapper``).
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
    ``(B, T, H, W, dim)`` (internally a batch of ``B·T`` grids).  :cite:`cho2024catseg`; the released
    code (CAT-Seg repository, ``cat_seg/modeling/transformer/model.py``, ``SwinTransformerBlockWrapper``).
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
    from ``[token; guidance]``, counted ``count`` times (:func:`~hyro_edu.segmentation.catseg.functional.linear_attention`'s multiplicity),
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
    ``pooling (kh, kw)`` -> ``(B, T, H, W, dim)``.  :cite:`cho2024catseg`; the released code
    (CAT-Seg repository, ``cat_seg/modeling/transformer/model.py``, ``ClassTransformerLayer``).
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
    ``(B·T, out, 2h, 2w)``.  :cite:`cho2024catseg`; the released code
    (CAT-Seg repository, ``cat_seg/modeling/transformer/model.py``, ``DoubleConv``).
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
