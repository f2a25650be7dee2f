"""The flow log's writer thread, schema migrations and row building, on real SQLite files."""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlite_utils
from mitmproxy import http

from ccany_addon.anthropic_api.sse import encode_event
from ccany_addon.flowlog import schema
from ccany_addon.flowlog.part_store import register_functions, with_bodies
from ccany_addon.flowlog.record import FlowRecord, LogPolicy, StreamClock, StreamReads, StreamRecorder, to_row
from ccany_addon.flowlog.writer import OS_THREAD_NAME, FlowWriter
from ccany_addon.util.sqlite_migrations import migrate


def search(db: sqlite_utils.Database, query: str) -> list[dict]:
    """The flows whose searchable text matches, as Datasette's `_search` finds them."""
    return list(db.query("SELECT * FROM flows WHERE rowid IN (SELECT rowid FROM flows_fts WHERE flows_fts MATCH ?) "
                         "ORDER BY rowid", [query]))

def row(request_id: str, started_at: str | None = None) -> dict:
    return {"id": request_id, "started_at": started_at or "2026-11-21 10:00:00.000", "conversation": "words"}


def test_migrate_creates_the_schema_once_and_refuses_a_newer_db(tmp_path):
    path = str(tmp_path / "f.db")
    db = schema.open_db(path)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert set(db["flows"].columns_dict) == set(schema.FLOW_COLUMNS)
    assert "content=[flows_text]" in db.execute("SELECT sql FROM sqlite_master WHERE name = 'flows_fts'").fetchone()[0]
    indexed = {tuple(index.columns) for index in db["flows"].indexes}
    assert {tuple(columns) for columns in schema.FLOW_INDEXES} <= indexed
    assert migrate(db, schema.MIGRATIONS, "flow DB") == schema.VERSION
    db.execute(f"PRAGMA user_version = {schema.VERSION + 1}")
    with pytest.raises(RuntimeError, match=f"flow DB is at schema version {schema.VERSION + 1}, newer"):
        migrate(db, schema.MIGRATIONS, "flow DB")


def test_writer_writes_every_queued_record_on_close(tmp_path):
    path = str(tmp_path / "f.db")
    writer: FlowWriter[dict] = FlowWriter(path, lambda record: record)
    writer.start()
    for number in range(1000):
        assert writer.submit(row(f"req_{number}"))
    writer.close()
    assert sqlite_utils.Database(path)["flows"].count == 1000
    assert writer.written == 1000 and writer.dropped == 0


def _os_thread_names() -> list[str]:
    return [Path(task, "comm").read_text().strip() for task in Path("/proc/self/task").iterdir()]


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="the OS names threads in /proc on Linux only")
def test_the_writer_thread_is_named_for_top_and_ps(tmp_path):
    """`top -H` and the bench tell the writer's CPU from the proxy's by the thread's OS name."""
    writer: FlowWriter[dict] = FlowWriter(str(tmp_path / "f.db"), lambda record: record)
    writer.start()
    deadline = time.monotonic() + 5
    while OS_THREAD_NAME not in _os_thread_names() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert OS_THREAD_NAME in _os_thread_names()
    writer.close()


def test_full_queue_drops_are_counted_and_logged(tmp_path, caplog):
    release = threading.Event()

    def slow_row(record: dict) -> dict:
        release.wait(10)
        return record

    writer: FlowWriter[dict] = FlowWriter(str(tmp_path / "f.db"), slow_row, queue_size=5)
    writer.start()
    accepted = sum(writer.submit(row(f"req_{number}")) for number in range(50))
    assert writer.dropped == 50 - accepted and writer.dropped >= 40
    assert "flow log queue full" in caplog.text
    release.set()
    writer.close()
    assert writer.written == accepted


def test_writer_waits_out_a_briefly_locked_db(tmp_path):
    path = str(tmp_path / "f.db")
    schema.open_db(path).close()
    blocker = sqlite3.connect(path, timeout=0)
    blocker.execute("BEGIN IMMEDIATE")
    writer: FlowWriter[dict] = FlowWriter(path, lambda record: record)
    writer.start()
    writer.submit(row("req_locked"))
    time.sleep(0.3)
    blocker.rollback()
    writer.close()
    assert writer.failed == 0 and sqlite_utils.Database(path)["flows"].count == 1


