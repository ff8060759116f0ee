r"""Hyperspherical (orthogonal) fine-tuning as H-CLIP does it; its relation mixing in two forms.

**Hyperspherical energy** (Liu et al., NeurIPS 2018) of the neurons :math:`w_1, \dots, w_N` of a
layer (the rows of a ``torch.nn.Linear`` weight), with unit directions
:math:`\hat w_i = w_i/\|w_i\|`:

.. math::
    E_s(W) = \sum_{i \ne j} f_s\big(\|\hat w_i - \hat w_j\|\big), \qquad
    f_s(z) = z^{-s}\ (s > 0), \qquad f_0(z) = \log(1/z).

It depends on the neurons only through their pairwise angles, since
:math:`\|\hat w_i - \hat w_j\|^2 = 2 - 2\cos\theta_{ij}`.  *Hyperspherical space*: the
directions :math:`\hat w_i` are points of the sphere :math:`S^{d-1}`, on which the orthogonal group
:math:`O(d)` acts by isometries (angles are kept); fine-tuning "in hyperspherical space" moves all
neurons of a layer by one such isometry, :math:`W \leftarrow W R`.

**Orthogonal fine-tuning** keeps it: :math:`W \leftarrow W R` with :math:`R^\top R = I` maps every
row :math:`w_i^\top \mapsto w_i^\top R`, so :math:`W R (W R)^\top = W W^\top`: norms and pairwise
angles of the neurons, hence :math:`E_s`, are unchanged (the argument of orthogonal fine-tuning,
Qiu et al., NeurIPS 2023).  H-CLIP (Peng et al., CVPR 2025) uses block-diagonal
:math:`R = \mathrm{blockdiag}(Q_1, \dots, Q_K)` with :math:`Q = (I - S)(I + S)^{-1}`,
:math:`S = \tfrac12(X - X^\top)` (:func:`hyro_edu.geometry.cayley.cayley_hclip`) on ``W_q, W_k, W_v`` and
multiplies ``out_proj`` on the *left*, :math:`W_o \leftarrow R_o W_o`, which keeps the angles
between the *columns* of :math:`W_o`, not between its rows (tested).

**Cross-relation mixing.**  All learnable blocks live in one tensor
:math:`\mathcal R \in \mathbb R^{b\times b\times 4L\times K}` (block rows, block columns, 4 slots
``q, k, v, o`` per layer, ``K`` = text blocks + vision blocks).  Two forms are implemented:

* ``relation="official"`` (H-CLIP's code as found in the HPS-Seg repository, which extends
  H-CLIP; no official H-CLIP repository was found): linear maps along tensor modes, a shared
  :math:`4L\times 4L` map and one :math:`K\times K` map per layer, identity-initialised:
  :math:`\mathcal R_{\text{eff}} = \mathcal R \times_3 L \times_4 M_\ell`.
  ``relation="gated"`` is an earlier compiled variant of that code (256-blocks):
  :math:`\mathcal R + \alpha\,(\mathcal R \times_3 L \times_4 M)` with one shared :math:`M`
  and one gate per attention block and encoder, zero-initialised.
* ``relation="tproduct"`` (our construction from the T-products that the H-CLIP supplement
  defines, Definitions 4.1 and 4.2, Eqs. S-1 to S-14):
  :math:`\mathcal R_{\text{eff}} = \mathcal R * \mathcal G` with a learnable relation
  tensor :math:`\mathcal G` (full ``(b, b, 4L, K)`` or scalar tubes :math:`I_b \otimes g`),
  initialised to the identity tensor, by the DFT or by invertible transforms
  (:mod:`hyro_edu.geometry.tproduct`).  The paper's abstract describes "a dual cross-relation
  communication module among all learnable matrices", and the supplement derives the T-product
  definitions of the main paper; the main paper's method section, with the module's equation, was
  not reachable, so this option is not checked against the paper's equation.

``mix="parameters"`` (what the code does) mixes the Cayley *parameters* and then applies Cayley,
so every text block stays orthogonal whatever the mixing; ``mix="matrices"`` mixes the orthogonal
*matrices*, which does not keep orthogonality.  Vision blocks in the HPS code are used free (not
orthogonal): ``vision_free_last`` says how many of the last vision layers are free.

One module (about 570 lines, most of them docstrings): it is H-CLIP's adapter -- the energy it
keeps, the orthogonal blocks that keep it and the mixing of those blocks' parameters all work on
the one parameter layout (:class:`HCLIPLayout`), and the tests check them together.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

import torch
from torch import nn

from hyro_edu.core import checks as _checks
from hyro_edu.geometry.cayley import cayley_hclip, num_blocks
from hyro_edu.core.numerics import floored, fp32_math, norm_floor, norm_keepdim
from hyro_edu.geometry.tproduct import mode_product, t_identity, tproduct, tproduct_transform

__all__ = [
    "hyperspherical_energy",
    "oft_weight",
    "orthogonality_error",
    "reparametrise_attention",
    "HCLIPLayout",
    "mix_official",
    "mix_gated",
    "mix_tproduct",
    "scalar_relation",
    "to_blocks",
    "HCLIPRelation",
]

PROJECTIONS = ("q", "k", "v", "o")


# ----------------------------------------------------------------------------
# hyperspherical energy and block-orthogonal weights
# ----------------------------------------------------------------------------
@fp32_math
def hyperspherical_energy(
    weight: torch.Tensor, *, s: float = 1.0, neurons: str = "rows", normalize: bool = True
) -> torch.Tensor:
    r"""Hyperspherical energy :math:`E_s(W) = \sum_{i\ne j} \|\hat w_i - \hat w_j\|^{-s}`.

    For ``s = 0``: :math:`\sum_{i \ne j}\log\|\hat w_i - \hat w_j\|^{-1}`.

    The ``s``-energy of Liu et al. (NeurIPS 2018), summed over ordered pairs.  ``neurons``:
    ``"rows"`` (the output neurons of ``torch.nn.Linear``, default) or ``"columns"``.
    ``normalize=False`` uses the raw neurons instead of their directions.

    Properties (tested): equals a direct double loop; invariant under ``W -> W R`` for orthogonal
    ``R`` (rows) and under ``W -> R W`` (columns); invariant under positive rescaling of
    neurons when normalised; finite, with finite gradients, for coincident neurons.

    Shapes: ``weight (..., N, d)`` -> ``(...)``.  A neuron of norm 0 has no direction and raises
    ``ValueError`` when ``normalize`` is on.
    """
    _checks.tensor(weight, "weight")
    if weight.dim() < 2:
        raise ValueError(f"weight must be a matrix (..., N, d), got shape {tuple(weight.shape)}")
    if isinstance(s, bool) or not isinstance(s, (int, float)) or not (math.isfinite(s) and s >= 0):
        raise ValueError(f"s must be a finite number >= 0, got {s!r}")
    if neurons not in ("rows", "columns"):
        raise ValueError(f"neurons must be 'rows' or 'columns', got {neurons!r}")
    w = weight if neurons == "rows" else weight.transpose(-1, -2)
    if w.shape[-2] < 2:
        raise ValueError(f"weight must have at least 2 neurons ({neurons}), got {w.shape[-2]}")
    if normalize:
        norms = norm_keepdim(w, -1)
        if bool((norms == 0).any()):
            raise ValueError(
                "weight has a neuron of norm 0: its direction is undefined (use normalize=False)"
            )
        # Norms below sqrt(tiny) would overflow 1/‖w‖; the floor keeps the direction finite.
        w = w / floored(norms)
    sq = (w * w).sum(-1)
    gram = w @ w.transpose(-1, -2)
    scale = sq.unsqueeze(-1) + sq.unsqueeze(-2)
    # ‖w_i - w_j‖² = ‖w_i‖² + ‖w_j‖² - 2<w_i, w_j> loses about eps·(‖w_i‖² + ‖w_j‖²) to
    # cancellation; below that the distance is rounding noise, so it is floored there.  This
    # keeps z^-s and log(1/z) finite for coincident neurons, and the clamp zeroes the gradient
    # where it binds, so sqrt'(0) never enters.
    d2 = (scale - 2 * gram).clamp_min(
        torch.finfo(w.dtype).eps * scale.clamp_min(norm_floor(w.dtype))
    )
    n = w.shape[-2]
    off = ~torch.eye(n, dtype=torch.bool, device=w.device)
    terms = -0.5 * torch.log(d2) if s == 0 else d2.pow(-0.5 * s)
    return (terms * off).sum((-1, -2))


def _blocks(blocks: torch.Tensor, name: str = "blocks") -> torch.Tensor:
    _checks.tensor(blocks, name)
    if blocks.dim() != 3 or blocks.shape[-1] != blocks.shape[-2]:
        raise ValueError(
            f"{name} must have shape (K, b, b) (K square blocks), got {tuple(blocks.shape)}"
        )
    return blocks


def oft_weight(weight: torch.Tensor, blocks: torch.Tensor, *, side: str = "right") -> torch.Tensor:
    r"""Block-diagonal re-parametrisation: :math:`W R` (``"right"``) or :math:`R W` (``"left"``).

    :math:`R = \mathrm{blockdiag}(Q_1, \dots, Q_K)`.  H-CLIP's code (as found in HPS-Seg)
    applies ``"right"`` to ``W_q, W_k, W_v`` and ``"left"`` to ``out_proj``.  Never forms the
    dense :math:`R`.  Properties (tested): equals the product with
    :func:`hyro_edu.geometry.cayley.block_diagonal`; for orthogonal blocks ``"right"`` keeps
    :math:`WW^\top` (row norms and angles) and ``"left"`` keeps :math:`W^\top W`.

    Shapes: ``weight (..., N, K·b)`` for ``"right"``, ``(..., K·b, d)`` for ``"left"``;
    ``blocks (K, b, b)``; the result has the shape of ``weight``.
    """
    _checks.tensor(weight, "weight")
    _blocks(blocks)
    if side not in ("right", "left"):
        raise ValueError(f"side must be 'right' (W R) or 'left' (R W), got {side!r}")
    if weight.dim() < 2:
        raise ValueError(f"weight must be a matrix (..., N, d), got shape {tuple(weight.shape)}")
    k, b, _ = blocks.shape
    axis = -1 if side == "right" else -2
    if weight.shape[axis] != k * b:
        what = "columns" if side == "right" else "rows"
        raise ValueError(
            f"weight must have K·b = {k * b} {what} for {k} blocks of size {b} (side={side!r}), "
            f"got shape {tuple(weight.shape)}"
        )
    # batched matmuls over the K blocks (einsum is much slower for these small shapes)
    if side == "right":
        wb = weight.reshape(*weight.shape[:-1], k, b).transpose(-2, -3)  # (..., K, N, b)
        return (wb @ blocks).transpose(-2, -3).reshape(weight.shape)
    wb = weight.reshape(*weight.shape[:-2], k, b, weight.shape[-1])  # (..., K, b, d)
    return (blocks @ wb).reshape(weight.shape)


def orthogonality_error(blocks: torch.Tensor) -> torch.Tensor:
    r"""Largest entry of :math:`|Q^\top Q - I|` per block: ``(..., b, b)`` -> ``(...)``.

    Zero (to rounding) exactly for orthogonal blocks.
    """
    _checks.tensor(blocks, "blocks")
    if blocks.dim() < 2 or blocks.shape[-1] != blocks.shape[-2]:
        raise ValueError(f"blocks must be square matrices (..., b, b), got {tuple(blocks.shape)}")
    eye = torch.eye(blocks.shape[-1], dtype=blocks.dtype, device=blocks.device)
    return (blocks.transpose(-1, -2) @ blocks - eye).abs().amax((-1, -2))


def reparametrise_attention(
    in_proj_weight: torch.Tensor, out_proj_weight: torch.Tensor, blocks: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""H-CLIP's attention weights: :math:`W_{q,k,v} \leftarrow W_{q,k,v} R_{q,k,v}`,
    :math:`W_o \leftarrow R_o W_o`.

    ``in_proj_weight (3D, D)`` (q, k, v stacked as in ``torch.nn.MultiheadAttention``),
    ``out_proj_weight (D, D)``, ``blocks (4, K, b, b)`` for q, k, v, o with ``K·b = D``.
    Returns the new ``(in_proj_weight, out_proj_weight)``; biases are untouched.
    """
    _checks.tensor(in_proj_weight, "in_proj_weight")
    _checks.tensor(out_proj_weight, "out_proj_weight")
    _checks.tensor(blocks, "blocks")
    if blocks.dim() != 4 or blocks.shape[0] != 4:
        raise ValueError(
            f"blocks must have shape (4, K, b, b) for q, k, v, o, got {tuple(blocks.shape)}"
        )
    d = out_proj_weight.shape[-1]
    if in_proj_weight.shape != (3 * d, d) or out_proj_weight.shape != (d, d):
        raise ValueError(
            f"in_proj_weight must be (3D, D) and out_proj_weight (D, D); "
            f"got {tuple(in_proj_weight.shape)} "
            f"and {tuple(out_proj_weight.shape)}"
        )
    wq, wk, wv = in_proj_weight.chunk(3, dim=0)
    new_in = torch.cat([oft_weight(w, blocks[i]) for i, w in enumerate((wq, wk, wv))], dim=0)
    return new_in, oft_weight(out_proj_weight, blocks[3], side="left")


