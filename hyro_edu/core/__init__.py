"""The ground floor: argument validation, numerics (fp32 policy, clamps from ``torch.finfo``), the
curvature convention and its converters, paths and atomic saves, process-group helpers for
multi-process runs (``distributed``). No ``torch.nn``, no Lightning."""
from hyro_edu.core.lazy import lazy_submodules

__all__ = ["checks", "numerics", "curvature", "paths", "lazy", "distributed"]
__getattr__, __dir__ = lazy_submodules(__name__, __all__)
