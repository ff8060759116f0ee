r"""Six ways to fine-tune CLIP's attention, chosen by one value: ``mode``.

Every mode freezes CLIP's own weights.  Five of them re-parametrise the attention weights of
**every layer of both towers** (the official CAT-Seg, HyperCLIP, HyRo and H-CLIP-style code all
filter on ``"transformer"``, which covers both encoders); ``frozen`` trains nothing
inside CLIP:

===============  ==========================================================================  =======================
mode             what is trained (per attention layer)                                        source
===============  ==========================================================================  =======================
``frozen``       nothing: CLIP computes exactly what the pretrained model computes            HyRo ablation (no S, no R)
``attention``    the Q and V weight matrices themselves (K, biases, out_proj stay frozen)     CAT-Seg (Cho et al.)
``hyperclip``    block Möbius scaling ``W' = log0(S ⊗_c exp0(W))`` row-wise, for Q, K and V    HyperCLIP (Peng et al.)
``rotation``     block Cayley rotation ``W' = log0(R · exp0(W))`` (no scaling)                 HyRo ablation
``hyro``         scaling then rotation ``W' = log0(R · (S ⊗_c exp0(W)))``                      HyRo (Truong et al.)
``hclip``        block-orthogonal ``W_{q,k,v} R``, ``R_o W_o`` from one shared, mixed tensor   H-CLIP (Peng et al.)
===============  ==========================================================================  =======================

``frozen`` is the "neither radius nor rotation" row of HyRo's 2×2 ablation (only the decoder
trains).  It is *not* CAT-Seg's ``attention`` mode, which fine-tunes 20,447,232 numbers of CLIP on
ViT-B/16; the two rows differ in the papers' tables (HyRo's ablation row 11.4 / 17.6 / 29.8 /
56.2 / 94.8 / 75.9 against CAT-Seg's README row 12.0 / 19.0 / 31.8 / 57.5 / 94.6 / 77.3).

The curvature is fixed per tower (``c_text``, ``c_vision``; curvature ``-c`` with ``c > 0``).
Trainable parameter counts on ViT-B/16 (text 12 × 512, vision 12 × 768; tested):
``frozen`` 0; ``attention`` 20,447,232; ``hyperclip`` 5,898,240 (128-blocks); ``rotation``
11,796,480 (256-blocks, full Θ); ``hyro`` 17,694,720; ``hclip`` 7,867,824 (128-blocks, the
official relation) -- the numbers the official code's modules hold.

Mechanism: :meth:`hyro_edu.clip.backbone.ClipBackbone.register_qkv_adapter`
(``torch.nn.utils.parametrize``): the frozen ``in_proj_weight`` stays in place and every forward
pass -- ordinary, CAT-Seg's dense last layer, text -- uses the adapted weights.  H-CLIP also
re-parametrises ``out_proj.weight``.  H-CLIP's blocks all come from one relation module; inside
:meth:`Finetuning.shared_blocks` they are computed once and reused by every layer (the training
model enters it once per forward pass).  ``frozen`` registers nothing.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn
from torch.nn.utils import parametrize

from hyro_edu.clip.backbone import ClipBackbone
from hyro_edu.nn.hyperbolic_adapter import MARGINS, HyperbolicAdapter
from hyro_edu.nn.hyperspherical import HCLIPLayout, HCLIPRelation, oft_weight

__all__ = ["MODES", "TOWERS", "FinetuneConfig", "Finetuning", "apply_finetuning"]

MODES = ("frozen", "attention", "hyperclip", "rotation", "hyro", "hclip")
TOWERS = ("text", "visual")


@dataclass(frozen=True)
class FinetuneConfig:
    """How to fine-tune: the mode and its geometry.

    ``c_text``/``c_vision``: curvature parameters (curvature ``-c``) of the hyperbolic modes; the
    official code runs 1.0 and 0.01, the HyRo paper states 0.01.  ``scale_block``/``rotation_block``:
    block sizes of S and R (official 128 and 256).  ``margin``: ``"official"``, the
    released map with its constants (cap ``(1 - 1e-3)/sqrt(c)`` after S, no projection after exp0),
    or ``"dtype"``, the package's variant (``sqrt(eps)`` margins; see
    :mod:`hyro_edu.nn.hyperbolic_adapter`).  ``hclip_block``: H-CLIP's block size
    (128); ``hclip_relation``: ``"official"``, ``"gated"``, ``"tproduct"`` or ``"none"``;
    ``hclip_vision_free``: how many of the last vision layers use free (non-orthogonal) blocks
    (``None``: all, as the HPS code runs).
    """

    mode: str = "hyro"
    c_text: float = 1.0
    c_vision: float = 0.01
    scale_block: int = 128
    rotation_block: int = 256
    margin: str = "official"
    hclip_block: int = 128
    hclip_relation: str = "official"
    hclip_vision_free: Optional[int] = None

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        for name in ("c_text", "c_vision"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ValueError(f"{name} must be a number > 0 (the curvature is -{name}), got {value!r}")
        for name in ("scale_block", "rotation_block", "hclip_block"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.margin not in MARGINS:
            raise ValueError(f"margin must be one of {tuple(MARGINS)}, got {self.margin!r}")


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


def apply_finetuning(backbone: ClipBackbone, config: FinetuneConfig) -> Finetuning:
    """Freeze ``backbone`` and re-parametrise its attention layers as ``config.mode`` says.

    ``frozen`` only freezes (no adapter, 0 trainable parameters).  Returns the
    :class:`Finetuning` module that holds every trainable parameter (register it in the model that
    trains, e.g. as an attribute).  The backbone's own parameters get
    ``requires_grad=False``; a backbone that already carries adapters is rejected.
    """
    if not isinstance(backbone, ClipBackbone):
        raise ValueError(f"backbone must be a hyro_edu.clip.backbone.ClipBackbone, got {type(backbone).__name__}")
    if not isinstance(config, FinetuneConfig):
        raise ValueError(f"config must be a FinetuneConfig, got {type(config).__name__}")
    for tower in TOWERS:
        for attn in backbone.attention_layers(tower):
            if parametrize.is_parametrized(attn):
                raise ValueError("backbone already carries adapters: call backbone.remove_qkv_adapters() first")
    backbone.requires_grad_(False)
    ft = Finetuning(config)
    mode = config.mode
    if mode == "frozen":  # the decoder alone trains; CLIP is the pretrained model, unchanged
        return ft
    if mode == "hclip":
        text_w, vis_w = backbone.width("text"), backbone.width("visual")
        layers = backbone.num_layers("text")
        if backbone.num_layers("visual") != layers:
            raise ValueError(
                "hclip mode needs the same number of layers in both towers (one shared tensor), got "
                f"{layers} (text) and {backbone.num_layers('visual')} (visual)"
            )
        layout = HCLIPLayout(block_size=config.hclip_block, num_layers=layers, text_width=text_w, vision_width=vis_w)
        ft.relation = HCLIPRelation(layout, relation=config.hclip_relation, vision_free_last=config.hclip_vision_free)
    for tower in TOWERS:
        dim = backbone.width(tower)
        c = config.c_text if tower == "text" else config.c_vision
        modality = "text" if tower == "text" else "vision"
        for layer, attn in enumerate(backbone.attention_layers(tower)):
            if mode == "attention":
                qkv = backbone.qkv_weights(tower, layer)
                adapter = _QVAdapter(qkv.q, qkv.v)
            elif mode == "hclip":
                adapter = _HCLIPQKV(ft, layer, modality)
                parametrize.register_parametrization(attn.out_proj, "weight", _HCLIPOut(ft, layer, modality))
            else:
                adapter = _HyperbolicQKV(dim, mode, c=c, config=config)
            backbone.register_qkv_adapter(tower, layer, adapter)
            if mode != "hclip":
                ft.adapters[f"{tower}_{layer}"] = adapter
    # The parametrizations keep the frozen originals; make sure nothing frozen is trainable.
    for name, p in backbone.named_parameters():
        if ".original" in name:
            p.requires_grad_(False)
    return ft
