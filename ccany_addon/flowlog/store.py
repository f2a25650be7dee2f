"""Storing one batch of rows so that a bad row never takes the others down.

A batch goes in as one transaction. When a value of some row cannot be bound (a dict, an int past 64 bits, a
string with a lone surrogate: all seen in upstream answers), each row is tried on its own, inside a savepoint
of the same transaction; a row that still fails is stored with its offending values as text, then without its
bodies, each time with a note saying so. Only a row that fails all three is lost.

Errors of the database itself (locked, disk full, read-only, corrupt) are not a row's fault: they raise
`StoreUnavailable` and the caller keeps the whole batch to try again later. Rows are inserted with
`INSERT OR IGNORE`, so a batch tried twice never holds a row twice.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import sqlite_utils

from ccany_addon.flowlog.part_store import PartStore
from ccany_addon.flowlog.schema import BODY_MANIFESTS, SEARCH_TEXT, insert_flows

# Columns a stripped row keeps empty: the bodies and what is built from them.
BODY_COLUMNS = (
    "client_request", "client_request_headers", "upstream_request", "upstream_request_headers",
    "upstream_response", "upstream_response_headers", "client_response", "client_response_headers",
    "events", "conversation", *BODY_MANIFESTS.values(), SEARCH_TEXT,
)
_INT64 = range(-(2**63), 2**63)


class StoreUnavailable(Exception):
    """The database, not a row, refused the batch."""


@dataclass(slots=True)
class Stored:
    written: int = 0
    degraded: int = 0  # written with values as text or without bodies, a note saying which
    failed: int = 0


def unavailable(error: BaseException) -> bool:
    """Errors that would fail any row: the database is locked, full, read-only, gone or corrupt."""
    return isinstance(error, sqlite3.OperationalError | sqlite3.InternalError) or type(error) is sqlite3.DatabaseError


def store_batch(
    db: sqlite_utils.Database, rows: list[dict], scrub: Callable[[str], str] = str,
    parts: Mapping[str, bytes] | None = None, part_store: PartStore | None = None,
) -> Stored:
    """Write `rows`, and the `parts` their manifests name, in one transaction; `scrub` masks secrets in values a
    degraded row stores as text."""
    part_store = part_store or PartStore()

    def with_parts(write_rows: Callable[[], None]) -> Callable[[], list[str]]:
        def work() -> list[str]:
            touched = part_store.save(db.conn, parts) if parts else []
            write_rows()
            return touched
        return work

    try:
        part_store.remember(_transaction(db, with_parts(lambda: insert_flows(db, rows))))
        return Stored(written=len(rows))
    except StoreUnavailable:
        raise
    except Exception:
        pass  # some row's values: each row on its own
    stored = Stored()
    part_store.remember(_transaction(db, with_parts(lambda: _one_by_one(db, rows, scrub, stored))))
    return stored


def _transaction[T](db: sqlite_utils.Database, work: Callable[[], T]) -> T:
    conn = db.conn
    try:
        conn.execute("BEGIN IMMEDIATE")
        result = work()
        conn.commit()
        return result
    except Exception as error:
        if conn.in_transaction:
            conn.rollback()
        if unavailable(error):
            raise StoreUnavailable(str(error)) from error
        raise


def _one_by_one(db: sqlite_utils.Database, rows: list[dict], scrub: Callable[[str], str], stored: Stored) -> None:
    for row in rows:
        for attempt, version in enumerate(_VERSIONS):
            if _in_savepoint(db, version, row, scrub):
                stored.written += 1
                stored.degraded += attempt > 0
                break
        else:
            stored.failed += 1


def _in_savepoint(
    db: sqlite_utils.Database, version: Callable[[dict, Callable[[str], str]], dict], row: dict,
    scrub: Callable[[str], str],
) -> bool:
    """Insert one version of a row inside a savepoint; False when its values are refused (the savepoint is
    undone). An error of the database itself propagates: the whole transaction is rolled back for a retry."""
    conn = db.conn
    conn.execute("SAVEPOINT flow_row")
    try:
        insert_flows(db, [version(row, scrub)])
    except Exception as error:
        conn.execute("ROLLBACK TO flow_row")
        conn.execute("RELEASE flow_row")
        if unavailable(error):
            raise
        return False
    conn.execute("RELEASE flow_row")
    return True


def as_is(row: dict, scrub: Callable[[str], str] = str) -> dict:
    return row


def as_text(row: dict, scrub: Callable[[str], str] = str) -> dict:
    """The row with every value SQLite cannot bind turned into text, and a note naming those columns."""
    fixed: dict = {}
    changed: list[str] = []
    for column, value in row.items():
        safe = _bindable(value, scrub)
        if safe is not value:
            changed.append(column)
        fixed[column] = safe
    return _noted(fixed, f"flow log: stored as text: {', '.join(changed) or 'nothing'}")


def stripped(row: dict, scrub: Callable[[str], str] = str) -> dict:
    """The row's metadata only: no bodies, and only values that bind as they are."""
    kept = {column: None if column in BODY_COLUMNS or _bindable(value, str) is not value else value
            for column, value in row.items()}
    return _noted(kept, "flow log: stored without its bodies, which could not be written")


# What is tried for a row its batch could not take, in order.
_VERSIONS = (as_is, as_text, stripped)


def _bindable(value: object, scrub: Callable[[str], str]) -> object:
    """`value` itself when SQLite takes it as it is, else a text version of it."""
    if value is None or isinstance(value, float | bytes):
        return value
    if isinstance(value, int):  # bool too
        return value if value in _INT64 else str(value)
    if isinstance(value, str):
        try:
            value.encode("utf-8")
            return value
        except UnicodeEncodeError:
            return scrub(value.encode("utf-8", "replace").decode("utf-8"))
    try:
        text = json.dumps(value, ensure_ascii=False, default=repr)
    except Exception:
        try:
            text = repr(value)
        except Exception:
            text = f"<unprintable {type(value).__name__}>"
    return scrub(text.encode("utf-8", "replace").decode("utf-8"))


def _noted(row: dict, note: str) -> dict:
    notes = row.get("notes")
    try:
        earlier = json.loads(notes) if isinstance(notes, str) else []
    except ValueError:
        earlier = [notes]
    if not isinstance(earlier, list):
        earlier = [earlier]
    return {**row, "notes": json.dumps([*earlier, note], ensure_ascii=False, default=str)}
