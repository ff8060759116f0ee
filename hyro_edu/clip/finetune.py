r"""Six ways to fine-tune CLIP's attention, chosen by one value: ``mode``.

Every mode freezes CLIP's own weights.  Five of them re-parametrise the attention weights of
**every layer of both towers** (the official CAT-Seg, HyperCLIP, HyRo and H-CLIP-style code all
filter on ``"transformer"``, which covers both encoders); ``frozen`` trains nothing
inside CLIP:

===============  ===========================================================================  =======================
mode             what is trained (per attention layer)                                        source
===============  ===========================================================================  =======================
``frozen``       nothing: CLIP computes exactly what the pretrained model computes            HyRo ablation (no S, no R)
``attention``    the Q and V weight matrices themselves (K, biases, out_proj stay frozen)     CAT-Seg (Cho et al.)
``hyperclip``    block Möbius scaling ``W' = log0(S ⊗_c exp0(W))`` row-wise, for Q, K and V   HyperCLIP (Peng et al.)
``rotation``     block Cayley rotation ``W' = log0(R · exp0(W))`` (no scaling)                HyRo ablation
``hyro``         scaling then rotation ``W' = log0(R · (S ⊗_c exp0(W)))``                     HyRo (Truong et al.)
``hclip``        block-orthogonal ``W_{q,k,v} R``, ``R_o W_o`` from one shared, mixed tensor  H-CLIP (Peng et al.)
===============  ===========================================================================  =======================

``frozen`` is the "neither radius nor rotation" row of HyRo's 2×2 ablation (only the decoder
trains).  It is *not* CAT-Seg's ``attention`` mode, which fine-tunes 20,447,232 numbers of CLIP on
ViT-B/16; the two rows differ in the papers' tables (HyRo's ablation row 11.4 / 17.6 / 29.8 /
56.2 / 94.8 / 75.9 against CAT-Seg's README row 12.0 / 19.0 / 31.8 / 57.5 / 94.6 / 77.3).

The curvature is fixed per tower (``c_text``, ``c_vision``; curvature ``-c`` with ``c > 0``).
Trainable parameter counts on ViT-B/16 (text 12 × 512, vision 12 × 768; tested):
``frozen`` 0; ``attention`` 20,447,232; ``hyperclip`` 5,898,240 (128-blocks); ``rotation``
11,796,480 (256-blocks, full Θ); ``hyro`` 17,694,720; ``hclip`` 7,867,824 (128-blocks, the
official relation) -- the numbers the official code's modules hold.

**Block sizes follow the backbone.**  ``scale_block``, ``rotation_block`` and ``hclip_block``
default to ``None``, which :meth:`FinetuneConfig.for_backbone` (called by
:func:`apply_finetuning`) replaces by :func:`default_block_sizes` of the two tower widths:

.. math::
    b = \max\{\, b' \ge 1 : b' \mid d_t,\ b' \mid d_v,\
        b' \le \lfloor b_{\text{code}} \cdot \min(1, \min(d_t, d_v) / 512) \rfloor \,\}

(:math:`d_t`, :math:`d_v`: the text and vision widths), with :data:`RELEASED_BLOCKS`
``b_code`` = 128 (S), 256 (R), 128 (H-CLIP), the released code's values for ViT-B/16, whose
narrower (text) tower is 512 wide.  In words: the released block size, shrunk in proportion for
a tower narrower than 512 (so such a tower keeps the released 4 S-blocks, 2 R-blocks and 4 H-CLIP
blocks), then the largest size at or below that which divides both widths.
ViT-B/16 (512, 768) and ViT-L/14 (768, 1024) get exactly 128, 256 and 128; the tiny CLIP
(64, 64) gets 16, 32 and 16.  An explicit value is used as given.

Mechanism: :meth:`hyro_edu.clip.backbone.ClipBackbone.register_qkv_adapter`
(``torch.nn.utils.parametrize``): the frozen ``in_proj_weight`` stays in place and every forward
pass -- ordinary, CAT-Seg's dense last layer, text -- uses the adapted weights.  H-CLIP also
re-parametrises ``out_proj.weight``.  H-CLIP's blocks all come from one relation module; inside
:meth:`Finetuning.shared_blocks` they are computed once and reused by every layer (the training
model enters it once per forward pass).  ``frozen`` registers nothing.  :func:`apply_finetuning`
builds every adapter before it touches the backbone, and :func:`unchanged_on_error` undoes a
registration that fails half-way: a call that raises leaves the backbone as it was.

Sources: :cite:`cho2024catseg` (``attention``), :cite:`peng2025hyperclip` (``hyperclip``),
:cite:`truong2026hyro` (``rotation``, ``hyro``), :cite:`peng2025hclip` (``hclip``); block
sizes and counts from the released code (``SJTU-DeepVisionLab/HyperCLIP`` and
``tmhoanggg/HyRo``, ``cat_seg/third_party/model_hyperbolic.py``; ``ZhaoYi-10-13/HPS-Seg``,
``cat_seg/third_party/oft_se_qkv_relation_vision_train_ortho_relation_free_half.py``).
"""
from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn
from torch.nn.utils import parametrize

