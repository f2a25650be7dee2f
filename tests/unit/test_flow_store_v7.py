"""The flow DB since schema version 7, on real SQLite files: the migration of an older DB, a session's parts stored
once, pruning of flows and of the parts no kept flow names, the queue's byte bound."""

from __future__ import annotations

import json
import math
import sqlite3
import sys
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
import sqlite_utils

from ccany_addon.flowlog import prune, schema
from ccany_addon.flowlog.part_store import body_text, fetch_parts, with_bodies
from ccany_addon.flowlog.prune import Pruning
from ccany_addon.flowlog.record import FlowRecord, StreamReads, record_size
from ccany_addon.flowlog.writer import FlowWriter
from ccany_addon.util.json_codec import loads
from ccany_addon.util.sqlite_migrations import migrate
from tests.unit.test_flow_parts import claude_code_session, strip_markers
from tests.unit.test_flow_writer import search

BODIES = tuple(schema.BODY_MANIFESTS)
REQUESTS = ("client_request", "upstream_request")


def now_text(days_ago: float = 0) -> str:
    return (datetime.now(UTC) - timedelta(days=days_ago)).strftime("%Y-%m-%d %H:%M:%S.000")


def write(path: str, rows: list[dict], **options: object) -> FlowWriter[dict]:
    """Rows through a real writer thread (bodies packed into parts on its way); closed when it returns."""
    writer: FlowWriter[dict] = FlowWriter(path, lambda record: dict(record), **options)  # type: ignore[arg-type]
    writer.start()
    for row in rows:
        assert writer.submit(row)
    writer.close()
    assert writer.failed == 0 and writer.degraded == 0
    return writer


def stored_rows(db: sqlite_utils.Database) -> dict[str, dict]:
    return {row["id"]: with_bodies(db.conn, row) for row in db["flows"].rows}


def assert_same_bodies(stored: dict, original: dict) -> None:
    """A request comes back as the same JSON value, keys in order; anything else byte for byte."""
    for name in BODIES:
        if original.get(name) is None:
            assert stored[name] is None
        elif name in REQUESTS:
            assert json.loads(stored[name], object_pairs_hook=list) == \
                json.loads(original[name], object_pairs_hook=list), name
        else:
            assert stored[name] == original[name], name


def named_parts(conn, manifest: str | None) -> set[str]:
    """Every part a manifest names: its parts, its chunks and the parts listed in its chunks."""
    if manifest is None:
        return set()
    described = loads(manifest)
    if "text" in described:
        return {described["text"]}
    names: set[str] = set()
    for value in described["json"].values():
        if not isinstance(value, dict):
            continue
        if "$part" in value:
            names.add(value["$part"])
        elif "$parts" in value:
            names |= set(value["$parts"])
            level: list[str] = []
            for chunks in value.get("$chunks", []):  # highest level first: each chunk lists the level below
                level += chunks
                names |= set(level)
                level = [digest for data in fetch_parts(conn, level).values() for digest in loads(data)]
            names |= set(level)
    return names


def flow_parts(db: sqlite_utils.Database, where: str = "1", params: tuple = ()) -> set[str]:
    manifests = ", ".join(schema.BODY_MANIFESTS.values())
    names: set[str] = set()
    for row in db.execute(f"SELECT {manifests} FROM flows WHERE {where}", params).fetchall():
        for manifest in row:
            names |= named_parts(db.conn, manifest)
    # the long strings the named parts hold are stored once, as parts of their own
    held = [loads(refs) for digest, refs in db.execute("SELECT hash, refs FROM parts WHERE refs IS NOT NULL")
            if digest in names]
    return names | {string for strings in held for string in strings}


def assert_search_index_matches_flows(db: sqlite_utils.Database) -> None:
    db.execute("INSERT INTO flows_fts (flows_fts, rank) VALUES ('integrity-check', 1)")


# -- migrating a DB an older ccany wrote


def _request(words: str, messages: int = 3) -> str:
    return json.dumps({"model": "claude-sonnet-4-5", "max_tokens": 100, "system": [{"type": "text", "text": words}],
                       "messages": [{"role": "user", "content": f"{words} {n}"} for n in range(messages)]},
                      indent=2)


