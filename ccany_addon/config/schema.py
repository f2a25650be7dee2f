"""The one place that knows the config DB's schema (`ccany_config_db`, default `data/config.db`).

Upstream keys are written through triggers that call `ccany_encrypt()`: whoever inserts or updates a key in
plain text (Datasette's row editor, a form, the CLI, a script), the row holds only ciphertext when the
transaction commits, so no plaintext page ever reaches the file. The function exists only on connections
opened with the master key (`open_config_db`); anywhere else such a write fails instead of storing plain text.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import sqlite_utils

# Tunables a setting row may hold (config/options.py): each is also a `ccany_*` option; the command line wins.
from ccany_addon.config.options import SETTINGS  # noqa: F401
from ccany_addon.config.secrets import Cipher, hint
from ccany_addon.upstreams.kinds import KIND_NAMES
from ccany_addon.util.private_files import create_private
from ccany_addon.util.sqlite_migrations import migrate, sql_script

# The dialects the gateway speaks (checked by store, not SQL: the list grows).
PROVIDER_KINDS = KIND_NAMES
ROLES = ("admin", "viewer")
KEY_STRATEGIES = ("round-robin", "fill-first")
# Conditions a route may add to its model pattern (see ccany_addon/upstreams/routing.py).
SCENARIOS = ("background", "thinking", "long_context", "web_search", "image")

# Tables whose columns a viewer may never read, and the columns an admin sees only masked.
SECRET_TABLES = ("provider_keys", "client_keys", "users")
SECRET_COLUMNS = {"provider_keys": ("secret",), "client_keys": ("key_hash",), "users": ("password_hash",)}

def _listed(values: tuple[str, ...]) -> str:
    return ", ".join(f"'{value}'" for value in values)


_NOW = "strftime('%Y-%m-%d %H:%M:%S', 'now')"

_V1 = f"""
CREATE TABLE providers (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL DEFAULT 'openai' CHECK (kind IN ('openai')),
    base_url TEXT NOT NULL,
    api_version TEXT,
    big_model TEXT,
    middle_model TEXT,
    small_model TEXT,
    enabled INTEGER NOT NULL DEFAULT 1,
    created_at TEXT NOT NULL DEFAULT ({_NOW})
);
CREATE TABLE provider_keys (
    id INTEGER PRIMARY KEY,
    provider_id INTEGER NOT NULL REFERENCES providers(id) ON DELETE CASCADE,
    name TEXT NOT NULL DEFAULT 'default',
    secret TEXT NOT NULL,
    hint TEXT,
    enabled INTEGER NOT NULL DEFAULT 1,
    created_at TEXT NOT NULL DEFAULT ({_NOW})
);
CREATE TRIGGER provider_keys_encrypt_insert AFTER INSERT ON provider_keys
WHEN NEW.secret NOT LIKE 'enc:v1:%'
BEGIN
    UPDATE provider_keys SET hint = ccany_hint(NEW.secret), secret = ccany_encrypt(NEW.secret) WHERE id = NEW.id;
END;
CREATE TRIGGER provider_keys_encrypt_update AFTER UPDATE OF secret ON provider_keys
WHEN NEW.secret NOT LIKE 'enc:v1:%'
BEGIN
    UPDATE provider_keys SET hint = ccany_hint(NEW.secret), secret = ccany_encrypt(NEW.secret) WHERE id = NEW.id;