from hyro_edu.clip.backbone import ClipBackbone
from hyro_edu.core import checks as _checks
from hyro_edu.geometry.cayley import num_blocks
from hyro_edu.nn.hyperbolic_adapter import MARGINS, HyperbolicAdapter
from hyro_edu.nn.hyperspherical import HCLIPLayout, HCLIPRelation, oft_weight

__all__ = [
    "MODES",
    "TOWERS",
    "HCLIP_RELATIONS",
    "RELEASED_BLOCKS",
    "default_block_sizes",
    "FinetuneConfig",
    "Finetuning",
    "apply_finetuning",
    "unchanged_on_error",
]

MODES = ("frozen", "attention", "hyperclip", "rotation", "hyro", "hclip")
TOWERS = ("text", "visual")
#: H-CLIP's relation modules (:class:`hyro_edu.nn.hyperspherical.HCLIPRelation`).
HCLIP_RELATIONS = ("official", "gated", "tproduct", "none")

#: The block sizes of the released code on ViT-B/16: 128 for S (HyperCLIP, HyRo), 256 for R
#: (HyRo), 128 for H-CLIP (the HPS-Seg code).  Other sizes (e.g. those of the trainer's
#: ``"paper"`` preset) are passed explicitly.
RELEASED_BLOCKS = {"scale_block": 128, "rotation_block": 256, "hclip_block": 128}
#: The narrower (text) tower of ViT-B/16, for which :data:`RELEASED_BLOCKS` were chosen.
_RELEASED_WIDTH = 512
_BLOCK_FIELDS = tuple(RELEASED_BLOCKS)


