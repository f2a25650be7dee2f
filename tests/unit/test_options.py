"""The options table (config/options.py) is the one declaration: the addons declare exactly its rows, and the README's
options table lists each with its default."""

from __future__ import annotations

import re
from pathlib import Path

from mitmproxy.addons.proxyserver import Proxyserver
from mitmproxy.test import taddons

from ccany_addon.config.options import OPTIONS, SETTINGS
from ccany_addon.config.schema import SETTINGS as SCHEMA_SETTINGS
from ccany_addon.proxy.assembly import build_addons

README = Path(__file__).resolve().parents[2] / "README.md"
ROW = re.compile(r"^\| `(ccany_\w+)` \| ([^|]+) \|", re.M)


def readme_defaults() -> dict[str, str]:
    return {name: cell.strip() for name, cell in ROW.findall(README.read_text())}


def test_the_addons_declare_exactly_the_table():
    with taddons.context(Proxyserver(), *build_addons()) as tctx:
        declared = {name for name in tctx.options.keys() if name.startswith("ccany_")}  # noqa: SIM118 (not iterable)
        for name, option in OPTIONS.items():
            assert tctx.options.default(name) == option.default, name
    assert declared == set(OPTIONS)


def test_the_readme_lists_every_option_with_its_default():
    documented = readme_defaults()
    assert set(documented) == set(OPTIONS)
    for name, option in OPTIONS.items():
        cell = documented[name]
        if option.default == "":
            assert cell.startswith("*(empty"), (name, cell)
        elif isinstance(option.default, bool):
            assert cell == f"`{str(option.default).lower()}`", (name, cell)
        else:
            assert cell == f"`{option.default}`", (name, cell)


def test_config_db_settings_are_the_options_marked_as_settings():
    assert SCHEMA_SETTINGS is SETTINGS
    assert set(SETTINGS) == {name for name, option in OPTIONS.items() if option.setting}
    assert all(SETTINGS[name] is OPTIONS[name].type for name in SETTINGS)


def test_every_provider_kind_has_a_dialect_and_every_dialect_a_kind():
    from ccany_addon.upstreams.dialects import DIALECTS
    from ccany_addon.upstreams.kinds import PROVIDER_KINDS

    assert set(DIALECTS) == set(PROVIDER_KINDS)
