"""The `anthropic` provider kind: the client's request goes to the Anthropic API as it is (only the model may
be renamed by a route), and the answer comes back untouched. The stream is only cut at event boundaries, so
the flow log can read whole events, and a stream that ends before `message_stop` gets an error event: a broken
stream must never look like a clean end."""

from __future__ import annotations

from ccany_addon.anthropic_api.errors import GatewayError, error_body, error_type, mask_secrets
from ccany_addon.anthropic_api.sse import encode_event
from ccany_addon.util.json_codec import dumps, loads

FORWARDED_HEADERS = ("anthropic-version", "anthropic-beta")


def to_anthropic_request(raw: bytes, client_model: str, upstream_model: str) -> bytes:
    if upstream_model == client_model:
        return raw
    try:
        body = loads(raw)
    except ValueError as error:  # what pydantic's parser took and orjson does not, e.g. 1e400
        raise GatewayError(400, f"Request body is not valid JSON: {error}") from None
    body["model"] = upstream_model
    return dumps(body)


def message_facts(message: object) -> tuple[str | None, dict]:
    """The stop reason and usage of a non-streamed answer. What is passed through untouched must be a message a
    client can read: anything else raises ValueError (the upstream's failure)."""
    if not (isinstance(message, dict) and message.get("type") == "message" and message.get("role") == "assistant"
            and isinstance(content := message.get("content"), list)
            and all(isinstance(block, dict) and isinstance(block.get("type"), str) for block in content)
            and isinstance(usage := message.get("usage"), dict)
            and all(type(usage.get(name)) is int for name in ("input_tokens", "output_tokens"))):
        raise ValueError("the upstream's answer is not an Anthropic message")
    stop_reason = message.get("stop_reason")
    return stop_reason if isinstance(stop_reason, str) else None, usage


PING_EVENT = encode_event({"type": "ping"})


