r"""HyRo's hyperbolic re-parametrisation: block scaling, then a block Cayley rotation, in the ball.

.. math::
    x' = \log^c_0\!\Big(R\,\big(S \otimes_c \exp^c_0(x)\big)\Big),
    \qquad S = \operatorname{diag}(S_1, \dots, S_{K_S}),\quad
    R = \operatorname{diag}(R_1, \dots, R_{K_R}),

    R_k = \mathrm{cayley}(\Theta_k - \Theta_k^\top) = (I + A_k)(I - A_k)^{-1},
    \quad A_k = \Theta_k - \Theta_k^\top.

(HyRo, Truong et al. 2026, "the complete transformation" as its third-party summary gives it, and
as the released code computes it; HyperCLIP, Peng et al., CVPR 2025, is the special case
``R = I``.)  Curvature convention: ``c > 0`` means curvature ``-c``.

``S ⊗_c`` is Möbius matrix-vector multiplication (Ganea et al. 2018; Khrulkov et al. 2020),
``S ⊗_c h = exp0(S log0 h)``, applied block by block without forming the dense ``S``.  ``R`` is
orthogonal, so it commutes with the maps at the origin and keeps the hyperbolic radius; and
``log0(S ⊗_c exp0(x)) = S x``.  Hence, **until the projection into the ball clips**,

.. math:: x' = R\,S\,x ,

a linear map (:meth:`HyperbolicAdapter.linear_equivalent`).  In particular, **below the clip the
output and its gradients with respect to S and Θ do not depend on c**: the output is ``R S x``
for every ``c`` (tested), and the chapter *Cayley rotations* checks the gradients; ``c`` acts only
through the clip.  The official code projects after ``S`` onto ``‖y‖ <= (1 - 10^{-3})/sqrt(c)``;
that clips as soon as ``‖S x‖ > artanh(1 - δ)/sqrt(c)`` (:func:`clip_threshold`): 3.80 for
``c = 1`` and 38.0 for ``c = 0.01`` with ``δ = 10^{-3}``.  ``margin="dtype"`` uses this package's
margin ``δ = sqrt(finfo.eps)`` instead (:func:`hyro_edu.core.numerics.ball_margin`), which clips later.

The switch ``margin`` selects one of two implementations of the same map, which differ only in
the saturated regime:

* ``margin="official"`` (both training presets) is the **released map**, step by step with its
  constants: ``exp0`` without any projection (``tanh`` arguments clamped at 15, norms floored at
  1e-5), the Möbius product ``S ⊗_c``, the cap ``(1 - 1e-3)/sqrt(c)`` after ``S``, the rotation,
  ``log0``; every ``artanh`` argument clamped to ``±(1 - 1e-5)`` with the released backward
  ``1/(1 - z²)`` at the clamped value (a straight-through clamp).  The ``artanh`` clamp inside
  ``S ⊗_c`` acts like a projection of ``exp0(x)`` at ``artanh(1 - 1e-5)/sqrt(c)`` (6.10 at
  ``c = 1``).  Tested against the closed form ``R z·min(1, t_δ/‖z‖)``,
  ``z = S x·min(1, 6.10/(sqrt(c)‖x‖))``, and on the audit's case (``c = 1``, ``‖x‖ = 6``,
  ``S = I/2``: output norm 3.0 and the linear map's gradient).
* ``margin="dtype"`` is this package's cleaner variant: ``exp0(x)`` projected with the dtype
  margin (which caps ``‖x‖`` at ``t_dtype``, 4.33 at ``c = 1`` in float32), the dtype margin
  after ``S`` too, ``artanh`` clamped at ``1 - eps`` with exact derivatives.  For rows longer
  than ``t_dtype`` that ``S`` shrinks it differs from the released map (output norm 2.17 instead
  of 3.0 in the case above); everywhere else the two agree to rounding.

With the rotation this is block-diagonal orthogonal fine-tuning (Qiu et al., NeurIPS 2023) of the
rows of ``W S^T``: ``W' = (W S^T) R^T`` keeps their norms and pairwise angles, hence their
hyperspherical energy (:mod:`hyro_edu.nn.hyperspherical`; checked in the chapter).  The hyperbolic
radius that ``S`` scales is ``Rad(exp0(w)) = 2‖w‖``, twice the norm of a weight row.

Where the map acts (the official code of HyperCLIP and HyRo): not on the CLIP features but on the
**rows of the frozen attention weights** ``W_q, W_k, W_v``; each row is a tangent vector at the
origin, so ``W' = W (R S)^T`` up to the clip (:meth:`HyperbolicAdapter.adapt_weight`,
:func:`adapt_in_proj_weight`).

One module (about 580 lines, most of them docstrings): the two margins are two implementations
of one map, checked against each other, and the module wraps them in one ``nn.Module``.  The
projection after ``S`` takes the margin as an argument and keeps its own rounding (see
``_project``), so it does not call :func:`hyro_edu.geometry.poincare.project`.

Shapes: features ``(..., d)``; scaling blocks ``(K_S, b, b)`` with ``K_S·b = d``; rotation
parameters ``Θ`` and blocks ``(K_R, n, n)`` with ``K_R·n = d``.

References
----------
* Truong, Nguyen-Truong & Huynh, HyRo (CVPR 2026 workshops, arXiv 2605.08874): the map above,
  ``R`` from the Cayley transform in ``K_R = d/n`` blocks, ``Θ`` initialised at 0.  The paper's
  text was not reachable; its formula is taken from a third-party summary (PaperNotes) and agrees
  with the released code (``github.com/tmhoanggg/HyRo``, ``cat_seg/third_party/hyperbolic.py``),
  which uses block sizes 128 (S) and 256 (R).
* Peng et al., HyperCLIP (CVPR 2025) and its supplement, Eq. S-5:
  ``Rad(S ⊗_c x) = ‖Sx‖/‖x‖ Rad(x)``; ``BlockDiagonalLinear`` with full 128×128 blocks
  initialised at ``I``.
* Ganea, Bécigneul & Hofmann, Hyperbolic Neural Networks (NeurIPS 2018), Lemma 1: ``exp0``,
  ``log0``; Möbius matrix-vector multiplication.
* The official code of HyperCLIP and HyRo (``cat_seg/third_party/hyperbolic.py`` and
  ``model_hyperbolic.py`` in both repositories): the row-wise application to ``W_q, W_k, W_v``,
  the cap ``(1 - 1e-3)/sqrt(c)`` (``_project``), ``c = 1`` for text and ``0.01`` for vision.
* Qiu et al., Controlling Text-to-Image Diffusion by Orthogonal Finetuning (NeurIPS 2023).
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
from torch import nn

from hyro_edu.core import checks as _checks
from hyro_edu.core.numerics import artanh, ball_margin, floored, fp32_math, norm_keepdim
from hyro_edu.geometry import poincare as P
from hyro_edu.geometry.cayley import block_cayley, block_diagonal, block_matvec, num_blocks

__all__ = [
    "OFFICIAL_MARGIN",
    "MARGINS",
    "ADAPTER_MODES",
    "margin_value",
    "clip_threshold",
    "parameter_counts",
    "block_mobius_matvec",
    "hyro_map",
    "adapt_in_proj_weight",
    "HyperbolicAdapter",
]

OFFICIAL_MARGIN = 1e-3
"""The official code's fixed gap at the boundary: ``‖y‖ <= (1 - 1e-3)/sqrt(c)`` after ``S``."""

