"""The import rules of issue 18 and DESIGN.md §2, read from the source with `ast` (module-level imports and a
function's own alike): the converters' direct rules are in test_converter_imports.py; here are the rules that
follow imports through our own modules, the proxy's rule on SQLite, the Datasette side's rule on mitmproxy and
the leaf modules'. Each rule is also run on a small made-up package that breaks it, so a walker that stopped
seeing imports would fail here rather than pass everything."""

from __future__ import annotations

import ast
from collections.abc import Iterable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
OURS = "ccany_addon"
CONVERTERS = ROOT / OURS / "converters"
PROXY = ROOT / OURS / "proxy"
PLUGINS = ROOT / "datasette" / "plugins"
# One module per upstream dialect, or one side of one: only the Dialect table and the gateway import them
# (test_converter_imports.py checks that every module converting for a dialect is listed here).
DIALECTS = {"openai_chat", "openai_chat_stream", "openai_responses", "openai_responses_stream", "gemini",
            "gemini_stream", "anthropic_passthrough"}
SQLITE = {"sqlite3", "sqlite_utils"}
# Plain data several layers read: they import nothing of ours (DESIGN.md §2, "Dependencies point one way").
LEAVES = (ROOT / OURS / "upstreams" / "kinds.py",)


def module_name(path: Path, root: Path = ROOT) -> str:
    """The dotted name a file is imported by (a Datasette plugin file is a top-level module of its own)."""
    parts = path.relative_to(root).with_suffix("").parts
    if parts[0] != OURS:
        return path.stem
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, root: Path = ROOT) -> set[str]:
    """Every module `path` imports, anywhere in it (under `if TYPE_CHECKING:` too), by its full dotted name;
    `from package import name` counts as importing `package.name` too (it may be a module), and a relative
    import is made absolute."""
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(filter(None, [*anchor, base]))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def source_of(name: str, root: Path = ROOT) -> Path | None:
    """The file of one of our modules (None: not ours, or a name inside a module rather than a module)."""
    if name.split(".")[0] != OURS:
        return None
    base = root.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def reached(start: Path, root: Path = ROOT) -> dict[str, tuple[str, ...]]:
    """Every module importing `start` loads through our own modules (their packages' __init__ included), each
    with the chain of imports that reaches it first."""
    chains: dict[str, tuple[str, ...]] = {}
    first = module_name(start, root)
    todo: list[tuple[Path, tuple[str, ...]]] = [(start, (first,))]
    seen = {first}
    while todo:
        path, chain = todo.pop(0)
        for name in sorted(imports_of(path, root)):
            parts = name.split(".")
            # importing ours a.b.c runs a/__init__.py and a/b/__init__.py first; a name that is no module of ours
            # (a class imported from one) loads nothing more
            loads = [name] if parts[0] != OURS else [
                prefix for end in range(1, len(parts) + 1)
                if source_of(prefix := ".".join(parts[:end]), root) is not None]
            for loaded in loads:
                if loaded in seen:
                    continue
                seen.add(loaded)
                chains[loaded] = (*chain, loaded)
                if (source := source_of(loaded, root)) is not None:
                    todo.append((source, chains[loaded]))
    return chains


def reaching(start: Path, tops: Iterable[str], root: Path = ROOT) -> list[str]:
    """The import chains from `start` to any module whose top-level package is one of `tops`."""
    tops = set(tops)
    return [" → ".join(chain) for name, chain in reached(start, root).items() if name.split(".")[0] in tops]


