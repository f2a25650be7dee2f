"""Datasette runs in its own process: its plugin files and the ccany_addon.web package they sit on import no
mitmproxy, not even through ccany_addon.proxy."""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys

import ccany_addon.web
from tests.datasette.app import PLUGINS_DIR, ROOT

# Loads each plugin file as `datasette serve --plugins-dir` does, and every module of the web package.
PROBE = """
import importlib, json, sys
from datasette.utils import module_from_path
for path in sys.argv[2:]:
    module_from_path(path, name=path.rsplit("/", 1)[-1])
for name in json.loads(sys.argv[1]):
    importlib.import_module(name)
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] == "mitmproxy" or m.startswith("ccany_addon.proxy"))))
"""


def test_the_datasette_plugins_import_no_mitmproxy() -> None:
    web_modules = [info.name for info in pkgutil.iter_modules(ccany_addon.web.__path__, "ccany_addon.web.")]
    plugins = sorted(str(path) for path in PLUGINS_DIR.glob("*.py"))
    assert "ccany_addon.web.guard" in web_modules and len(plugins) == 2
    run = subprocess.run([sys.executable, "-c", PROBE, json.dumps(web_modules), *plugins], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout) == []
