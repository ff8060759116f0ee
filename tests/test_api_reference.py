"""The book's API reference (book/api/): a page for every module, every page a real module, all in the TOC.

The pages are written by ``book/api/_generate.py``; run ``python book/api/_generate.py`` when a
test here says they are out of date.
"""
from __future__ import annotations

import importlib
import importlib.util
import pkgutil
import re
from pathlib import Path

import yaml

import hyro_edu

ROOT = Path(__file__).resolve().parents[1]
API = ROOT / "book" / "api"
FIX = "run `python book/api/_generate.py`"


def _generator():
    spec = importlib.util.spec_from_file_location("hyro_edu_api_generate", API / "_generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _walk(package) -> list[str]:
    names = []
    for info in pkgutil.iter_modules(package.__path__):
        name = f"{package.__name__}.{info.name}"
        names.append(name)
        if info.ispkg:
            names += _walk(importlib.import_module(name))
    return names


def _public_modules() -> list[str]:
    """Every module with no ``_``-prefixed component, found here independently of the generator."""
    everything = ["hyro_edu", *_walk(hyro_edu)]
    return [n for n in everything if not any(part.startswith("_") for part in n.split("."))]


def _pages() -> dict[str, str]:
    return {p.stem: p.read_text(encoding="utf-8") for p in sorted(API.glob("*.md"))}


def _toc_files(entries) -> list[str]:
    files = []
    for entry in entries or []:
        if "file" in entry:
            files.append(entry["file"])
        files += _toc_files(entry.get("sections"))
        files += _toc_files(entry.get("chapters"))
    return files


def _api_toc_part() -> dict:
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text(encoding="utf-8"))
    parts = [p for p in toc["parts"] if p.get("caption") == "API reference"]
    assert len(parts) == 1, "_toc.yml needs exactly one part with caption 'API reference'"
    return parts[0]


def test_every_public_module_has_a_page():
    pages = _pages()
    missing = [m for m in _public_modules() if m not in pages]
    assert not missing, f"modules without an API page: {missing}; {FIX}"
    for module in _public_modules():
        assert f".. automodule:: {module}\n" in pages[module], module


def test_every_page_documents_an_existing_module():
    for stem, text in _pages().items():
        importlib.import_module(stem)  # the page's name is a module
        targets = re.findall(r"^\.\. automodule:: (\S+)$", text, flags=re.M)
        assert targets == [stem], f"book/api/{stem}.md should hold one automodule of {stem}, has {targets}"
        for directive, name in re.findall(r"^\.\. auto(class|function|exception):: (\S+)$", text, flags=re.M):
            module, _, attr = name.rpartition(".")
            assert module == stem and hasattr(importlib.import_module(module), attr), name


def test_toc_lists_every_page_once_and_only_pages():
    files = _toc_files(_api_toc_part()["chapters"])
    assert len(files) == len(set(files)), "a page is listed twice in the API part of _toc.yml"
    pages = {f"book/api/{stem}" for stem in _pages()}
    assert set(files) == pages, (
        f"not in the TOC: {sorted(pages - set(files))}; not a page: {sorted(set(files) - pages)}; {FIX}")


def test_reexports_point_at_their_definition():
    """A name importable from several modules is described once, where it is defined; the
    re-exporting page has a short entry that links there (so both paths resolve)."""
    pages = _pages()
    for stem, text in pages.items():
        for role, target in re.findall(r"Re-export of :(\w+):`([^`]+)`", text):
            home, _, name = target.rpartition(".")
            assert home in pages, f"{stem}: {target} points at a module without a page"
            home_text = pages[home]
            excluded = re.search(r":exclude-members: (.+)$", home_text, flags=re.M)
            assert not excluded or name not in [n.strip() for n in excluded.group(1).split(",")], target
            module = importlib.import_module(home)
            documented = name in getattr(module, "__all__", ()) or f"{home}.{name}" in home_text or (
                f"py:data:: {name}\n   :module: {home}" in home_text)
            assert documented, f"{target} (re-exported by {stem}) is documented nowhere; {FIX}"


def test_pages_and_toc_are_what_the_generator_writes():
    generator = _generator()
    expected = generator.expected()
    stale = [str(p.relative_to(ROOT)) for p, text in expected.items()
             if not p.is_file() or p.read_text(encoding="utf-8") != text]
    extra = [str(p.relative_to(ROOT)) for p in API.glob("*.md") if p not in expected]
    assert not stale and not extra, f"out of date: {stale}, not generated: {extra}; {FIX}"
