"""`ccany-config export` and `import`: the whole config DB as YAML, and back, all or nothing.

YAML 1.1 guesses types from plain text: an all-digit key hash becomes an int, `0123` the octal 83, `yes` a
bool, and YAML 1.2 readers also take `1e5` as a float. So export quotes every string any YAML reader could take
for something else, import reads every plain scalar as text (null aside) and turns it into the type each field
needs, and the whole file is checked before the first write, then applied in one transaction.
"""

from __future__ import annotations

import json
import re
import sqlite3
from datetime import date
from typing import Any, NamedTuple

import sqlite_utils
import yaml

from ccany_addon.config import store
from ccany_addon.config.schema import KEY_STRATEGIES, PROVIDER_KINDS, ROLES, SCENARIOS, SETTINGS
from ccany_addon.config.secrets import Cipher
from ccany_addon.config.snapshot import allowed_models, setting_value
from ccany_addon.limits.key_limits import BUDGET_COLUMNS, LIMIT_COLUMNS, OVER_BUDGET_COLUMN
from ccany_addon.upstreams.models import TIERS

ACTOR = "cli"
KEY_COLUMNS = (*LIMIT_COLUMNS, OVER_BUDGET_COLUMN)  # what a client key carries beside its name and hash
USER_COLUMNS = (*BUDGET_COLUMNS, OVER_BUDGET_COLUMN)


def export_config(db: sqlite_utils.Database, cipher: Cipher | None, with_secrets: bool) -> dict[str, Any]:
    providers = []
    for row in db["providers"].rows_where(order_by="id"):
        entry: dict[str, Any] = {
            "name": row["name"], "kind": row["kind"], "base_url": row["base_url"], "api_version": row["api_version"],
            "enabled": bool(row["enabled"]),
            "models": {tier: row[f"{tier}_model"] for tier in TIERS if row[f"{tier}_model"]},
            "key_strategy": row["key_strategy"],
            "fallback": [name for name in (row["fallback"] or "").split(",") if name] or None,
        }
        if with_secrets:
            if cipher is None:
                raise store.ConfigError("exporting keys needs the master key")
            keys = db["provider_keys"].rows_where("provider_id = ?", [row["id"]], order_by="id")
            entry["keys"] = [{"name": key["name"], "key": cipher.decrypt(key["secret"]),
                              "enabled": bool(key["enabled"])} for key in keys]
        providers.append(entry)
    names = {row["id"]: row["name"] for row in db["providers"].rows}
    routes = [{"pattern": row["pattern"], "provider": names.get(row["provider_id"]), "model": row["upstream_model"],
               "priority": row["priority"], "enabled": bool(row["enabled"]),
               **({"scenario": row["scenario"]} if row["scenario"] else {})}
              for row in db["routes"].rows_where(order_by="priority, id")]
    capabilities = [{name: value for name, value in row.items() if name != "id" and value is not None}
                    for row in db["model_capabilities"].rows_where(order_by="id")]
    usernames = {row["id"]: row["username"] for row in db["users"].rows}
    prices = [{name: value for name, value in row.items() if name != "id" and value not in (None, "")}
              for row in db["model_prices"].rows_where(order_by="id")]
    client_keys = [{"name": row["name"], "prefix": row["prefix"], "expires_at": row["expires_at"],
                    "allowed_models": list(allowed_models(row["allowed_models"])) or None,
                    "enabled": bool(row["enabled"]), **({"key_hash": row["key_hash"]} if with_secrets else {}),
                    **{column: row[column] for column in KEY_COLUMNS if row.get(column) is not None},
                    **({"owner": usernames[row["user_id"]]} if row.get("user_id") in usernames else {})}
                   for row in db["client_keys"].rows_where(order_by="id")]
    users = [{"username": row["username"], "role": row["role"],
              **{column: row[column] for column in USER_COLUMNS if row.get(column) is not None},
              **({"password_hash": row["password_hash"]} if with_secrets else {})}
             for row in db["users"].rows_where(order_by="id")]
    settings = {row["name"]: row["value"] for row in db["settings"].rows_where(order_by="name")}
    return {"providers": providers, "routes": routes, "client_keys": client_keys, "users": users,
            "settings": settings, "model_capabilities": capabilities, "model_prices": prices}


# Text that some YAML reader (1.1 or 1.2) takes for a number, a bool or null when left unquoted.
_AMBIGUOUS = re.compile(r"[-+]?(\.?[0-9][0-9a-z_.:+-]*|\.inf|\.nan)|y|n|yes|no|on|off|true|false|null|~",
                        re.IGNORECASE)


class _Dumper(yaml.SafeDumper):
    def represent_str(self, data: str) -> yaml.ScalarNode:
        style = "'" if _AMBIGUOUS.fullmatch(data) else None
        return self.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_Dumper.add_representer(str, _Dumper.represent_str)


