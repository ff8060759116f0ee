r"""The CLIP backbone behind one interface: open_clip models, from the tiny CPU one to ViT-B/16.

CLIP (Radford et al., ICML 2021) embeds an image and a text into the same unit
sphere; the cosine :math:`\langle f(x), g(t) \rangle` scores how well they
match.  Everything later in the book (HyperCLIP, HyRo, H-CLIP, the CAT-Seg
decoder) needs more from CLIP than the two pooled embeddings; :class:`ClipBackbone`
wraps any open_clip ViT model and gives

* **dense patch features at any input size** (divisible by the patch size):
  the ViT's positional embedding is resized bicubically from its native grid
  to the input's grid (:func:`interpolate_pos_embed`; ViT-B/16 at 384×384
  gives a 24×24 grid, as CAT-Seg uses it);
* **CAT-Seg's dense last layer** (:func:`dense_block_forward`): in the final
  vision block every token takes the value path of attention only, plus the
  block's input CLS token, then the MLP (:cite:`cho2024catseg`; ``forward_dense`` in
  the released CAT-Seg code);
* **intermediate features through forward hooks** (:meth:`ClipBackbone.capture`),
  e.g. the outputs of blocks 4 and 8 (indices 3 and 7) that CAT-Seg upsamples;
* **the CLS token after chosen blocks** (:meth:`ClipBackbone.cls_tokens`);
* **every attention layer's Q/K/V weights** (:meth:`ClipBackbone.qkv_weights`)
  and a way to **re-parametrise** them (:meth:`ClipBackbone.register_qkv_adapter`):
  an adapter maps the frozen ``(W_q, W_k, W_v)`` to new weights on every
  forward pass, which is how HyperCLIP's and HyRo's block scalings and
  rotations act (:cite:`peng2025hyperclip`, :cite:`truong2026hyro`);
* open_clip's tokenizer (it ships its BPE vocabulary: no download).

Models are chosen by **name and pretrained tag**
(:func:`~hyro_edu.clip.weights.load_clip`, in :mod:`hyro_edu.clip.weights`).  The
GPU default is ``ViT-B-16`` with ``openai`` weights, fetched by open_clip's
own mechanism into ``hyro_edu.core.paths.cache_dir() / "open_clip"``
(``$HYRO_EDU_CACHE``); when they cannot be had,
:class:`~hyro_edu.clip.weights.WeightsUnavailableError` says so and how to get them.
The tiny CPU model is :mod:`hyro_edu.clip.tiny`.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable, Iterator, NamedTuple, Optional, Sequence, Union

import open_clip
import torch
import torch.nn.functional as F
from open_clip.transformer import VisionTransformer
from torch import nn
from torch.nn.utils import parametrize

from hyro_edu.clip.tiny import TINY_CLIP_NAME
from hyro_edu.core.images import CLIP_MEAN, CLIP_STD

__all__ = [
    "ClipBackbone",
    "VisualFeatures",
    "QKV",
    "interpolate_pos_embed",
    "dense_block_forward",
    "split_qkv",
]

_TOWERS = ("visual", "text")


def interpolate_pos_embed(
    pos_embed: torch.Tensor, grid: tuple[int, int], *, mode: str = "bicubic"
) -> torch.Tensor:
    r"""Resize a ViT positional embedding ``(1 + h0·w0, D)`` to ``(1 + h·w, D)`` for ``grid = (h, w)``.

    The class-token row is kept; the ``h0 × w0`` grid of patch rows (square, ``h0 = w0``)
    is resampled with ``F.interpolate(mode, align_corners=False)``, bicubic as in
    CAT-Seg (ViT-B/16: 14×14 at 224 px -> 24×24 at 384 px).  The ViT paper
    (Dosovitskiy et al., ICLR 2021, §3.2) fine-tunes at higher resolution the
    same way.  Returns ``pos_embed`` itself when the grid is unchanged.
    """
    if pos_embed.dim() != 2:
        raise ValueError(f"pos_embed must have shape (1 + h*w, D), got {tuple(pos_embed.shape)}")
    n = pos_embed.shape[0] - 1
    side = int(round(n**0.5))
    if side * side != n:
        raise ValueError(f"pos_embed must hold a square grid of patch rows plus one class row, got {n + 1} rows")
    h, w = grid
    if h < 1 or w < 1:
        raise ValueError(f"grid must be two integers >= 1, got {grid}")
    if (h, w) == (side, side):
        return pos_embed
    cls, patches = pos_embed[:1], pos_embed[1:]
    patches = patches.reshape(1, side, side, -1).permute(0, 3, 1, 2)
    patches = F.interpolate(patches.float(), size=(h, w), mode=mode, align_corners=False)
    patches = patches.to(pos_embed.dtype).permute(0, 2, 3, 1).reshape(h * w, -1)
    return torch.cat([cls, patches], dim=0)


def split_qkv(in_proj: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``nn.MultiheadAttention.in_proj_weight`` ``(3D, D)`` (or bias ``(3D,)``) -> ``(W_q, W_k, W_v)``."""
    if in_proj.shape[0] % 3:
        raise ValueError(f"in_proj must have 3·D rows, got shape {tuple(in_proj.shape)}")
    q, k, v = in_proj.chunk(3, dim=0)
    return q, k, v


