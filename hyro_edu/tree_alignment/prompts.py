r"""MaPLe: deep prompts in both CLIP towers, the vision prompts computed from the text prompts.

Multi-modal prompt learning (:cite:`khattak2023maple`, §3.2) keeps every CLIP weight frozen and
learns a few tokens that are inserted into the first ``J`` (``depth``) blocks of **both**
encoders.  With ``n`` (``n_ctx``) context tokens, text width :math:`D_t` and vision width
:math:`D_v`, the learned parameters are text prompts :math:`P_j \in \mathbb{R}^{n \times D_t}`
and linear coupling functions :math:`F_j(p) = p W_j^\top + b_j` (:math:`W_j` of shape
``(D_v, D_t)``), for :math:`j = 0, \dots, J - 1`.  The vision prompts are not free parameters:
they are :math:`\tilde P_j = F_j(P_j)`, recomputed on every forward pass, so a loss on the
images alone moves the text prompts too.  The paper calls this the "V-L coupling"; the map
runs from language to vision.

Text tower (:meth:`hyro_edu.tree_alignment.prompts.MaPLeCLIP.encode_text`), for the prompt
"a photo of a {name}." of each class:

* block 0 gets :math:`[e_{\mathrm{SOS}}, P_0, e_{\mathrm{suffix}}] + \mathrm{pos}`: rows
  ``1 .. n`` of the token embeddings are the learned context (they receive the positional
  embeddings of positions ``1 .. n``); the suffix, the embeddings of "of a {name}." and the
  end-of-text token, stays fixed;
* before block :math:`j \in \{1, \dots, J - 1\}` rows ``1 .. n`` of the hidden states are
  **overwritten** by :math:`P_j` (no positional embedding);
* then open_clip's own head: ``ln_final``, the end-of-text row, ``text_projection``: ``(C, E)``.

Image tower (:meth:`hyro_edu.tree_alignment.prompts.MaPLeCLIP.encode_image`):

* ``conv1``, the class token, the positional embedding and ``patch_dropout`` as in open_clip,
  then :math:`\tilde P_0` is **appended** after the patch tokens (no positional embedding)
  and the whole sequence goes through ``ln_pre``: ``(B, 1 + h·w + n, D_v)``;
* before block :math:`j \in \{1, \dots, J - 1\}` the last ``n`` tokens are overwritten by
  :math:`\tilde P_j`;
* then ``ln_post`` on the class token and ``proj``: ``(B, E)``.  ``return_layers`` also
  returns the class token of the residual stream after chosen blocks (see
  :meth:`hyro_edu.tree_alignment.prompts.MaPLeCLIP.encode_image`), which tree alignment
  (:cite:`wu2026modality`) reads after blocks 4, 7 and 11 of ViT-B/16.

Initialisation as in the released MaPLe code (``trainers/maple.py``, facts carried over, no code):
:math:`P_0` is the token embedding of the first ``n`` tokens of ``ctx_init`` ("a photo of a",
so "a" and "photo" for ``n = 2``) and the prompt prefix stays the whole ``ctx_init``; when
``ctx_init`` is ``None`` or has fewer than ``n`` tokens, :math:`P_0` is drawn from
:math:`\mathcal{N}(0, 0.02^2)` and the prefix is ``n`` placeholder words "X".  The deep text
prompts :math:`P_1, \dots, P_{J-1}` are drawn from :math:`\mathcal{N}(0, 0.02^2)`.  The
:math:`F_j` have ``nn.Linear``'s default initialisation; :math:`F_1, \dots, F_{J-1}` are copies
of one layer and start identical.

Number of learned parameters: :math:`J (n D_t + D_t D_v + D_v)`
(:func:`hyro_edu.tree_alignment.prompts.prompt_parameter_count`): 1,185,024 for ViT-B/16
with ``n = 2``, ``J = 3`` (3,555,072 for MaPLe's default ``J = 9``), 12,864 for the tiny CLIP
(:mod:`hyro_edu.clip.tiny`) with ``J = 3`` and 8,576 with ``J = 2``.

``depth = 0`` is plain CLIP behind the same interface (the "vanilla" mode): no prompt, no
learned parameter, and the outputs are those of open_clip's ``encode_image`` and
``encode_text``.  Images are expected normalised with the model's mean and std (as
:meth:`hyro_edu.clip.backbone.ClipBackbone.encode_image` expects them), at any size divisible
by the patch size (the positional embedding is resized by
:func:`hyro_edu.clip.backbone.interpolate_pos_embed`).
"""
from __future__ import annotations

