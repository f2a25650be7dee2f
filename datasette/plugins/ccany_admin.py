"""ccany's admin plugin: users, sessions, permissions and the config pages, over the config DB.

Loaded with `datasette serve --plugins-dir datasette/plugins` next to ccany.py (the flow log). The config DB is
whichever attached database holds the `provider_keys`, `client_keys` and `users` tables (ccany_addon/config/
schema.py); without one this plugin changes nothing.

Secrets, three layers deep:
- `prepare_connection` puts a SQLite authorizer on every Datasette connection: a read of a secret column
  (`SECRET_COLUMNS`: provider_keys.secret, client_keys.key_hash, users.password_hash) yields NULL, in any
  statement (table and row pages, JSON, CSV, facets, filters, sorting, SQL), for everyone, admins included. Only
  the key-encrypting triggers read `provider_keys.secret`. Pages that need a secret (login, the connection test)
  read it on a connection of their own. On the config DB it also registers `ccany_encrypt`/`ccany_hint`, so
  Datasette's row editor and JSON write API store only ciphertext (the schema's triggers call them).
- `permission_resources_sql`: arbitrary SQL, stored queries, downloads and schema changes are denied on the
  config DB for everyone; viewers never see provider_keys, client_keys or users; only admins write, and only
  where the row editor cannot break a secret (users are managed on /-/admin/users, client keys are created on
  /-/admin/client-keys). Once a user exists, anonymous visitors may do nothing (they are sent to /-/login).
- The actor: whoever a cookie or token names, the users table decides: `actor_from_request` wraps every other
  implementation and keeps an actor only if it names an enabled user, with that user's role. A deleted or
  disabled user's session ends at the next request; a changed role applies at once.

Pages: /-/setup (only while no user exists), /-/login, /-/logout (Datasette's own), /-/password, and for admins
/-/admin, /-/admin/providers (add a provider, add or replace a key, test the connection), /-/admin/client-keys
and /-/admin/users. Every change is audited (store.audit), and so are Datasette's own row edits of the config
DB (`track_event`).
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import json
import logging
import re
import sqlite3
import time
import weakref
from collections.abc import Callable
from contextlib import closing
from datetime import date
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import markupsafe
import sqlite_utils
from datasette import hookimpl
from datasette.events import LoginEvent
from datasette.permissions import PermissionSQL
from datasette.utils import await_me_maybe, baseconv
from datasette.utils.asgi import Forbidden, NotFound, Response

from ccany_addon.config import sessions, store
from ccany_addon.config.schema import (
    KEY_STRATEGIES,
    PROVIDER_KINDS,
    ROLES,
    SECRET_COLUMNS,
    SECRET_TABLES,
    register_functions,
)
from ccany_addon.config.secrets import Cipher, SecretError, hash_password, load_master_key, verify_password

logger = logging.getLogger("ccany")

MARKER_TABLES = ("provider_keys", "client_keys", "users")  # a database with all three is the config DB
CONFIG_TABLES = ("providers", "provider_keys", "routes", "model_capabilities", "client_keys", "users", "settings",
                 "audit")
SECRET_READS = frozenset((table, column) for table, columns in SECRET_COLUMNS.items() for column in columns)
ENCRYPT_TRIGGERS = frozenset({"provider_keys_encrypt_insert", "provider_keys_encrypt_update"})
# What an admin may do with Datasette's own row editor / JSON write API. Users (passwords must be hashed) are
# managed on /-/admin/users; client keys are generated on /-/admin/client-keys (editing one's name, expiry,
# models or enabled flag in place is fine); the audit log is append-only.
ADMIN_ROW_WRITES = {
    "providers": ("insert-row", "update-row", "delete-row"),
    "provider_keys": ("insert-row", "update-row", "delete-row"),
    "routes": ("insert-row", "update-row", "delete-row"),
    "model_capabilities": ("insert-row", "update-row", "delete-row"),
    "settings": ("insert-row", "update-row", "delete-row"),
    "client_keys": ("update-row", "delete-row"),
}
TABLE_CHANGES = ("insert-row", "update-row", "delete-row", "alter-table", "drop-table", "drop-view", "set-column-type")
# Never on the config DB, for anyone: SQL would read around the table rules, a download is the whole file.
NEVER_ON_CONFIG = ("execute-sql", "execute-write-sql", "store-query", "view-database-download", "create-table",
                   "create-view")
SESSION_SECONDS = 14 * 24 * 3600
TEST_TIMEOUT = 10.0


@functools.cache
def dummy_hash() -> str:
    """Checked when a login names no user, so that a wrong name takes as long as a wrong password."""
    return hash_password("ccany: no such user")


# ---------------------------------------------------------------------------------------------------------------
# Which database is the config DB, and whether anybody has an account yet


class State:  # not a dataclass: Datasette execs this file without a sys.modules entry, which dataclasses need
    def __init__(self) -> None:
        self.config: str | None = None  # the config DB's Datasette name
        self.looked_at: tuple[str, ...] = ()  # the database names seen when it was last looked for
        self.has_users = False  # refreshed on every request, by actor_from_request


_states: weakref.WeakKeyDictionary[Any, State] = weakref.WeakKeyDictionary()


def state(datasette) -> State:
    return _states.setdefault(datasette, State())


async def config_name(datasette) -> str | None:
    st = state(datasette)
    names = tuple(datasette.databases)
    if st.config in datasette.databases or names == st.looked_at:
        return st.config if st.config in datasette.databases else None
    st.config, st.looked_at = None, names
    for name, db in list(datasette.databases.items()):
        if name == "_internal" or db.is_memory:
            continue
        try:
            if all([await db.table_exists(table) for table in MARKER_TABLES]):
                st.config = name
                break
        except Exception:  # noqa: BLE001 - an unreadable file is simply not the config DB
            continue
    return st.config


async def config_db(datasette):
    name = await config_name(datasette)
    if name is None:
        raise NotFound("No config database: start Datasette with scripts/datasette, which attaches data/config.db")
    return datasette.get_database(name)


@hookimpl
def startup(datasette):
    async def inner():
        name = await config_name(datasette)
        if name is not None:
            row = (await datasette.get_database(name).execute("SELECT EXISTS (SELECT 1 FROM users)")).first()
            state(datasette).has_users = bool(row[0])

    return inner


# ---------------------------------------------------------------------------------------------------------------
# Connections: secret columns read as NULL everywhere; the config DB encrypts keys on write


def mask_secrets(action: int, table: str | None, column: str | None, _schema: str | None, source: str | None) -> int:
    if action == sqlite3.SQLITE_READ:
        if (table, column) in SECRET_READS and source not in ENCRYPT_TRIGGERS:
            return sqlite3.SQLITE_IGNORE  # the value reads as NULL, in the result and in WHERE/ORDER BY alike
        if table == "sqlite_dbpage":  # raw pages, where the extension is compiled in
            return sqlite3.SQLITE_DENY
    return sqlite3.SQLITE_OK


@hookimpl
def prepare_connection(conn, database, datasette):
    conn.set_authorizer(mask_secrets)
    try:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.DatabaseError:
        return
    db = datasette.databases.get(database)
    if not set(MARKER_TABLES) <= tables or db is None or not db.path:
        return
    conn.execute("PRAGMA secure_delete = ON")  # zero freed cells, such as a key row before its trigger ran
    try:
        cipher = Cipher(load_master_key(db.path, create=False))
    except SecretError as error:  # key writes then fail ("no such function: ccany_encrypt"): never plain text
        logger.warning(f"ccany: {error}; upstream keys cannot be written from Datasette")
        return
    register_functions(conn, cipher)


def _read_config(path: str, sql: str, params: dict | list) -> list[dict]:
    """Rows from the config DB on a private read-only connection, without the mask: secrets included."""
    with closing(sqlite3.connect(Path(path).resolve().as_uri() + "?mode=ro", uri=True)) as conn:
        conn.row_factory = sqlite3.Row
        return [dict(row) for row in conn.execute(sql, params)]


async def read_secrets(datasette, sql: str, params: dict | list) -> list[dict]:
    db = await config_db(datasette)
    return await asyncio.to_thread(_read_config, db.path, sql, params)


async def write_config(datasette, request, fn: Callable[[sqlite_utils.Database], Any]) -> Any:
    """Run `fn(db)` on Datasette's write connection to the config DB, in one transaction."""
    db = await config_db(datasette)
    return await db.execute_write_fn(lambda conn: fn(sqlite_utils.Database(conn)), request=request)


