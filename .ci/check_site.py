"""Check the built book (``_build/html``) the way a reader meets it: every page, in a real browser.

``jupyter-book build --warningiserror`` catches what Sphinx sees; it cannot see what breaks in the
browser, nor what a reader without internet gets.  This script serves the site on 127.0.0.1, opens
every ``.html`` page in Debian's headless chromium (driven by Playwright, no browser download) and
fails when a page

* ``js``: logs a JavaScript error (a console error or an uncaught exception);
* ``math``: shows an equation MathJax did not typeset (raw ``\\(``, ``\\[`` or ``$$`` in the visible
  text outside code, a ``span.math``/``div.math`` without ``mjx-container``) or a TeX error
  (``mjx-merror``, e.g. an unknown command);
* ``image``: has an image that does not load;
* ``external``: asks a host other than 127.0.0.1/localhost for anything (a CDN): the site must
  work offline, behind a firewall and on a hub without internet.

These checks need no browser and also run with ``--no-browser``; they read the HTML files with
the standard library's ``html.parser``:

* ``link``: an ``a[href]`` (or an ``img[src]``, or a redirect) inside the site names a file the
  build did not write, or a ``#fragment`` that is no ``id``/``name`` of its target page;
* ``external``: a ``<script src>`` or ``<link href>`` on another host;
* ``xref``: a ``{func}``/``{mod}``/``{class}`` role that did not resolve (a bare
  ``code.xref.py`` outside any ``<a>``);
* ``glue``: a ``{glue}`` value the page does not show.  myst-nb renders a missing glue key as
  *nothing* (the build warns, the HTML keeps no marker, the sentence just has a hole), so the
  keys the chapter's MyST source uses are compared with the glue data of its execution
  (``_build/jupyter_execute/<page>.glue.json``), and the ``{glue:text}`` roles of the source
  with the ``span.pasted-text`` elements of the page;
* ``launch``: a Colab/Binder/JupyterHub launch button opens a notebook that is not there: the
  button names ``<page>.ipynb`` only when the build wrote that twin next to the MyST source
  (``book/_ext/notebook_twins.py``), and the ``notebooks`` branch publishes exactly those files.

Usage: ``python .ci/check_site.py _build/html`` (exit 0: no problem, 1: problems, listed per
page).  It also saves screenshots of the intro page and chapters 2 and 10 in
``_build/screenshots/``.  ``--help`` lists the options.
"""
from __future__ import annotations

import argparse
import asyncio
import fnmatch
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from functools import partial
from html.parser import HTMLParser
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path, PurePosixPath
from urllib.parse import parse_qs, unquote, urljoin, urlsplit

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",  # without these, chromium's own connections are refused
    "--disable-component-update",
    "--disable-sync",
]
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}
NOT_PAGES = {"_static", "_sources"}  # theme template fragments and sources, not pages
SCREENSHOT_PAGES = (("book/intro.html", "intro.html", "index.html"),
                    ("book/02_poincare_ball.html",), ("book/10_clip_in_a_nutshell.html",))
KINDS = ("js", "math", "image", "external", "link", "xref", "glue", "launch")
MATHJAX_TIMEOUT_S = 20
TABS = max(2, min(4, os.cpu_count() or 1))  # pages open at once
DETAILS_PER_PAGE = 12  # problems printed per page and kind; the rest are counted


@dataclass(frozen=True)
class Problem:
    page: str  # path relative to the site root, as in the URL
    kind: str  # one of KINDS
    detail: str


# --------------------------------------------------------------------------- reading the HTML


@dataclass
class PageScan:
    """What the static checks need from one HTML file."""

    ids: set[str] = field(default_factory=set)
    links: list[str] = field(default_factory=list)  # a[href], img[src], the refresh target
    resources: list[str] = field(default_factory=list)  # script[src], link[href]
    unresolved_xrefs: list[str] = field(default_factory=list)
    pasted_text: int = 0
    redirect: str | None = None


