"""The flows table's JSON (`/{db}/flows.json`, any `_shape`, `_nl`) and a flow row's JSON (`/{db}/flows/{id}.json`)
with the bodies whole, as they were before bodies were stored as parts.

Since flow DB schema 7 a row's body columns are NULL and a manifest names its parts. Datasette has no hook for a
table's or a row's JSON, so an ASGI wrapper puts the bodies back into Datasette's own answer: every row that holds
an `id` and a body column left NULL gets that body from the row's manifest, in Datasette's read thread. A body
that cannot be put back stays NULL; an answer that is not the JSON expected passes as it came.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from ccany_addon.flowlog.part_store import body_text
from ccany_addon.flowlog.schema import BODY_MANIFESTS, FLOWS
from ccany_addon.util.json_codec import dumps, loads

if TYPE_CHECKING:
    from datasette.app import Datasette

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]], Awaitable[None]]

_FLOWS_JSON = re.compile(rf"^/(?P<database>[^/]+)/{FLOWS}(?:/[^/]+)?\.json$")
_BATCH = 500  # ids per SELECT: under SQLite's limit on variables

# (a row, where each of its columns is in it: by name for an object, by position for `_shape=arrays`)
Slot = tuple[dict | list, dict[str, Any]]


def wrap(app: ASGIApp, datasette: Datasette) -> ASGIApp:
    async def flows_json_with_bodies(scope: Scope, receive: Callable[[], Awaitable[Message]],
                                     send: Callable[[Message], Awaitable[None]]) -> None:
        found = _FLOWS_JSON.match(scope.get("path", "")) if scope.get("type") == "http" else None
        if found is None:
            await app(scope, receive, send)
            return
        start: Message | None = None
        chunks: list[bytes] = []

        async def buffered(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                start = message
                return
            if message["type"] != "http.response.body" or start is None:
                await send(message)
                return
            chunks.append(message.get("body", b""))
            if message.get("more_body"):
                return
            body = b"".join(chunks)
            if start.get("status") == 200:
                newline = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("_nl") == ["on"]
                body = await _with_bodies(datasette, found["database"], body, newline)
            headers = [(name, value) for name, value in start.get("headers", []) if name.lower() != b"content-length"]
            await send({**start, "headers": [*headers, (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})

        await app(scope, receive, buffered)

    return flows_json_with_bodies


async def _with_bodies(datasette: Datasette, database: str, body: bytes, newline: bool) -> bytes:
    try:
        # `_nl=on`: a row per line, read as the list `_shape=array` would be
        document = [loads(line) for line in body.splitlines() if line.strip()] if newline else loads(body)
        db = datasette.get_database(database)
    except (ValueError, KeyError):
        return body
    try:
        filled = await db.execute_fn(lambda conn: fill_bodies(conn, document))
    except sqlite3.Error:
        return body
    if not filled:
        return body
    if newline:
        return b"\n".join(map(dumps, document)) + (b"\n" if body.endswith(b"\n") else b"")
    return dumps(document)


def _rows(document: object, table_columns: list[str]) -> Iterator[Slot]:
    """The rows of each shape Datasette answers in: `{"rows": [...]}` (objects, or arrays: named by `columns`, else
    all the table's columns in order), `_shape=array` (a list), `_shape=object` (primary key → row)."""
    if isinstance(document, list):
        rows: list = document
        columns = None
    elif isinstance(document, dict) and isinstance(document.get("rows"), list):
        rows, columns = document["rows"], document.get("columns", table_columns)
    elif isinstance(document, dict) and "ok" not in document:
        rows, columns = list(document.values()), None
    else:
        return
    for row in rows:
        if isinstance(row, dict):
            yield row, {name: name for name in row}
        elif isinstance(row, list) and isinstance(columns, list) and len(columns) == len(row):
            yield row, {name: index for index, name in enumerate(columns)}


def _wants_bodies(slot: Slot) -> bool:
    row, where = slot
    return "id" in where and any(name in where and row[where[name]] is None for name in BODY_MANIFESTS)


def fill_bodies(conn: sqlite3.Connection, document: object) -> bool:
    """Put the bodies into the document's rows; False when no row wanted one."""
    table_columns = [column for _, column, *_ in conn.execute(f"PRAGMA table_info([{FLOWS}])")]
    slots = [slot for slot in _rows(document, table_columns) if _wants_bodies(slot)]
    if not slots:
        return False
    ids = list({str(row[where["id"]]) for row, where in slots})
    manifests: dict[str, tuple] = {}
    columns = ", ".join(f"[{manifest}]" for manifest in BODY_MANIFESTS.values())
    for start in range(0, len(ids), _BATCH):
        batch = ids[start:start + _BATCH]
        for flow_id, *values in conn.execute(
                f"SELECT id, {columns} FROM [{FLOWS}] WHERE id IN ({', '.join('?' * len(batch))})", batch):
            manifests[flow_id] = tuple(values)
    for row, where in slots:
        stored = manifests.get(str(row[where["id"]]))
        if stored is None:
            continue
        for name, manifest in zip(BODY_MANIFESTS, stored, strict=True):
            if name in where and row[where[name]] is None and manifest is not None:
                row[where[name]] = body_text(conn, None, manifest)
    return True