def default_block_sizes(text_width: int, vision_width: int) -> dict[str, int]:
    r"""The block sizes for towers of widths ``text_width`` and ``vision_width``.

    For each of :data:`RELEASED_BLOCKS`:
    :math:`b = \max\{b' : b' \mid d_t,\ b' \mid d_v,\ b' \le \lfloor b_{\text{code}}
    \min(1, \min(d_t, d_v)/512)\rfloor\}` (at least 1): the released size, shrunk in proportion
    for a tower narrower than ViT-B/16's 512-wide text tower, then lowered to a common divisor of
    both widths.  ``(512, 768)`` (ViT-B/16) and ``(768, 1024)`` (ViT-L/14) give
    ``{"scale_block": 128, "rotation_block": 256, "hclip_block": 128}``; ``(64, 64)`` (the tiny
    CLIP) gives 16, 32 and 16.
    """
    d_t = _checks.integer(text_width, "text_width", 1)
    d_v = _checks.integer(vision_width, "vision_width", 1)
    narrow = min(d_t, d_v)
    sizes = {}
    for name, code in RELEASED_BLOCKS.items():
        cap = max(1, code * min(narrow, _RELEASED_WIDTH) // _RELEASED_WIDTH)
        sizes[name] = next(b for b in range(cap, 0, -1) if d_t % b == 0 and d_v % b == 0)
    return sizes


@dataclass(frozen=True)
class FinetuneConfig:
    """How to fine-tune: the mode and its geometry.  Every field is checked at construction.

    ``mode``: one of :data:`MODES`.  ``c_text``/``c_vision``: curvature parameters (curvature
    ``-c``, ``c > 0``) of the hyperbolic modes; the released HyRo code runs 1.0 and 0.01, the HyRo
    paper states 0.01 (:cite:`truong2026hyro`).  ``scale_block``/``rotation_block``: block sizes of
    S and R; ``hclip_block``: H-CLIP's block size; ``None`` (default) derives them from the
    backbone (:func:`default_block_sizes`: 128, 256, 128 on ViT-B/16, the released code's values).
    ``margin``: ``"official"``, the released map with its constants (cap ``(1 - 1e-3)/sqrt(c)``
    after S, no projection after exp0), or ``"dtype"``, the package's variant (``sqrt(eps)``
    margins; see :mod:`hyro_edu.nn.hyperbolic_adapter`).  ``hclip_relation``: one of
    :data:`HCLIP_RELATIONS`; ``hclip_vision_free``: how many of the last vision layers use free
    (non-orthogonal) blocks, an integer ``>= 0`` (at most the number of vision layers, checked by
    :func:`apply_finetuning`), or ``None``: all, as the HPS-Seg code runs.
    """

    mode: str = "hyro"
    c_text: float = 1.0
    c_vision: float = 0.01
    scale_block: Optional[int] = None
    rotation_block: Optional[int] = None
    margin: str = "official"
    hclip_block: Optional[int] = None
    hclip_relation: str = "official"
    hclip_vision_free: Optional[int] = None

    def __post_init__(self):
        _checks.choice(self.mode, "mode", MODES)
        for name in ("c_text", "c_vision"):
            value = getattr(self, name)
            if isinstance(value, torch.Tensor):
                raise ValueError(f"{name} must be a number > 0 (the curvature is -{name}), got a tensor")
            object.__setattr__(self, name, _checks.curvature(value, name))
        for name in _BLOCK_FIELDS:
            if getattr(self, name) is not None:
                object.__setattr__(self, name, _checks.integer(getattr(self, name), name, 1))
        _checks.choice(self.margin, "margin", tuple(MARGINS))
        _checks.choice(self.hclip_relation, "hclip_relation", HCLIP_RELATIONS)
        if self.hclip_vision_free is not None:
            value = _checks.integer(self.hclip_vision_free, "hclip_vision_free", 0)
            object.__setattr__(self, "hclip_vision_free", value)

    def for_backbone(self, backbone: ClipBackbone) -> "FinetuneConfig":
        """A copy with every ``None`` block size replaced by :func:`default_block_sizes` of
        ``backbone``'s tower widths (explicit values are kept)."""
        defaults = default_block_sizes(backbone.width("text"), backbone.width("visual"))
        return dataclasses.replace(
            self, **{k: v for k, v in defaults.items() if getattr(self, k) is None}
        )


class _QVAdapter(nn.Module):
    """``attention`` mode: trainable copies of ``W_q`` and ``W_v``; ``W_k`` passes through frozen."""

    def __init__(self, wq: torch.Tensor, wv: torch.Tensor):
        super().__init__()
        self.q = nn.Parameter(wq.detach().clone())
        self.v = nn.Parameter(wv.detach().clone())

    def forward(self, wq, wk, wv):
        return self.q, wk, self.v


class _HyperbolicQKV(nn.Module):
    """``hyperclip``/``rotation``/``hyro``: one :class:`HyperbolicAdapter` for each of Q, K and V."""

    def __init__(self, dim: int, mode: str, *, c: float, config: FinetuneConfig):
        super().__init__()
        kwargs = dict(c=c, scale_block=config.scale_block, rotation_block=config.rotation_block,
                      margin=config.margin)
        self.q = HyperbolicAdapter.from_mode(dim, mode, **kwargs)
        self.k = HyperbolicAdapter.from_mode(dim, mode, **kwargs)
        self.v = HyperbolicAdapter.from_mode(dim, mode, **kwargs)

    def forward(self, wq, wk, wv):
        return self.q.adapt_weight(wq), self.k.adapt_weight(wk), self.v.adapt_weight(wv)


class _HCLIPQKV(nn.Module):
    """``hclip``: ``W_{q,k,v} ← W_{q,k,v}·blockdiag(R_{q,k,v})`` with this layer's blocks."""

    def __init__(self, owner: "Finetuning", layer: int, modality: str):
        super().__init__()
        self._owner = [owner]  # a list: not registered as a submodule (no cycle in the module tree)
        self.layer, self.modality = layer, modality

    def forward(self, wq, wk, wv):
        blocks = self._owner[0].layer_blocks(self.layer, self.modality)
        return tuple(oft_weight(w, blocks[i]) for i, w in enumerate((wq, wk, wv)))


class _HCLIPOut(nn.Module):
    """``hclip``: ``W_o ← blockdiag(R_o)·W_o`` (left multiplication, as the official code does)."""

    def __init__(self, owner: "Finetuning", layer: int, modality: str):
        super().__init__()
        self._owner = [owner]
        self.layer, self.modality = layer, modality

    def forward(self, weight):
        blocks = self._owner[0].layer_blocks(self.layer, self.modality)
        return oft_weight(weight, blocks[3], side="left")


class Finetuning(nn.Module):
    """The trainable part of a fine-tuned CLIP: made by :func:`apply_finetuning`.

    Attributes: ``config``; ``adapters`` (``ModuleDict`` ``"<tower>_<layer>"`` -> adapter, for
    the per-layer modes); ``relation`` (H-CLIP's shared :class:`~hyro_edu.nn.hyperspherical.HCLIPRelation`).
    :meth:`parameter_count` counts the trainable parameters.
    """

    def __init__(self, config: FinetuneConfig):
        super().__init__()
        self.config = config
        self.adapters = nn.ModuleDict()
        self.relation: Optional[HCLIPRelation] = None
        self._shared: Optional[torch.Tensor] = None

    # H-CLIP's shared blocks ------------------------------------------------------------------
    @contextlib.contextmanager
    def shared_blocks(self):
        """Within this context H-CLIP's blocks are computed once and reused by every layer.

        Outside it each layer recomputes them (correct, but ``2 · layers`` times the work).
        Other modes ignore it.
        """
        if self.relation is None or self._shared is not None:
            yield
            return
        self._shared = self.relation()
        try:
            yield
        finally:
            self._shared = None

    def layer_blocks(self, layer: int, modality: str) -> torch.Tensor:
        """``(4, K_modality, b, b)``: H-CLIP's q, k, v, o blocks of one layer of one tower."""
        return self.relation.layer_blocks(layer, modality, self._shared)

    def parameter_count(self) -> int:
        """Number of trainable parameters."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)


@contextlib.contextmanager
def unchanged_on_error(backbone: nn.Module):
    """Within this context, an exception restores ``backbone`` as it was on entry, then propagates.

    Restored: every parameter's ``requires_grad``, every submodule's train/eval mode, and the
    parametrizations (those registered inside the context are removed, the original tensors
    come back).  Parametrizations present on entry are not touched.  Used by
    :func:`apply_finetuning` and :func:`hyro_edu.segmentation.model.build_segmenter`.
    """
    flags = [(p, p.requires_grad) for p in backbone.parameters()]
    modes = [(m, m.training) for m in backbone.modules()]
    before = {
        (id(m), name)
        for m in backbone.modules()
        if parametrize.is_parametrized(m)
        for name in m.parametrizations
    }
    try:
        yield
    except BaseException:
        for m in list(backbone.modules()):
            if parametrize.is_parametrized(m):
                for name in [n for n in m.parametrizations if (id(m), n) not in before]:
                    parametrize.remove_parametrizations(m, name, leave_parametrized=False)
        for p, flag in flags:
            p.requires_grad_(flag)
        for m, training in modes:
            m.training = training
        raise


def _check_unadapted(backbone: ClipBackbone) -> None:
    for tower in TOWERS:
        for attn in backbone.attention_layers(tower):
            if parametrize.is_parametrized(attn) or parametrize.is_parametrized(attn.out_proj):
                raise ValueError(
                    "backbone already carries adapters (a parametrized attention weight): build a "
                    "fresh backbone, or call backbone.remove_qkv_adapters() first (and remove "
                    "H-CLIP's out_proj parametrizations)"
                )


def _hclip_relation(backbone: ClipBackbone, config: FinetuneConfig) -> HCLIPRelation:
    """H-CLIP's shared relation module for ``backbone``, every argument checked by its config name."""
    layers = backbone.num_layers("text")
    if backbone.num_layers("visual") != layers:
        raise ValueError(
            "hclip mode needs the same number of layers in both towers (one shared tensor), got "
            f"{layers} (text) and {backbone.num_layers('visual')} (visual)"
        )
    text_w, vis_w = backbone.width("text"), backbone.width("visual")
    num_blocks(text_w, config.hclip_block, name="hclip_block")
    num_blocks(vis_w, config.hclip_block, name="hclip_block")
    free = config.hclip_vision_free
    if free is not None and free > layers:
        raise ValueError(
            f"hclip_vision_free must be an integer in [0, {layers}] (the number of vision layers) "
            f"or None, got {free!r}"
        )
    layout = HCLIPLayout(block_size=config.hclip_block, num_layers=layers, text_width=text_w,
                         vision_width=vis_w)
    return HCLIPRelation(layout, relation=config.hclip_relation, vision_free_last=free)


def apply_finetuning(backbone: ClipBackbone, config: FinetuneConfig) -> Finetuning:
    """Freeze ``backbone`` and re-parametrise its attention layers as ``config.mode`` says.

    ``frozen`` only freezes (no adapter, 0 trainable parameters).  Returns the
    :class:`Finetuning` module that holds every trainable parameter (register it in the model that
    trains, e.g. as an attribute); its ``config`` is ``config.for_backbone(backbone)``, with the
    block sizes actually used.  The backbone's own parameters get ``requires_grad=False``; a
    backbone that already carries adapters is rejected.

    Every adapter is built and checked before the backbone is touched, and the registration runs
    inside :func:`unchanged_on_error`: a call that raises leaves the backbone as it was
    (``requires_grad`` flags, parametrizations, train/eval modes), so it can be repeated with the
    argument fixed.
    """
    if not isinstance(backbone, ClipBackbone):
        raise ValueError(f"backbone must be a hyro_edu.clip.backbone.ClipBackbone, got {type(backbone).__name__}")
    if not isinstance(config, FinetuneConfig):
        raise ValueError(f"config must be a FinetuneConfig, got {type(config).__name__}")
    _check_unadapted(backbone)
    config = config.for_backbone(backbone)
    ft = Finetuning(config)
    mode = config.mode
    # 1. build: (tower, layer, Q/K/V adapter, out_proj adapter or None), nothing registered yet
    plan = []
    if mode == "hclip":
        ft.relation = _hclip_relation(backbone, config)
    if mode != "frozen":  # frozen: the decoder alone trains; CLIP is the pretrained model, unchanged
        for tower in TOWERS:
            dim = backbone.width(tower)
            c = config.c_text if tower == "text" else config.c_vision
            modality = "text" if tower == "text" else "vision"
            for layer in range(backbone.num_layers(tower)):
                out = None
                if mode == "attention":
                    qkv = backbone.qkv_weights(tower, layer)
                    adapter = _QVAdapter(qkv.q, qkv.v)
                elif mode == "hclip":
                    adapter, out = _HCLIPQKV(ft, layer, modality), _HCLIPOut(ft, layer, modality)
                else:
                    adapter = _HyperbolicQKV(dim, mode, c=c, config=config)
                if mode != "hclip":  # H-CLIP's parameters live in ft.relation
                    ft.adapters[f"{tower}_{layer}"] = adapter
                plan.append((tower, layer, adapter, out))
    # 2. register, undone if anything fails half-way
    with unchanged_on_error(backbone):
        backbone.requires_grad_(False)
        for tower, layer, adapter, out in plan:
            if out is not None:
                attn = backbone.attention_layers(tower)[layer]
                parametrize.register_parametrization(attn.out_proj, "weight", out)
            backbone.register_qkv_adapter(tower, layer, adapter)
        # The parametrizations keep the frozen originals; make sure nothing frozen is trainable.
        for name, p in backbone.named_parameters():
            if ".original" in name:
                p.requires_grad_(False)
    return ft
