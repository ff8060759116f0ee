"""hyro-edu: hyperbolic and hyperspherical vision-language alignment, from the geometry up.

Curvature convention, everywhere in this package: ``c > 0`` means curvature ``-c``.

The geometry modules are imported here; the heavier ones (the CLIP interface, the toy world,
training, the segmentation data and decoder) are imported by name, e.g.
``from hyro_edu import catseg``.
"""
from . import (
    cayley,
    cones,
    curvature,
    hyperbolic_adapter,
    hyperspherical,
    intermediate_curvature,
    lorentz,
    numerics,
    poincare,
    tproduct,
    wrapped_normal,
)

__version__ = "0.1.0"

__all__ = [
    "cayley",
    "cones",
    "curvature",
    "hyperbolic_adapter",
    "hyperspherical",
    "intermediate_curvature",
    "lorentz",
    "numerics",
    "poincare",
    "tproduct",
    "wrapped_normal",
    "__version__",
]
