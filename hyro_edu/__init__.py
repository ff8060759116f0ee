"""hyro-edu: hyperbolic and hyperspherical vision-language alignment, from the geometry up.

Curvature convention, everywhere in this package: ``c > 0`` means curvature ``-c``.
"""
from . import cayley, curvature, lorentz, numerics, poincare

__version__ = "0.1.0"

__all__ = ["cayley", "curvature", "lorentz", "numerics", "poincare", "__version__"]
