"""The anthropic kind's stream: bytes pass unchanged, cut only at event boundaries, never a clean broken end."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from ccany_addon.conformance import check_stream
from ccany_addon.converters.anthropic_passthrough import AnthropicEventStream, to_anthropic_request
from ccany_addon.sse import encode_event

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
