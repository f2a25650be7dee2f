"""Every write to the config DB that needs logic (hashing, generating, auditing, checking), shared by the CLI and
the Datasette pages (ccany_addon/web): they change the config only through these functions. Every change is audited
with who made it."""

from __future__ import annotations

import json
import time
from typing import Any

import sqlite_utils

from ccany_addon.config import sessions
from ccany_addon.config.schema import KEY_STRATEGIES, PROVIDER_KINDS, ROLES, SCENARIOS, SETTINGS
from ccany_addon.config.secrets import client_key_hash, hash_password, new_client_key
from ccany_addon.limits.key_limits import BUDGET_COLUMNS, LIMIT_COLUMNS, OVER_BUDGET_COLUMN
from ccany_addon.upstreams.models import TIERS
from ccany_addon.util.utc import utc_text

MIN_PASSWORD_LENGTH = 8


class ConfigError(ValueError):
    pass


def audit(db: sqlite_utils.Database, actor: str, action: str, target: str | None,
          details: dict | None = None) -> None:
    db["audit"].insert(
        {"actor": actor, "action": action, "target": target, "details": json.dumps(details) if details else None}
    )


def record_event(db: sqlite_utils.Database, actor: str, action: str, target: str | None,
                 details: dict | None = None, end_sessions_of: str | None = None) -> None:
    """An event Datasette reports (a login, a logout, its own row edit of the config DB), audited; a logout also
    ends every session of `end_sessions_of`, so copies of the cookie (other devices, a thief) die with it."""
    with db.atomic():
        if end_sessions_of is not None:
            sessions.end_sessions(db, end_sessions_of)
        audit(db, actor, action, target, details)


def password_problem(password: str) -> str | None:
    """The one password rule, for the CLI and the Datasette pages alike: what is wrong with it, or None."""
    if len(password) < MIN_PASSWORD_LENGTH:
        return f"passwords need at least {MIN_PASSWORD_LENGTH} characters"
    return None


def _check_password(password: str) -> None:
    if problem := password_problem(password):
        raise ConfigError(problem)


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
           **{f"{tier}_model": models.get(tier) for tier in TIERS},
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


def replace_provider_key(db: sqlite_utils.Database, actor: str, provider: str, key: str,
                         name: str = "default") -> int:
    """Store an upstream key in place of the provider's keys of that name (each removal audited)."""
    with db.atomic():
        pid = provider_id(db, provider)
        old = [row[0] for row in db.execute(
            "SELECT id FROM provider_keys WHERE provider_id = ? AND name = ?", [pid, name]).fetchall()]
        for key_id in old:
            db.execute("DELETE FROM provider_keys WHERE id = ?", [key_id])
            audit(db, actor, "delete provider key", f"provider_keys/{key_id}",
                  {"provider": provider, "name": name, "replaced": True})
        return set_provider_key(db, actor, provider, key, name)


def record_key_failure(db: sqlite_utils.Database, key_id: int, status: int, message: str,
                       cooling_until: float | None, disabled_reason: str | None) -> None:
    """The gateway's view of a key's health, for Datasette and for other gateway processes."""
    row: dict[str, Any] = {"last_status": status, "last_error": message[:500],
                           "last_failure_at": utc_text(time.time())}
    if cooling_until is not None:
        row["cooling_until"] = utc_text(cooling_until)
    with db.atomic():
        if disabled_reason is not None:
            row.update(enabled=0, disabled_reason=disabled_reason)
            audit(db, "gateway", "disable provider key", f"provider_keys/{key_id}", {"reason": disabled_reason})
        db["provider_keys"].update(key_id, row)