# ---------------------------------------------------------------------------------------------------------------
# Who is asking: the users table decides


@hookimpl(wrapper=True)
def actor_from_request(datasette, request):
    results = yield
    return [_resolve_actor(datasette, results)]


async def _resolve_actor(datasette, results: list) -> dict | None:
    actor, failure = None, None
    for result in results:  # await them all (a rejected token raises TokenInvalid: Datasette answers 401)
        try:
            value = await await_me_maybe(result)
        except Exception as error:  # noqa: BLE001 - re-raised below, once every coroutine was awaited
            failure = failure or error
            continue
        if value and actor is None:
            actor = value
    if failure is not None:
        raise failure
    name = await config_name(datasette)
    if name is None:
        return actor  # no config DB: no users to check against, nothing of ours to protect
    username = actor.get("id") if isinstance(actor, dict) else None
    row = (
        await datasette.get_database(name).execute(
            "SELECT EXISTS (SELECT 1 FROM users) AS has_users, "
            "(SELECT json_object('role', role, 'enabled', enabled, 'session_version', session_version) "
            "FROM users WHERE username = :username) AS user",
            {"username": username if isinstance(username, str) else None},
        )
    ).first()
    state(datasette).has_users = bool(row["has_users"])
    if actor is None:
        return None
    user = json.loads(row["user"]) if row["user"] else None
    if user is None and username == "root" and datasette.root_enabled:  # `datasette --root`: the console's operator
        return {**actor, "role": "admin"}
    if not user or not user["enabled"] or user["role"] not in ROLES:
        return None
    # A login cookie from before the user's last logout or password change is anonymous. API tokens carry no
    # version (Datasette signs them itself): they end with their expiry (max_signed_tokens_ttl) or a disabled user.
    if "token" not in actor and not sessions.cookie_is_current(actor, user["session_version"]):
        return None
    return {**sessions.without_version(actor), "id": username, "role": user["role"]}


