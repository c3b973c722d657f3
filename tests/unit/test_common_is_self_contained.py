"""`common/` is what a function container needs and nothing else: it imports no other package of
this repository, neither by an import statement nor by name (importlib, __import__)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

COMMON = Path(__file__).resolve().parents[2] / "common"
# Every other top-level package of the repository.
FORBIDDEN = frozenset(
    {
        "benchmarks",
        "cli",
        "functions",
        "localknative",
        "modelserver",
        "scripts",
        "source",
        "testkit",
        "tests",
    }
)
_BY_NAME = {"import_module", "__import__", "find_spec", "import_from_path"}


def _top(name: str) -> str:
    return name.split(".", 1)[0]


def forbidden_imports(source: str) -> list[str]:
    """`line: what` for each import of a FORBIDDEN package in this module's source."""
    found: list[str] = []
    for node in ast.walk(ast.parse(source)):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        elif isinstance(node, ast.Call):
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if called in _BY_NAME:
                names = [
                    arg.value
                    for arg in node.args
                    if isinstance(arg, ast.Constant) and isinstance(arg.value, str)
                ]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            # A dotted module path in a string (a table of modules to import later) counts too.
            value = node.value
            if "." in value and " " not in value and _top(value) in FORBIDDEN:
                names = [value]
        for name in names:
            # A string passed to import_module is seen twice: as the call and as a constant.
            entry = f"{getattr(node, 'lineno', 0)}: {name}"
            if _top(name) in FORBIDDEN and entry not in found:
                found.append(entry)
    return found


@pytest.mark.parametrize("path", sorted(COMMON.glob("*.py")), ids=lambda p: p.name)
def test_common_imports_nothing_else_of_the_repository(path: Path) -> None:
    assert forbidden_imports(path.read_text()) == [], f"{path.name} reaches outside common/"


def test_the_check_catches_each_way_of_importing() -> None:
    offending = """
import source.settings
from modelserver import graphs
from cli.main import main
import importlib
importlib.import_module("localknative.demo")
__import__("testkit")
EXTRA = ("source.settings", "modelserver.settings")
"""
    assert [line.split(": ")[1] for line in forbidden_imports(offending)] == [
        "source.settings",
        "modelserver",
        "cli.main",
        "localknative.demo",
        "testkit",
        "source.settings",
        "modelserver.settings",
    ]
    harmless = 'import json\nfrom common.env import Env\nHELP = "see source.md"\n'
    assert forbidden_imports(harmless) == []