OFFICIAL_ARTANH_CLAMP = 1e-5
"""The official code clamps every ``artanh`` argument to ``±(1 - 1e-5)`` (and differentiates the
clamped value as if it were the input: its backward is ``1/(1 - z²)`` at the clamped ``z``)."""

OFFICIAL_TANH_CLAMP = 15.0
"""The official code clamps every ``tanh`` argument to ``±15``."""

OFFICIAL_NORM_FLOOR = 1e-5
"""The official code floors the norms it divides by at ``1e-5``."""

MARGINS = ("dtype", "official")

ADAPTER_MODES = {"hyperclip": (True, False), "rotation": (False, True), "hyro": (True, True)}
"""``mode -> (scaling, rotation)``: HyperCLIP is S only, the rotation ablation R only, HyRo
both.  (The fine-tuning modes of a whole CLIP model, a superset, are
``hyro_edu.clip.finetune.MODES``.)"""


# ----------------------------------------------------------------------------
# validation and small helpers
# ----------------------------------------------------------------------------
def _curvature(c) -> float:
    if isinstance(c, torch.Tensor):
        if c.numel() != 1:
            raise ValueError(
                f"c must be one number > 0 (the curvature is -c), got a tensor of shape "
                f"{tuple(c.shape)}"
            )
        _checks.curvature(c)
        return float(c)
    return _checks.curvature(c)


