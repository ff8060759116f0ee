"""Input validation shared by the whole package (geometry, layers, configs).

Every check raises ``ValueError`` with a message that names the argument, the
allowed range, and what was received.
"""
from __future__ import annotations

import math
from numbers import Integral, Real
from typing import Sequence, Union

import torch

Curvature = Union[float, torch.Tensor]


def positive(x: Curvature, name: str, *, note: str = "") -> Curvature:
    """Return ``x`` (a float, or the tensor) if it is finite and ``> 0``, everywhere if a tensor.

    ``note`` is appended to the range in the message, e.g. ``" (the curvature is -c)"``.
    """
    if isinstance(x, torch.Tensor):
        if not x.is_floating_point():
            raise ValueError(f"{name} must be a floating-point tensor or a number > 0, got dtype {x.dtype}")
        bad = ~torch.isfinite(x) | (x <= 0)
        if bool(bad.any()):
            raise ValueError(f"{name} must be finite and > 0{note}; got values {x[bad].flatten()[:5].tolist()}")
        return x
    if isinstance(x, bool) or not isinstance(x, Real):
        raise ValueError(f"{name} must be a number > 0 or a tensor of them, got {type(x).__name__}")
    if not (math.isfinite(float(x)) and float(x) > 0):
        raise ValueError(f"{name} must be finite and > 0{note}; got {x}")
    return float(x)


def curvature(c: Curvature, name: str = "c") -> Curvature:
    """Return ``c`` if it is a valid curvature parameter (finite, ``c > 0``; curvature is ``-c``)."""
    return positive(c, name, note=f" (the curvature is -{name})")


def curvature_shape(c: Curvature, dim: int, *named: tuple[str, torch.Tensor], name: str = "c") -> None:
    """A tensor ``c`` must broadcast against the norms of the points, ``x.shape`` with size 1 along ``dim``.

    ``c`` of shape ``(5,)`` against points ``(5, n)`` would broadcast to a ``(5, 5)``
    grid of curvatures (every point with every ``c``) without an error: ``c`` needs
    size 1 on the vector axis, i.e. shape ``(5, 1)``.  Extra leading dimensions are
    allowed (a sweep over curvatures).  ``dim`` is a negative index (see :func:`dim_index`).
    """
    if not isinstance(c, torch.Tensor) or c.dim() == 0:
        return
    for point_name, t in named:
        norm_shape = list(t.shape)
        norm_shape[dim] = 1
        axis_size = c.shape[dim] if c.dim() >= -dim else 1
        try:
            torch.broadcast_shapes(c.shape, tuple(norm_shape))
        except RuntimeError:
            axis_size = None
        if axis_size != 1:
            raise ValueError(
                f"{name} must be a number or a tensor that broadcasts against the norms of {point_name}, "
                f"shape {tuple(norm_shape)} (size 1 along the vector axis dim={dim}); got {name} of shape "
                f"{tuple(c.shape)} for {point_name} of shape {tuple(t.shape)}"
                + (f". Did you mean {name}.unsqueeze({dim})?" if c.dim() >= -dim and c.shape[dim] != 1 else "")
            )


def curvature_and_spaces(c: Curvature, dim: int, *named: tuple[str, torch.Tensor]) -> tuple[Curvature, int]:
    """Validate the curvature ``c``, the named point/vector tensors and ``dim`` together.

    Returns ``(c, dim)`` with ``dim`` normalised to a negative index: :func:`curvature`,
    then :func:`same_spaces`, then :func:`curvature_shape`.
    """
    c = curvature(c)
    d = same_spaces(dim, *named)
    curvature_shape(c, d, *named)
    return c, d


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


def same_spaces(dim: int, *named: tuple[str, torch.Tensor]) -> int:
    """Check ``(name, tensor)`` pairs: floating tensors, ``dim`` valid for the first, all the same size
    along ``dim`` and broadcastable.  Returns ``dim`` normalised to a negative index."""
    first_name, first = named[0]
    tensor(first, first_name)
    d = dim_index(first, dim, first_name)
    for name, t in named[1:]:
        tensor(t, name)
        same_space(first, t, d, (first_name, name))
    return d


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


def integer(value, name: str, low: int = 1, high: int | None = None) -> int:
    """``value`` as an ``int`` if it is an integer (not a bool) in ``[low, high]``, else ``ValueError``.

    NumPy integers count as integers. The message names ``name`` and the allowed range.
    """
    ok = isinstance(value, Integral) and not isinstance(value, bool)
    if not ok or value < low or (high is not None and value > high):
        allowed = f"an integer >= {low}" if high is None else f"an integer in [{low}, {high}]"
        raise ValueError(f"{name} must be {allowed}, got {value!r}")
    return int(value)


def integers(values, name: str, length: int, low: int = 1) -> tuple[int, ...]:
    """A sequence of ``length`` integers ``>= low`` as a tuple; entries are named ``name[i]``."""
    if not isinstance(values, Sequence) or isinstance(values, str) or len(values) != length:
        raise ValueError(f"{name} must be a sequence of {length} integers >= {low}, got {values!r}")
    return tuple(integer(v, f"{name}[{i}]", low) for i, v in enumerate(values))


def choice(value, name: str, allowed: Sequence) -> object:
    """``value`` if it is one of ``allowed``, else ``ValueError`` listing the allowed values."""
    if value not in tuple(allowed):
        raise ValueError(f"{name} must be one of {tuple(allowed)}, got {value!r}")
    return value
