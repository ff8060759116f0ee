"""The repository keeps its promises: one source per chapter, the README's commands, the book config."""
from __future__ import annotations

import importlib.util
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from hyro_edu.book.notebook import is_myst_notebook

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted(p for p in (ROOT / "book").glob("*.md") if is_myst_notebook(p))
#: every MyST notebook: the chapters and the notebooks/ folder (each gets an .ipynb twin)
NOTEBOOKS = CHAPTERS + sorted(p for p in (ROOT / "notebooks").glob("*.md") if is_myst_notebook(p))


def _readme_commands():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    return re.findall(r"```bash\n(.+?)\n```", text)


def test_readme_has_exactly_two_setup_commands_and_ci_runs_the_test_one():
    commands = _readme_commands()
    assert len(commands) == 2, commands
    book, test = commands
    assert "jupyter-book build" in book and '".[book]"' in book and "--warningiserror" in book
    assert test.endswith("pytest") and '".[test]"' in test
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    # CI runs the test command, then the book command (warnings as errors), then checks the site
    quoted = [f"bash -c '{command}'" for command in (test, book)]
    assert all(q in ci for q in quoted), "the README's two commands must be .ci/run's, word for word"
    assert ci.index(quoted[0]) < ci.index(quoted[1]) < ci.index(".ci/check_site.py")


def test_toc_lists_every_chapter_and_only_existing_files():
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text(encoding="utf-8"))
    files = [toc["root"]] + [ch["file"] for part in toc["parts"] for ch in part["chapters"]]
    for f in files:
        assert (ROOT / f"{f}.md").exists(), f
    for chapter in CHAPTERS:
        assert str(chapter.relative_to(ROOT).with_suffix("")) in files, chapter


def test_no_notebook_files_are_committed():
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True)
    if tracked.returncode != 0:
        pytest.skip("not a git checkout")
    assert not [f for f in tracked.stdout.splitlines() if f.endswith(".ipynb")]


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.name)
def test_chapter_structure(chapter):
    text = chapter.read_text(encoding="utf-8")
    cells = re.findall(r"```\{code-cell\} ipython3\n(.*?)```", text, flags=re.S)
    # 1. the first cell installs hyro_edu where it is missing (Colab), and nothing else
    assert 'find_spec("hyro_edu") is None' in cells[0] and "pip" in cells[0]
    # 2. hidden cells check the chapter's claims
    hidden_asserts = [c for c in cells if c.startswith(":tags: [remove-cell]") and "assert" in c]
    assert len(hidden_asserts) >= 3, "a chapter checks its claims in hidden assert cells"
    # 3. learning goals, exercises with hidden solutions, references
    assert "Learning goals" in text and "## Exercises" in text and "## References" in text
    assert ":class: dropdown" in text or ":tags: [hide-cell]" in text
    assert "{cite:" in text


def test_book_config():
    config = yaml.safe_load((ROOT / "_config.yml").read_text(encoding="utf-8"))
    execute = config["execute"]
    assert execute["execute_notebooks"] == "cache" and execute["raise_on_error"] is True
    assert execute["allow_errors"] is False and execute["timeout"] >= 60
    buttons = config["launch_buttons"]
    assert buttons["colab_url"] and buttons["binderhub_url"]
    # no button may point at a placeholder (a JupyterHub button waits for a real hub)
    launch_urls = {k: v for k, v in buttons.items() if k.endswith("_url")}
    assert all(v and "example." not in v for v in launch_urls.values()), launch_urls
    assert "**.ipynb" in config["exclude_patterns"]
    assert config["bibtex_bibfiles"] == ["references.bib"]


def test_bibliography_has_the_seed_papers_and_the_classics():
    bib = (ROOT / "references.bib").read_text(encoding="utf-8")
    keys = set(re.findall(r"@\w+\{([^,]+),", bib))
    required = {
        "truong2026hyro", "peng2025hyperclip", "peng2025hclip", "hvsa", "wu2026modality",
        "nickel2017poincare", "ganea2018cones", "ganea2018hnn", "khrulkov2020hyperbolic",
        "mathieu2019continuous", "nagano2019wrapped", "kilmer2011factorization", "lu2019lowrank",
        "cho2024catseg", "desai2023meru", "wu2024protect", "khattak2023maple",
    }
    assert required <= keys, required - keys
    cited = set()
    for page in (ROOT / "book").glob("*.md"):
        for group in re.findall(r"\{cite:[pt]\}`([^`]+)`", page.read_text(encoding="utf-8")):
            cited.update(k.strip() for k in group.split(","))
    assert cited <= keys, cited - keys


