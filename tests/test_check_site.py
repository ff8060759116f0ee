"""Tests of ``.ci/check_site.py`` on tiny synthetic sites written into ``tmp_path``.

Each check is shown to fail on bad input and to pass on good input.  The checks that read the
HTML files run everywhere; the browser checks run only where Debian's chromium is installed.
"""
from __future__ import annotations

import base64
import importlib.util
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load_check_site():
    spec = importlib.util.spec_from_file_location("check_site", ROOT / ".ci" / "check_site.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["check_site"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


cs = _load_check_site()

PNG_1X1 = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg=="
)


def page(body: str, head: str = "") -> str:
    return f"<!DOCTYPE html><html><head><meta charset='utf-8'>{head}</head><body>{body}</body></html>"


def write(root: Path, files: dict[str, str | bytes]) -> Path:
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
    return root


def details(problems, kind):
    return [p.detail for p in problems if p.kind == kind]


# --------------------------------------------------------------------------- links and anchors


def test_good_links_and_anchors_pass(tmp_path):
    site = cs.Site(write(tmp_path, {
        "index.html": page('<a href="book/b.html#sec">b</a> <a href="book/">dir</a> <a href="#top">top</a>'
                           '<a href="https://example.org/">out</a> <a href="mailto:x@example.org">mail</a>'),
        "book/index.html": page('<a href="../index.html">up</a> <a name="old">old anchor</a>'),
        "book/b.html": page('<h1 id="sec">S</h1><a href="#sec">here</a> <a href="index.html#old">x</a>'
                            '<img src="../_images/plot.png">'),
        "_images/plot.png": PNG_1X1,
    }))
    assert [p for page_ in site.pages() for p in cs.check_links(site, page_)] == []


def test_a_broken_link_fails(tmp_path):
    site = cs.Site(write(tmp_path, {"index.html": page('<a href="book/missing.html">gone</a>')}))
    found = details(cs.check_links(site, "index.html"), "link")
    assert found == ["book/missing.html: book/missing.html does not exist"]


def test_a_broken_anchor_fails(tmp_path):
    site = cs.Site(write(tmp_path, {
        "index.html": page('<a href="b.html#nope">x</a> <a href="#also-nope">y</a> <a href="b.html#sec">z</a>'),
        "b.html": page('<h1 id="sec">S</h1>'),
    }))
    found = details(cs.check_links(site, "index.html"), "link")
    assert found == ["b.html#nope: no id 'nope' in b.html", "#also-nope: no id 'also-nope' in index.html"]


def test_a_missing_image_file_and_a_broken_redirect_fail(tmp_path):
    site = cs.Site(write(tmp_path, {
        "index.html": '<meta http-equiv="Refresh" content="0; url=book/intro.html" />',
        "b.html": page('<img src="_images/none.png">'),
    }))
    assert details(cs.check_links(site, "index.html"), "link") == ["book/intro.html: book/intro.html does not exist"]
    assert details(cs.check_links(site, "b.html"), "link") == ["_images/none.png: _images/none.png does not exist"]


def test_theme_fragments_in_static_are_not_pages(tmp_path):
    site = cs.Site(write(tmp_path, {"a.html": page(""), "_static/webpack-macros.html": "{% macro x() %}",
                                    "book/c.html": page("")}))
    assert site.pages() == ["a.html", "book/c.html"]
    assert site.pages("book/*.html") == ["book/c.html"]


# --------------------------------------------------------------------------- external scripts and styles


def test_an_external_script_or_stylesheet_fails(tmp_path):
    site = cs.Site(write(tmp_path, {"index.html": page("", head=(
        '<script src="https://cdn.example.org/x.js"></script>'
        '<link rel="stylesheet" href="//cdn.example.org/x.css">'
        '<script src="_static/local.js"></script><link rel="stylesheet" href="_static/local.css">'
        '<script src="http://127.0.0.1:8000/dev.js"></script>'))}))
    found = details(cs.check_external_resources(site, "index.html"), "external")
    assert found == ["<script>/<link> on another host: https://cdn.example.org/x.js",
                     "<script>/<link> on another host: //cdn.example.org/x.css"]


