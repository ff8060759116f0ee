r"""Heterogeneous hyperbolic manifolds for tree alignment (:cite:`wu2026modality`, key designs 2-4).

**Convention:** ``c > 0`` means curvature ``-c`` (as everywhere in :mod:`hyro_edu`).

The image tree lives on a Lorentz manifold of curvature ``-c_i``, the text tree on one of
curvature ``-c_t``, and the two are aligned on an intermediate manifold of curvature ``-c_m``:

.. math:: V = \exp_o^{c_i}(s_i\,\hat v), \qquad T = \exp_o^{c_t}(s_t\,\hat t), \qquad
          c_m = \arg\min_{c} D(c_i, c; r_i) + D(c_t, c; r_t),

with the scaling factors ``s_i``, ``s_t`` (1 or 10 in the official configs) and ``c_m`` from
:func:`hyro_edu.geometry.intermediate_curvature.optimal_curvature` (golden-section search,
implicit-function-theorem gradient).  :class:`hyro_edu.tree_alignment.manifolds.HeterogeneousCurvatures` holds
the learnable
log-curvatures; :func:`hyro_edu.tree_alignment.manifolds.embed` is the scaled exponential map.

**Which curvatures exist and which are trained** (``curv_version``; ``TRAINABLE``):

* ``"learn_common"``: one parameter ``log_curv``, used for ``c_i = c_t = c_m`` (the paper's
  ablation HypV1, shared curvature);
* ``"learn3"``: ``log_curv_image``, ``log_curv_text``, ``log_curv_inter``, all free (HypV2,
  separate curvatures and no intermediate search);
* ``"learn2derive1"`` (default, every official config): ``log_curv_image`` and
  ``log_curv_text`` learned, ``c_m`` derived (the full method);
* ``"fixed3"``, ``"fixed2derive1"``: as ``learn3`` and ``learn2derive1`` with nothing trained;
* ``"euclidean"`` (this package's addition; the official code has no Euclidean option): no
  curvature at all, the ablation Euc, whose alignment uses Euclidean cones
  (:mod:`hyro_edu.tree_alignment.alignment`).

``ABLATIONS`` maps the paper's ablation rows to these: HypV1 is its "shared curvature" row
(``learn_common``), HypV2 its "separate curvatures, no intermediate search" row (``learn3``, the
alignment curvature a free parameter: our reading of "no search");
:func:`hyro_edu.tree_alignment.manifolds.build_curvatures`
takes either name.

**The clamp** (official ``clamp_curv``): every log-curvature is clamped *in place, outside
autograd* to ``[log(curv_init/spread), log(curv_init·spread)]`` (``spread = 10``), with the
range taken from the one shared ``curv_init``.  The official code does it at the start of every
step; here :meth:`hyro_edu.tree_alignment.manifolds.HeterogeneousCurvatures.forward` does it before it reads
the parameters (and
:meth:`hyro_edu.tree_alignment.manifolds.HeterogeneousCurvatures.clamp_` is public).  The forward pass then
uses ``exp(log c)``
with no clamp in the graph, so ``dc/d log c = c`` is never zero: a curvature on a bound keeps
its full gradient and moves back as soon as the loss pushes inwards (projected gradient descent
on ``log c``).  This is the official behaviour and the one tested.

References
----------
* Wu, Fan, Wu, Gao, Li, Jia & Harandi, *Modality Alignment across Trees on Heterogeneous
  Hyperbolic Manifolds* (ICLR 2026): method, key designs 2 (heterogeneous curvatures and the
  intermediate manifold) and 4 (implicit-function-theorem derivatives); ablation table (Euc,
  HypV1, HypV2, full).  Official code ``models/maple.py`` (``CustomCLIP.__init__``,
  ``clamp_curv``, ``get_curv_m``) read for facts only.
"""
from __future__ import annotations

import math
from typing import NamedTuple, Optional, Union

import torch
from torch import nn

from hyro_edu.core import checks as _checks
from hyro_edu.core.numerics import fp32_math
from hyro_edu.geometry import intermediate_curvature as _ic
from hyro_edu.geometry import lorentz as _lorentz