def python_files(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.py")) if folder.is_dir() else []


# -- the rules, as functions of a tree, so the made-up packages below can break each one


def converter_reach_violations(root: Path = ROOT) -> list[str]:
    """A converter loads no mitmproxy, SQLite or Datasette, not even through another of our modules."""
    return [chain for path in python_files(root / OURS / "converters")
            for chain in reaching(path, {"mitmproxy", "datasette", *SQLITE}, root)]


def dialect_reach_violations(root: Path = ROOT) -> list[str]:
    """A dialect module loads no other dialect module, not even through another of our modules."""
    package = f"{OURS}.converters."
    violations = []
    for path in python_files(root / OURS / "converters"):
        if path.stem not in DIALECTS:
            continue
        for name, chain in reached(path, root).items():
            if name.startswith(package) and name.removeprefix(package).split(".")[0] in DIALECTS - {path.stem}:
                violations.append(" → ".join(chain))
    return violations


def proxy_sqlite_violations(root: Path = ROOT) -> list[str]:
    """The proxy reaches SQLite only through the flow writer and the config reader thread: none of its modules
    imports sqlite3 or sqlite_utils itself."""
    return [f"{module_name(path, root)} imports {name}" for path in python_files(root / OURS / "proxy")
            for name in sorted(imports_of(path, root)) if name.split(".")[0] in SQLITE]


def datasette_side_violations(root: Path = ROOT) -> list[str]:
    """The Datasette plugin modules and ccany_addon/web load no mitmproxy, directly or through our modules."""
    files = python_files(root / "datasette" / "plugins") + python_files(root / OURS / "web")
    return [chain for path in files for chain in reaching(path, {"mitmproxy"}, root)]


def leaf_violations(leaves: Iterable[Path], root: Path = ROOT) -> list[str]:
    """A leaf module imports nothing of ours."""
    return [f"{module_name(path, root)} imports {name}" for path in leaves
            for name in sorted(imports_of(path, root)) if name.split(".")[0] == OURS]


# -- the rules on the real tree


def test_the_trees_the_rules_read_are_there():
    assert len(python_files(CONVERTERS)) > 10 and len(python_files(PROXY)) > 10
    assert {path.stem for path in python_files(CONVERTERS)} >= DIALECTS
    assert {path.name for path in python_files(PLUGINS)} >= {"ccany.py", "ccany_admin.py"}
    assert all(path.is_file() for path in LEAVES)


def test_converters_load_no_mitmproxy_sqlite_or_datasette_through_our_modules():
    assert converter_reach_violations() == []


def test_no_dialect_module_loads_another_through_our_modules():
    assert dialect_reach_violations() == []


def test_the_proxy_imports_sqlite_only_through_the_flow_writer_and_the_config_reader():
    assert proxy_sqlite_violations() == []


def test_the_datasette_plugins_and_the_web_package_load_no_mitmproxy():
    assert datasette_side_violations() == []


def test_leaf_modules_import_nothing_of_ours():
    assert leaf_violations(LEAVES) == []


# -- each rule fails on a tree that breaks it


def _tree(root: Path, files: dict[str, str]) -> Path:
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


BASE = {
    f"{OURS}/__init__.py": "",
    f"{OURS}/converters/__init__.py": "",
    f"{OURS}/converters/openai_chat.py": "from . import shared\n",
    f"{OURS}/converters/gemini.py": "from ccany_addon.converters.shared import text\n",
    f"{OURS}/converters/shared.py": "import json\n",
    f"{OURS}/proxy/__init__.py": "",
    f"{OURS}/proxy/gateway.py": "import mitmproxy\nfrom ccany_addon.flowlog import writer\n",
    f"{OURS}/flowlog/__init__.py": "",
    f"{OURS}/flowlog/writer.py": "import sqlite3\nimport sqlite_utils\n",
    f"{OURS}/web/__init__.py": "",
    f"{OURS}/web/pages.py": "import sqlite3\nfrom ccany_addon.converters import gemini\n",
    f"{OURS}/upstreams/__init__.py": "",
    f"{OURS}/upstreams/kinds.py": "from dataclasses import dataclass\n",
    "datasette/plugins/ccany.py": "from datasette import hookimpl\nfrom ccany_addon.web import pages\n",
}


def _all_violations(root: Path) -> dict[str, list[str]]:
    return {
        "converters": converter_reach_violations(root),
        "dialects": dialect_reach_violations(root),
        "proxy": proxy_sqlite_violations(root),
        "datasette": datasette_side_violations(root),
        "leaves": leaf_violations([root / OURS / "upstreams" / "kinds.py"], root),
    }


def test_a_tree_that_keeps_the_rules_passes_them(tmp_path):
    assert _all_violations(_tree(tmp_path, BASE)) == {
        "converters": [], "dialects": [], "proxy": [], "datasette": [], "leaves": []}


BREAKS = {
    "converters": (f"{OURS}/converters/shared.py", "def later():\n    from ccany_addon.proxy import gateway\n",
                   "ccany_addon.converters.gemini → ccany_addon.converters.shared → ccany_addon.proxy.gateway "
                   "→ mitmproxy"),
    "dialects": (f"{OURS}/converters/shared.py", "from .openai_chat import thing\n",
                 "ccany_addon.converters.gemini → ccany_addon.converters.shared → "
                 "ccany_addon.converters.openai_chat"),
    "proxy": (f"{OURS}/proxy/gateway.py", "import mitmproxy\nfrom sqlite_utils import Database\n",
              "ccany_addon.proxy.gateway imports sqlite_utils"),
    "datasette": (f"{OURS}/converters/shared.py", "import mitmproxy.http\n",
                  "ccany → ccany_addon.web.pages → ccany_addon.converters.gemini → ccany_addon.converters.shared "
                  "→ mitmproxy.http"),
    "leaves": (f"{OURS}/upstreams/kinds.py", "from ..config import schema\n",
               "ccany_addon.upstreams.kinds imports ccany_addon.config"),
}


@pytest.mark.parametrize("rule", sorted(BREAKS))
def test_each_rule_fails_on_a_tree_that_breaks_it(tmp_path, rule):
    relative, text, expected = BREAKS[rule]
    violations = _all_violations(_tree(tmp_path, {**BASE, relative: text}))
    assert expected in violations[rule], violations[rule]
