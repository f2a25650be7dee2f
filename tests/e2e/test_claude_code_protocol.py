"""The real Claude Code CLI (2.1.332) acting on the gateway's words: a refused late system message makes it retry
once without it, and a wrong client key stops it at once instead of a three-minute retry loop."""

from __future__ import annotations

import sqlite3
import time

from tests.conftest import config_db, start_proxy, stop
from tests.e2e.flow_db import connect
from tests.e2e.test_claude_code import run_claude


def flows(proxy) -> list[tuple]:
    time.sleep(1.0)  # the writer's batch
    with sqlite3.connect(proxy.db) as conn:
        return conn.execute("select status_code, error_message from flows where path like '/v1/messages%' "
                            "order by started_at").fetchall()


def test_a_backend_that_refuses_late_system_messages_does_not_break_the_session(fake_upstream, tmp_path):
    proxy = start_proxy(fake_upstream.url, tmp_path, "ccany_big_model=scenario:strict_system",
                        "ccany_small_model=scenario:strict_system")
    try:
        result = run_claude(proxy, tmp_path, "Say hello")
        rows = flows(proxy)
    finally:
        stop(proxy.process)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "streamed answer from the fake upstream" in result.stdout
    refused = [row for row in rows if row[0] == 400]
    assert refused and all(row[1] == "capability_rejected: mid_conv_system" for row in refused)
    assert len(refused) == 1  # one refusal, then the CLI sends the conversation without the system message
    assert rows[-1][0] == 200


def test_a_wrong_client_key_fails_fast_after_one_request(fake_upstream, tmp_path):
    from ccany_addon.config import store

    path = tmp_path / "config.db"
    db = config_db(path)
    store.create_client_key(db, "test", "the only key")  # the CLI's own key is not it
    db.close()
    proxy = start_proxy(fake_upstream.url, tmp_path, f"ccany_config_db={path}")
    try:
        started = time.monotonic()
        result = run_claude(proxy, tmp_path, "Say hello")
        elapsed = time.monotonic() - started
        rows = flows(proxy)
    finally:
        stop(proxy.process)
    assert result.returncode != 0 and elapsed < 10, (elapsed, result.stdout)
    assert [row[0] for row in rows] == [401], rows


def test_tool_search_loads_a_deferred_tool_without_a_400_and_the_requests_stay_small(proxy, fake_upstream, tmp_path):
    """2.1.332 sends its deferred tools by name only; ToolSearch's result holds a tool_reference, which the
    gateway turns into that tool's function declaration upstream. Had it refused the block (as every unknown block
    type used to be), the CLI would turn tool search off and declare every tool in full: 89 KB a turn, not ~50."""
    fake_upstream.clear()
    with sqlite3.connect(proxy.db) as conn:
        before = {row[0] for row in conn.execute("select id from flows")}
    result = run_claude(proxy, tmp_path, "Load the tool NotebookEdit")
    assert result.returncode == 0, result.stdout + result.stderr
    sent = [r["body"] for r in fake_upstream.requests() if r["path"] == "/v1/chat/completions"]
    declared = [{tool["function"]["name"] for tool in body.get("tools", [])} for body in sent if body.get("tools")]
    assert len(declared) >= 2 and "NotebookEdit" not in declared[0] and "NotebookEdit" in declared[-1]
    time.sleep(1.0)
    with connect(proxy.db) as conn:  # the request's size as logged: its parts put together
        rows = [(status, size) for flow_id, status, size in conn.execute(
            "select id, status_code, length(ccany_body(client_request, client_request_parts)) from flows "
            "where path like '/v1/messages%'") if flow_id not in before]
    assert rows and all(status == 200 for status, _ in rows), rows
    assert max(size for _, size in rows) < 70_000, rows