def dump_yaml(data: dict[str, Any]) -> str:
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, allow_unicode=True)


class _TextLoader(yaml.SafeLoader):
    """Plain scalars stay text (only null and `<<` merges keep their meaning): each field says its type."""


_TextLoader.yaml_implicit_resolvers = {
    first: kept for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    if (kept := [(tag, regexp) for tag, regexp in resolvers
                 if tag in ("tag:yaml.org,2002:null", "tag:yaml.org,2002:merge")])
}


def load_yaml(text: str) -> Any:
    try:
        return yaml.load(text, Loader=_TextLoader)  # a SafeLoader, with fewer type guesses
    except yaml.YAMLError as error:
        # only the position and the problem: the parser's own message quotes the line, which may hold a key
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise store.ConfigError(f"the file is not valid YAML{where}: {getattr(error, 'problem', '') or 'error'}") \
            from None


class _Field(NamedTuple):
    kind: str  # text, number, flag, texts, tiers, or a section name (a list of nested entries)
    required: bool = False
    choices: tuple[str, ...] = ()


# Each section's entries; `keys` is nested inside a provider.
_SPECS: dict[str, dict[str, _Field]] = {
    "providers": {"name": _Field("text", True), "kind": _Field("text", choices=PROVIDER_KINDS),
                  "base_url": _Field("text", True), "api_version": _Field("text"), "enabled": _Field("flag"),
                  "models": _Field("tiers"), "key_strategy": _Field("text", choices=KEY_STRATEGIES),
                  "fallback": _Field("texts"), "keys": _Field("keys")},
    "keys": {"name": _Field("text"), "key": _Field("text", True), "enabled": _Field("flag")},
    "routes": {"pattern": _Field("text", True), "provider": _Field("text", True), "model": _Field("text"),
               "priority": _Field("number"), "enabled": _Field("flag"), "scenario": _Field("text", choices=SCENARIOS)},
    "client_keys": {"name": _Field("text", True), "prefix": _Field("text"), "expires_at": _Field("text"),
                    "allowed_models": _Field("texts"), "enabled": _Field("flag"), "key_hash": _Field("text"),
                    "rpm_limit": _Field("number"), "tpm_limit": _Field("number"), "max_streams": _Field("number"),
                    "daily_budget_usd": _Field("usd"), "monthly_budget_usd": _Field("usd"), "owner": _Field("text"),
                    "over_budget_model": _Field("text")},
    "users": {"username": _Field("text", True), "role": _Field("text", choices=ROLES),
              "password_hash": _Field("text"), "daily_budget_usd": _Field("usd"), "monthly_budget_usd": _Field("usd"),
              "over_budget_model": _Field("text")},
    "model_capabilities": {"pattern": _Field("text", True), "max_output_tokens": _Field("number"),
                           "context_window": _Field("number"), "vision": _Field("flag"), "tools": _Field("flag"),
                           "reasoning": _Field("flag"), "late_system": _Field("flag"),
                           "prompt_cache_key": _Field("flag"), "structured_outputs": _Field("flag"),
                           "xhigh_effort": _Field("flag"), "notes": _Field("text"),
                           "max_tokens_field": _Field("text", choices=("max_tokens", "max_completion_tokens"))},
    "model_prices": {"pattern": _Field("text", True), "provider": _Field("text"),
                     "input_per_mtok": _Field("usd", True), "output_per_mtok": _Field("usd", True),
                     "cache_read_per_mtok": _Field("usd"), "cache_write_per_mtok": _Field("usd"),
                     "notes": _Field("text")},
}
_SECTIONS = ("providers", "routes", "client_keys", "users", "model_capabilities", "model_prices")
_LABELS = ("name", "pattern", "username")  # never a secret field: error messages name entries by these


def validate(data: Any) -> dict[str, Any]:
    """The file's sections with every value of the type its column needs; a ConfigError names the first entry and
    field that is wrong (never a secret's value)."""
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise store.ConfigError("the file must be a mapping of sections (providers, routes, ...)")
    if unknown := set(data) - {*_SECTIONS, "settings"}:
        raise store.ConfigError(f"unknown sections: {', '.join(sorted(map(str, unknown)))}")
    clean: dict[str, Any] = {name: _entries(name, data.get(name), name) for name in _SECTIONS}
    settings = data.get("settings") or {}
    if not isinstance(settings, dict):
        raise store.ConfigError("settings must be a mapping of name: value")
    clean["settings"] = {}
    for name, value in settings.items():
        if name not in SETTINGS:
            raise store.ConfigError(f"settings: unknown setting {name!r}; known: {', '.join(SETTINGS)}")
        if isinstance(value, bool):
            value = str(value).lower()
        text = None if value is None else _convert(value, _Field("text"), f"settings: {name}")
        try:
            if text is not None:
                setting_value(SETTINGS[name], text)
        except ValueError:
            raise store.ConfigError(f"settings: {name} must be {_describe(SETTINGS[name])}") from None
        clean["settings"][name] = text
    return clean


