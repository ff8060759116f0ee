"""Sphinx extension: write an output-free ``.ipynb`` twin next to every MyST notebook before the build.

sphinx-book-theme points its Colab button at ``<page>.ipynb`` only when that
file exists beside the ``.md`` at build time; otherwise Colab is handed the
Markdown source and fails.  The twins are generated (never committed: see
``.gitignore``) and excluded from Sphinx's own sources in ``_config.yml``.
Publishing them (the ``notebooks`` branch, see ``.github/workflows/publish.yml``)
is what makes the Colab, Binder and JupyterHub buttons open a runnable notebook.
"""
from __future__ import annotations

from pathlib import Path

NOTEBOOK_DIRS = ("book", "notebooks")


def write_twins(srcdir: Path) -> list[Path]:
    import jupytext

    from hyro_edu.book.notebook import is_myst_notebook

    written = []
    for folder in NOTEBOOK_DIRS:
        for md in sorted((srcdir / folder).glob("**/*.md")):
            if "_build" in md.parts or not is_myst_notebook(md):
                continue
            twin = md.with_suffix(".ipynb")
            text = jupytext.writes(jupytext.read(md), fmt="ipynb")
            if not twin.exists() or twin.read_text(encoding="utf-8") != text:
                twin.write_text(text, encoding="utf-8")
            written.append(twin)
    return written


def _on_config_inited(app, config):
    write_twins(Path(app.srcdir))


def setup(app):
    app.connect("config-inited", _on_config_inited)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
