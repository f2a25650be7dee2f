"""Raw HTTP against a real mitmdump: exact bytes, bad input, the proxy's own endpoints, broken upstreams."""

from __future__ import annotations

import json
import subprocess

import httpx
import pytest

from ccany_addon.anthropic_api.conformance import check_stream
from tests.conftest import ROOT, UPSTREAM_KEY, VENV_BIN, free_port, start_proxy, stop, wait_for

GOOD = {"model": "scenario:text", "max_tokens": 100, "messages": [{"role": "user", "content": "hi"}]}


def post(proxy, body: object, path: str = "/v1/messages", **kwargs) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(f"{proxy.url}{path}", content=content, timeout=20, **kwargs)


def anthropic_error(response: httpx.Response, status: int, error_type: str) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.headers["request-id"].startswith("req_")
    body = response.json()
    assert body["type"] == "error" and body["error"]["type"] == error_type
    return body["error"]["message"]


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "must be a JSON object"),
        ({"max_tokens": 5, "messages": []}, "model: Field required"),
        ({"model": "x", "messages": []}, "max_tokens: Field required"),
        ({"model": "x", "max_tokens": "many", "messages": []}, "max_tokens: Input should be a valid integer"),
        ({"model": "x", "max_tokens": 5, "messages": "hi"}, "messages: Input should be a valid array"),
        ({"model": "x", "max_tokens": 5, "messages": [{"role": "user", "content": [{"type": "hologram"},
                                                                                 {"type": "text"}]}]},
         "messages.0.content.1.text: Field required"),
        ({"model": "x", "max_tokens": 5, "messages": [{"role": "user", "content": [
            {"type": "tool_result", "content": "x"}]}]}, "messages.0.content.0.tool_use_id: Field required"),
    ],
)
def test_malformed_requests_get_a_400_naming_the_problem(proxy, fake_upstream, body, expected):
    fake_upstream.clear()
    message = anthropic_error(post(proxy, body), 400, "invalid_request_error")
    assert expected in message
    assert fake_upstream.requests() == []
    assert post(proxy, GOOD).status_code == 200  # and the proxy keeps serving


def test_unknown_content_blocks_are_dropped_not_refused(proxy, fake_upstream):
    fake_upstream.clear()
    body = {**GOOD, "messages": [{"role": "user", "content": [{"type": "hologram", "glow": 3},
                                                              {"type": "text", "text": "hi"}]}]}
    assert post(proxy, body).status_code == 200
    assert "hologram" not in json.dumps(fake_upstream.requests()[-1]["body"])


def test_unknown_fields_are_tolerated(proxy):
    body = {**GOOD, "context_management": {"edits": []}, "output_config": {"effort": "high"},
            "messages": [{"role": "user", "content": "hi", "future_field": True}]}
    assert post(proxy, body).status_code == 200


def test_body_over_the_limit_gets_413(fake_upstream, tmp_path):
    small = start_proxy(fake_upstream.url, tmp_path, "ccany_max_body_size=2000")
    try:
        big = {**GOOD, "messages": [{"role": "user", "content": "x" * 5000}]}
        message = anthropic_error(post(small, big), 413, "request_too_large")
        assert "2000" in message
        assert post(small, GOOD).status_code == 200
    finally:
        stop(small.process)


def test_client_credentials_and_anthropic_headers_are_not_forwarded(proxy, fake_upstream):
    fake_upstream.clear()
    response = post(proxy, GOOD, path="/v1/messages?beta=true", headers={
        "x-api-key": "sk-ant-client-key-1", "authorization": "Bearer client-token-2",
        "anthropic-version": "2023-06-01", "anthropic-beta": "interleaved-thinking-2025-05-14",
        "x-claude-code-session-id": "abc", "cookie": "a=b"})
    assert response.status_code == 200
    sent = fake_upstream.requests()[-1]
    assert sent["path"] == "/v1/chat/completions"
    assert sent["headers"]["authorization"] == f"Bearer {UPSTREAM_KEY}"
    for name in ("x-api-key", "anthropic-version", "anthropic-beta", "x-claude-code-session-id", "cookie"):
        assert name not in sent["headers"]
    assert "client-token-2" not in json.dumps(sent)