def dense_block_forward(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    r"""CAT-Seg's dense last layer: a ViT block without token mixing.

    For the block input ``x`` ``(B, L, D)`` (token 0 is CLS), with the block's own weights:

    .. math::
        v = \mathrm{out\_proj}\big(W_v\,\mathrm{ln}_1(x) + b_v\big) + x_{\mathrm{cls}}, \qquad
        y = v + \mathrm{MLP}(\mathrm{ln}_2(v)).

    Every token keeps its own value vector instead of the attention-weighted
    mixture, and the residual is the block's *input CLS token* for every token
    (:cite:`cho2024catseg`; ``forward_dense`` in the released CAT-Seg code).  Reads
    ``block.attn.in_proj_weight``, so Q/K/V adapters act here too.  Returns ``(B, L, D)``.
    """
    attn = block.attn
    d = x.shape[-1]
    w_v = attn.in_proj_weight[2 * d:]
    b_v = attn.in_proj_bias[2 * d:] if attn.in_proj_bias is not None else None
    v = F.linear(F.linear(block.ln_1(x), w_v, b_v), attn.out_proj.weight, attn.out_proj.bias)
    v = block.ls_1(v) + x[:, :1]
    return v + block.ls_2(block.mlp(block.ln_2(v)))


class _QKVReparametrization(nn.Module):
    """Parametrization of ``in_proj_weight``: ``cat(adapter(W_q, W_k, W_v))``."""

    def __init__(self, adapter: nn.Module):
        super().__init__()
        self.adapter = adapter

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        q, k, v = self.adapter(*split_qkv(weight))
        return torch.cat([q, k, v], dim=0)


class QKV(NamedTuple):
    """The Q/K/V projection of one attention layer: weights ``(D, D)``, biases ``(D,)``."""

    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    q_bias: Optional[torch.Tensor]
    k_bias: Optional[torch.Tensor]
    v_bias: Optional[torch.Tensor]


@dataclass
class VisualFeatures:
    """Outputs of :meth:`ClipBackbone.forward_visual`.

    Attributes
    ----------
    pooled : ``(B, E)`` image embedding (CLS after ``ln_post``, projected), not normalised.
    tokens : ``(B, h·w, E)`` patch embeddings (``ln_post`` and projection applied to
        every patch token of the last block; CAT-Seg's dense block if ``dense=True``).
    grid : ``(h, w)``, the patch grid of the input.
    blocks : ``{i: (B, 1 + h·w, width)}``, the residual stream after block ``i``
        (0-based; CLS first), for the blocks asked for.
    """

    pooled: torch.Tensor
    tokens: torch.Tensor
    grid: tuple[int, int]
    blocks: dict

    def dense_map(self) -> torch.Tensor:
        """Patch embeddings as a feature map ``(B, E, h, w)``."""
        b, _, e = self.tokens.shape
        return self.tokens.transpose(1, 2).reshape(b, e, *self.grid)


# ----------------------------------------------------------------------------
# the backbone
# ----------------------------------------------------------------------------
class ClipBackbone(nn.Module):
    """An open_clip ``CLIP`` with dense, intermediate and Q/K/V access; see the module docstring.

    Parameters
    ----------
    model : an ``open_clip.CLIP`` whose image tower is an open_clip
        ``VisionTransformer`` with a class token and no attentional pooler.
    name, pretrained : recorded for reports (``load_clip`` sets them).
    mean, std : the image normalisation the weights expect (0-1 scale).
    """

    def __init__(
        self,
        model: open_clip.CLIP,
        *,
        name: str = TINY_CLIP_NAME,
        pretrained: Optional[str] = None,
        mean: Sequence[float] = CLIP_MEAN,
        std: Sequence[float] = CLIP_STD,
    ):
        super().__init__()
        if not isinstance(model, open_clip.CLIP):
            raise ValueError(f"model must be an open_clip.CLIP, got {type(model).__name__}")
        visual = model.visual
        if not isinstance(visual, VisionTransformer) or visual.attn_pool is not None:
            raise ValueError("model.visual must be an open_clip VisionTransformer without attentional pooling")
        if visual.pool_type not in ("tok", "avg") or visual.final_ln_after_pool:
            raise ValueError(
                f"model.visual must pool with pool_type 'tok' or 'avg' and LayerNorm before pooling, "
                f"got pool_type={visual.pool_type!r}, final_ln_after_pool={visual.final_ln_after_pool}"
            )
        self.model = model
        self.name = name
        self.pretrained = pretrained
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(3, 1, 1), persistent=False)
        self._tokenizer = None

    # sizes --------------------------------------------------------------------------
    @property
    def embed_dim(self) -> int:
        return int(self.model.visual.output_dim)

    @property
    def patch_size(self) -> int:
        return int(self.model.visual.patch_size[0])

    @property
    def native_image_size(self) -> int:
        return int(self.model.visual.image_size[0])

    @property
    def native_grid(self) -> tuple[int, int]:
        return tuple(int(g) for g in self.model.visual.grid_size)

    @property
    def context_length(self) -> int:
        return int(self.model.context_length)

    def num_layers(self, tower: str = "visual") -> int:
        return len(self._resblocks(tower))

    def width(self, tower: str = "visual") -> int:
        return int(self._resblocks(tower)[0].attn.embed_dim)

    @property
    def device(self) -> torch.device:
        return self.model.logit_scale.device

    # text ---------------------------------------------------------------------------
    @property
    def tokenizer(self):
        """open_clip's BPE tokenizer, truncating/padding to this model's context length."""
        if self._tokenizer is None:
            self._tokenizer = open_clip.tokenizer.SimpleTokenizer(context_length=self.context_length)
        return self._tokenizer

    def tokenize(self, texts: Union[str, Sequence[str]]) -> torch.Tensor:
        """Texts -> token ids ``(T, context_length)`` on the model's device."""
        if isinstance(texts, str):
            texts = [texts]
        if len(texts) == 0:
            raise ValueError("texts must contain at least one string")
        return self.tokenizer(list(texts)).to(self.device)

    def encode_text(self, texts: Union[str, Sequence[str], torch.Tensor], *, normalize: bool = True):
        """Texts (or token ids ``(T, L)``) -> embeddings ``(T, E)``, unit norm if ``normalize``."""
        tokens = texts if isinstance(texts, torch.Tensor) else self.tokenize(texts)
        return self.model.encode_text(tokens.to(self.device), normalize=normalize)

    def class_embeddings(
        self, class_names: Sequence[str], template: str = "a photo of a {}."
    ) -> torch.Tensor:
        """Unit text embeddings ``(T, E)`` of ``template.format(name)`` for each class name."""
        if "{}" not in template:
            raise ValueError(f"template must contain '{{}}' for the class name, got {template!r}")
        return self.encode_text([template.format(n) for n in class_names], normalize=True)

    # images -------------------------------------------------------------------------
    def normalize_images(self, images: torch.Tensor) -> torch.Tensor:
        """Float images in [0, 1] ``(B, 3, H, W)`` -> normalised with this model's mean/std."""
        return (images - self.mean) / self.std

    def _check_images(self, images: torch.Tensor) -> tuple[int, int]:
        if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[1] != 3:
            shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
            raise ValueError(f"images must be a tensor (B, 3, H, W), got {shape}")
        p = self.patch_size
        h, w = images.shape[-2:]
        if h % p or w % p or h < p or w < p:
            raise ValueError(
                f"images must have height and width that are positive multiples of the patch size {p}, "
                f"got {h}×{w}"
            )
        return h // p, w // p

    def forward_visual(
        self, images: torch.Tensor, *, blocks: Sequence[int] = (), dense: bool = False
    ) -> VisualFeatures:
        """Run the image tower on normalised ``images`` ``(B, 3, H, W)`` of any size divisible by the patch.

        The positional embedding is interpolated to the ``(H/p, W/p)`` grid.  With
        ``dense=True`` the last block is CAT-Seg's dense block
        (:func:`dense_block_forward`); ``pooled`` is then the dense path's CLS.
        ``blocks`` are 0-based block indices whose outputs are returned (collected
        by forward hooks; for the last block in dense mode, the dense output).
        """
        grid = self._check_images(images)
        blocks = self._block_indices("visual", blocks)
        visual = self.model.visual
        x = visual.conv1(images.to(visual.conv1.weight.dtype))  # (B, width, h, w)
        x = x.flatten(2).transpose(1, 2)  # (B, h·w, width)
        cls = visual.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + interpolate_pos_embed(visual.positional_embedding, grid).to(x.dtype)
        x = visual.ln_pre(visual.patch_dropout(x))
        transformer = visual.transformer
        resblocks = transformer.resblocks
        last = len(resblocks) - 1
        hooked = [b for b in blocks if not (dense and b == last)]
        with self.capture("visual", hooked) as captured:
            if not transformer.batch_first:
                x = x.transpose(0, 1)
            for i, block in enumerate(resblocks):
                if dense and i == last:
                    x = dense_block_forward(block, x if transformer.batch_first else x.transpose(0, 1))
                    if not transformer.batch_first:
                        x = x.transpose(0, 1)
                else:
                    x = block(x)
            if not transformer.batch_first:
                x = x.transpose(0, 1)
        out_blocks = {b: captured[b] for b in hooked}
        if dense and last in blocks:
            out_blocks[last] = x
        x = visual.ln_post(x)
        pooled = x[:, 0] if visual.pool_type == "tok" else x[:, 1:].mean(dim=1)
        tokens = x[:, 1:]
        if visual.proj is not None:
            pooled, tokens = pooled @ visual.proj, tokens @ visual.proj
        return VisualFeatures(pooled=pooled, tokens=tokens, grid=grid, blocks=dict(sorted(out_blocks.items())))

    def encode_image(self, images: torch.Tensor, *, normalize: bool = True) -> torch.Tensor:
        """Normalised images ``(B, 3, H, W)`` -> image embeddings ``(B, E)`` (unit norm if ``normalize``)."""
        pooled = self.forward_visual(images).pooled
        return F.normalize(pooled, dim=-1) if normalize else pooled

    def dense_features(
        self, images: torch.Tensor, *, dense: bool = True, normalize: bool = False
    ) -> torch.Tensor:
        """Patch embeddings in the joint space as a map ``(B, E, H/p, W/p)``.

        ``dense=True`` uses CAT-Seg's dense last layer, ``False`` the ordinary last
        block; ``normalize`` makes every patch vector unit length.
        """
        fmap = self.forward_visual(images, dense=dense).dense_map()
        return F.normalize(fmap, dim=1) if normalize else fmap

    def intermediate_features(
        self, images: torch.Tensor, blocks: Sequence[int], *, dense: bool = True
    ) -> dict:
        """Outputs of image blocks ``blocks`` (0-based) as maps ``{i: (B, width, H/p, W/p)}`` (CLS dropped).

        CAT-Seg takes blocks 3 and 7 of ViT-B/16 (its 4th and 8th layers).
        """
        feats = self.forward_visual(images, blocks=blocks, dense=dense)
        h, w = feats.grid
        return {i: t[:, 1:].transpose(1, 2).reshape(t.shape[0], -1, h, w) for i, t in feats.blocks.items()}

    def cls_tokens(
        self, images: torch.Tensor, blocks: Sequence[int], *, project: bool = True
    ) -> torch.Tensor:
        """The CLS token after each of ``blocks`` (0-based), stacked ``(B, len(blocks), ·)``.

        ``project=True`` applies the final ``ln_post`` and projection (``(B, n, E)``),
        as for the last block's image embedding; ``False`` returns the raw residual
        stream ``(B, n, width)``.
        """
        feats = self.forward_visual(images, blocks=blocks)
        visual = self.model.visual
        cls = torch.stack([feats.blocks[b][:, 0] for b in self._block_indices("visual", blocks)], 1)
        if project:
            cls = visual.ln_post(cls)
            if visual.proj is not None:
                cls = cls @ visual.proj
        return cls

    def forward(self, images: torch.Tensor, texts) -> torch.Tensor:
        """CLIP logits ``(B, T)``: ``exp(logit_scale)·cos(image_b, text_t)``."""
        img = self.encode_image(images)
        txt = self.encode_text(texts)
        return self.model.logit_scale.exp() * img @ txt.T

    # hooks and attention weights ----------------------------------------------------
    def _resblocks(self, tower: str) -> nn.ModuleList:
        if tower == "visual":
            return self.model.visual.transformer.resblocks
        if tower == "text":
            return self.model.transformer.resblocks
        raise ValueError(f"tower must be one of {_TOWERS}, got {tower!r}")

    def _block_indices(self, tower: str, blocks: Sequence[int]) -> list[int]:
        n = len(self._resblocks(tower))
        out = []
        for b in blocks:
            if isinstance(b, bool) or not isinstance(b, int) or not -n <= b < n:
                raise ValueError(f"blocks must be integers in [{-n}, {n - 1}] for the {tower} tower, got {b!r}")
            out.append(b % n)
        return out

    @contextlib.contextmanager
    def capture(self, tower: str, blocks: Sequence[int]) -> Iterator[dict]:
        """Context manager: forward hooks on blocks ``blocks`` of ``tower`` ("visual" or "text").

        Yields a dict that every forward pass inside the ``with`` fills with
        ``{i: block output (B, L, width)}`` (batch first, whatever the model's layout).
        The hooks are removed on exit.
        """
        resblocks = self._resblocks(tower)
        indices = self._block_indices(tower, blocks)
        batch_first = (
            self.model.visual.transformer.batch_first if tower == "visual" else self.model.transformer.batch_first
        )
        store: dict = {}
        handles = []

        def make_hook(i: int) -> Callable:
            def hook(module, args, output):
                store[i] = output if batch_first else output.transpose(0, 1)

            return hook

        try:
            for i in indices:
                handles.append(resblocks[i].register_forward_hook(make_hook(i)))
            yield store
        finally:
            for h in handles:
                h.remove()

    def attention_layers(self, tower: str = "visual") -> list[nn.MultiheadAttention]:
        """The ``nn.MultiheadAttention`` module of every block of ``tower``, first to last."""
        return [block.attn for block in self._resblocks(tower)]

    def _attention(self, tower: str, layer: int) -> nn.Module:
        (i,) = self._block_indices(tower, [layer])
        attn = self._resblocks(tower)[i].attn
        if getattr(attn, "in_proj_weight", None) is None:
            raise ValueError(f"layer {layer} of the {tower} tower has no packed in_proj_weight")
        return attn

    def qkv_weights(self, tower: str, layer: int, *, original: bool = False) -> QKV:
        """Q/K/V weights ``(D, D)`` and biases ``(D,)`` of attention layer ``layer`` of ``tower``.

        The weights are those the forward pass uses (after an adapter, if one is
        registered); ``original=True`` returns the frozen weights under the adapter.
        Rows are output neurons: ``q = x @ W_q.T + b_q``.
        """
        attn = self._attention(tower, layer)
        if original and parametrize.is_parametrized(attn, "in_proj_weight"):
            weight = attn.parametrizations.in_proj_weight.original
        else:
            weight = attn.in_proj_weight
        q, k, v = split_qkv(weight)
        bias = attn.in_proj_bias
        qb, kb, vb = split_qkv(bias) if bias is not None else (None, None, None)
        return QKV(q, k, v, qb, kb, vb)

    def register_qkv_adapter(self, tower: str, layer: int, adapter: nn.Module) -> None:
        """Re-parametrise the Q/K/V weights of one attention layer by ``adapter``.

        ``adapter(W_q, W_k, W_v)`` (each ``(D, D)``) must return three ``(D, D)``
        tensors; every forward pass (ordinary, dense and text) then uses them.  The
        frozen weights stay in ``attn.parametrizations.in_proj_weight.original``; an
        adapter already on that layer is replaced.  (``torch.nn.utils.parametrize``.)
        """
        attn = self._attention(tower, layer)
        if not isinstance(adapter, nn.Module):
            raise ValueError(f"adapter must be an nn.Module, got {type(adapter).__name__}")
        if parametrize.is_parametrized(attn, "in_proj_weight"):
            parametrize.remove_parametrizations(attn, "in_proj_weight", leave_parametrized=False)
        parametrize.register_parametrization(attn, "in_proj_weight", _QKVReparametrization(adapter))

    def remove_qkv_adapters(self) -> int:
        """Remove every Q/K/V adapter (the original weights come back); returns how many."""
        removed = 0
        for tower in _TOWERS:
            for attn in self.attention_layers(tower):
                if parametrize.is_parametrized(attn, "in_proj_weight"):
                    parametrize.remove_parametrizations(attn, "in_proj_weight", leave_parametrized=False)
                    removed += 1
        return removed

    def num_parameters(self) -> int:
        """Number of parameters of the CLIP (adapters included)."""
        return sum(p.numel() for p in self.parameters())

