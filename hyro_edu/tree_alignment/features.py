r"""Semantic-aware visual features: the image as a tree of levels (:cite:`wu2026modality`, key design 1).

The method turns one image into ``m`` visual features of increasing granularity, one per selected
ViT block, and lets each text feature pick the granularity it needs:

1. **Intermediate class tokens.**  The class token ``h_p`` is stored after each selected block
   ``p`` (0-based; ViT-B/16: blocks 4, 7 and 11; the tiny CLIP of this package: 1, 2, 3).
2. **Propagation to the output space** (:func:`hyro_edu.tree_alignment.features.propagate_class_tokens`).  Each
   stored token is
   passed through every later block *with its self-attention disabled*: it attends only to itself,
   so the attention reduces to the value path :math:`W_o(W_v h + b_v) + b_o`
   (:func:`hyro_edu.tree_alignment.features.self_attention_value`) and the token never sees a patch token
   again.  Then ``ln_post``
   and the projection give the level features ``F`` of shape ``(B, m, E)``
   (:func:`hyro_edu.tree_alignment.features.semantic_visual_features`).
3. **Text-guided cross-attention** (:class:`hyro_edu.tree_alignment.features.TextGuidedCrossAttention`).  The
   text features of
   the labels are the queries, the ``m`` level features the keys and values; the output is one
   fused visual feature per (image, label), of shape ``(B, K, E)``.

**Two readings of the propagation** (switch ``propagation``):

* ``"official"`` -- the official code (``ResidualAttentionBlock_MaPLe.forward``): *no* ``ln_1``
  before the attention, and the residual added twice,
  :math:`h_1 = h + a(h)`, :math:`h \leftarrow 2h_1 + \mathrm{MLP}(\mathrm{ln}_2(h_1))`;
* ``"invite"`` -- the paper's description ("linear projections, residuals and MLPs pass the
  token through") and the INViTE reference (Chen et al., ICLR 2024): the block unchanged except
  for the self-only attention mask, :math:`h_1 = h + a(\mathrm{ln}_1(h))`,
  :math:`h \leftarrow h_1 + \mathrm{MLP}(\mathrm{ln}_2(h_1))`.

Default ``"official"`` (the published numbers were trained with it).  Because the stored tokens
never interact with other tokens, propagating them after the forward pass through the frozen
blocks gives exactly what the official code computes inside the forward pass; the functions here
therefore take the stored tokens and the blocks, and work with any prompt learner.

The blocks are open_clip's ``ResidualAttentionBlock`` (``ln_1``, ``attn`` an
``nn.MultiheadAttention``, ``ls_1``, ``ln_2``, ``mlp``, ``ls_2``); OpenAI's CLIP blocks, which
have no layer scales, work too (a missing ``ls_1`` or ``ls_2`` counts as the identity).

References
----------
* Wu, Fan, Wu, Gao, Li, Jia & Harandi, *Modality Alignment across Trees on Heterogeneous
  Hyperbolic Manifolds* (ICLR 2026), method, "Semantic-aware visual feature extraction";
  official code ``models/maple_model.py`` and ``models/adaptive_weight_generator.py`` (read
  for facts only).
* Chen et al., *INViTE* (ICLR 2024), the self-only attention of the last blocks.
"""
from __future__ import annotations

import math
from typing import NamedTuple, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from hyro_edu.core import checks as _checks

__all__ = [
    "PROPAGATIONS",
    "self_attention_value",
    "propagate_block",
    "propagate_class_tokens",
    "semantic_visual_features",
    "TextGuidedCrossAttention",
    "CrossAttentionOutput",
    "level_logits",
]

PROPAGATIONS = ("official", "invite")


def _propagation(propagation) -> str:
    return _checks.choice(propagation, "propagation", PROPAGATIONS)


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