def _margin(margin: str) -> str:
    if margin not in MARGINS:
        raise ValueError(
            f"margin must be one of {MARGINS} ('dtype': sqrt(finfo.eps), 'official': "
            f"{OFFICIAL_MARGIN}), got {margin!r}"
        )
    return margin


def margin_value(margin: str = "dtype", dtype: torch.dtype = torch.float32) -> float:
    """The boundary gap ``δ`` of a named margin: ``sqrt(finfo(dtype).eps)`` or the official 1e-3.

    ``margin`` is ``"dtype"`` or ``"official"`` (else ``ValueError``).  Projection keeps
    ``sqrt(c)·‖y‖ <= 1 - δ``.  ``"dtype"`` is 3.5e-4 in float32 (and in half precision, which is
    computed in float32) and 1.5e-8 in float64.
    """
    return ball_margin(dtype) if _margin(margin) == "dtype" else OFFICIAL_MARGIN


def clip_threshold(c, *, margin: str = "dtype", dtype: torch.dtype = torch.float32) -> float:
    r"""Tangent norm where the projection starts to clip:

    .. math:: t_\delta = \operatorname{artanh}(1 - \delta)/\sqrt c .

    ``exp0(v)`` has Euclidean norm ``tanh(sqrt(c)‖v‖)/sqrt(c)``, which exceeds the cap
    ``(1 - δ)/sqrt(c)`` exactly when ``‖v‖ > t``; ``log0`` of a clipped point has norm ``t``.  So
    the HyRo map returns ``R S x`` while ``‖S x‖ <= t`` and a vector of norm ``t`` beyond (and
    the input ``x`` itself saturates earlier, see :func:`hyro_map`).  Curvature ``-c``, ``c > 0``.
    Official margin: 3.80 (``c = 1``), 38.0 (``c = 0.01``), the cap of the official code's
    ``_project``; dtype margin in float32: 4.33 and 43.3 (tested).
    """
    c = _curvature(c)
    return math.atanh(1.0 - margin_value(margin, dtype)) / math.sqrt(c)


def parameter_counts(
    dim: int,
    *,
    scale_block: int = 128,
    rotation_block: int = 256,
    scaling: bool = True,
    rotation: bool = True,
) -> dict:
    """Trainable numbers of one adapter on ``dim`` features.

    ``scaling = K_S·b²`` (full blocks, HyperCLIP's ``BlockDiagonalLinear``); ``rotation = K_R·n²``
    (the stored ``Θ``); ``rotation_dof = K_R·n(n-1)/2`` (only the skew part ``Θ - Θ^T`` matters);
    ``total = scaling + rotation`` (what the optimiser sees).  Raises ``ValueError`` when a block
    size does not divide ``dim``.
    """
    counts = dict(scaling=0, rotation=0, rotation_dof=0)
    if scaling:
        k = num_blocks(dim, scale_block, name="scale_block")
        counts["scaling"] = k * scale_block**2
    if rotation:
        k = num_blocks(dim, rotation_block, name="rotation_block")
        counts["rotation"] = k * rotation_block**2
        counts["rotation_dof"] = k * rotation_block * (rotation_block - 1) // 2
    counts["total"] = counts["scaling"] + counts["rotation"]
    return counts


