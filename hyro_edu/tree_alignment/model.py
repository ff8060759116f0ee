r"""The whole method: MaPLe CLIP, the image as a tree, heterogeneous curvatures and the losses (:cite:`wu2026modality`).

.. math::
    J = w_{\rm mta}\,\mathcal L_{\rm DTL} + \lambda\,\mathcal L_{\rm NCL} + \alpha\,L_{\rm align},
    \qquad s(x, v) = e^{\tau}\cos\big(\mathrm{fused}(x, t_v),\ t_v\big),

with the defaults :math:`w_{\rm mta} = 1`, :math:`\lambda = 0.5`, :math:`\alpha = 0.5` of every
official config.  :math:`s(x, v)` is the score of image ``x`` for tree node ``v`` (one column
per non-root node of a :class:`hyro_edu.hierarchy.taxonomic_tree.TaxonomicTree`, the ProTeCt
parameters of :cite:`wu2024protect`): :math:`t_v` is the MaPLe text feature of the prompt
"a photo of a {name}." (:class:`hyro_edu.tree_alignment.prompts.MaPLeCLIP`,
:cite:`khattak2023maple`) and :math:`\mathrm{fused}(x, t_v)` the visual feature that :math:`t_v`
picks from the image's level features by the text-guided cross-attention
(:mod:`hyro_edu.tree_alignment.features`).  Because the query is per node, one score table
``(B, num_params)`` yields every classifier of the tree (leaves, each internal node's children,
every tree cut), so the ProTeCt losses (:mod:`hyro_edu.hierarchy.taxonomic_losses`) and the
LA / HCA / MTA metrics (:mod:`hyro_edu.hierarchy.taxonomic_metrics`) read it directly.  The
official engine re-runs the image tower once per internal node; that is the same maths.

**Variants** (``VARIANTS``, ``VARIANT_PARTS``: the rows of the design notes' CPU plan):

=========  ==========================  ==================  ==========================
variant    visual feature              loss                curvatures
=========  ==========================  ==================  ==========================
vanilla    final class token           CE over the leaves  --
protect    final class token           DTL + λ NCL         --
sym        levels + cross-attention    DTL + λ NCL         -- (α = 0)
euc        levels + cross-attention    + α L_align         Euclidean cones
hypv1      levels + cross-attention    + α L_align         ``learn_common``
hypv2      levels + cross-attention    + α L_align         ``learn3``
full       levels + cross-attention    + α L_align         ``learn2derive1``
=========  ==========================  ==================  ==========================

**The trees of a batch** (official ``engine.train_one_epoch``): for sample ``b`` with leaf
:math:`y_b` and root-excluded path :math:`v_1, \dots, v_D` (depth 1 to the leaf), the text tree
is :math:`\hat t_{v_d}` and the image tree :math:`\widehat{\mathrm{fused}}(x_b, t_{v_d})`, unit
vectors, ``(B, D_max, E)``; shorter paths are padded and masked (``padding``,
:mod:`hyro_edu.tree_alignment.alignment`).  The radii of the two trees feed the intermediate
curvature (:class:`hyro_edu.tree_alignment.manifolds.HeterogeneousCurvatures`).  All hyperbolic
maths (exponential maps, cones, the golden-section search) runs in float32 even under autocast.

Trainable: the prompt learner, the cross-attention's Q, K, V projections (the output projection
is a frozen identity) and the curvatures; every CLIP weight and ``logit_scale`` is frozen.

References
----------
* Wu, Fan, Wu, Gao, Li, Jia & Harandi, *Modality Alignment across Trees on Heterogeneous
  Hyperbolic Manifolds* (ICLR 2026): method and the ablation table; official code ``engine.py``
  and ``models/maple.py`` read for facts only.
* Wu, Ho & Vasconcelos, *ProTeCt* (CVPR 2024): NCL, DTL, the per-node prompts.
"""
from __future__ import annotations

from typing import Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

from hyro_edu.core import checks as _checks
from hyro_edu.hierarchy.taxonomic_losses import dynamic_tree_cut_loss, node_centric_loss
from hyro_edu.hierarchy.taxonomic_tree import TaxonomicTree, clean_name
from hyro_edu.tree_alignment.alignment import PADDINGS, tree_alignment_loss, tree_radius
from hyro_edu.tree_alignment.features import (PROPAGATIONS, TextGuidedCrossAttention, level_logits,
                                              semantic_visual_features)