def self_attention_value(attn: nn.MultiheadAttention, h: torch.Tensor) -> torch.Tensor:
    r"""Self-only attention of tokens that attend only to themselves: :math:`a(h) = W_o(W_v h + b_v) + b_o`.

    With a diagonal attention mask (0 on the diagonal, :math:`-\infty` elsewhere) the softmax
    over a single key is 1, so multi-head attention reduces to the value and output projections
    of ``attn`` (an ``nn.MultiheadAttention`` with a packed ``in_proj_weight``); the query and key
    projections drop out.  This is "self-attention disabled after layer :math:`p_j`" of
    :cite:`wu2026modality` (method, key design 1).

    Property (tested): equals ``attn(h, h, h, attn_mask=M)`` with the diagonal mask ``M``.
    Shapes: ``h (..., D)`` -> ``(..., D)``.
    """
    _checks.tensor(h, "h")
    w = getattr(attn, "in_proj_weight", None)
    if w is None:
        raise ValueError("attn must be an nn.MultiheadAttention with a packed in_proj_weight (3D, D)")
    d = w.shape[1]
    if h.shape[-1] != d:
        raise ValueError(f"h must have {d} features on its last axis (the block width), got shape {tuple(h.shape)}")
    b = attn.in_proj_bias
    v = F.linear(h, w[2 * d:], b[2 * d:] if b is not None else None)
    return F.linear(v, attn.out_proj.weight, attn.out_proj.bias)


def propagate_block(block: nn.Module, h: torch.Tensor, *, propagation: str = "official") -> torch.Tensor:
    r"""One ViT block applied to stored class tokens ``h`` with self-only attention.

    .. math::
        \text{official: } h_1 = h + a(h), \quad h' = 2h_1 + \mathrm{MLP}(\mathrm{ln}_2(h_1)); \qquad
        \text{invite: } h_1 = h + a(\mathrm{ln}_1(h)), \quad h' = h_1 + \mathrm{MLP}(\mathrm{ln}_2(h_1)),

    with :math:`a` :func:`hyro_edu.tree_alignment.features.self_attention_value` of the block's attention (the
    layer scales
    ``ls_1``, ``ls_2`` applied to :math:`a` and to the MLP term when the block has them).

    Properties (tested): the test vector of the design notes (``d = 2``, ``h = (1, 0)``,
    ``W_v = W_o = I``, zero biases, ``MLP ≡ 0``) gives ``(4, 0)`` (official) and
    ``(1.99998, -0.99998)`` (invite); ``"invite"`` equals the block's own forward pass with the
    diagonal attention mask; with ``ln_1`` replaced by the identity the two readings differ by
    exactly ``h_1`` (the second residual).

    Shapes: ``h (..., D)`` -> ``(..., D)``.  :cite:`wu2026modality` (method, key design 1);
    official code ``ResidualAttentionBlock_MaPLe.forward`` (``use_invite``).
    """
    propagation = _propagation(propagation)
    ls_1 = getattr(block, "ls_1", _identity)
    ls_2 = getattr(block, "ls_2", _identity)
    if propagation == "official":
        h1 = h + ls_1(self_attention_value(block.attn, h))
        return 2 * h1 + ls_2(block.mlp(block.ln_2(h1)))
    h1 = h + ls_1(self_attention_value(block.attn, block.ln_1(h)))
    return h1 + ls_2(block.mlp(block.ln_2(h1)))


def _layers(layers, n_blocks: int, n_tokens: int) -> tuple[int, ...]:
    if isinstance(layers, (str, bytes)) or not isinstance(layers, Sequence):
        raise ValueError(f"layers must be a sequence of block indices, got {layers!r}")
    out = tuple(_checks.integer(v, f"layers[{i}]", 0, n_blocks - 1) for i, v in enumerate(layers))
    if len(out) != n_tokens:
        raise ValueError(
            f"layers must name one block per stored token: got {len(out)} layers {out} for tokens with "
            f"{n_tokens} entries on axis 1"
        )
    if any(b <= a for a, b in zip(out, out[1:])):
        raise ValueError(f"layers must be strictly increasing (shallow to deep), got {out}")
    return out