class _PageParser(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.scan = PageScan()
        self._inside_a = 0
        self._xref_text: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        attr = {name: value or "" for name, value in attrs}
        classes = attr.get("class", "").split()
        self.scan.ids.update(attr[name] for name in ("id", "name") if attr.get(name))
        if tag == "a":
            self._inside_a += 1
            if "href" in attr:
                self.scan.links.append(attr["href"])
        elif tag == "img" and attr.get("src"):
            self.scan.links.append(attr["src"])
        elif tag == "script" and attr.get("src"):
            self.scan.resources.append(attr["src"])
        elif tag == "link" and attr.get("href"):
            self.scan.resources.append(attr["href"])
        elif tag == "meta" and attr.get("http-equiv", "").lower() == "refresh":
            target = re.search(r"url\s*=\s*['\"]?([^'\"\s]+)", attr.get("content", ""), re.I)
            if target:
                self.scan.redirect = target.group(1)
                self.scan.links.append(target.group(1))
        elif tag == "code" and "xref" in classes and "py" in classes and not self._inside_a:
            self._xref_text = []
        if tag == "span" and "pasted-text" in classes:
            self.scan.pasted_text += 1

    def handle_endtag(self, tag):
        if tag == "a" and self._inside_a:
            self._inside_a -= 1
        elif tag == "code" and self._xref_text is not None:
            self.scan.unresolved_xrefs.append("".join(self._xref_text).strip())
            self._xref_text = None

    def handle_data(self, data):
        if self._xref_text is not None:
            self._xref_text.append(data)


def scan_html(text: str) -> PageScan:
    parser = _PageParser()
    parser.feed(text)
    parser.close()
    return parser.scan


class Site:
    """The built site: its pages, read once each, on demand."""

    def __init__(self, root: Path):
        self.root = root
        self._scans: dict[str, PageScan] = {}

    def pages(self, pattern: str = "*") -> list[str]:
        found = []
        for path in sorted(self.root.rglob("*.html")):
            rel = path.relative_to(self.root).as_posix()
            if rel.split("/")[0] not in NOT_PAGES and fnmatch.fnmatch(rel, pattern):
                found.append(rel)
        return found

    def scan(self, page: str) -> PageScan:
        if page not in self._scans:
            self._scans[page] = scan_html((self.root / page).read_text(encoding="utf-8", errors="replace"))
        return self._scans[page]


def is_external(url: str) -> bool:
    """A URL on a host other than this machine (http, https, ws or protocol-relative ``//host``)."""
    parts = urlsplit(url)
    if parts.scheme not in ("", "http", "https", "ws", "wss") or not parts.netloc:
        return False
    return (parts.hostname or "") not in LOCAL_HOSTS


def resolve_internal(page: str, href: str) -> tuple[str, str] | None:
    """The (site-relative file, fragment) an href of ``page`` names, or None if it leaves the site."""
    parts = urlsplit(href)
    if parts.scheme or parts.netloc:
        return None
    target = unquote(urljoin("/" + page, parts.path or PurePosixPath(page).name))
    if target.endswith("/"):
        target += "index.html"
    return target.lstrip("/"), unquote(parts.fragment)


# --------------------------------------------------------------------------- static checks


def check_links(site: Site, page: str) -> list[Problem]:
    """Every link inside the site names a file of the build and, after a ``#``, an id of that page."""
    problems = []
    for href in site.scan(page).links:
        resolved = resolve_internal(page, href)
        if resolved is None:
            continue
        target, fragment = resolved
        path = site.root / target
        if target.startswith("../") or ".." in PurePosixPath(target).parts:
            problems.append(Problem(page, "link", f"{href}: points outside the site"))
        elif path.is_dir() and (path / "index.html").is_file():
            continue
        elif not path.is_file():
            problems.append(Problem(page, "link", f"{href}: {target} does not exist"))
        elif fragment and fragment != "top" and path.suffix == ".html" and fragment not in site.scan(target).ids:
            problems.append(Problem(page, "link", f"{href}: no id {fragment!r} in {target}"))
    return problems


def check_external_resources(site: Site, page: str) -> list[Problem]:
    """No ``<script src>`` or ``<link href>`` on another host: the site must work offline."""
    return [Problem(page, "external", f"<script>/<link> on another host: {url}")
            for url in site.scan(page).resources if is_external(url)]


def check_xrefs(site: Site, page: str) -> list[Problem]:
    """Every ``{func}``/``{mod}``/``{class}`` role of the page resolved to a link."""
    return [Problem(page, "xref", f"unresolved Python reference `{text}`")
            for text in site.scan(page).unresolved_xrefs]


def launch_notebook_path(url: str) -> str | None:
    """The repository path of the notebook a Colab, Binder or JupyterHub launch URL opens (else None)."""
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    segments = [s for s in parts.path.split("/") if s]
    if segments[:1] == ["github"] and "blob" in segments:  # colab: /github/ORG/REPO/blob/BRANCH/PATH
        return "/".join(segments[segments.index("blob") + 2:]) or None
    if "url" in query and "/blob/" in query["url"][0]:  # deepnote: /launch?url=https://github.com/...
        path = urlsplit(query["url"][0]).path.split("/blob/", 1)[1]
        return path.split("/", 1)[1] if "/" in path else None
    ui_path = (query.get("urlpath") or query.get("labpath") or query.get("filepath") or [None])[0]
    if ui_path is None or not (segments[:1] == ["v2"] or "git-pull" in segments):
        return None
    path = re.sub(r"^/?(lab/tree|doc/tree|tree|notebooks|lab)/", "", ui_path)
    if "git-pull" in segments:  # a JupyterHub clones the repository into a folder named after it
        path = path.split("/", 1)[1] if "/" in path else ""
    return path or None


def check_launch_links(site: Site, page: str, source_root: Path) -> list[Problem]:
    """Every launch button opens an ``.ipynb`` twin that the build wrote into the source folder."""
    problems = []
    for href in site.scan(page).links:
        notebook = launch_notebook_path(href) if is_external(href) else None
        if notebook is None:
            continue
        host = urlsplit(href).hostname
        if not notebook.endswith(".ipynb"):
            problems.append(Problem(page, "launch", f"{host} opens {notebook}, not a notebook: "
                                                    "no .ipynb twin was written beside it"))
        elif not (source_root / notebook).is_file():
            problems.append(Problem(page, "launch", f"{host} opens {notebook}: not in {source_root}"))
    return problems


GLUE_ROLE_OR_CODE = re.compile(r"\{(glue(?::[\w-]*)?)\}`([^`\n]+)`|(`+)[^`].*?\3")
GLUE_DIRECTIVE = re.compile(r"^\s*(?:`{3,}|~{3,}|:{3,})\{(glue(?::[\w-]*)?)\}\s+(\S+)")
FENCE = re.compile(r"^\s*(`{3,}|~{3,})\s*(\S*)")
CODE_DIRECTIVES = {"{code-cell}", "{code-block}", "{code}", "{sourcecode}", "{literalinclude}", "{raw}"}


def markdown_prose_lines(text: str):
    """The lines of a MyST file outside code: code cells and code fences are skipped (directives,
    such as an admonition holding Markdown, are not)."""
    fences: list[tuple[str, bool]] = []  # (the fence that opened it, is it code)
    for line in text.splitlines():
        match = FENCE.match(line)
        closes = (match and fences and not match.group(2) and match.group(1)[0] == fences[-1][0][0]
                  and len(match.group(1)) >= len(fences[-1][0]))
        if fences and fences[-1][1]:
            if closes:
                fences.pop()
            continue
        if closes:
            fences.pop()
        elif match:
            info = match.group(2)
            fences.append((match.group(1), not info.startswith("{") or info in CODE_DIRECTIVES))
            if not fences[-1][1]:
                yield line
        else:
            yield line


def glue_uses(text: str) -> list[tuple[str, str]]:
    """The ``(role or directive, key)`` of every ``{glue}`` paste in a MyST source's prose."""
    uses = []
    for line in markdown_prose_lines(text):
        directive = GLUE_DIRECTIVE.match(line)
        if directive:
            uses.append((directive.group(1), directive.group(2)))
            continue
        for match in GLUE_ROLE_OR_CODE.finditer(line):
            if match.group(1):
                name, content = match.group(1), match.group(2)
                key = content.rsplit(":", 1)[0] if name == "glue:text" else content  # key:format
                uses.append((name, key))
    return uses


def page_source(source_root: Path, page: str) -> Path | None:
    stem = source_root / PurePosixPath(page).with_suffix("")
    for suffix in (".md", ".ipynb", ".rst"):
        if stem.with_suffix(suffix).is_file():
            return stem.with_suffix(suffix)
    return None


def check_glue(site: Site, page: str, source_root: Path, execute_dir: Path) -> list[Problem]:
    """Every ``{glue}`` key the page's source pastes has a value, and every ``{glue:text}`` shows."""
    source = page_source(source_root, page)
    if source is None or source.suffix != ".md":
        return []
    uses = glue_uses(source.read_text(encoding="utf-8"))
    if not uses:
        return []
    problems = []
    glue_file = execute_dir / PurePosixPath(page).with_suffix(".glue.json")
    missing_text_uses = 0
    if execute_dir.is_dir():
        glued = set(json.loads(glue_file.read_text(encoding="utf-8"))) if glue_file.is_file() else set()
        missing = [(name, key) for name, key in uses if "::" not in key and key not in glued]
        missing_text_uses = sum(name == "glue:text" for name, _ in missing)
        keys = list(dict.fromkeys(key for _, key in missing))
        if keys and not glued:
            problems.append(Problem(page, "glue", f"none of its {len(keys)} {{glue}} keys has a value, the page "
                                                  f"leaves them out: no {glue_file.name} (was it executed?)"))
        else:
            problems += [Problem(page, "glue", f"{{glue}} key {key!r} has no value, the page leaves it out "
                                               f"(not in {glue_file.name})") for key in keys]
    expected = sum(name == "glue:text" for name, _ in uses)
    shown = site.scan(page).pasted_text
    if expected - shown > missing_text_uses:
        problems.append(Problem(page, "glue", f"{source.name} pastes {expected} {{glue:text}} values, "
                                              f"the page shows {shown}"))
    return problems


def static_problems(site: Site, pages: list[str], source_root: Path) -> list[Problem]:
    execute_dir = site.root.parent / "jupyter_execute"
    problems = []
    for page in pages:
        problems += check_links(site, page)
        problems += check_external_resources(site, page)
        problems += check_xrefs(site, page)
        problems += check_launch_links(site, page, source_root)
        problems += check_glue(site, page, source_root, execute_dir)
    return problems


# --------------------------------------------------------------------------- the browser


def ensure_chromium() -> None:
    """Install Debian's chromium when it is missing (Playwright's own browsers are never downloaded)."""
    if CHROMIUM.exists():
        return
    print(f"{CHROMIUM} is missing: installing Debian's chromium (apt-get install -y chromium)", flush=True)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    install = ["apt-get", "install", "-y", "chromium"]
    if shutil.which("apt-get") is None:
        raise SystemExit("check_site: cannot install chromium: apt-get is not available")
    if subprocess.run(install, env=env).returncode != 0:  # an empty package list: update once, retry
        subprocess.run(["apt-get", "update"], env=env)
        subprocess.run(install, env=env)
    if not CHROMIUM.exists():
        raise SystemExit(f"check_site: cannot install chromium ({' '.join(install)} failed; "
                         "are you root, with the Debian archive reachable?)")


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format, *args):
        pass


