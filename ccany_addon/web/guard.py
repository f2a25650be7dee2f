"""The permission guard over the config DB: secret columns read as NULL on every connection, and the rules for who
may see and change what.

- `prepare_connection` puts a SQLite authorizer on every Datasette connection: a read of a secret column
  (`SECRET_COLUMNS`: provider_keys.secret, client_keys.key_hash, users.password_hash) yields NULL, in any
  statement (table and row pages, JSON, CSV, facets, filters, sorting, SQL), for everyone, admins included. Only
  the key-encrypting triggers read `provider_keys.secret`. Pages that need a secret (login, the connection test)
  read it on a connection of their own (config_db.read_secrets). On the config DB it also registers
  `ccany_encrypt`/`ccany_hint`, so Datasette's row editor and JSON write API store only ciphertext (the schema's
  triggers call them).
- `permission_rules`: arbitrary SQL, stored queries, downloads and schema changes are denied on the config DB for
  everyone; viewers never see provider_keys, client_keys or users; only admins write, and only where the row
  editor cannot break a secret (users are managed on /-/admin/users, client keys are created on
  /-/admin/client-keys). Once a user exists, anonymous visitors may do nothing (they are sent to /-/login).
"""

from __future__ import annotations

import itertools
import json
import logging
import sqlite3
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from datasette.permissions import PermissionSQL
from datasette.utils.asgi import Response

from ccany_addon.config.schema import ROLES, SECRET_COLUMNS, SECRET_TABLES, register_functions
from ccany_addon.config.secrets import Cipher, SecretError, load_master_key
from ccany_addon.web.config_db import MARKER_TABLES, state

if TYPE_CHECKING:
    from datasette.app import Datasette
    from datasette.utils.asgi import Request

logger = logging.getLogger("ccany")

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
    "model_prices": ("insert-row", "update-row", "delete-row"),
    "settings": ("insert-row", "update-row", "delete-row"),
    "client_keys": ("update-row", "delete-row"),
}
TABLE_CHANGES = ("insert-row", "update-row", "delete-row", "alter-table", "drop-table", "drop-view", "set-column-type")
# Never on the config DB, for anyone: SQL would read around the table rules, a download is the whole file.
NEVER_ON_CONFIG = ("execute-sql", "execute-write-sql", "store-query", "view-database-download", "create-table",
                   "create-view")


def role_of(actor: dict | None) -> str | None:
    role = actor.get("role") if isinstance(actor, dict) else None
    return role if role in ROLES else None


# ---------------------------------------------------------------------------------------------------------------
# Connections: secret columns read as NULL everywhere; the config DB encrypts keys on write


def mask_secrets(action: int, table: str | None, column: str | None, _schema: str | None, source: str | None) -> int:
    if action == sqlite3.SQLITE_READ:
        if (table, column) in SECRET_READS and source not in ENCRYPT_TRIGGERS:
            return sqlite3.SQLITE_IGNORE  # the value reads as NULL, in the result and in WHERE/ORDER BY alike
        if table == "sqlite_dbpage":  # raw pages, where the extension is compiled in
            return sqlite3.SQLITE_DENY
    return sqlite3.SQLITE_OK


def prepare_connection(conn: sqlite3.Connection, database: str, datasette: Datasette) -> None:
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


def permission_rules(datasette: Datasette, actor: dict | None, action: str) -> PermissionSQL | None:
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


def login_redirect(datasette: Datasette, request: Request | None) -> Response | None:
    """Once accounts exist, an anonymous browser is sent to the login page instead of a bare 403."""
    if request is None or request.actor or not state(datasette).has_users or request.method not in ("GET", "HEAD"):
        return None
    if request.path.endswith((".json", ".csv")) or "_shape" in request.args:
        return None
    return Response.redirect(datasette.urls.path("/-/login") + "?" + urlencode({"next": request.full_path}))
