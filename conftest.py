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

A chapter whose every cell ran and passed is stored, with the outputs its cells
produced, in the book's execution cache (``_build/.jupyter_cache``, jupyter-cache,
keyed by the code cells as myst-nb reads them), when myst-nb is installed (the
``book`` extra, which the ``test`` extra includes).  ``jupyter-book build .`` then
takes those outputs instead of executing the chapter a second time: in CI the book
build after the tests executes nothing.  ``HYRO_EDU_NBVAL_CACHE=0`` turns this off.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import pytest

NOTEBOOK_DIRS = ("book", "notebooks")
EXECUTION_CACHE = Path("_build") / ".jupyter_cache"  # where `jupyter-book build .` looks (relative to the root)


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
            self.cell_items = []
            self.cells_failed = False
            for number, cell in enumerate(code_cells):
                options = defaultdict(bool, find_metadata_tags(cell.metadata))
                options.update(dict(find_comment_markers(cell.source)))
                # No outputs are stored in the sources, so there is nothing to compare.
                options["check"] = False
                item = IPyNbCell.from_parent(self, name=f"Cell {number}", cell_num=number, cell=cell, options=options)
                self.cell_items.append(item)
                yield item

        def setup(self):
            self.started = time.perf_counter()
            super().setup()

        def teardown(self):
            try:
                if not self.cells_failed and all(item.test_outputs is not None for item in self.cell_items):
                    _store_executed(self.path, self.config.rootpath, [item.test_outputs for item in self.cell_items],
                                    seconds=time.perf_counter() - self.started)
            finally:
                super().teardown()

    _CLASS = MystNotebook
    return _CLASS


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    parent = getattr(item, "parent", None)
    if report.failed and hasattr(parent, "cells_failed"):
        parent.cells_failed = True  # a chapter with a failed cell is never cached


def _store_executed(md_path: Path, root: Path, outputs: list, *, seconds: float) -> None:
    """Put a chapter that nbval ran completely into the book's execution cache (see the module docstring)."""
    if os.environ.get("HYRO_EDU_NBVAL_CACHE", "1").strip() == "0":
        return
    try:
        import nbformat
        from jupyter_cache import get_cache
        from jupyter_cache.base import CacheBundleIn
        from myst_nb.core.read import read_myst_markdown_notebook
    except ImportError:  # the test extra without the book extra: nothing to fill
        return
    nb = read_myst_markdown_notebook(md_path.read_text(encoding="utf-8"), add_source_map=True, path=md_path)
    code_cells = [cell for cell in nb.cells if cell.cell_type == "code"]
    if len(code_cells) != len(outputs):  # myst-nb and jupytext disagree on the cells: let the build execute
        return
    for count, (cell, outs) in enumerate(zip(code_cells, outputs), start=1):
        cell.execution_count = count
        cell.outputs = [nbformat.from_dict(dict(out)) for out in outs]
        for out in cell.outputs:
            if out.get("output_type") == "execute_result":
                out["execution_count"] = count
    cache = get_cache(str(root / EXECUTION_CACHE))
    cache.cache_notebook_bundle(
        CacheBundleIn(nb, str(md_path), data={"execution_seconds": seconds}), check_validity=True, overwrite=True
    )