class SiteServer:
    """``http.server`` on a free port of 127.0.0.1, in a thread, serving the site's folder."""

    def __init__(self, root: Path):
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_QuietHandler, directory=str(root)))
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


WAIT_FOR_MATHJAX = """async (timeoutMs) => {
  const startup = window.MathJax && window.MathJax.startup;
  if (!startup || !startup.promise) return "absent";
  const timeout = new Promise((done) => setTimeout(() => done("timeout"), timeoutMs));
  return Promise.race([startup.promise.then(() => "done", (e) => "failed: " + e), timeout]);
}"""

# Runs once MathJax is done: waits for the images, then reads what the math and image checks need.
PAGE_FACTS = r"""async (imageTimeoutMs) => {
  const images = [...document.images];
  images.forEach((img) => { if (img.loading === "lazy") img.loading = "eager"; });
  await Promise.all(images.map((img) => img.complete ? null : new Promise((done) => {
    img.addEventListener("load", done, {once: true});
    img.addEventListener("error", done, {once: true});
    setTimeout(done, imageTimeoutMs);
  })));
  const brokenImages = images.filter((img) => !img.complete || img.naturalWidth === 0)
    .map((img) => img.getAttribute("src") || img.outerHTML.slice(0, 100));
  const delimiters = /\\\(|\\\)|\\\[|\\\]|\$\$/;
  const leftovers = [];
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    const parent = node.parentElement;
    if (!parent || !delimiters.test(node.data)) continue;
    if (parent.closest("pre, code, script, style, noscript, textarea, mjx-container, .math")) continue;
    if (parent.checkVisibility && !parent.checkVisibility()) continue;
    leftovers.push(node.data.trim().replace(/\s+/g, " ").slice(0, 80));
  }
  const math = [...document.querySelectorAll("span.math, div.math")];
  return {
    brokenImages,
    leftovers,
    mathCount: math.length,
    untypeset: math.filter((el) => !el.querySelector("mjx-container"))
      .map((el) => el.textContent.trim().replace(/\s+/g, " ").slice(0, 80)),
    mathErrors: [...document.querySelectorAll("mjx-merror, merror")]
      .filter((el) => !el.closest("mjx-assistive-mml"))  // its MathML copy for screen readers
      .map((el) => el.getAttribute("data-mjx-error") || el.textContent.trim().slice(0, 80)),
    // MathJax's noundefined package shows an unknown \command in red instead of an merror
    undefinedCommands: [...document.querySelectorAll('mjx-assistive-mml mtext[mathcolor="red"]')]
      .map((el) => el.textContent.trim()).filter((text) => text.startsWith("\\")),
  };
}"""


