"""The official anthropic SDK against a real mitmdump with the addon, in front of the fake OpenAI server."""

from __future__ import annotations

import json

import anthropic
import httpx
import httpx2
import pytest

from ccany_addon.anthropic_api.conformance import check_stream

CLIENT_KEY = "sk-ant-client-SECRET-abcdef0123456789"


@pytest.fixture
def client(proxy) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=proxy.url, api_key=CLIENT_KEY, max_retries=0, timeout=20)


def _raw_stream(proxy, model: str, **extra) -> tuple[httpx.Response, bytes]:
    body = {"model": model, "max_tokens": 1024, "stream": True,
            "messages": [{"role": "user", "content": "hello"}], **extra}
    with httpx.Client(timeout=20) as http, http.stream("POST", f"{proxy.url}/v1/messages?beta=true", json=body) as r:
        data = r.read()
    return r, data


def test_create_returns_the_upstream_text_with_usage_and_client_model(client, fake_upstream):
    fake_upstream.clear()
    message = client.messages.create(
        model="scenario:text", max_tokens=64000, system=[{"type": "text", "text": "Be brief.",
                                                           "cache_control": {"type": "ephemeral"}}],
        messages=[{"role": "user", "content": "Say hello"}],
    )
    assert message.content[0].text == "Hello! This is a streamed answer from the fake upstream."
    assert message.model == "scenario:text"
    assert message.stop_reason == "end_turn"
    assert (message.usage.input_tokens, message.usage.cache_read_input_tokens, message.usage.output_tokens) == (
        200, 1000, 42)
    sent = fake_upstream.requests()[-1]
    assert sent["path"] == "/v1/chat/completions"
    assert sent["body"]["messages"][0] == {"role": "system", "content": "Be brief."}
    assert sent["headers"]["authorization"] == "Bearer sk-upstream-SECRET-0123456789abcdef"
    assert CLIENT_KEY not in str(sent)


def test_stream_text_arrives_as_deltas(client):
    with client.messages.stream(model="scenario:text", max_tokens=100,
                                messages=[{"role": "user", "content": "hi"}]) as stream:
        pieces = list(stream.text_stream)
        final = stream.get_final_message()
    assert len(pieces) > 3
    assert "".join(pieces) == final.content[0].text
    assert final.usage.output_tokens == 42


def test_stream_tool_call_with_fragmented_arguments(client, fake_upstream):
    fake_upstream.clear()
    tools = [{"name": "get_weather", "description": "Weather", "input_schema": {
        "$schema": "http://json-schema.org/draft-07/schema#", "type": "object",
        "properties": {"city": {"type": "string"}, "unit": {"type": "string"}}}}]
    with client.messages.stream(model="scenario:tool", max_tokens=100, tools=tools,
                                messages=[{"role": "user", "content": "Weather in Paris?"}]) as stream:
        final = stream.get_final_message()
    block = final.content[0]
    assert block.type == "tool_use" and block.name == "get_weather"
    assert block.input == {"city": "Paris", "unit": "celsius"}
    assert block.id == "call_abc_1"
    assert final.stop_reason == "tool_use"
    sent = fake_upstream.requests()[-1]["body"]
    assert "$schema" not in sent["tools"][0]["function"]["parameters"]
    assert sent["stream_options"] == {"include_usage": True}


def test_parallel_interleaved_tool_calls_each_get_a_block(client):
    with client.messages.stream(model="scenario:parallel", max_tokens=100,
                                messages=[{"role": "user", "content": "read both"}]) as stream:
        final = stream.get_final_message()
    assert [(b.type, b.id, b.input) for b in final.content] == [
        ("tool_use", "call_1", {"file_path": "/tmp/a.txt"}),
        ("tool_use", "call_2", {"file_path": "/tmp/b.txt"}),
    ]


def test_reasoning_becomes_a_signed_thinking_block_and_goes_back_in_history(client, fake_upstream):
    with client.messages.stream(model="scenario:reasoning", max_tokens=100,
                                messages=[{"role": "user", "content": "2+2?"}]) as stream:
        final = stream.get_final_message()
    thinking, text = final.content
    assert thinking.type == "thinking" and thinking.thinking == "Let me think."
    assert thinking.signature
    assert text.text == "The answer is 4."
    again = client.messages.create(
        model="scenario:text", max_tokens=100,
        messages=[{"role": "user", "content": "2+2?"},
                  {"role": "assistant", "content": [b.model_dump() for b in final.content]},
                  {"role": "user", "content": "thanks"}])
    assert again.content[0].type == "text"


@pytest.mark.parametrize(
    ("scenario", "stop_reason", "stop_sequence"),
    [("length", "max_tokens", None), ("content_filter", "refusal", None), ("stop_sequence", "stop_sequence", "END")],
)
def test_finish_reasons_streamed_and_not(client, proxy, scenario, stop_reason, stop_sequence):
    message = client.messages.create(model=f"scenario:{scenario}", max_tokens=100, stop_sequences=["END"],
                                     messages=[{"role": "user", "content": "go"}])
    assert (message.stop_reason, message.stop_sequence) == (stop_reason, stop_sequence)
    _, data = _raw_stream(proxy, f"scenario:{scenario}", stop_sequences=["END"])
    report = check_stream(data)
    assert report.complete, report.violations
    assert report.message()["stop_reason"] == stop_reason