def test_a_record_that_cannot_be_built_is_counted_not_fatal(tmp_path):
    def build(record: dict) -> dict:
        if record["id"] == "req_bad":
            raise ValueError("broken record")
        return record

    writer: FlowWriter[dict] = FlowWriter(str(tmp_path / "f.db"), build)
    writer.start()
    for request_id in ("req_1", "req_bad", "req_2"):
        writer.submit(row(request_id))
    writer.close()
    assert (writer.written, writer.failed) == (2, 1)


def test_rows_older_than_the_retention_are_pruned(tmp_path):
    path = str(tmp_path / "f.db")
    old = (datetime.now(UTC) - timedelta(days=10)).strftime("%Y-%m-%d %H:%M:%S.000")
    new = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S.000")
    db = schema.open_db(path)
    with db.conn:
        schema.insert_flows(db, [row("req_old", old), row("req_new", new)])
    writer: FlowWriter[dict] = FlowWriter(path, lambda record: record, retention_days=7)
    writer.start()
    writer.close()
    assert [r["id"] for r in sqlite_utils.Database(path)["flows"].rows] == ["req_new"]
    assert_search_index_matches_flows(sqlite_utils.Database(path))


def test_full_text_search_finds_a_flow_by_its_conversation(tmp_path):
    path = str(tmp_path / "f.db")
    writer: FlowWriter[dict] = FlowWriter(path, lambda record: record)
    writer.start()
    writer.submit({**row("req_a"), "conversation": "the quick brown aardvark"})
    writer.submit({**row("req_b"), "conversation": "nothing to see"})
    writer.submit({**row("req_c"), "conversation": None})
    time.sleep(0.3)  # the writer's next batch, in its own transaction
    writer.submit({**row("req_d"), "conversation": "an aardvark again"})
    writer.close()
    db = sqlite_utils.Database(path)
    assert sorted(r["id"] for r in search(db, "aardvarks")) == ["req_a", "req_d"]
    assert_search_index_matches_flows(db)


def test_a_flow_recorded_twice_keeps_its_first_row(tmp_path):
    db = schema.open_db(str(tmp_path / "f.db"))
    with db.conn:
        schema.insert_flows(db, [{**row("req_a"), "conversation": "first"}, {**row("req_a"), "conversation": "second"}])
    with db.conn:
        schema.insert_flows(db, [{**row("req_a"), "conversation": "third"}, {**row("req_b"), "conversation": "other"}])
    assert [(r["id"], r["conversation"]) for r in db["flows"].rows] == [("req_a", "first"), ("req_b", "other")]
    assert [r["id"] for r in search(db, "first OR second OR third")] == ["req_a"]
    assert_search_index_matches_flows(db)


def assert_search_index_matches_flows(db: sqlite_utils.Database) -> None:
    """FTS5's own check of the index against the flows' text (raises on any mismatch); the text of a row since
    version 7 is a part, read through the SQL functions."""
    register_functions(db.conn)
    db.execute("INSERT INTO flows_fts (flows_fts, rank) VALUES ('integrity-check', 1)")


def test_a_version_3_db_keeps_its_search_index_after_the_migration(tmp_path):
    path = str(tmp_path / "f.db")
    old = sqlite_utils.Database(path)
    migrate(old, schema.MIGRATIONS[:3], "flow DB")
    old["flows"].insert({**row("req_before"), "conversation": "written by an older ccany"})
    old.close()
    db = schema.open_db(path)
    with db.conn:
        schema.insert_flows(db, [{**row("req_after"), "conversation": "written by this ccany"}])
    assert sorted(r["id"] for r in search(db, "written")) == ["req_after", "req_before"]
    with db.conn:
        db.execute("DELETE FROM flows WHERE id = 'req_before'")
    assert [r["id"] for r in search(db, "written")] == ["req_after"]
    assert_search_index_matches_flows(db)


def _fake_translator(data: bytes) -> list[bytes]:
    """Anthropic events for upstream bytes: a start, then one text delta per chunk."""
    if data == b"start":
        return [encode_event({"type": "message_start", "message": {"content": [], "usage": {}}})
                + encode_event({"type": "content_block_start", "index": 0,
                                "content_block": {"type": "text", "text": ""}})]
    if data:
        return [encode_event({"type": "content_block_delta", "index": 0,
                              "delta": {"type": "text_delta", "text": data.decode()}})]
    return []