def role_of(actor: dict | None) -> str | None:
    role = actor.get("role") if isinstance(actor, dict) else None
    return role if role in ROLES else None


# ---------------------------------------------------------------------------------------------------------------
# Permissions (Datasette 1.0a41: rules as SQL rows; child beats parent beats global; deny beats allow)

_rule_sets = itertools.count()


def rules_sql(sql: str, **params: Any) -> PermissionSQL:
    """Rules as SQL over Datasette's internal catalog; `:name` parameters are renamed apart (every plugin's rules
    share one parameter namespace)."""
    prefix = f"ccany_admin_{next(_rule_sets)}_"
    for name in sorted(params, key=len, reverse=True):
        sql = sql.replace(f":{name}", f":{prefix}{name}")
    return PermissionSQL(sql=sql, params={prefix + name: value for name, value in params.items()})


def deny_everything(reason: str, database: str | None = None) -> PermissionSQL:
    """A deny at every level (global, each database, each table, view and stored query), so that no `allow` block
    in datasette.yaml, however specific, outranks it (at one level, deny beats allow). Only in `database` if given."""
    where = "" if database is None else " WHERE database_name = :db"
    parts = [f"SELECT database_name AS parent, NULL AS child, 0 AS allow, :reason AS reason FROM catalog_databases"
             f"{where}",
             f"SELECT database_name, table_name, 0, :reason FROM catalog_tables{where}",
             f"SELECT database_name, view_name, 0, :reason FROM catalog_views{where}",
             f"SELECT database_name, name, 0, :reason FROM queries{where}"]
    if database is None:
        parts.insert(0, "SELECT NULL AS parent, NULL AS child, 0 AS allow, :reason AS reason")
    return rules_sql("\nUNION ALL\n".join(parts), reason=reason, db=database)