from hyro_edu.tree_alignment.manifolds import HeterogeneousCurvatures
from hyro_edu.tree_alignment.prompts import DEFAULT_CTX_INIT, MaPLeCLIP

__all__ = ["VARIANTS", "VARIANT_PARTS", "TreeAlignmentModel", "path_table"]

#: The rows of the CPU plan, in table order.
VARIANTS = ("vanilla", "protect", "sym", "euc", "hypv1", "hypv2", "full")
#: What each variant switches on: ``hierarchical`` (level features and cross-attention),
#: ``loss`` (``"leaf_ce"`` or ``"protect"``), ``align`` (the alignment loss) and ``curv_version``
#: (:data:`hyro_edu.tree_alignment.manifolds.CURV_VERSIONS`; ``None`` when nothing is aligned).
VARIANT_PARTS = {
    "vanilla": dict(hierarchical=False, loss="leaf_ce", align=False, curv_version=None),
    "protect": dict(hierarchical=False, loss="protect", align=False, curv_version=None),
    "sym": dict(hierarchical=True, loss="protect", align=False, curv_version=None),
    "euc": dict(hierarchical=True, loss="protect", align=True, curv_version="euclidean"),
    "hypv1": dict(hierarchical=True, loss="protect", align=True, curv_version="learn_common"),
    "hypv2": dict(hierarchical=True, loss="protect", align=True, curv_version="learn3"),
    "full": dict(hierarchical=True, loss="protect", align=True, curv_version="learn2derive1"),
}


def path_table(tree: TaxonomicTree) -> tuple[torch.Tensor, torch.Tensor]:
    """``(paths, lengths)``: per leaf label, the parameter indices of its root-excluded path.

    ``paths (num_labels, D_max)`` int64, depth 1 first, padded with the leaf's own parameter;
    ``lengths (num_labels,)`` the path lengths (the leaves' depths).  On the toy world every
    leaf has depth 3.
    """
    rows = [[v - 1 for v in reversed([leaf, *tree.ancestors(leaf)[:-1]])] for leaf in tree.leaves]
    depth = max(len(r) for r in rows)
    paths = torch.tensor([r + [r[-1]] * (depth - len(r)) for r in rows], dtype=torch.long)
    return paths, torch.tensor([len(r) for r in rows], dtype=torch.long)


