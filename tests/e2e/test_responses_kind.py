"""The `responses` provider kind: the OpenAI Responses API (as Codex uses it) behind the real proxy, driven by
the official anthropic SDK. Every stream the SDK reads is also checked byte for byte by the conformance checker."""

from __future__ import annotations

import json
from pathlib import Path

import anthropic
import pytest

from tests import fake_responses
from tests.conftest import Proxy, secret, start_kind_proxy, stop
from tests.e2e.recording import RecordingTransport, recording_client

CODEX_KEY = secret("sk-proj-codex-provider-key-0123456789abcdef")
LIMITED_KEY = secret("sk-proj-codex-limited-key-fedcba9876543210")
WEATHER_TOOLS = [
    {"name": "get_weather", "description": "Weather in a city",
     "input_schema": {"type": "object", "properties": {"city": {"type": "string"}, "unit": {"type": "string"}}}},
    {"name": "get_time", "description": "Time in a zone",
     "input_schema": {"type": "object", "properties": {"timezone": {"type": "string"}}}},
]


def start_responses_proxy(upstream_url: str, tmp: Path) -> Proxy:
    """A proxy whose config DB routes `claude-*` to the fake's Responses API (provider `codex`)."""
    return start_kind_proxy(upstream_url, tmp, "codex", "responses", upstream_url + "/v1",
                            {"big": "gpt-5-codex", "middle": "gpt-5-codex", "small": "gpt-5-mini"},
                            CODEX_KEY, LIMITED_KEY)


@pytest.fixture(scope="module")
def proxy(fake_upstream, tmp_path_factory):
    running = start_responses_proxy(fake_upstream.url, tmp_path_factory.mktemp("responses-kind"))
    yield running
    stop(running.process)
    assert CODEX_KEY not in running.log() and LIMITED_KEY not in running.log()


@pytest.fixture
def transport() -> RecordingTransport:
    return RecordingTransport()


@pytest.fixture
def client(proxy, transport) -> anthropic.Anthropic:
    return recording_client(proxy.url, transport)


def test_non_streaming_text_with_usage_and_the_bearer_key(client, proxy, fake_upstream):
    fake_upstream.clear()
    raw = client.messages.with_raw_response.create(model="claude-sonnet-4-5", max_tokens=1, system="Be brief.",
                                                   messages=[{"role": "user", "content": "Say hello"}])
    message = raw.parse()
    assert message.content[0].text == fake_responses.TEXT and message.model == "claude-sonnet-4-5"
    assert message.stop_reason == "end_turn"
    assert (message.usage.input_tokens, message.usage.cache_read_input_tokens, message.usage.output_tokens) == (
        300, 1200, 57)
    sent = fake_upstream.requests()[-1]
    assert sent["path"] == "/v1/responses" and sent["headers"]["authorization"] == f"Bearer {CODEX_KEY}"
    assert "client-side-key" not in json.dumps(sent)
    body = sent["body"]
    assert body["model"] == "gpt-5-codex" and body["instructions"] == "Be brief."
    assert body["input"] == [{"type": "message", "role": "user",
                              "content": [{"type": "input_text", "text": "Say hello"}]}]
    assert body["store"] is False and "stream" not in body
    assert body["max_output_tokens"] == 16  # the API's minimum, not the 1 asked for
    row = proxy.flow(raw.headers["request-id"])
    assert (row["provider"], row["upstream_model"], row["status_code"], row["stop_reason"]) == (
        "codex", "gpt-5-codex", 200, "end_turn")
    assert (row["input_tokens"], row["cache_read_input_tokens"], row["output_tokens"]) == (300, 1200, 57)
    assert json.loads(row["upstream_request_headers"])["authorization"] == "[redacted]"
    assert row["upstream_url"].endswith("/v1/responses")
    assert "raised max_tokens 1" in row["notes"]


def test_streamed_thinking_and_text(client, transport, proxy, fake_upstream):
    fake_upstream.clear()
    with client.messages.stream(model="claude-opus-4-1", max_tokens=20000,
                                thinking={"type": "enabled", "budget_tokens": 10000},
                                messages=[{"role": "user", "content": "Say hello"}]) as stream:
        pieces = list(stream.text_stream)
        final = stream.get_final_message()
        request_id = stream.response.headers["request-id"]
    assert [block.type for block in final.content] == ["thinking", "text"]
    assert final.content[0].thinking == "\n\n".join(fake_responses.SUMMARY) and final.content[0].signature
    assert "".join(pieces) == final.content[1].text == fake_responses.TEXT and len(pieces) > 3
    assert (final.usage.input_tokens, final.usage.output_tokens, final.stop_reason) == (300, 57, "end_turn")
    report = transport.last_stream()
    assert report.complete, report.violations
    assert report.message()["content"][0]["thinking"] == final.content[0].thinking
    body = fake_upstream.requests()[-1]["body"]
    assert body["stream"] is True and body["reasoning"] == {"effort": "medium", "summary": "auto"}
    row = proxy.flow(request_id)
    assert (row["provider"], row["is_stream"], row["stop_reason"], row["output_tokens"]) == (
        "codex", 1, "end_turn", 57)