__all__ = [
    "CURV_VERSIONS",
    "DERIVED",
    "TRAINABLE",
    "ABLATIONS",
    "Curvatures",
    "HeterogeneousCurvatures",
    "build_curvatures",
    "embed",
]

CURV_VERSIONS = ("learn_common", "learn3", "learn2derive1", "fixed3", "fixed2derive1", "euclidean")
DERIVED = ("learn2derive1", "fixed2derive1")
TRAINABLE = {
    "learn_common": ("log_curv",),
    "learn3": ("log_curv_image", "log_curv_text", "log_curv_inter"),
    "learn2derive1": ("log_curv_image", "log_curv_text"),
    "fixed3": (),
    "fixed2derive1": (),
    "euclidean": (),
}
ABLATIONS = {"Euc": "euclidean", "HypV1": "learn_common", "HypV2": "learn3", "full": "learn2derive1"}

Scalar = Union[float, torch.Tensor]


class Curvatures(NamedTuple):
    """The three curvatures ``c_i`` (image), ``c_t`` (text), ``c_m`` (intermediate): 0-d tensors, or all
    ``None`` (Euclidean).

    Curvature ``-c`` with ``c > 0``.
    """

    image: Optional[torch.Tensor]
    text: Optional[torch.Tensor]
    inter: Optional[torch.Tensor]

    @property
    def euclidean(self) -> bool:
        return self.image is None


def _curv_version(curv_version) -> str:
    return _checks.choice(curv_version, "curv_version", CURV_VERSIONS)