def _blocks(blocks: Optional[torch.Tensor], name: str, d: int) -> Optional[torch.Tensor]:
    if blocks is None:
        return None
    _checks.tensor(blocks, name)
    if blocks.dim() != 3 or blocks.shape[-1] != blocks.shape[-2]:
        raise ValueError(
            f"{name} must have shape (K, n, n) (K square blocks), got a tensor of shape "
            f"{tuple(blocks.shape)}"
        )
    k, n, _ = blocks.shape
    if k * n != d:
        raise ValueError(
            f"{name} must cover the feature dimension: K·n = {k}·{n} = {k * n} must equal "
            f"x.shape[-1] = {d}"
        )
    return blocks


def _project(y: torch.Tensor, c: float, delta: float) -> torch.Tensor:
    # Clip sqrt(c)‖y‖ to 1 - δ.  where() keeps interior points bit-identical (and their gradient
    # exact); the 4-ulp slack stops re-rescaling rows that an earlier clip left a few ulps above.
    # The same maths as hyro_edu.geometry._ball.project, with the margin δ as an argument, kept
    # in this arithmetic (y/‖y‖·cap, not y·(cap/‖y‖)) on purpose: in float32 the two round the
    # clipped norm differently, and whether it lands above or below log0's clamp at
    # 1 - sqrt(eps) decides whether a saturated row passes a radial gradient (44% against 69%
    # of rows at c = 1), so swapping would change the trained adapters' numbers.
    norm = norm_keepdim(y, -1)
    cap = (1.0 - delta) / math.sqrt(c)
    outside = norm > cap * (1 + 4 * torch.finfo(y.dtype).eps)
    return torch.where(outside, y / floored(norm) * cap, y)


def _mobius_blocks(blocks: torch.Tensor, h: torch.Tensor, c: float) -> torch.Tensor:
    # S ⊗_c h = tanh(‖Sh‖/‖h‖ · artanh(√c‖h‖)) · Sh / (√c‖Sh‖); floored norms make Sh = 0 give 0.
    sqrt_c = math.sqrt(c)
    sh = block_matvec(blocks, h)
    h_norm = floored(norm_keepdim(h, -1))
    sh_norm = floored(norm_keepdim(sh, -1))
    # the tanh argument may overflow to inf for huge ‖Sh‖/‖h‖: tanh(inf) = 1 is the right limit
    scale = torch.tanh(sh_norm / h_norm * artanh(sqrt_c * h_norm)) / (sqrt_c * sh_norm)
    return sh * scale


class _OfficialArtanh(torch.autograd.Function):
    """``artanh`` with the official code's clamp: forward at ``z`` clamped to ``±(1 - 1e-5)``,
    backward ``1/(1 - z²)`` at the clamped ``z`` -- a straight-through clamp, so the gradient
    never vanishes where the clamp acts (unlike ``z.clamp(...).atanh()``)."""

    @staticmethod
    def forward(ctx, z):
        lim = 1.0 - OFFICIAL_ARTANH_CLAMP
        z = z.clamp(-lim, lim)
        ctx.save_for_backward(z)
        return z.atanh()

    @staticmethod
    def backward(ctx, grad):
        (z,) = ctx.saved_tensors
        return grad / (1 - z * z)


def _official_norm(x: torch.Tensor) -> torch.Tensor:
    # The official floor at 1e-5 (not finfo-derived: reproduced as released).
    return norm_keepdim(x, -1).clamp_min(OFFICIAL_NORM_FLOOR)


def _official_tanh(z: torch.Tensor) -> torch.Tensor:
    return z.clamp(-OFFICIAL_TANH_CLAMP, OFFICIAL_TANH_CLAMP).tanh()


