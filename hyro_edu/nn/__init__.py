"""Layers built on the geometry: HyRo's hyperbolic adapter (Möbius scaling, Cayley rotation) and H-CLIP's hyperspherical (orthogonal) adapters."""
from hyro_edu.core.lazy import lazy_submodules

__all__ = ["hyperbolic_adapter", "hyperspherical"]
__getattr__, __dir__ = lazy_submodules(__name__, __all__)