def math_problems(page: str, facts: dict, mathjax: str) -> list[Problem]:
    """Equations MathJax left as TeX, and TeX MathJax could not read."""
    problems = [Problem(page, "math", f"untypeset delimiters in the text: {text!r}") for text in facts["leftovers"]]
    untypeset = facts["untypeset"]
    if untypeset and len(untypeset) == facts["mathCount"]:
        why = {"absent": "MathJax is not loaded", "timeout": f"MathJax did not finish in {MATHJAX_TIMEOUT_S} s",
               "done": "MathJax ran"}.get(mathjax, f"MathJax {mathjax}")
        problems.append(Problem(page, "math", f"none of its {len(untypeset)} equations is typeset ({why}), "
                                              f"e.g. {untypeset[0]!r}"))
    else:
        problems += [Problem(page, "math", f"equation not typeset: {text!r}") for text in untypeset]
    problems += [Problem(page, "math", f"MathJax error: {error}") for error in facts["mathErrors"]]
    problems += [Problem(page, "math", f"undefined TeX command {command}") for command in facts["undefinedCommands"]]
    return problems


def image_problems(page: str, facts: dict) -> list[Problem]:
    return [Problem(page, "image", f"does not load: {src}") for src in facts["brokenImages"]]


async def visit(context, base_url: str, page: str, screenshot: Path | None) -> list[Problem]:
    """Open one page; report its JavaScript errors, external requests, math and images."""
    problems: list[Problem] = []
    tab = await context.new_page()

    def on_console(message):
        source = message.location.get("url", "") if message.location else ""
        if message.type == "error" and not is_external(source):  # a blocked CDN counts as external
            where = f" ({source.replace(base_url, '')})" if source and source != base_url + page else ""
            problems.append(Problem(page, "js", f"console error: {message.text[:300]}{where}"))

    def on_request(request):
        if is_external(request.url):
            problems.append(Problem(page, "external", f"the browser requested {request.url}"))

    tab.on("console", on_console)
    tab.on("pageerror", lambda error: problems.append(Problem(page, "js", f"uncaught: {str(error)[:300]}")))
    tab.on("request", on_request)
    try:
        await tab.goto(base_url + page, wait_until="load", timeout=60_000)
        mathjax = await tab.evaluate(WAIT_FOR_MATHJAX, MATHJAX_TIMEOUT_S * 1000)
        facts = await tab.evaluate(PAGE_FACTS, 5_000)
        problems += math_problems(page, facts, mathjax) + image_problems(page, facts)
        if screenshot is not None:
            await tab.screenshot(path=str(screenshot))
    except Exception as error:  # a page that does not load or hangs is a problem of that page
        problems.append(Problem(page, "js", f"the page did not load: {str(error).splitlines()[0]}"))
    finally:
        await tab.close()
    return problems