def test_stream_record_becomes_a_timeline_and_a_message_with_secrets_and_caps_applied():
    recorder = StreamRecorder(_fake_translator)
    started = time.time()
    assert recorder(b"start") == _fake_translator(b"start")
    assert recorder.first_token_at is None
    time.sleep(0.02)
    recorder(b"Hi ")
    recorder(b"there sk-live-abcdefghijkl")
    recorder(b"")
    record = FlowRecord(
        id="req_x", started=started, method="POST", path="/v1/messages", client_addr="127.0.0.1",
        client_request=b'{"messages": [{"role": "user", "content": "secret sk-live-abcdefghijkl"}]}',
        client_request_headers=((b"X-Api-Key", b"sk-live-abcdefghijkl"), (b"User-Agent", b"claude-cli/2")),
        is_stream=True, reads=recorder.reads,
        first_token_at=recorder.first_token_at, ended=time.time(),
    )
    result = to_row(record, LogPolicy("all", 1000, ("sk-live-abcdefghijkl",)))
    assert "sk-live" not in str(result)
    assert result["user_agent"] == "claude-cli/2" and '"x-api-key":"[redacted]"' in result["client_request_headers"]
    assert '"text":"Hi there [redacted]"' in result["client_response"]
    assert result["upstream_response"] == "startHi there [redacted]" and result["truncated"] is None
    assert result["chunk_count"] == 3 and result["max_chunk_gap_ms"] >= 20
    timeline = json.loads(result["events"])
    assert [event[1] for event in timeline] == ["message_start", "content_block_start"] + ["content_block_delta"] * 2
    assert timeline[2][0] == result["ttft_ms"] > timeline[0][0] and timeline[0][0] == timeline[1][0]
    assert sum(event[3] for event in timeline) == len(recorder.reads.sent)
    assert result["conversation"] == "secret [redacted]\nHi there [redacted]"
    assert to_row(record, LogPolicy("none", 1000))["client_request"] is None
    capped = to_row(record, LogPolicy("all", 8))
    assert capped["upstream_response"] == "startHi " and "upstream_response" in capped["truncated"].split(",")


@pytest.mark.parametrize("client_request", [
    '{"messages":[{"role":"user","content":"déjà vu, key sk-live-abcdefghijkl"}]}'.encode(),
    '{"messages":[{"role":"user","content":"ééééééééééééééééééééééééééééééééé"}]}'.encode(),  # cut inside a character
    b'{"messages":[{"role":"user","content":"not UTF-8: \xff\xfe"}]}',
    b"plain text, not JSON, sk-live-abcdefghijkl",
])
def test_bodies_left_as_bytes_for_the_packing_writer_read_back_as_the_text_rows_keep(tmp_path, client_request):
    record = FlowRecord(id="req_raw", started=100.0, method="POST", path="/v1/messages", client_addr="",
                        client_request=client_request, client_request_headers=(), client_response=client_request,
                        ended=101.0)
    policy = LogPolicy("all", 60, ("sk-live-abcdefghijkl",))
    text_row, raw_row = to_row(record, policy), to_row(record, policy, raw_bodies=True)
    assert isinstance(raw_row["client_request"], bytes) and isinstance(text_row["client_request"], str)
    assert raw_row["truncated"] == text_row["truncated"] and b"sk-live" not in raw_row["client_request"]
    path = str(tmp_path / "f.db")
    writer = FlowWriter(path, lambda row: row)
    writer.start()
    for number, row in enumerate((text_row, raw_row)):
        writer.submit({**row, "id": f"req_{number}"})
    writer.close()
    conn = sqlite3.connect(path)
    conn.row_factory = sqlite3.Row
    register_functions(conn)
    stored = [with_bodies(conn, dict(row)) for row in conn.execute("SELECT * FROM flows ORDER BY id")]
    assert [row["client_request_parts"] is not None for row in stored] == [True, True]
    for name in ("client_request", "client_response"):
        assert stored[0][name] == stored[1][name] == text_row[name], name


def test_stream_reads_give_each_reads_bytes_back():
    reads = StreamReads()
    reads.add(1.0, b"up1", [])  # held back: nothing sent
    reads.add(2.0, b"up2", [b"a\n\n", b"b\n\n"])  # several chunks of one read come back as one
    reads.add(3.0, b"", [b"end\n\n"])  # the end of input, with a last event
    reads.add(4.0, b"", [])
    assert bytes(reads.upstream) == b"up1up2" and bytes(reads.sent) == b"a\n\nb\n\nend\n\n"
    assert reads.sent_by_read() == [(2.0, b"a\n\nb\n\n"), (3.0, b"end\n\n")]
    assert reads.upstream_times() == [1.0, 2.0]


