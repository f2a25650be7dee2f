"""The flows table's CSV (`/{db}/flows.csv`, with `_stream=on`, `_dl=on`, `_col=` as Datasette takes them) with
the bodies whole, as it was before bodies were stored as parts.

Since flow DB schema 7 a row's body columns are NULL (an empty CSV field) and a manifest names its parts. As for
the JSON (`flow_json.py`), an ASGI wrapper puts the bodies back into Datasette's own answer. A CSV answer may be
streamed (every row of the table, `_stream=on`), so it is rewritten record by record as it comes, never held
whole: each chunk's complete records go out with their bodies, a record cut by the chunk's end waits for the
next. A record without a body to put back goes out byte for byte as Datasette wrote it.
"""

from __future__ import annotations

import csv
import io
import re
import sqlite3
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from ccany_addon.flowlog.schema import BODY_MANIFESTS, FLOWS
from ccany_addon.web.flow_json import ASGIApp, Message, Scope, fill_bodies

if TYPE_CHECKING:
    from datasette.app import Datasette

_FLOWS_CSV = re.compile(rf"^/(?P<database>[^/]+)/{FLOWS}\.csv$")
_END = b"\r\n"  # Python's csv writer (Datasette's) ends every record so; a newline inside a field is quoted


def wrap(app: ASGIApp, datasette: Datasette) -> ASGIApp:
    async def flows_csv_with_bodies(scope: Scope, receive: Callable[[], Awaitable[Message]],
                                    send: Callable[[Message], Awaitable[None]]) -> None:
        found = _FLOWS_CSV.match(scope.get("path", "")) if scope.get("type") == "http" else None
        if found is None:
            await app(scope, receive, send)
            return
        records: CsvRecords | None = None

        async def rewritten(message: Message) -> None:
            nonlocal records
            if message["type"] == "http.response.start":
                if message.get("status") == 200:
                    records = CsvRecords()
                    headers = [(name, value) for name, value in message.get("headers", [])
                               if name.lower() != b"content-length"]  # the bodies make it longer
                    message = {**message, "headers": headers}
                await send(message)
                return
            if message["type"] != "http.response.body" or records is None:
                await send(message)
                return
            more = bool(message.get("more_body"))
            complete = records.feed(message.get("body", b""), final=not more)
            body = await _with_bodies(datasette, found["database"], records, complete)
            await send({"type": "http.response.body", "body": body, "more_body": more})

        await app(scope, receive, rewritten)

    return flows_csv_with_bodies


class CsvRecords:
    """Splits CSV bytes, fed in chunks, into whole records: a record ends at a line end outside quotes (an odd
    number of quote characters before it opens a field: `""` inside a quoted field counts twice)."""

    def __init__(self) -> None:
        self.columns: list[str] | None = None
        self._lines: list[bytes] = []  # the lines of the record under way, each with its line end
        self._open = False  # whether those lines leave a quoted field open
        self._tail = b""  # the bytes after the last line end

    def feed(self, data: bytes, final: bool) -> list[bytes]:
        """The records `data` completes, each with its line end; at the end of the answer, the rest too."""
        lines = (self._tail + data).split(_END)
        self._tail = lines.pop()
        records: list[bytes] = []
        for line in lines:
            self._lines.append(line + _END)
            self._open ^= line.count(b'"') % 2 == 1
            if not self._open:
                records.append(b"".join(self._lines))
                self._lines = []
        if final and (self._lines or self._tail):
            records.append(b"".join(self._lines) + self._tail)
            self._lines, self._open, self._tail = [], False, b""
        return records


async def _with_bodies(datasette: Datasette, database: str, records: CsvRecords, complete: list[bytes]) -> bytes:
    if not complete:
        return b""
    first = 0
    if records.columns is None:
        records.columns, first = _fields(complete[0]), 1
    columns = records.columns
    at = [index for index, name in enumerate(columns) if name in BODY_MANIFESTS]
    if "id" not in columns or not at:
        return b"".join(complete)
    rows = {number: _fields(complete[number]) for number in range(first, len(complete))}
    wanted = {number: row for number, row in rows.items()
              if len(row) == len(columns) and any(row[index] == "" for index in at)}
    if not wanted:
        return b"".join(complete)
    # CSV writes NULL as an empty field: the rows as `fill_bodies` takes them, NULL where a body may go
    document = {"columns": columns,
                "rows": [[None if field == "" and name in BODY_MANIFESTS else field
                          for name, field in zip(columns, row, strict=True)] for row in wanted.values()]}
    try:
        filled = await datasette.get_database(database).execute_fn(lambda conn: fill_bodies(conn, document))
    except (KeyError, sqlite3.Error):
        return b"".join(complete)
    if not filled:
        return b"".join(complete)
    for number, row in zip(wanted, document["rows"], strict=True):
        complete[number] = _record(["" if field is None else field for field in row])
    return b"".join(complete)


def _fields(record: bytes) -> list[str]:
    return next(csv.reader(io.StringIO(record.decode("utf-8", "replace"), newline="")), [])


def _record(row: list[str]) -> bytes:
    text = io.StringIO(newline="")
    csv.writer(text).writerow(row)
    return text.getvalue().encode()