def screenshot_targets(pages: list[str], folder: Path) -> dict[str, Path]:
    targets = {}
    for candidates in SCREENSHOT_PAGES:
        page = next((p for p in candidates if p in pages), None)
        if page is not None:
            targets[page] = folder / f"{PurePosixPath(page).stem}.png"
    return targets


async def visit_all(base_url: str, pages: list[str], shots: dict[str, Path], profile: str) -> list[Problem]:
    """Open the pages in one chromium, TABS at a time; the first one alone, as a reader's first visit."""
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        context = await playwright.chromium.launch_persistent_context(
            profile, executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_FLAGS,
            viewport={"width": 1280, "height": 900}, service_workers="block")
        # Nothing leaves the machine: requests to other hosts are recorded (on "request") and refused.
        await context.route(is_external, lambda route: route.abort())
        tabs = asyncio.Semaphore(TABS)

        async def one(page):
            async with tabs:
                return await visit(context, base_url, page, shots.get(page))

        try:
            found = [await one(pages[0])] if pages else []
            found += await asyncio.gather(*(one(page) for page in pages[1:]))
        finally:
            await context.close()
    return [problem for problems in found for problem in problems]


def browser_problems(site: Site, pages: list[str], screenshots: Path) -> tuple[list[Problem], list[Path]]:
    """Open every page (redirect stubs excepted: their target is a page too) in headless chromium."""
    ensure_chromium()
    if importlib.util.find_spec("playwright") is None:
        raise SystemExit("check_site: the Python package playwright is missing (pip install playwright)")
    shots = screenshot_targets(pages, screenshots)
    if shots:
        screenshots.mkdir(parents=True, exist_ok=True)
    pages = [page for page in pages if site.scan(page).redirect is None]
    with SiteServer(site.root) as server, tempfile.TemporaryDirectory(prefix="check-site-chromium-") as profile:
        problems = asyncio.run(visit_all(server.url, pages, shots, profile))
    return problems, [path for path in shots.values() if path.exists()]


