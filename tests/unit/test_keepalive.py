"""What the keep-alive asks of a stream: `idle()` bytes that keep the grammar, and `sends` that moves only when
the client was sent something."""

from __future__ import annotations

from ccany_addon.anthropic_api.conformance import check_stream
from ccany_addon.converters.anthropic_passthrough import AnthropicEventStream
from ccany_addon.converters.common import ResponseContext
from ccany_addon.converters.openai_chat_stream import ChatStreamTranslator

CTX = ResponseContext(client_model="claude-sonnet-4-5", estimated_input_tokens=10)
TEXT = b'data: {"choices": [{"index": 0, "delta": {"content": "Hi"}}]}\n\n'
END = (b'data: {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}\n\n'
       b'data: {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 1}}\n\ndata: [DONE]\n\n')


def test_a_converting_stream_idles_with_message_start_then_pings_and_stays_grammatical():
    stream = ChatStreamTranslator(CTX, "up")
    first = b"".join(stream.idle())
    assert first.startswith(b"event: message_start\n") and first.count(b"event: ping") == 1
    assert b"".join(stream.idle()) == b'event: ping\ndata: {"type":"ping"}\n\n'
    assert stream.sends == 0  # idle bytes are not the upstream's
    body = first + b"".join(stream(TEXT)) + b"".join(stream.idle()) + b"".join(stream(END)) + b"".join(stream(b""))
    assert stream.sends >= 2 and stream.ended and stream.idle() == []
    report = check_stream(body)
    assert report.complete and not report.violations, report.violations
    assert body.count(b"event: message_start") == 1


def test_reads_that_send_nothing_do_not_count_as_sends():
    stream = ChatStreamTranslator(CTX, "up")
    stream(TEXT)
    sends = stream.sends
    assert stream(b": a comment the upstream sends to keep its own connection\n\n") == []
    assert stream.sends == sends


def test_the_passthrough_pings_only_between_its_upstreams_message_start_and_stop():
    stream = AnthropicEventStream("up")
    assert stream.idle() == []  # it invents no message_start
    stream(b'event: message_start\ndata: {"type":"message_start","message":{"usage":{"input_tokens":1}}}\n\n')
    assert stream.idle() == [b'event: ping\ndata: {"type":"ping"}\n\n'] and stream.sends == 1
    stream(b'event: message_stop\ndata: {"type":"message_stop"}\n\n')
    assert stream.ended and stream.idle() == []