def _entries(section: str, entries: Any, where: str) -> list[dict[str, Any]]:
    if entries is None:
        return []
    if not isinstance(entries, list):
        raise store.ConfigError(f"{where} must be a list of entries")
    spec, clean = _SPECS[section], []
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise store.ConfigError(f"{where}[{index}] must be a mapping")
        label = next((f" ({field} {entry[field]!r})" for field in _LABELS if isinstance(entry.get(field), str)), "")
        here = f"{where}[{index}]{label}"
        if unknown := set(entry) - set(spec):
            raise store.ConfigError(f"{here}: unknown fields {', '.join(sorted(map(str, unknown)))}")
        row = {}
        for name, field in spec.items():
            value = entry.get(name)
            if value is None:
                if field.required:
                    raise store.ConfigError(f"{here}: {name} is missing")
                continue
            row[name] = (_entries(field.kind, value, f"{here}.{name}") if field.kind in _SPECS
                         else _convert(value, field, f"{here}: {name}"))
        clean.append(row)
    return clean


def _convert(value: Any, field: _Field, where: str) -> Any:
    """The value as the field's type. A number where text belongs is taken as its digits (a YAML reader made it
    a number); anything else of the wrong type is refused, without quoting the value (it may be a secret)."""
    kind = field.kind
    if kind == "text":
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        elif isinstance(value, date):
            value = value.isoformat()
        if not isinstance(value, str):
            raise store.ConfigError(f"{where} must be text, not {_describe(type(value))} (quote it)")
        if field.choices and value not in field.choices:
            raise store.ConfigError(f"{where} must be one of {', '.join(field.choices)}")
        return value
    if kind == "number":
        if isinstance(value, str) and re.fullmatch(r"[-+]?[0-9]+", value.strip()):
            return int(value)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise store.ConfigError(f"{where} must be a whole number")
    if kind == "usd":
        if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
            return float(value)
        raise store.ConfigError(f"{where} must be a number >= 0 (USD)")
    if kind == "flag":
        if isinstance(value, bool) or (isinstance(value, int) and value in (0, 1)):
            return bool(value)
        if isinstance(value, str):
            try:
                return setting_value(bool, value)
            except ValueError:
                pass
        raise store.ConfigError(f"{where} must be true or false")
    if kind == "texts":
        values = value if isinstance(value, list) else [value]
        return [_convert(item, _Field("text"), f"{where}[{index}]") for index, item in enumerate(values)]
    if kind == "tiers":
        if not isinstance(value, dict) or set(value) - set(TIERS):
            raise store.ConfigError(f"{where} must be a mapping of {', '.join(TIERS)} to model names")
        return {tier: _convert(model, _Field("text"), f"{where}.{tier}") for tier, model in value.items()
                if model is not None}
    raise AssertionError(kind)


def _describe(kind: type) -> str:
    return {bool: "true or false", int: "a whole number", float: "a number", str: "text", list: "a list",
            dict: "a mapping"}.get(kind, kind.__name__)


def import_config(db: sqlite_utils.Database, data: Any) -> list[str]:
    """Merge an exported config: providers by name, routes by pattern and provider, client keys by hash, users by
    name, capabilities by pattern, prices by pattern and provider, settings by name. The whole file is checked
    first and applied in one transaction: an error anywhere changes nothing. Returns what was done."""
    plan = validate(data)
    _check_references(db, plan)
    done: list[str] = []
    try:
        with db.atomic():
            _apply(db, plan, done)
    except sqlite3.Error as error:
        raise store.ConfigError(f"import failed and changed nothing: {error}") from None
    return done


