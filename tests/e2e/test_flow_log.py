"""The flow log through a real mitmdump: one row per client request, with both sides of the turn."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import time

import anthropic
import httpx
import pytest

from ccany_addon.anthropic_api.conformance import check_stream
from tests.conftest import ROOT, UPSTREAM_KEY, VENV_BIN, secret, start_proxy, stop
from tests.e2e.flow_db import flow_rows, stored_bytes

CLIENT_KEY = secret("sk-ant-client-KEY-for-the-flow-log-0001")
HELLO = {"model": "claude-sonnet-4-5", "max_tokens": 64, "messages": [{"role": "user", "content": "hello there"}]}


@pytest.fixture(scope="module")
def client(proxy) -> anthropic.Anthropic:
    return anthropic.Anthropic(
        base_url=proxy.url,
        api_key=CLIENT_KEY,
        max_retries=0,
        timeout=20,
        default_headers={"X-Claude-Code-Session-Id": "session-42"},
    )


def test_non_streaming_flow_has_both_sides_tokens_and_timings(client, proxy):
    raw = client.messages.with_raw_response.create(
        model="claude-sonnet-4-5", max_tokens=64, messages=[{"role": "user", "content": "what about aardvarks"}]
    )
    message = raw.parse()
    row = proxy.flow(raw.headers["request-id"])
    assert row["status_code"] == 200 and row["upstream_status"] == 200 and row["is_stream"] == 0
    assert (row["client_model"], row["upstream_model"], row["provider"]) == ("claude-sonnet-4-5", "gpt-4o", "openai")
    assert row["upstream_url"].endswith("/v1/chat/completions") and "@" not in row["upstream_url"]
    assert row["session_id"] == "session-42" and row["user_agent"].startswith("Anthropic/Python")
    assert row["client_addr"] == "127.0.0.1" and row["path"] == "/v1/messages"
    assert (row["input_tokens"], row["output_tokens"], row["cache_read_input_tokens"]) == (
        message.usage.input_tokens, message.usage.output_tokens, message.usage.cache_read_input_tokens)
    assert row["stop_reason"] == "end_turn" and row["error_type"] is None
    assert 0 < row["upstream_ttfb_ms"] <= row["duration_ms"] and 0 < row["ttft_ms"] <= row["duration_ms"]
    assert json.loads(row["client_request"])["messages"][0]["content"] == "what about aardvarks"
    assert json.loads(row["upstream_request"])["model"] == "gpt-4o"
    assert json.loads(row["upstream_response"])["object"] == "chat.completion"
    assert json.loads(row["client_response"]) == raw.http_response.json()
    headers = json.loads(row["client_request_headers"])
    assert headers["authorization"] == "[redacted]"
    assert json.loads(row["upstream_request_headers"])["authorization"] == "[redacted]"
    assert json.loads(row["client_response_headers"])["request-id"] == row["id"]
    assert "aardvarks" in row["conversation"] and "Hello from the fake upstream" in row["conversation"]


def test_streaming_flow_keeps_the_sse_text_the_reassembled_message_and_a_timeline(proxy):
    with httpx.stream("POST", f"{proxy.url}/v1/messages?beta=true", json={**HELLO, "stream": True},
                      headers={"x-api-key": CLIENT_KEY}, timeout=20) as response:
        data = response.read()
    report = check_stream(data)
    assert report.complete, report.violations
    row = proxy.flow(response.headers["request-id"])
    assert row["is_stream"] == 1 and row["status_code"] == 200 and row["path"] == "/v1/messages?beta=true"
    assert json.loads(row["client_response"]) == report.message()
    assert row["upstream_response"].startswith("data: {") and "[DONE]" in row["upstream_response"]
    timeline = json.loads(row["events"])
    assert [event[1] for event in timeline] == [event["type"] for event in report.events]
    assert sum(event[3] for event in timeline) == len(data)
    offsets = [event[0] for event in timeline]
    assert offsets == sorted(offsets) and offsets[0] > 0
    first_delta = next(event[0] for event in timeline if event[1] == "content_block_delta")
    assert row["ttft_ms"] == first_delta and row["ttft_ms"] <= row["duration_ms"]
    assert row["chunk_count"] >= 3 and row["max_chunk_gap_ms"] >= 0
    assert row["output_tokens"] == 42 and row["stop_reason"] == "end_turn"


def test_tool_use_stream_logs_the_tool_call_with_its_input(client, proxy):
    with client.messages.stream(model="scenario:tool", max_tokens=64, messages=[{"role": "user", "content": "w"}],
                                tools=[{"name": "get_weather", "input_schema": {"type": "object"}}]) as stream:
        final = stream.get_final_message()
        request_id = stream.response.headers["request-id"]
    row = proxy.flow(request_id)
    logged = json.loads(row["client_response"])
    assert row["stop_reason"] == "tool_use"
    assert logged["content"][-1] == {"type": "tool_use", "id": final.content[-1].id, "name": "get_weather",
                                     "input": {"city": "Paris", "unit": "celsius"}}
    assert '"tool_calls"' in row["upstream_response"]


def test_upstream_error_is_logged_with_both_statuses(client, proxy):
    with pytest.raises(anthropic.RateLimitError) as caught:
        client.messages.create(model="scenario:http_429", max_tokens=64, messages=[{"role": "user", "content": "x"}])
    row = proxy.flow(caught.value.response.headers["request-id"])
    assert (row["status_code"], row["upstream_status"], row["error_type"]) == (429, 429, "rate_limit_error")
    assert "fake upstream says 429" in row["error_message"] and "429" in row["upstream_response"]
    assert json.loads(row["client_response"])["error"]["type"] == "rate_limit_error"


def test_error_mid_stream_is_logged_as_the_error_the_client_saw(proxy):
    with httpx.stream("POST", f"{proxy.url}/v1/messages", json={**HELLO, "model": "scenario:midstream_error",
                                                                "stream": True}, timeout=20) as response:
        data = response.read()
    row = proxy.flow(response.headers["request-id"])
    assert row["status_code"] == 200 and row["error_type"] == "api_error"
    report = check_stream(data)
    logged = json.loads(row["client_response"])
    assert logged["error"] == report.error and logged["content"] == report.message()["content"]


def test_malformed_request_is_a_flow_too(proxy):
    response = httpx.post(f"{proxy.url}/v1/messages", content=b"{nope", timeout=20)
    row = proxy.flow(response.headers["request-id"])
    assert (row["status_code"], row["error_type"]) == (400, "invalid_request_error")
    assert row["client_request"] == "{nope" and row["upstream_request"] is None
    assert "not valid JSON" in row["error_message"]


def test_refused_path_is_a_flow_but_health_probes_are_not(proxy):
    refused = httpx.get(f"{proxy.url}/v1/files", timeout=20)
    assert proxy.flow(refused.headers["request-id"])["status_code"] == 404
    for probe in (httpx.get(f"{proxy.url}/health", timeout=20), httpx.head(f"{proxy.url}/api/hello", timeout=20)):
        with pytest.raises(AssertionError, match="no flow"):
            proxy.flow(probe.headers["request-id"], timeout=1.0)


def test_claude_code_agent_and_request_class_headers_are_columns(client, proxy):
    raw = client.messages.with_raw_response.create(
        **HELLO, extra_headers={"X-Claude-Code-Agent-Id": "agent-7", "X-Claude-Code-Parent-Agent-Id": "agent-1",
                                "X-Claude-Code-Request-Class": "compaction"})
    row = proxy.flow(raw.headers["request-id"])
    assert (row["session_id"], row["agent_id"], row["parent_agent_id"], row["request_class"]) == (
        "session-42", "agent-7", "agent-1", "compaction")
    plain = proxy.flow(client.messages.with_raw_response.create(**HELLO).headers["request-id"])
    assert (plain["agent_id"], plain["parent_agent_id"], plain["request_class"]) == (None, None, None)


def test_client_that_hangs_up_mid_stream_is_logged(proxy):
    body = json.dumps({**HELLO, "model": "scenario:hang", "stream": True}).encode()
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
        sock.sendall(b"POST /v1/messages HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                     b"content-length: %d\r\n\r\n%s" % (len(body), body))
        head = b""
        while b"content_block_delta" not in head:
            head += sock.recv(65536)
    request_id = next(line.split(b": ")[1].strip().decode() for line in head.split(b"\r\n")
                      if line.lower().startswith(b"request-id:"))
    row = proxy.flow(request_id)
    assert row["error_type"] == "client_disconnected" and row["status_code"] == 200
    assert "Wait" in json.loads(row["client_response"])["content"][0]["text"]


def test_metrics_count_requests_tokens_and_the_log_queue(proxy, client):
    client.messages.create(**HELLO)
    text = httpx.get(f"{proxy.url}/metrics", timeout=20).text
    samples = {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line and not line.startswith("#")}
    assert samples['ccany_requests_total{model="gpt-4o",status="200"}'] >= 1
    assert samples['ccany_tokens_total{model="gpt-4o",kind="output"}'] >= 42
    assert samples['ccany_request_duration_seconds_count{model="gpt-4o"}'] >= 1
    assert samples['ccany_request_duration_seconds_bucket{model="gpt-4o",le="+Inf"}'] >= 1
    assert samples["ccany_log_dropped_total"] == 0 and "ccany_log_queue_depth" in samples
    assert "# TYPE ccany_request_duration_seconds histogram" in text


def test_without_a_flow_log_streams_still_reach_the_metrics(fake_upstream, tmp_path):
    proxy = start_proxy(fake_upstream.url, tmp_path, "ccany_db=")
    try:
        with httpx.stream("POST", f"{proxy.url}/v1/messages", json={**HELLO, "stream": True}, timeout=20) as response:
            report = check_stream(response.read())
        assert report.complete, report.violations
        text = httpx.get(f"{proxy.url}/metrics", timeout=20).text
    finally:
        stop(proxy.process)
    samples = {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line and not line.startswith("#")}
    assert samples['ccany_requests_total{model="gpt-4o",status="200"}'] == 1
    assert samples['ccany_tokens_total{model="gpt-4o",kind="output"}'] == 42
    assert samples['ccany_time_to_first_token_seconds_count{model="gpt-4o"}'] == 1
    assert samples["ccany_log_written_total"] == 0 and not list(tmp_path.glob("*.db"))
    assert "flows are not logged" in proxy.log_path.read_text()


def test_no_key_is_ever_written_to_the_db(proxy, client):
    client.messages.create(**HELLO)
    with pytest.raises(anthropic.AuthenticationError):
        client.messages.create(model="scenario:http_401", max_tokens=5, messages=[{"role": "user", "content": "x"}])
    time.sleep(1.5)
    stored = stored_bytes(proxy.db)
    assert "flows.db" in stored and "parts (decompressed)" in stored
    for where, data in stored.items():
        assert UPSTREAM_KEY.encode() not in data, where
        assert CLIENT_KEY.encode() not in data, where


def test_bodies_policy_cap_and_flush_on_sigterm(fake_upstream, tmp_path):
    proxy = start_proxy(fake_upstream.url, tmp_path, "ccany_log_bodies=errors", "ccany_log_body_cap=50")
    try:
        ok = [httpx.post(f"{proxy.url}/v1/messages", json=HELLO, timeout=20).headers["request-id"]
              for _ in range(20)]
        failed = httpx.post(f"{proxy.url}/v1/messages", json={**HELLO, "model": "scenario:http_500"}, timeout=20)
    finally:
        proxy.process.send_signal(signal.SIGTERM)
        proxy.process.wait(timeout=20)
    rows = {row["id"]: (row["client_request"], row["upstream_response"], row["truncated"], row["input_tokens"])
            for row in flow_rows(proxy.db)}
    assert set(ok) | {failed.headers["request-id"]} <= set(rows)
    assert all(rows[request_id][0] is None and rows[request_id][3] == 200 for request_id in ok)
    client_request, upstream_response, truncated, _ = rows[failed.headers["request-id"]]
    assert len(client_request) == 50 and "client_request" in truncated
    assert upstream_response is not None
    stop(proxy.process)


@pytest.mark.parametrize(
    ("option", "complaint"),
    [("ccany_log_bodies=some", "ccany_log_bodies"), ("ccany_log_body_cap=0", "must be positive"),
     ("ccany_log_retention_days=-1", "must be 0 or positive")],
)
def test_bad_log_options_stop_start_up(option, complaint, tmp_path):
    bad = subprocess.run([str(VENV_BIN / "ccany"), "--set", option, "--set", f"ccany_db={tmp_path / 'x.db'}"],
                         capture_output=True, text=True, timeout=30, cwd=ROOT)
    assert bad.returncode != 0 and complaint in bad.stderr + bad.stdout