def _official_map(x, scale_blocks, rotation_blocks, c: float) -> torch.Tensor:
    # The released map step by step (HyRo/HyperCLIP ``BlockDiagonalLinear*``: ``expmap0``,
    # ``mobius_matvec`` with its ``_project``, the rotation, ``logmap0``), with their constants.
    sqrt_c = math.sqrt(c)
    u_norm = _official_norm(x)
    h = _official_tanh(sqrt_c * u_norm) * x / (sqrt_c * u_norm)  # exp0: no projection
    if scale_blocks is not None:
        h_norm = _official_norm(h)
        sh = block_matvec(scale_blocks, h)
        # The official code does not floor ‖Sh‖ and returns 0 where Sh = 0 (the where() below);
        # flooring at sqrt(finfo.tiny) changes no value above 1e-19 and keeps the discarded branch
        # (and so the gradient) free of 0/0.
        sh_norm = floored(norm_keepdim(sh, -1))
        ratio = sh_norm / h_norm * _OfficialArtanh.apply(sqrt_c * h_norm)
        y = _official_tanh(ratio) * sh / (sh_norm * sqrt_c)
        h = torch.where((sh == 0).all(-1, keepdim=True), torch.zeros_like(y), y)
    norm = _official_norm(h)
    cap = (1.0 - OFFICIAL_MARGIN) / sqrt_c
    y = torch.where(norm > cap, h / norm * cap, h)  # the official _project
    if rotation_blocks is not None:
        y = block_matvec(rotation_blocks, y)
    y_norm = _official_norm(y)
    return y / y_norm / sqrt_c * _OfficialArtanh.apply(sqrt_c * y_norm)  # log0


# ----------------------------------------------------------------------------
# functional core
# ----------------------------------------------------------------------------
@fp32_math
def block_mobius_matvec(
    blocks: torch.Tensor, x: torch.Tensor, *, c, margin: str = "dtype"
) -> torch.Tensor:
    r"""Möbius matrix-vector multiplication by a block-diagonal matrix, never formed densely:

    .. math::
        S \otimes_c x = \frac{1}{\sqrt c}
        \tanh\!\Big(\frac{\|Sx\|}{\|x\|}\operatorname{artanh}(\sqrt c\,\|x\|)\Big)
        \frac{Sx}{\|Sx\|} = \exp^c_0\big(S \log^c_0(x)\big),
        \quad S = \operatorname{diag}(S_1, \dots, S_K).

    Curvature ``-c`` with ``c > 0``.  Properties (tested): equals
    ``poincare.mobius_matvec(block_diagonal(blocks), x)``; ``Rad(S ⊗ x) = ‖Sx‖/‖x‖·Rad(x)``
    (HyperCLIP supplement, Eq. S-5); identity blocks give ``x``; ``Sx = 0`` gives 0.  The input is
    projected with the dtype margin, the output with ``margin`` (``"dtype"`` or ``"official"``).

    Shapes: ``blocks (K, b, b)``, ``x (..., K·b)`` -> ``(..., K·b)``; the linear part is
    ``x @ block_diagonal(blocks).T`` (row convention of ``torch.nn.functional.linear``).
    Ganea et al. 2018; Khrulkov et al. 2020; HyperCLIP's ``BlockDiagonalLinear`` blocks.
    """
    c = _curvature(c)
    _checks.tensor(x, "x")
    delta = margin_value(margin, x.dtype)
    blocks = _blocks(blocks, "blocks", x.shape[-1]).to(x.dtype)
    x = _project(x, c, ball_margin(x.dtype))
    return _project(_mobius_blocks(blocks, x, c), c, delta)


