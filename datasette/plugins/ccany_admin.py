"""ccany's admin plugin: users, sessions, permissions and the config pages, over the config DB.

Loaded with `datasette serve --plugins-dir datasette/plugins` next to ccany.py (the flow log); Datasette executes
this file as a top-level module, so it holds only the hooks, over the ccany_addon.web package. The config DB is
whichever attached database holds the `provider_keys`, `client_keys` and `users` tables (ccany_addon/config/
schema.py); without one this plugin changes nothing.

- Secrets read as NULL on every connection, and who may see and change what: ccany_addon/web/guard.py.
- The actor is whoever the users table says (a deleted or disabled user is anonymous at the next request):
  ccany_addon/web/accounts.py, with /-/setup (only while no user exists), /-/login and /-/password.
- For admins, /-/admin, /-/admin/providers, /-/admin/client-keys and /-/admin/users: ccany_addon/web/
  admin_pages.py. Every change goes through config/store.py and is audited; so are Datasette's own row edits of
  the config DB, logins and logouts (`track_event`: ccany_addon/web/audit.py).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Callable, Generator
from typing import Any

import markupsafe
from datasette import hookimpl
from datasette.permissions import PermissionSQL
from datasette.utils.asgi import Response

from ccany_addon.web import accounts, admin_pages, audit, cells, config_db, guard, key_usage


@hookimpl
def startup(datasette: Any) -> Callable[[], Awaitable[None]]:
    async def inner() -> None:
        await config_db.refresh_has_users(datasette)

    return inner


@hookimpl
def prepare_connection(conn: sqlite3.Connection, database: str, datasette: Any) -> None:
    guard.prepare_connection(conn, database, datasette)


@hookimpl(wrapper=True)
def actor_from_request(datasette: Any, request: Any) -> Generator[None, list, list]:
    results = yield
    return [accounts.resolve_actor(datasette, results)]


@hookimpl
def permission_resources_sql(datasette: Any, actor: dict | None, action: str) -> PermissionSQL | None:
    return guard.permission_rules(datasette, actor, action)


@hookimpl
def forbidden(datasette: Any, request: Any, message: str) -> Response | None:
    return guard.login_redirect(datasette, request)


@hookimpl
def track_event(datasette: Any, event: Any) -> Callable[[], Awaitable[None]]:
    async def inner() -> None:
        await audit.record(datasette, event)

    return inner


@hookimpl
def render_cell(row: Any, value: Any, column: str, table: str | None, database: str,
                datasette: Any) -> markupsafe.Markup | None:
    if database != config_db.state(datasette).config:
        return None
    return cells.secret_cell(row, table, column)


@hookimpl
def extra_template_vars(datasette: Any, request: Any) -> Callable[[], Awaitable[dict[str, Any]]]:
    async def inner() -> dict[str, Any]:
        return await accounts.template_vars(datasette, request)

    return inner


@hookimpl
def menu_links(datasette: Any, actor: dict | None) -> list[dict[str, str]]:
    return accounts.menu_links(datasette, actor)


@hookimpl
def register_routes() -> list[tuple[str, Callable]]:
    return [
        (r"^/-/setup$", accounts.setup_page),
        (r"^/-/login$", accounts.login_page),
        (r"^/-/password$", accounts.password_page),
        (r"^/-/admin$", admin_pages.admin_page),
        (r"^/-/admin/providers$", admin_pages.providers_page),
        (r"^/-/admin/client-keys$", admin_pages.client_keys_page),
        (r"^/-/admin/users$", admin_pages.users_page),
        (r"^/-/my-keys$", key_usage.my_keys_page),
    ]