@hookimpl
def permission_resources_sql(datasette, actor, action):
    st = state(datasette)
    role = role_of(actor)
    if st.has_users and role is None:
        return deny_everything("ccany: log in first")
    config = st.config
    if config is None or config not in datasette.databases:
        return None
    if action in NEVER_ON_CONFIG:
        return deny_everything("ccany: never on the config DB (it holds hashes and ciphertext)", config)
    if action in ("view-database", "view-table", "view-query") and role is None:
        return deny_everything("ccany: the config DB is for logged-in users (create one at /-/setup)", config)
    if action == "view-table" and role != "admin":
        return rules_sql("SELECT :db AS parent, value AS child, 0 AS allow, :reason AS reason FROM json_each(:tables)",
                         db=config, tables=json.dumps(SECRET_TABLES), reason="ccany: admins only")
    if action in TABLE_CHANGES:
        allowed = [table for table, actions in ADMIN_ROW_WRITES.items() if action in actions] if role == "admin" else []
        return rules_sql(
            """SELECT :db AS parent, NULL AS child, 0 AS allow, :fixed AS reason
            UNION ALL
            SELECT database_name, table_name, table_name IN (SELECT value FROM json_each(:allowed)),
              CASE WHEN table_name IN (SELECT value FROM json_each(:allowed)) THEN :edit ELSE :fixed END
            FROM catalog_tables WHERE database_name = :db
            UNION ALL
            SELECT database_name, view_name, 0, :fixed FROM catalog_views WHERE database_name = :db""",
            db=config, allowed=json.dumps(allowed), edit="ccany: admin row edit",
            fixed="ccany: not editable (the config DB's schema is fixed; users and new client keys have pages)")
    return None


@hookimpl
def forbidden(datasette, request, message):
    """Once accounts exist, an anonymous browser is sent to the login page instead of a bare 403."""
    if request is None or request.actor or not state(datasette).has_users or request.method not in ("GET", "HEAD"):
        return None
    if request.path.endswith((".json", ".csv")) or "_shape" in request.args:
        return None
    return Response.redirect(datasette.urls.path("/-/login") + "?" + urlencode({"next": request.full_path}))


# ---------------------------------------------------------------------------------------------------------------
# Audit of Datasette's own writes to the config DB, and of logins


@hookimpl
def track_event(datasette, event):
    async def inner():
        name = state(datasette).config
        if name is None or name not in datasette.databases:
            return
        actor = event.actor.get("id") if isinstance(event.actor, dict) else None
        properties = event.properties()
        if event.name in ("login", "logout"):
            if actor is None:
                return
            target, details = f"users/{actor}", None
        elif properties.pop("database", None) == name:
            table = properties.pop("table", None) or properties.get("new_table")
            pks = properties.pop("pks", None)
            target = f"{table}/{','.join(map(str, pks))}" if pks else table
            for bulky in ("schema", "before_schema", "after_schema"):
                properties.pop(bulky, None)
            details = {"via": "datasette", **properties}
        else:
            return
        ends_sessions = event.name == "logout" and isinstance(actor, str) and "token" not in event.actor

        def write(conn: sqlite3.Connection) -> None:
            db = sqlite_utils.Database(conn)
            if ends_sessions:  # the browser drops its cookie; copies of it (other devices, a thief) die here
                sessions.end_sessions(db, actor)
            store.audit(db, str(actor or "(anonymous)"), event.name, target, details)

        await datasette.get_database(name).execute_write_fn(write)

    return inner


# ---------------------------------------------------------------------------------------------------------------
# How secrets look on Datasette's pages (the values themselves read as NULL)


@hookimpl
def render_cell(row, value, column, table, database, datasette):
    if database != state(datasette).config or column not in SECRET_COLUMNS.get(table, ()):
        return None
    try:
        if table == "provider_keys":
            text = f"encrypted, ends {row['hint']}" if row["hint"] else "encrypted"
        elif table == "client_keys":
            text = f"hashed, {row['prefix']}…"
        else:
            text = "hashed"
    except (IndexError, KeyError):
        text = "hidden"
    return markupsafe.Markup('<span class="ccany-secret" title="never shown">{}</span>').format(text)


