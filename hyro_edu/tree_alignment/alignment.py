r"""The tree-alignment loss: entailment along each tree path and across the modalities (:cite:`wu2026modality`,
key design 3).

**Convention:** ``c > 0`` means curvature ``-c`` (as everywhere in :mod:`hyro_edu`).

For every sample, the trees give a root-excluded path of ``D`` nodes, depth 1 to the leaf: text
features :math:`t_1, \dots, t_D` and the visual features :math:`v_1, \dots, v_D` that the
text-guided cross-attention picked with them (:mod:`hyro_edu.tree_alignment.features`).  The loss is

.. math::
    L_{\rm align} = \underbrace{L_{\rm ent}(V_{:-1}, V_{1:};\, c_i)}_{\text{image path}}
    + \underbrace{L_{\rm ent}(T_{:-1}, T_{1:};\, c_t)}_{\text{text path}}
    + \underbrace{L_{\rm ent}(T^m, V^m;\, c_m)}_{\text{text entails image}},
    \qquad L_{\rm ent}(X, Y; c) = \operatorname{mean}\max\big(0, \mathrm{ext}_c(x, y) - \mathrm{aper}_c(x)\big),

with :math:`V = \exp^{c_i}_o(s_i v)`, :math:`T = \exp^{c_t}_o(s_t t)`, and :math:`T^m`,
:math:`V^m` the same features mapped at :math:`c_m` (:func:`hyro_edu.tree_alignment.manifolds.embed`).
Within a path the depth-``k`` node is the apex and the depth-``k+1`` node must lie in its cone;
across modalities the text node is the apex of the image node of the same depth.  The cones are
MERU's Lorentz cones of :mod:`hyro_edu.geometry.cones` (``lorentz_half_aperture``, ``oxy_angle``,
``lorentz_energy``; ``K = 0.1``).  The ablation Euc (curvatures ``None``) uses the Euclidean cones
(``euclidean_energy``) on :math:`s\,v` and :math:`s\,t`.

**Short paths** (switch ``padding``): a leaf shallower than the tree's depth leaves slots after
its path.

* ``"zeros"`` -- the official code: the unfilled slots are zero vectors, which the exponential
  map sends to the origin, and the mean runs over all ``B·(D-1)`` (path) or ``B·D`` (cross) pairs.
  The pair (last node, origin) costs about :math:`\pi - \mathrm{aper}` and pulls the last node
  toward the origin; the pairs (origin, origin) cost about 0 but still count in the mean.
* ``"mask"`` (default) -- only pairs inside the path count, and the mean runs over them.

The two agree when every path has full length (tested).  The package's cones have no ``eps``
biases, so ``ext(x, o)`` is ``π`` exactly where MERU's code gives ``π - 1.4e-3``.

All hyperbolic maths runs in float32 or float64, also for half inputs and under autocast
(:func:`hyro_edu.core.numerics.fp32_math`).

References
----------
* Wu, Fan, Wu, Gao, Li, Jia & Harandi, *Modality Alignment across Trees on Heterogeneous
  Hyperbolic Manifolds* (ICLR 2026), method, key design 3 (entailment-cone alignment, the
  intra-modal constraints) and the total loss :math:`J = J_{pro} + \alpha(J_{Tent} + J_{Vent} + J_{ent})`;
  official code ``manifolds/lorentz.py`` (``entailment_loss``, ``tree_aligning_loss``) and
  ``engine.py`` (the tree tensors, ``r``), read for facts only.
* Desai et al., *Hyperbolic Image-Text Representations* (MERU, ICML 2023): the Lorentz cones.
"""
from __future__ import annotations

import math
from typing import NamedTuple, Optional, Union

import torch

from hyro_edu.core import checks as _checks
from hyro_edu.core.numerics import fp32_math
from hyro_edu.geometry import cones as _cones
from hyro_edu.geometry import intermediate_curvature as _ic
from hyro_edu.tree_alignment.manifolds import Curvatures, embed

__all__ = [
    "PADDINGS",
    "path_mask",
    "entailment_loss",
    "path_entailment_loss",
    "cross_entailment_loss",
    "AlignmentLoss",
    "tree_alignment_loss",
    "tree_radius",
]

