"""Which attached database is the config DB, whether anybody has an account yet, and the two ways the pages reach
the config DB besides Datasette's own reads: secrets on a private connection, writes through config/store.py."""

from __future__ import annotations

import asyncio
import sqlite3
import weakref
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlite_utils
from datasette.utils.asgi import NotFound

if TYPE_CHECKING:
    from datasette.app import Datasette
    from datasette.database import Database
    from datasette.utils.asgi import Request

MARKER_TABLES = ("provider_keys", "client_keys", "users")  # a database with all three is the config DB
CONFIG_TABLES = ("providers", "provider_keys", "routes", "model_capabilities", "model_prices", "client_keys", "users",
                 "settings", "audit")


@dataclass
class State:
    config: str | None = None  # the config DB's Datasette name
    looked_at: tuple[str, ...] = ()  # the database names seen when it was last looked for
    has_users: bool = False  # refreshed on every request, by the actor hook (accounts.resolve_actor)


_states: weakref.WeakKeyDictionary[Datasette, State] = weakref.WeakKeyDictionary()


def state(datasette: Datasette) -> State:
    return _states.setdefault(datasette, State())


async def config_name(datasette: Datasette) -> str | None:
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


async def config_db(datasette: Datasette) -> Database:
    name = await config_name(datasette)
    if name is None:
        raise NotFound("No config database: start Datasette with scripts/datasette, which attaches data/config.db")
    return datasette.get_database(name)


async def refresh_has_users(datasette: Datasette) -> None:
    """At start-up: whether the set-up is still to do (the menu and the permission rules ask before any request)."""
    name = await config_name(datasette)
    if name is not None:
        row = (await datasette.get_database(name).execute("SELECT EXISTS (SELECT 1 FROM users)")).first()
        state(datasette).has_users = bool(row[0])


async def has_users(datasette: Datasette) -> bool:
    db = await config_db(datasette)
    has = bool((await db.execute("SELECT EXISTS (SELECT 1 FROM users)")).first()[0])
    state(datasette).has_users = has
    return has


def _read_config(path: str, sql: str, params: dict | list) -> list[dict]:
    """Rows from the config DB on a private read-only connection, without the mask: secrets included."""
    with closing(sqlite3.connect(Path(path).resolve().as_uri() + "?mode=ro", uri=True)) as conn:
        conn.row_factory = sqlite3.Row
        return [dict(row) for row in conn.execute(sql, params)]


async def read_secrets(datasette: Datasette, sql: str, params: dict | list) -> list[dict]:
    db = await config_db(datasette)
    return await asyncio.to_thread(_read_config, db.path, sql, params)


async def write_config(datasette: Datasette, request: Request | None,
                       fn: Callable[[sqlite_utils.Database], Any]) -> Any:
    """Run `fn(db)` on Datasette's write connection to the config DB, in one transaction. `fn` calls config/store.py,
    where every write to the config DB lives."""
    db = await config_db(datasette)
    return await db.execute_write_fn(lambda conn: fn(sqlite_utils.Database(conn)), request=request)