def test_stream_clock_notes_the_first_token_then_hands_the_stream_back_to_the_translator():
    response = http.Response.make(200)
    clock = response.stream = StreamClock(_fake_translator, response)
    assert clock(b"start") == _fake_translator(b"start") and clock.first_token_at is None
    assert response.stream is clock
    before = time.time()
    assert clock(b"Hi") == _fake_translator(b"Hi")
    first = clock.first_token_at
    assert first is not None and before <= first <= time.time()
    assert response.stream is _fake_translator


def _stream_row(sent: list[tuple[float, bytes]], message: dict | None = None) -> dict:
    reads = StreamReads()
    for at, chunk in sent:
        reads.add(at, b"data", [chunk])
    record = FlowRecord(id="req_s", started=100.0, method="POST", path="/v1/messages", client_addr="",
                        client_request=None, client_request_headers=(), is_stream=True, reads=reads, message=message)
    return to_row(record, LogPolicy("all", 1 << 20))


def test_timeline_read_from_event_heads_is_what_parsing_every_event_gives():
    own = [encode_event({"type": "message_start", "message": {"id": "msg_1", "content": [], "usage": {}}}),
           encode_event({"type": "ping"}),
           encode_event({"type": "content_block_start", "index": 12, "content_block": {"type": "text", "text": ""}}),
           encode_event({"type": "content_block_delta", "index": 12,
                         "delta": {"type": "text_delta", "text": '"index":3, event: ping'}}),
           encode_event({"type": "content_block_stop", "index": 12})]
    # Another server's layout: the index after the payload, and an event line that is not the payload's type.
    foreign = [b'event: content_block_delta\ndata: {"delta":{"type":"text_delta","text":"x"},'
               b'"type":"content_block_delta","index":12}\n\n',
               b'event: delta\ndata: {"type":"content_block_stop","index":12}\n\n',
               encode_event({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {}})]
    sent = [(100.0, b"".join(own[:2])), (100.0125, b"".join(own[2:])), (100.5, b"".join(foreign))]
    parsed = []
    for at, chunk in sent:
        for block in chunk.split(b"\n\n")[:-1]:
            event = json.loads(block.split(b"data: ", 1)[1])
            parsed.append([round((at - 100.0) * 1000, 3), event["type"], event.get("index"), len(block) + 2])
    timeline = json.loads(_stream_row(sent)["events"])
    assert timeline == parsed
    assert [event[2] for event in timeline] == [None, None, 12, 12, 12, 12, 12, None]


def test_a_streams_message_comes_from_its_writer_when_the_gateway_wrote_it():
    sent = [(100.0, encode_event({"type": "message_start", "message": {"id": "msg_1", "content": [], "usage": {}}}))]
    assert json.loads(_stream_row(sent)["client_response"]) == {"id": "msg_1", "content": [], "usage": {}}
    written = {"id": "msg_1", "content": [{"type": "text", "text": "from the writer"}], "usage": {}}
    row = _stream_row(sent, written)
    assert json.loads(row["client_response"]) == written and "from the writer" in row["conversation"]


def test_conversation_from_the_gateways_parsed_message_matches_the_raw_request():
    from ccany_addon.anthropic_api.schema import MessagesRequest

    body = {"model": "claude-sonnet-4-5", "max_tokens": 10, "messages": [
        {"role": "user", "content": "first question"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "Read",
                                           "input": {"file_path": "/a"}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "file body"}],
             "cache_control": {"type": "ephemeral"}},
            {"type": "text", "text": "and now?"}]}]}
    raw = json.dumps(body).encode()
    answer = b'{"content": [{"type": "text", "text": "the answer"}]}'
    from_bytes = FlowRecord(id="req_a", started=0.0, method="POST", path="/v1/messages", client_addr="",
                            client_request=raw, client_request_headers=(), client_response=answer)
    from_model = FlowRecord(id="req_b", started=0.0, method="POST", path="/v1/messages", client_addr="",
                            client_request=raw, client_request_headers=(), client_response=answer,
                            last_message=MessagesRequest.model_validate(body).messages[-1])
    policy = LogPolicy("all", 1 << 20)
    assert to_row(from_model, policy)["conversation"] == to_row(from_bytes, policy)["conversation"] \
        == "file body\nand now?\nthe answer"


