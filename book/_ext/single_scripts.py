"""Sphinx extension: every ``<script>`` of a page appears once.

sphinx-thebe 0.3.1 (pulled in by Jupyter Book 1.x) registers its inline
configuration script, ``const THEBE_JS_URL = ...``, on every
``env-before-read-docs``; a build that reads its sources in more than one pass
therefore writes the same ``<script>`` twice into each page's head, and the
browser throws ``Identifier 'THEBE_JS_URL' has already been declared`` on every
page (found by ``.ci/check_site.py``).  This extension drops repeated scripts
(same file, same inline body, same attributes) from each page's context just
before the page is written, keeping the first.
"""
from __future__ import annotations


def _script_key(script) -> tuple:
    """What makes two scripts the same: file name (or None), inline body and attributes."""
    # Sphinx 7.4's _JavaScript: .filename (None or "" for an inline script, depending on who
    # added it: the two copies of thebe's script differ only there) and .attributes (body
    # included); older Sphinx passes plain strings, which are their own key.
    filename = getattr(script, "filename", script) or ""
    attributes = getattr(script, "attributes", {}) or {}
    return (str(filename), tuple(sorted((str(k), str(v)) for k, v in attributes.items())))


def drop_repeated_scripts(app, pagename, templatename, context, doctree) -> None:
    """``html-page-context`` handler: keep the first of each repeated script."""
    scripts = context.get("script_files")
    if not scripts:
        return
    seen: set[tuple] = set()
    kept = []
    for script in scripts:
        key = _script_key(script)
        if key not in seen:
            seen.add(key)
            kept.append(script)
    # In place: the list is the builder's own for this page (reset for the next one), so a
    # handler that adds a script after this one still adds it to what the page renders.
    scripts[:] = kept


def setup(app):
    # After the other handlers, so scripts they add for this page are seen too.
    app.connect("html-page-context", drop_repeated_scripts, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