@hookimpl
def extra_template_vars(datasette, request):
    async def inner():
        name = await config_name(datasette)
        actor = request.actor if request is not None else None
        return {
            "ccany_needs_setup": name is not None and not state(datasette).has_users,
            "ccany_setup_url": datasette.urls.path("/-/setup"),
            "ccany_role": role_of(actor),
        }

    return inner


@hookimpl
def menu_links(datasette, actor):
    links = []
    st = state(datasette)
    if st.config is not None and not st.has_users:
        links.append({"href": datasette.urls.path("/-/setup"), "label": "Set up: create the first admin"})
    role = role_of(actor)
    if role == "admin":
        links.append({"href": datasette.urls.path("/-/admin"), "label": "Gateway admin"})
    if role is not None and isinstance(actor, dict) and "token" not in actor:
        links.append({"href": datasette.urls.path("/-/password"), "label": "Change password"})
    return links


@hookimpl
def register_routes():
    return [
        (r"^/-/setup$", setup_page),
        (r"^/-/login$", login_page),
        (r"^/-/password$", password_page),
        (r"^/-/admin$", admin_page),
        (r"^/-/admin/providers$", providers_page),
        (r"^/-/admin/client-keys$", client_keys_page),
        (r"^/-/admin/users$", users_page),
    ]


# ---------------------------------------------------------------------------------------------------------------
# Page helpers


async def render(datasette, request, template: str, context: dict, status: int = 200,
                 headers: dict | None = None) -> Response:
    html = await datasette.render_template(template, context, request=request, view_name="ccany-admin")
    return Response.html(html, status=status, headers=headers)


def set_session(datasette, request, response: Response, username: str, version: int) -> None:
    """Datasette's signed `ds_actor` cookie, in the format `datasette.set_actor_cookie` writes, but HttpOnly (page
    scripts never need it), kept by the browser for as long as it is valid, and holding the user's session
    version (sessions.py: a logout or a password change ends it)."""
    expires = baseconv.base62.encode(int(time.time()) + SESSION_SECONDS)
    value = datasette.sign({"a": {"id": username, sessions.VERSION_KEY: version}, "e": expires}, "actor")
    response.set_cookie("ds_actor", value, max_age=SESSION_SECONDS, httponly=True, samesite="lax",
                        secure=request.scheme == "https")


def safe_next(datasette, value: str | None) -> str:
    """Only a path on this site: never `//elsewhere`, `/<TAB>/elsewhere` or an absolute URL."""
    return sessions.safe_next(value, datasette.urls.instance())


def require_actor(request) -> dict:
    if role_of(request.actor) is None:
        raise Forbidden("Log in first")
    return request.actor


def require_admin(request) -> dict:
    actor = require_actor(request)
    if actor["role"] != "admin":
        raise Forbidden("Admins only")
    return actor


def form_field(name: str, label: str, kind: str = "text", autocomplete: str = "off", value: str = "",
               required: bool = True, note: str = "") -> dict:
    return {"name": name, "label": label, "type": kind, "autocomplete": autocomplete, "value": value,
            "required": required, "note": note}


async def form_page(datasette, request, *, title: str, intro: str, fields: list[dict], submit: str,
                    error: str | None = None, status: int = 200, hidden: dict | None = None) -> Response:
    return await render(datasette, request, "ccany_form.html", {
        "title": title, "intro": intro, "fields": fields, "submit": submit, "error": error,
        "hidden": hidden or {}, "action": request.path,
    }, status=status)


async def has_users(datasette) -> bool:
    db = await config_db(datasette)
    has = bool((await db.execute("SELECT EXISTS (SELECT 1 FROM users)")).first()[0])
    state(datasette).has_users = has
    return has


# ---------------------------------------------------------------------------------------------------------------
# /-/setup, /-/login, /-/password


def _account_fields(username: str = "") -> list[dict]:
    return [
        form_field("username", "Username", value=username, autocomplete="username"),
        form_field("password", "Password (at least 8 characters)", "password", "new-password"),
        form_field("password2", "Password again", "password", "new-password"),
    ]