def _check_references(db: sqlite_utils.Database, plan: dict[str, Any]) -> None:
    """What the types cannot tell: URLs, dates, and routes to providers (keys to owners) that neither the DB nor the
    file has."""
    for index, entry in enumerate(plan["providers"]):
        if not entry["base_url"].startswith(("http://", "https://")):
            raise store.ConfigError(f"providers[{index}] (name {entry['name']!r}): base_url must start with "
                                    "http:// or https://")
        if any(not key["key"].strip() for key in entry.get("keys", ())):
            raise store.ConfigError(f"providers[{index}] (name {entry['name']!r}): a key is empty")
    known = {row[0] for row in db.execute("SELECT name FROM providers")} | {p["name"] for p in plan["providers"]}
    for index, route in enumerate(plan["routes"]):
        if route["provider"] not in known:
            raise store.ConfigError(f"routes[{index}] (pattern {route['pattern']!r}): no provider named "
                                    f"{route['provider']!r} in the DB or the file")
    for index, key in enumerate(plan["client_keys"]):
        try:
            if key.get("expires_at"):
                date.fromisoformat(key["expires_at"][:10])
        except ValueError:
            raise store.ConfigError(f"client_keys[{index}] (name {key['name']!r}): expires_at must be a date, "
                                    "YYYY-MM-DD") from None
    users = {row[0] for row in db.execute("SELECT username FROM users")} | {
        user["username"] for user in plan["users"] if user.get("password_hash")}
    for index, key in enumerate(plan["client_keys"]):
        if key.get("owner") and key["owner"] not in users:
            raise store.ConfigError(f"client_keys[{index}] (name {key['name']!r}): no user named {key['owner']!r} "
                                    "in the DB or the file")


def _apply(db: sqlite_utils.Database, plan: dict[str, Any], done: list[str]) -> None:
    for entry in plan["providers"]:
        name = entry["name"]
        if not db.execute("SELECT 1 FROM providers WHERE name = ?", [name]).fetchone():
            provider_id = store.add_provider(db, ACTOR, name, entry["base_url"], entry.get("kind", "openai"),
                                             entry.get("api_version"), entry.get("models"),
                                             entry.get("key_strategy", "round-robin"), entry.get("fallback"))
            if not entry.get("enabled", True):
                db["providers"].update(provider_id, {"enabled": 0})
            done.append(f"provider {name} added")
        for key in entry.get("keys", ()):
            key_name = key.get("name", "default")
            key_id = store.set_provider_key(db, ACTOR, name, key["key"], key_name)
            if not key.get("enabled", True):
                db["provider_keys"].update(key_id, {"enabled": 0})
            done.append(f"key {key_name} of {name} stored")
    for route in plan["routes"]:
        pid = store.provider_id(db, route["provider"])
        if db.execute("SELECT 1 FROM routes WHERE pattern = ? AND provider_id = ?", [route["pattern"], pid]).fetchone():
            continue
        route_id = store.add_route(db, ACTOR, route["pattern"], route["provider"], route.get("model"),
                                   route.get("priority", 100), route.get("scenario"))
        if not route.get("enabled", True):
            db["routes"].update(route_id, {"enabled": 0})
        done.append(f"route {route['pattern']} → {route['provider']} added")
    for user in plan["users"]:  # before the client keys, which may name them as owners
        budgets = {column: user[column] for column in USER_COLUMNS if column in user}
        exists = db.execute("SELECT 1 FROM users WHERE username = ?", [user["username"]]).fetchone()
        if not exists and user.get("password_hash"):
            db["users"].insert({"username": user["username"], "password_hash": user["password_hash"],
                                "role": user.get("role", "viewer")})
            store.audit(db, ACTOR, "import user", "users", {"username": user["username"]})
            done.append(f"user {user['username']} imported")
            exists = True
        if exists and budgets:
            store.set_user_budgets(db, ACTOR, user["username"], **budgets)
            done.append(f"budgets of user {user['username']} set")
    for key in plan["client_keys"]:
        if not key.get("key_hash") or db.execute("SELECT 1 FROM client_keys WHERE key_hash = ?",
                                                 [key["key_hash"]]).fetchone():
            continue
        db["client_keys"].insert({"name": key["name"], "key_hash": key["key_hash"], "prefix": key.get("prefix", ""),
                                  "expires_at": key.get("expires_at"), "enabled": int(key.get("enabled", True)),
                                  "allowed_models": json.dumps(key["allowed_models"])
                                  if key.get("allowed_models") else None,
                                  **{column: key[column] for column in KEY_COLUMNS if column in key},
                                  **({"user_id": store.user_id(db, key["owner"])} if key.get("owner") else {})})
        store.audit(db, ACTOR, "import client key", "client_keys", {"name": key["name"]})
        done.append(f"client key {key['name']} imported")
    for entry in plan["model_capabilities"]:
        facts = {name: value for name, value in entry.items() if name != "pattern"}
        store.set_capabilities(db, ACTOR, entry["pattern"], **facts)
        done.append(f"capabilities of {entry['pattern']} set")
    for entry in plan["model_prices"]:
        prices = {name: value for name, value in entry.items() if name.endswith("_per_mtok")}
        store.set_price(db, ACTOR, entry["pattern"], entry.get("provider", ""), entry.get("notes"), **prices)
        done.append(f"price of {entry['pattern']} set")
    for name, value in plan["settings"].items():
        store.set_setting(db, ACTOR, name, value)
        done.append(f"setting {name} set")