@fp32_math
def hyro_map(
    x: torch.Tensor,
    scale_blocks: Optional[torch.Tensor],
    rotation_blocks: Optional[torch.Tensor],
    *,
    c,
    margin: str = "dtype",
) -> torch.Tensor:
    r"""HyRo's map on the last dimension:

    .. math:: x' = \log^c_0\big(R\,(S \otimes_c \exp^c_0(x))\big).


    Curvature ``-c`` with ``c > 0`` (a number).  Steps (as in the official code):

    1. ``h = exp0(x)``: with ``margin="dtype"`` projected with the dtype margin
       (:mod:`hyro_edu.core.numerics`); with ``margin="official"`` not projected, as released;
    2. ``y = S ⊗_c h`` block by block (skipped if ``scale_blocks is None``), then **projected**
       onto ``sqrt(c)‖y‖ <= 1 - δ``, ``δ`` = :func:`margin_value` of ``margin``;
    3. ``y ← R y`` with the orthogonal blocks (skipped if ``rotation_blocks is None``);
    4. ``x' = log0(y)``.

    ``margin="official"`` evaluates every step with the released constants (see the module
    docstring); ``"dtype"`` with this package's finfo-derived clamps.

    Properties (tested): ``x' = R S x`` while ``‖S x‖ <= t_δ`` and ``‖x‖ <= t_e``
    (:func:`clip_threshold`); beyond, ``x' = R z·min(1, t_δ/‖z‖)`` with
    ``z = S x·min(1, t_e/‖x‖)``, where ``t_e`` is ``t_dtype`` (``"dtype"``) or
    ``artanh(1 - 1e-5)/sqrt(c)`` (``"official"``); ``‖x'‖ <= t_δ``; ``R`` keeps the hyperbolic
    radius and commutes with ``exp0``/``log0``; finite values and gradients for finite float32
    inputs.

    Shapes: ``x (..., d)``; ``scale_blocks (K_S, b, b)`` with ``K_S·b = d`` or ``None``;
    ``rotation_blocks (K_R, n, n)`` with ``K_R·n = d`` or ``None``, orthogonal (e.g.
    :func:`hyro_edu.geometry.cayley.block_cayley` of ``Θ``; not checked) -> ``(..., d)``.  Blocks are cast
    to ``x.dtype``; half inputs are computed, and returned, in float32.  Bad shapes, ``c <= 0``
    or an unknown ``margin`` raise ``ValueError``.

    HyRo (2026), the complete transformation (per its summary and released code); HyperCLIP when
    ``rotation_blocks`` is ``None``.
    """
    c = _curvature(c)
    _margin(margin)
    _checks.tensor(x, "x")
    d = x.shape[-1]
    scale_blocks = _blocks(scale_blocks, "scale_blocks", d)
    rotation_blocks = _blocks(rotation_blocks, "rotation_blocks", d)
    if margin == "official":
        return _official_map(
            x,
            None if scale_blocks is None else scale_blocks.to(x.dtype),
            None if rotation_blocks is None else rotation_blocks.to(x.dtype),
            c,
        )
    h = P.expmap0(x, c=c)  # projected with the dtype margin
    if scale_blocks is not None:
        h = _mobius_blocks(scale_blocks.to(x.dtype), h, c)
    y = _project(h, c, margin_value(margin, x.dtype))
    if rotation_blocks is not None:
        y = block_matvec(rotation_blocks.to(x.dtype), y)
    return P.logmap0(y, c=c)


@fp32_math
def _adapter_forward(x, scale, theta, c, margin):
    # block_cayley inside fp32_math: the solve never runs in half precision or under autocast
    rotation_blocks = None if theta is None else block_cayley(theta.to(x.dtype))
    return hyro_map(x, scale, rotation_blocks, c=c, margin=margin)


