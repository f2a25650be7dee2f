"""The flow log's writer thread, schema migrations and row building, on real SQLite files."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
import sqlite_utils
from mitmproxy import http

from ccany_addon.flowlog import schema
from ccany_addon.flowlog.record import FlowRecord, LogPolicy, StreamClock, StreamReads, StreamRecorder, to_row
from ccany_addon.flowlog.writer import FlowWriter
from ccany_addon.migrations import migrate
from ccany_addon.sse import encode_event


def row(request_id: str, started_at: str | None = None) -> dict:
    return {"id": request_id, "started_at": started_at or "2026-11-21 10:00:00.000", "conversation": "words"}


def test_migrate_creates_the_schema_once_and_refuses_a_newer_db(tmp_path):
    path = str(tmp_path / "f.db")
    db = schema.open_db(path)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert set(db["flows"].columns_dict) == set(schema.FLOW_COLUMNS)
    assert db["flows"].detect_fts() == "flows_fts"
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
    assert sorted(r["id"] for r in db["flows"].search("aardvarks")) == ["req_a", "req_d"]
    assert_search_index_matches_flows(db)


def test_a_flow_recorded_twice_keeps_its_first_row(tmp_path):
    db = schema.open_db(str(tmp_path / "f.db"))
    with db.conn:
        schema.insert_flows(db, [{**row("req_a"), "conversation": "first"}, {**row("req_a"), "conversation": "second"}])
    with db.conn:
        schema.insert_flows(db, [{**row("req_a"), "conversation": "third"}, {**row("req_b"), "conversation": "other"}])
    assert [(r["id"], r["conversation"]) for r in db["flows"].rows] == [("req_a", "first"), ("req_b", "other")]
    assert [r["id"] for r in db["flows"].search("first OR second OR third")] == ["req_a"]
    assert_search_index_matches_flows(db)


def assert_search_index_matches_flows(db: sqlite_utils.Database) -> None:
    """FTS5's own check of the index against the flows table (raises on any mismatch)."""
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
    assert sorted(r["id"] for r in db["flows"].search("written")) == ["req_after", "req_before"]
    with db.conn:
        db.execute("DELETE FROM flows WHERE id = 'req_before'")
    assert [r["id"] for r in db["flows"].search("written")] == ["req_after"]
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
    from ccany_addon.schema import MessagesRequest

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
