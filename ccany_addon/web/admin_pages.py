"""The admin pages: /-/admin (the config tables and the latest audit entries), /-/admin/providers (add a
provider, add or replace a key, re-enable a key, test the connection), /-/admin/client-keys and /-/admin/users.
Every change goes through config/store.py, which audits it."""

from __future__ import annotations

import re
import sqlite3
from datetime import date
from typing import TYPE_CHECKING

import sqlite_utils
from datasette.utils.asgi import Response

from ccany_addon.config import sessions, store
from ccany_addon.config.schema import KEY_STRATEGIES, PROVIDER_KINDS, ROLES
from ccany_addon.limits.key_limits import BUDGET_COLUMNS, LIMIT_COLUMNS, OVER_BUDGET_COLUMN
from ccany_addon.upstreams.models import TIERS
from ccany_addon.util.utc import utc_text
from ccany_addon.web import key_usage
from ccany_addon.web.accounts import require_admin, set_session
from ccany_addon.web.config_db import CONFIG_TABLES, config_db, write_config
from ccany_addon.web.forms import render
from ccany_addon.web.guard import ADMIN_ROW_WRITES
from ccany_addon.web.provider_probe import probe_provider

if TYPE_CHECKING:
    from datasette.app import Datasette
    from datasette.utils.asgi import Request

DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


async def admin_page(datasette: Datasette, request: Request) -> Response:
    require_admin(request)
    db = await config_db(datasette)
    count_all = " UNION ALL ".join(f"SELECT '{table}', count(*) FROM {table}" for table in CONFIG_TABLES)
    counts = dict((await db.execute(count_all)).rows)
    audit = [dict(row) for row in (await db.execute(
        "SELECT at, actor, action, target, details FROM audit ORDER BY id DESC LIMIT 15")).rows]
    tables = [{"name": table, "count": counts.get(table, 0), "url": datasette.urls.table(db.name, table),
               "editable": table in ADMIN_ROW_WRITES} for table in CONFIG_TABLES]
    return await render(datasette, request, "ccany_admin.html", {
        "tables": tables, "audit": audit, "audit_url": datasette.urls.table(db.name, "audit"),
        "database_url": datasette.urls.database(db.name),
    })


async def _providers_context(datasette: Datasette) -> dict:
    db = await config_db(datasette)
    providers = [dict(row) for row in (await db.execute(
        "SELECT id, name, kind, base_url, api_version, big_model, middle_model, small_model, enabled, key_strategy, "
        "fallback FROM providers ORDER BY name")).rows]
    keys = [dict(row) for row in (await db.execute(
        "SELECT id, provider_id, name, hint, enabled, created_at, cooling_until, disabled_reason, last_status, "
        "last_error, last_failure_at FROM provider_keys ORDER BY provider_id, id")).rows]
    now = utc_text()
    for key in keys:
        key["health"] = ("disabled" if not key["enabled"] else
                         "cooling" if (key["cooling_until"] or "") > now else "healthy")
    for provider in providers:
        provider["keys"] = [key for key in keys if key["provider_id"] == provider["id"]]
        provider["url"] = datasette.urls.row(db.name, "providers", str(provider["id"]))
    return {"providers": providers, "kinds": PROVIDER_KINDS, "strategies": KEY_STRATEGIES, "now": now,
            "providers_url": datasette.urls.table(db.name, "providers"),
            "keys_url": datasette.urls.table(db.name, "provider_keys"),
            "routes_url": datasette.urls.table(db.name, "routes")}


async def providers_page(datasette: Datasette, request: Request) -> Response:
    actor = require_admin(request)
    error = message = test = None
    if request.method == "POST":
        form = await request.post_vars()
        action = form.get("action")
        try:
            if action == "add-provider":
                models = {tier: form.get(f"{tier}_model", "").strip() or None for tier in TIERS}
                name = form.get("name", "").strip()
                if not name:
                    raise store.ConfigError("the provider needs a name")
                fallback = [part.strip() for part in form.get("fallback", "").split(",") if part.strip()]
                await write_config(datasette, request, lambda db: store.add_provider(
                    db, actor["id"], name, form.get("base_url", "").strip(), form.get("kind", "openai"),
                    form.get("api_version", "").strip() or None, {k: v for k, v in models.items() if v},
                    form.get("key_strategy", "round-robin"), fallback))
                message = f"Added provider {name}"
            elif action == "enable-key":
                key_id = int(form.get("key_id", "0"))
                await write_config(datasette, request, lambda db: store.set_key_enabled(db, actor["id"], key_id, True))
                message = "Re-enabled the key: the gateway uses it again within a second"
            elif action == "set-key":
                message = await _set_key(datasette, request, actor, form)
            elif action == "test":
                test = await probe_provider(datasette, form.get("provider_id", ""))
            else:
                raise store.ConfigError("unknown action")
        except (store.ConfigError, sqlite3.IntegrityError) as failure:
            error = str(failure)
    context = await _providers_context(datasette)
    context.update(error=error, message=message, test=test)
    return await render(datasette, request, "ccany_admin_providers.html", context, status=400 if error else 200)


async def _set_key(datasette: Datasette, request: Request, actor: dict, form: dict) -> str:
    provider, key = form.get("provider", ""), form.get("key", "")
    name = form.get("key_name", "").strip() or "default"
    replace = form.get("replace") == "1"
    set_key = store.replace_provider_key if replace else store.set_provider_key
    await write_config(datasette, request, lambda db: set_key(db, actor["id"], provider, key, name))
    return f"{'Replaced' if replace else 'Added'} key “{name}” of provider {provider}"