def test_notebook_twins_extension_writes_output_free_ipynb(tmp_path):
    import json
    import shutil

    spec = importlib.util.spec_from_file_location("notebook_twins", ROOT / "book" / "_ext" / "notebook_twins.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    (tmp_path / "book").mkdir()
    shutil.copy(ROOT / "_config.yml", tmp_path / "_config.yml")
    shutil.copy(CHAPTERS[0], tmp_path / "book" / CHAPTERS[0].name)
    (tmp_path / "book" / "plain.md").write_text("# not a notebook\n")
    written = module.write_twins(tmp_path, commit="0123abc")
    assert [p.name for p in written] == [CHAPTERS[0].with_suffix(".ipynb").name]
    nb = json.loads(written[0].read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert code and all(c["outputs"] == [] for c in code)


# ---------------------------------------------------------------------------------------------------
# The published notebooks install hyro-edu at the commit they were built from; the repository URL is
# kept in one place (_config.yml repository.url).


def _twins_module():

    spec = importlib.util.spec_from_file_location("notebook_twins", ROOT / "book" / "_ext" / "notebook_twins.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _repository_url():
    config = yaml.safe_load((ROOT / "_config.yml").read_text(encoding="utf-8"))
    return config["repository"]["url"]


def _setup_cell(md: Path) -> str:
    """The first code cell of a MyST notebook, its options (``:tags:``) included."""
    return re.search(r"```\{code-cell\} ipython3\n(.*?)```", md.read_text(encoding="utf-8"), flags=re.S).group(1)


def _run_setup_cell(source: str, *, installed: bool) -> tuple[dict, list]:
    """Execute a setup cell as if ``hyro_edu`` were (not) installed; pip is recorded, never run."""
    import subprocess as sp

    find_spec = importlib.util.find_spec
    runs = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(importlib.util, "find_spec",
                   lambda name, *a: find_spec(name, *a) if installed or name != "hyro_edu" else None)
        mp.setattr(sp, "run", lambda cmd, **kw: runs.append(cmd))
        namespace = {}
        exec(compile(source, "<setup cell>", "exec"), namespace)
    return namespace, runs


def test_every_notebook_opens_with_the_same_setup_cell():
    assert len(NOTEBOOKS) >= 12 and any(p.parent.name == "notebooks" for p in NOTEBOOKS)
    cells = {p.relative_to(ROOT).as_posix(): _setup_cell(p) for p in NOTEBOOKS}
    first = next(iter(cells.values()))
    assert all(cell == first for cell in cells.values()), [k for k, c in cells.items() if c != first]
    assert first.startswith(":tags: [remove-cell]\n")
    assert first.count("HYRO_EDU_SOURCE = None") == 1  # the line the twins pin
    assert "github.com" not in first and "git+" not in first  # the URL lives in _config.yml only


def test_source_setup_cell_asks_for_an_editable_install():
    source = _setup_cell(NOTEBOOKS[0]).split("\n", 2)[2]  # without the :tags: line
    namespace, runs = _run_setup_cell(source, installed=True)
    assert namespace["HYRO_EDU_SOURCE"] is None and runs == []  # installed: nothing happens
    with pytest.raises(ModuleNotFoundError, match=r"pip install -e \."):
        _run_setup_cell(source, installed=False)


def test_notebook_twins_pin_the_build_commit(tmp_path, monkeypatch):
    import json
    import shutil
    import sys

    module = _twins_module()
    shutil.copy(ROOT / "_config.yml", tmp_path / "_config.yml")
    sources = (CHAPTERS[0], *[p for p in NOTEBOOKS if p.parent.name == "notebooks"])
    for md in sources:
        (tmp_path / md.parent.name).mkdir(exist_ok=True)
        shutil.copy(md, tmp_path / md.parent.name / md.name)
    monkeypatch.setenv("HYRO_EDU_BUILD_COMMIT", "abc123")
    written = module.write_twins(tmp_path)
    assert len(written) == len(sources) and {p.parent.name for p in written} == {"book", "notebooks"}
    expected = f"hyro-edu @ git+{_repository_url()}@abc123"
    source_cell = _setup_cell(CHAPTERS[0]).split("\n", 2)[2]
    for twin in written:
        nb = json.loads(twin.read_text(encoding="utf-8"))
        cell = next(c for c in nb["cells"] if c["cell_type"] == "code")
        assert cell["metadata"].get("tags") == ["remove-cell"]
        source = "".join(cell["source"])
        assert f'HYRO_EDU_SOURCE = "{expected}"' in source
        # only that line differs from the MyST source
        changed = [(a, b) for a, b in zip(source_cell.strip().splitlines(), source.splitlines()) if a != b]
        assert len(changed) == 1 and len(source.splitlines()) == len(source_cell.strip().splitlines()), changed
        namespace, runs = _run_setup_cell(source, installed=True)
        assert namespace["HYRO_EDU_SOURCE"] == expected and runs == []
        _, runs = _run_setup_cell(source, installed=False)  # on Colab
        assert runs == [[sys.executable, "-m", "pip", "install", "-q", expected]]


def test_notebook_twins_commit_fallbacks(tmp_path, monkeypatch):
    module = _twins_module()
    monkeypatch.delenv("HYRO_EDU_BUILD_COMMIT", raising=False)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    if head.returncode == 0:  # a clone: the source tree's HEAD
        assert module.build_commit(ROOT) == head.stdout.strip()
    warnings = []
    monkeypatch.setenv("GIT_DIR", str(tmp_path / "no-such-repository"))  # git rev-parse fails
    assert module.build_commit(tmp_path, warnings.append) == "main"
    assert len(warnings) == 1 and "HYRO_EDU_BUILD_COMMIT" in warnings[0]
    monkeypatch.setenv("HYRO_EDU_BUILD_COMMIT", 'x"; import os')
    with pytest.raises(ValueError, match="commit or a branch"):
        module.build_commit(tmp_path)


def test_notebook_twins_refuse_a_notebook_without_the_setup_cell(tmp_path):
    import shutil

    module = _twins_module()
    shutil.copy(ROOT / "_config.yml", tmp_path / "_config.yml")
    (tmp_path / "book").mkdir()
    text = CHAPTERS[0].read_text(encoding="utf-8").replace("HYRO_EDU_SOURCE = None", "HYRO_EDU_SOURCE = 'x'")
    (tmp_path / "book" / "chapter.md").write_text(text, encoding="utf-8")
    with pytest.raises(ValueError, match="setup cell"):
        module.write_twins(tmp_path, commit="abc123")


def _text_files():
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"],
                            cwd=ROOT, capture_output=True, text=True)
    if listed.returncode == 0:
        paths = [ROOT / line for line in listed.stdout.splitlines()]
    else:  # not a git checkout: every file outside the ignored folders
        skip = {".git", ".venv", "_build", "__pycache__", ".pytest_cache", ".hypothesis"}
        paths = [p for p in ROOT.rglob("*") if not skip & set(p.relative_to(ROOT).parts) and ".egg-info" not in str(p)]
    for path in paths:
        if path.is_file() and path.suffix not in {".png", ".jpg", ".pdf", ".gz", ".zip", ".pt"}:
            try:
                yield path, path.read_text(encoding="utf-8")
            except (UnicodeDecodeError, OSError):
                continue


def test_every_copy_of_the_repository_url_is_config_repository_url():
    url = _repository_url()
    owner, name = url.rstrip("/").split("/")[-2:]
    # any URL of this repository, or of another repository with the same owner or the same name
    pattern = re.compile(rf"https?://github\.com/(?:{re.escape(owner)}/[\w.-]+|[\w.-]+/{re.escape(name)}\b)[^\s\"'`)>]*")
    copies = {}
    for path, text in _text_files():
        if path == ROOT / "_config.yml":
            continue
        for match in pattern.finditer(text):
            copies.setdefault(match.group(0), []).append(path.relative_to(ROOT).as_posix())
    assert "pyproject.toml" in sum(copies.values(), []), "pyproject.toml [project.urls] should name the repository"
    wrong = {}
    for found, where in copies.items():
        base = found.split("@")[0].rstrip("/.")  # pip's git+URL@ref; a sentence's full stop
        base = base[: -len(".git")] if base.endswith(".git") else base
        if base != url:
            wrong[found] = where
    assert not wrong, f"copies of the repository URL that differ from _config.yml's {url}: {wrong}"



def test_single_scripts_extension_drops_repeated_scripts_only():
    """Two copies of sphinx-thebe's inline script (one with filename None, one with "") become one;
    scripts that differ in body or attributes, and file scripts, all stay, in order."""
    spec = importlib.util.spec_from_file_location("single_scripts", ROOT / "book" / "_ext" / "single_scripts.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    from sphinx.builders.html._assets import _JavaScript

    thebe = 'const THEBE_JS_URL = "x"'
    scripts = [
        _JavaScript("_static/doctools.js", priority=200),
        _JavaScript(None, body=thebe),
        _JavaScript("_static/sphinx-thebe.js", **{"async": "async"}),
        _JavaScript("", body=thebe),
        _JavaScript("", body='const other = 1'),
        _JavaScript("_static/sphinx-thebe.js"),  # same file, different attributes: kept
    ]
    original = scripts
    context = {"script_files": scripts}
    module.drop_repeated_scripts(None, "page", "page.html", context, None)
    kept = context["script_files"]
    assert kept is original  # changed in place: later handlers' additions still land on the page
    assert [(s.filename, dict(s.attributes)) for s in kept] == [
        ("_static/doctools.js", {}),
        (None, {"body": thebe}),
        ("_static/sphinx-thebe.js", {"async": "async"}),
        ("", {"body": "const other = 1"}),
        ("_static/sphinx-thebe.js", {}),
    ]
