r"""One curvature convention, and converters to the conventions of other libraries.

**hyro_edu:** ``c > 0`` and the curvature is ``-c``.  The Poincaré ball has
Euclidean radius ``1/sqrt(c)``; the hyperboloid is ``<x, x>_L = -1/c``.

=================================  =====================================  ======================
library                            its parameter                          from our ``c``
=================================  =====================================  ======================
geoopt ``Stereographic(k)``        sectional curvature ``k``               ``k = -c``
geoopt ``PoincareBall(c)``         same ``c`` as ours                      ``c``
geoopt ``Lorentz(k)``              ``<x, x>_L = -k``, curvature ``-1/k``   ``k = 1/c``
HypLL ``Curvature(value)``         ``c = softplus(value)``                 ``value = log(exp(c) - 1)``
hyptorch ``c``, MERU ``curv``      same ``c`` as ours                      ``c``
=================================  =====================================  ======================
"""
from __future__ import annotations

import math

from hyro_edu.core import checks as _checks

__all__ = [
    "ball_radius",
    "to_geoopt_k",
    "from_geoopt_k",
    "to_geoopt_lorentz_k",
    "from_geoopt_lorentz_k",
    "to_hypll_value",
    "from_hypll_value",
]


def ball_radius(c: float) -> float:
    """Euclidean radius ``1/sqrt(c)`` of the Poincaré ball of curvature ``-c`` (``c > 0``)."""
    return 1.0 / math.sqrt(_checks.curvature(c))


def to_geoopt_k(c: float) -> float:
    """geoopt's sectional curvature ``k = -c`` for ``Stereographic(k)`` and its math functions (``c > 0``)."""
    return -_checks.curvature(c)


def from_geoopt_k(k: float) -> float:
    """Our ``c = -k`` from geoopt's sectional curvature ``k``; only ``k < 0`` (hyperbolic) is accepted."""
    if isinstance(k, bool) or not isinstance(k, (int, float)) or not math.isfinite(k) or k >= 0:
        raise ValueError(f"k must be a finite number < 0 (geoopt's hyperbolic sectional curvature), got {k!r}")
    return -float(k)


def to_geoopt_lorentz_k(c: float) -> float:
    """geoopt's ``Lorentz(k)`` parameter ``k = 1/c``: its hyperboloid is ``<x, x>_L = -k`` (``c > 0``)."""
    return 1.0 / _checks.curvature(c)


def from_geoopt_lorentz_k(k: float) -> float:
    """Our ``c = 1/k`` from geoopt's ``Lorentz(k)``; ``k`` must be finite and ``> 0``."""
    return 1.0 / _checks.curvature(k, name="k")


def to_hypll_value(c: float) -> float:
    """HypLL's ``Curvature(value)`` with the softplus constraint: ``value = log(exp(c) - 1)`` (``c > 0``)."""
    c = _checks.curvature(c)
    # log(expm1(c)) written to stay finite for large c: c + log(1 - exp(-c)).
    return c + math.log(-math.expm1(-c))


def from_hypll_value(value: float) -> float:
    """Our ``c = softplus(value) = log(1 + exp(value))`` from HypLL's ``Curvature(value)``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"value must be a finite number, got {value!r}")
    return max(value, 0.0) + math.log1p(math.exp(-abs(value)))
