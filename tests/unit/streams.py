"""What every stream translator's tests share: feeding it bytes as the network may cut them, and the events it
produced in a form that compares across cuts."""

from __future__ import annotations

import json
from collections.abc import Callable

from hypothesis import strategies as st

from ccany_addon.anthropic_api.accumulate import received_message
from ccany_addon.anthropic_api.conformance import check_stream
from ccany_addon.anthropic_api.sse import SSEDecoder
from ccany_addon.converters.message_stream import WrittenStream


def feed_chunks(translator: Callable[[bytes], list[bytes]], pieces: list[bytes]) -> bytes:
    """Feed the pieces one by one, then the end (b""); every returned chunk must be non-empty whole events."""
    out: list[bytes] = []
    for piece in [*pieces, b""]:
        returned = translator(piece)
        assert isinstance(returned, list)
        for item in returned:
            assert isinstance(item, bytes) and item, "an empty chunk would end the client's stream"
            assert item.endswith(b"\n\n")
        out.extend(returned)
        if isinstance(translator, WrittenStream):
            assert translator.message() == added_up(b"".join(out)), "the writer's message is not what was sent"
    return b"".join(out)


def added_up(sent: bytes) -> dict:
    """The message a client adds up from the events, with the stream's error if it ended in one."""
    decoder = SSEDecoder()
    return received_message([json.loads(event.data) for event in decoder.feed(sent) + decoder.close()])


def comparable_events(out: bytes, generated_block_ids: bool = False) -> list[dict]:
    """The events of a complete stream without the ids the gateway generates anew each time."""
    report = check_stream(out)
    assert report.complete, report.violations
    events = json.loads(json.dumps(report.events))
    events[0]["message"].pop("id")
    if generated_block_ids:
        for event in events:
            event.get("content_block", {}).pop("id", None)
    return events


def draw_split(data: st.DataObject, streams: list[bytes]) -> tuple[int, list[bytes]]:
    """Which of `streams` was drawn, and its bytes cut at up to 40 drawn places (no empty pieces)."""
    which = data.draw(st.integers(0, len(streams) - 1), label="stream")
    stream = streams[which]
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=40), label="cuts")
    bounds = [0, *sorted(cuts), len(stream)]
    pieces = [stream[a:b] for a, b in zip(bounds, bounds[1:], strict=False) if b > a]
    assert b"".join(pieces) == stream
    return which, pieces


def byte_by_byte(stream: bytes) -> list[bytes]:
    return [stream[i:i + 1] for i in range(len(stream))]
