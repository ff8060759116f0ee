r"""CAT-Seg's decoder as one module: :class:`CATSegDecoder`, its presets and reference sizes.

.. math::
    C = \cos(E^V, E^L) \;\to\; \mathrm{Conv}_{7\times7}(C) \;\to\;
    [\mathrm{SpatialAgg} \to \mathrm{ClassAgg}]^{\times L} \;\to\;
    \mathrm{Up}_1(\cdot, G_1) \to \mathrm{Up}_2(\cdot, G_2) \to \mathrm{Conv}_{3\times3} .

:func:`build_catseg_decoder` builds it from a named preset of :data:`PRESETS` (the released
ViT-B/16 and ViT-L/14@336 configurations, and a CPU-sized ``"tiny"`` one);
:func:`count_parameters` counts its parameters per sub-module (any ``nn.Module``).  The package
docstring (:mod:`hyro_edu.segmentation.catseg`) lists the properties and where this implementation
chooses.  Sources: :cite:`cho2024catseg` and the released code (CAT-Seg repository,
``cat_seg/modeling/transformer/model.py``, ``cat_seg/cat_seg_model.py``, ``configs/vitb_384.yaml``
and ``configs/vitl_336.yaml``).
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import nn

from hyro_edu.core import checks as _checks
from hyro_edu.segmentation.catseg.functional import (
    DROPPED_CLASS_LOGIT,
    check_rank,
    normalise,
    select_classes,
    unit_cost_volume,
)
from hyro_edu.segmentation.catseg.layers import AggregatorLayer, UpBlock

__all__ = ["PRESETS", "REFERENCE_PARAMETER_COUNTS", "count_parameters", "CATSegDecoder", "build_catseg_decoder"]

#: ``"code"``: block index 3 → 48×48 stage, index 7 → 96×96 (official code); ``"paper"``: swapped.
GUIDANCE_ORDERS = ("code", "paper")

#: Trainable parameters of the ViT-B/16 decoder, counted by hand from the layer shapes of the
#: released code (CAT-Seg repository, ``cat_seg/modeling/transformer/model.py`` and
#: ``cat_seg/cat_seg_model.py``): the aggregator, and the two ``ConvTranspose2d`` upsamplers of the
#: intermediate CLIP features (which the official code keeps outside the aggregator).
REFERENCE_PARAMETER_COUNTS = {"aggregator": 2_308_961, "upsampling": 2_359_680}

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


def count_parameters(module: nn.Module, *, depth: int = 1, trainable_only: bool = True) -> dict[str, int]:
    """Number of (trainable) parameters per sub-module, named by the first ``depth`` parts of the names.

    Returns ``{prefix: count, ..., "total": count}`` in registration order; shared parameters are
    counted once; ``total`` equals ``sum(p.numel() for p in module.parameters() if p.requires_grad)``.
    Example: ``count_parameters(decoder)["layers"]`` is the size of all aggregator layers;
    ``depth=2`` splits them into ``layers.0``, ``layers.1``.
    """
    if not isinstance(module, nn.Module):
        raise ValueError(f"module must be a torch.nn.Module, got {type(module).__name__}")
    depth = _checks.integer(depth, "depth", 1)
    counts: dict[str, int] = {}
    for name, p in module.named_parameters():
        if trainable_only and not p.requires_grad:
            continue
        key = ".".join(name.split(".")[:depth])
        counts[key] = counts.get(key, 0) + p.numel()
    counts["total"] = sum(counts.values())
    return counts


class CATSegDecoder(nn.Module):
    r"""CAT-Seg's cost-aggregation decoder (:cite:`cho2024catseg`, as the released code builds it).

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
    :class:`~hyro_edu.segmentation.catseg.layers.AggregatorLayer` s; ``up1``, ``up2`` the :class:`~hyro_edu.segmentation.catseg.layers.UpBlock` s; ``head``
    ``Conv3×3(decoder_dims[1] → 1)``.

    The parameters are keyword-only; their defaults are the official ViT-B/16 values.

    Parameters
    ----------
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

    Notes
    -----
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
        self.embed_dim = _checks.integer(embed_dim, "embed_dim", 1)
        self.vision_width = _checks.integer(vision_width, "vision_width", 1)
        self.prompt_channels = _checks.integer(prompt_channels, "prompt_channels", 1)
        self.hidden_dim = _checks.integer(hidden_dim, "hidden_dim", 1)
        self.num_heads = _checks.integer(num_heads, "num_heads", 1, hidden_dim)
        if hidden_dim % num_heads:
            raise ValueError(f"num_heads must divide hidden_dim = {hidden_dim}, got {num_heads}")
        self.num_layers = _checks.integer(num_layers, "num_layers", 1)
        self.window_size = _checks.integer(window_size, "window_size", 1)
        self.mlp_ratio = _checks.integer(mlp_ratio, "mlp_ratio", 1)
        self.pad_len = _checks.integer(pad_len, "pad_len", 0)
        self.train_pooling = _checks.integers(train_pooling, "train_pooling", 2, 1)
        self.eval_pooling = _checks.integers(eval_pooling, "eval_pooling", 2, 1)
        g_a = _checks.integer(appearance_guidance_dim, "appearance_guidance_dim", 1)
        g_t = _checks.integer(text_guidance_dim, "text_guidance_dim", 1)
        g_up = _checks.integers(decoder_guidance_dims, "decoder_guidance_dims", 2, 1)
        g_dec = _checks.integers(decoder_guidance_proj_dims, "decoder_guidance_proj_dims", 2, 1)
        dec = _checks.integers(decoder_dims, "decoder_dims", 2, 1)
        if g_dec[0] >= hidden_dim or g_dec[1] >= dec[0]:
            raise ValueError(
                "decoder_guidance_proj_dims must be smaller than the width entering each stage "
                f"(hidden_dim = {hidden_dim}, decoder_dims[0] = {dec[0]}), got {g_dec}"
            )
        for i, d in enumerate(dec):
            if d % max(1, d // 16):
                raise ValueError(f"decoder_dims[{i}] must be divisible by its GroupNorm groups {d // 16}, got {d}")
        self.guidance_order = _checks.choice(guidance_order, "guidance_order", GUIDANCE_ORDERS)
        self.intermediate_layers = (
            None
            if intermediate_layers is None
            else _checks.integers(intermediate_layers, "intermediate_layers", 2, 0)
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
        check_rank(image_features, "image_features", 4, "(B, D, H, W)")
        check_rank(text_features, "text_features", 4, "(B or 1, T, P, D)")
        check_rank(shallow, "shallow", 4, "(B, C_vis, H, W)")
        check_rank(deep, "deep", 4, "(B, C_vis, H, W)")
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
        text = normalise(text_features, -1).expand(b, -1, -1, -1)  # (B, T, P, D)
        cost = unit_cost_volume(normalise(image_features, 1), text)  # (B, P, T, H, W), step (1)

        kept = None
        if 0 < self.pad_len < num_classes:  # class truncation (select_classes)
            kept = select_classes(cost, self.pad_len)  # (B, K)
            cost = cost.gather(2, kept[:, None, :, None, None].expand(-1, cost.shape[1], -1, h, w))
            text = text.gather(1, kept[:, :, None, None].expand(-1, -1, *text.shape[2:]))
        t = cost.shape[2]

        # (3) per-class embedding of the cost: (B·T, P, H, W) -> (B, T, H, W, hidden)
        x = self.cost_embed(cost.transpose(1, 2).reshape(b * t, -1, h, w))
        x = x.reshape(b, t, self.hidden_dim, h, w).permute(0, 1, 3, 4, 2)

        # (4) guidance
        appearance = self.appearance_guidance(image_features).permute(0, 2, 3, 1)  # (B, H, W, g_a)
        text_guidance = self.text_guidance(normalise(text.mean(dim=2), -1))  # (B, T, g_t)
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
    _checks.choice(preset, "preset", PRESETS)
    unknown = set(overrides) - set(PRESETS[preset])
    if unknown:
        raise ValueError(f"overrides must be CATSegDecoder arguments {tuple(PRESETS[preset])}, got {sorted(unknown)}")
    return CATSegDecoder(**{**PRESETS[preset], **overrides})