# -- a stop loses nothing: bad rows, a refusing database, the WAL, file modes, hooks that fail, the listeners


def written_rows(path: str) -> dict[str, dict]:
    """The rows by id, their bodies (parts since version 7) whole."""
    db = sqlite_utils.Database(path)
    register_functions(db.conn)
    return {r["id"]: with_bodies(db.conn, r) for r in db["flows"].rows}


def test_one_poisoned_row_does_not_take_its_batch_down_and_is_stored_as_text(tmp_path):
    path = str(tmp_path / "f.db")
    writer: FlowWriter[dict] = FlowWriter(path, lambda record: record, scrub=lambda text: text.replace("sk-x", "***"))
    writer.start()
    for number in range(40):
        writer.submit(row(f"req_{number}"))
    writer.submit({**row("req_dict"), "input_tokens": {"echo": "sk-x"}, "notes": '["converted"]'})
    writer.submit({**row("req_huge"), "output_tokens": 2**70})
    writer.submit({**row("req_surrogate"), "client_response": "half \ud800 a pair"})
    writer.close()
    rows = written_rows(path)
    assert len(rows) == 43 and (writer.written, writer.degraded, writer.failed) == (43, 3, 0)
    assert rows["req_dict"]["input_tokens"] == '{"echo": "***"}'
    assert json.loads(rows["req_dict"]["notes"]) == ["converted", "flow log: stored as text: input_tokens"]
    assert rows["req_huge"]["output_tokens"] == float(2**70)  # as text; the INTEGER column's affinity makes it REAL
    assert json.loads(rows["req_huge"]["notes"]) == ["flow log: stored as text: output_tokens"]
    assert rows["req_surrogate"]["client_response"] == "half ? a pair"
    assert rows["req_7"]["notes"] is None and rows["req_7"]["conversation"] == "words"
    assert_search_index_matches_flows(sqlite_utils.Database(path))


def test_a_row_that_cannot_be_stored_as_text_is_stored_without_its_bodies(tmp_path, monkeypatch):
    from ccany_addon.flowlog import store

    class Unprintable:
        def __repr__(self) -> str:
            raise RuntimeError("no")

    def still_bad(bad_row: dict, scrub) -> dict:
        return bad_row

    monkeypatch.setattr(store, "_VERSIONS", (store.as_is, still_bad, store.stripped))
    db = schema.open_db(str(tmp_path / "f.db"))
    bad = {**row("req_x"), "conversation": Unprintable(), "client_model": Unprintable(), "status_code": 200}
    assert store.store_batch(db, [row("req_ok"), bad]) == store.Stored(written=2, degraded=1, failed=0)
    kept = written_rows(str(tmp_path / "f.db"))["req_x"]
    assert (kept["conversation"], kept["client_model"], kept["status_code"]) == (None, None, 200)
    assert json.loads(kept["notes"]) == ["flow log: stored without its bodies, which could not be written"]
    assert store.as_text(bad)["client_model"] == "<unprintable Unprintable>"


def test_a_record_to_row_fails_on_is_salvaged_as_a_minimal_row(tmp_path, caplog):
    from ccany_addon.flowlog.record import minimal_row

    def build(record: FlowRecord) -> dict:
        raise KeyError("sk-secret-in-a-message")

    record = FlowRecord(id="req_m", started=1_760_000_000.0, method="POST", path="/v1/messages", client_addr="",
                        client_request=b"body", client_request_headers=(), status_code=200, error_type="api_error")
    path = str(tmp_path / "f.db")
    writer: FlowWriter[FlowRecord] = FlowWriter(path, build, salvage=minimal_row)
    writer.start()
    writer.submit(record)
    writer.close()
    saved = written_rows(path)["req_m"]
    assert (saved["status_code"], saved["error_type"], saved["client_request"]) == (200, "api_error", None)
    assert "KeyError" in saved["notes"] and (writer.written, writer.degraded, writer.failed) == (1, 1, 0)
    assert "KeyError at" in caplog.text and "sk-secret" not in caplog.text


