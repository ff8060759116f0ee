"""Matplotlib drawings of the Poincaré disk (curvature ``-c``, ``c > 0``; radius ``1/sqrt(c)``).

Every curve is computed with :mod:`hyro_edu.geometry.poincare`: geodesics with
:func:`~hyro_edu.geometry.poincare.geodesic`, circles with :func:`~hyro_edu.geometry.poincare.expmap`,
the outlines of entailment cones (:func:`cone_outline`) with
:func:`~hyro_edu.geometry.poincare.expmap` and :mod:`hyro_edu.geometry.cones`.
"""
from __future__ import annotations

import math

import torch

from hyro_edu.core import checks as _checks
from hyro_edu.geometry import cones as C
from hyro_edu.geometry import poincare as P
from hyro_edu.hierarchy.trees import Tree

__all__ = [
    "disk_axes",
    "geodesic_curve",
    "hyperbolic_circle",
    "draw_tree",
    "poincare_scene",
    "cone_outline",
]


def disk_axes(ax, c: float = 1.0, *, title: str | None = None):
    """Draw the boundary circle of radius ``1/sqrt(c)`` and fix an equal-aspect frame around it."""
    import matplotlib.patches as mpatches

    r = 1 / math.sqrt(c)
    ax.add_patch(mpatches.Circle((0, 0), r, fill=False, lw=1.2, color="black"))
    ax.set_xlim(-1.05 * r, 1.05 * r)
    ax.set_ylim(-1.05 * r, 1.05 * r)
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
    for side in ax.spines.values():
        side.set_visible(False)
    if title:
        ax.set_title(title)
    return ax


def geodesic_curve(x, y, *, c: float = 1.0, n: int = 64) -> torch.Tensor:
    """``n`` points on the geodesic segment from ``x`` to ``y`` (2-vectors), shape ``(n, 2)``."""
    x = torch.as_tensor(x, dtype=torch.float64)
    y = torch.as_tensor(y, dtype=torch.float64)
    t = torch.linspace(0, 1, n, dtype=torch.float64)[:, None]
    return P.geodesic(t, x, y, c=c)


def hyperbolic_circle(center, r: float, *, c: float = 1.0, n: int = 256) -> torch.Tensor:
    """``n`` points at hyperbolic distance ``r`` from ``center``: ``expmap(center, u)`` with ``‖u‖_center = r``."""
    center = torch.as_tensor(center, dtype=torch.float64)
    theta = torch.linspace(0, 2 * math.pi, n, dtype=torch.float64)
    unit = torch.stack([theta.cos(), theta.sin()], dim=-1)
    lam = P.conformal_factor(center, c=c).item()
    return P.expmap(center.expand_as(unit), unit * (r / lam), c=c)


def draw_tree(ax, tree: Tree, points: torch.Tensor, *, c: float | None = 1.0, node_size: float = 12, cmap: str = "viridis"):
    """Draw ``tree`` at ``points (N, 2)``: edges as Poincaré geodesics (or straight lines if ``c`` is None).

    Nodes are coloured by depth.
    """
    import matplotlib.pyplot as plt

    pts = points.detach().double()
    for parent, child in tree.edges:
        if c is None:
            seg = torch.stack([pts[parent], pts[child]])
        else:
            seg = geodesic_curve(pts[parent], pts[child], c=c, n=24)
        seg = seg.numpy()
        ax.plot(seg[:, 0], seg[:, 1], color="0.6", lw=0.6, zorder=1)
    deepest = max(1, max(tree.depths))
    colours = plt.get_cmap(cmap)([d / deepest for d in tree.depths])
    xy = pts.numpy()
    ax.scatter(xy[:, 0], xy[:, 1], s=node_size, c=colours, zorder=2, edgecolors="none")
    return ax


