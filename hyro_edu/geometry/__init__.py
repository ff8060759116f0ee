"""Pure geometry (book parts I-II): functions of tensors with keyword-only curvature ``c > 0`` (curvature ``-c``) and ``dim=-1``; no parameters, no training."""
from hyro_edu.core.lazy import lazy_submodules

__all__ = ["poincare", "lorentz", "cayley", "tproduct", "cones", "wrapped_normal", "intermediate_curvature"]
__getattr__, __dir__ = lazy_submodules(__name__, __all__)
