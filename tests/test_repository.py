"""The repository keeps its promises: one source per chapter, the README's commands, the book config."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

from hyro_edu.book.notebook import is_myst_notebook

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted(p for p in (ROOT / "book").glob("*.md") if is_myst_notebook(p))


def _readme_commands():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    return re.findall(r"```bash\n(.+?)\n```", text)


def test_readme_has_exactly_two_setup_commands_and_ci_runs_the_test_one():
    commands = _readme_commands()
    assert len(commands) == 2, commands
    book, test = commands
    assert "jupyter-book build" in book and '".[book]"' in book
    assert test.endswith("pytest") and '".[test]"' in test
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").strip().splitlines()
    assert ci[-1] == test, "the last line of .ci/run must be the README's test command"


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
    assert buttons["colab_url"] and buttons["binderhub_url"] and buttons["jupyterhub_url"]
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
    import importlib.util
    import json
    import shutil

    spec = importlib.util.spec_from_file_location("notebook_twins", ROOT / "book" / "_ext" / "notebook_twins.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    (tmp_path / "book").mkdir()
    shutil.copy(CHAPTERS[0], tmp_path / "book" / CHAPTERS[0].name)
    (tmp_path / "book" / "plain.md").write_text("# not a notebook\n")
    written = module.write_twins(tmp_path)
    assert [p.name for p in written] == [CHAPTERS[0].with_suffix(".ipynb").name]
    nb = json.loads(written[0].read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert code and all(c["outputs"] == [] for c in code)