# ----------------------------------------------------------------------------
# the shared parameter tensor and its layout
# ----------------------------------------------------------------------------
@dataclass(frozen=True)
class HCLIPLayout:
    """Shapes of H-CLIP's shared tensor ``(b, b, 4L, K)``; the defaults are CLIP ViT-B/16.

    ViT-B/16: text width 512, vision width 768, 12 layers each, 128-blocks.

    ``K = text_width / b + vision_width / b`` blocks (text first); slot ``4ℓ + j`` holds
    projection ``"qkvo"[j]`` of layer ``ℓ``.
    """

    block_size: int = 128
    num_layers: int = 12
    text_width: int = 512
    vision_width: int = 768

    def __post_init__(self):
        _checks.integer(self.block_size, "block_size")
        _checks.integer(self.num_layers, "num_layers")
        num_blocks(_checks.integer(self.text_width, "text_width"), self.block_size)
        num_blocks(_checks.integer(self.vision_width, "vision_width"), self.block_size)

    @property
    def text_blocks(self) -> int:
        return self.text_width // self.block_size

    @property
    def vision_blocks(self) -> int:
        return self.vision_width // self.block_size

    @property
    def num_blocks(self) -> int:
        return self.text_blocks + self.vision_blocks

    @property
    def num_slots(self) -> int:
        return len(PROJECTIONS) * self.num_layers

    @property
    def shape(self) -> tuple[int, int, int, int]:
        b = self.block_size
        return (b, b, self.num_slots, self.num_blocks)

    def block_range(self, modality: str) -> slice:
        """Indices of mode 4 that belong to ``"text"`` or ``"vision"``."""
        if modality == "text":
            return slice(0, self.text_blocks)
        if modality == "vision":
            return slice(self.text_blocks, self.num_blocks)
        raise ValueError(f"modality must be 'text' or 'vision', got {modality!r}")

    def free_mask(self, vision_free_last: Optional[int] = None) -> torch.Tensor:
        """``(4L, K)`` booleans: True where the block is used free (no Cayley).

        Text blocks are never free; the last ``vision_free_last`` vision layers are (``None``:
        all of them, as in the HPS code; 3 in the earlier variant; 0: everything orthogonal).
        """
        n_free = self.num_layers if vision_free_last is None else vision_free_last
        if (
            isinstance(n_free, bool)
            or not isinstance(n_free, int)
            or not 0 <= n_free <= self.num_layers
        ):
            raise ValueError(
                f"vision_free_last must be an integer in [0, {self.num_layers}] or None, "
                f"got {vision_free_last!r}"
            )
        mask = torch.zeros(self.num_slots, self.num_blocks, dtype=torch.bool)
        first = len(PROJECTIONS) * (self.num_layers - n_free)
        mask[first:, self.block_range("vision")] = True
        return mask

    def parameter_count(self, relation: str = "official", *, tubes: str = "full") -> int:
        r"""Trainable parameters from the shapes alone (no tensor is allocated).

        ``"official"``: :math:`b^2\,4L\,K + (4L)^2 + L K^2` (7,867,824 for ViT-B/16, 128-blocks);
        ``"gated"``: :math:`b^2\,4L\,K + (4L)^2 + K^2 + 2L`; ``"tproduct"``: :math:`2 b^2\,4L\,K`
        (``tubes="full"``) or :math:`b^2\,4L\,K + 4LK` (``"scalar"``);
        ``"none"``: :math:`b^2\,4L\,K`.
        """
        b, s, k, n_layers = self.block_size, self.num_slots, self.num_blocks, self.num_layers
        core = b * b * s * k
        if relation == "none":
            return core
        if relation == "official":
            return core + s * s + n_layers * k * k
        if relation == "gated":
            return core + s * s + k * k + 2 * n_layers
        if relation == "tproduct":
            if tubes == "full":
                return 2 * core
            if tubes == "scalar":
                return core + s * k
            raise ValueError(f"tubes must be 'full' or 'scalar', got {tubes!r}")
        raise ValueError(
            f"relation must be 'official', 'gated', 'tproduct' or 'none', got {relation!r}"
        )