async def setup_page(datasette, request):
    if await has_users(datasette):
        raise NotFound("Set-up is done: log in at /-/login")
    title = "Set up ccany: the first admin"
    intro = ("Nobody has an account yet, so anyone who can reach this address can read the flow log. Create the "
             "first admin: from then on every page needs a login.")
    if request.method != "POST":
        return await form_page(datasette, request, title=title, intro=intro, fields=_account_fields(),
                               submit="Create the admin account")
    form = await request.post_vars()
    username = form.get("username", "").strip()
    error = _check_new_password(form.get("password", ""), form.get("password2", ""))
    if not username:
        error = "Choose a username"
    if error is None:

        def create(db: sqlite_utils.Database) -> None:
            if db.execute("SELECT EXISTS (SELECT 1 FROM users)").fetchone()[0]:
                raise store.ConfigError("someone finished the set-up first: log in instead")
            store.add_user(db, username, username, form["password"], role="admin")

        try:
            await write_config(datasette, request, create)
        except store.ConfigError as failure:
            error = str(failure)
    if error is not None:
        return await form_page(datasette, request, title=title, intro=intro, fields=_account_fields(username),
                               submit="Create the admin account", error=error, status=400)
    state(datasette).has_users = True
    response = Response.redirect(datasette.urls.path("/-/admin"))
    set_session(datasette, request, response, username, 0)
    await datasette.track_event(LoginEvent(actor={"id": username, "role": "admin"}))
    return response


def _check_new_password(password: str, again: str) -> str | None:
    if len(password) < 8:
        return "Passwords need at least 8 characters"
    if password != again:
        return "The two passwords differ"
    return None


async def login_page(datasette, request):
    if not await has_users(datasette):
        return Response.redirect(datasette.urls.path("/-/setup"))
    next_url = safe_next(datasette, request.args.get("next"))
    fields = [form_field("username", "Username", autocomplete="username"),
              form_field("password", "Password", "password", "current-password")]
    title, intro = "Log in", "Log in to read the gateway's flow log and, as an admin, to configure it."
    if request.method != "POST":
        if role_of(request.actor):
            return Response.redirect(next_url)
        return await form_page(datasette, request, title=title, intro=intro, fields=fields, submit="Log in",
                               hidden={"next": next_url})
    form = await request.post_vars()
    username = form.get("username", "").strip()
    next_url = safe_next(datasette, form.get("next"))
    fields[0]["value"] = username
    throttle = sessions.throttle_for(datasette)
    client = request.scope.get("client")
    address = client[0] if client else None
    wait = throttle.retry_after(username, address)
    if wait:  # checked before the password, which is then not even hashed
        response = await form_page(
            datasette, request, title=title, intro=intro, fields=fields, submit="Log in", hidden={"next": next_url},
            error=f"Too many failed logins for this user or from this address: try again in {wait} seconds",
            status=429)
        response.headers["retry-after"] = str(wait)
        return response
    rows = await read_secrets(datasette, "SELECT username, password_hash, role, enabled, session_version FROM users "
                                         "WHERE username = ?", [username])
    user = rows[0] if rows else None
    ok = await asyncio.to_thread(verify_password, form.get("password", ""),
                                 user["password_hash"] if user else dummy_hash())
    if not (ok and user and user["enabled"]):
        throttle.failed(username, address)
        return await form_page(datasette, request, title=title, intro=intro, fields=fields, submit="Log in",
                               hidden={"next": next_url}, error="Wrong username or password", status=401)
    throttle.succeeded(username)
    response = Response.redirect(next_url)
    set_session(datasette, request, response, user["username"], user["session_version"])
    await datasette.track_event(LoginEvent(actor={"id": user["username"], "role": user["role"]}))
    return response


