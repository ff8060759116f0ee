"""Sphinx extension: write an output-free ``.ipynb`` twin next to every MyST notebook before the build.

sphinx-book-theme points its Colab button at ``<page>.ipynb`` only when that
file exists beside the ``.md`` at build time; otherwise Colab is handed the
Markdown source and fails.  The twins are generated (never committed: see
``.gitignore``) and excluded from Sphinx's own sources in ``_config.yml``.
Publishing them (the ``notebooks`` branch, see ``.github/workflows/publish.yml``)
is what makes the Colab and Binder buttons open a runnable notebook.

Every MyST notebook opens with the same hidden setup cell, which installs
``HYRO_EDU_SOURCE`` where ``hyro_edu`` is missing.  In the sources that line is
``HYRO_EDU_SOURCE = None`` (a clone installs itself with ``pip install -e .``); in
the twins it becomes ``"hyro-edu @ git+<repository url>@<commit>"``, so a notebook
opened on Colab installs the package at the commit the notebook was built from.
The repository URL is ``_config.yml``'s ``repository.url`` (the one place it is
kept); the commit is ``$HYRO_EDU_BUILD_COMMIT`` (the publish workflow sets it to
the pushed commit), else ``git rev-parse HEAD`` of the source tree, else ``main``
with a warning.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

NOTEBOOK_DIRS = ("book", "notebooks")
COMMIT_VARIABLE = "HYRO_EDU_BUILD_COMMIT"
#: The line of the setup cell that the twins rewrite (the whole line, trailing comment included).
SOURCE_LINE = re.compile(r"^HYRO_EDU_SOURCE = None\b.*$", flags=re.M)
_REF = re.compile(r"^[0-9A-Za-z][0-9A-Za-z._/-]*$")  # a commit or a branch name: nothing to escape


def repository_url(srcdir: Path) -> str:
    """``repository.url`` from ``srcdir/_config.yml``, without a trailing ``/`` or ``.git``."""
    import yaml

    config = yaml.safe_load((Path(srcdir) / "_config.yml").read_text(encoding="utf-8"))
    url = ((config or {}).get("repository") or {}).get("url")
    if not url:
        raise ValueError(f"{srcdir}/_config.yml has no repository.url: the notebooks' setup cell needs it")
    return _clean_url(url)


def _clean_url(url: str) -> str:
    url = url.strip().rstrip("/")
    return url[: -len(".git")] if url.endswith(".git") else url


def build_commit(srcdir: Path, warn=None) -> str:
    """The commit the twins pin: ``$HYRO_EDU_BUILD_COMMIT``, else ``git rev-parse HEAD``, else ``main``."""
    commit = os.environ.get(COMMIT_VARIABLE, "").strip()
    if not commit:
        try:
            found = subprocess.run(
                ["git", "rev-parse", "HEAD"], cwd=srcdir, capture_output=True, text=True, timeout=30
            )
            commit = found.stdout.strip() if found.returncode == 0 else ""
        except (OSError, subprocess.SubprocessError):
            commit = ""
    if not commit:
        if warn is not None:
            warn(
                f"notebook twins: no commit to pin (set {COMMIT_VARIABLE} or build from a git clone); "
                "their setup cell installs hyro-edu from the default branch 'main'"
            )
        commit = "main"
    if not _REF.match(commit):
        raise ValueError(f"{COMMIT_VARIABLE} must be a commit or a branch name; got {commit!r}")
    return commit


def pinned_source(url: str, commit: str) -> str:
    """The pip requirement the twins install: ``hyro-edu @ git+<url>@<commit>``."""
    return f"hyro-edu @ git+{_clean_url(url)}@{commit}"


def pin_setup_cell(nb, requirement: str, *, name: str = "notebook") -> None:
    """Replace ``HYRO_EDU_SOURCE = None`` in ``nb``'s first code cell by ``requirement`` (in place)."""
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    if not code or len(SOURCE_LINE.findall(code[0].source)) != 1:
        raise ValueError(
            f"{name}: the first code cell must be the setup cell with one line 'HYRO_EDU_SOURCE = None' "
            "(copy it from any chapter)"
        )
    line = f"HYRO_EDU_SOURCE = {json.dumps(requirement)}  # the commit this notebook was built from"
    code[0].source = SOURCE_LINE.sub(lambda _: line, code[0].source)


def write_twins(srcdir: Path, *, url: str | None = None, commit: str | None = None, warn=None) -> list[Path]:
    """Write ``<notebook>.ipynb`` beside every MyST notebook under ``srcdir``, its setup cell pinned to
    ``url`` (default: ``_config.yml``'s ``repository.url``) at ``commit`` (default: :func:`build_commit`)."""
    import jupytext

    from hyro_edu.book.notebook import is_myst_notebook

    srcdir = Path(srcdir)
    requirement = None
    written = []
    for folder in NOTEBOOK_DIRS:
        for md in sorted((srcdir / folder).glob("**/*.md")):
            if "_build" in md.parts or not is_myst_notebook(md):
                continue
            if requirement is None:  # only when there is a notebook to write
                requirement = pinned_source(url or repository_url(srcdir), commit or build_commit(srcdir, warn))
            nb = jupytext.read(md)
            pin_setup_cell(nb, requirement, name=str(md.relative_to(srcdir)))
            twin = md.with_suffix(".ipynb")
            text = jupytext.writes(nb, fmt="ipynb")
            if not twin.exists() or twin.read_text(encoding="utf-8") != text:
                twin.write_text(text, encoding="utf-8")
            written.append(twin)
    return written


def _on_config_inited(app, config):
    from sphinx.util import logging

    logger = logging.getLogger(__name__)
    url = (config.html_theme_options or {}).get("repository_url") or None  # jupyter-book's repository.url
    write_twins(Path(app.srcdir), url=url, warn=logger.warning)


def setup(app):
    app.connect("config-inited", _on_config_inited)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
