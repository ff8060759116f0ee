"""PEP 562 lazy submodules and names for the subpackages' ``__init__``.

``hyro_edu.geometry.poincare`` then works right after ``import hyro_edu``, and ``dir()`` lists
the modules for tab completion, while nothing is imported before it is touched
(:func:`hyro_edu.core.lazy.lazy_submodules`).  :func:`hyro_edu.core.lazy.lazy_names` does the
same for names defined in the submodules (``from hyro_edu.hvsa.train import train``), so that
``python -m package --help`` imports nothing heavy.
"""
from __future__ import annotations

import importlib
import sys
from typing import Callable, Iterable, Mapping, Optional


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


def lazy_names(package: str, homes: Mapping[str, Iterable[str]], *, submodules: Iterable[str] = (),
               public: Optional[Iterable[str]] = None) -> tuple[Callable, Callable]:
    """Return ``(__getattr__, __dir__)`` for ``package`` that import each name from its submodule on first use.

    ``homes`` maps a submodule (relative name, e.g. ``"run"``) to the names it defines that the
    package offers; the first access to a name imports that submodule and binds the value in the
    package, so later accesses are plain attribute look-ups.  ``submodules`` can be reached as
    attributes too.  ``dir()`` lists ``public`` (default: every name of ``homes``) and
    ``submodules``.  Use in a package's ``__init__``::

        _HOMES = {"run": ("train", "load_result"), "__main__": ("main",)}
        __all__ = [name for names in _HOMES.values() for name in names]
        __getattr__, __dir__ = lazy_names(__name__, _HOMES, submodules=("run",), public=__all__)
    """
    where = {name: module for module, names in homes.items() for name in names}
    modules = tuple(submodules)
    listed = set(where if public is None else public) | set(modules) | {"__doc__", "__name__", "__path__"}

    def __getattr__(name: str):
        if name in where:
            value = getattr(importlib.import_module(f"{package}.{where[name]}"), name)
            setattr(sys.modules[package], name, value)
            return value
        if name in modules:
            return importlib.import_module(f"{package}.{name}")
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__():
        return sorted(listed)

    return __getattr__, __dir__
