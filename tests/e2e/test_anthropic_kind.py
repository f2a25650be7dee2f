"""The `anthropic` provider kind: requests pass through to the Anthropic API with the provider's key, answers
and streams come back untouched, and the flow is logged like any other."""

from __future__ import annotations

import json

import anthropic
import httpx
import pytest

from ccany_addon.anthropic_api.conformance import check_stream
from ccany_addon.config import store
from tests.conftest import UPSTREAM_KEY, config_db, secret, start_proxy, stop

ANTHROPIC_KEY = secret("sk-ant-api03-PROVIDER-key-for-passthrough-77")


@pytest.fixture(scope="module")
def proxy(fake_upstream, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("anthropic-kind")
    path = tmp / "config.db"
    db = config_db(path)
    store.add_provider(db, "test", "claude-direct", f"{fake_upstream.url}/v1", kind="anthropic")
    store.set_provider_key(db, "test", "claude-direct", ANTHROPIC_KEY)
    store.add_route(db, "test", "claude-overloaded", "claude-direct", "scenario:overloaded", priority=1)
    store.add_route(db, "test", "claude-*", "claude-direct", None)
    store.add_route(db, "test", "renamed", "claude-direct", "claude-sonnet-4-5")
    db.close()
    running = start_proxy(fake_upstream.url, tmp, f"ccany_config_db={path}")
    yield running
    stop(running.process)


@pytest.fixture
def client(proxy):
    return anthropic.Anthropic(base_url=proxy.url, api_key="client-side-key", max_retries=0, timeout=20)


def test_non_streaming_answer_passes_through_with_the_provider_key(client, proxy, fake_upstream):
    fake_upstream.clear()
    raw = client.messages.with_raw_response.create(
        model="claude-sonnet-4-5", max_tokens=50, messages=[{"role": "user", "content": "hi"}],
        extra_headers={"anthropic-beta": "interleaved-thinking-2025-05-14"})
    message = raw.parse()
    assert message.content[0].text == "Hello from the Anthropic fake." and message.usage.output_tokens == 7
    sent = fake_upstream.requests()[-1]
    assert sent["path"] == "/v1/messages" and sent["body"]["model"] == "claude-sonnet-4-5"
    assert sent["headers"]["x-api-key"] == ANTHROPIC_KEY and "authorization" not in sent["headers"]
    assert sent["headers"]["anthropic-beta"] == "interleaved-thinking-2025-05-14"
    assert sent["headers"]["anthropic-version"]
    row = proxy.flow(raw.headers["request-id"])
    assert (row["provider"], row["input_tokens"], row["output_tokens"], row["stop_reason"]) == (
        "claude-direct", 12, 7, "end_turn")
    assert json.loads(row["upstream_request_headers"])["x-api-key"] == "[redacted]"


def test_auto_modes_safeguards_field_reaches_the_anthropic_upstream_untouched(client, proxy, fake_upstream):
    fake_upstream.clear()
    safeguards = {"version": 1, "checks": [{"type": "tool_use_review"}]}
    client.messages.create(model="claude-sonnet-4-5", max_tokens=50, messages=[{"role": "user", "content": "hi"}],
                           extra_body={"safeguards": safeguards})
    assert fake_upstream.requests()[-1]["body"]["safeguards"] == safeguards


def test_stream_passes_through_whole_and_is_logged(proxy, fake_upstream):
    fake_upstream.clear()
    body = {"model": "claude-haiku-4-5", "max_tokens": 50, "stream": True,
            "messages": [{"role": "user", "content": "hi"}]}
    with httpx.stream("POST", f"{proxy.url}/v1/messages?beta=true", json=body, timeout=20) as response:
        data = response.read()
    report = check_stream(data)
    assert report.complete, report.violations
    assert report.message()["content"][0]["text"] == "Hello from the Anthropic fake."
    assert fake_upstream.requests()[-1]["path"] == "/v1/messages?beta=true"
    row = proxy.flow(response.headers["request-id"])
    assert json.loads(row["client_response"]) == report.message()
    assert row["upstream_response"] == data.decode()  # untouched: what came is what went
    assert (row["output_tokens"], row["stop_reason"], row["error_type"]) == (7, "end_turn", None)
    assert [event[1] for event in json.loads(row["events"])] == [event["type"] for event in report.events]


def test_route_can_rename_the_model_and_errors_pass_through(client, fake_upstream):
    fake_upstream.clear()
    client.messages.create(model="renamed", max_tokens=5, messages=[{"role": "user", "content": "x"}])
    assert fake_upstream.requests()[-1]["body"]["model"] == "claude-sonnet-4-5"
    with pytest.raises(anthropic.OverloadedError) as caught:
        client.messages.create(model="claude-overloaded", max_tokens=5, messages=[{"role": "user", "content": "x"}])
    assert caught.value.status_code == 529 and caught.value.response.headers["request-id"].startswith("req_")


def test_unrouted_models_still_go_to_the_openai_upstream(client, fake_upstream):
    fake_upstream.clear()
    client.messages.create(model="gpt-4o", max_tokens=5, messages=[{"role": "user", "content": "x"}])
    sent = fake_upstream.requests()[-1]
    assert sent["path"] == "/v1/chat/completions" and sent["headers"]["authorization"] == f"Bearer {UPSTREAM_KEY}"