import contextlib
import copy
from typing import NamedTuple, Optional, Sequence, Union

import open_clip
import torch
import torch.nn.functional as F
from open_clip.transformer import VisionTransformer, text_global_pool
from torch import nn

from hyro_edu.clip.backbone import ClipBackbone, interpolate_pos_embed
from hyro_edu.core import checks as _checks

__all__ = [
    "DEFAULT_CTX_INIT",
    "prompt_parameter_count",
    "MaPLePromptLearner",
    "ImageEncoding",
    "MaPLeCLIP",
]

#: MaPLe's context initialisation; its first ``n_ctx`` tokens initialise :math:`P_0`.
DEFAULT_CTX_INIT = "a photo of a"
_DEEP_PROMPT_STD = 0.02


def prompt_parameter_count(n_ctx: int, depth: int, text_width: int, vision_width: int) -> int:
    r"""Learned numbers of MaPLe: :math:`J (n D_t + D_t D_v + D_v)` for ``depth`` :math:`J`.

    Each of the ``depth`` prompted layers holds a text prompt ``(n_ctx, text_width)`` and a
    coupling ``nn.Linear(text_width, vision_width)`` (weight and bias).  ViT-B/16
    (``text_width`` 512, ``vision_width`` 768) with ``n_ctx`` 2: 1,185,024 for ``depth`` 3.
    """
    n = _checks.integer(n_ctx, "n_ctx", 1)
    j = _checks.integer(depth, "depth", 0)
    d_t = _checks.integer(text_width, "text_width", 1)
    d_v = _checks.integer(vision_width, "vision_width", 1)
    return j * (n * d_t + d_t * d_v + d_v)


class MaPLePromptLearner(nn.Module):
    r"""MaPLe's learned tensors: text prompts :math:`P_j` and couplings :math:`F_j`, :math:`j < J`.

    The tensors carry the names of the released code, so that a filter on ``"prompt_learner"``
    finds them inside :class:`hyro_edu.tree_alignment.prompts.MaPLeCLIP`:

    * ``ctx``: :math:`P_0`, ``(n_ctx, text_width)``;
    * ``compound_prompts_text``: :math:`P_1, \dots, P_{J-1}`, each ``(n_ctx, text_width)``;
    * ``proj``: :math:`F_0`, ``nn.Linear(text_width, vision_width)``;
    * ``compound_prompt_projections``: :math:`F_1, \dots, F_{J-1}`.

    With ``depth = 0`` it holds nothing.  ``ctx_init`` is a tensor ``(n_ctx, text_width)`` for
    :math:`P_0` or ``None`` (drawn from :math:`\mathcal{N}(0, 0.02^2)`).  Built by
    :class:`hyro_edu.tree_alignment.prompts.MaPLeCLIP`, which validates the sizes.
    """

    def __init__(
        self,
        n_ctx: int,
        depth: int,
        text_width: int,
        vision_width: int,
        *,
        ctx_init: Optional[torch.Tensor] = None,
        dtype: torch.dtype = torch.float32,
        device: Optional[Union[str, torch.device]] = None,
    ):
        super().__init__()
        self.n_ctx = _checks.integer(n_ctx, "n_ctx", 1)
        self.depth = _checks.integer(depth, "depth", 0)
        d_t = _checks.integer(text_width, "text_width", 1)
        d_v = _checks.integer(vision_width, "vision_width", 1)
        kw = dict(dtype=dtype, device=device)
        if self.depth == 0:
            self.ctx = None
            self.proj = None
        else:
            if ctx_init is None:
                ctx = torch.empty(self.n_ctx, d_t, **kw).normal_(0.0, _DEEP_PROMPT_STD)
            else:
                if not isinstance(ctx_init, torch.Tensor) or tuple(ctx_init.shape) != (self.n_ctx, d_t):
                    shape = tuple(ctx_init.shape) if isinstance(ctx_init, torch.Tensor) else type(ctx_init).__name__
                    raise ValueError(f"ctx_init must be None or a tensor ({self.n_ctx}, {d_t}), got {shape}")
                ctx = ctx_init.detach().clone().to(**kw)
            self.ctx = nn.Parameter(ctx)
            self.proj = nn.Linear(d_t, d_v, **kw)
        deep = max(self.depth - 1, 0)
        self.compound_prompts_text = nn.ParameterList(
            [nn.Parameter(torch.empty(self.n_ctx, d_t, **kw).normal_(0.0, _DEEP_PROMPT_STD)) for _ in range(deep)]
        )
        if deep:
            layer = nn.Linear(d_t, d_v, **kw)
            self.compound_prompt_projections = nn.ModuleList([copy.deepcopy(layer) for _ in range(deep)])
        else:
            self.compound_prompt_projections = nn.ModuleList()

    def text_prompts(self) -> list[torch.Tensor]:
        r""":math:`[P_0, \dots, P_{J-1}]`, each ``(n_ctx, text_width)``; empty for ``depth = 0``."""
        if self.depth == 0:
            return []
        return [self.ctx, *self.compound_prompts_text]

    def couplings(self) -> list[nn.Linear]:
        r""":math:`[F_0, \dots, F_{J-1}]`; empty for ``depth = 0``."""
        if self.depth == 0:
            return []
        return [self.proj, *self.compound_prompt_projections]

    def vision_prompts(self) -> list[torch.Tensor]:
        r""":math:`[F_0(P_0), \dots, F_{J-1}(P_{J-1})]`, each ``(n_ctx, vision_width)``, computed now."""
        return [f(p) for f, p in zip(self.couplings(), self.text_prompts())]

    def forward(self) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """``(text_prompts, vision_prompts)``: the lists of ``text_prompts()`` and ``vision_prompts()``."""
        text = self.text_prompts()
        return text, [f(p) for f, p in zip(self.couplings(), text)]


