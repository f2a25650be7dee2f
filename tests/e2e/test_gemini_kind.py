"""The `gemini` provider kind: the Gemini API (generateContent / streamGenerateContent?alt=sse, `x-goog-api-key`)
behind the real proxy, driven by the official anthropic SDK. The fake Gemini is as strict as the real one about
tool schemas and thought signatures, so a turn that works here proves the cleaning and the signature round trip.
Every stream the SDK reads is also checked byte for byte by the conformance checker."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import anthropic
import pytest

from ccany_addon.converters.gemini import DUMMY_SIGNATURE
from tests.conftest import Proxy, secret, start_kind_proxy, stop
from tests.e2e.recording import RecordingTransport, recording_client

GEMINI_KEY = secret("AIzaSyFake-gemini-provider-key-0123456789")
LIMITED_KEY = secret("AIzaSyFake-gemini-limited-key-9876543210")
# Tool schemas as Claude Code writes them: draft-07 `$schema`, `additionalProperties: false`, nested objects.
CLAUDE_CODE_TOOLS = [
    {"name": "get_weather", "description": "Weather in a city",
     "input_schema": {"$schema": "http://json-schema.org/draft-07/schema#", "type": "object",
                      "additionalProperties": False, "required": ["city"],
                      "properties": {"city": {"type": "string", "description": "The city"},
                                     "unit": {"type": "string", "enum": ["celsius", "fahrenheit"],
                                              "default": "celsius"}}}},
    {"name": "TodoWrite", "description": "Update the todo list",
     "input_schema": {"$schema": "http://json-schema.org/draft-07/schema#", "type": "object",
                      "additionalProperties": False, "required": ["todos"],
                      "properties": {"todos": {"type": "array", "items": {
                          "type": "object", "additionalProperties": False, "required": ["content", "status"],
                          "properties": {"content": {"type": "string", "minLength": 1},
                                         "status": {"type": "string", "enum": ["pending", "in_progress",
                                                                               "completed"]},
                                         "id": {"type": ["string", "null"], "format": "uuid"}}}}}}},
]


def start_gemini_proxy(upstream_url: str, tmp: Path) -> Proxy:
    """A proxy whose config DB routes `claude-*` to the fake's Gemini API (provider `gemini`)."""
    return start_kind_proxy(upstream_url, tmp, "gemini", "gemini", upstream_url + "/v1beta",
                            {"big": "gemini-2.5-pro", "small": "gemini-2.5-flash"}, GEMINI_KEY, LIMITED_KEY)


@pytest.fixture(scope="module")
def proxy(fake_upstream, tmp_path_factory):
    running = start_gemini_proxy(fake_upstream.url, tmp_path_factory.mktemp("gemini-kind"))
    yield running
    stop(running.process)
    assert GEMINI_KEY not in running.log() and LIMITED_KEY not in running.log()


@pytest.fixture
def transport() -> RecordingTransport:
    return RecordingTransport()


@pytest.fixture
def client(proxy, transport) -> anthropic.Anthropic:
    return recording_client(proxy.url, transport)


def test_non_streaming_text_with_usage_and_the_google_key_header(client, proxy, fake_upstream):
    fake_upstream.clear()
    raw = client.messages.with_raw_response.create(model="claude-haiku-4-5", max_tokens=300, system="Be brief.",
                                                   messages=[{"role": "user", "content": "Say hello"}])
    message = raw.parse()
    assert message.content[0].text == "Hello from the fake Gemini upstream." and message.model == "claude-haiku-4-5"
    assert message.stop_reason == "end_turn"
    assert (message.usage.input_tokens, message.usage.cache_read_input_tokens, message.usage.output_tokens) == (
        200, 1000, 42)
    sent = fake_upstream.requests()[-1]
    assert sent["path"] == "/v1beta/models/gemini-2.5-flash:generateContent"
    assert sent["headers"]["x-goog-api-key"] == GEMINI_KEY and "authorization" not in sent["headers"]
    assert "client-side-key" not in json.dumps(sent)
    assert sent["body"] == {"contents": [{"role": "user", "parts": [{"text": "Say hello"}]}],
                            "systemInstruction": {"parts": [{"text": "Be brief."}]},
                            "generationConfig": {"maxOutputTokens": 300, "thinkingConfig": {"thinkingBudget": 0}}}
    row = proxy.flow(raw.headers["request-id"])
    assert (row["provider"], row["upstream_model"], row["status_code"], row["stop_reason"]) == (
        "gemini", "gemini-2.5-flash", 200, "end_turn")
    assert (row["input_tokens"], row["cache_read_input_tokens"], row["output_tokens"]) == (200, 1000, 42)
    assert json.loads(row["upstream_request_headers"])["x-goog-api-key"] == "[redacted]"
    assert row["upstream_url"].endswith("/v1beta/models/gemini-2.5-flash:generateContent")


def test_streamed_thinking_and_text(client, transport, proxy, fake_upstream):
    fake_upstream.clear()
    with client.messages.stream(model="claude-opus-4-1", max_tokens=32000,
                                thinking={"type": "enabled", "budget_tokens": 10000},
                                messages=[{"role": "user", "content": "Say hello"}]) as stream:
        pieces = list(stream.text_stream)
        final = stream.get_final_message()
        request_id = stream.response.headers["request-id"]
    assert [block.type for block in final.content] == ["thinking", "text"]
    assert final.content[0].thinking == "**Planning**\nLet me think about this." and final.content[0].signature
    assert "".join(pieces) == final.content[1].text == "Hello from the fake Gemini upstream." and len(pieces) > 3
    assert (final.usage.input_tokens, final.usage.cache_read_input_tokens, final.usage.output_tokens) == (
        200, 1000, 54)  # candidates + thoughts
    report = transport.last_stream()
    assert report.complete, report.violations
    sent = fake_upstream.requests()[-1]
    assert sent["path"] == "/v1beta/models/gemini-2.5-pro:streamGenerateContent?alt=sse"
    assert sent["body"]["generationConfig"] == {"maxOutputTokens": 32000, "thinkingConfig": {
        "includeThoughts": True, "thinkingBudget": 10000}}
    row = proxy.flow(request_id)
    assert (row["provider"], row["is_stream"], row["stop_reason"], row["output_tokens"]) == (
        "gemini", 1, "end_turn", 54)


