"""The package's floors: the import-linter ``layers`` contract in pyproject.toml, and lazy access.

Every subpackage of ``hyro_edu`` sits on one floor of the contract; a module may import only
from its own floor or below, so ``geometry`` never imports ``clip`` and nothing imports ``book``.
"""
from __future__ import annotations

import ast
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import hyro_edu

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "hyro_edu"


def _contract() -> dict:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    (contract,) = config["tool"]["importlinter"]["contracts"]
    return contract


def _lint(config: Path, cwd: Path) -> subprocess.CompletedProcess:
    # lint-imports reads the package from sys.path: run it where `hyro_edu` is the copy under test.
    code = "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"
    return subprocess.run(
        [sys.executable, "-c", code, "--config", str(config), "--no-cache"],
        cwd=cwd, capture_output=True, text=True, env={"PYTHONPATH": str(cwd), "PATH": ""},
    )


def test_the_layers_contract_is_kept():
    result = _lint(ROOT / "pyproject.toml", ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 kept, 0 broken" in result.stdout


def test_every_subpackage_is_on_exactly_one_floor():
    floors = [[room.strip() for room in layer.split("|")] for layer in _contract()["layers"]]
    rooms = [room.removeprefix("hyro_edu.") for floor in floors for room in floor]
    on_disk = sorted(p.parent.name for p in PACKAGE.glob("*/__init__.py"))
    assert sorted(rooms) == on_disk == sorted(hyro_edu.SUBPACKAGES)
    assert len(rooms) == len(set(rooms))
    # no module lives on the ground beside the subpackages (it would be outside the contract)
    assert sorted(p.name for p in PACKAGE.glob("*.py")) == ["__init__.py"]


def test_the_contract_catches_an_upward_import(tmp_path):
    # a copy of the package in which the ground floor imports the book helpers
    shutil.copytree(PACKAGE, tmp_path / "hyro_edu", ignore=shutil.ignore_patterns("__pycache__"))
    numerics = tmp_path / "hyro_edu" / "core" / "numerics.py"
    numerics.write_text(numerics.read_text(encoding="utf-8") + "\nfrom hyro_edu.book import notebook\n")
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    result = _lint(tmp_path / "pyproject.toml", tmp_path)
    assert result.returncode == 1
    assert "hyro_edu.core is not allowed to import hyro_edu.book" in result.stdout


def _private_imports(path: Path) -> list[str]:
    """``from hyro_edu.x import _name`` and ``module._name`` uses of another hyro_edu module."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    aliases, found = {}, []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("hyro_edu"):
            for alias in node.names:
                if alias.name.startswith("_") and not alias.name.startswith("__"):
                    found.append(f"{node.module}.{alias.name}")
                aliases[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                and node.value.id in aliases and node.attr.startswith("_") and not node.attr.startswith("__")):
            found.append(f"{aliases[node.value.id]}.{node.attr}")
    return found


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_private_name_of_another_module_is_used(path):
    assert _private_imports(path) == []


def test_the_private_import_check_sees_one(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("from hyro_edu.geometry import poincare as P\nfrom hyro_edu.core.checks import _x\nP._project(1)\n")
    assert _private_imports(bad) == ["hyro_edu.core.checks._x", "hyro_edu.geometry.poincare._project"]


def test_subpackages_and_short_names_resolve_lazily():
    code = (
        "import sys, hyro_edu\n"
        "assert 'hyro_edu.segmentation' not in sys.modules and 'lightning' not in sys.modules\n"
        "from hyro_edu import poincare\n"
        "assert poincare is hyro_edu.geometry.poincare\n"
        "assert hyro_edu.segmentation.train.__name__ == 'hyro_edu.segmentation.train'\n"
        "assert set(hyro_edu.SUBPACKAGES) <= set(dir(hyro_edu))\n"
        "for short, target in hyro_edu.SHORT_NAMES.items():\n"
        "    assert getattr(hyro_edu, short).__name__ == 'hyro_edu.' + target, short\n"
        "try:\n"
        "    hyro_edu.no_such_module\n"
        "except AttributeError as err:\n"
        "    assert 'no_such_module' in str(err)\n"
        "else:\n"
        "    raise AssertionError('no AttributeError')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