class TreeAlignmentModel(nn.Module):
    r"""Tree alignment on a frozen CLIP (module docstring): per-node scores and the training loss.

    Parameters
    ----------
    clip : an ``open_clip.CLIP`` with a ViT image tower, or a
        :class:`hyro_edu.clip.backbone.ClipBackbone` around one (frozen in place).
    tree : the training tree, a :class:`hyro_edu.hierarchy.taxonomic_tree.TaxonomicTree`; its
        parameters' cleaned names (``prompt_names``) are the prompts.
    variant : one of ``VARIANTS``.
    n_ctx, prompt_depth, ctx_init : MaPLe's context length, prompt depth :math:`J` and
        initialisation (:class:`hyro_edu.tree_alignment.prompts.MaPLeCLIP`).
    layers : the 0-based vision blocks whose class tokens form the image's levels, strictly
        increasing (ViT-B/16 ``(4, 7, 11)``, the tiny CLIP ``(1, 2, 3)``).
    propagation : ``"official"`` or ``"invite"`` (:mod:`hyro_edu.tree_alignment.features`).
    num_heads : heads of the cross-attention (official 1).
    curv_init, c_image, c_text, c_inter, curv_variant : the curvatures' clamp centre, initial
        values and ``D`` variant (:class:`hyro_edu.tree_alignment.manifolds.HeterogeneousCurvatures`).
    scale_image, scale_text, K : the scaling factors :math:`s_i, s_t` and the cone constant.
    mta_weight, node_weight, align_weight : :math:`w_{\rm mta}`, :math:`\lambda`, :math:`\alpha`.
    cut_dropout : the DTL's tree-cut dropout rate (ProTeCt 0.1).
    padding : ``"mask"`` or ``"zeros"`` for short paths (:mod:`hyro_edu.tree_alignment.alignment`).
    seed : fixes the random initialisation of the prompts and the cross-attention.

    Shapes: ``scores(images)`` ``(B, num_params)``; ``forward(images, labels)`` a dict with the
    scalar ``loss`` and its terms.  Raises ``ValueError`` for an unknown variant, a layer beyond
    the image tower's depth, or curvature inits outside the clamp range.
    """

    def __init__(
        self,
        clip,
        tree: TaxonomicTree,
        *,
        variant: str = "full",
        n_ctx: int = 2,
        prompt_depth: int = 2,
        ctx_init: Optional[str] = DEFAULT_CTX_INIT,
        layers: Sequence[int] = (1, 2, 3),
        propagation: str = "official",
        num_heads: int = 1,
        curv_init: float = 0.05,
        c_image: Optional[float] = 0.05,
        c_text: Optional[float] = 0.025,
        c_inter: Optional[float] = 0.025,
        curv_variant: str = "official",
        scale_image: float = 1.0,
        scale_text: float = 1.0,
        K: float = 0.1,
        mta_weight: float = 1.0,
        node_weight: float = 0.5,
        align_weight: float = 0.5,
        cut_dropout: float = 0.1,
        padding: str = "mask",
        seed: Optional[int] = None,
    ):
        super().__init__()
        if not isinstance(tree, TaxonomicTree):
            raise ValueError(
                f"tree must be a hyro_edu.hierarchy.taxonomic_tree.TaxonomicTree, got {type(tree).__name__}")
        self.variant = _checks.choice(variant, "variant", VARIANTS)
        self.parts = dict(VARIANT_PARTS[self.variant])
        self.propagation = _checks.choice(propagation, "propagation", PROPAGATIONS)
        self.padding = _checks.choice(padding, "padding", PADDINGS)
        self.tree = tree
        self.clip = MaPLeCLIP(clip, n_ctx=n_ctx, depth=prompt_depth, ctx_init=ctx_init, seed=seed)
        n = self.clip.num_layers
        layers = tuple(layers)
        for i, b in enumerate(layers):
            _checks.integer(b, f"layers[{i}]", 0, n - 1)
        if not layers or any(b <= a for a, b in zip(layers, layers[1:])):
            raise ValueError(
                f"layers must be a non-empty, strictly increasing list of block indices, got {list(layers)}")
        self.layers = layers
        self.scale_image, self.scale_text, self.K = float(scale_image), float(scale_text), float(K)
        self.mta_weight, self.node_weight = float(mta_weight), float(node_weight)
        self.align_weight = float(align_weight) if self.parts["align"] else 0.0
        self.cut_dropout = float(cut_dropout)
        if self.parts["hierarchical"]:
            if seed is not None:
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(seed + 1)
                    self.cross_attn = TextGuidedCrossAttention(self.clip.embed_dim, num_heads=num_heads)
            else:
                self.cross_attn = TextGuidedCrossAttention(self.clip.embed_dim, num_heads=num_heads)
            self.cross_attn.to(self.clip.model.logit_scale.device)
        else:
            self.cross_attn = None
        version = self.parts["curv_version"]
        self.curvatures = None if version is None else HeterogeneousCurvatures(
            version, curv_init=curv_init, c_image=c_image, c_text=c_text, c_inter=c_inter, variant=curv_variant,
        ).to(self.clip.model.logit_scale.device)
        paths, lengths = path_table(tree)
        self.register_buffer("paths", paths, persistent=False)
        self.register_buffer("path_lengths", lengths, persistent=False)
        self.register_buffer("leaf_params", torch.tensor([v - 1 for v in tree.leaves]), persistent=False)
        self._names = tree.prompt_names

    # ------------------------------------------------------------------------------------
    @property
    def logit_scale(self) -> torch.Tensor:
        """CLIP's frozen temperature :math:`e^{\\tau}` (100 for ViT-B/16)."""
        return self.clip.model.logit_scale.exp()

    def trainable_state(self) -> dict:
        """The tensors that training changes (names as in ``state_dict``), on the CPU."""
        names = {n for n, p in self.named_parameters() if p.requires_grad}
        return {k: v.detach().cpu() for k, v in self.state_dict().items() if k in names}

    def encode_nodes(self, names: Optional[Sequence[str]] = None) -> torch.Tensor:
        """MaPLe text features ``(K, E)`` of node names (default: the training tree's prompt names),
        not normalised.  Names are cleaned as ProTeCt does (:func:`hyro_edu.hierarchy.taxonomic_tree.clean_name`)."""
        names = self._names if names is None else tuple(clean_name(n) for n in names)
        return self.clip.encode_text(list(names))

    def levels(self, images: torch.Tensor) -> torch.Tensor:
        """The image's level features ``F (B, m, E)`` (unnormalised): the class tokens after
        ``layers``, carried to the output space (:func:`hyro_edu.tree_alignment.features.semantic_visual_features`)."""
        visual = self.clip.model.visual
        enc = self.clip.encode_image(images, return_layers=self.layers)
        return semantic_visual_features(enc.layer_tokens, visual.transformer.resblocks, layers=self.layers,
                                        ln_post=visual.ln_post, proj=visual.proj, propagation=self.propagation)

    def scores(self, images: torch.Tensor, text: Optional[torch.Tensor] = None, *, return_fused: bool = False):
        r"""Node scores ``(B, K)``: :math:`e^{\tau}\cos(\mathrm{fused}(x, t_k), t_k)` (hierarchical
        variants) or :math:`e^{\tau}\cos(f(x), t_k)` with the final class token (vanilla, protect).

        ``text (K, E)``: node features from :meth:`~hyro_edu.tree_alignment.model.TreeAlignmentModel.encode_nodes`
        (default: the training tree's).  With ``return_fused`` also the fused features ``(B, K, E)``
        (``None`` for the flat variants).
        """
        text = self.encode_nodes() if text is None else text
        if self.cross_attn is None:
            img = self.clip.encode_image(images, normalize=True)
            s = self.logit_scale * img @ F.normalize(text, dim=-1).T
            return (s, None) if return_fused else s
        levels = self.levels(images)
        query = F.normalize(text, dim=-1).to(levels.dtype)
        fused = self.cross_attn(query, levels).fused
        s = level_logits(fused, query, logit_scale=self.logit_scale)
        return (s, fused) if return_fused else s

    def forward(self, images: torch.Tensor, labels: torch.Tensor, *,
                generator: Optional[torch.Generator] = None) -> dict:
        r"""The training loss of a batch and its terms.

        ``images (B, 3, H, W)`` normalised, ``labels (B,)`` leaf labels of the training tree;
        ``generator`` draws the DTL's tree cut.  Returns ``loss`` and, as the variant has them,
        ``ce`` (vanilla), ``dtl``, ``ncl``, ``align``, ``align_image``, ``align_text``,
        ``align_cross`` and the curvatures ``c_i``, ``c_t``, ``c_m`` (0-d tensors).
        """
        labels = self.tree.check_labels(labels).to(images.device)
        text = self.encode_nodes()
        logits, fused = self.scores(images, text, return_fused=True)
        out = {}
        if self.parts["loss"] == "leaf_ce":
            out["ce"] = F.cross_entropy(logits[:, self.leaf_params].float(), labels)
            out["loss"] = out["ce"]
            return out
        logits32 = logits.float()
        out["dtl"] = dynamic_tree_cut_loss(logits32, labels, self.tree, dropout=self.cut_dropout, generator=generator)
        out["ncl"] = node_centric_loss(logits32, labels, self.tree)
        loss = self.mta_weight * out["dtl"] + self.node_weight * out["ncl"]
        if self.parts["align"]:
            device_type = images.device.type if images.device.type in ("cpu", "cuda") else "cpu"
            with torch.autocast(device_type=device_type, enabled=False):
                paths = self.paths[labels]  # (B, D)
                lengths = self.path_lengths[labels]
                text_nodes = F.normalize(text.float(), dim=-1)[paths]  # (B, D, E)
                rows = torch.arange(len(labels), device=images.device).unsqueeze(1)
                image_nodes = F.normalize(fused.float()[rows, paths], dim=-1)
                r_i = tree_radius(image_nodes, lengths=lengths, padding=self.padding)
                r_t = tree_radius(text_nodes, lengths=lengths, padding=self.padding)
                curv = self.curvatures(r_i, r_t)
                align = tree_alignment_loss(image_nodes, text_nodes, curv, scale_image=self.scale_image,
                                            scale_text=self.scale_text, K=self.K, lengths=lengths,
                                            padding=self.padding)
            out.update(align=align.total, align_image=align.image, align_text=align.text, align_cross=align.cross)
            if not curv.euclidean:
                out.update(c_i=curv.image, c_t=curv.text, c_m=curv.inter)
            loss = loss + self.align_weight * align.total
        out["loss"] = loss
        return out

    def extra_repr(self) -> str:
        return f"variant={self.variant!r}, layers={list(self.layers)}, nodes={self.tree.num_params}"