def test_count_tokens_is_answered_by_the_proxy(client, fake_upstream):
    fake_upstream.clear()
    small = client.messages.count_tokens(model="claude-sonnet-4-5", messages=[{"role": "user", "content": "hi"}])
    large = client.messages.count_tokens(
        model="claude-sonnet-4-5", system="You are a helpful assistant. " * 50,
        messages=[{"role": "user", "content": "Explain the theory of relativity in detail, please."}],
        tools=[{"name": "Read", "description": "Read a file", "input_schema": {
            "type": "object", "properties": {"file_path": {"type": "string"}}}}])
    assert 0 < small.input_tokens < 20
    assert large.input_tokens > small.input_tokens + 300
    assert fake_upstream.requests() == []


@pytest.mark.parametrize(
    ("scenario", "error_class", "status", "error_type"),
    [
        ("http_400", anthropic.BadRequestError, 400, "invalid_request_error"),
        ("http_401", anthropic.AuthenticationError, 401, "authentication_error"),
        ("http_403", anthropic.PermissionDeniedError, 403, "permission_error"),
        ("http_404", anthropic.NotFoundError, 404, "not_found_error"),
        ("http_422", anthropic.BadRequestError, 400, "invalid_request_error"),
        ("http_429", anthropic.RateLimitError, 429, "rate_limit_error"),
        ("http_500", anthropic.InternalServerError, 500, "api_error"),
        ("http_503", anthropic.OverloadedError, 529, "overloaded_error"),
        ("http_504", anthropic.GatewayTimeoutError, 504, "timeout_error"),
    ],
)
@pytest.mark.parametrize("streaming", [False, True])
def test_upstream_http_errors_map_to_anthropic_errors(client, scenario, error_class, status, error_type, streaming):
    with pytest.raises(error_class) as caught:
        kwargs = {"model": f"scenario:{scenario}", "max_tokens": 10, "messages": [{"role": "user", "content": "x"}]}
        if streaming:
            with client.messages.stream(**kwargs) as stream:
                stream.get_final_message()
        else:
            client.messages.create(**kwargs)
    error = caught.value
    assert error.status_code == status
    assert error.body["error"]["type"] == error_type
    assert f"fake upstream says {scenario[-3:]}" in error.body["error"]["message"]
    assert error.response.headers["request-id"].startswith("req_")
    if status == 429:
        assert error.response.headers["retry-after"] == "7"


def test_error_mid_stream_reaches_the_sdk_as_an_api_error(client, proxy):
    with pytest.raises(anthropic.APIStatusError) as caught, client.messages.stream(
            model="scenario:midstream_error", max_tokens=10, messages=[{"role": "user", "content": "x"}]) as stream:
        stream.get_final_message()
    assert "The server had an error" in str(caught.value)
    _, data = _raw_stream(proxy, "scenario:midstream_error")
    report = check_stream(data)
    assert report.ok and not report.complete
    assert report.error["type"] == "api_error"


def test_stream_cut_by_the_upstream_is_never_a_clean_end(client, proxy):
    # anthropic 2.x reads through httpx2, whose errors are not httpx's
    with pytest.raises((anthropic.APIConnectionError, httpx.RemoteProtocolError, httpx2.RemoteProtocolError)), \
            client.messages.stream(
            model="scenario:drop", max_tokens=10, messages=[{"role": "user", "content": "x"}]) as stream:
        stream.get_final_message()
    with pytest.raises(httpx.RemoteProtocolError):
        _raw_stream(proxy, "scenario:drop")


def test_stream_that_ends_without_finishing_gets_an_error_event(proxy):
    _, data = _raw_stream(proxy, "scenario:truncated")
    report = check_stream(data)
    assert report.ok and not report.complete
    assert "before the answer was complete" in report.error["message"]


def test_tool_results_go_back_as_tool_messages_before_the_user_text(client, fake_upstream):
    fake_upstream.clear()
    client.messages.create(
        model="scenario:text", max_tokens=100,
        messages=[
            {"role": "user", "content": "read two files"},
            {"role": "assistant", "content": [
                {"type": "text", "text": "Reading."},
                {"type": "tool_use", "id": "toolu_1", "name": "Read", "input": {"file_path": "/a"}},
                {"type": "tool_use", "id": "toolu_2", "name": "Read", "input": {"file_path": "/b"}}]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "A",
                 "cache_control": {"type": "ephemeral"}},
                {"type": "tool_result", "tool_use_id": "toolu_2", "content": [{"type": "text", "text": "no such file"}],
                 "is_error": True},
                {"type": "text", "text": "Now summarise."}]},
        ])
    messages = fake_upstream.requests()[-1]["body"]["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "tool", "tool", "user"]
    call = messages[1]["tool_calls"][1]
    assert call["function"]["name"] == "Read" and json.loads(call["function"]["arguments"]) == {"file_path": "/b"}
    assert messages[2] == {"role": "tool", "tool_call_id": "toolu_1", "content": "A"}
    assert messages[3]["tool_call_id"] == "toolu_2" and "no such file" in messages[3]["content"]
    assert "error" in messages[3]["content"]
    assert messages[4] == {"role": "user", "content": "Now summarise."}