END;
CREATE TABLE routes (
    id INTEGER PRIMARY KEY,
    pattern TEXT NOT NULL,
    provider_id INTEGER NOT NULL REFERENCES providers(id) ON DELETE CASCADE,
    upstream_model TEXT,
    priority INTEGER NOT NULL DEFAULT 100,
    enabled INTEGER NOT NULL DEFAULT 1
);
CREATE TABLE client_keys (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    key_hash TEXT NOT NULL UNIQUE,
    prefix TEXT NOT NULL,
    expires_at TEXT,
    allowed_models TEXT,
    enabled INTEGER NOT NULL DEFAULT 1,
    created_at TEXT NOT NULL DEFAULT ({_NOW})
);
CREATE TABLE users (
    id INTEGER PRIMARY KEY,
    username TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    role TEXT NOT NULL DEFAULT 'viewer' CHECK (role IN ({_listed(ROLES)})),
    created_at TEXT NOT NULL DEFAULT ({_NOW})
);
CREATE TABLE settings (
    name TEXT PRIMARY KEY,
    value TEXT
);
CREATE TABLE audit (
    id INTEGER PRIMARY KEY,
    at TEXT NOT NULL DEFAULT ({_NOW}),
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT,
    details TEXT
);
"""

# Users can be disabled (kept for the audit trail, but they cannot log in).
_V2 = """
ALTER TABLE users ADD COLUMN enabled INTEGER NOT NULL DEFAULT 1;
"""

# The kinds grow with every dialect: providers.kind loses its CHECK. SQLite's table rebuild, run while foreign
# keys are off (open_config_db turns them on after migrating), so dropping the old table cascades nothing.
_V3 = f"""
CREATE TABLE providers_v3 (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL DEFAULT 'openai',
    base_url TEXT NOT NULL,
    api_version TEXT,
    big_model TEXT,
    middle_model TEXT,
    small_model TEXT,
    enabled INTEGER NOT NULL DEFAULT 1,
    created_at TEXT NOT NULL DEFAULT ({_NOW})
);
INSERT INTO providers_v3 SELECT id, name, kind, base_url, api_version, big_model, middle_model, small_model,
    enabled, created_at FROM providers;
DROP TABLE providers;
ALTER TABLE providers_v3 RENAME TO providers;
"""

# Key pools and routing: how a provider picks among its keys, where it falls back when all of them are cooling
# down, each key's health as the gateway saw it (re-enabling a key clears what disabled it), scenario routes,
# and per-model capabilities that override the built-in ones (NULL: the built-in value).
_V4 = f"""
ALTER TABLE providers ADD COLUMN key_strategy TEXT NOT NULL DEFAULT 'round-robin'
    CHECK (key_strategy IN ({_listed(KEY_STRATEGIES)}));
ALTER TABLE providers ADD COLUMN fallback TEXT;
ALTER TABLE provider_keys ADD COLUMN cooling_until TEXT;
ALTER TABLE provider_keys ADD COLUMN disabled_reason TEXT;
ALTER TABLE provider_keys ADD COLUMN last_status INTEGER;
ALTER TABLE provider_keys ADD COLUMN last_error TEXT;
ALTER TABLE provider_keys ADD COLUMN last_failure_at TEXT;
CREATE TRIGGER provider_keys_reenabled AFTER UPDATE OF enabled ON provider_keys
WHEN NEW.enabled AND NOT OLD.enabled
BEGIN
    UPDATE provider_keys SET disabled_reason = NULL, cooling_until = NULL WHERE id = NEW.id;
END;
ALTER TABLE routes ADD COLUMN scenario TEXT
    CHECK (scenario IS NULL OR scenario IN ({_listed(SCENARIOS)}));
CREATE TABLE model_capabilities (
    id INTEGER PRIMARY KEY,
    pattern TEXT NOT NULL UNIQUE,
    max_output_tokens INTEGER,
    context_window INTEGER,
    vision INTEGER,
    tools INTEGER,
    reasoning INTEGER,
    max_tokens_field TEXT
        CHECK (max_tokens_field IS NULL OR max_tokens_field IN ('max_tokens', 'max_completion_tokens')),
    late_system INTEGER,
    notes TEXT
);
"""

# Revocable Datasette sessions: the login cookie carries the user's session version, and a cookie whose version is
# not the current one is anonymous. Logging out bumps it (ccany_addon/config/sessions.py); so does any change of
# the password hash, whoever makes it (the pages, the CLI, a script), through this trigger. It compares no hashes:
# on Datasette's connections the secret-masking authorizer makes them read as NULL, in triggers too.
_V5 = """
ALTER TABLE users ADD COLUMN session_version INTEGER NOT NULL DEFAULT 0;
CREATE TRIGGER users_password_ends_sessions AFTER UPDATE OF password_hash ON users
BEGIN
    UPDATE users SET session_version = session_version + 1 WHERE id = NEW.id;