def poincare_scene(ax, *, c: float = 1.0, center=(0.3, 0.2), radii=(0.5, 1.0, 2.0), n_rays: int = 12):
    """The explorer's picture: geodesics from ``center`` and hyperbolic circles of the given ``radii`` around it.

    ``center`` is given in units of the ball radius (``sqrt(c)·center`` must lie inside the unit disk).
    """
    disk_axes(ax, c)
    scale = 1 / math.sqrt(c)
    x = torch.tensor(center, dtype=torch.float64) * scale
    # geodesic rays: from x to points far along equally spaced directions
    theta = torch.linspace(0, 2 * math.pi, n_rays + 1, dtype=torch.float64)[:-1]
    far = max(radii) * 1.6
    lam = P.conformal_factor(x, c=c).item()
    for th in theta:
        u = torch.stack([th.cos(), th.sin()]) * (far / lam)
        end = P.expmap(x, u, c=c)
        seg = geodesic_curve(x, end, c=c, n=48).numpy()
        ax.plot(seg[:, 0], seg[:, 1], color="tab:blue", lw=0.8, alpha=0.7)
    for r in radii:
        circle = hyperbolic_circle(x, r, c=c).numpy()
        ax.plot(circle[:, 0], circle[:, 1], color="tab:red", lw=1.0)
    ax.scatter([x[0].item()], [x[1].item()], color="black", s=18, zorder=3)
    ax.set_title(f"c = {c:g}  (ball radius {scale:.2f})")
    return ax


def cone_outline(
    x: torch.Tensor,
    *,
    c: float = 1.0,
    K: float = 0.1,
    geometry: str = "poincare",
    n: int = 64,
    reach: float = 1.0,
) -> torch.Tensor:
    r"""A closed polygon ``(M, 2)`` around the 2-D cone of the apex ``x`` (shape ``(2,)``).

    The two boundary geodesics leave ``x`` at angles ``±ψ(x)`` from the axis; in the Poincaré ball
    (curvature ``-c``) they are followed until they are within ``1e-3`` (relative) of the boundary,
    then the polygon closes along the boundary circle.  Euclidean cones are cut at the circle of
    radius ``reach``.  Float64 throughout.  The half-apertures are
    :func:`hyro_edu.geometry.cones.half_aperture` and ``euclidean_half_aperture``.
    """
    _checks.choice(geometry, "geometry", C.GEOMETRIES)
    K = C.aperture_constant(K)
    _checks.tensor(x, "x")
    if x.shape != (2,):
        raise ValueError(f"x must be one point of the plane, shape (2,), got {tuple(x.shape)}")
    x = x.detach().double()
    phi = math.atan2(x[1].item(), x[0].item())
    if geometry == "poincare":
        c = float(_checks.curvature(c))
        psi = C.half_aperture(x, c=c, K=K).item()
        edge = (1 - 1e-3) / math.sqrt(c)
        lam = P.conformal_factor(x, c=c).item()
        lengths = torch.cat([torch.zeros(1), torch.logspace(-3, 1.5, n)]).double() / math.sqrt(c)
    else:
        psi = C.euclidean_half_aperture(x, K=K).item()
        edge = float(reach)
        if not edge > x.norm().item():
            raise ValueError(f"reach must exceed ||x|| = {x.norm().item():.4g}, got {reach!r}")
        lam, lengths = 1.0, torch.linspace(0, 2 * edge, n).double()
    sides = []
    for sign in (-1.0, 1.0):
        u = torch.tensor([math.cos(phi + sign * psi), math.sin(phi + sign * psi)]).double()
        if geometry == "poincare":
            ray = P.expmap(x.expand(len(lengths), 2), lengths[:, None] / lam * u, c=c)
        else:
            ray = x + lengths[:, None] * u
        ray = ray[ray.norm(dim=-1) <= edge]
        sides.append(ray)
    ends = [math.atan2(s[-1, 1].item(), s[-1, 0].item()) for s in sides]
    rel = [math.remainder(a - phi, 2 * math.pi) for a in ends]
    arc = phi + torch.linspace(rel[0], rel[1], n).double()
    arc = edge * torch.stack([arc.cos(), arc.sin()], dim=-1)
    return torch.cat([sides[0], arc, sides[1].flip(0)])