async def password_page(datasette, request):
    actor = require_actor(request)
    fields = [form_field("current", "Current password", "password", "current-password"),
              form_field("password", "New password (at least 8 characters)", "password", "new-password"),
              form_field("password2", "New password again", "password", "new-password")]
    title, intro = "Change your password", f"Logged in as {actor['id']}."
    if request.method != "POST":
        return await form_page(datasette, request, title=title, intro=intro, fields=fields, submit="Change password")
    form = await request.post_vars()
    rows = await read_secrets(datasette, "SELECT password_hash FROM users WHERE username = ?", [actor["id"]])
    current_ok = bool(rows) and await asyncio.to_thread(verify_password, form.get("current", ""),
                                                        rows[0]["password_hash"])
    error = None if current_ok else "The current password is wrong"
    error = error or _check_new_password(form.get("password", ""), form.get("password2", ""))
    version = None
    if error is None:

        def change(db: sqlite_utils.Database) -> int | None:
            store.set_password(db, actor["id"], actor["id"], form["password"])
            return sessions.session_version(db, actor["id"])  # bumped by the change: every other session ends

        try:
            version = await write_config(datasette, request, change)
        except store.ConfigError as failure:
            error = str(failure)
    if error is not None:
        return await form_page(datasette, request, title=title, intro=intro, fields=fields,
                               submit="Change password", error=error, status=400)
    datasette.add_message(request, "Your password was changed; your other sessions are logged out", datasette.INFO)
    response = Response.redirect(datasette.urls.instance())
    if version is not None and "token" not in actor:  # this browser stays logged in
        set_session(datasette, request, response, actor["id"], version)
    return response


# ---------------------------------------------------------------------------------------------------------------
# /-/admin and its pages


async def admin_page(datasette, request):
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


async def _providers_context(datasette) -> dict:
    db = await config_db(datasette)
    providers = [dict(row) for row in (await db.execute(
        "SELECT id, name, kind, base_url, api_version, big_model, middle_model, small_model, enabled, key_strategy, "
        "fallback FROM providers ORDER BY name")).rows]
    keys = [dict(row) for row in (await db.execute(
        "SELECT id, provider_id, name, hint, enabled, created_at, cooling_until, disabled_reason, last_status, "
        "last_error, last_failure_at FROM provider_keys ORDER BY provider_id, id")).rows]
    now = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())
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


async def providers_page(datasette, request):
    actor = require_admin(request)
    error = message = test = None
    if request.method == "POST":
        form = await request.post_vars()
        action = form.get("action")
        try:
            if action == "add-provider":
                models = {tier: form.get(f"{tier}_model", "").strip() or None for tier in ("big", "middle", "small")}
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
                test = await _test_provider(datasette, form.get("provider_id", ""))
            else:
                raise store.ConfigError("unknown action")
        except (store.ConfigError, sqlite3.IntegrityError) as failure:
            error = str(failure)
    context = await _providers_context(datasette)
    context.update(error=error, message=message, test=test)
    return await render(datasette, request, "ccany_admin_providers.html", context, status=400 if error else 200)


async def _set_key(datasette, request, actor: dict, form: dict) -> str:
    provider, key = form.get("provider", ""), form.get("key", "")
    name = form.get("key_name", "").strip() or "default"
    replace = form.get("replace") == "1"

    def set_key(db: sqlite_utils.Database) -> int:
        with db.atomic():
            if replace:
                pid = store.provider_id(db, provider)
                old = [row[0] for row in db.execute(
                    "SELECT id FROM provider_keys WHERE provider_id = ? AND name = ?", [pid, name]).fetchall()]
                for key_id in old:
                    db.execute("DELETE FROM provider_keys WHERE id = ?", [key_id])
                    store.audit(db, actor["id"], "delete provider key", f"provider_keys/{key_id}",
                                {"provider": provider, "name": name, "replaced": True})
            return store.set_provider_key(db, actor["id"], provider, key, name)

    await write_config(datasette, request, set_key)
    return f"{'Replaced' if replace else 'Added'} key “{name}” of provider {provider}"