def adapt_in_proj_weight(
    in_proj_weight: torch.Tensor, adapters: Sequence["HyperbolicAdapter"]
) -> torch.Tensor:
    r"""Re-parametrise a fused projection ``[W_q; W_k; W_v]`` row by row, as the official code.

    .. math:: W'_\star = \big[\,x'(w_1); \dots; x'(w_D)\,\big], \quad \star \in \{q, k, v\},

    each row ``w_i`` of ``W_q``, ``W_k``, ``W_v`` mapped by its own adapter (as the official
    HyperCLIP and HyRo code does).  Up to the clip, ``W'_\star = W_\star (R_\star S_\star)^T``.

    Shapes: ``in_proj_weight (3·D, D)`` (``torch.nn.MultiheadAttention.in_proj_weight``),
    ``adapters``: three :class:`HyperbolicAdapter` of ``dim = D`` -> ``(3·D, D)``.
    """
    _checks.tensor(in_proj_weight, "in_proj_weight")
    if len(adapters) != 3 or not all(isinstance(a, HyperbolicAdapter) for a in adapters):
        raise ValueError(
            f"adapters must be three HyperbolicAdapter (for q, k, v), got {len(adapters)} "
            f"objects of types {[type(a).__name__ for a in adapters]}"
        )
    if in_proj_weight.dim() != 2 or in_proj_weight.shape[0] != 3 * in_proj_weight.shape[1]:
        raise ValueError(
            f"in_proj_weight must have shape (3·D, D), got {tuple(in_proj_weight.shape)}"
        )
    parts = in_proj_weight.chunk(3, dim=0)
    return torch.cat([a.adapt_weight(w) for a, w in zip(adapters, parts)], dim=0)


