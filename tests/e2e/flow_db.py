"""Reading the flow DB a proxy wrote, with its bodies whole. Since flow DB schema version 7 a row's body columns
(the four bodies, the stream timeline `events` and the searchable text `conversation`) are NULL and each is a
manifest (`*_parts`) naming compressed parts (part_compression.py) in the `parts` table (ccany_addon/flowlog/parts.py),
a long string inside a part a part of its own (part_strings.py); rows written before keep their bodies inline. A JSON
body comes back as compact JSON (the same value, other whitespace than was sent), any other body byte for byte."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from contextlib import closing
from pathlib import Path

from ccany_addon.flowlog.part_compression import decompress
from ccany_addon.flowlog.part_store import fetch_parts, register_functions, with_bodies


def connect(db: Path) -> closing[sqlite3.Connection]:
    """A connection to the flow DB (rows as dicts by name) on which `ccany_body(client_request,
    client_request_parts)` and the `flow_bodies` view work; closed at the end of its `with`."""
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    register_functions(conn)
    return closing(conn)


def flow_rows(db: Path, where: str = "1", params: Sequence = ()) -> list[dict]:
    """Every column of the `flows` rows matching `where`, in the order they started, the bodies whole."""
    with connect(db) as conn:
        return [with_bodies(conn, dict(row))
                for row in conn.execute(f"SELECT * FROM flows WHERE {where} ORDER BY started_at", params)]


def stored_bytes(db: Path) -> dict[str, bytes]:
    """What the flow DB keeps on disk, in a form a secret would show in: the bytes of each of its files (the DB,
    its -wal and -shm), every stored part decompressed as it is stored (zlib hides a body's text from a scan of
    the files), and every part as it reads back, its long strings put back in (a string of 512+ characters is a
    part of its own, as JSON writes it: a key inside it may be escaped there)."""
    contents = {path.name: path.read_bytes() for path in sorted(db.parent.glob(db.name + "*"))}
    if db.exists():
        with closing(sqlite3.connect(db)) as conn:
            has_parts = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'parts'").fetchone()
            if has_parts:
                contents["parts (decompressed)"] = b"\n".join(
                    decompress(body) for (body,) in conn.execute("SELECT body FROM parts"))
                hashes = [digest for (digest,) in conn.execute("SELECT hash FROM parts")]
                contents["parts (strings put back)"] = b"\n".join(fetch_parts(conn, hashes).values())
    return contents