def enable_switched_key(db: sqlite_utils.Database, name: str, at: float) -> None:
    """Another gateway process sharing state saw key `provider/key name` re-enabled at `at`: re-enable it here if
    a gateway disabled it (not an admin, by hand) no later than that."""
    with db.atomic():
        rows = db.execute(
            "SELECT k.id FROM provider_keys k JOIN providers p ON p.id = k.provider_id "
            "WHERE p.name || '/' || k.name = ? AND NOT k.enabled AND k.disabled_reason IS NOT NULL "
            "AND coalesce(k.last_failure_at, '') <= ?", [name, utc_text(at)]).fetchall()
        for (key_id,) in rows:
            db["provider_keys"].update(key_id, {"enabled": 1})
            audit(db, "gateway", "enable provider key", f"provider_keys/{key_id}",
                  {"reason": "re-enabled in another gateway process sharing state"})


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


PRICE_COLUMNS = ("input_per_mtok", "output_per_mtok", "cache_read_per_mtok", "cache_write_per_mtok")


def set_price(db: sqlite_utils.Database, actor: str, pattern: str, provider: str = "",
              notes: str | None = None, **prices: float | None) -> int:
    """The price, in USD per million tokens, of upstream models matching `pattern` (a glob) at `provider` (a
    provider's name; empty: any), instead of the maintained price table's. Input and output are required; a cache
    price left out costs as much as input."""
    if unknown := set(prices) - set(PRICE_COLUMNS):
        raise ConfigError(f"unknown prices: {', '.join(sorted(unknown))}")
    for name in PRICE_COLUMNS[:2]:
        if prices.get(name) is None:
            raise ConfigError(f"a price needs {name.removesuffix('_per_mtok')} (USD per million tokens)")
    for name, value in prices.items():
        if value is not None and (not isinstance(value, int | float) or value < 0 or value != value):
            raise ConfigError(f"{name.removesuffix('_per_mtok')} must be a number >= 0, not {value!r}")
    if not pattern:
        raise ConfigError("a price needs a model pattern")
    row = {"pattern": pattern, "provider": provider, "notes": notes,
           **{name: prices.get(name) for name in PRICE_COLUMNS}}
    with db.atomic():
        existing = db.execute("SELECT id FROM model_prices WHERE pattern = ? AND provider = ?",
                              [pattern, provider]).fetchone()
        if existing is None:
            price_id = db["model_prices"].insert(row).last_pk
        else:
            price_id = existing[0]
            db["model_prices"].update(price_id, row)
        audit(db, actor, "set model price", f"model_prices/{price_id}", {k: v for k, v in row.items() if v is not None})
    return int(price_id)


def remove_price(db: sqlite_utils.Database, actor: str, pattern: str, provider: str = "") -> None:
    with db.atomic():
        found = db.execute("SELECT id FROM model_prices WHERE pattern = ? AND provider = ?",
                           [pattern, provider]).fetchone()
        if found is None:
            raise ConfigError(f"no price for {pattern}" + (f" at {provider}" if provider else ""))
        db["model_prices"].delete(found[0])
        audit(db, actor, "remove model price", f"model_prices/{found[0]}", {"pattern": pattern, "provider": provider})


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


_KEEP = object()  # an owner argument left out: the key keeps its owner


def set_client_key_limits(db: sqlite_utils.Database, actor: str, name: str, owner: str | None | object = _KEEP,
                          **limits: float | str | None) -> int:
    """Limits and budgets of the client key named `name` (None clears one): `rpm_limit`, `tpm_limit`,
    `max_streams`, `daily_budget_usd`, `monthly_budget_usd`, and `over_budget_model` (over a budget, the model its
    requests get instead of a refusal); and its `owner`, a username (None: no owner), whose budgets all their keys
    spend together. Returns the key's id."""
    _check_limits(limits, LIMIT_COLUMNS)
    with db.atomic():
        found = db.execute("SELECT id FROM client_keys WHERE name = ?", [name]).fetchall()
        if len(found) != 1:
            raise ConfigError(f"no client key named {name!r}" if not found
                              else f"{len(found)} client keys are named {name!r}; rename all but one")
        key_id = found[0][0]
        change: dict[str, object] = dict(limits)
        if owner is not _KEEP:
            change["user_id"] = None if owner is None else user_id(db, str(owner))
        db["client_keys"].update(key_id, change)
        audit(db, actor, "set client key limits", f"client_keys/{key_id}",
              {**limits, **({"owner": owner} if owner is not _KEEP else {})})
    return int(key_id)