def test_parallel_tool_calls_then_their_results_go_back_as_function_call_outputs(client, transport, fake_upstream):
    fake_upstream.clear()
    question = {"role": "user", "content": "Weather and time in Paris?"}
    with client.messages.stream(model="codex,scenario:tools", max_tokens=1000, tools=WEATHER_TOOLS,
                                messages=[question]) as stream:
        final = stream.get_final_message()
    calls = [(block.id, block.name, block.input) for block in final.content]
    assert calls == [(call_id, name, json.loads(arguments)) for call_id, name, arguments in fake_responses.TOOL_CALLS]
    assert final.stop_reason == "tool_use"
    report = transport.last_stream()
    assert report.complete, report.violations
    fragments = [e["index"] for e in report.events if e["type"] == "content_block_delta"]
    assert fragments.count(0) > 3 and fragments.count(1) > 3  # arguments arrived in pieces, not whole
    sent_tools = fake_upstream.requests()[-1]["body"]["tools"]
    assert [(t["type"], t["name"], t["strict"]) for t in sent_tools] == [("function", "get_weather", False),
                                                                          ("function", "get_time", False)]

    fake_upstream.clear()
    results = [{"type": "tool_result", "tool_use_id": call_id, "content": f"result of {name}"}
               for call_id, name, _ in calls]
    with client.messages.stream(model="claude-sonnet-4-5", max_tokens=1000, tools=WEATHER_TOOLS,
                                messages=[question, {"role": "assistant", "content": final.content},
                                          {"role": "user", "content": results}]) as stream:
        answer = stream.get_final_message()
    assert answer.content[0].text == "The file is written." and transport.last_stream().complete
    items = fake_upstream.requests()[-1]["body"]["input"]
    assert [item["type"] for item in items] == ["message", "function_call", "function_call",
                                                "function_call_output", "function_call_output"]
    assert [(i["call_id"], i["name"]) for i in items[1:3]] == [(c[0], c[1]) for c in fake_responses.TOOL_CALLS]
    assert [(i["call_id"], i["output"]) for i in items[3:]] == [(c[0], f"result of {c[1]}") for c in calls]


def test_rate_limit_reaches_the_sdk_as_rate_limit_error(client, proxy):
    kwargs = {"model": "codex-limited,scenario:error", "max_tokens": 50,
              "messages": [{"role": "user", "content": "hi"}]}
    with pytest.raises(anthropic.RateLimitError) as caught:
        client.messages.create(**kwargs)
    error = caught.value
    assert error.status_code == 429 and error.response.headers["retry-after"] == "7"
    assert "Rate limit reached for requests" in str(error)  # the upstream's own words
    row = proxy.flow(error.response.headers["request-id"])
    assert (row["provider"], row["status_code"], row["error_type"]) == ("codex-limited", 429, "rate_limit_error")
    # A stream fails before its first byte: a plain 429 too (from the upstream, or from the key's cool-down).
    with pytest.raises(anthropic.RateLimitError) as caught, client.messages.stream(**kwargs) as stream:
        stream.get_final_message()
    assert caught.value.status_code == 429 and int(caught.value.response.headers["retry-after"]) > 0


def test_failed_stream_ends_with_an_error_event(client, transport, proxy):
    with pytest.raises(anthropic.APIStatusError) as caught, client.messages.stream(
            model="codex,scenario:failed", max_tokens=50, messages=[{"role": "user", "content": "hi"}]) as stream:
        stream.get_final_message()
    assert "The model failed to finish the answer." in str(caught.value)
    report = transport.last_stream()
    assert report.ok and not report.complete
    assert report.error["type"] == "api_error"
    assert report.error["message"].endswith(" upstream: The model failed to finish the answer.")
    assert report.message()["content"] == [{"type": "text", "text": "This answer wi"}]  # what came before
    row = proxy.flow(caught.value.response.headers["request-id"])
    assert (row["provider"], row["error_type"]) == ("codex", "api_error")
