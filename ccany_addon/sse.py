"""The one SSE codec: encode Anthropic events, decode any upstream's event stream incrementally."""

from __future__ import annotations

import json
from dataclasses import dataclass


def encode_event(data: dict) -> bytes:
    """An Anthropic SSE event: the `event:` line always names the payload's own `type`."""
    payload = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return f"event: {data['type']}\ndata: {payload}\n\n".encode()


@dataclass(slots=True)
class ServerSentEvent:
    event: str | None
    data: str


class SSEDecoder:
    """Turns arbitrarily split bytes into complete events (blank-line delimited, per the SSE spec)."""

    __slots__ = ("_buffer", "_event", "_data")

    def __init__(self) -> None:
        self._buffer = b""
        self._event: str | None = None
        self._data: list[str] = []

    def feed(self, chunk: bytes) -> list[ServerSentEvent]:
        self._buffer += chunk
        events: list[ServerSentEvent] = []
        while True:
            end = self._buffer.find(b"\n")
            if end < 0:
                break
            line = self._buffer[:end]
            self._buffer = self._buffer[end + 1 :]
            if line.endswith(b"\r"):
                line = line[:-1]
            self._line(line.decode("utf-8", errors="replace"), events)
        return events

    def close(self) -> list[ServerSentEvent]:
        """End of input: a last event without its blank line still counts."""
        events: list[ServerSentEvent] = []
        if self._buffer:
            self._line(self._buffer.decode("utf-8", errors="replace").rstrip("\r"), events)
            self._buffer = b""
        self._line("", events)
        return events

    @property
    def pending(self) -> bool:
        """Whether part of an event is still waiting for its end."""
        return bool(self._buffer or self._data or self._event)

    def _line(self, line: str, events: list[ServerSentEvent]) -> None:
        if not line:
            if self._data or self._event is not None:
                events.append(ServerSentEvent(self._event, "\n".join(self._data)))
            self._event, self._data = None, []
            return
        if line.startswith(":"):
            return
        field, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if field == "data":
            self._data.append(value)
        elif field == "event":
            self._event = value