class AnthropicEventStream:
    """Anthropic SSE bytes in, the same bytes out in whole events (the `flow.response.stream` callable)."""

    # An upstream that never ends an event must not hold the proxy's memory.
    MAX_EVENT = 16 * 1024 * 1024

    def __init__(self, upstream: str = "upstream", secrets: tuple[str, ...] = ()) -> None:
        self.upstream = upstream
        self.secrets = secrets
        self._buffer = b""
        self.finished = False
        self.stop_reason: str | None = None
        self.usage: dict = {}
        self.error: str | None = None
        self.error_type: str | None = None
        self._unframed = False  # data without an `event:` line went by: not an Anthropic event, maybe an error
        self._unreadable_error = False
        self.started = False  # the upstream's message_start went by
        self.sends = 0  # reads that sent the client something: the keep-alive watches it move

    def __call__(self, data: bytes) -> list[bytes]:
        """An upstream's stream is untrusted input: what cannot be read ends the client's stream with an error."""
        if self.finished or self.error is not None:
            return []
        try:
            out = self._events(data)
        except Exception as error:
            out = self._fail(f"{self.upstream} upstream sent stream data of an unexpected shape "
                             f"({type(error).__name__})")
        if out:
            self.sends += 1
        return out

    @property
    def ended(self) -> bool:
        return self.finished or self.error is not None

    def idle(self) -> list[bytes]:
        """A `ping` for a silent stream, once the upstream's own message_start has gone by (before it, a ping
        would break the grammar, and this stream invents no message_start)."""
        return [PING_EVENT] if self.started and not self.ended else []

    def _events(self, data: bytes) -> list[bytes]:
        if not data:
            return self._end()
        buffer = self._buffer + data
        lf, crlf = buffer.rfind(b"\n\n"), buffer.rfind(b"\r\n\r\n")
        end = max(lf + 2 if lf >= 0 else 0, crlf + 4 if crlf >= 0 else 0)
        if not end:
            if len(buffer) > self.MAX_EVENT:
                return self._fail(f"{self.upstream} upstream sent an event longer than {self.MAX_EVENT} bytes")
            self._buffer = buffer
            return []
        complete, self._buffer = buffer[:end], buffer[end:]
        self._watch(complete)
        if self.finished:  # nothing after message_stop
            complete = self._through_stop(complete)
        return [self._checked(complete) if self.error is not None or self._unframed else complete]

    @staticmethod
    def _through_stop(events: bytes) -> bytes:
        """`events` up to the end of the message_stop event (with its data) that ended the stream."""
        start = -1
        while (start := events.find(b"event: message_stop", start + 1)) >= 0:
            if start and events[start - 1 : start] != b"\n":
                continue
            lf, crlf = events.find(b"\n\n", start), events.find(b"\r\n\r\n", start)
            ends = [end + 2 for end in (lf,) if end >= 0] + [end + 4 for end in (crlf,) if end >= 0]
            end = min(ends) if ends else len(events)
            if b"\ndata:" in events[start:end]:
                return events[:end]
        return events

    @staticmethod
    def _through(events: bytes, head: bytes) -> bytes:
        """`events` up to the end of the first event that begins with `head`."""
        start = 0 if events.startswith(head) else events.find(b"\n" + head) + 1
        if start == 0 and not events.startswith(head):
            return events
        lf, crlf = events.find(b"\n\n", start), events.find(b"\r\n\r\n", start)
        ends = [end + 2 for end in (lf,) if end >= 0] + [end + 4 for end in (crlf,) if end >= 0]
        return events[: min(ends)] if ends else events

    def _checked(self, events: bytes) -> bytes:
        """Events after an error or not framed as Anthropic events: nothing after the error (an unreadable one
        is replaced by the gateway's own), no key."""
        if self.error is not None:  # the stream has ended
            start = 0 if events.startswith(b"event: error") else events.find(b"\nevent: error") + 1
            if start > 0 or events.startswith(b"event: error"):
                events = self._through(events, b"event: error")
                if self._unreadable_error:
                    events = events[:start] + encode_event(error_body(500, self.error))
        for secret in self.secrets:  # an upstream's error may quote a key
            events = events.replace(secret.encode(), b"***")
        return events

    def _fail(self, message: str) -> list[bytes]:
        self.error, self.error_type, self._buffer = message, error_type(502), b""
        return [encode_event(error_body(502, message))]

    def _watch(self, events: bytes) -> None:
        """Keep what the log and the metrics need: usage, the stop reason, an error, the end."""
        for block in events.replace(b"\r\n", b"\n").split(b"\n\n"):
            kind = block[7 : block.find(b"\n")] if block.startswith(b"event: ") else b""
            if kind not in (b"message_start", b"message_delta", b"message_stop", b"error"):
                if not kind and block.strip() and block[:1] != b":":  # a comment is framing
                    self._unframed = True
                continue
            if kind == b"message_stop":
                if b"\ndata:" not in block:  # not an event a client reads as the end
                    continue
                self.finished = True
                break  # the stream has ended: what follows is not sent
            try:
                event = loads(block.split(b"data: ", 1)[1])
            except (IndexError, ValueError):
                if kind == b"error":  # an error all the same, whatever its data
                    self.error = f"{self.upstream} upstream sent an unreadable error event"
                    self.error_type, self._unreadable_error = error_type(500), True
                continue
            if kind == b"message_start":
                self.started = True
                self.usage = dict(event.get("message", {}).get("usage") or {})
            elif kind == b"message_delta":
                self.usage.update(event.get("usage") or {})
                self.stop_reason = (event.get("delta") or {}).get("stop_reason")
            else:
                error = event.get("error") or {}
                message = mask_secrets(str(error.get("message", "stream error")), self.secrets)
                self.error, self.error_type = message, str(error.get("type", "api_error"))

    def _end(self) -> list[bytes]:
        out: list[bytes] = []
        if self._buffer.strip():
            rest = self._buffer + b"\n\n"
            self._watch(rest)
            out.append(self._checked(rest))  # the rest of a stream that did not end in an event: no key either
            self._buffer = b""
        if not self.finished and self.error is None:
            self.error = f"{self.upstream} upstream ended the stream before message_stop"
            self.error_type = error_type(500)
            out.append(encode_event(error_body(500, self.error)))
        return out