def locked_for(path: str, seconds: float) -> threading.Thread:
    """Another writer holding the DB's write lock for `seconds`."""
    blocker = sqlite3.connect(path, timeout=5, check_same_thread=False)  # the writer may be starting up
    blocker.execute("BEGIN IMMEDIATE")

    def release() -> None:
        time.sleep(seconds)
        blocker.rollback()
        blocker.close()

    thread = threading.Thread(target=release)
    thread.start()
    return thread


def test_a_batch_the_database_refuses_is_retried_with_backoff_until_it_recovers(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(schema, "BUSY_TIMEOUT_MS", 20)  # "database is locked" at once, not after 5 s
    from ccany_addon.flowlog import writer as writer_module

    attempts: list[float] = []
    real_store = writer_module.store_batch

    def counted_store(*args, **kwargs):
        attempts.append(time.monotonic())
        return real_store(*args, **kwargs)

    monkeypatch.setattr(writer_module, "store_batch", counted_store)
    path = str(tmp_path / "f.db")
    schema.open_db(path).close()
    writer: FlowWriter[dict] = FlowWriter(path, lambda record: record, queue_size=150)
    writer.start()
    release = locked_for(path, 1.5)
    for number in range(200):  # 150 queue while the batch waits; the last 50 are dropped
        writer.submit(row(f"req_{number}"))
    time.sleep(0.5)
    assert writer.written == 0 and writer.depth > 0 and writer.failed == 0
    assert "refused a batch" in caplog.text
    release.join()
    time.sleep(1.0)
    assert writer.written == 150 and writer.failed == 0 and writer.dropped == 50
    gaps = [later - earlier for earlier, later in zip(attempts, attempts[1:], strict=False)][:4]
    assert all(later > earlier for earlier, later in zip(gaps, gaps[1:], strict=False)), gaps  # backing off
    writer.close()
    assert len(written_rows(path)) == 150


def test_a_batch_refused_past_the_bound_is_counted_failed_and_the_log_moves_on(tmp_path, monkeypatch, caplog):
    from ccany_addon.flowlog.writer import Backoff

    monkeypatch.setattr(schema, "BUSY_TIMEOUT_MS", 20)
    path = str(tmp_path / "f.db")
    schema.open_db(path).close()
    writer: FlowWriter[dict] = FlowWriter(path, lambda record: record,
                                          backoff=Backoff(first=0.05, give_up_after=0.4, on_stop=0.2))
    writer.start()
    release = locked_for(path, 1.0)
    for number in range(10):
        writer.submit(row(f"req_{number}"))
    release.join()
    writer.submit(row("req_after"))
    time.sleep(0.8)
    assert (writer.failed, writer.written) == (10, 1) and "10 flows could not be written" in caplog.text
    # At a stop, a refusing database gets `on_stop` seconds, then what is left is counted, not waited for.
    release = locked_for(path, 3.0)
    writer.submit(row("req_at_stop"))
    started = time.monotonic()
    writer.close()
    assert time.monotonic() - started < 2.0 and writer.failed == 11 and writer.depth == 0
    release.join()
    assert set(written_rows(path)) == {"req_after"}


def test_submits_after_close_are_counted_as_dropped(tmp_path):
    writer: FlowWriter[dict] = FlowWriter(str(tmp_path / "f.db"), lambda record: record)
    writer.start()
    writer.close()
    assert not writer.submit(row("req_late")) and writer.dropped == 1


def test_the_wal_is_truncated_once_a_long_reader_lets_go_and_on_close(tmp_path):
    from ccany_addon.flowlog.writer import Checkpoints

    path = str(tmp_path / "f.db")
    wal = tmp_path / "f.db-wal"
    writer: FlowWriter[dict] = FlowWriter(path, lambda record: record, checkpoints=Checkpoints(every=0.2))
    writer.start()
    reader = sqlite3.connect(path)
    assert reader.execute("PRAGMA journal_size_limit").fetchone()[0] == -1  # per connection: the writer's own
    reader.execute("BEGIN")
    reader.execute("SELECT count(*) FROM flows").fetchone()  # holds its snapshot: the WAL cannot restart
    for number in range(300):
        # random text: stored compressed, repeated text would hardly grow the WAL
        writer.submit({**row(f"req_{number}"), "conversation": f"words {number} " + os.urandom(10_000).hex()})
    time.sleep(1.0)
    grown = wal.stat().st_size
    assert writer.written == 300 and grown > 2_000_000
    reader.rollback()
    deadline = time.monotonic() + 3
    while wal.stat().st_size and time.monotonic() < deadline:
        time.sleep(0.05)
    assert wal.stat().st_size == 0
    writer.submit(row("req_last"))
    writer.close()
    assert wal.stat().st_size == 0  # the reader's connection keeps the file; the close truncated it
    assert reader.execute("SELECT count(*) FROM flows").fetchone()[0] == 301
    reader.close()


def test_a_new_flow_db_and_its_wal_and_shm_are_created_0600(tmp_path):
    import os
    import stat

    path = tmp_path / "f.db"
    db = schema.open_db(str(path))
    with db.conn:
        schema.insert_flows(db, [row("req_a")])
    modes = {name: stat.S_IMODE(os.stat(tmp_path / name).st_mode) for name in ("f.db", "f.db-wal", "f.db-shm")}
    assert modes == {"f.db": 0o600, "f.db-wal": 0o600, "f.db-shm": 0o600}
    db.close()


def test_an_existing_db_readable_by_others_keeps_its_mode_with_a_warning(tmp_path, caplog):
    import os

    path = tmp_path / "f.db"
    schema.open_db(str(path)).close()
    os.chmod(path, 0o644)
    writer: FlowWriter[dict] = FlowWriter(str(path), lambda record: record)
    writer.start()
    writer.close()
    assert os.stat(path).st_mode & 0o777 == 0o644 and "readable by other users" in caplog.text


class _Metrics:
    def __init__(self, fail: bool = False) -> None:
        self.fail, self.observed, self.gauges = fail, 0, {}

    def observe_flow(self, *args: object) -> None:
        if self.fail:
            raise ValueError("sk-known-secret-0001 in a metrics label")
        self.observed += 1


class _Gateway:
    """What FlowLog reads of the gateway: flow states, metrics, known secrets."""

    def __init__(self, metrics: _Metrics) -> None:
        self.states: dict[str, object] = {}
        self.metrics = metrics
        self.known_secrets = ("sk-known-secret-0001",)

    def state(self, flow: http.HTTPFlow):
        state = self.states[flow.id]  # a flow the test gave no state: KeyError, as a gateway bug would raise
        return state


def _state(request_id: str, **facts: object):
    """A gateway's flow state whose record holds `facts`."""
    from ccany_addon.flowlog.record import FlowRecord
    from ccany_addon.proxy.flow_state import FlowState

    return FlowState(FlowRecord(id=request_id, started=time.time(), method="POST", path="/v1/messages",
                                client_addr="", client_request=None, client_request_headers=(), **facts))


def _flow_log(tmp_path, metrics: _Metrics):
    from ccany_addon.flowlog.addon import FlowLog
    from ccany_addon.flowlog.record import minimal_row

    gateway = _Gateway(metrics)
    flowlog = FlowLog(gateway)  # type: ignore[arg-type]
    path = str(tmp_path / "f.db")
    flowlog.writer = FlowWriter(path, lambda record: to_row(record, LogPolicy()), salvage=minimal_row)
    flowlog.writer.start()
    return flowlog, gateway, path


def test_flow_log_hooks_never_raise_and_every_loss_is_counted_without_secrets(tmp_path, caplog):
    from mitmproxy.test import tflow

    flowlog, gateway, path = _flow_log(tmp_path, _Metrics(fail=True))
    readable, unreadable, stateless = tflow.tflow(resp=True), tflow.tflow(resp=True), tflow.tflow(resp=True)
    gateway.states[readable.id] = _state("req_readable", client_model="claude-sonnet-4-5")
    gateway.states[unreadable.id] = _state("req_unreadable")
    gateway.states[unreadable.id].error = object()  # no .error_type
    for flow in (readable, unreadable, stateless):
        flowlog.requestheaders(flow)
        flowlog.responseheaders(flow)
        flowlog.response(flow)
    flowlog.done()
    rows = written_rows(path)
    assert set(rows) == {"req_readable", "req_unreadable"} and not flowlog.in_flight
    assert rows["req_readable"]["client_model"] == "claude-sonnet-4-5"  # written although the metrics raised
    assert "could not be read whole (AttributeError)" in rows["req_unreadable"]["notes"]
    assert (flowlog.failed, flowlog.degraded) == (1, 1)  # the flow without a state is the one lost
    assert "KeyError at" in caplog.text and "sk-known-secret" not in caplog.text


def test_done_logs_flows_still_in_flight_as_interrupted_and_ignores_their_late_end(tmp_path):
    from mitmproxy.test import tflow

    from ccany_addon.upstreams.routing import GatewayError

    flowlog, gateway, path = _flow_log(tmp_path, _Metrics())
    finished, waiting, failing = tflow.tflow(resp=True), tflow.tflow(), tflow.tflow(resp=True)
    for flow, request_id in ((finished, "req_finished"), (waiting, "req_waiting"), (failing, "req_failing")):
        gateway.states[flow.id] = _state(request_id, client_model="claude-haiku-4-5")
        flowlog.requestheaders(flow)
    gateway.states[failing.id].error = GatewayError(500, "upstream went away")
    flowlog.response(finished)
    flowlog.done()
    flowlog.error(waiting)  # mitmproxy cancelling the connection after `done`: already logged
    rows = written_rows(path)
    assert rows["req_finished"]["error_type"] is None
    assert (rows["req_waiting"]["error_type"], rows["req_waiting"]["status_code"]) == ("interrupted", None)
    assert rows["req_waiting"]["client_model"] == "claude-haiku-4-5"
    assert rows["req_failing"]["error_type"] == "interrupted" and rows["req_failing"]["status_code"] == 200
    assert "before that: api_error: upstream went away" in rows["req_failing"]["error_message"]
    assert flowlog.writer is not None and flowlog.writer.dropped == 0 and flowlog.failed == 0


def test_graceful_stop_closes_mitmproxys_listeners_then_waits_for_flows_in_flight():
    """Uses mitmproxy's private `Proxyserver.servers` and `ServerInstance.stop` (12.2): fails when they change."""
    import asyncio
    import socket

    from mitmproxy.addons.proxyserver import Proxyserver
    from mitmproxy.test import taddons, tflow

    from ccany_addon.flowlog.addon import FlowLog
    from ccany_addon.flowlog.shutdown import GracefulStop
    from ccany_addon.proxy.mitm_compat import stop_listening

    async def scenario() -> None:
        proxyserver = Proxyserver()
        flowlog = FlowLog(_Gateway(_Metrics()))  # type: ignore[arg-type]
        stopper = GracefulStop(flowlog)
        with taddons.context(proxyserver, stopper) as context:
            context.configure(proxyserver, mode=["reverse:http://127.0.0.1:9"], listen_host="127.0.0.1",
                              listen_port=0)
            context.configure(stopper, ccany_shutdown_grace=1)
            assert await proxyserver.setup_servers()
            port = proxyserver.listen_addrs()[0][1]
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
            slow, stuck = tflow.tflow(), tflow.tflow()
            flowlog.requestheaders(slow)
            flowlog.requestheaders(stuck)
            asyncio.get_running_loop().call_later(0.2, flowlog.response, slow)
            started = time.monotonic()
            await stopper.done()
            waited = time.monotonic() - started
            assert flowlog.draining and list(flowlog.in_flight) == [stuck] and 0.9 < waited < 1.5
            with pytest.raises(ConnectionRefusedError):
                socket.create_connection(("127.0.0.1", port), timeout=2)
            assert await stop_listening() == 0  # nothing left to close
            flowlog.response(stuck)
            context.configure(stopper, ccany_shutdown_grace=5)
            started = time.monotonic()
            await stopper.done()  # nothing in flight: no wait
            assert time.monotonic() - started < 0.2

    asyncio.run(scenario())


def test_an_unexpected_failure_loses_its_batch_not_the_writer_thread(tmp_path, monkeypatch):
    from ccany_addon.flowlog import writer as writer_module

    calls: list[int] = []

    def broken_once(db, rows, *args):
        calls.append(len(rows))
        if len(calls) == 1:
            raise RuntimeError("a bug")
        return real(db, rows, *args)

    real = writer_module.store_batch
    monkeypatch.setattr(writer_module, "store_batch", broken_once)
    path = str(tmp_path / "f.db")
    writer: FlowWriter[dict] = FlowWriter(path, lambda record: record)
    writer.start()
    writer.submit(row("req_lost"))
    time.sleep(0.4)
    writer.submit(row("req_kept"))
    writer.close()
    assert (writer.failed, writer.written) == (1, 1) and set(written_rows(path)) == {"req_kept"}
