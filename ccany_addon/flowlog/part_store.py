"""The `parts` table: storing a batch's new parts, reading parts back, and the SQL functions that put a flow's
bodies together inside any query (`ccany_body`, `ccany_part`).

A part is stored compressed once; each UTC day a flow names it, its `last_used` day is set, so that pruning can
remove the parts no kept flow names without reading a single manifest (`prune.py`).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Mapping

from ccany_addon.flowlog.part_compression import PartDataError, compress, decompress
from ccany_addon.flowlog.part_strings import cut_out, put_back, strings_in, text_forms
from ccany_addon.flowlog.parts import MissingPart, unpack, unpack_bytes
from ccany_addon.flowlog.schema import BODY_MANIFESTS, FLOWS, PARTS
from ccany_addon.util.json_codec import dumps, loads
from ccany_addon.util.utc import utc_day

KNOWN_LIMIT = 200_000  # hashes remembered as stored today (~20 MB); past it the memory starts afresh
_FETCH_BATCH = 500  # hashes per SELECT: under SQLite's limit on variables


class PartStore:
    """The writer thread's side: writes the parts of a batch inside the batch's transaction. Parts already
    stored (and marked used) today are skipped without a query: a Claude Code turn repeats hundreds of them."""

    def __init__(self) -> None:
        self._known: dict[str, str] = {}  # hash → the UTC day it was last stored or marked used

    def save(self, conn: sqlite3.Connection, parts: Mapping[str, bytes]) -> list[str]:
        """Store what is new of `parts`, mark the rest used today; the hashes touched, for `remember` once the
        transaction has committed. A new part's long strings are stored on their own (`part_strings.py`); marking a
        part used marks its strings too."""
        day = utc_day()
        touched = [digest for digest in parts if self._known.get(digest) != day]
        stored = self._stored(conn, touched)
        new = [digest for digest in touched if digest not in stored]
        strings_used = list(dict.fromkeys(name for refs in stored.values() if refs for name in loads(refs)
                                          if self._known.get(name) != day))
        self._mark_used(conn, [digest for digest in touched if digest in stored] + strings_used, day)
        touched += strings_used
        # a JSON part holds the strings parsing it found; only a part that is not JSON is searched for all of them
        held = {digest: strings_in(parts[digest]) for digest in new}
        strings: dict[str, bytes] = {}
        for found in held.values():
            strings |= found or {}
        touched += self._insert(conn, strings, {}, {}, day)
        touched += self._insert(conn, {digest: parts[digest] for digest in new}, strings, held, day)
        return touched

    @staticmethod
    def _stored(conn: sqlite3.Connection, hashes: list[str]) -> dict[str, str | None]:
        """Which of `hashes` are stored, with the long strings each holds."""
        found: dict[str, str | None] = {}
        for start in range(0, len(hashes), _FETCH_BATCH):
            batch = hashes[start:start + _FETCH_BATCH]
            found.update(conn.execute(
                f"SELECT hash, refs FROM [{PARTS}] WHERE hash IN ({', '.join('?' * len(batch))})", batch))
        return found

    @staticmethod
    def _mark_used(conn: sqlite3.Connection, hashes: list[str], day: str) -> None:
        for start in range(0, len(hashes), _FETCH_BATCH):
            batch = hashes[start:start + _FETCH_BATCH]
            conn.execute(f"UPDATE [{PARTS}] SET last_used = ? WHERE last_used != ? AND hash IN "
                         f"({', '.join('?' * len(batch))})", [day, day, *batch])

    @staticmethod
    def _insert(conn: sqlite3.Connection, parts: Mapping[str, bytes], strings: Mapping[str, bytes],
                held: Mapping[str, Mapping[str, bytes] | None], day: str) -> list[str]:
        """Insert `parts` (their long strings, among `strings`, cut out: those `held` says a part holds, all of
        them from a part it says is not JSON); an existing one is marked used."""
        texts = text_forms(strings) if strings else {}
        for digest, data in parts.items():
            found = held.get(digest)
            searched = strings if found is None else found
            body, named = cut_out(data, searched, texts) if searched and digest not in strings else (data, [])
            conn.execute(
                f"INSERT INTO [{PARTS}] (hash, size, body, last_used, refs) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (hash) DO UPDATE SET last_used = excluded.last_used",
                (digest, len(data), compress(body), day, dumps(named).decode() if named else None))
        return list(parts)

    def remember(self, touched: list[str]) -> None:
        if len(self._known) + len(touched) > KNOWN_LIMIT:
            self._known.clear()
        day = utc_day()
        self._known.update(dict.fromkeys(touched, day))


class UnreadablePart(ValueError):
    """A stored part that does not decompress: written with a dictionary this version does not know, or damaged."""


def _decompressed(digest: str, body: bytes) -> bytes:
    try:
        return decompress(body)
    except PartDataError as error:
        raise UnreadablePart(digest, str(error)) from error


def fetch_parts(conn: sqlite3.Connection, hashes: list[str]) -> dict[str, bytes]:
    """The bytes of the stored parts among `hashes`, their long strings put back."""
    found: dict[str, bytes] = {}
    templates: dict[str, tuple[bytes, list[str]]] = {}
    for start in range(0, len(hashes), _FETCH_BATCH):
        batch = hashes[start:start + _FETCH_BATCH]
        rows = conn.execute(f"SELECT hash, body, refs FROM [{PARTS}] WHERE hash IN ({', '.join('?' * len(batch))})",
                            batch)
        for digest, body, refs in rows:
            if refs:
                templates[digest] = _decompressed(digest, body), loads(refs)
            else:
                found[digest] = _decompressed(digest, body)
    if templates:
        strings = fetch_parts(conn, list({name for _, named in templates.values() for name in named}))
        for digest, (template, named) in templates.items():
            if all(name in strings for name in named):  # else the part is missing, as its string is
                found[digest] = put_back(template, strings)
    return found


def body_text(conn: sqlite3.Connection, inline: str | None, manifest: str | None) -> str | None:
    """A body as the client or upstream sent it: kept inline (rows written before version 7), or put together
    from its parts. A part that is gone or cannot be read leaves a note in place of the body, never an error."""
    if inline is not None or manifest is None:
        return inline
    try:
        return unpack(manifest, lambda hashes: fetch_parts(conn, hashes))
    except MissingPart as missing:
        return f"(ccany: part {missing.args[0]} of this body is no longer stored)"
    except UnreadablePart as unreadable:
        return _unreadable_note(unreadable)


def _unreadable_note(unreadable: UnreadablePart) -> str:
    digest, reason = unreadable.args
    return f"(ccany: part {digest} cannot be read: {reason})"


def previous_body(conn: sqlite3.Connection, row: dict, name: str) -> bytes | None:
    """The request body `name` of the flow before `row` in its Claude Code session, by the same agent, to the same
    model (the client's, or the provider's and upstream's for the upstream request), as stored; None when there is
    none or it cannot be read."""
    model = ("client_model",) if name == "client_request" else ("provider", "upstream_model")
    where = " AND ".join(f"[{column}] IS ?" for column in ("agent_id", *model))
    found = conn.execute(
        f"SELECT [{name}], [{BODY_MANIFESTS[name]}] FROM [{FLOWS}] WHERE session_id = ? AND started_at <= ? "
        f"AND id != ? AND {where} ORDER BY started_at DESC LIMIT 1",
        [row.get("session_id"), row.get("started_at"), row.get("id"), row.get("agent_id"),
         *(row.get(column) for column in model)]).fetchone()
    if found is None:
        return None
    inline, manifest = found
    if inline is not None:
        return inline.encode()
    if manifest is None:
        return None
    try:
        return unpack_bytes(manifest, lambda hashes: fetch_parts(conn, hashes))
    except (MissingPart, UnreadablePart):
        return None


def with_bodies(conn: sqlite3.Connection, row: dict) -> dict:
    """A `flows` row with its four bodies whole, whichever way they are stored."""
    return row | {name: body_text(conn, row.get(name), row.get(manifest)) for name, manifest in BODY_MANIFESTS.items()}


def part_text(conn: sqlite3.Connection, digest: str | None) -> str | None:
    if digest is None:
        return None
    try:
        data = fetch_parts(conn, [digest]).get(digest)
    except UnreadablePart as unreadable:
        return _unreadable_note(unreadable)
    return None if data is None else data.decode("utf-8", "replace")


def register_functions(conn: sqlite3.Connection) -> None:
    """`ccany_body(client_request, client_request_parts)` → the whole body (any of the four, old rows too);
    `ccany_part(hash)` → one part's text. Registered on the writer's connection and Datasette's."""
    conn.create_function("ccany_body", 2, _in_sql(conn, lambda inline, manifest: body_text(conn, inline, manifest)))
    conn.create_function("ccany_part", 1, _in_sql(conn, lambda digest: part_text(conn, digest)))


def _in_sql[**P, T](conn: sqlite3.Connection, function: Callable[P, T]) -> Callable[P, T | None]:
    """A function SQL calls. A query interrupted while the function reads parts (Datasette's time limit) ends as
    interrupted, as any query does, not as "user-defined function raised exception" with a traceback."""
    def call(*args: P.args, **kwargs: P.kwargs) -> T | None:
        try:
            return function(*args, **kwargs)
        except sqlite3.OperationalError as error:
            if error.sqlite_errorcode != sqlite3.SQLITE_INTERRUPT:
                raise
            conn.interrupt()  # the query that called it stops at its next step, interrupted
            return None
    return call
