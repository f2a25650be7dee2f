"""The stream checker itself: a good stream passes, and every grammar break is reported."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ccany_addon.anthropic_api.conformance import check_stream
from ccany_addon.anthropic_api.sse import encode_delta, encode_event


def event(payload: dict, name: str | None = "") -> bytes:
    """One SSE event; `name` None leaves out the `event:` line, "" uses the payload's type."""
    line = "" if name is None else f"event: {name or payload['type']}\n"
    return f"{line}data: {json.dumps(payload)}\n\n".encode()


MESSAGE_START = {"type": "message_start", "message": {
    "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5", "content": [],
    "stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": 10, "output_tokens": 0}}}
PING = {"type": "ping"}


def block_start(index: int, block: dict) -> dict:
    return {"type": "content_block_start", "index": index, "content_block": block}


def delta(index: int, body: dict) -> dict:
    return {"type": "content_block_delta", "index": index, "delta": body}


def block_stop(index: int) -> dict:
    return {"type": "content_block_stop", "index": index}


TEXT_START = block_start(0, {"type": "text", "text": ""})
TEXT_DELTA = delta(0, {"type": "text_delta", "text": "Hi"})
TOOL_START = block_start(1, {"type": "tool_use", "id": "toolu_1", "name": "Read", "input": {}})
TOOL_DELTA = delta(1, {"type": "input_json_delta", "partial_json": '{"path": "a"}'})
MESSAGE_DELTA = {"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": None},
                 "usage": {"output_tokens": 12}}
MESSAGE_STOP = {"type": "message_stop"}
ERROR = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}

GOOD = [MESSAGE_START, PING, TEXT_START, TEXT_DELTA, block_stop(0), TOOL_START, TOOL_DELTA, block_stop(1),
        MESSAGE_DELTA, MESSAGE_STOP]


def stream(events: list[dict]) -> bytes:
    return b"".join(event(e) for e in events)


def without(*drop: dict) -> list[dict]:
    return [e for e in GOOD if not any(e is d for d in drop)]


def test_good_stream_passes():
    report = check_stream(stream(GOOD))
    assert report.violations == []
    assert report.ok and report.complete and report.error is None
    message = report.message()
    assert message["content"] == [{"type": "text", "text": "Hi"},
                                  {"type": "tool_use", "id": "toolu_1", "name": "Read", "input": {"path": "a"}}]
    assert message["stop_reason"] == "tool_use"
    assert message["usage"] == {"input_tokens": 10, "output_tokens": 12}


def test_good_stream_with_thinking_and_no_ping_passes():
    events = [MESSAGE_START, block_start(0, {"type": "thinking", "thinking": "", "signature": ""}),
              delta(0, {"type": "thinking_delta", "thinking": "hmm"}),
              delta(0, {"type": "signature_delta", "signature": "sig"}), block_stop(0),
              {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 1}},
              MESSAGE_STOP]
    report = check_stream(stream(events))
    assert report.complete, report.violations
    assert report.message()["content"] == [{"type": "thinking", "thinking": "hmm", "signature": "sig"}]