async def client_keys_page(datasette: Datasette, request: Request) -> Response:
    actor = require_admin(request)
    error = created = message = None
    if request.method == "POST" and (form := await request.post_vars()).get("action") == "limits":
        try:
            await write_config(datasette, request, lambda db: store.set_client_key_limits(
                db, actor["id"], form.get("name", ""), **_limits_fields(form)))
            message = f"Set the limits of {form.get('name', '')}"
        except (store.ConfigError, sqlite3.IntegrityError) as failure:
            error = str(failure)
    elif request.method == "POST":
        name = form.get("name", "").strip()
        expires = form.get("expires_at", "").strip() or None
        models = [m for m in re.split(r"[\s,]+", form.get("allowed_models", "")) if m] or None
        try:
            if not name:
                raise store.ConfigError("the key needs a name")
            if expires is not None:
                if not DATE.fullmatch(expires):
                    raise store.ConfigError("the expiry must be a date, YYYY-MM-DD")
                try:
                    date.fromisoformat(expires)
                except ValueError:
                    raise store.ConfigError(f"{expires} is not a date") from None
            key_id, key = await write_config(datasette, request, lambda db: store.create_client_key(
                db, actor["id"], name, expires, models))
            created = {"id": key_id, "name": name, "key": key, "expires_at": expires, "models": models}
        except store.ConfigError as failure:
            error = str(failure)
    db = await config_db(datasette)
    keys = [dict(row) for row in (await db.execute(
        f"SELECT {key_usage.KEY_SELECT}, k.expires_at, k.allowed_models, k.created_at FROM client_keys k "
        "LEFT JOIN users u ON u.id = k.user_id ORDER BY k.id")).rows]
    key_usage.with_spend(keys, await key_usage.spent_by_key(datasette, [key["id"] for key in keys]))
    for key in keys:
        key["url"] = datasette.urls.row(db.name, "client_keys", str(key["id"]))
    context = {"keys": keys, "created": created, "error": error, "message": message,
               "table_url": datasette.urls.table(db.name, "client_keys")}
    # The new key is in this page only: never cached, never stored.
    return await render(datasette, request, "ccany_admin_client_keys.html", context, status=400 if error else 200,
                        headers={"cache-control": "no-store"})


def _limits_fields(form: dict) -> dict[str, float | str | None]:
    """A key's limits typed into its row's form: each empty field is no limit."""
    limits: dict[str, float | str | None] = {
        column: _usd_field(form, column) if column.endswith("_usd") else _count_field(form, column)
        for column in LIMIT_COLUMNS}
    limits[OVER_BUDGET_COLUMN] = _text_field(form, OVER_BUDGET_COLUMN)
    limits["owner"] = _text_field(form, "owner")
    return limits


def _text_field(form: dict, name: str) -> str | None:
    return form.get(name, "").strip() or None


def _count_field(form: dict, name: str) -> int | None:
    text = form.get(name, "").strip()
    if not text:
        return None
    if not text.isdigit():
        raise store.ConfigError(f"{name.replace('_', ' ')} must be a whole number, or empty for none")
    return int(text)


def _usd_field(form: dict, name: str) -> float | None:
    """A budget typed into a form: USD, or empty for none."""
    text = form.get(name, "").strip().lstrip("$")
    if not text:
        return None
    try:
        return float(text)
    except ValueError:
        raise store.ConfigError(f"{name.replace('_', ' ')} must be an amount in USD, or empty for none") from None


async def users_page(datasette: Datasette, request: Request) -> Response:
    actor = require_admin(request)
    error = message = own_version = None
    if request.method == "POST":
        form = await request.post_vars()
        action, username = form.get("action"), form.get("username", "").strip()
        try:
            if action == "add":
                password = form.get("password", "")
                if not username:
                    raise store.ConfigError("the user needs a name")
                await write_config(datasette, request, lambda db: store.add_user(
                    db, actor["id"], username, password, form.get("role", "viewer")))
                message = f"Added user {username}"
            elif action in ("role", "disable", "enable"):
                await write_config(datasette, request, lambda db: store.change_user(db, actor["id"], action, username,
                                                                                   form.get("role", "")))
                message = f"Changed user {username}"
            elif action == "password":

                def set_password(db: sqlite_utils.Database) -> int | None:
                    store.set_password(db, actor["id"], username, form.get("password", ""))
                    return sessions.session_version(db, username)  # bumped: that user's sessions have ended

                version = await write_config(datasette, request, set_password)
                if username == actor["id"] and "token" not in actor:
                    own_version = version  # but not this browser's
                message = f"Set a new password for {username}; their sessions are logged out"
            elif action == "budgets":
                budgets: dict[str, float | str | None] = {c: _usd_field(form, c) for c in BUDGET_COLUMNS}
                budgets[OVER_BUDGET_COLUMN] = _text_field(form, OVER_BUDGET_COLUMN)
                await write_config(datasette, request, lambda db: store.set_user_budgets(
                    db, actor["id"], username, **budgets))
                message = f"Set the budgets of {username}"
            else:
                raise store.ConfigError("unknown action")
        except (store.ConfigError, sqlite3.IntegrityError) as failure:
            error = str(failure)
            if "UNIQUE constraint failed: users.username" in error:
                error = f"there is already a user named {username}"
    db = await config_db(datasette)
    users = [dict(row) for row in (await db.execute(
        "SELECT username, role, enabled, created_at, daily_budget_usd, monthly_budget_usd, over_budget_model "
        "FROM users ORDER BY username")).rows]
    response = await render(datasette, request, "ccany_admin_users.html", {
        "users": users, "roles": ROLES, "error": error, "message": message, "me": actor["id"],
    }, status=400 if error else 200)
    if own_version is not None:
        set_session(datasette, request, response, actor["id"], own_version)
    return response
