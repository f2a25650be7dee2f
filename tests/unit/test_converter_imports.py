"""The converters' import rules (issue 18), read from the source with `ast`: no converter imports mitmproxy,
SQLite or Datasette, and no converter imports a dialect module (what dialects share lives in shared modules;
converters/common.py's docstring says which)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.unit.test_import_rules import DIALECTS, imports_of

CONVERTERS = Path(__file__).resolve().parents[2] / "ccany_addon" / "converters"
PACKAGE = "ccany_addon.converters"
FORBIDDEN = {"mitmproxy", "sqlite3", "sqlite_utils", "datasette"}
MODULES = sorted(path for path in CONVERTERS.glob("*.py"))


def defines_a_dialect(path: Path) -> bool:
    """Whether a module converts a request or an answer for one upstream dialect: to_*_request, to_message,
    a stream translator."""
    for node in ast.parse(path.read_text()).body:
        name = getattr(node, "name", "")
        if isinstance(node, ast.FunctionDef) and (name == "to_message" or
                                                  (name.startswith("to_") and name.endswith("_request"))):
            return True
        if isinstance(node, ast.ClassDef) and name.endswith(("StreamTranslator", "EventStream")):
            return True
    return False


def test_there_are_converters_and_every_dialect_module_exists():
    names = {path.stem for path in MODULES}
    assert len(names) > 10 and names >= DIALECTS


@pytest.mark.parametrize("path", MODULES, ids=lambda path: path.stem)
def test_a_converter_imports_no_mitmproxy_sqlite_or_datasette(path):
    found = {name for name in imports_of(path) if name.split(".")[0] in FORBIDDEN}
    assert not found, f"{path.name} imports {sorted(found)}"


@pytest.mark.parametrize("path", MODULES, ids=lambda path: path.stem)
def test_no_converter_imports_a_dialect_module(path):
    found = {name for name in imports_of(path) if name.startswith(PACKAGE + ".")
             and name.removeprefix(PACKAGE + ".").split(".")[0] in DIALECTS - {path.stem}}
    assert not found, f"{path.name} imports the dialect module(s) {sorted(found)}: move what they share to a shared one"


@pytest.mark.parametrize("path", MODULES, ids=lambda path: path.stem)
def test_a_module_that_converts_for_a_dialect_is_listed_as_one(path):
    """So a new dialect module cannot pass for a shared one (and be imported by the others)."""
    assert not defines_a_dialect(path) or path.stem in DIALECTS, f"{path.name}: add it to DIALECTS"