def test_a_version_6_db_keeps_its_rows_bodies_and_search_and_takes_new_rows_as_parts(tmp_path):
    path = str(tmp_path / "f.db")
    old = sqlite_utils.Database(path)
    migrate(old, schema.MIGRATIONS[:6], "flow DB")
    assert "client_request_parts" not in old["flows"].columns_dict
    before = [
        {"id": "req_old_1", "started_at": now_text(1), "session_id": "s1", "client_request": _request("aardvark"),
         "upstream_request": '{"model": "gpt", "messages": []}', "upstream_response": "data: {\"x\": 1}\n\n",
         "client_response": '{"content": [{"type": "text", "text": "an aardvark"}]}',
         "conversation": "aardvark questions"},
        {"id": "req_old_2", "started_at": now_text(1), "session_id": None, "client_request": "not json {",
         "upstream_request": None, "upstream_response": None, "client_response": None,
         "conversation": "zebra answers"},
    ]
    columns = list(before[0])
    with old.conn:
        old.conn.executemany(f"INSERT INTO flows ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
                             [tuple(row[column] for column in columns) for row in before])
        old.execute("INSERT INTO flows_fts(rowid, conversation) SELECT rowid, conversation FROM flows")
    old.close()

    db = schema.open_db(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == schema.VERSION
    assert "parts" in db.table_names() and "flow_bodies" in db.view_names()
    rows = stored_rows(db)
    assert set(rows) == {"req_old_1", "req_old_2"}
    for original in before:
        stored = rows[original["id"]]
        assert all(stored[name] == original.get(name) for name in BODIES)  # inline, exactly as written
        assert all(stored[f"{name}_parts"] is None for name in BODIES)
    viewed = db.execute("SELECT id, client_request, upstream_response FROM flow_bodies ORDER BY id").fetchall()
    assert viewed == [(row["id"], row["client_request"], row["upstream_response"]) for row in before]
    assert db.execute("SELECT ccany_body(client_request, client_request_parts) FROM flows WHERE id = 'req_old_2'"
                      ).fetchone()[0] == "not json {"
    assert [row["id"] for row in search(db, "aardvark")] == ["req_old_1"]
    db.close()

    after = [
        {"id": "req_new_1", "started_at": now_text(), "session_id": "s1", "client_request": _request("aardvark", 5),
         "upstream_request": _request("gnu", 2), "upstream_response": "event: ping\ndata: {}\n\n",
         "client_response": '{"content": [{"type": "text", "text": "more aardvarks"}]}',
         "conversation": "aardvark again"},
        {"id": "req_new_2", "started_at": now_text(), "session_id": "s1", "client_request": "[1, 2]",
         "upstream_request": None, "upstream_response": "", "client_response": '{"cut": "in the mid',
         "conversation": "zebra crossing"},
    ]
    write(path, after)
    db = schema.open_db(path)
    rows = stored_rows(db)
    assert set(rows) == {"req_old_1", "req_old_2", "req_new_1", "req_new_2"}
    for original in after:
        raw = db.execute("SELECT * FROM flows WHERE id = ?", [original["id"]]).fetchone()
        raw = dict(zip([column[0] for column in db.execute("SELECT * FROM flows LIMIT 0").description], raw,
                       strict=True))
        assert all(raw[name] is None for name in BODIES)
        assert all((raw[f"{name}_parts"] is None) == (original.get(name) is None) for name in BODIES)
        assert_same_bodies(rows[original["id"]], original)
    viewed = dict(db.execute("SELECT id, client_request FROM flow_bodies").fetchall())
    assert viewed["req_old_1"] == before[0]["client_request"] and viewed["req_new_2"] == "[1, 2]"
    assert json.loads(viewed["req_new_1"]) == json.loads(after[0]["client_request"])
    assert sorted(row["id"] for row in search(db, "aardvark")) == ["req_new_1", "req_old_1"]
    assert sorted(row["id"] for row in search(db, "zebra")) == ["req_new_2", "req_old_2"]
    assert_search_index_matches_flows(db)
    db.close()


# -- a session's parts are stored once


def _session_rows(turns: int, session: str = "s1", started_at: str | None = None, prefix: str = "req") -> list[dict]:
    rows = []
    for turn, (body, _, _) in enumerate(claude_code_session(turns)):
        # what a converting upstream kind sends: no billing block, no cache markers, the system prompt a message
        upstream = {"model": "gpt-x", "tools": body["tools"], "messages": [
            {"role": "system", "content": [block["text"] for block in body["system"][1:]]},
            *(strip_markers(message) for message in body["messages"])]}
        rows.append({"id": f"{prefix}_{turn:03d}", "started_at": started_at or now_text(), "session_id": session,
                     "client_model": "claude-opus-5-5", "provider": "openai", "upstream_model": "gpt-x",
                     "client_request": json.dumps(body), "upstream_request": json.dumps(upstream),
                     "upstream_response": f"data: {{\"turn\": {turn}}}\n\n",
                     "client_response": json.dumps({"content": [{"type": "text", "text": f"turn {turn}"}]}),
                     "conversation": f"turn {turn}"})
    return rows


def test_a_growing_session_stores_each_distinct_part_once_and_every_turn_reassembles(tmp_path):
    path = str(tmp_path / "f.db")
    rows = _session_rows(30)
    originals = {row["id"]: dict(row) for row in rows}
    whole = sum(len(row.get(name) or "") for row in rows for name in BODIES)
    write(path, rows)
    db = schema.open_db(path)
    named = flow_parts(db)
    assert db["parts"].count == len(named)
    assert {row[0] for row in db.execute("SELECT hash FROM parts")} == named
    stored_bytes = db.execute("SELECT sum(size) FROM parts").fetchone()[0]
    assert stored_bytes < whole / 5
    stored = stored_rows(db)
    assert set(stored) == set(originals)
    for request_id, original in originals.items():
        assert_same_bodies(stored[request_id], original)
    forensics = {row["id"]: row for row in db.execute(
        "SELECT id, prefix_parts, prefix_break, upstream_prefix_parts, upstream_prefix_break, upstream_prefix_bytes,"
        " upstream_prompt_bytes FROM flows").fetchall() for row in [dict(zip(
            ("id", "prefix_parts", "prefix_break", "upstream_prefix_parts", "upstream_prefix_break",
             "upstream_prefix_bytes", "upstream_prompt_bytes"), row, strict=True))]}
    assert forensics["req_000"]["prefix_parts"] is None and forensics["req_000"]["upstream_prompt_bytes"] > 0
    for turn in range(1, 30):
        row = forensics[f"req_{turn:03d}"]
        # Claude Code's billing block changes every turn: only the tools before it could come from a cache.
        assert (row["prefix_parts"], row["prefix_break"]) == (1, "system[0] changed")
        # Without it, each upstream request only appends to the one before.
        assert row["upstream_prefix_break"] is None
        assert 0 < row["upstream_prefix_bytes"] < row["upstream_prompt_bytes"]
    db.close()


# -- pruning


def test_pruning_removes_old_flows_then_only_the_parts_no_kept_flow_names_in_batches(tmp_path, monkeypatch):
    path = str(tmp_path / "f.db")
    old_rows = _session_rows(5, session="old", started_at=now_text(10), prefix="old")
    write(path, old_rows)
    db = schema.open_db(path)
    old_day = now_text(10)[:10]
    with db.conn:  # they were written ten days ago
        db.execute("UPDATE parts SET last_used = ?", [old_day])
    old_parts = flow_parts(db)
    db.close()
    # Today's flows: the same tools and system prompt, the old session's first turns, and new messages.
    new_rows = _session_rows(20, session="new", prefix="new")[:3] + _session_rows(20, session="new", prefix="new")[19:]
    write(path, new_rows)
    db = schema.open_db(path)
    new_parts = flow_parts(db, "id LIKE 'new%'")
    only_old = old_parts - new_parts
    assert only_old and old_parts & new_parts  # the scenario: some parts shared, some only old
    assert db["parts"].count == len(old_parts | new_parts)

    monkeypatch.setattr(prune, "PRUNE_BATCH", 2)
    pruning = Pruning(retention_days=7)
    steps = 0
    while pruning.step(db):
        steps += 1
        assert steps < 1000
    assert (pruning.flows, pruning.parts) == (5, len(only_old))
    assert steps == math.ceil(5 / 2) + math.ceil(len(only_old) / 2)  # in batches of two
    assert not Pruning(retention_days=7).step(db)  # nothing left

    kept = stored_rows(db)
    assert set(kept) == {row["id"] for row in new_rows}
    for original in new_rows:
        assert_same_bodies(kept[original["id"]], original)
        assert "no longer stored" not in json.dumps(kept[original["id"]])
    assert {row[0] for row in db.execute("SELECT hash FROM parts")} == new_parts
    assert_search_index_matches_flows(db)
    db.close()


def test_the_writer_prunes_a_large_backlog_and_still_writes_new_flows(tmp_path, monkeypatch):
    monkeypatch.setattr(prune, "PRUNE_BATCH", 50)
    path = str(tmp_path / "f.db")
    db = schema.open_db(path)
    old = now_text(30)
    with db.conn:
        schema.insert_flows(db, [{"id": f"old_{number}", "started_at": old, "conversation": "old words"}
                                 for number in range(3000)])
    db.close()
    writer: FlowWriter[dict] = FlowWriter(path, lambda record: record, retention_days=7)
    writer.start()
    new = _session_rows(2, session="s", prefix="new")
    for row in new:
        assert writer.submit(dict(row))
    deadline = time.monotonic() + 20
    while writer.written < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert writer.written == 2
    writer.close()
    db = schema.open_db(path)
    kept = stored_rows(db)
    assert set(kept) == {"new_000", "new_001"}
    for original in new:
        assert_same_bodies(kept[original["id"]], original)
    assert_search_index_matches_flows(db)
    db.close()


# -- the queue's byte bound


def _sized(request_id: str, size: int) -> dict:
    return {"id": request_id, "started_at": now_text(), "bytes": size}


def test_the_queue_takes_no_more_bytes_than_its_bound(tmp_path):
    path = str(tmp_path / "f.db")
    writer: FlowWriter[dict] = FlowWriter(path, lambda record: {k: v for k, v in record.items() if k != "bytes"},
                                          size=lambda record: record["bytes"], queue_bytes=1000)
    assert writer.submit(_sized("req_1", 400)) and writer.submit(_sized("req_2", 400))
    assert writer.queued_bytes == 800
    assert not writer.submit(_sized("req_3", 400))  # 1200 > 1000
    assert (writer.dropped, writer.queued_bytes, writer.depth) == (1, 800, 2)
    assert writer.submit(_sized("req_4", 200))  # exactly the bound
    assert not writer.submit(_sized("req_5", 1))
    assert writer.dropped == 2
    writer.start()
    writer.close()
    assert (writer.written, writer.queued_bytes) == (3, 0)
    assert {row["id"] for row in sqlite_utils.Database(path)["flows"].rows} == {"req_1", "req_2", "req_4"}


def test_a_record_larger_than_the_bound_is_taken_when_nothing_is_queued(tmp_path):
    writer: FlowWriter[dict] = FlowWriter(str(tmp_path / "f.db"), lambda record: record,
                                          size=lambda record: record["bytes"], queue_bytes=1000)
    assert writer.submit(_sized("req_big", 5000)) and writer.queued_bytes == 5000
    assert not writer.submit(_sized("req_small", 1)) and writer.dropped == 1
    unbounded: FlowWriter[dict] = FlowWriter(str(tmp_path / "g.db"), lambda record: record,
                                             size=lambda record: record["bytes"])
    assert all(unbounded.submit(_sized(f"req_{n}", 10**9)) for n in range(5)) and unbounded.dropped == 0


def test_queued_bytes_drain_to_zero_once_a_slow_writer_catches_up(tmp_path):
    release = threading.Event()

    def slow_row(record: dict) -> dict:
        release.wait(10)
        return {k: v for k, v in record.items() if k != "bytes"}

    writer: FlowWriter[dict] = FlowWriter(str(tmp_path / "f.db"), slow_row, size=lambda record: record["bytes"],
                                          queue_bytes=1000)
    writer.start()
    accepted = sum(writer.submit(_sized(f"req_{n}", 400)) for n in range(10))
    # Two fit; a third only if the writer took the first off the queue meanwhile (a record is always taken
    # when nothing is queued): never more.
    assert accepted in (2, 3) and writer.dropped == 10 - accepted
    assert writer.queued_bytes == 400 * accepted
    release.set()
    writer.close()
    assert (writer.written, writer.queued_bytes) == (accepted, 0)


def test_record_size_counts_bodies_and_stream_reads():
    def record(**fields: object) -> FlowRecord:
        return FlowRecord(id="req", started=0.0, method="POST", path="/v1/messages", client_addr="",
                          client_request=fields.pop("client_request", None), client_request_headers=(),
                          **fields)  # type: ignore[arg-type]

    empty = record_size(record())
    assert empty > 0
    bodies = record(client_request=b"a" * 1000, upstream_request=b"b" * 200, upstream_response=b"c" * 30,
                    client_response=b"d" * 4)
    assert record_size(bodies) - empty == 1234
    reads = StreamReads()
    for number in range(10):
        reads.add(float(number), b"u" * 100, [b"s" * 50, b"t" * 5])
    streamed = record_size(record(reads=reads))
    assert streamed - empty >= 1000 + 550
    reads.add(11.0, b"u" * 1000, [])
    assert record_size(record(reads=reads)) - streamed >= 1000


def test_a_query_interrupted_inside_ccany_body_ends_as_interrupted_without_a_traceback(tmp_path, monkeypatch):
    path = str(tmp_path / "f.db")
    write(path, _session_rows(20))
    db = schema.open_db(path)
    sqlite3.enable_callback_tracebacks(True)  # as Datasette turns them on: tracebacks go to sys.unraisablehook
    tracebacks: list = []
    monkeypatch.setattr(sys, "unraisablehook", tracebacks.append)

    def run_with_time_limit(function: str) -> None:
        """As Datasette's time limit does: a progress handler interrupts the query once it has run long enough."""
        steps = iter(range(10**9))
        db.conn.set_progress_handler(lambda: next(steps) > 30, 10)
        db.execute(f"SELECT {function}(client_request, client_request_parts) FROM flows").fetchall()

    # the same query with the body put together by a function registered as it is: interrupted inside it
    db.conn.create_function("bare_body", 2, lambda inline, manifest: body_text(db.conn, inline, manifest))
    with pytest.raises(sqlite3.OperationalError, match="user-defined function raised exception"):
        run_with_time_limit("bare_body")
    assert tracebacks
    tracebacks.clear()
    with pytest.raises(sqlite3.OperationalError, match="^interrupted$"):
        run_with_time_limit("ccany_body")
    assert not tracebacks
    db.conn.set_progress_handler(None, 100)
    assert len(db.execute("SELECT ccany_body(client_request, client_request_parts) FROM flows").fetchall()) == 20


FORENSICS = ("prefix_parts", "prefix_break", "upstream_prefix_parts", "upstream_prefix_break", "upstream_prefix_bytes",
             "upstream_prompt_bytes")


def test_a_session_resumed_after_a_restart_is_compared_and_packed_as_if_the_proxy_had_kept_running(tmp_path):
    rows = _session_rows(12)
    kept_running, restarted = str(tmp_path / "kept.db"), str(tmp_path / "restarted.db")
    write(kept_running, [dict(row) for row in rows])
    write(restarted, [dict(row) for row in rows[:6]])
    db = sqlite_utils.Database(restarted)
    parts_before = db["parts"].count
    write(restarted, [dict(row) for row in rows[6:]])  # a new writer: it remembers no session
    expected = {row["id"]: row for row in sqlite_utils.Database(kept_running)["flows"].rows}
    got = {row["id"]: row for row in db["flows"].rows}
    assert got[rows[6]["id"]]["prefix_parts"] is not None and got[rows[6]["id"]]["upstream_prefix_parts"]
    for row in rows:
        assert {name: got[row["id"]][name] for name in FORENSICS} == \
            {name: expected[row["id"]][name] for name in FORENSICS}, row["id"]
    stored = stored_rows(db)
    for row in rows:
        assert_same_bodies(stored[row["id"]], row)
    # the turns after the restart store what is new in them, as they do without one
    kept = sqlite_utils.Database(kept_running)
    assert db["parts"].count - parts_before == kept["parts"].count - len(flow_parts(kept, "id <= ?", (rows[5]["id"],)))