# ----------------------------------------------------------------------------
# module
# ----------------------------------------------------------------------------
class HyperbolicAdapter(nn.Module):
    r"""Learnable :math:`x' = \log^c_0\big(R\,(S \otimes_c \exp^c_0(x))\big)` on the last axis.

    Curvature ``-c`` with ``c > 0`` (fixed).  Parameters:

    * ``scale``: ``(K_S, b, b)``, ``b = scale_block``, initialised to identity blocks (HyperCLIP's
      ``BlockDiagonalLinear``); absent when ``scaling=False``;
    * ``theta``: ``(K_R, n, n)``, ``n = rotation_block``, initialised to 0, so ``R = I``; the
      blocks ``R_k = cayley(Θ_k - Θ_k^T)`` are built in one batched solve on every call (HyRo);
      absent when ``rotation=False``.

    At initialisation the map is the identity up to the clip.  Properties (tested): the rotation is
    orthogonal with ``det = +1``; ``forward(x) = x @ linear_equivalent().T`` until the clip;
    :meth:`adapt_weight` maps the rows of a weight matrix, ``W' = W·linear_equivalent().T``;
    ``parameter_counts["total"]`` equals the number of parameters.

    ``margin``: ``"official"`` (the released map with its constants, including the cap
    ``(1 - 1e-3)/sqrt(c)``) or ``"dtype"`` (this package's cleaner variant, ``sqrt(finfo.eps)``
    margins, :mod:`hyro_edu.core.numerics`); see the module docstring and :func:`hyro_map`.

    Shapes: ``x (..., dim)`` -> ``(..., dim)``; ``dim`` must be divisible by both block sizes that
    are used.  HyRo (CVPR 2026): block sizes 128 (S) and 256 (R), ``c = 1`` (text) and ``0.01``
    (vision) in the code, ``c = 0.01`` in the paper (per its third-party summary).
    """

    def __init__(
        self,
        dim: int,
        *,
        c,
        scale_block: int = 128,
        rotation_block: int = 256,
        scaling: bool = True,
        rotation: bool = True,
        margin: str = "dtype",
    ):
        super().__init__()
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            raise ValueError(f"dim must be a positive integer (the feature size), got {dim!r}")
        for name, flag in (("scaling", scaling), ("rotation", rotation)):
            if not isinstance(flag, bool):
                raise ValueError(f"{name} must be True or False, got {flag!r}")
        self.dim = dim
        self.c = _curvature(c)
        self.margin = _margin(margin)
        self.scale_block = scale_block
        self.rotation_block = rotation_block
        self.scaling = scaling
        self.rotation = rotation
        if scaling:
            k = num_blocks(dim, scale_block, name="scale_block")
            self.scale = nn.Parameter(torch.eye(scale_block).repeat(k, 1, 1))
        else:
            self.register_parameter("scale", None)
        if rotation:
            k = num_blocks(dim, rotation_block, name="rotation_block")
            self.theta = nn.Parameter(torch.zeros(k, rotation_block, rotation_block))
        else:
            self.register_parameter("theta", None)

    @classmethod
    def from_mode(cls, dim: int, mode: str, **kwargs) -> "HyperbolicAdapter":
        """An adapter for a mode of :data:`ADAPTER_MODES`: ``"hyperclip"``, ``"rotation"``,
        ``"hyro"``."""
        if mode not in ADAPTER_MODES:
            raise ValueError(f"mode must be one of {tuple(ADAPTER_MODES)}, got {mode!r}")
        scaling, rotation = ADAPTER_MODES[mode]
        return cls(dim, scaling=scaling, rotation=rotation, **kwargs)

    # -- matrices ------------------------------------------------------------
    def rotation_blocks(self) -> Optional[torch.Tensor]:
        """The orthogonal blocks ``R_k = cayley(Θ_k - Θ_k^T)``, ``(K_R, n, n)``, or ``None``."""
        return None if self.theta is None else block_cayley(self.theta)

    def rotation_matrix(self) -> torch.Tensor:
        """The dense ``R = diag(R_1, ..., R_{K_R})``, ``(dim, dim)``; ``I`` without rotation."""
        ref = self._ref()
        if self.theta is None:
            return torch.eye(self.dim, dtype=ref.dtype, device=ref.device)
        return block_diagonal(self.rotation_blocks())

    def scaling_matrix(self) -> torch.Tensor:
        """The dense ``S = diag(S_1, ..., S_{K_S})``, ``(dim, dim)``; ``I`` without scaling."""
        ref = self._ref()
        if self.scale is None:
            return torch.eye(self.dim, dtype=ref.dtype, device=ref.device)
        return block_diagonal(self.scale)

    def linear_equivalent(self) -> torch.Tensor:
        r"""The dense :math:`RS`, ``(dim, dim)``: ``forward(x) = x @ (RS)^T`` until the clip."""
        return self.rotation_matrix() @ self.scaling_matrix()

    def _ref(self) -> torch.Tensor:
        for p in (self.scale, self.theta):
            if p is not None:
                return p
        return torch.empty(0)

    # -- application ---------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the map to the last dimension of ``x (..., dim)``."""
        _checks.tensor(x, "x")
        if x.shape[-1] != self.dim:
            raise ValueError(
                f"x must have dim = {self.dim} features in its last dimension, got shape "
                f"{tuple(x.shape)}"
            )
        return _adapter_forward(x, self.scale, self.theta, self.c, self.margin)

    def adapt_weight(self, weight: torch.Tensor) -> torch.Tensor:
        """Map every row of ``weight (out_features, dim)``, each a tangent vector at 0.

        Returns ``W'`` of the same shape.  Up to the clip ``W' = W (RS)^T``, so
        ``F.linear(h, W') = F.linear(h @ RS, W)``: re-parametrising the rows is the same as feeding
        the frozen layer the input ``(RS)^T h``.
        """
        _checks.tensor(weight, "weight")
        if weight.dim() != 2:
            raise ValueError(
                f"weight must be a matrix (out_features, dim = {self.dim}), got shape "
                f"{tuple(weight.shape)}"
            )
        return self(weight)

    @property
    def parameter_counts(self) -> dict:
        """:func:`parameter_counts` of this adapter; ``total`` is its number of parameters."""
        return parameter_counts(
            self.dim,
            scale_block=self.scale_block,
            rotation_block=self.rotation_block,
            scaling=self.scaling,
            rotation=self.rotation,
        )

    def extra_repr(self) -> str:
        scale_block = self.scale_block if self.scaling else None
        rotation_block = self.rotation_block if self.rotation else None
        return (
            f"dim={self.dim}, c={self.c}, scale_block={scale_block}, "
            f"rotation_block={rotation_block}, margin={self.margin!r}"
        )