PADDINGS = ("mask", "zeros")
Scalar = Union[float, torch.Tensor]


# ----------------------------------------------------------------------------
# paths and padding
# ----------------------------------------------------------------------------
def path_mask(lengths, depth: int, *, device=None) -> torch.Tensor:
    """``(B, D)`` bool: ``mask[b, d] = d < lengths[b]``, the slots that hold a node of path ``b``.

    ``lengths``: integers in ``[1, depth]``, a sequence or a 1-d integer tensor of length ``B``.
    Raises ``ValueError`` naming ``lengths`` otherwise.
    """
    depth = _checks.integer(depth, "depth")
    lengths = torch.as_tensor(lengths, device=device)
    if lengths.dim() != 1 or lengths.dtype.is_floating_point or lengths.dtype == torch.bool:
        raise ValueError(
            f"lengths must be a 1-d sequence of integers, got dtype {lengths.dtype}, shape {tuple(lengths.shape)}"
        )
    if len(lengths) and (int(lengths.min()) < 1 or int(lengths.max()) > depth):
        raise ValueError(f"lengths must lie in [1, {depth}] (the tree depth), got {lengths.tolist()}")
    return torch.arange(depth, device=lengths.device) < lengths.unsqueeze(1)


def _padding(padding) -> str:
    return _checks.choice(padding, "padding", PADDINGS)


def _nodes(x, name) -> torch.Tensor:
    _checks.tensor(x, name)
    if x.dim() != 3:
        raise ValueError(f"{name} must have shape (B, D, E) (samples, path depth, features), got {tuple(x.shape)}")
    return x


def _pad(features, lengths, padding):
    """The features the loss sees and the pair mask over slots (``None``: every slot counts)."""
    if lengths is None:
        return features, None
    valid = path_mask(lengths, features.shape[1], device=features.device)
    if valid.shape[0] != features.shape[0]:
        raise ValueError(f"lengths must have one entry per sample ({features.shape[0]}), got {valid.shape[0]}")
    if padding == "zeros":
        # The official tree tensors hold zero vectors after each path; reproduce that whatever
        # the caller left in those slots.
        return features * valid.unsqueeze(-1).to(features.dtype), None
    return features, valid


def _masked_mean(values: torch.Tensor, mask: Optional[torch.Tensor]) -> torch.Tensor:
    if mask is None:
        return values.mean() if values.numel() else values.sum()
    m = mask.to(values.dtype)
    # max(count, 1): a batch without a single valid pair gives 0 (and a zero gradient), not 0/0.
    return (values * m).sum() / m.sum().clamp_min(1)


def _check_c(c, name="c"):
    if c is None:
        return None
    return _checks.curvature(c, name)


# ----------------------------------------------------------------------------
# losses
# ----------------------------------------------------------------------------
@fp32_math
def entailment_loss(
    parents: torch.Tensor,
    children: torch.Tensor,
    *,
    c: Optional[Scalar],
    K: float = 0.1,
    mask: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    r"""The mean cone violation of ``(parent, child)`` pairs:

    .. math:: L_{\rm ent} = \operatorname{mean}\max\big(0, \mathrm{ext}_c(x, y) - \mathrm{aper}_c(x)\big).

    ``parents`` are the apexes ``x``, ``children`` the points ``y`` that should lie in their
    cones.  ``c > 0`` (curvature ``-c``): points on the hyperboloid, ``(..., n+1)`` with the time
    coordinate first, and :func:`hyro_edu.geometry.cones.lorentz_energy`.  ``c=None``: vectors
    of ``R^n`` and :func:`hyro_edu.geometry.cones.euclidean_energy` (the ablation Euc).
    ``mask`` (bool, the leading shape ``(...)``): the mean runs over the ``True`` pairs only
    (0 when there are none).

    Properties (tested): ``>= 0``; 0 when every child lies in its parent's cone (e.g. further out
    on the same ray); finite gradients in float32 and float64, also with respect to ``c``.
    Shapes: ``(..., n+1)`` -> ``()``.  :cite:`wu2026modality` (method, key design 3,
    :math:`J_{ent}`); official ``entailment_loss``.
    """
    K = _cones.aperture_constant(K)
    _checks.tensor(parents, "parents")
    _checks.tensor(children, "children")
    if parents.shape != children.shape:
        raise ValueError(
            f"parents and children must have the same shape, got {tuple(parents.shape)} and {tuple(children.shape)}"
        )
    c = _check_c(c)
    if c is None:
        energies = _cones.euclidean_energy(parents, children, K=K)
    else:
        energies = _cones.lorentz_energy(parents, children, c=c, K=K)
    if mask is not None:
        if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool or mask.shape != energies.shape:
            raise ValueError(
                f"mask must be a bool tensor of shape {tuple(energies.shape)} (one entry per pair), got "
                f"{getattr(mask, 'dtype', type(mask).__name__)} {tuple(getattr(mask, 'shape', ()))}"
            )
    return _masked_mean(energies, mask)


def _to_space(features, c, scale):
    if c is None:
        return scale * features
    return embed(features, c=c, scale=scale)


def _scale(scale, name):
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale) or scale <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {scale!r}")
    return float(scale)