def test_local_scripts_pass(tmp_path):
    head = '<script src="_static/mathjax/tex-chtml.js"></script>'
    site = cs.Site(write(tmp_path, {"index.html": page("", head=head)}))
    assert cs.check_external_resources(site, "index.html") == []


# --------------------------------------------------------------------------- Python cross-references


def test_an_unresolved_xref_fails_and_a_resolved_one_passes(tmp_path):
    body = ('<p><a class="reference internal" href="api.html#m.f"><code class="xref py py-func docutils literal">'
            '<span class="pre">f()</span></code></a> and <code class="xref py py-mod docutils literal">'
            '<span class="pre">hyro_edu.missing</span></code> and <code class="docutils literal">plain</code></p>')
    site = cs.Site(write(tmp_path, {"index.html": page(body)}))
    assert details(cs.check_xrefs(site, "index.html"), "xref") == ["unresolved Python reference `hyro_edu.missing`"]


def test_resolved_xrefs_pass(tmp_path):
    body = '<a class="reference internal" href="#f"><code class="xref py py-class"><span>C</span></code></a>'
    site = cs.Site(write(tmp_path, {"index.html": page(body)}))
    assert cs.check_xrefs(site, "index.html") == []


# --------------------------------------------------------------------------- launch buttons


COLAB = "https://colab.research.google.com/github/org/repo/blob/notebooks/book/ch.ipynb"
BINDER = "https://mybinder.org/v2/gh/org/repo/notebooks?urlpath=lab/tree/book/ch.ipynb"
HUB = ("https://hub.example.org/hub/user-redirect/git-pull?repo=https%3A//github.com/org/repo"
       "&urlpath=lab/tree/repo/book/ch.ipynb&branch=notebooks")


def test_launch_urls_name_their_notebook():
    assert cs.launch_notebook_path(COLAB) == "book/ch.ipynb"
    assert cs.launch_notebook_path(BINDER) == "book/ch.ipynb"
    assert cs.launch_notebook_path(HUB) == "book/ch.ipynb"
    assert cs.launch_notebook_path("https://github.com/org/repo") is None
    assert cs.launch_notebook_path("https://example.org/?urlpath=lab/tree/x.ipynb") is None


def launch_site(tmp_path, *urls):
    links = "".join(f'<a href="{url.replace("&", "&amp;")}" title="Launch">L</a>' for url in urls)
    return cs.Site(write(tmp_path / "_build" / "html", {"book/ch.html": page(links)}))


def test_a_launch_button_without_its_twin_fails(tmp_path):
    site = launch_site(tmp_path, COLAB, BINDER, HUB)
    write(tmp_path, {"book/ch.md": "# ch\n"})
    found = details(cs.check_launch_links(site, "book/ch.html", tmp_path), "launch")
    assert len(found) == 3 and all("opens book/ch.ipynb: not in" in d for d in found)


def test_a_launch_button_to_the_markdown_source_fails(tmp_path):
    site = launch_site(tmp_path, COLAB.replace(".ipynb", ".md"))
    write(tmp_path, {"book/ch.md": "# ch\n"})
    found = details(cs.check_launch_links(site, "book/ch.html", tmp_path), "launch")
    assert found == ["colab.research.google.com opens book/ch.md, not a notebook: no .ipynb twin was written beside it"]


def test_a_launch_button_with_its_twin_passes(tmp_path):
    site = launch_site(tmp_path, COLAB, BINDER, HUB)
    write(tmp_path, {"book/ch.md": "# ch\n", "book/ch.ipynb": "{}"})
    assert cs.check_launch_links(site, "book/ch.html", tmp_path) == []


# --------------------------------------------------------------------------- glue


