"""The anthropic kind's stream: bytes pass unchanged, cut only at event boundaries, never a clean broken end."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ccany_addon.anthropic_api.conformance import check_stream
from ccany_addon.anthropic_api.sse import encode_event
from ccany_addon.converters.anthropic_passthrough import AnthropicEventStream, message_facts, to_anthropic_request

EVENTS = [
    {"type": "message_start", "message": {"id": "m", "type": "message", "role": "assistant", "model": "c",
                                          "content": [], "stop_reason": None, "stop_sequence": None,
                                          "usage": {"input_tokens": 5, "output_tokens": 1}}},
    {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
    {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "héllo"}},
    {"type": "content_block_stop", "index": 0},
    {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
     "usage": {"output_tokens": 9}},
    {"type": "message_stop"},
]
STREAM = b"".join(encode_event(event) for event in EVENTS)


@given(st.lists(st.integers(min_value=0, max_value=len(STREAM)), max_size=12))
def test_any_split_gives_the_same_bytes_in_whole_events(cuts):
    bounds = [0, *sorted(cuts), len(STREAM)]
    stream = AnthropicEventStream()
    out = [chunk for a, b in zip(bounds, bounds[1:], strict=False) if b > a for chunk in stream(STREAM[a:b])]
    out += stream(b"")
    assert b"".join(out) == STREAM
    assert all(chunk.endswith(b"\n\n") for chunk in out)
    assert (stream.stop_reason, stream.usage["output_tokens"], stream.usage["input_tokens"]) == ("end_turn", 9, 5)
    assert check_stream(b"".join(out)).complete


def test_a_stream_cut_before_message_stop_ends_with_an_error_event():
    stream = AnthropicEventStream("api.anthropic.com:443")
    cut = STREAM[: STREAM.index(b"event: message_delta")]
    data = b"".join(stream(cut) + stream(b""))
    report = check_stream(data)
    assert not report.complete and report.error["type"] == "api_error"
    assert stream.error_type == "api_error" and "before message_stop" in stream.error


def test_an_upstream_error_event_is_kept_and_noted():
    error = encode_event({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
    stream = AnthropicEventStream()
    data = b"".join(stream(encode_event(EVENTS[0]) + error) + stream(b""))
    assert data == encode_event(EVENTS[0]) + error
    assert (stream.error_type, stream.error) == ("overloaded_error", "Overloaded")


def test_the_request_is_untouched_unless_a_route_renames_the_model():
    raw = b'{"model": "claude-x", "max_tokens": 5, "messages": []}'
    assert to_anthropic_request(raw, "claude-x", "claude-x") is raw
    assert b'"model":"claude-y"' in to_anthropic_request(raw, "claude-x", "claude-y")


KEY = "FZ-provider-key-of-no-known-shape-42"


def test_nothing_passes_after_an_error_event_and_its_key_is_masked():
    error = encode_event({"type": "error", "error": {"type": "overloaded_error", "message": f"Overloaded {KEY}"}})
    stream = AnthropicEventStream(secrets=(KEY,))
    data = b"".join(stream(encode_event(EVENTS[0]) + error + b"".join(map(encode_event, EVENTS[1:]))) + stream(b""))
    report = check_stream(data)
    assert report.ok and report.error["type"] == "overloaded_error" and KEY not in data.decode()
    assert data.endswith(error.replace(KEY.encode(), b"***"))


def test_an_unreadable_error_event_becomes_the_gateways_own():
    stream = AnthropicEventStream("api.example:443", secrets=(KEY,))
    data = b"".join(stream(encode_event(EVENTS[0]) + b"event: error\ndata: " + KEY.encode() + b"\n\n") + stream(b""))
    report = check_stream(data)
    assert report.ok and report.error["type"] == "api_error" and KEY not in data.decode()
    assert "unreadable error event" in report.error["message"]


def test_data_without_an_event_line_and_a_stream_that_is_not_sse_never_carry_a_key():
    stream = AnthropicEventStream(secrets=(KEY,))
    data = b"".join(stream(encode_event(EVENTS[0]) + b'data: {"error": "' + KEY.encode() + b'"}\n\n') + stream(b""))
    assert KEY not in data.decode()
    stream = AnthropicEventStream(secrets=(KEY,))  # a JSON error body answered with status 200 to a stream request
    data = b"".join(stream(b'{"type": "error", "error": {"message": "' + KEY.encode() + b'"}}') + stream(b""))
    assert KEY not in data.decode() and not check_stream(data).complete


@pytest.mark.parametrize("body", [
    {"type": "error", "error": {"type": "api_error", "message": "x"}},
    {**EVENTS[0]["message"], "role": 7},
    {**EVENTS[0]["message"], "content": [{"text": "no type"}]},
    {**EVENTS[0]["message"], "usage": {"input_tokens": "5", "output_tokens": 1}},
    [EVENTS[0]["message"]],
])
def test_a_non_streamed_answer_that_is_not_a_message_is_refused(body):
    with pytest.raises(ValueError):
        message_facts(body)
    assert message_facts({**EVENTS[0]["message"], "stop_reason": "end_turn"}) == (
        "end_turn", {"input_tokens": 5, "output_tokens": 1})


def test_nothing_passes_after_message_stop():
    error = encode_event({"type": "error", "error": {"type": "overloaded_error", "message": f"late {KEY}"}})
    stream = AnthropicEventStream(secrets=(KEY,))
    data = b"".join(stream((STREAM + error).replace(b"\n", b"\r\n")) + stream(b""))
    assert data == STREAM.replace(b"\n", b"\r\n") and check_stream(data).complete
    assert stream.error is None


def test_a_renamed_request_orjson_cannot_read_is_a_400():
    from ccany_addon.anthropic_api.errors import GatewayError

    with pytest.raises(GatewayError) as raised:
        to_anthropic_request(b'{"model": "a", "temperature": 1e400}', "a", "b")
    assert raised.value.status == 400


def test_a_message_stop_without_data_is_not_the_end():
    junk = STREAM.index(b"event: message_delta")
    data = STREAM[:junk] + b"event: message_stop\n\n" + STREAM[junk:]
    stream = AnthropicEventStream()
    out = b"".join(stream(data) + stream(b""))
    assert out == data and stream.finished and stream.error is None