@fp32_math
def path_entailment_loss(
    features: torch.Tensor,
    *,
    c: Optional[Scalar],
    scale: float = 1.0,
    K: float = 0.1,
    lengths=None,
    padding: str = "mask",
) -> torch.Tensor:
    r"""Intra-modal path consistency :math:`L_{\rm ent}(X_{:, :-1}, X_{:, 1:}; c)`, :math:`X = \exp^c_o(s\,f)`.

    Each node of a path is the apex of the next (deeper) one on the manifold of curvature ``-c``
    (``c > 0``; ``None`` for Euclidean cones on ``s·f``).  ``features (B, D, E)``: the Euclidean
    tree-node features (unit vectors in the official code), depth 1 first; ``lengths``: the path
    lengths (``None``: all ``D``); ``padding``: ``"mask"`` or ``"zeros"`` (module docstring).
    Returns ``()``; 0 for ``D = 1``.

    :cite:`wu2026modality` (method, key design 3: the intra-modal constraints :math:`J_{Tent}`,
    :math:`J_{Vent}`); official ``tree_aligning_loss``, first two terms.
    """
    features = _nodes(features, "features")
    padding, scale = _padding(padding), _scale(scale, "scale")
    c = _check_c(c)
    features, valid = _pad(features, lengths, padding)
    x = _to_space(features, c, scale)
    mask = None if valid is None else valid[:, 1:]
    return entailment_loss(x[:, :-1], x[:, 1:], c=c, K=K, mask=mask)


@fp32_math
def cross_entailment_loss(
    text_features: torch.Tensor,
    image_features: torch.Tensor,
    *,
    c: Optional[Scalar],
    scale_text: float = 1.0,
    scale_image: float = 1.0,
    K: float = 0.1,
    lengths=None,
    padding: str = "mask",
) -> torch.Tensor:
    r"""Cross-modal entailment on the intermediate manifold: :math:`L_{\rm ent}(T^m, V^m; c_m)`, text entails image.

    .. math:: T^m = \exp^{c_m}_o(s_t\,t), \qquad V^m = \exp^{c_m}_o(s_i\,v),

    the text node of each depth is the apex of the image node of the same depth.  ``c`` is
    ``c_m > 0`` (curvature ``-c_m``), or ``None`` for Euclidean cones.  ``text_features`` and
    ``image_features``: ``(B, D, E)``.  ``lengths``, ``padding`` as in
    :func:`hyro_edu.tree_alignment.alignment.path_entailment_loss`.  Returns ``()``.

    :cite:`wu2026modality` (method, key design 3: :math:`v_i^{c_3}` must lie in
    :math:`\omega(t_i^{c_3})`); official ``tree_aligning_loss``, third term.
    """
    text_features = _nodes(text_features, "text_features")
    image_features = _nodes(image_features, "image_features")
    if text_features.shape != image_features.shape:
        raise ValueError(
            f"text_features and image_features must have the same shape (B, D, E), got "
            f"{tuple(text_features.shape)} and {tuple(image_features.shape)}"
        )
    padding = _padding(padding)
    s_t, s_i = _scale(scale_text, "scale_text"), _scale(scale_image, "scale_image")
    c = _check_c(c)
    text_features, valid = _pad(text_features, lengths, padding)
    image_features, _ = _pad(image_features, lengths, padding)
    t = _to_space(text_features, c, s_t)
    v = _to_space(image_features, c, s_i)
    return entailment_loss(t, v, c=c, K=K, mask=valid)