async def _test_provider(datasette, provider_id: str) -> dict:
    """GET {base_url}/models with the provider's first enabled key: the status and the first model ids."""
    rows = await read_secrets(datasette, """SELECT p.name, p.base_url, k.name AS key_name, k.hint, k.secret
        FROM providers p LEFT JOIN provider_keys k ON k.provider_id = p.id AND k.enabled
        WHERE p.id = ? ORDER BY k.id LIMIT 1""", [provider_id])
    if not rows:
        raise store.ConfigError("no such provider")
    row = rows[0]
    result: dict[str, Any] = {"provider": row["name"], "url": row["base_url"].rstrip("/") + "/models",
                              "key": f"{row['key_name']} ({row['hint']})" if row["secret"] else "none"}
    headers = {"accept": "application/json"}
    key = None
    if row["secret"]:
        try:
            db = await config_db(datasette)
            key = Cipher(load_master_key(db.path, create=False)).decrypt(row["secret"])
        except SecretError as failure:
            return {**result, "ok": False, "error": f"cannot decrypt the key: {failure}"}
        headers["authorization"] = f"Bearer {key}"
    started = time.monotonic()
    try:
        async with httpx.AsyncClient(timeout=TEST_TIMEOUT, follow_redirects=False, trust_env=False) as client:
            response = await client.get(result["url"], headers=headers)
    except httpx.HTTPError as failure:
        return {**result, "ok": False, "error": _scrub(f"{type(failure).__name__}: {failure}", key)}
    result.update(status=response.status_code, ms=round((time.monotonic() - started) * 1000))
    try:
        body = response.json()
    except ValueError:
        body = None
    if response.is_success and isinstance(body, dict) and isinstance(body.get("data"), list):
        ids = [str(item.get("id")) for item in body["data"] if isinstance(item, dict)]
        return {**result, "ok": True, "count": len(ids), "models": ids[:10]}
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        error = error.get("message")
    return {**result, "ok": False, "error": _scrub(str(error or response.text[:500] or response.reason_phrase), key)}


def _scrub(text: str, key: str | None) -> str:
    return text.replace(key, "[key]") if key else text


DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


async def client_keys_page(datasette, request):
    actor = require_admin(request)
    error = created = None
    if request.method == "POST":
        form = await request.post_vars()
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
        "SELECT id, name, prefix, expires_at, allowed_models, enabled, created_at FROM client_keys ORDER BY id")).rows]
    for key in keys:
        key["url"] = datasette.urls.row(db.name, "client_keys", str(key["id"]))
    context = {"keys": keys, "created": created, "error": error,
               "table_url": datasette.urls.table(db.name, "client_keys")}
    # The new key is in this page only: never cached, never stored.
    return await render(datasette, request, "ccany_admin_client_keys.html", context, status=400 if error else 200,
                        headers={"cache-control": "no-store"})


async def users_page(datasette, request):
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
                await write_config(datasette, request, lambda db: _change_user(db, actor["id"], action, username,
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
            else:
                raise store.ConfigError("unknown action")
        except (store.ConfigError, sqlite3.IntegrityError) as failure:
            error = str(failure)
            if "UNIQUE constraint failed: users.username" in error:
                error = f"there is already a user named {username}"
    db = await config_db(datasette)
    users = [dict(row) for row in (await db.execute(
        "SELECT username, role, enabled, created_at FROM users ORDER BY username")).rows]
    response = await render(datasette, request, "ccany_admin_users.html", {
        "users": users, "roles": ROLES, "error": error, "message": message, "me": actor["id"],
    }, status=400 if error else 200)
    if own_version is not None:
        set_session(datasette, request, response, actor["id"], own_version)
    return response


def _change_user(db: sqlite_utils.Database, actor: str, action: str, username: str, role: str) -> None:
    """Role changes and (dis)abling, never leaving the gateway without an enabled admin."""
    with db.atomic():
        losing_admin = action == "disable" or (action == "role" and role != "admin")
        if losing_admin:
            others = db.execute("SELECT count(*) FROM users WHERE role = 'admin' AND enabled AND username != ?",
                                [username]).fetchone()[0]
            if not others:
                raise store.ConfigError("that would leave no enabled admin")
        if action == "role":
            store.set_role(db, actor, username, role)
        else:
            store.set_user_enabled(db, actor, username, action == "enable")