class ImageEncoding(NamedTuple):
    """What :meth:`hyro_edu.tree_alignment.prompts.MaPLeCLIP.encode_image` returns with ``return_layers``.

    ``features``: the image embeddings ``(B, E)``.  ``layer_tokens``: the class token of the
    residual stream after each requested block, ``(B, len(return_layers), width)``, before
    ``ln_post`` and ``proj``.
    """

    features: torch.Tensor
    layer_tokens: torch.Tensor


def _open_clip_model(model) -> open_clip.CLIP:
    if isinstance(model, ClipBackbone):
        model = model.model
    if not isinstance(model, open_clip.CLIP):
        raise ValueError(
            f"model must be an open_clip.CLIP or a hyro_edu.clip.backbone.ClipBackbone, got {type(model).__name__}"
        )
    visual = model.visual
    if not isinstance(visual, VisionTransformer) or visual.attn_pool is not None:
        raise ValueError("model.visual must be an open_clip VisionTransformer without attentional pooling")
    if visual.pool_type != "tok" or visual.final_ln_after_pool:
        raise ValueError(
            "model.visual must pool the class token (pool_type 'tok') after ln_post, got "
            f"pool_type={visual.pool_type!r}, final_ln_after_pool={visual.final_ln_after_pool}"
        )
    return model