class AlignmentLoss(NamedTuple):
    """``total = image + text + cross`` (0-d tensors): the image path, the text path, text-entails-image."""

    total: torch.Tensor
    image: torch.Tensor
    text: torch.Tensor
    cross: torch.Tensor


def tree_alignment_loss(
    image_nodes: torch.Tensor,
    text_nodes: torch.Tensor,
    curvatures: Curvatures,
    *,
    scale_image: float = 1.0,
    scale_text: float = 1.0,
    K: float = 0.1,
    lengths=None,
    padding: str = "mask",
) -> AlignmentLoss:
    r"""The alignment loss of the two trees on their heterogeneous manifolds (module docstring).

    .. math:: L_{\rm align} = L_{\rm ent}(V_{:-1}, V_{1:}; c_i) + L_{\rm ent}(T_{:-1}, T_{1:}; c_t)
              + L_{\rm ent}(T^m, V^m; c_m).

    ``curvatures``: :class:`hyro_edu.tree_alignment.manifolds.Curvatures` ``(c_i, c_t, c_m)``
    (``c > 0``, curvature ``-c``), from
    :class:`hyro_edu.tree_alignment.manifolds.HeterogeneousCurvatures`; all ``None`` gives the
    Euclidean ablation.  ``image_nodes``, ``text_nodes``: ``(B, D, E)``, the unit visual and text
    features along each path, depth 1 first.  The official weight is ``α = 0.5`` in
    :math:`J = J_{pro} + \alpha L_{\rm align}` (applied by the caller).

    Properties (tested): each term ``>= 0``; zero for trees built inside the cones; ``"mask"`` and
    ``"zeros"`` differ on short paths and agree on full-length ones; finite gradients in float32
    with respect to the features and the log-curvatures.

    Returns :class:`hyro_edu.tree_alignment.alignment.AlignmentLoss`.  :cite:`wu2026modality` (method, key
    design 3 and the total
    loss); official ``tree_aligning_loss``.
    """
    if not isinstance(curvatures, Curvatures):
        raise ValueError(f"curvatures must be a Curvatures (c_image, c_text, c_inter), got {type(curvatures).__name__}")
    kw = dict(K=K, lengths=lengths, padding=padding)
    image = path_entailment_loss(image_nodes, c=curvatures.image, scale=scale_image, **kw)
    text = path_entailment_loss(text_nodes, c=curvatures.text, scale=scale_text, **kw)
    cross = cross_entailment_loss(
        text_nodes, image_nodes, c=curvatures.inter, scale_text=scale_text, scale_image=scale_image, **kw
    )
    return AlignmentLoss(image + text + cross, image, text, cross)


def tree_radius(nodes: torch.Tensor, *, lengths=None, padding: str = "mask") -> torch.Tensor:
    r"""The official code's raw radius :math:`r = \|\operatorname{mean}_{b,d}\, x_{b,d}\|` of one tree's nodes.

    ``nodes (B, D, E)``: the unit tree-node features, detached (``r`` gets no gradient).
    ``padding="zeros"`` (official): the mean runs over all ``B·D`` slots, the zero vectors after
    short paths included, which shrinks ``r``; ``"mask"``: over the path nodes only.  The two
    agree for full-length paths.  Feed ``r`` of the image and of the text tree to
    :class:`hyro_edu.tree_alignment.manifolds.HeterogeneousCurvatures` (which rescales them).
    Shapes: ``(B, D, E)`` -> ``()``.  Official code ``engine.py`` (``r_image``, ``r_text``);
    :func:`hyro_edu.geometry.intermediate_curvature.mean_feature_norm`.
    """
    nodes = _nodes(nodes, "nodes")
    padding = _padding(padding)
    nodes, valid = _pad(nodes.detach(), lengths, padding)
    if valid is None:
        return _ic.mean_feature_norm(nodes)
    return torch.linalg.vector_norm(nodes[valid].mean(0))