def test_crlf_stream_passes():
    assert check_stream(stream(GOOD).replace(b"\n", b"\r\n")).complete


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param(stream(without(MESSAGE_START, PING)), "not message_start", id="missing-message-start"),
        pytest.param(stream([MESSAGE_START, TEXT_DELTA, TEXT_START, block_stop(0), MESSAGE_DELTA, MESSAGE_STOP]),
                     "delta for block 0", id="delta-before-block-start"),
        pytest.param(stream([MESSAGE_START, block_start(1, {"type": "text", "text": ""}),
                             delta(1, {"type": "text_delta", "text": "x"}), block_stop(1), MESSAGE_DELTA,
                             MESSAGE_STOP]),
                     "index 1, expected 0", id="index-gap-at-start"),
        pytest.param(stream([MESSAGE_START, TEXT_START, block_stop(0),
                             block_start(2, {"type": "text", "text": ""}), block_stop(2), MESSAGE_DELTA,
                             MESSAGE_STOP]),
                     "index 2, expected 1", id="index-gap"),
        pytest.param(stream([MESSAGE_START, TEXT_START, block_stop(0), TEXT_START, block_stop(0), MESSAGE_DELTA,
                             MESSAGE_STOP]),
                     "index 0, expected 1", id="index-repeated"),
        pytest.param(stream([MESSAGE_START, TOOL_START.copy() | {"index": 0},
                             delta(0, {"type": "text_delta", "text": "x"}), block_stop(0), MESSAGE_DELTA,
                             MESSAGE_STOP]),
                     "text_delta inside a tool_use block", id="text-delta-in-tool-use"),
        pytest.param(stream([MESSAGE_START, TEXT_START, delta(0, {"type": "input_json_delta", "partial_json": "{"}),
                             block_stop(0), MESSAGE_DELTA, MESSAGE_STOP]),
                     "input_json_delta inside a text block", id="json-delta-in-text"),
        pytest.param(stream([MESSAGE_START, TEXT_START, TOOL_START, block_stop(1), MESSAGE_DELTA, MESSAGE_STOP]),
                     "starts while block 0 is open", id="block-start-while-open"),
        pytest.param(event(MESSAGE_START) + event(PING, None) + stream(GOOD[2:]), "without an 'event:' line",
                     id="data-without-event"),
        pytest.param(event(MESSAGE_START) + event(TEXT_START, "content_block_delta") + stream(GOOD[3:]),
                     "but payload type", id="event-name-mismatch"),
        pytest.param(stream([*GOOD[:8], {"type": "message_delta", "delta": {"stop_reason": "end_turn"}},
                             MESSAGE_STOP]),
                     "without usage", id="message-delta-without-usage"),
        pytest.param(stream([*GOOD[:8], {"type": "message_delta", "delta": {"stop_reason": "end_turn"},
                                         "usage": {"input_tokens": 3}}, MESSAGE_STOP]),
                     "without usage", id="message-delta-without-output-tokens"),
        pytest.param(stream([*GOOD[:9], MESSAGE_DELTA, MESSAGE_STOP]), "second message_delta",
                     id="two-message-deltas"),
        pytest.param(stream(GOOD[:9]), "without message_stop", id="no-message-stop"),
        pytest.param(stream(GOOD[:4]), "without message_stop", id="stops-mid-block"),
        pytest.param(stream(GOOD) + b"data: [DONE]\n\n", "[DONE]", id="done-after-stop"),
        pytest.param(stream(GOOD[:9]) + b"event: message_stop\ndata: [DONE]\n\n", "[DONE]", id="done-as-stop"),
        pytest.param(stream([MESSAGE_START, block_start(0, {"type": "tool_use", "id": "t", "name": "Read",
                                                           "input": {"path": "a"}}),
                             block_stop(0), MESSAGE_DELTA, MESSAGE_STOP]),
                     "input must arrive as input_json_delta", id="tool-input-in-start"),
        pytest.param(stream([*GOOD, TEXT_START]), "after the stream ended", id="block-after-message-stop"),
        pytest.param(stream([*GOOD, MESSAGE_STOP]), "after the stream ended", id="second-message-stop"),
        pytest.param(stream([*GOOD[:4], ERROR, block_stop(0)]), "after the stream ended", id="event-after-error"),
        pytest.param(stream([MESSAGE_START, MESSAGE_STOP]), "without a message_delta", id="stop-without-delta"),
        pytest.param(stream([MESSAGE_START, TEXT_START, TEXT_DELTA, MESSAGE_DELTA, MESSAGE_STOP]),
                     "while block 0 is open", id="message-delta-while-block-open"),
        pytest.param(stream([*GOOD[:3], block_stop(5), *GOOD[5:]]), "stop for block 5", id="wrong-block-stop"),
        pytest.param(stream([*GOOD[:9], TEXT_START, MESSAGE_STOP]), "after message_delta",
                     id="block-after-message-delta"),
        pytest.param(stream([MESSAGE_START, MESSAGE_START, *GOOD[2:]]), "second message_start",
                     id="two-message-starts"),
        pytest.param(stream([PING, *GOOD]), "ping before message_start", id="ping-first"),
        pytest.param(stream(GOOD)[:-1], "missing blank line", id="last-event-unterminated"),
        pytest.param(stream(GOOD[:3]) + b"event: content_block_delta\ndata: {oops\n\n" + stream(GOOD[4:]),
                     "not JSON", id="data-not-json"),
        pytest.param(stream([*GOOD[:8], {"type": "message_delta", "usage": {"output_tokens": 1}}, MESSAGE_STOP]),
                     "stop_reason", id="message-delta-without-stop-reason"),
        pytest.param(stream([MESSAGE_START, block_start(0, {"type": "tool_use", "input": {}}), block_stop(0),
                             MESSAGE_DELTA, MESSAGE_STOP]),
                     "without id or name", id="tool-use-without-id"),
        pytest.param(stream([MESSAGE_START, block_start(0, {"type": "image"}), block_stop(0), MESSAGE_DELTA,
                             MESSAGE_STOP]),
                     "unknown content block", id="unknown-block-type"),
        pytest.param(stream([*GOOD[:8], {"type": "surprise"}, *GOOD[8:]]), "unknown event type",
                     id="unknown-event"),
        pytest.param(stream([{"type": "message_start", "message": {"id": "m", "content": []}}, *GOOD[1:]]),
                     "without message.usage", id="message-start-without-usage"),
        pytest.param(stream([{"type": "error", "error": "boom"}]), "error event without", id="malformed-error"),
    ],
)
def test_violation_reported(raw, expected):
    report = check_stream(raw)
    assert not report.ok
    assert not report.complete
    assert any(expected in violation for violation in report.violations), report.violations


def test_error_terminated_stream_is_ok_but_not_complete():
    report = check_stream(stream([*GOOD[:4], ERROR]))
    assert report.ok, report.violations
    assert not report.complete
    assert report.error == ERROR["error"]


def test_error_before_anything_is_ok_but_not_complete():
    report = check_stream(stream([ERROR]))
    assert report.ok and not report.complete
    assert report.error["type"] == "overloaded_error"


def test_error_after_message_start_is_ok():
    report = check_stream(stream([MESSAGE_START, PING, ERROR]))
    assert report.ok and not report.complete


def test_empty_stream_is_reported():
    report = check_stream(b"")
    assert not report.ok and not report.complete


def test_each_violation_is_reported_once_per_event():
    report = check_stream(event(MESSAGE_START, None) + event(PING, None) + stream(GOOD[2:]))
    assert sum("without an 'event:' line" in v for v in report.violations) == 2


@settings(max_examples=300)
@given(index=st.integers(0, 10_000), text=st.text(),
       kind=st.sampled_from([("text_delta", "text"), ("thinking_delta", "thinking"),
                             ("input_json_delta", "partial_json"), ("signature_delta", "signature")]))
def test_the_delta_shortcut_encodes_exactly_like_encode_event(index, text, kind):
    delta_type, field = kind
    assert encode_delta(index, delta_type.encode(), field.encode(), text) == encode_event(
        {"type": "content_block_delta", "index": index, "delta": {"type": delta_type, field: text}})