class HeterogeneousCurvatures(nn.Module):
    r"""The curvatures of tree alignment, stored as logs and clamped in place (:cite:`wu2026modality`).

    .. math:: c_k = \exp(\ell_k), \qquad
              \ell_k \leftarrow \operatorname{clamp}\big(\ell_k,\ \log(c_{\rm init}/s),\ \log(c_{\rm init}\,s)\big)
              \ \text{(in place, before every use)}, \qquad
              c_m = \arg\min_c D(c_i, c; r_i') + D(c_t, c; r_t') \ \text{(derived versions)}.

    Curvature ``-c`` with ``c > 0`` throughout.  ``curv_version`` selects the parameters (module
    docstring, ``TRAINABLE``).  ``curv_init`` sets the clamp range for every curvature (the
    official code's shared ``curv_init``, default there 0.5); ``c_image``, ``c_text``, ``c_inter``
    are the initial values (default ``curv_init``, as in the official code; ``learn_common`` starts
    at ``curv_init``, derived versions ignore ``c_inter``).  ``spread`` is 10 in the official code.
    The defaults are the CIFAR-100 16-shot MaPLe config: ``curv_init = 0.05``, clamp range
    ``[0.005, 0.5]``.

    For the derived versions, ``forward(r_image, r_text)`` needs the raw radii (the official
    ``r``: :func:`hyro_edu.tree_alignment.alignment.tree_radius` of the unit image and text tree
    nodes).  With ``rescale=True`` (official) they are first rescaled with
    :func:`hyro_edu.geometry.intermediate_curvature.rescale_radii` so that the smaller of
    ``r'·sqrt(c)`` is 1.  Then ``c_m`` is
    :func:`hyro_edu.geometry.intermediate_curvature.optimal_curvature` with ``c1 = c_i``,
    ``c2 = c_t`` (the official order), ``variant`` (``"official"`` or ``"paper"`` D),
    ``interval``, ``gradient``, ``tol`` and ``max_iter`` (the official 1e-6 and 100).  The
    gradient is the correct one (implicit function theorem inside, the boundary's derivative at
    a boundary solution), not the official code's raw 1.0 (documented in
    :mod:`hyro_edu.geometry.intermediate_curvature`).

    Properties (tested): after ``forward()`` every curvature lies in ``[curv_init/spread,
    curv_init·spread]``, also after an update pushed ``log c`` past a bound; the gradient with
    respect to a log-curvature on a bound is ``c·dL/dc``, not zero; ``c_m`` lies in
    ``[0.9·min, 1.1·max]`` of ``(c_i, c_t)`` (official interval) and its gradient matches
    finite differences; the trainable parameters are exactly ``TRAINABLE`` ``[curv_version]``.

    Raises ``ValueError`` for an unknown ``curv_version``, ``variant``, ``interval`` or
    ``gradient``, ``curv_init <= 0``, ``spread < 1``, an initial curvature outside the clamp range
    (naming it), or missing radii for a derived version.

    Shapes: ``forward()`` returns :class:`hyro_edu.tree_alignment.manifolds.Curvatures` of 0-d tensors
    (float32; float64 after
    ``.double()``).
    """

    def __init__(
        self,
        curv_version: str = "learn2derive1",
        *,
        curv_init: float = 0.05,
        c_image: Optional[float] = None,
        c_text: Optional[float] = None,
        c_inter: Optional[float] = None,
        spread: float = 10.0,
        variant: str = "official",
        interval="official",
        rescale: bool = True,
        gradient: str = "implicit",
        tol: float = 1e-6,
        max_iter: int = 100,
    ):
        super().__init__()
        self.curv_version = _curv_version(curv_version)
        self.curv_init = _checks.curvature(curv_init, "curv_init")
        if isinstance(spread, bool) or not isinstance(spread, (int, float)) or not math.isfinite(spread) or spread < 1:
            raise ValueError(f"spread must be a finite number >= 1, got {spread!r}")
        self.spread = float(spread)
        self.variant = _checks.choice(variant, "variant", _ic.VARIANTS)
        _ic.search_interval(c1=1.0, c2=1.0, interval=interval)  # ValueError for a bad interval
        self.interval = interval
        self.gradient = _checks.choice(gradient, "gradient", _ic.GRADIENTS)
        self.rescale = bool(rescale)
        self.tol, self.max_iter = tol, max_iter
        _ic.find_intermediate_curvature(c1=1.0, c2=1.0, r1=1.0, r2=1.0, tol=tol, max_iter=max_iter)  # validates both
        lo, hi = self.bounds
        self.log_bounds = (math.log(lo), math.log(hi))

        inits = {}
        for name, value in (("c_image", c_image), ("c_text", c_text), ("c_inter", c_inter)):
            value = self.curv_init if value is None else _checks.curvature(value, name)
            # The clamp would move an initial value outside [lo, hi] onto the bound at the first
            # step, silently; say so instead.
            if not lo <= value <= hi:
                raise ValueError(
                    f"{name} must lie in the clamp range [curv_init/spread, curv_init*spread] = "
                    f"[{lo:.6g}, {hi:.6g}] (curv_init={self.curv_init:.6g}, spread={self.spread:g}); got {value!r}"
                )
            inits[name] = value

        v = self.curv_version
        learn = v.startswith("learn")
        if v == "learn_common":
            self.log_curv = nn.Parameter(torch.tensor(math.log(self.curv_init)))
        elif v != "euclidean":
            names = [("log_curv_image", "c_image"), ("log_curv_text", "c_text")]
            if v in ("learn3", "fixed3"):
                names.append(("log_curv_inter", "c_inter"))
            for pname, iname in names:
                setattr(self, pname, nn.Parameter(torch.tensor(math.log(inits[iname])), requires_grad=learn))

    @property
    def bounds(self) -> tuple[float, float]:
        """The clamp range of every curvature, ``(curv_init/spread, curv_init·spread)``."""
        return self.curv_init / self.spread, self.curv_init * self.spread

    @property
    def derived(self) -> bool:
        """Whether ``c_m`` is derived from ``c_i`` and ``c_t`` (``learn2derive1``, ``fixed2derive1``)."""
        return self.curv_version in DERIVED

    def clamp_(self) -> "HeterogeneousCurvatures":
        """Clamp every log-curvature into ``log_bounds`` in place, outside autograd (official ``clamp_curv``)."""
        # In place and under no_grad, as the official code: the clamp has no backward, so
        # d c / d log c = c stays non-zero on the bounds and a curvature pinned there can leave.
        with torch.no_grad():
            for p in self.parameters():
                p.clamp_(*self.log_bounds)
        return self

    def forward(self, r_image: Optional[Scalar] = None, r_text: Optional[Scalar] = None) -> Curvatures:
        """Clamp in place, then return ``(c_i, c_t, c_m)``; the raw radii are needed only for a derived ``c_m``."""
        v = self.curv_version
        if v == "euclidean":
            return Curvatures(None, None, None)
        self.clamp_()
        if v == "learn_common":
            c = self.log_curv.exp()
            return Curvatures(c, c, c)
        c_i, c_t = self.log_curv_image.exp(), self.log_curv_text.exp()
        if not self.derived:
            return Curvatures(c_i, c_t, self.log_curv_inter.exp())
        if r_image is None or r_text is None:
            missing = "r_image" if r_image is None else "r_text"
            raise ValueError(
                f"{missing} must be given for curv_version={v!r}: c_m is derived from the radii of the two trees "
                "(hyro_edu.tree_alignment.alignment.tree_radius)"
            )
        r_i = _checks.positive(r_image, "r_image")
        r_t = _checks.positive(r_text, "r_text")
        if self.rescale:
            r_i, r_t = _ic.rescale_radii(r_i, r_t, c1=c_i.detach(), c2=c_t.detach())
        else:
            r_i, r_t = (torch.as_tensor(r, dtype=c_i.dtype).detach() for r in (r_i, r_t))
        c_m = _ic.optimal_curvature(
            c1=c_i, c2=c_t, r1=r_i, r2=r_t, variant=self.variant, interval=self.interval, gradient=self.gradient,
            tol=self.tol, max_iter=self.max_iter,
        )
        return Curvatures(c_i, c_t, c_m)

    def extra_repr(self) -> str:
        lo, hi = self.bounds
        return f"curv_version={self.curv_version!r}, range=[{lo:.4g}, {hi:.4g}], variant={self.variant!r}"


