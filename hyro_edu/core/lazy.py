"""PEP 562 lazy submodules for the subpackages' ``__init__``.

``hyro_edu.geometry.poincare`` then works right after ``import hyro_edu``, and ``dir()`` lists
the modules for tab completion, while nothing is imported before it is touched.
"""
from __future__ import annotations

import importlib
from typing import Callable, Iterable


def lazy_submodules(package: str, modules: Iterable[str]) -> tuple[Callable, Callable]:
    """Return ``(__getattr__, __dir__)`` for ``package`` that import ``modules`` on first access.

    Use in a subpackage's ``__init__``::

        __getattr__, __dir__ = lazy_submodules(__name__, ("poincare", "lorentz"))
    """
    names = tuple(modules)

    def __getattr__(name: str):
        if name not in names:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return importlib.import_module(f"{package}.{name}")

    def __dir__():
        return sorted(set(names) | {"__doc__", "__name__", "__path__"})

    return __getattr__, __dir__
