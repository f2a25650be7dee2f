"""The response cache through the real proxy: off by default, then identical requests answered once."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import start_proxy, stop


@pytest.fixture(scope="module")
def cached(fake_upstream, tmp_path_factory):
    running = start_proxy(fake_upstream.url, tmp_path_factory.mktemp("cache"), "ccany_cache_ttl=60")
    yield running
    stop(running.process)


def ask(proxy, text: str, stream: bool = False) -> httpx.Response:
    body = {"model": "claude-haiku-4-5", "max_tokens": 20, "stream": stream,
            "messages": [{"role": "user", "content": text}]}
    return httpx.post(f"{proxy.url}/v1/messages", json=body, timeout=20)


def test_identical_requests_are_answered_once(cached, fake_upstream):
    fake_upstream.clear()
    first, second = ask(cached, "cache me"), ask(cached, "cache me")
    assert first.status_code == second.status_code == 200 and first.json() == second.json()
    assert len(fake_upstream.requests()) == 1
    rows = [cached.flow(r.headers["request-id"]) for r in (first, second)]
    assert [row["cache_hit"] for row in rows] == [0, 1]
    assert rows[1]["provider"] == "openai" and rows[1]["upstream_model"] == "gpt-4o-mini"
    assert rows[1]["upstream_request"] is None and rows[1]["output_tokens"] == rows[0]["output_tokens"]
    ask(cached, "something else")
    ask(cached, "cache me", stream=True)  # streams are never cached
    assert len(fake_upstream.requests()) == 3


def test_off_by_default(proxy, fake_upstream):
    fake_upstream.clear()
    ask(proxy, "not cached")
    ask(proxy, "not cached")
    assert len(fake_upstream.requests()) == 2