def _param_tensor(params: torch.Tensor, name: str = "params") -> torch.Tensor:
    _checks.tensor(params, name)
    if params.dim() != 4 or params.shape[0] != params.shape[1]:
        raise ValueError(f"{name} must have shape (b, b, 4L, K), got {tuple(params.shape)}")
    return params


# ----------------------------------------------------------------------------
# the two forms of cross-relation mixing
# ----------------------------------------------------------------------------
def mix_official(
    params: torch.Tensor, block_maps: torch.Tensor, layer_map: torch.Tensor
) -> torch.Tensor:
    r"""The official mixing: :math:`\mathcal R \times_3 L`, then :math:`\times_4 M_\ell` per layer.

    ``params (b, b, 4L, K)``; ``layer_map (4L, 4L)`` mixes layers and projections (cross-layer);
    ``block_maps (L, K, K)`` one per layer (HPS code) or ``(K, K)`` shared (earlier variant) mixes
    text and vision blocks (cross-block, cross-modal).  Maps act like ``nn.Linear`` without bias
    (``y = x Wᵀ``) along their mode; both are identity-initialised in the code, and the two mode
    products commute (tested against the code's order of operations).
    """
    _param_tensor(params)
    _checks.tensor(layer_map, "layer_map")
    _checks.tensor(block_maps, "block_maps")
    b, _, s, k = params.shape
    if layer_map.shape != (s, s):
        raise ValueError(
            f"layer_map must have shape (4L, 4L) = ({s}, {s}), got {tuple(layer_map.shape)}"
        )
    t = mode_product(params, layer_map, 2)
    if block_maps.dim() == 2:
        if block_maps.shape != (k, k):
            raise ValueError(
                f"block_maps must have shape (K, K) = ({k}, {k}), got {tuple(block_maps.shape)}"
            )
        return mode_product(t, block_maps, 3)
    if block_maps.dim() != 3 or block_maps.shape[1:] != (k, k) or s % block_maps.shape[0]:
        raise ValueError(
            f"block_maps must have shape (L, K, K) with L dividing 4L = {s} and K = {k}, "
            f"or (K, K); got {tuple(block_maps.shape)}"
        )
    n_layers = block_maps.shape[0]
    t = t.reshape(b, b, n_layers, s // n_layers, k)  # slot 4l + j -> (l, j)
    return (t @ block_maps.transpose(-1, -2)).reshape(b, b, s, k)  # batch (b, b, L) with (L,)


def mix_gated(
    params: torch.Tensor,
    block_maps: torch.Tensor,
    layer_map: torch.Tensor,
    gates: torch.Tensor,
    *,
    text_blocks: int,
) -> torch.Tensor:
    r"""The earlier gated-residual mixing, :math:`\mathcal R + \alpha\,\mathrm{mix}(\mathcal R)`.

    ``gates (2, L)``: one scalar per layer for text (row 0) and vision (row 1), zero-initialised,
    so training starts at :math:`\mathcal R`.  ``text_blocks``: how
    many of the ``K`` blocks are text.
    """
    mixed = mix_official(params, block_maps, layer_map)
    _checks.tensor(gates, "gates")
    _, _, s, k = params.shape
    if gates.dim() != 2 or gates.shape[0] != 2 or s % gates.shape[1]:
        raise ValueError(
            f"gates must have shape (2, L) with L dividing 4L = {s}, got {tuple(gates.shape)}"
        )
    text_blocks = _checks.integer(text_blocks, "text_blocks", 0, k)
    modality = (torch.arange(k, device=params.device) >= text_blocks).long()  # 0 text, 1 vision
    per_slot = gates.repeat_interleave(s // gates.shape[1], dim=1)  # (2, 4L)
    alpha = per_slot[modality].T  # (4L, K)
    return params + alpha * mixed


def scalar_relation(tubes: torch.Tensor, block_size: int) -> torch.Tensor:
    r"""The relation tensor :math:`\mathcal G = I_b \otimes g`: tube ``g`` at ``(i, i)``, else 0.

    ``tubes (4L, K)`` -> ``(b, b, 4L, K)``.  :math:`\mathcal R * \mathcal G` is then a circular
    convolution of the blocks along modes 3 and 4 with the filter :math:`g` (tested):
    a linear mixing along those modes whose matrices are circulant (DFT) or
    :math:`M^{-1}\mathrm{diag}(Mg)M` (transform :math:`M`).
    """
    _checks.tensor(tubes, "tubes")
    _checks.integer(block_size, "block_size")
    eye = torch.eye(block_size, dtype=tubes.dtype, device=tubes.device)
    return eye.reshape(block_size, block_size, *([1] * tubes.dim())) * tubes


def mix_tproduct(
    params: torch.Tensor,
    relation: torch.Tensor,
    transforms: Optional[Sequence[torch.Tensor]] = None,
) -> torch.Tensor:
    r"""T-product mixing :math:`\mathcal R * \mathcal G` over modes 3 and 4 (our construction).

    Built from the T-products of the H-CLIP supplement (Definitions 4.1, 4.2); the paper's own
    equation for its relation module was not reachable, see the module docstring.

    ``transforms=None``: DFTs along both modes (:func:`hyro_edu.geometry.tproduct.tproduct`); otherwise two
    real invertible matrices ``(4L, 4L)`` and ``(K, K)`` (Lu et al. 2019; H-CLIP supplement,
    Eq. S-12).  ``relation (b, b, 4L, K)``; the identity tensor leaves ``params`` unchanged.
    """
    _param_tensor(params)
    _param_tensor(relation, "relation")
    if relation.shape != params.shape:
        raise ValueError(
            f"relation must have the shape of params {tuple(params.shape)}, "
            f"got {tuple(relation.shape)}"
        )
    if transforms is None:
        return tproduct(params, relation)
    if any(isinstance(m, torch.Tensor) and m.is_complex() for m in transforms):
        raise ValueError(
            "transforms must be real matrices here (a complex transform gives a complex product)"
        )
    return tproduct_transform(params, relation, transforms)


def to_blocks(tensor: torch.Tensor, free: torch.Tensor) -> torch.Tensor:
    r"""The matrices used as weights: ``cayley_hclip`` of every slice, or the slice where ``free``.

    :math:`Q_{s,k} = \mathrm{cayley\_hclip}(\mathcal R(:, :, s, k))`.

    ``tensor (b, b, 4L, K)``, ``free (4L, K)`` booleans -> ``(4L, K, b, b)``.
    """
    _param_tensor(tensor, "tensor")
    if (
        not isinstance(free, torch.Tensor)
        or free.dtype != torch.bool
        or free.shape != tensor.shape[2:]
    ):
        raise ValueError(f"free must be a boolean tensor of shape {tuple(tensor.shape[2:])}")
    slices = tensor.permute(2, 3, 0, 1)
    return torch.where(free[..., None, None].to(tensor.device), slices, cayley_hclip(slices))


# ----------------------------------------------------------------------------
# the module
# ----------------------------------------------------------------------------
class HCLIPRelation(nn.Module):
    r"""H-CLIP's learnable blocks for every layer, projection and encoder, with a named mixing.

    ``relation``: ``"official"`` (HPS code: per-layer ``K×K`` maps and a shared ``4L×4L`` map),
    ``"gated"`` (earlier code: shared maps and zero-initialised gates), ``"tproduct"`` (our
    construction from the supplement's T-products: :math:`\mathcal R * \mathcal G`), or
    ``"none"``.  ``mix``: ``"parameters"`` (code: mix, then
    Cayley) or ``"matrices"`` (Cayley, then mix).  ``vision_free_last``: see
    :meth:`HCLIPLayout.free_mask`.  ``tubes`` and ``transforms`` configure ``"tproduct"``.

    Initialisation as the code: text slices 0, free vision slices :math:`I`, Cayley vision slices
    0, maps :math:`I`, gates 0, relation tensor :math:`\mathcal I` — so every block starts at
    :math:`I` (tested).  :meth:`forward` returns the blocks ``(4L, K, b, b)``.  Build on
    ``device="meta"`` to count parameters without allocating them.
    """

    def __init__(
        self,
        layout: HCLIPLayout = HCLIPLayout(),
        *,
        relation: str = "official",
        mix: str = "parameters",
        vision_free_last: Optional[int] = None,
        tubes: str = "full",
        transforms: Optional[Sequence[torch.Tensor]] = None,
        dtype: Optional[torch.dtype] = None,
        device=None,
    ):
        super().__init__()
        if relation not in ("official", "gated", "tproduct", "none"):
            raise ValueError(
                f"relation must be 'official', 'gated', 'tproduct' or 'none', got {relation!r}"
            )
        if mix not in ("parameters", "matrices"):
            raise ValueError(f"mix must be 'parameters' or 'matrices', got {mix!r}")
        if tubes not in ("full", "scalar"):
            raise ValueError(f"tubes must be 'full' or 'scalar', got {tubes!r}")
        self.layout, self.relation, self.mix = layout, relation, mix
        self.tubes = tubes
        factory = dict(dtype=dtype or torch.get_default_dtype(), device=device)
        self.register_buffer(
            "free", layout.free_mask(vision_free_last).to(device), persistent=False
        )
        b, _, s, k = layout.shape
        # free slices start at I, Cayley slices at 0 (Cayley(0) = I); no boolean indexing, so
        # this also runs on the meta device.
        eye = torch.eye(b, **factory)
        self.params = nn.Parameter(eye[:, :, None, None] * self.free.to(**factory))
        self._num_transforms = 0
        if relation == "official":
            self.block_maps = nn.Parameter(torch.eye(k, **factory).repeat(layout.num_layers, 1, 1))
            self.layer_map = nn.Parameter(torch.eye(s, **factory))
        elif relation == "gated":
            self.block_maps = nn.Parameter(torch.eye(k, **factory))
            self.layer_map = nn.Parameter(torch.eye(s, **factory))
            self.gates = nn.Parameter(torch.zeros(2, layout.num_layers, **factory))
        elif relation == "tproduct":
            if transforms is not None:
                # Buffers, so that .to(), .double() and state_dict() carry the transforms.
                for i, m in enumerate(transforms):
                    self.register_buffer(f"transform_{i}", m.detach().to(**factory))
                self._num_transforms = len(transforms)
            ident_tube = t_identity(1, (s, k), self.transforms, **factory)[0, 0]
            if tubes == "full":
                self.relation_tensor = nn.Parameter(scalar_relation(ident_tube, b))
            else:
                self.relation_tubes = nn.Parameter(ident_tube.clone())

    @property
    def transforms(self) -> Optional[list]:
        """The invertible transforms of the ``"tproduct"`` relation (``None``: the DFT)."""
        if not self._num_transforms:
            return None
        return [getattr(self, f"transform_{i}") for i in range(self._num_transforms)]

    def mixing(self, tensor: torch.Tensor) -> torch.Tensor:
        """Apply this module's relation to a ``(b, b, 4L, K)`` tensor (parameters or matrices)."""
        if self.relation == "official":
            return mix_official(tensor, self.block_maps, self.layer_map)
        if self.relation == "gated":
            return mix_gated(
                tensor,
                self.block_maps,
                self.layer_map,
                self.gates,
                text_blocks=self.layout.text_blocks,
            )
        if self.relation == "tproduct":
            rel = (
                self.relation_tensor
                if self.tubes == "full"
                else scalar_relation(self.relation_tubes, self.layout.block_size)
            )
            return mix_tproduct(tensor, rel, self.transforms)
        return tensor

    def forward(self) -> torch.Tensor:
        """The blocks ``(4L, K, b, b)`` that multiply the CLIP weights."""
        if self.mix == "parameters":
            return to_blocks(self.mixing(self.params), self.free)
        matrices = to_blocks(self.params, self.free).permute(2, 3, 0, 1)
        return self.mixing(matrices).permute(2, 3, 0, 1)

    def layer_blocks(
        self, layer: int, modality: str, blocks: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        """``(4, K_modality, b, b)``: the q, k, v, o blocks of one layer of one encoder."""
        n = self.layout.num_layers
        layer = _checks.integer(layer, "layer", 0, n - 1)
        blocks = self.forward() if blocks is None else blocks
        return blocks[4 * layer : 4 * layer + 4, self.layout.block_range(modality)]