# --------------------------------------------------------------------------- the report


def format_report(problems: list[Problem], pages: list[str], seconds: float) -> str:
    lines = []
    by_page: dict[str, list[Problem]] = {}
    for problem in problems:
        by_page.setdefault(problem.page, []).append(problem)
    for page in sorted(by_page):
        kinds = Counter(p.kind for p in by_page[page])
        lines.append(f"{page}: " + ", ".join(f"{kinds[k]} {k}" for k in KINDS if kinds[k]))
        for kind in KINDS:
            of_kind = [p.detail for p in by_page[page] if p.kind == kind]
            lines += [f"    [{kind}] {detail}" for detail in of_kind[:DETAILS_PER_PAGE]]
            if len(of_kind) > DETAILS_PER_PAGE:
                lines.append(f"    [{kind}] ... and {len(of_kind) - DETAILS_PER_PAGE} more")
    total = Counter(p.kind for p in problems)
    by_kind = ", ".join(f"{k} {total[k]}" for k in KINDS if total[k]) or "none"
    lines.append(f"check_site: {len(pages)} pages checked in {seconds:.1f} s; "
                 f"{len(problems)} problems ({by_kind}); {len(by_page)} pages with problems")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Check the built book in headless chromium: JavaScript errors, untypeset math, "
                    "broken images, links and anchors, missing glue values, launch buttons without "
                    "their .ipynb twin, requests to other hosts, unresolved Python cross-references.",
        epilog="Exit status: 0 when every page is fine, 1 when a problem was found.")
    parser.add_argument("site", type=Path, help="the built HTML site, e.g. _build/html")
    parser.add_argument("--no-browser", action="store_true",
                        help="only the checks that read the HTML files (links, anchors, external "
                             "scripts, xrefs, glue, launch buttons); no chromium")
    parser.add_argument("--pages", metavar="GLOB", default="*",
                        help="check only the pages matching GLOB, relative to the site (e.g. 'book/0*.html')")
    parser.add_argument("--source-root", type=Path, metavar="DIR",
                        help="the book's source folder, where the .md sources and .ipynb twins are "
                             "(default: the folder holding _build, i.e. SITE/../..)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    start = time.monotonic()
    site = Site(args.site.resolve())
    if not site.root.is_dir():
        print(f"check_site: {args.site} is not a folder", file=sys.stderr)
        return 1
    pages = site.pages(args.pages)
    if not pages:
        print(f"check_site: no page of {args.site} matches {args.pages!r}", file=sys.stderr)
        return 1
    source_root = (args.source_root or site.root.parent.parent).resolve()
    problems = static_problems(site, pages, source_root)
    if not args.no_browser:
        found, shots = browser_problems(site, pages, site.root.parent / "screenshots")
        problems += found
        for shot in shots:
            print(f"screenshot: {shot}")
    problems = list(dict.fromkeys(problems))  # e.g. one script tag twice on a page: one problem
    print(format_report(problems, pages, time.monotonic() - start))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
