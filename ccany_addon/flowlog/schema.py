"""The one place that knows the flow DB's schema: tables, indexes, full-text search and their migrations.

Versions live in `PRAGMA user_version`; each migration runs once, in order, in its own transaction.
Times are UTC text `YYYY-MM-DD HH:MM:SS.mmm` so SQLite's date functions group them directly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import sqlite_utils

from ccany_addon.util.private_files import create_private
from ccany_addon.util.sqlite_migrations import Migration, migrate

FLOWS = "flows"

ColumnKind = Literal["value", "json"]


@dataclass(frozen=True, slots=True)
class Column:
    """One column of `flows`: its SQLite type, what its text is (Datasette pretty-prints JSON columns), and the
    schema version that added it (its migration adds every column of that version)."""

    type: type
    kind: ColumnKind = "value"
    since: int = 1


# In the order a person reading a row wants them. A new column: one entry here plus one migration.
FLOW_COLUMNS: dict[str, Column] = {
    "id": Column(str),  # the request-id the client received
    "started_at": Column(str),
    "method": Column(str),
    "path": Column(str),
    "status_code": Column(int),  # what the client got
    "upstream_status": Column(int),
    "is_stream": Column(int),
    "client_model": Column(str),
    "upstream_model": Column(str),
    "provider": Column(str),
    "upstream_url": Column(str),  # never with credentials
    "client_addr": Column(str),
    "user_agent": Column(str),
    "session_id": Column(str),  # X-Claude-Code-Session-Id
    "client_key_id": Column(str),
    "stop_reason": Column(str),
    "input_tokens": Column(int),
    "output_tokens": Column(int),
    "cache_read_input_tokens": Column(int),
    "cache_creation_input_tokens": Column(int),
    "upstream_ttfb_ms": Column(float),  # request sent upstream → upstream response headers
    "ttft_ms": Column(float),  # client request → first token sent to the client
    "duration_ms": Column(float),
    "chunk_count": Column(int),  # upstream stream reads
    "max_chunk_gap_ms": Column(float),
    "error_type": Column(str),
    "error_message": Column(str),
    "client_request": Column(str, "json"),
    "client_request_headers": Column(str, "json"),
    "upstream_request": Column(str, "json"),
    "upstream_request_headers": Column(str, "json"),
    "upstream_response": Column(str, "json"),  # raw body, or the SSE text of a stream
    "upstream_response_headers": Column(str, "json"),
    # the Anthropic message or error the client received (reassembled for streams)
    "client_response": Column(str, "json"),
    "client_response_headers": Column(str, "json"),
    # [[offset_ms, event type, block index, bytes], ...] of a stream sent to the client
    "events": Column(str, "json"),
    "notes": Column(str, "json"),  # JSON list of conversion notes
    "truncated": Column(str),  # names of bodies cut at the size cap
    "conversation": Column(str),  # searchable text: the turn's new input and the answer
    # the rule that chose the upstream: "route <pattern>", "provider,model", "tier", "default"
    "route": Column(str, since=2),
    # "<id>:<name>" of the provider key used (its id in the config DB), never the key
    "provider_key": Column(str, since=3),
    "cache_hit": Column(int, since=3),  # 1: answered from the response cache, the upstream not asked
    # Claude Code's X-Claude-Code-Agent-Id and -Parent-Agent-Id (which subagent asked, and who started it), and
    # X-Claude-Code-Request-Class (main, subagent, compaction, auxiliary...; with CLAUDE_CODE_GATEWAY_HINT_HEADERS=1)
    "agent_id": Column(str, since=5),
    "parent_agent_id": Column(str, since=5),
    "request_class": Column(str, since=5),
    # From Claude Code's billing-header system block (`cc_version=2.1.332.<hash>; cc_entrypoint=cli;`), which
    # converting kinds take out of the prompt so that conversations share a cacheable prefix
    "cc_version": Column(str, since=6),
    "cc_entrypoint": Column(str, since=6),
    # Since version 7 the bodies are content-addressed (`parts.py`): these manifests name the parts of each body,
    # and the body columns above are NULL (rows written before keep their bodies there); so are the timeline and
    # the searchable text, each one part (the full-text index reads the text through the view `flows_text`).
    "client_request_parts": Column(str, "json", since=7),
    "upstream_request_parts": Column(str, "json", since=7),
    "upstream_response_parts": Column(str, "json", since=7),
    "client_response_parts": Column(str, "json", since=7),
    "events_parts": Column(str, "json", since=7),  # the stream timeline, as one part
    "conversation_parts": Column(str, "json", since=7),  # the searchable text, as one part
    # Cache forensics: how many leading parts (prompt-cache order: tools, system, messages) a request shares
    # with the previous request of the same Claude Code session and model, and the first part that differs
    "prefix_parts": Column(int, since=7),
    "prefix_break": Column(str, since=7),  # "system[0] changed", "messages[7] changed"; NULL: only appended
    "upstream_prefix_parts": Column(int, since=7),
    "upstream_prefix_break": Column(str, since=7),
    "upstream_prefix_bytes": Column(int, since=7),  # bytes of the upstream request a prefix cache could serve
    "upstream_prompt_bytes": Column(int, since=7),  # bytes of its tools, system and messages
    # What the flow cost in USD (its four token kinds each at its own price; NULL: no tokens, or no known price),
    # and which price: `genai-prices 0.2.5: openai gpt-4o`, `override llama* (ollama)`, `response cache`
    "cost_usd": Column(float, since=8),
    "price_source": Column(str, since=8),
    "client_user": Column(str, since=8),  # the user owning the client key (config DB `client_keys.user_id`)
}

JSON_COLUMNS = frozenset(name for name, column in FLOW_COLUMNS.items() if column.kind == "json")

FLOW_INDEXES: list[list[str]] = [
    ["started_at"],
    ["client_model", "started_at"],
    ["upstream_model", "started_at"],
    ["provider", "started_at"],
    ["error_type", "started_at"],
    ["session_id", "started_at"],
    ["duration_ms"],
]


def _v1(db: sqlite_utils.Database) -> None:
    flows = db[FLOWS]
    flows.create({name: column.type for name, column in FLOW_COLUMNS.items() if column.since == 1}, pk="id")  # type: ignore[union-attr]
    for columns in FLOW_INDEXES:
        flows.create_index(columns, if_not_exists=True)  # type: ignore[union-attr]
    flows.enable_fts(["conversation"], create_triggers=True, tokenize="porter")  # type: ignore[union-attr]


def _add_columns(db: sqlite_utils.Database, version: int) -> None:
    for name, column in FLOW_COLUMNS.items():
        if column.since == version:
            db[FLOWS].add_column(name, column.type)  # type: ignore[union-attr]


def _v2(db: sqlite_utils.Database) -> None:
    _add_columns(db, 2)


def _v3(db: sqlite_utils.Database) -> None:
    _add_columns(db, 3)
    db[FLOWS].create_index(["provider_key", "started_at"], if_not_exists=True)  # type: ignore[union-attr]


def _v4(db: sqlite_utils.Database) -> None:
    # Indexing each row from the insert trigger cost 0.09 ms of CPU per flow, indexing a batch in one
    # statement 0.02: `insert_flows` indexes its rows itself. The delete and update triggers stay (pruning,
    # rows edited in Datasette).
    db.execute(f"DROP TRIGGER IF EXISTS [{FLOWS}_ai]")


def _v5(db: sqlite_utils.Database) -> None:
    _add_columns(db, 5)


def _v6(db: sqlite_utils.Database) -> None:
    _add_columns(db, 6)


PARTS = "parts"
BODIES_VIEW = "flow_bodies"
# The manifest columns, each beside the column an older row keeps its body in.
BODY_MANIFESTS = {name: f"{name}_parts" for name in (
    "client_request", "upstream_request", "upstream_response", "client_response", "events", "conversation")}
# A row's searchable text, whichever way it is kept: what the full-text index holds for it.
CONVERSATION_TEXT = "coalesce({row}conversation, ccany_body(NULL, {row}conversation_parts))"
TEXT_VIEW = "flows_text"


def _v7(db: sqlite_utils.Database) -> None:
    _add_columns(db, 7)
    # `last_used`: the UTC day a flow last named the part; pruning removes the parts no kept flow can name.
    db.execute(f"""CREATE TABLE [{PARTS}] (
        [hash] TEXT PRIMARY KEY,  -- of the part's bytes (`parts.part_hash`)
        [size] INTEGER NOT NULL,  -- bytes before compression
        [body] BLOB NOT NULL,     -- zlib (part_compression.py); with `refs`, a template its long strings go back into
        [last_used] TEXT NOT NULL,
        [refs] TEXT               -- JSON list of the long strings (parts themselves) it holds (`part_strings.py`)
    )""")
    db.execute(f"CREATE INDEX [idx_{PARTS}_last_used] ON [{PARTS}] ([last_used])")
    bodies = ", ".join(f"ccany_body([{name}], [{manifest}]) AS [{name}]" for name, manifest in BODY_MANIFESTS.items())
    db.execute(f"CREATE VIEW [{BODIES_VIEW}] AS SELECT [id], [started_at], [session_id], {bodies} FROM [{FLOWS}]")
    # The full-text index now reads each row's text through a view, the text of a new row being a part; rebuilding
    # it costs the old rows' text once (a few KB a flow). A connection without the SQL functions cannot delete or
    # edit flows, rather than leave the index wrong.
    db.execute(f"CREATE VIEW [{TEXT_VIEW}] (flow_rowid, conversation) AS "
               f"SELECT rowid, {CONVERSATION_TEXT.format(row='')} FROM [{FLOWS}]")
    for trigger in ("ai", "ad", "au"):
        db.execute(f"DROP TRIGGER IF EXISTS [{FLOWS}_{trigger}]")
    db.execute(f"DROP TABLE IF EXISTS [{FLOWS}_fts]")
    db.execute(f"CREATE VIRTUAL TABLE [{FLOWS}_fts] USING FTS5 (conversation, tokenize='porter', "
               f"content=[{TEXT_VIEW}], content_rowid=[flow_rowid])")
    db.execute(f"INSERT INTO [{FLOWS}_fts] ([{FLOWS}_fts]) VALUES ('rebuild')")
    forget = f"INSERT INTO [{FLOWS}_fts] ([{FLOWS}_fts], rowid, conversation) VALUES " \
        f"('delete', old.rowid, {CONVERSATION_TEXT.format(row='old.')});"
    learn = f"INSERT INTO [{FLOWS}_fts] (rowid, conversation) VALUES " \
        f"(new.rowid, {CONVERSATION_TEXT.format(row='new.')});"
    db.execute(f"CREATE TRIGGER [{FLOWS}_ad] AFTER DELETE ON [{FLOWS}] BEGIN {forget} END")
    db.execute(f"CREATE TRIGGER [{FLOWS}_au] AFTER UPDATE ON [{FLOWS}] BEGIN {forget} {learn} END")


def _v8(db: sqlite_utils.Database) -> None:
    _add_columns(db, 8)
    # spend per client key over a window: the dashboards, and a budget's spend read back at start-up
    db[FLOWS].create_index(["client_key_id", "started_at"], if_not_exists=True)  # type: ignore[union-attr]


MIGRATIONS: list[Migration] = [_v1, _v2, _v3, _v4, _v5, _v6, _v7, _v8]
VERSION = len(MIGRATIONS)

# Since version 7 a row is a few KB and its new parts a few more. The writer's work on the records of the 150-turn
# session of scripts/bench (best of 4 runs each): 8 KB pages 4.75 ms a turn and 1192 KB, 16 KB pages 4.65 ms and
# 1264 KB (a commit writes ~20 pages, a new DB holds one page per table and index), 4 KB pages 4.5 ms and 1356 KB (a
# row no longer fits twice in a page). SQLite takes the size only before the first table.
PAGE_SIZE = 8192

# OR IGNORE, not OR REPLACE: with the delete trigger present, REPLACE costs 0.05 ms more per row even when
# nothing conflicts. A flow is recorded once; should one ever come twice, its first row stays.
_INSERT = f"INSERT OR IGNORE INTO {FLOWS} ({', '.join(FLOW_COLUMNS)}) VALUES ({', '.join('?' * len(FLOW_COLUMNS))})"
_LAST_ROWID = f"SELECT coalesce(max(rowid), 0) FROM {FLOWS}"
_NEW_ROWS = f"SELECT rowid, id FROM {FLOWS} WHERE rowid > ?"
# Every new row, its text NULL or not: the delete trigger removes each row's entry by its old values.
_INDEX = f"INSERT INTO {FLOWS}_fts (rowid, conversation) VALUES (?, ?)"
# A row whose searchable text went into a part keeps it here for the index (not a column: it is not stored).
SEARCH_TEXT = "search_text"


def insert_flows(db: sqlite_utils.Database, rows: list[dict]) -> None:
    """The only way rows enter `flows`: one prepared statement for every row (a column a row lacks is NULL),
    then their full-text entries, from the rows themselves (what the view `flows_text` gives back for them). The
    caller holds the transaction, so no other writer takes rowids in between."""
    last = db.conn.execute(_LAST_ROWID).fetchone()[0]
    db.conn.executemany(_INSERT, [tuple(row.get(column) for column in FLOW_COLUMNS) for row in rows])
    texts: dict[str, str | None] = {}
    for row in rows:  # a flow recorded twice keeps its first row (INSERT OR IGNORE)
        texts.setdefault(row.get("id"), row["conversation"] if row.get("conversation") is not None
                         else row.get(SEARCH_TEXT))
    db.conn.executemany(_INDEX, [(rowid, texts.get(request_id))
                                 for rowid, request_id in db.conn.execute(_NEW_ROWS, [last]).fetchall()])


BUSY_TIMEOUT_MS = 5000
# After a checkpoint restarts the WAL, SQLite cuts the file back to this size (it never shrinks otherwise).
WAL_SIZE_LIMIT = 32 * 1024 * 1024


def open_db(path: str) -> sqlite_utils.Database:
    """A connection in WAL mode with the schema current (the writer's, or a test's). A new DB file is made
    0600 first: it holds every conversation, and SQLite gives its -wal and -shm files the same mode."""
    if path != ":memory:":
        create_private(path)
    db = sqlite_utils.Database(path)
    db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    if db.execute("PRAGMA page_count").fetchone()[0] == 0:
        db.execute(f"PRAGMA page_size = {PAGE_SIZE}")
    db.enable_wal()
    db.execute(f"PRAGMA journal_size_limit = {WAL_SIZE_LIMIT}")
    # WAL with NORMAL sync cannot corrupt the DB; a power cut may lose the last moments of log.
    db.execute("PRAGMA synchronous = NORMAL")
    from ccany_addon.flowlog.part_store import register_functions  # it reads this module's table names

    register_functions(db.conn)  # before the migration: version 7's view uses them
    migrate(db, MIGRATIONS, "flow DB")
    return db
