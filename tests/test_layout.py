"""The layout's promises (README, "Architecture"): what each package may import."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

BATTLES = Path(__file__).resolve().parents[1] / "battles"
PACKAGES = ("engine", "live", "providers", "providers/sparring")


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, at any depth (function-level imports included)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def modules_under(package: str) -> list[Path]:
    return sorted((BATTLES / package).rglob("*.py"))


@pytest.mark.parametrize("package", ["engine", "providers"])
def test_running_a_battle_and_calling_models_know_nothing_of_delivery(package: str) -> None:
    offenders = {
        str(path.relative_to(BATTLES)): sorted(
            m for m in imported_modules(path) if m.startswith("battles.live")
        )
        for path in modules_under(package)
    }
    assert {path: names for path, names in offenders.items() if names} == {}


def test_constants_are_django_free() -> None:
    assert not {
        m for m in imported_modules(BATTLES / "constants.py") if m.split(".")[0] in {"django", "battles"}
    }


@pytest.mark.parametrize("package", PACKAGES)
def test_each_package_says_what_it_is_for(package: str) -> None:
    docstring = ast.get_docstring(ast.parse((BATTLES / package / "__init__.py").read_text()))
    assert docstring and len(docstring.splitlines()[0]) > 20