def test_every_answer_carries_a_request_id(proxy):
    ids = {post(proxy, GOOD).headers["request-id"], httpx.get(f"{proxy.url}/health").headers["request-id"],
           httpx.get(f"{proxy.url}/nope").headers["request-id"]}
    assert len(ids) == 3 and all(i.startswith("req_") for i in ids)


def test_stream_bytes_are_exact_sse(proxy):
    with httpx.stream("POST", f"{proxy.url}/v1/messages", json={**GOOD, "stream": True}, timeout=20) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        assert "content-length" not in response.headers
        chunks = list(response.iter_raw())
    data = b"".join(chunks)
    report = check_stream(data)
    assert report.complete, report.violations
    assert b"[DONE]" not in data
    assert data.startswith(b"event: message_start\ndata: {")
    assert data.endswith(b'event: message_stop\ndata: {"type":"message_stop"}\n\n')


def test_own_endpoints(proxy, fake_upstream):
    fake_upstream.clear()
    assert httpx.get(f"{proxy.url}/health").json() == {"status": "ok"}
    assert httpx.get(f"{proxy.url}/ready").status_code == 200
    head = httpx.head(f"{proxy.url}/")
    assert head.status_code == 200 and head.content == b""
    assert httpx.get(f"{proxy.url}/").status_code == 200
    # Claude Code 2.1.33x's warm-up, at start and every few seconds
    hello = httpx.head(f"{proxy.url}/api/hello")
    assert hello.status_code == 200 and hello.content == b""
    # what Claude Code's model discovery asks (CLAUDE_CODE_ENABLE_GATEWAY_MODEL_DISCOVERY=1)
    models = httpx.get(f"{proxy.url}/v1/models?limit=1000").json()
    assert {m["type"] for m in models["data"]} == {"model"}
    by_id = {m["id"]: m for m in models["data"]}
    assert {"claude-opus-5-5", "claude-sonnet-5-5", "claude-haiku-5-5", "claude-fable-5-2"} <= set(by_id)
    assert by_id["claude-haiku-5-5"]["display_name"] == "Haiku 5.5 → gpt-4o-mini @ 127.0.0.1"
    assert by_id["claude-fable-5-2"]["display_name"] == "Fable 5.2 → gpt-4o @ 127.0.0.1"
    assert models["has_more"] is False
    assert httpx.get(f"{proxy.url}/v1/models/claude-fable-5-2").json() == by_id["claude-fable-5-2"]
    assert fake_upstream.requests() == []


def test_a_tierless_claude_name_reaches_the_upstream_as_the_big_model(proxy, fake_upstream):
    fake_upstream.clear()
    response = post(proxy, {**GOOD, "model": "claude-fable-5-2"})
    assert response.status_code == 200, response.text
    assert response.json()["model"] == "claude-fable-5-2"
    assert [request["body"]["model"] for request in fake_upstream.requests()] == ["gpt-4o"]


@pytest.mark.parametrize(("method", "path"), [("GET", "/v1/chat/completions"), ("POST", "/v1/chat/completions"),
                                              ("GET", "/v1/files"), ("DELETE", "/v1/messages"), ("GET", "/admin")])
def test_other_paths_get_404_and_never_reach_the_upstream(proxy, fake_upstream, method, path):
    fake_upstream.clear()
    response = httpx.request(method, f"{proxy.url}{path}", json={"model": "gpt-4o"})
    assert "Not found" in anthropic_error(response, 404, "not_found_error")
    assert fake_upstream.requests() == []


def test_unreachable_upstream_gets_an_anthropic_error_naming_it(tmp_path):
    dead = f"http://127.0.0.1:{free_port()}"
    proxy = start_proxy(dead, tmp_path)
    try:
        # every attempt tries the upstream again (no remembered "down" state) and fails in the error hook
        for body in (GOOD, GOOD, {**GOOD, "stream": True}):
            message = anthropic_error(post(proxy, body), 500, "api_error")
            assert "unreachable" in message and dead.removeprefix("http://") in message
        assert httpx.get(f"{proxy.url}/health").status_code == 200
    finally:
        stop(proxy.process)


def test_upstream_that_does_not_answer_in_time(fake_upstream, tmp_path):
    proxy = start_proxy(fake_upstream.url, tmp_path, "ccany_request_timeout=1")
    try:
        message = anthropic_error(post(proxy, {**GOOD, "model": "scenario:slow"}), 504, "timeout_error")
        assert "within 1 s" in message
        assert post(proxy, GOOD).status_code == 200
    finally:
        stop(proxy.process)


