"""Input validation shared by the geometry modules.

Every check raises ``ValueError`` with a message that names the argument, the
allowed range, and what was received.
"""
from __future__ import annotations

import math
from numbers import Real
from typing import Union

import torch

Curvature = Union[float, torch.Tensor]


def curvature(c: Curvature, name: str = "c") -> Curvature:
    """Return ``c`` if it is a valid curvature parameter (finite, ``c > 0``; curvature is ``-c``)."""
    if isinstance(c, torch.Tensor):
        if not c.is_floating_point():
            raise ValueError(f"{name} must be a floating-point tensor or a number > 0, got dtype {c.dtype}")
        bad = ~torch.isfinite(c) | (c <= 0)
        if bool(bad.any()):
            raise ValueError(
                f"{name} must be finite and > 0 (the curvature is -{name}); got values "
                f"{c[bad].flatten()[:5].tolist()}"
            )
        return c
    if isinstance(c, bool) or not isinstance(c, Real):
        raise ValueError(f"{name} must be a number > 0 or a tensor of them, got {type(c).__name__}")
    if not (math.isfinite(float(c)) and float(c) > 0):
        raise ValueError(f"{name} must be finite and > 0 (the curvature is -{name}); got {c}")
    return float(c)


def tensor(x, name: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    if x.dim() == 0:
        raise ValueError(f"{name} must have at least one dimension (the vector axis), got a scalar")
    return x


def dim_index(x: torch.Tensor, dim: int, name: str) -> int:
    """Normalise ``dim`` for ``x`` to a negative index; raise if it is out of range.

    Negative indices stay valid when later operations broadcast ``x`` to more
    leading dimensions.
    """
    n = x.dim()
    if isinstance(dim, bool) or not isinstance(dim, int) or not -n <= dim < n:
        raise ValueError(f"dim must be an integer in [{-n}, {n - 1}] for {name} of shape {tuple(x.shape)}, got {dim}")
    return dim - n if dim >= 0 else dim


def same_space(x: torch.Tensor, y: torch.Tensor, dim: int, names: tuple[str, str]) -> None:
    """``x`` and ``y`` must have the same size along ``dim`` and broadcast elsewhere."""
    a, b = names
    if y.dim() < -dim or x.shape[dim] != y.shape[dim]:
        raise ValueError(
            f"{a} and {b} must have the same size along dim={dim}, got shapes {tuple(x.shape)} and {tuple(y.shape)}"
        )
    try:
        torch.broadcast_shapes(x.shape, y.shape)
    except RuntimeError:
        raise ValueError(
            f"{a} and {b} must broadcast against each other, got shapes {tuple(x.shape)} and {tuple(y.shape)}"
        ) from None


def inside_ball(x: torch.Tensor, c: Curvature, dim: int, name: str) -> None:
    """Points must satisfy ``sqrt(c)·‖x‖ < 1`` (strictly inside the ball of radius 1/sqrt(c))."""
    with torch.no_grad():
        inside_ball_scaled_norm(torch.linalg.vector_norm(x, dim=dim, keepdim=True) * (c**0.5), name)


def inside_ball_scaled_norm(scaled: torch.Tensor, name: str) -> None:
    """Like :func:`inside_ball`, from an already computed ``sqrt(c)·‖x‖`` (saves a pass over ``x``)."""
    with torch.no_grad():
        bad = ~(scaled < 1)  # also catches NaN
        if bool(bad.any()):
            worst = scaled[bad].max().item() if bool(torch.isfinite(scaled[bad]).any()) else float("nan")
            raise ValueError(
                f"{name} must lie inside the Poincare ball: sqrt(c)*||{name}|| < 1 (||{name}|| < 1/sqrt(c)); "
                f"got sqrt(c)*||{name}|| = {worst:.6g}. Pass project=True to clip points into the ball."
            )


def broadcast_scalar(r, x: torch.Tensor, name: str) -> torch.Tensor | float:
    """A scalar factor that must broadcast against ``x`` with its vector axis kept (size 1)."""
    if isinstance(r, torch.Tensor):
        try:
            torch.broadcast_shapes(r.shape, x.shape)
        except RuntimeError:
            raise ValueError(
                f"{name} must broadcast against the norm of x (shape {tuple(x.shape[:-1]) + (1,)} for dim=-1), "
                f"got shape {tuple(r.shape)}"
            ) from None
        return r
    if isinstance(r, bool) or not isinstance(r, Real) or not math.isfinite(float(r)):
        raise ValueError(f"{name} must be a finite number or a tensor, got {r!r}")
    return float(r)
