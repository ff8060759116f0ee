"""Helpers for the book's chapters: glue, plots and widgets. Nothing else in the package imports this subpackage."""
from hyro_edu.core.lazy import lazy_submodules

__all__ = ["notebook", "plotting", "widgets"]
__getattr__, __dir__ = lazy_submodules(__name__, __all__)
