"""Fail closed: whatever raises inside the gateway, the client gets the gateway's own Anthropic error (with its
request-id), the upstream never receives anything but a request the gateway built, no key leaks, and the flow
has its row. The four fail-open triggers the hardening issue found, then every hook made to raise."""

from __future__ import annotations

import json
import subprocess
import sys

import httpx
import pytest

from tests.conftest import ROOT, UPSTREAM_KEY, config_db, free_port, secret, start_proxy, stop
from tests.e2e.test_gemini_kind import start_gemini_proxy
from tests.e2e.test_http import anthropic_error

ANTHROPIC_KEY = secret("sk-ant-api03-fail-closed-provider-key-0123456789")
RAISING = ROOT / "tests" / "e2e" / "raising_addon.py"
GOOD = {"model": "scenario:text", "max_tokens": 100, "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture(scope="module")
def proxy(fake_upstream, tmp_path_factory):
    """The default upstream for scenario:* names, an anthropic-kind provider for claude-*, and the raising script."""
    from ccany_addon.config import store

    tmp = tmp_path_factory.mktemp("fail-closed")
    path = tmp / "config.db"
    db = config_db(path)
    store.add_provider(db, "test", "claude-direct", f"{fake_upstream.url}/v1", kind="anthropic")
    store.set_provider_key(db, "test", "claude-direct", ANTHROPIC_KEY)
    store.add_route(db, "test", "claude-*", "claude-direct", None)
    db.close()
    running = start_proxy(fake_upstream.url, tmp, f"ccany_config_db={path}", scripts=(RAISING,))
    yield running
    stop(running.process)


def only_gateway_requests(fake_upstream, expected: int | None = None) -> list[dict]:
    """What the fake upstream received: only requests the gateway built, each with the key of its route."""
    received = fake_upstream.requests()
    for sent in received:
        headers = sent["headers"]
        assert "x-test-raise" not in headers and "x-api-key" not in headers or headers["x-api-key"] == ANTHROPIC_KEY
        assert sent["path"] in ("/v1/chat/completions", "/v1/messages"), sent["path"]
        if sent["path"] == "/v1/messages":
            assert headers["x-api-key"] == ANTHROPIC_KEY and "authorization" not in headers
        else:
            assert headers["authorization"] == f"Bearer {UPSTREAM_KEY}"
    if expected is not None:
        assert len(received) == expected, received
    return received


def no_key_in(response: httpx.Response) -> None:
    text = response.text + json.dumps(dict(response.headers))
    assert UPSTREAM_KEY not in text and ANTHROPIC_KEY not in text


def document(data: str) -> dict:
    return {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": data}}


@pytest.mark.parametrize(("path", "body", "headers", "expected"), [
    ("/v1/messages/count_tokens", {"model": "claude-sonnet-4-5", "messages": [
        {"role": "user", "content": [document("%%% not base64 %%%")]}]}, {}, "not valid base64"),
    ("/v1/messages", GOOD, {"content-encoding": "snappy"}, "Content-Encoding 'snappy' is not supported"),
    ("/v1/messages", b'{"model": "claude-sonnet-4-5", "max_tokens": 10, "temperature": NaN, '
                     b'"messages": [{"role": "user", "content": "hi"}]}', {}, "NaN is not a JSON number"),
    ("/v1/messages", {**GOOD, "messages": [{"role": "user", "content": "hi"}]}, {"content-encoding": "gzip"},
     "not valid gzip"),
])
def test_the_fail_open_triggers_get_a_400_and_reach_no_upstream(proxy, fake_upstream, path, body, headers, expected):
    fake_upstream.clear()
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    response = httpx.post(f"{proxy.url}{path}", content=content, headers=headers, timeout=20)
    assert expected in anthropic_error(response, 400, "invalid_request_error")
    no_key_in(response)
    only_gateway_requests(fake_upstream, expected=0)
    row = proxy.flow(response.headers["request-id"])
    assert row["status_code"] == 400 and row["error_type"] == "invalid_request_error"


def test_a_gemini_tool_schema_of_an_odd_shape_never_fails_open(fake_upstream, tmp_path):
    gemini = start_gemini_proxy(fake_upstream.url, tmp_path)
    try:
        fake_upstream.clear()
        tool = {"name": "odd", "description": "odd schema", "input_schema": {
            "type": "object", "properties": {"a": {"type": [["string"]]}, "b": {"type": {"x": 1}}}}}
        body = {"model": "claude-sonnet-4-5", "max_tokens": 50, "tools": [tool],
                "messages": [{"role": "user", "content": "hi"}]}
        response = httpx.post(f"{gemini.url}/v1/messages", json=body, timeout=20)
        assert response.status_code in (200, 400), response.text
        assert response.headers["request-id"].startswith("req_")
        for sent in fake_upstream.requests():  # only the gateway's own Gemini request, never the client's body
            assert sent["path"].startswith("/v1beta/models/") and "messages" not in sent["body"]
    finally:
        stop(gemini.process)


@pytest.mark.parametrize(("hook", "body", "reaches_upstream"), [
    ("requestheaders", GOOD, False),
    ("request", GOOD, False),
    ("request", {**GOOD, "model": "claude-sonnet-4-5"}, False),  # the anthropic provider's key was chosen
    ("keyinjector", GOOD, False),
    ("keyinjector", {**GOOD, "model": "claude-sonnet-4-5"}, False),
    ("responseheaders", GOOD, True),
    ("responseheaders", {**GOOD, "stream": True}, True),
    ("response", GOOD, True),
    ("response", {**GOOD, "model": "claude-sonnet-4-5"}, True),
])
def test_a_hook_that_raises_ends_in_the_gateways_own_error(proxy, fake_upstream, hook, body, reaches_upstream):
    fake_upstream.clear()
    response = httpx.post(f"{proxy.url}/v1/messages", json=body, headers={"x-test-raise": hook}, timeout=20)
    message = anthropic_error(response, 500, "api_error")
    request_id = response.headers["request-id"]
    assert "internal error" in message and request_id in message
    no_key_in(response)
    only_gateway_requests(fake_upstream, expected=1 if reaches_upstream else 0)
    row = proxy.flow(request_id)
    assert row["status_code"] == 500 and row["error_type"] == "api_error"
    log = proxy.log()
    assert f"{request_id}: internal error in the {hook if hook != 'keyinjector' else 'request'} hook" in log
    assert "sk-test-raise-echo-0123456789abcdef" not in log  # an exception's text is masked in the log
    assert "Addon error" not in log
    assert httpx.post(f"{proxy.url}/v1/messages", json=GOOD, timeout=20).status_code == 200  # still serving


def test_a_raising_error_hook_still_answers_in_anthropic_shape(tmp_path):
    dead = f"http://127.0.0.1:{free_port()}"
    proxy = start_proxy(dead, tmp_path, scripts=(RAISING,))
    try:
        response = httpx.post(f"{proxy.url}/v1/messages", json=GOOD, headers={"x-test-raise": "error"}, timeout=20)
        message = anthropic_error(response, 500, "api_error")
        assert "internal error" in message
        assert proxy.flow(response.headers["request-id"])["error_type"] == "api_error"
        assert "Addon error" not in proxy.log()
    finally:
        stop(proxy.process)


def test_an_upstream_that_comes_back_is_used_at_once(tmp_path):
    """No remembered "down" state: the first request after the upstream listens again succeeds."""
    port = free_port()
    proxy = start_proxy(f"http://127.0.0.1:{port}", tmp_path)
    try:
        for _ in range(3):
            message = anthropic_error(httpx.post(f"{proxy.url}/v1/messages", json=GOOD, timeout=20), 500, "api_error")
            assert "unreachable" in message
        upstream = subprocess.Popen([sys.executable, str(ROOT / "tests" / "fake_openai.py"), "--port", str(port)],
                                    stdout=subprocess.PIPE, text=True)
        try:
            upstream.stdout.readline()  # "listening on PORT"
            assert httpx.post(f"{proxy.url}/v1/messages", json=GOOD, timeout=20).status_code == 200
        finally:
            stop(upstream)
    finally:
        stop(proxy.process)

