"""Small helpers for the book's notebooks: computed numbers in the prose, and recognising MyST notebooks."""
from __future__ import annotations

from pathlib import Path

__all__ = ["glue", "is_myst_notebook"]


def glue(name: str, value, *, display: bool = False) -> None:
    """Make ``value`` available to the prose as ``{glue:text}`name```.

    In a Jupyter Book build this is ``myst_nb.glue``; elsewhere (Colab, nbval)
    myst-nb may be missing and the call does nothing, so the same notebook runs
    everywhere.  Returns ``None``, so a ``glue`` call ending a cell prints nothing.
    """
    try:
        from myst_nb import glue as _myst_glue
    except ImportError:
        return None
    _myst_glue(name, value, display=display)
    return None


def is_myst_notebook(path) -> bool:
    """True for a jupytext MyST Markdown notebook: YAML front matter naming ``format_name: myst`` and a kernelspec."""
    path = Path(path)
    if path.suffix != ".md":
        return False
    head = path.read_text(encoding="utf-8")[:4000]
    if not head.startswith("---") or head.count("---") < 2:
        return False
    front = head.split("---", 2)[1]
    return "format_name: myst" in front and "kernelspec" in front
