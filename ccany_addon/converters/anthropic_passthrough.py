"""The `anthropic` provider kind: the client's request goes to the Anthropic API as it is (only the model may
be renamed by a route), and the answer comes back untouched. The stream is only cut at event boundaries, so
the flow log can read whole events, and a stream that ends before `message_stop` gets an error event: a broken
stream must never look like a clean end."""

from __future__ import annotations

from ccany_addon.errors import error_body, error_type
from ccany_addon.json_codec import dumps, loads
from ccany_addon.sse import encode_event

DEFAULT_VERSION = "2023-06-01"
FORWARDED_HEADERS = ("anthropic-version", "anthropic-beta")


def to_anthropic_request(raw: bytes, client_model: str, upstream_model: str) -> bytes:
    if upstream_model == client_model:
        return raw
    body = loads(raw)
    body["model"] = upstream_model
    return dumps(body)


def message_facts(message: dict) -> tuple[str | None, dict]:
    """The stop reason and usage of a non-streamed answer."""
    usage = message.get("usage")
    return message.get("stop_reason"), usage if isinstance(usage, dict) else {}


class AnthropicEventStream:
    """Anthropic SSE bytes in, the same bytes out in whole events (the `flow.response.stream` callable)."""

    def __init__(self, upstream: str = "upstream") -> None:
        self.upstream = upstream
        self._buffer = b""
        self.finished = False
        self.stop_reason: str | None = None
        self.usage: dict = {}
        self.error: str | None = None
        self.error_type: str | None = None

    def __call__(self, data: bytes) -> list[bytes]:
        if not data:
            return self._end()
        buffer = self._buffer + data
        lf, crlf = buffer.rfind(b"\n\n"), buffer.rfind(b"\r\n\r\n")
        end = max(lf + 2 if lf >= 0 else 0, crlf + 4 if crlf >= 0 else 0)
        if not end:
            self._buffer = buffer
            return []
        complete, self._buffer = buffer[:end], buffer[end:]
        self._watch(complete)
        return [complete]

    def _watch(self, events: bytes) -> None:
        """Keep what the log and the metrics need: usage, the stop reason, an error, the end."""
        for block in events.replace(b"\r\n", b"\n").split(b"\n\n"):
            kind = block[7 : block.find(b"\n")] if block.startswith(b"event: ") else b""
            if kind not in (b"message_start", b"message_delta", b"message_stop", b"error"):
                continue
            if kind == b"message_stop":
                self.finished = True
                continue
            try:
                event = loads(block.split(b"data: ", 1)[1])
            except (IndexError, ValueError):
                continue
            if kind == b"message_start":
                self.usage = dict(event.get("message", {}).get("usage") or {})
            elif kind == b"message_delta":
                self.usage.update(event.get("usage") or {})
                self.stop_reason = (event.get("delta") or {}).get("stop_reason")
            else:
                error = event.get("error") or {}
                self.error, self.error_type = str(error.get("message", "stream error")), error.get("type", "api_error")

    def _end(self) -> list[bytes]:
        out: list[bytes] = []
        if self._buffer.strip():
            out.append(self._buffer + b"\n\n")
            self._watch(out[0])
            self._buffer = b""
        if not self.finished and self.error is None:
            self.error = f"{self.upstream} upstream ended the stream before message_stop"
            self.error_type = error_type(500)
            out.append(encode_event(error_body(500, self.error)))
        return out
