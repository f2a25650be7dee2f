"""Writes to the config DB that need logic (hashing, generating, auditing), shared by the CLI and the
Datasette plugin. Every change is audited with who made it."""

from __future__ import annotations

import json
from typing import Any

import sqlite_utils

from ccany_addon.config.schema import PROVIDER_KINDS, ROLES, SETTINGS
from ccany_addon.config.secrets import client_key_hash, hash_password, new_client_key


class ConfigError(ValueError):
    pass


def audit(db: sqlite_utils.Database, actor: str, action: str, target: str, details: dict | None = None) -> None:
    db["audit"].insert(
        {"actor": actor, "action": action, "target": target, "details": json.dumps(details) if details else None}
    )


def add_provider(db: sqlite_utils.Database, actor: str, name: str, base_url: str, kind: str = "openai",
                 api_version: str | None = None, models: dict[str, str] | None = None) -> int:
    if kind not in PROVIDER_KINDS:
        raise ConfigError(f"provider kind must be one of {', '.join(PROVIDER_KINDS)}")
    if not base_url.startswith(("http://", "https://")):
        raise ConfigError("base_url must start with http:// or https://")
    models = models or {}
    row = {"name": name, "kind": kind, "base_url": base_url.rstrip("/"), "api_version": api_version,
           **{f"{tier}_model": models.get(tier) for tier in ("big", "middle", "small")}}
    with db.atomic():
        provider_id = db["providers"].insert(row).last_pk
        audit(db, actor, "add provider", f"providers/{provider_id}", {"name": name, "base_url": base_url})
    return int(provider_id)


def provider_id(db: sqlite_utils.Database, name: str) -> int:
    row = db.execute("SELECT id FROM providers WHERE name = ?", [name]).fetchone()
    if row is None:
        raise ConfigError(f"no provider named {name!r}")
    return int(row[0])


def set_provider_key(db: sqlite_utils.Database, actor: str, provider: str, key: str, name: str = "default") -> int:
    """Store an upstream key; the schema's trigger encrypts it before the transaction commits."""
    if not key.strip():
        raise ConfigError("the key is empty")
    pid = provider_id(db, provider)
    with db.atomic():
        key_id = db["provider_keys"].insert({"provider_id": pid, "name": name, "secret": key.strip()}).last_pk
        audit(db, actor, "set provider key", f"provider_keys/{key_id}", {"provider": provider, "name": name})
    return int(key_id)


def add_route(db: sqlite_utils.Database, actor: str, pattern: str, provider: str, upstream_model: str | None,
              priority: int = 100) -> int:
    pid = provider_id(db, provider)
    with db.atomic():
        route_id = db["routes"].insert(
            {"pattern": pattern, "provider_id": pid, "upstream_model": upstream_model, "priority": priority}
        ).last_pk
        audit(db, actor, "add route", f"routes/{route_id}", {"pattern": pattern, "provider": provider})
    return int(route_id)


def create_client_key(db: sqlite_utils.Database, actor: str, name: str, expires_at: str | None = None,
                      allowed_models: list[str] | None = None) -> tuple[int, str]:
    """A new client access key: returns (id, key). The key is shown this once; only its hash is stored."""
    key = new_client_key()
    row = {"name": name, "key_hash": client_key_hash(key), "prefix": key[:10], "expires_at": expires_at,
           "allowed_models": json.dumps(allowed_models) if allowed_models else None}
    with db.atomic():
        key_id = db["client_keys"].insert(row).last_pk
        audit(db, actor, "create client key", f"client_keys/{key_id}", {"name": name})
    return int(key_id), key


def add_user(db: sqlite_utils.Database, actor: str, username: str, password: str, role: str = "viewer") -> int:
    if role not in ROLES:
        raise ConfigError(f"role must be one of {', '.join(ROLES)}")
    if len(password) < 8:
        raise ConfigError("passwords need at least 8 characters")
    with db.atomic():
        user_id = db["users"].insert(
            {"username": username, "password_hash": hash_password(password), "role": role}
        ).last_pk
        audit(db, actor, "add user", f"users/{user_id}", {"username": username, "role": role})
    return int(user_id)


def set_password(db: sqlite_utils.Database, actor: str, username: str, password: str) -> None:
    if len(password) < 8:
        raise ConfigError("passwords need at least 8 characters")
    with db.atomic():
        changed = db.execute(
            "UPDATE users SET password_hash = ? WHERE username = ?", [hash_password(password), username]
        ).rowcount
        if not changed:
            raise ConfigError(f"no user named {username!r}")
        audit(db, actor, "set password", f"users/{username}")


def set_role(db: sqlite_utils.Database, actor: str, username: str, role: str) -> None:
    if role not in ROLES:
        raise ConfigError(f"role must be one of {', '.join(ROLES)}")
    with db.atomic():
        if not db.execute("UPDATE users SET role = ? WHERE username = ?", [role, username]).rowcount:
            raise ConfigError(f"no user named {username!r}")
        audit(db, actor, "set role", f"users/{username}", {"role": role})


def set_user_enabled(db: sqlite_utils.Database, actor: str, username: str, enabled: bool) -> None:
    """A disabled user cannot log in; the row stays, so the audit trail keeps its name."""
    with db.atomic():
        if not db.execute("UPDATE users SET enabled = ? WHERE username = ?", [int(enabled), username]).rowcount:
            raise ConfigError(f"no user named {username!r}")
        audit(db, actor, "enable user" if enabled else "disable user", f"users/{username}")


def set_setting(db: sqlite_utils.Database, actor: str, name: str, value: Any) -> None:
    if name not in SETTINGS:
        raise ConfigError(f"unknown setting {name!r}; known: {', '.join(SETTINGS)}")
    with db.atomic():
        db["settings"].upsert({"name": name, "value": None if value is None else str(value)}, pk="name")
        audit(db, actor, "set setting", f"settings/{name}", {"value": value})