CHAPTER = """\
---
jupytext: {text_representation: {format_name: myst}}
---
# A chapter

```{code-cell} ipython3
glue("n", 3)  # {glue:text}`in_code` is code, not a paste
```

The ring holds {glue:text}`n` disks and {glue:text}`ratio:.2f` times more; ``{glue:text}`shown_as_code` ``.

```{note}
Inside a note: {glue:text}`n`.
```

```{glue:figure} fig
```
"""


def test_glue_uses_reads_the_prose_only():
    assert cs.glue_uses(CHAPTER) == [("glue:text", "n"), ("glue:text", "ratio"), ("glue:text", "n"),
                                     ("glue:figure", "fig")]


def glue_site(tmp_path, pasted: int, glued: list[str] | None):
    site = cs.Site(write(tmp_path / "_build" / "html",
                         {"book/ch.html": page('<span class="pasted-text">3</span>' * pasted)}))
    write(tmp_path, {"book/ch.md": CHAPTER})
    execute = tmp_path / "_build" / "jupyter_execute"
    execute.mkdir(parents=True)
    if glued is not None:
        write(execute, {"book/ch.glue.json": "{" + ", ".join(f'"{key}": {{}}' for key in glued) + "}"})
    return site, execute


def test_every_glue_value_present_passes(tmp_path):
    site, execute = glue_site(tmp_path, pasted=3, glued=["n", "ratio", "fig"])
    assert cs.check_glue(site, "book/ch.html", tmp_path, execute) == []


def test_a_missing_glue_key_fails(tmp_path):
    site, execute = glue_site(tmp_path, pasted=2, glued=["n", "fig"])
    assert details(cs.check_glue(site, "book/ch.html", tmp_path, execute), "glue") == [
        "{glue} key 'ratio' has no value, the page leaves it out (not in ch.glue.json)"]


def test_a_page_without_glue_data_fails(tmp_path):
    site, execute = glue_site(tmp_path, pasted=0, glued=None)
    found = details(cs.check_glue(site, "book/ch.html", tmp_path, execute), "glue")
    assert found == ["none of its 3 {glue} keys has a value, the page leaves them out: "
                     "no ch.glue.json (was it executed?)"]


def test_a_glue_text_that_renders_empty_fails(tmp_path):
    # the key exists but its value did not render (e.g. a format spec that does not fit the value)
    site, execute = glue_site(tmp_path, pasted=2, glued=["n", "ratio", "fig"])
    assert details(cs.check_glue(site, "book/ch.html", tmp_path, execute), "glue") == [
        "ch.md pastes 3 {glue:text} values, the page shows 2"]


# --------------------------------------------------------------------------- the script


