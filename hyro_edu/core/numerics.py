r"""Floating-point safety for hyperbolic maths, derived from ``torch.finfo``.

Every clamp in :mod:`hyro_edu` comes from one of the four quantities below, so
that float32 and float64 each get a margin that fits their precision (geoopt
instead hard-codes ``4e-3`` for float32 and ``1e-5`` for everything else, which
puts float16 points exactly on the boundary).

* :func:`ball_margin` -- projection keeps ``sqrt(c)·‖x‖ <= 1 - ball_margin``.
  It is ``sqrt(finfo.eps)``: at ``sqrt(c)‖x‖ = 1 - δ`` the factor
  ``1 - c‖x‖² ≈ 2δ`` is computed with a relative error of about ``eps / (2δ)``,
  so ``δ = sqrt(eps)`` bounds that error (and the error of the conformal
  factor and of distances) by ``sqrt(eps) / 2``: 1.7e-4 in float32, 7.5e-9 in
  float64.  The price is a largest distance from the origin of
  ``(2/sqrt(c))·artanh(1 - δ)``: 8.66 (float32) and 18.7 (float64) at c = 1.
* :func:`norm_floor` -- ``sqrt(finfo.tiny)``, the floor for norms we divide
  by.  Ratios such as ``tanh(z)/z`` are then evaluated exactly (no series),
  they never see ``0/0``, and products with another small factor stay normal
  numbers instead of subnormals (which some GPUs flush to zero).
* :func:`artanh_limit` -- ``1 - finfo.eps``: ``artanh`` and its derivative
  ``1/(1-z²)`` are finite there (``artanh(1 - eps) = 8.3`` in float32).
* :func:`fp32_math` -- a decorator: half-precision inputs are promoted to
  float32 and autocast is switched off inside, so hyperbolic ops never run in
  float16/bfloat16, where ``1 - 1e-5 == 1``.

The small kernels every geometry module needs are here once: :func:`sqrt` (of a
curvature that is a number or a tensor), :func:`norm_keepdim`, :func:`floored`
(a norm floored at :func:`norm_floor` before dividing by it) and :func:`artanh`
(clamped at :func:`artanh_limit`).
"""
from __future__ import annotations

import functools
import math
from typing import Callable, TypeVar, Union

import torch

__all__ = [
    "ball_margin",
    "norm_floor",
    "artanh_limit",
    "max_ball_norm",
    "max_radius",
    "fp32_math",
    "compute_dtype",
    "sqrt",
    "norm_keepdim",
    "floored",
    "artanh",
]

_HALF = (torch.float16, torch.bfloat16)
_AUTOCAST_DEVICES = ("cpu", "cuda", "xpu", "mps")