def test_tool_calls_with_claude_code_schemas_then_the_results_with_the_thought_signature(client, transport,
                                                                                         fake_upstream):
    fake_upstream.clear()
    question = {"role": "user", "content": "Weather in Paris and London?"}
    thinking = {"type": "enabled", "budget_tokens": 2048}
    with client.messages.stream(model="gemini,scenario-tools", max_tokens=1000, tools=CLAUDE_CODE_TOOLS,
                                thinking=thinking, messages=[question]) as stream:
        final = stream.get_final_message()
    assert [block.type for block in final.content] == ["thinking", "tool_use", "tool_use"]
    assert [(block.name, block.input) for block in final.content[1:]] == [
        ("get_weather", {"city": "Paris"}), ("get_weather", {"city": "London"})]
    assert final.content[0].signature.startswith("gemini.") and final.stop_reason == "tool_use"
    report = transport.last_stream()
    assert report.complete, report.violations
    first = fake_upstream.requests()[-1]["body"]
    declared = json.dumps(first["tools"])
    assert "$schema" not in declared and "additionalProperties" not in declared and "default" not in declared
    assert first["tools"][0]["functionDeclarations"][1]["parameters"]["properties"]["todos"]["items"][
        "properties"]["id"] == {"type": "string", "nullable": True}

    # The fake answers 400 unless the first call comes back with the signature it issued.
    fake_upstream.clear()
    results = [{"type": "tool_result", "tool_use_id": block.id, "content": f"sunny in {block.input['city']}"}
               for block in final.content[1:]]
    with client.messages.stream(model="gemini,scenario-tools", max_tokens=1000, tools=CLAUDE_CODE_TOOLS,
                                thinking=thinking, messages=[question, {"role": "assistant", "content": final.content},
                                                             {"role": "user", "content": results}]) as stream:
        answer = stream.get_final_message()
    assert answer.content[-1].text == "The file is written." and transport.last_stream().complete
    contents = fake_upstream.requests()[-1]["body"]["contents"]
    model_turn, results_turn = contents[1], contents[2]
    assert model_turn["parts"][0]["thoughtSignature"] == final.content[0].signature.removeprefix("gemini.")
    assert base64.b64decode(model_turn["parts"][0]["thoughtSignature"]).startswith(b"fake-gemini-signature")
    assert "thoughtSignature" not in model_turn["parts"][1]
    assert [p["functionResponse"] for p in results_turn["parts"]] == [
        {"id": block.id, "name": "get_weather", "response": {"result": f"sunny in {block.input['city']}"}}
        for block in final.content[1:]]


def test_a_call_from_another_models_history_gets_the_dummy_signature(client, fake_upstream):
    fake_upstream.clear()
    history = [{"role": "user", "content": "Weather in Rome?"},
               {"role": "assistant", "content": [
                   {"type": "thinking", "thinking": "Claude thought.", "signature": "EqQBCkYIBxgCKkB-not-gemini"},
                   {"type": "tool_use", "id": "toolu_from_claude", "name": "get_weather", "input": {"city": "Rome"}}]},
               {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_from_claude",
                                             "content": "rainy"}]}]
    answer = client.messages.create(model="claude-sonnet-4-6", max_tokens=100, tools=CLAUDE_CODE_TOOLS,
                                    messages=history)
    assert answer.content[0].text == "The file is written."
    call = fake_upstream.requests()[-1]["body"]["contents"][1]["parts"][0]
    assert call == {"functionCall": {"id": "toolu_from_claude", "name": "get_weather", "args": {"city": "Rome"}},
                    "thoughtSignature": DUMMY_SIGNATURE}


def test_rate_limit_reaches_the_sdk_as_rate_limit_error(client, proxy):
    kwargs = {"model": "gemini-limited,scenario-error", "max_tokens": 50,
              "messages": [{"role": "user", "content": "hi"}]}
    with pytest.raises(anthropic.RateLimitError) as caught:
        client.messages.create(**kwargs)
    error = caught.value
    assert error.status_code == 429 and int(error.response.headers["retry-after"]) > 0  # from Gemini's RetryInfo
    assert "You exceeded your current quota" in str(error)  # the upstream's own words
    row = proxy.flow(error.response.headers["request-id"])
    assert (row["provider"], row["status_code"], row["error_type"]) == ("gemini-limited", 429, "rate_limit_error")


def test_a_stream_without_finish_reason_ends_with_an_error_event(client, transport, proxy):
    with pytest.raises(anthropic.APIStatusError) as caught, client.messages.stream(
            model="gemini,scenario-truncated", max_tokens=50, messages=[{"role": "user", "content": "hi"}]) as stream:
        stream.get_final_message()
    assert "ended the stream before the answer was complete" in str(caught.value)
    report = transport.last_stream()
    assert report.ok and not report.complete
    assert report.error["type"] == "api_error"
    assert report.message()["content"] == [{"type": "text", "text": "This answer never ends properly."}]
    row = proxy.flow(caught.value.response.headers["request-id"])
    assert (row["provider"], row["error_type"]) == ("gemini", "api_error")