def propagate_class_tokens(
    tokens: torch.Tensor,
    blocks: Sequence[nn.Module],
    *,
    layers: Sequence[int],
    propagation: str = "official",
) -> torch.Tensor:
    r"""Carry the class token stored after each block of ``layers`` to the output of the last block.

    .. math:: h'_{p_j} = B^{\rm self}_{n-1} \circ \cdots \circ B^{\rm self}_{p_j + 1}(h_{p_j}),

    where :math:`B^{\rm self}_i` is block ``i`` with self-only attention
    (:func:`hyro_edu.tree_alignment.features.propagate_block`)
    and ``n = len(blocks)``.  A token stored after the last block is returned unchanged.  The
    blocks are used as given (freeze them; the official code never trains them).

    ``tokens (B, m, D)``: the raw residual stream's class token after each of the ``m`` blocks
    ``layers`` (0-based, strictly increasing, non-negative: the official ``MultiFeatureList``
    converts negative indices with a hard-coded 12).  ``blocks``: every block of the vision
    transformer, first to last.  Returns ``(B, m, D)``.

    Raises ``ValueError`` when ``len(layers)`` differs from ``tokens.shape[1]``, a layer is
    outside ``[0, len(blocks) - 1]`` or the layers are not increasing.

    Property (tested): tokens propagate independently (a level's output depends only on its own
    token).  :cite:`wu2026modality` (method, key design 1: "pass through" the token to the final
    representation space).
    """
    _checks.tensor(tokens, "tokens")
    if tokens.dim() != 3:
        raise ValueError(f"tokens must have shape (B, m, D), got {tuple(tokens.shape)}")
    blocks = list(blocks)
    if not blocks:
        raise ValueError("blocks must hold at least one transformer block")
    layers = _layers(layers, len(blocks), tokens.shape[1])
    propagation = _propagation(propagation)
    out = []
    for j, p in enumerate(layers):
        h = tokens[:, j]
        for block in blocks[p + 1:]:
            h = propagate_block(block, h, propagation=propagation)
        out.append(h)
    return torch.stack(out, dim=1)


def semantic_visual_features(
    tokens: torch.Tensor,
    blocks: Sequence[nn.Module],
    *,
    layers: Sequence[int],
    ln_post: Optional[nn.Module] = None,
    proj: Optional[torch.Tensor] = None,
    propagation: str = "official",
) -> torch.Tensor:
    r"""The level features :math:`F = \mathrm{ln_{post}}(H')\,W_{\rm proj}`: ``(B, m, D)`` -> ``(B, m, E)``.

    :math:`H' = [h'_{p_1}; \dots; h'_{p_m}]` from
    :func:`hyro_edu.tree_alignment.features.propagate_class_tokens`, then the
    vision tower's final ``ln_post`` (per token) and projection ``proj (D, E)`` (open_clip's
    ``visual.ln_post`` and ``visual.proj``); either may be ``None`` (skipped).  The result is not
    normalised (the cross-attention takes it as it is, as in the official code).  In the official
    propagation ``ln_post`` removes the :math:`4^k` growth of the doubled residual.

    :cite:`wu2026modality` (method, key design 1); official code
    ``VisionTransformer_MaPLe.forward`` (``hie_fea``).
    """
    h = propagate_class_tokens(tokens, blocks, layers=layers, propagation=propagation)
    if ln_post is not None:
        h = ln_post(h)
    if proj is not None:
        if not isinstance(proj, torch.Tensor) or proj.dim() != 2 or proj.shape[0] != h.shape[-1]:
            shape = tuple(proj.shape) if isinstance(proj, torch.Tensor) else type(proj).__name__
            raise ValueError(f"proj must be a matrix ({h.shape[-1]}, E), got {shape}")
        h = h @ proj
    return h


class CrossAttentionOutput(NamedTuple):
    """``fused (B, K, E)``: one visual feature per image and label; ``weights (B, K, m)``: the attention."""

    fused: torch.Tensor
    weights: torch.Tensor


