"""Versioned schema migrations for the project's SQLite files, tracked in `PRAGMA user_version`."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence

import sqlite_utils

Migration = Callable[[sqlite_utils.Database], None]


def migrate(db: sqlite_utils.Database, migrations: Sequence[Migration], what: str) -> int:
    """Bring the DB to `len(migrations)`; returns the version it had before. Safe when several processes
    open a fresh file at once: the version is read again under the write lock."""
    target = len(migrations)
    if db.execute("PRAGMA user_version").fetchone()[0] == target:
        return target
    db.execute("BEGIN IMMEDIATE")
    try:
        before = db.execute("PRAGMA user_version").fetchone()[0]
        if before > target:
            raise RuntimeError(f"{what} is at schema version {before}, newer than this ccany ({target})")
        for version in range(before + 1, target + 1):
            migrations[version - 1](db)
            db.execute(f"PRAGMA user_version = {version}")
        db.conn.commit()
    except BaseException:
        db.conn.rollback()
        raise
    return before


def sql_script(script: str) -> Migration:
    """A migration of plain SQL, run statement by statement (executescript would commit the transaction)."""

    def run(db: sqlite_utils.Database) -> None:
        current = ""
        for line in script.strip().splitlines(keepends=True):
            current += line
            if sqlite3.complete_statement(current):
                db.execute(current.strip())
                current = ""

    return run