def test_missing_upstream_key_is_explained_at_start_and_to_clients(fake_upstream, tmp_path):
    proxy = start_proxy(fake_upstream.url, tmp_path, env={"OPENAI_API_KEY": None})
    try:
        message = anthropic_error(post(proxy, GOOD), 401, "authentication_error")
        assert "OPENAI_API_KEY" in message
        assert httpx.get(f"{proxy.url}/ready").status_code == 503
        assert httpx.get(f"{proxy.url}/health").status_code == 200
        assert "OPENAI_API_KEY" in proxy.log()
    finally:
        stop(proxy.process)


def test_key_never_reaches_mitmdump_output_even_at_full_detail(fake_upstream, tmp_path):
    proxy = start_proxy(fake_upstream.url, tmp_path, "flow_detail=4")
    try:
        assert post(proxy, GOOD).status_code == 200
        with httpx.stream("POST", f"{proxy.url}/v1/messages", json={**GOOD, "stream": True}) as response:
            response.read()
    finally:
        stop(proxy.process)
    log = proxy.log()
    assert "/v1/chat/completions" in log  # the flow was printed, headers and all
    assert UPSTREAM_KEY not in log
    assert "[redacted]" in log


def test_ccany_console_script_serves_and_rejects_bad_options(fake_upstream, tmp_path):
    bad = subprocess.run([str(VENV_BIN / "ccany"), "--set", "ccany_request_timeout=soon"],
                         capture_output=True, text=True, timeout=30, cwd=ROOT)
    assert bad.returncode != 0
    assert "ccany_request_timeout" in bad.stderr
    no_tier = subprocess.run([str(VENV_BIN / "ccany"), "--set", "ccany_unknown_claude_tier=huge"],
                             capture_output=True, text=True, timeout=30, cwd=ROOT)
    assert no_tier.returncode != 0 and "ccany_unknown_claude_tier" in no_tier.stderr
    proxy = start_proxy(fake_upstream.url, tmp_path, "ccany_unknown_claude_tier=small", program="ccany")
    try:
        assert post(proxy, GOOD).json()["content"][0]["type"] == "text"
        fake_upstream.clear()
        assert post(proxy, {**GOOD, "model": "claude-fable-5-2"}).status_code == 200
        assert [request["body"]["model"] for request in fake_upstream.requests()] == ["gpt-4o-mini"]
    finally:
        stop(proxy.process)


def test_mitmweb_shows_the_flows_without_the_upstream_key(fake_upstream, tmp_path):
    web_port = free_port()
    proxy = start_proxy(fake_upstream.url, tmp_path, "web_password=pw", f"web_port={web_port}", program="mitmweb")
    try:
        assert post(proxy, GOOD).status_code == 200
        with httpx.stream("POST", f"{proxy.url}/v1/messages", json={**GOOD, "stream": True}) as response:
            response.read()
        with httpx.Client(base_url=f"http://127.0.0.1:{web_port}") as web:
            web.get("/", params={"token": "pw"})  # sets the session cookie
            flows = web.get("/flows")
            dump = web.get("/flows/dump")
    finally:
        stop(proxy.process)
    assert flows.status_code == 200
    forwarded = [flow for flow in flows.json() if flow["request"]["path"] == "/v1/chat/completions"]
    assert len(forwarded) == 2  # the two messages requests, as sent upstream
    assert UPSTREAM_KEY not in flows.text
    assert dump.status_code == 200 and b"/v1/chat/completions" in dump.content
    assert UPSTREAM_KEY.encode() not in dump.content and b"[redacted]" in dump.content


def test_ccany_listens_on_loopback_unless_told_otherwise(fake_upstream, tmp_path):
    port = free_port()
    log = tmp_path / "ccany.log"
    with log.open("wb") as out:
        process = subprocess.Popen([str(VENV_BIN / "ccany"), "--mode", f"reverse:{fake_upstream.url}", "-p", str(port),
                                    "--set", f"ccany_db={tmp_path / 'f.db'}"], stdout=out, stderr=subprocess.STDOUT,
                                   cwd=tmp_path)  # its default config DB, data/config.db, not the checkout's
    try:
        wait_for(f"http://127.0.0.1:{port}/health")
        assert f"listening at 127.0.0.1:{port}" in log.read_text()
    finally:
        stop(process)