END;
"""

# Capability overrides for the facts Claude Code 2.1.33x made matter (NULL: the built-in value, as in v4):
# whether an OpenAI-dialect upstream gets `prompt_cache_key`, whether the model takes a JSON-schema answer format
# (`response_format`, Gemini's response schema), whether it has OpenAI's `xhigh` reasoning effort.
_V6 = """
ALTER TABLE model_capabilities ADD COLUMN prompt_cache_key INTEGER;
ALTER TABLE model_capabilities ADD COLUMN structured_outputs INTEGER;
ALTER TABLE model_capabilities ADD COLUMN xhigh_effort INTEGER;
"""

# Prices for upstream models the maintained table (`genai-prices`) does not know or prices otherwise: local models
# (0), private deployments, negotiated rates. USD per million tokens; a NULL cache price costs as much as input.
_V7 = """
CREATE TABLE model_prices (
    id INTEGER PRIMARY KEY,
    pattern TEXT NOT NULL,
    provider TEXT NOT NULL DEFAULT '',
    input_per_mtok REAL NOT NULL CHECK (input_per_mtok >= 0),
    output_per_mtok REAL NOT NULL CHECK (output_per_mtok >= 0),
    cache_read_per_mtok REAL CHECK (cache_read_per_mtok >= 0),
    cache_write_per_mtok REAL CHECK (cache_write_per_mtok >= 0),
    notes TEXT,
    UNIQUE (pattern, provider)
);
"""

# Limits and budgets per client key (NULL: none): requests and tokens per minute, concurrent streams, USD per UTC
# day and per UTC month; a key's owner (a user), whose own budgets all their keys spend together.
_V8 = """
ALTER TABLE client_keys ADD COLUMN user_id INTEGER REFERENCES users(id) ON DELETE SET NULL;
ALTER TABLE users ADD COLUMN daily_budget_usd REAL CHECK (daily_budget_usd IS NULL OR daily_budget_usd >= 0);
ALTER TABLE users ADD COLUMN monthly_budget_usd REAL CHECK (monthly_budget_usd IS NULL OR monthly_budget_usd >= 0);
ALTER TABLE client_keys ADD COLUMN rpm_limit INTEGER CHECK (rpm_limit IS NULL OR rpm_limit >= 0);
ALTER TABLE client_keys ADD COLUMN tpm_limit INTEGER CHECK (tpm_limit IS NULL OR tpm_limit >= 0);
ALTER TABLE client_keys ADD COLUMN max_streams INTEGER CHECK (max_streams IS NULL OR max_streams >= 0);
ALTER TABLE client_keys ADD COLUMN daily_budget_usd REAL CHECK (daily_budget_usd IS NULL OR daily_budget_usd >= 0);
ALTER TABLE client_keys ADD COLUMN monthly_budget_usd REAL
    CHECK (monthly_budget_usd IS NULL OR monthly_budget_usd >= 0);
"""

# Over a budget, a key's (or its owner's) requests may go to a cheaper Claude model instead of being refused.
_V9 = """
ALTER TABLE client_keys ADD COLUMN over_budget_model TEXT;
ALTER TABLE users ADD COLUMN over_budget_model TEXT;
"""

MIGRATIONS = [sql_script(_V1), sql_script(_V2), sql_script(_V3), sql_script(_V4), sql_script(_V5), sql_script(_V6),
              sql_script(_V7), sql_script(_V8), sql_script(_V9)]
VERSION = len(MIGRATIONS)


def register_functions(conn: sqlite3.Connection, cipher: Cipher) -> None:
    """The SQL functions the key triggers call; Datasette's connections get them from the project plugin."""
    conn.create_function("ccany_encrypt", 1, cipher.encrypt, deterministic=False)
    conn.create_function("ccany_hint", 1, hint, deterministic=True)


def open_config_db(path: str | Path, cipher: Cipher | None) -> sqlite_utils.Database:
    """A connection to the config DB with the schema current; with a cipher, key writes are encrypted."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    create_private(path)  # 0600 before SQLite makes it 0644: the file holds users, keys and their hashes
    db = sqlite_utils.Database(str(path))
    db.execute("PRAGMA busy_timeout = 5000")
    db.execute("PRAGMA secure_delete = ON")  # freed cells (a key's plain text before its trigger ran) are zeroed
    db.enable_wal()
    if cipher is not None:
        register_functions(db.conn, cipher)
    migrate(db, MIGRATIONS, "config DB")
    db.execute("PRAGMA foreign_keys = ON")
    return db
