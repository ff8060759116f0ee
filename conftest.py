"""Run every MyST Markdown notebook (book chapters, training notebooks) as a test with nbval.

nbval only collects ``.ipynb`` files, and this project commits none: each
chapter's single source is a jupytext MyST ``.md``.  This hook converts every
such ``.md`` under ``book/`` and ``notebooks/`` with jupytext into a temporary
folder and runs it with nbval's machinery.  Each code cell is one test item
(``book/<chapter>.md::Cell N``); all cells of a chapter share one kernel of the
current environment (``--nbval-current-env`` in ``pyproject.toml``), started
in the chapter's folder as Jupyter Book does.  The sources store no outputs, so
nbval checks that every cell runs; the chapters' hidden ``assert`` cells
check the maths.  ``pytest book/01_why_hyperbolic.md`` runs one chapter.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from collections import defaultdict
from pathlib import Path

import pytest

NOTEBOOK_DIRS = ("book", "notebooks")


def pytest_configure(config):
    config._myst_tmp = Path(tempfile.mkdtemp(prefix="hyro-edu-nbval-"))
    config.add_cleanup(lambda: shutil.rmtree(config._myst_tmp, ignore_errors=True))
    # Training notebooks "load a finished run if present, else train".  A test run must train, so
    # unless the caller chose a checkpoint folder, runs go to a fresh temporary one (the kernels
    # nbval starts inherit it).  The tiny-CLIP cache ($HYRO_EDU_CACHE) is kept: it is keyed by the
    # pretraining config and is what lets chapters start in seconds.
    if not os.environ.get("HYRO_EDU_CHECKPOINTS", "").strip():
        os.environ["HYRO_EDU_CHECKPOINTS"] = str(config._myst_tmp / "checkpoints")


def pytest_collect_file(file_path: Path, parent):
    if file_path.suffix != ".md":
        return None
    try:
        rel = file_path.relative_to(parent.config.rootpath)
    except ValueError:
        return None
    from hyro_edu.book.notebook import is_myst_notebook

    if rel.parts[0] not in NOTEBOOK_DIRS or "_build" in rel.parts or not is_myst_notebook(file_path):
        return None
    return _myst_notebook_class().from_parent(parent, path=file_path)


def pytest_ignore_collect(collection_path: Path, config):
    # .ipynb twins written next to the chapters by a book build are not sources.
    if collection_path.suffix == ".ipynb" or collection_path.name in ("_build", ".ipynb_checkpoints"):
        return True
    return None


_CLASS = None


def _myst_notebook_class():
    """Subclass nbval's notebook collector lazily (nbval is a test dependency only)."""
    global _CLASS
    if _CLASS is not None:
        return _CLASS
    import jupytext
    import nbformat
    from nbval.plugin import IPyNbCell, IPyNbFile, find_comment_markers, find_metadata_tags

    class MystNotebook(IPyNbFile):
        """A MyST chapter, converted by jupytext to ``.ipynb`` in a temporary folder, run cell by cell."""

        def collect(self):
            rel = self.path.relative_to(self.config.rootpath)
            converted = self.config._myst_tmp / rel.with_suffix(".ipynb")
            converted.parent.mkdir(parents=True, exist_ok=True)
            jupytext.write(jupytext.read(self.path), converted, fmt="ipynb")
            self.nb = nbformat.read(converted, as_version=4)
            code_cells = [cell for cell in self.nb.cells if cell.cell_type == "code"]
            for number, cell in enumerate(code_cells):
                options = defaultdict(bool, find_metadata_tags(cell.metadata))
                options.update(dict(find_comment_markers(cell.source)))
                # No outputs are stored in the sources, so there is nothing to compare.
                options["check"] = False
                yield IPyNbCell.from_parent(self, name=f"Cell {number}", cell_num=number, cell=cell, options=options)

    _CLASS = MystNotebook
    return _CLASS