def set_user_budgets(db: sqlite_utils.Database, actor: str, username: str, **budgets: float | str | None) -> None:
    """A user's `daily_budget_usd` and `monthly_budget_usd` (None clears one), spent by all their client keys,
    and `over_budget_model`: over one of them, the model their requests get instead of a refusal."""
    _check_limits(budgets, BUDGET_COLUMNS)
    with db.atomic():
        found = user_id(db, username)
        db["users"].update(found, budgets)
        audit(db, actor, "set user budgets", f"users/{found}", budgets)


def user_id(db: sqlite_utils.Database, username: str) -> int:
    found = db.execute("SELECT id FROM users WHERE username = ?", [username]).fetchone()
    if found is None:
        raise ConfigError(f"no user named {username!r}")
    return int(found[0])


def _check_limits(limits: dict[str, Any], known: tuple[str, ...]) -> None:
    if unknown := set(limits) - {*known, OVER_BUDGET_COLUMN}:
        raise ConfigError(f"unknown limits: {', '.join(sorted(unknown))}")
    for column, value in limits.items():
        if column == OVER_BUDGET_COLUMN:
            if value is not None and (not isinstance(value, str) or not value.strip() or len(value) > 200):
                raise ConfigError(f"{OVER_BUDGET_COLUMN} must be a model name, as a client would ask for it")
            continue
        usd = column.endswith("_usd")
        if value is not None and (not isinstance(value, int | float) or isinstance(value, bool) or value < 0
                                  or value != value or (not usd and value != int(value))):
            raise ConfigError(f"{column} must be a {'number' if usd else 'whole number'} >= 0")


def add_user(db: sqlite_utils.Database, actor: str, username: str, password: str, role: str = "viewer") -> int:
    if role not in ROLES:
        raise ConfigError(f"role must be one of {', '.join(ROLES)}")
    _check_password(password)
    with db.atomic():
        user_id = db["users"].insert(
            {"username": username, "password_hash": hash_password(password), "role": role}
        ).last_pk
        audit(db, actor, "add user", f"users/{user_id}", {"username": username, "role": role})
    return int(user_id)


def add_first_admin(db: sqlite_utils.Database, username: str, password: str) -> int:
    """The set-up's admin, who creates their own account: only while nobody has one (two set-ups racing: one wins)."""
    with db.atomic():
        if db.execute("SELECT EXISTS (SELECT 1 FROM users)").fetchone()[0]:
            raise ConfigError("someone finished the set-up first: log in instead")
        return add_user(db, username, username, password, role="admin")


def set_password(db: sqlite_utils.Database, actor: str, username: str, password: str) -> None:
    _check_password(password)
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


def change_user(db: sqlite_utils.Database, actor: str, action: str, username: str, role: str = "") -> None:
    """`action` "role" (to `role`), "disable" or "enable", never leaving the gateway without an enabled admin."""
    with db.atomic():
        losing_admin = action == "disable" or (action == "role" and role != "admin")
        if losing_admin:
            others = db.execute("SELECT count(*) FROM users WHERE role = 'admin' AND enabled AND username != ?",
                                [username]).fetchone()[0]
            if not others:
                raise ConfigError("that would leave no enabled admin")
        if action == "role":
            set_role(db, actor, username, role)
        else:
            set_user_enabled(db, actor, username, action == "enable")


def set_setting(db: sqlite_utils.Database, actor: str, name: str, value: Any) -> None:
    if name not in SETTINGS:
        raise ConfigError(f"unknown setting {name!r}; known: {', '.join(SETTINGS)}")
    with db.atomic():
        db["settings"].upsert({"name": name, "value": None if value is None else str(value)}, pk="name")
        audit(db, actor, "set setting", f"settings/{name}", {"value": value})