F = TypeVar("F", bound=Callable)
Scalar = Union[float, torch.Tensor]


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype hyperbolic maths runs in for inputs of ``dtype``.

    float16 and bfloat16 are promoted to float32; float32 and float64 are kept.
    """
    if dtype in _HALF:
        return torch.float32
    if not dtype.is_floating_point:
        return torch.get_default_dtype()
    return dtype


def ball_margin(dtype: torch.dtype) -> float:
    r"""Relative gap kept free at the ball boundary: ``sqrt(finfo(dtype).eps)``.

    Projection clips ``sqrt(c)·‖x‖`` to ``1 - ball_margin(dtype)``.
    """
    return math.sqrt(torch.finfo(compute_dtype(dtype)).eps)


def norm_floor(dtype: torch.dtype) -> float:
    """Smallest norm we divide by: ``sqrt(finfo(dtype).tiny)`` (1.1e-19 in float32)."""
    return math.sqrt(torch.finfo(compute_dtype(dtype)).tiny)


def artanh_limit(dtype: torch.dtype) -> float:
    """Largest ``|z|`` fed to ``artanh``: ``1 - finfo(dtype).eps``."""
    return 1.0 - torch.finfo(compute_dtype(dtype)).eps


def max_ball_norm(c: Scalar, dtype: torch.dtype = torch.float32) -> Scalar:
    """Largest Euclidean norm a projected point keeps: ``(1 - ball_margin) / sqrt(c)``.

    Curvature convention: ``c > 0`` means curvature ``-c``.  A number ``c`` gives a float, a
    tensor ``c`` a tensor of its shape.
    """
    return (1.0 - ball_margin(dtype)) / sqrt(c)


def max_radius(c: float, dtype: torch.dtype = torch.float32) -> float:
    """Largest hyperbolic distance from the origin a projected point can have.

    ``(2/sqrt(c))·artanh(1 - ball_margin(dtype))``; curvature is ``-c``, ``c > 0``.
    """
    return 2.0 / math.sqrt(c) * math.atanh(1.0 - ball_margin(dtype))


def sqrt(x: Scalar) -> Scalar:
    """``sqrt(x)`` of a number (``math.sqrt``, a float) or of a tensor (``x.sqrt()``, a tensor).

    Curvatures ``c`` and radii are numbers or tensors throughout the package; this keeps a
    number a Python float, so that it broadcasts against tensors of any dtype.
    """
    return x.sqrt() if isinstance(x, torch.Tensor) else math.sqrt(x)


def norm_keepdim(x: torch.Tensor, dim: int) -> torch.Tensor:
    """Euclidean norm along ``dim``, the axis kept with size 1: ``(..., n, ...) -> (..., 1, ...)``.

    ``torch.linalg.vector_norm``: one fused pass, and a zero gradient at ``x = 0``.
    """
    return torch.linalg.vector_norm(x, dim=dim, keepdim=True)


def floored(z: torch.Tensor) -> torch.Tensor:
    """A non-negative norm ``z`` floored at :func:`norm_floor` before something divides by it.

    ``sqrt(finfo.tiny)`` keeps ``tanh(z)/z``, ``K/‖x‖``, ``x/‖x‖`` and friends away from ``0/0``
    and away from subnormals; the clamp also zeroes the gradient where it acts, so the undefined
    derivative of ``‖x‖`` at ``x = 0`` never enters the chain rule.
    """
    return z.clamp_min(norm_floor(z.dtype))


def artanh(z: torch.Tensor) -> torch.Tensor:
    """``artanh(z)`` with ``|z|`` clamped to :func:`artanh_limit` ``= 1 - finfo.eps``.

    The clamp keeps ``artanh`` (8.3 in float32) and its derivative ``1/(1 - z²)`` finite for
    points that rounding put on, or just past, the boundary of the ball.
    """
    lim = artanh_limit(z.dtype)
    return z.clamp(-lim, lim).atanh()


def _promote(value):
    if isinstance(value, torch.Tensor) and value.dtype in _HALF:
        return value.float()
    return value


def fp32_math(fn: F) -> F:
    """Run ``fn`` with half-precision tensor arguments promoted to float32 and autocast off.

    The result of a promoted call is float32: casting a point back to float16
    would round it onto the ball's boundary.
    """

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        args = tuple(_promote(a) for a in args)
        kwargs = {k: _promote(v) for k, v in kwargs.items()}
        active = [d for d in _AUTOCAST_DEVICES if _autocast_enabled(d)]
        if not active:
            return fn(*args, **kwargs)
        with _autocast_off(active):
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def _autocast_enabled(device: str) -> bool:
    try:
        return torch.is_autocast_enabled(device)
    except (RuntimeError, TypeError):  # device type unknown to this torch build
        return False


class _autocast_off:
    def __init__(self, devices):
        self._contexts = [torch.autocast(device_type=d, enabled=False) for d in devices]

    def __enter__(self):
        for ctx in self._contexts:
            ctx.__enter__()

    def __exit__(self, *exc):
        for ctx in reversed(self._contexts):
            ctx.__exit__(*exc)
        return False