def test_main_without_browser_reports_and_exits_1(tmp_path, capsys):
    write(tmp_path, {"index.html": page('<a href="nope.html">x</a>'), "ok.html": page("fine")})
    assert cs.main([str(tmp_path), "--no-browser", "--source-root", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "index.html: 1 link" in out and "ok.html" not in out.replace("check_site", "")
    assert "check_site: 2 pages checked in" in out and "1 problems (link 1)" in out


def test_main_on_a_good_site_exits_0(tmp_path, capsys):
    write(tmp_path, {"index.html": page('<a href="ok.html">x</a>'), "ok.html": page("fine")})
    assert cs.main([str(tmp_path), "--no-browser", "--pages", "*.html"]) == 0
    assert "0 problems (none)" in capsys.readouterr().out


# --------------------------------------------------------------------------- in chromium


def needs_chromium():
    if not cs.CHROMIUM.exists():
        pytest.skip(f"{cs.CHROMIUM} is missing (apt-get install -y chromium)")
    pytest.importorskip("playwright.async_api")


def test_chromium_catches_a_js_error_untypeset_math_and_a_missing_image(tmp_path):
    needs_chromium()
    site = cs.Site(write(tmp_path / "_build" / "html", {
        "bad.html": page('<p>Raw \\(x\\) math.</p><img src="missing.png" alt="gone">'
                         '<script>undefinedFunction();</script>'
                         '<script>fetch("http://198.51.100.7/data.json").catch(() => null)</script>'),
        "good.html": page('<p>Text, <code>\\(x\\) in code</code>.</p><img src="ok.png" alt="ok">'),
        "ok.png": PNG_1X1,
    }))
    problems, shots = cs.browser_problems(site, ["bad.html", "good.html"], tmp_path / "_build" / "screenshots")
    assert shots == []
    assert {p.page for p in problems} == {"bad.html"}
    assert any("undefinedFunction is not defined" in d for d in details(problems, "js"))
    assert details(problems, "math") == ["untypeset delimiters in the text: 'Raw \\\\(x\\\\) math.'"]
    assert details(problems, "image") == ["does not load: missing.png"]
    assert details(problems, "external") == ["the browser requested http://198.51.100.7/data.json"]


def offline_mathjax() -> Path | None:
    path = Path(sysconfig.get_paths()["purelib"]) / "sphinx-mathjax-offline" / "static" / "mathjax"
    return path if (path / "tex-chtml.js").is_file() else None


def test_chromium_checks_typeset_math(tmp_path):
    needs_chromium()
    mathjax = offline_mathjax()
    if mathjax is None:
        pytest.skip("sphinx-mathjax-offline's MathJax is not installed")
    html = tmp_path / "_build" / "html"
    (html / "_static").mkdir(parents=True)
    (html / "_static" / "mathjax").symlink_to(mathjax)
    head = ('<script>window.MathJax = {options: {processHtmlClass: "math"}}</script>'
            '<script defer src="_static/mathjax/tex-chtml.js"></script>')
    site = cs.Site(write(html, {
        "good.html": page('<span class="math notranslate nohighlight">\\(x^2\\)</span>', head),
        "bad.html": page('<span class="math notranslate nohighlight">\\(\\frac{1}\\)</span>'
                         '<span class="math notranslate nohighlight">\\(\\nosuchcommand\\)</span>', head),
        "nomathjax.html": page('<div class="math notranslate nohighlight">\\[x\\]</div>'),
    }))
    problems, _ = cs.browser_problems(site, site.pages(), tmp_path / "_build" / "screenshots")
    assert {p.page for p in problems} == {"bad.html", "nomathjax.html"}
    assert [p.detail for p in problems if p.page == "bad.html"] == [
        "MathJax error: Missing argument for \\frac", "undefined TeX command \\nosuchcommand"]
    assert [p.detail for p in problems if p.page == "nomathjax.html"] == [
        "none of its 1 equations is typeset (MathJax is not loaded), e.g. '\\\\[x\\\\]'"]


# --------------------------------------------------------------------------- installing chromium


def test_a_missing_chromium_is_installed_with_apt(tmp_path, monkeypatch, capsys):
    chromium = tmp_path / "chromium"
    calls = []

    def fake_run(command, **kwargs):
        calls.append(command)
        chromium.write_text("#!/bin/sh\n")
        return type("Done", (), {"returncode": 0})()

    monkeypatch.setattr(cs, "CHROMIUM", chromium)
    monkeypatch.setattr(cs.shutil, "which", lambda name: "/usr/bin/apt-get")
    monkeypatch.setattr(cs.subprocess, "run", fake_run)
    cs.ensure_chromium()
    assert calls == [["apt-get", "install", "-y", "chromium"]]
    assert "installing Debian's chromium" in capsys.readouterr().out


def test_chromium_that_cannot_be_installed_fails_clearly(tmp_path, monkeypatch):
    monkeypatch.setattr(cs, "CHROMIUM", tmp_path / "chromium")
    monkeypatch.setattr(cs.shutil, "which", lambda name: "/usr/bin/apt-get")
    monkeypatch.setattr(cs.subprocess, "run", lambda command, **kwargs: type("Failed", (), {"returncode": 100})())
    with pytest.raises(SystemExit, match="cannot install chromium"):
        cs.ensure_chromium()