class TextGuidedCrossAttention(nn.Module):
    r"""Text-guided cross-attention over the level features (:cite:`wu2026modality`, key design 1).

    .. math:: v_{bk} = W_o\Big(\sum_j A_{bkj}\,(W_v F_{bj} + b_v)\Big) + b_o, \qquad
              A_{bk\cdot} = \operatorname{softmax}_j\frac{(W_q t_k + b_q)^\top (W_k F_{bj} + b_k)}{\sqrt{E/h}},

    an ``nn.MultiheadAttention(E, num_heads)`` (one head in the official code) with the text
    feature :math:`t_k` of label ``k`` as the query and the ``m`` level features :math:`F_{bj}` of
    image ``b`` as keys and values.

    Initialisation (the official ``AdaptiveWeightGenerator``):

    * ``W_v = I``, ``b_v = 0``; the value projection stays **trainable** (it is part of
      ``in_proj_weight``);
    * ``W_o = I``, ``b_o = 0``, **frozen** (``requires_grad=False``);
    * ``W_q``, ``W_k``: PyTorch's default (xavier-uniform over the whole ``(3E, E)`` matrix), biases 0.

    Properties (tested): at initialisation ``v_bk = Σ_j A_bkj F_bj`` exactly, a convex combination
    of the level features (so a single level, or equal levels, come out unchanged); trainable
    parameters ``3E² + 3E``.  The paper's formula has no output projection; the frozen identity
    ``W_o`` makes the two the same at every step.

    Shapes: ``forward(text, levels)``: ``text (K, E)`` (shared by the batch) or ``(B, K, E)``,
    ``levels (B, m, E)`` -> :class:`hyro_edu.tree_alignment.features.CrossAttentionOutput` with ``fused (B, K, E)`` and
    ``weights (B, K, m)`` (averaged over heads).
    """

    def __init__(self, embed_dim: int, *, num_heads: int = 1):
        super().__init__()
        embed_dim = _checks.integer(embed_dim, "embed_dim")
        num_heads = _checks.integer(num_heads, "num_heads")
        if embed_dim % num_heads:
            raise ValueError(f"num_heads must divide embed_dim, got embed_dim={embed_dim}, num_heads={num_heads}")
        self.embed_dim = embed_dim
        self.attn = nn.MultiheadAttention(embed_dim, num_heads, batch_first=True)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """PyTorch's default for Q and K, then the identity for V and the output (frozen)."""
        e = self.embed_dim
        self.attn._reset_parameters()  # xavier_uniform over in_proj_weight, zero biases
        with torch.no_grad():
            self.attn.in_proj_weight[2 * e:].copy_(torch.eye(e))
            self.attn.in_proj_bias[2 * e:].zero_()
            self.attn.out_proj.weight.copy_(torch.eye(e))
            self.attn.out_proj.bias.zero_()
        self.attn.out_proj.weight.requires_grad_(False)
        self.attn.out_proj.bias.requires_grad_(False)

    def forward(self, text: torch.Tensor, levels: torch.Tensor) -> CrossAttentionOutput:
        """``text (K, E)`` or ``(B, K, E)`` queries, ``levels (B, m, E)`` keys and values -> ``(fused, weights)``."""
        _checks.tensor(text, "text")
        _checks.tensor(levels, "levels")
        e = self.embed_dim
        if levels.dim() != 3 or levels.shape[-1] != e:
            raise ValueError(f"levels must have shape (B, m, {e}), got {tuple(levels.shape)}")
        if text.dim() == 2:
            text = text.unsqueeze(0).expand(levels.shape[0], -1, -1)
        if text.dim() != 3 or text.shape[-1] != e or text.shape[0] != levels.shape[0]:
            raise ValueError(
                f"text must have shape (K, {e}) or (B, K, {e}) with B = {levels.shape[0]}, got {tuple(text.shape)}"
            )
        fused, weights = self.attn(text, levels, levels, need_weights=True, average_attn_weights=True)
        return CrossAttentionOutput(fused, weights)

    def extra_repr(self) -> str:
        return f"embed_dim={self.embed_dim}, num_heads={self.attn.num_heads}"


def level_logits(fused: torch.Tensor, text: torch.Tensor, *, logit_scale: float | torch.Tensor) -> torch.Tensor:
    r"""Per-label logits :math:`s\cdot\cos(v_{bk}, t_k)`: ``fused (B, K, E)``, ``text (K, E)`` -> ``(B, K)``.

    ``logit_scale`` is :math:`s` itself (CLIP's ``logit_scale.exp()``, 100 for ViT-B/16, frozen).
    Each label is scored with the visual feature its own text picked, so one score per (image,
    label) serves every classifier of the tree.  :cite:`wu2026modality`; official code
    ``compute_logits_hierachical`` (``align_version='many-to-many'``).
    """
    _checks.tensor(fused, "fused")
    _checks.tensor(text, "text")
    if fused.dim() != 3 or text.dim() != 2 or fused.shape[1:] != text.shape:
        raise ValueError(
            f"fused must have shape (B, K, E) and text (K, E) with the same K and E, got {tuple(fused.shape)} "
            f"and {tuple(text.shape)}"
        )
    if not isinstance(logit_scale, torch.Tensor) and not (
        isinstance(logit_scale, (int, float)) and math.isfinite(logit_scale) and logit_scale > 0
    ):
        raise ValueError(f"logit_scale must be a finite number > 0 or a tensor, got {logit_scale!r}")
    return logit_scale * (F.normalize(fused, dim=-1) * F.normalize(text, dim=-1)).sum(-1)
