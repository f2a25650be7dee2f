"""Headless configuration: `python -m ccany_addon.config …` (or `ccany-config …`).

Secrets never go on the command line, where a process list would show them: keys and passwords are read
from an environment variable named with `--from-env`, or from standard input.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from pathlib import Path
from typing import Any

import yaml

from ccany_addon.config import store
from ccany_addon.config.schema import (
    KEY_STRATEGIES,
    PROVIDER_KINDS,
    ROLES,
    SCENARIOS,
    SETTINGS,
    open_config_db,
)
from ccany_addon.config.secrets import Cipher, SecretError, load_master_key
from ccany_addon.config.snapshot import allowed_models

ACTOR = "cli"


def _secret(args: argparse.Namespace, what: str) -> str:
    if args.from_env:
        value = os.environ.get(args.from_env, "")
        if not value:
            raise store.ConfigError(f"{args.from_env} is empty or not set")
        return value
    if sys.stdin.isatty():
        return getpass.getpass(f"{what}: ")
    return sys.stdin.readline().rstrip("\n")


def export_config(db, cipher: Cipher | None, with_secrets: bool) -> dict[str, Any]:
    providers = []
    for row in db["providers"].rows_where(order_by="id"):
        entry: dict[str, Any] = {
            "name": row["name"], "kind": row["kind"], "base_url": row["base_url"], "api_version": row["api_version"],
            "enabled": bool(row["enabled"]),
            "models": {tier: row[f"{tier}_model"] for tier in ("big", "middle", "small") if row[f"{tier}_model"]},
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
    client_keys = [{"name": row["name"], "prefix": row["prefix"], "expires_at": row["expires_at"],
                    "allowed_models": list(allowed_models(row["allowed_models"])) or None,
                    "enabled": bool(row["enabled"]), **({"key_hash": row["key_hash"]} if with_secrets else {})}
                   for row in db["client_keys"].rows_where(order_by="id")]
    users = [{"username": row["username"], "role": row["role"],
              **({"password_hash": row["password_hash"]} if with_secrets else {})}
             for row in db["users"].rows_where(order_by="id")]
    settings = {row["name"]: row["value"] for row in db["settings"].rows_where(order_by="name")}
    return {"providers": providers, "routes": routes, "client_keys": client_keys, "users": users,
            "settings": settings, "model_capabilities": capabilities}


def import_config(db, data: dict[str, Any]) -> list[str]:
    """Merge an exported config: providers by name, routes by pattern and provider, client keys by hash,
    users by name, settings by name. Returns what was done."""
    done: list[str] = []
    for entry in data.get("providers") or []:
        existing = db.execute("SELECT id FROM providers WHERE name = ?", [entry["name"]]).fetchone()
        if existing is None:
            store.add_provider(db, ACTOR, entry["name"], entry["base_url"], entry.get("kind", "openai"),
                               entry.get("api_version"), entry.get("models"),
                               entry.get("key_strategy", "round-robin"), entry.get("fallback"))
            done.append(f"provider {entry['name']} added")
        for key in entry.get("keys") or []:
            store.set_provider_key(db, ACTOR, entry["name"], key["key"], key.get("name", "default"))
            done.append(f"key {key.get('name', 'default')} of {entry['name']} stored")
    for route in data.get("routes") or []:
        pid = store.provider_id(db, route["provider"])
        if db.execute("SELECT 1 FROM routes WHERE pattern = ? AND provider_id = ?", [route["pattern"], pid]).fetchone():
            continue
        store.add_route(db, ACTOR, route["pattern"], route["provider"], route.get("model"), route.get("priority", 100),
                        route.get("scenario"))
        done.append(f"route {route['pattern']} → {route['provider']} added")
    for key in data.get("client_keys") or []:
        if not key.get("key_hash") or db.execute("SELECT 1 FROM client_keys WHERE key_hash = ?",
                                                 [key["key_hash"]]).fetchone():
            continue
        with db.atomic():
            db["client_keys"].insert({"name": key["name"], "key_hash": key["key_hash"], "prefix": key.get("prefix", ""),
                                      "expires_at": key.get("expires_at"), "enabled": int(key.get("enabled", True)),
                                      "allowed_models": json.dumps(key["allowed_models"])
                                      if key.get("allowed_models") else None})
            store.audit(db, ACTOR, "import client key", "client_keys", {"name": key["name"]})
        done.append(f"client key {key['name']} imported")
    for user in data.get("users") or []:
        if not user.get("password_hash") or db.execute("SELECT 1 FROM users WHERE username = ?",
                                                       [user["username"]]).fetchone():
            continue
        with db.atomic():
            db["users"].insert({"username": user["username"], "password_hash": user["password_hash"],
                                "role": user.get("role", "viewer")})
            store.audit(db, ACTOR, "import user", "users", {"username": user["username"]})
        done.append(f"user {user['username']} imported")
    for entry in data.get("model_capabilities") or []:
        facts = {name: value for name, value in entry.items() if name != "pattern"}
        store.set_capabilities(db, ACTOR, entry["pattern"], **facts)
        done.append(f"capabilities of {entry['pattern']} set")
    for name, value in (data.get("settings") or {}).items():
        store.set_setting(db, ACTOR, name, value)
        done.append(f"setting {name} set")
    return done


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ccany-config", description="Edit ccany's config DB without a browser.")
    parser.add_argument("--db", default=os.environ.get("CCANY_CONFIG_DB", "data/config.db"),
                        help="the config DB (default: $CCANY_CONFIG_DB or data/config.db)")
    commands = parser.add_subparsers(dest="command", required=True)

    provider = commands.add_parser("provider-add", help="add an upstream provider")
    provider.add_argument("name")
    provider.add_argument("--base-url", required=True, help="e.g. https://api.openai.com/v1")
    provider.add_argument("--kind", default="openai", choices=PROVIDER_KINDS)
    provider.add_argument("--api-version")
    for tier in ("big", "middle", "small"):
        provider.add_argument(f"--{tier}-model")
    provider.add_argument("--key-strategy", default="round-robin", choices=KEY_STRATEGIES)
    provider.add_argument("--fallback", help="comma-separated providers to use while every key cools down")

    key = commands.add_parser("key-set", help="store an upstream key for a provider (encrypted)")
    key.add_argument("provider")
    key.add_argument("--name", default="default")
    key.add_argument("--from-env", metavar="VAR", help="read the key from this environment variable (else stdin)")

    route = commands.add_parser("route-add", help="route client models matching a pattern to a provider")
    route.add_argument("pattern", help="a glob over the requested model, e.g. '*haiku*'")
    route.add_argument("provider")
    route.add_argument("--model", help="upstream model (default: the provider's tier models)")
    route.add_argument("--priority", type=int, default=100, help="lower wins (default 100)")
    route.add_argument("--scenario", choices=SCENARIOS, help="apply only to requests in this scenario")

    client = commands.add_parser("client-key-create", help="create a client access key (printed once)")
    client.add_argument("name")
    client.add_argument("--expires", help="last valid day, YYYY-MM-DD")
    client.add_argument("--models", help="comma-separated model patterns this key may use")

    user = commands.add_parser("user-add", help="add a Datasette user")
    user.add_argument("username")
    user.add_argument("--role", default="viewer", choices=ROLES)
    user.add_argument("--from-env", metavar="VAR", help="read the password from this variable (else stdin)")

    password = commands.add_parser("user-password", help="set a user's password")
    password.add_argument("username")
    password.add_argument("--from-env", metavar="VAR", help="read the password from this variable (else stdin)")

    setting = commands.add_parser("setting", help="set a tunable (empty value: remove it)")
    setting.add_argument("name", choices=sorted(SETTINGS))
    setting.add_argument("value")

    export = commands.add_parser("export", help="write the whole config as YAML")
    export.add_argument("file", nargs="?", help="default: standard output")
    export.add_argument("--with-secrets", action="store_true", help="include upstream keys, key and password hashes")

    load = commands.add_parser("import", help="merge a YAML config written by export")
    load.add_argument("file")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        cipher = Cipher(load_master_key(args.db))
        db = open_config_db(args.db, cipher)
        out = _run(args, db, cipher)
    except (store.ConfigError, SecretError) as error:
        print(f"ccany-config: {error}", file=sys.stderr)
        return 1
    if out:
        print(out)
    return 0


def _run(args: argparse.Namespace, db, cipher: Cipher) -> str:
    match args.command:
        case "provider-add":
            models = {tier: getattr(args, f"{tier}_model") for tier in ("big", "middle", "small")}
            fallback = [name.strip() for name in args.fallback.split(",")] if args.fallback else None
            pid = store.add_provider(db, ACTOR, args.name, args.base_url, args.kind, args.api_version,
                                     {tier: model for tier, model in models.items() if model}, args.key_strategy,
                                     fallback)
            return f"provider {args.name} added (id {pid})"
        case "key-set":
            key_id = store.set_provider_key(db, ACTOR, args.provider, _secret(args, "upstream key"), args.name)
            return f"key {args.name} of {args.provider} stored encrypted (id {key_id})"
        case "route-add":
            route_id = store.add_route(db, ACTOR, args.pattern, args.provider, args.model, args.priority,
                                       args.scenario)
            return f"route {args.pattern} → {args.provider} added (id {route_id})"
        case "client-key-create":
            models = [part.strip() for part in args.models.split(",")] if args.models else None
            key_id, key = store.create_client_key(db, ACTOR, args.name, args.expires, models)
            return f"client key {args.name} (id {key_id}); shown this once, store it now:\n{key}"
        case "user-add":
            user_id = store.add_user(db, ACTOR, args.username, _secret(args, "password"), args.role)
            return f"user {args.username} ({args.role}) added (id {user_id})"
        case "user-password":
            store.set_password(db, ACTOR, args.username, _secret(args, "new password"))
            return f"password of {args.username} changed"
        case "setting":
            store.set_setting(db, ACTOR, args.name, args.value or None)
            return f"{args.name} = {args.value or '(default)'}"
        case "export":
            text = yaml.safe_dump(export_config(db, cipher, args.with_secrets), sort_keys=False, allow_unicode=True)
            if not args.file:
                return text.rstrip("\n")
            path = Path(args.file)
            path.write_text(text)
            if args.with_secrets:
                path.chmod(0o600)
            return f"config written to {path}" + (" (with secrets: keep it private)" if args.with_secrets else "")
        case "import":
            data = yaml.safe_load(Path(args.file).read_text()) or {}
            return "\n".join(import_config(db, data)) or "nothing new to import"
    raise AssertionError(args.command)
