"""Writes to the config DB that need logic (hashing, generating, auditing), shared by the CLI and the
Datasette plugin. Every change is audited with who made it."""

from __future__ import annotations

import json
import time
from typing import Any

import sqlite_utils

from ccany_addon.config.schema import KEY_STRATEGIES, PROVIDER_KINDS, ROLES, SCENARIOS, SETTINGS
from ccany_addon.config.secrets import client_key_hash, hash_password, new_client_key


class ConfigError(ValueError):
    pass


def audit(db: sqlite_utils.Database, actor: str, action: str, target: str, details: dict | None = None) -> None:
    db["audit"].insert(
        {"actor": actor, "action": action, "target": target, "details": json.dumps(details) if details else None}
    )


def add_provider(db: sqlite_utils.Database, actor: str, name: str, base_url: str, kind: str = "openai",
                 api_version: str | None = None, models: dict[str, str] | None = None,
                 key_strategy: str = "round-robin", fallback: list[str] | None = None) -> int:
    if kind not in PROVIDER_KINDS:
        raise ConfigError(f"provider kind must be one of {', '.join(PROVIDER_KINDS)}")
    if key_strategy not in KEY_STRATEGIES:
        raise ConfigError(f"key strategy must be one of {', '.join(KEY_STRATEGIES)}")
    if not base_url.startswith(("http://", "https://")):
        raise ConfigError("base_url must start with http:// or https://")
    models = models or {}
    row = {"name": name, "kind": kind, "base_url": base_url.rstrip("/"), "api_version": api_version,
           **{f"{tier}_model": models.get(tier) for tier in ("big", "middle", "small")},
           "key_strategy": key_strategy, "fallback": ",".join(fallback) if fallback else None}
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


def record_key_failure(db: sqlite_utils.Database, key_id: int, status: int, message: str,
                       cooling_until: float | None, disabled_reason: str | None) -> None:
    """The gateway's view of a key's health, for Datasette and for other gateway processes."""
    row: dict[str, Any] = {"last_status": status, "last_error": message[:500],
                           "last_failure_at": _utc_text(time.time())}
    if cooling_until is not None:
        row["cooling_until"] = _utc_text(cooling_until)
    with db.atomic():
        if disabled_reason is not None:
            row.update(enabled=0, disabled_reason=disabled_reason)
            audit(db, "gateway", "disable provider key", f"provider_keys/{key_id}", {"reason": disabled_reason})
        db["provider_keys"].update(key_id, row)


def _utc_text(seconds: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(seconds))


def add_route(db: sqlite_utils.Database, actor: str, pattern: str, provider: str, upstream_model: str | None,
              priority: int = 100, scenario: str | None = None) -> int:
    if scenario is not None and scenario not in SCENARIOS:
        raise ConfigError(f"scenario must be one of {', '.join(SCENARIOS)}")
    pid = provider_id(db, provider)
    with db.atomic():
        route_id = db["routes"].insert({"pattern": pattern, "provider_id": pid, "upstream_model": upstream_model,
                                        "priority": priority, "scenario": scenario}).last_pk
        audit(db, actor, "add route", f"routes/{route_id}",
              {"pattern": pattern, "provider": provider, **({"scenario": scenario} if scenario else {})})
    return int(route_id)


def set_key_enabled(db: sqlite_utils.Database, actor: str, key_id: int, enabled: bool) -> None:
    """Re-enabling a key clears what disabled it and any cooldown (the schema's trigger)."""
    with db.atomic():
        db["provider_keys"].update(key_id, {"enabled": int(enabled)})
        audit(db, actor, "enable provider key" if enabled else "disable provider key", f"provider_keys/{key_id}")


def set_capabilities(db: sqlite_utils.Database, actor: str, pattern: str, **facts: Any) -> int:
    """Overrides of the built-in model capabilities for upstream models matching `pattern` (a glob)."""
    columns = {"max_output_tokens", "context_window", "vision", "tools", "reasoning", "max_tokens_field",
               "late_system", "prompt_cache_key", "structured_outputs", "xhigh_effort", "notes"}
    if unknown := set(facts) - columns:
        raise ConfigError(f"unknown capabilities: {', '.join(sorted(unknown))}")
    row = {"pattern": pattern, **{name: int(v) if isinstance(v, bool) else v for name, v in facts.items()}}
    with db.atomic():
        existing = db.execute("SELECT id FROM model_capabilities WHERE pattern = ?", [pattern]).fetchone()
        if existing is None:
            capability_id = db["model_capabilities"].insert(row).last_pk
        else:
            capability_id = existing[0]
            db["model_capabilities"].update(capability_id, row)
        audit(db, actor, "set model capabilities", f"model_capabilities/{capability_id}", facts)
    return int(capability_id)


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