class MaPLeCLIP(nn.Module):
    r"""A frozen open_clip CLIP with MaPLe's deep vision-language prompts (see the module docstring).

    Parameters
    ----------
    model : an ``open_clip.CLIP`` with a ViT image tower that pools its class token, or a
        :class:`hyro_edu.clip.backbone.ClipBackbone` around one.  Its parameters are frozen
        (``requires_grad_(False)``) in place; it is kept as ``self.model``.
    n_ctx : number of context tokens :math:`n`, an integer in ``[1, context_length - 2]``
        (MaPLe: 2).
    depth : prompt depth :math:`J`, the number of blocks of each tower that receive prompts,
        an integer in ``[0, min(text layers, vision layers)]``; 0 is plain CLIP.  MaPLe's
        default is 9; tree alignment (:cite:`wu2026modality`) runs 3, which is the default here.
    ctx_init : text whose first ``n_ctx`` tokens initialise :math:`P_0` and which is the prompt
        prefix ("a photo of a"); ``None``: random :math:`P_0`, prefix "X X ...".
    seed : fixes the random initialisation (deep prompts, couplings) when given.

    Only the parameters of ``self.prompt_learner`` (a
    :class:`hyro_edu.tree_alignment.prompts.MaPLePromptLearner`) require gradients;
    ``num_prompt_parameters`` counts them.  Shapes: ``encode_text`` ``(C, E)``, ``encode_image``
    ``(B, E)``, ``forward`` logits ``(B, C)``.  Source: :cite:`khattak2023maple`,
    §3.2.
    """

    def __init__(
        self,
        model: Union[open_clip.CLIP, ClipBackbone],
        *,
        n_ctx: int = 2,
        depth: int = 3,
        ctx_init: Optional[str] = DEFAULT_CTX_INIT,
        seed: Optional[int] = None,
    ):
        super().__init__()
        model = _open_clip_model(model)
        context_length = int(model.context_length)
        n_ctx = _checks.integer(n_ctx, "n_ctx", 1, context_length - 2)
        depth = _checks.integer(depth, "depth", 0)
        n_text, n_vision = len(model.transformer.resblocks), len(model.visual.transformer.resblocks)
        if depth > min(n_text, n_vision):
            raise ValueError(
                f"depth must be at most {min(n_text, n_vision)}, the number of blocks of the shallower tower "
                f"(text {n_text}, vision {n_vision}), got {depth}"
            )
        if ctx_init is not None and not isinstance(ctx_init, str):
            raise ValueError(f"ctx_init must be a string or None, got {type(ctx_init).__name__}")
        model.requires_grad_(False)
        self.model = model
        self.n_ctx = n_ctx
        self.depth = depth
        self._tokenizer = open_clip.tokenizer.SimpleTokenizer(context_length=context_length)

        weight = model.token_embedding.weight
        init = None
        if ctx_init is not None and ctx_init.strip():
            prefix = " ".join(ctx_init.split())
            ids = self._tokenizer([prefix])[0]
            n_tokens = int((ids != 0).sum()) - 2  # without start and end of text
            if n_tokens >= n_ctx:
                with torch.no_grad():
                    init = model.token_embedding(ids[1 : 1 + n_ctx].to(weight.device))
            else:
                prefix = " ".join(["X"] * n_ctx)
        else:
            prefix = " ".join(["X"] * n_ctx)
        #: The words before the class name, "a photo of a" (or "X X ..." without an initialisation).
        self.prefix = prefix
        rng = torch.random.fork_rng(devices=[]) if seed is not None else contextlib.nullcontext()
        with rng:
            if seed is not None:
                torch.manual_seed(seed)
            self.prompt_learner = MaPLePromptLearner(
                n_ctx, depth, self.text_width, self.vision_width,
                ctx_init=init if depth > 0 else None, dtype=weight.dtype, device=weight.device,
            )

    # sizes ------------------------------------------------------------------------------
    @property
    def text_width(self) -> int:
        """The width :math:`D_t` of the text transformer, 512 for ViT-B/16."""
        return int(self.model.transformer.width)

    @property
    def vision_width(self) -> int:
        """The width :math:`D_v` of the image transformer, 768 for ViT-B/16."""
        return int(self.model.visual.transformer.width)

    @property
    def embed_dim(self) -> int:
        """The joint embedding size ``E``, 512 for ViT-B/16."""
        return int(self.model.visual.output_dim)

    @property
    def num_layers(self) -> int:
        """The number of blocks of the image transformer, 12 for ViT-B/16 (``return_layers`` lie below it)."""
        return len(self.model.visual.transformer.resblocks)

    @property
    def vanilla(self) -> bool:
        """Whether ``depth`` is 0, i.e. plain CLIP without prompts."""
        return self.depth == 0

    @property
    def num_prompt_parameters(self) -> int:
        """Numbers that require gradients, :func:`hyro_edu.tree_alignment.prompts.prompt_parameter_count`."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    # text -------------------------------------------------------------------------------
    def prompts_for(self, class_names: Sequence[str]) -> list[str]:
        """The sentences encoded for ``class_names``: ``f"{prefix} {name}."`` ("a photo of a cat.")."""
        if isinstance(class_names, str) or not isinstance(class_names, Sequence) or len(class_names) == 0:
            raise ValueError(f"class_names must be a non-empty sequence of strings, got {class_names!r}")
        for i, name in enumerate(class_names):
            if not isinstance(name, str) or not name.strip():
                raise ValueError(f"class_names[{i}] must be a non-empty string, got {name!r}")
        return [f"{self.prefix} {name}." for name in class_names]

    def tokenize(self, class_names: Sequence[str]) -> torch.Tensor:
        """Token ids ``(C, context_length)`` of the sentences ``prompts_for(class_names)``."""
        return self._tokenizer(self.prompts_for(class_names)).to(self.model.token_embedding.weight.device)

    def _tokens(self, texts) -> torch.Tensor:
        if not isinstance(texts, torch.Tensor):
            return self.tokenize(texts)
        length = int(self.model.context_length)
        if texts.dim() != 2 or texts.shape[1] != length or texts.shape[0] == 0 or texts.is_floating_point():
            raise ValueError(
                f"class_names must be strings or integer token ids (C, {length}) with C >= 1, "
                f"got a {texts.dtype} tensor of shape {tuple(texts.shape)}"
            )
        return texts.to(self.model.token_embedding.weight.device)

    def encode_text(
        self, class_names: Union[Sequence[str], torch.Tensor], *, normalize: bool = False
    ) -> torch.Tensor:
        r"""Class embeddings ``(C, E)`` of the prompted text tower (unit norm if ``normalize``).

        ``class_names``: strings (encoded as the sentences ``prompts_for(class_names)``) or token
        ids ``(C, context_length)``; with prompts, rows ``1 .. n_ctx`` of token ids are
        placeholders that :math:`P_0` replaces (give ids of sentences that start with
        ``prefix``).
        With ``depth = 0`` the result is open_clip's ``encode_text`` of the same tokens.
        """
        tokens = self._tokens(class_names)
        model = self.model
        cast = model.transformer.get_cast_dtype()
        prompts = self.prompt_learner.text_prompts()
        x = model.token_embedding(tokens).to(cast)  # (C, L, D_t)
        if prompts:
            x = _overwrite(x, prompts[0], 1)
        x = x + model.positional_embedding.to(cast)
        batch_first = model.transformer.batch_first
        for j, block in enumerate(model.transformer.resblocks):
            if 1 <= j < len(prompts):
                x = _overwrite(x, prompts[j], 1)
            x = _run_block(block, x, batch_first, attn_mask=model.attn_mask)
        x = model.ln_final(x)
        x = text_global_pool(x, tokens, model.text_pool_type, eos_token_id=getattr(model, "text_eos_id", None))
        if model.text_projection is not None:
            x = model.text_projection(x) if isinstance(model.text_projection, nn.Linear) else x @ model.text_projection
        return F.normalize(x, dim=-1) if normalize else x

    # images -----------------------------------------------------------------------------
    def _grid(self, images) -> tuple[int, int]:
        if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[1] != 3:
            shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
            raise ValueError(f"images must be a tensor (B, 3, H, W), got {shape}")
        p = int(self.model.visual.patch_size[0])
        h, w = images.shape[-2:]
        if h % p or w % p or h < p or w < p or images.shape[0] == 0:
            raise ValueError(
                f"images must be a non-empty batch with height and width positive multiples of the patch "
                f"size {p}, got shape {tuple(images.shape)}"
            )
        return h // p, w // p

    def _layers(self, return_layers) -> list[int]:
        n = self.num_layers
        if isinstance(return_layers, (int, str)) or not isinstance(return_layers, Sequence):
            raise ValueError(f"return_layers must be a sequence of block indices, got {return_layers!r}")
        out = []
        for i, b in enumerate(return_layers):
            if isinstance(b, bool) or not isinstance(b, int) or not -n <= b < n:
                raise ValueError(
                    f"return_layers[{i}] must be a block index in [{-n}, {n - 1}] (the image tower has {n} "
                    f"blocks), got {b!r}"
                )
            out.append(b % n)
        return out

    def encode_image(
        self,
        images: torch.Tensor,
        *,
        normalize: bool = False,
        return_layers: Optional[Sequence[int]] = None,
    ) -> Union[torch.Tensor, ImageEncoding]:
        r"""Image embeddings ``(B, E)`` of the prompted image tower (unit norm if ``normalize``).

        ``images``: normalised images ``(B, 3, H, W)``, ``H`` and ``W`` multiples of the patch
        size.  With ``return_layers`` (0-based block indices, negative ones counted from the end,
        e.g. ``(4, 7, 11)`` on ViT-B/16) the result is an
        :class:`hyro_edu.tree_alignment.prompts.ImageEncoding` ``(features, layer_tokens)``.
        ``layer_tokens[:, k]`` is ``x[:, 0]`` for the output ``x`` of block ``return_layers[k]``
        (``visual.transformer.resblocks[i]``): the class token of the residual stream, computed
        with the prompt tokens in the sequence, **before** ``ln_post`` and ``proj``; shape
        ``(B, len(return_layers), width)``.  The last block's entry is what ``ln_post`` and
        ``proj`` turn into ``features``; earlier entries are not passed through the later
        blocks.  With ``depth = 0`` the features are open_clip's ``encode_image``.
        """
        grid = self._grid(images)
        layers = None if return_layers is None else self._layers(return_layers)
        visual = self.model.visual
        prompts = self.prompt_learner.vision_prompts()
        x = visual.conv1(images.to(visual.conv1.weight.dtype))  # (B, D_v, h, w)
        x = x.flatten(2).transpose(1, 2)  # (B, h·w, D_v)
        cls = visual.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + interpolate_pos_embed(visual.positional_embedding, grid).to(x.dtype)
        x = visual.patch_dropout(x)
        if prompts:
            x = torch.cat([x, prompts[0].to(x.dtype).expand(x.shape[0], -1, -1)], dim=1)
        x = visual.ln_pre(x)  # (B, 1 + h·w + n_ctx, D_v)
        n = self.n_ctx
        batch_first = visual.transformer.batch_first
        stored = {}
        for j, block in enumerate(visual.transformer.resblocks):
            if 1 <= j < len(prompts):
                x = _overwrite(x, prompts[j], x.shape[1] - n)
            x = _run_block(block, x, batch_first)
            if layers is not None and j in layers:
                stored[j] = x[:, 0]
        pooled = visual.ln_post(x[:, 0])
        if visual.proj is not None:
            pooled = pooled @ visual.proj
        features = F.normalize(pooled, dim=-1) if normalize else pooled
        if layers is None:
            return features
        width = x.shape[-1]
        tokens = torch.stack([stored[b] for b in layers], dim=1) if layers else x.new_zeros(x.shape[0], 0, width)
        return ImageEncoding(features, tokens)

    def forward(self, images: torch.Tensor, class_names: Union[Sequence[str], torch.Tensor]) -> torch.Tensor:
        """CLIP logits ``(B, C)``: ``exp(logit_scale) · cos(image_b, class_c)`` (``logit_scale`` frozen)."""
        img = self.encode_image(images, normalize=True)
        txt = self.encode_text(class_names, normalize=True)
        return self.model.logit_scale.exp() * img @ txt.T


def _overwrite(x: torch.Tensor, rows: torch.Tensor, start: int) -> torch.Tensor:
    """``x`` ``(N, L, D)`` with tokens ``start .. start + len(rows) - 1`` replaced by ``rows`` for every item."""
    rows = rows.to(x.dtype).expand(x.shape[0], -1, -1)
    return torch.cat([x[:, :start], rows, x[:, start + rows.shape[1]:]], dim=1)


def _run_block(block: nn.Module, x: torch.Tensor, batch_first: bool, attn_mask=None) -> torch.Tensor:
    """One open_clip residual block on batch-first ``x`` ``(N, L, D)``, whatever the block's layout."""
    if batch_first:
        return block(x, attn_mask=attn_mask)
    return block(x.transpose(0, 1), attn_mask=attn_mask).transpose(0, 1)