def build_curvatures(name: str = "full", **kwargs) -> HeterogeneousCurvatures:
    """:class:`hyro_edu.tree_alignment.manifolds.HeterogeneousCurvatures` for an ablation row of ``ABLATIONS``
    or a ``curv_version``.

    ``"Euc"`` -> ``"euclidean"``, ``"HypV1"`` -> ``"learn_common"``, ``"HypV2"`` -> ``"learn3"``,
    ``"full"`` -> ``"learn2derive1"`` (:cite:`wu2026modality`, ablation table); any name of
    ``CURV_VERSIONS`` is passed through.  ``kwargs`` go to the constructor.  Raises
    ``ValueError`` for any other name.
    """
    if name in ABLATIONS:
        return HeterogeneousCurvatures(ABLATIONS[name], **kwargs)
    if name in CURV_VERSIONS:
        return HeterogeneousCurvatures(name, **kwargs)
    raise ValueError(f"name must be an ablation {tuple(ABLATIONS)} or a curv_version {CURV_VERSIONS}, got {name!r}")


@fp32_math
def embed(features: torch.Tensor, *, c: Scalar, scale: float = 1.0) -> torch.Tensor:
    r"""The scaled exponential map onto the hyperboloid of curvature ``-c``: :math:`x = \exp_o^{c}(s\,f)`.

    .. math:: \exp^c_o(s f) = \Big(\frac{\cosh(\sqrt c\, s\|f\|)}{\sqrt c},\
              \frac{\sinh(\sqrt c\, s\|f\|)}{\sqrt c\,\|f\|}\,f\Big).

    ``c > 0`` means curvature ``-c``; ``scale`` is the scaling factor ``s_i`` or ``s_t`` (1 or 10 in
    the official configs).  :func:`hyro_edu.geometry.lorentz.expmap0` with its cap on the distance
    from the origin (8.66/sqrt(c) in float32; the official code caps ``sqrt(c)·s‖f‖`` at
    ``asinh(2^15) ≈ 11.1`` instead, which unit features with ``s <= 10`` and ``c <= 0.5`` never
    reach).  Computed in float32 or float64 even under autocast.

    Property (tested): the distance from the origin is ``s‖f‖`` (the official features are unit
    vectors, so every node sits at radius ``s``).  Shapes: ``(..., E)`` -> ``(..., E+1)``, time
    coordinate first.  :cite:`wu2026modality` (method, key design 2,
    :math:`t_i^{c_1} = \exp^{c_1}_0(t_i)`); official code ``tree_aligning_loss``.
    """
    _checks.tensor(features, "features")
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale) or scale <= 0:
        raise ValueError(f"scale must be a finite number > 0, got {scale!r}")
    return _lorentz.expmap0(scale * features, c=c)
