"""The Anthropic side of every stream translator: one writer of the event grammar (docs/conversion.md).

A dialect's translator decodes its upstream's events and calls this writer (text, thinking, tool calls,
finish, fail); the writer opens and closes content blocks, numbers them, signs thinking, repairs a truncated
tool-argument tail and keeps what the flow log needs (stop reason, usage, error, the message sent). Pure:
bytes out, no I/O.
"""

from __future__ import annotations

from ccany_addon.anthropic_api.accumulate import tool_input
from ccany_addon.anthropic_api.errors import error_body, error_type, mask_secrets
from ccany_addon.anthropic_api.sse import encode_delta, encode_event, encode_json_delta
from ccany_addon.converters.common import (
    ResponseContext,
    anthropic_usage,
    estimate_output_tokens,
    message_id,
    parse_tool_arguments,
    thinking_signature,
    tool_use_id,
)

PING = {"type": "ping"}


class MessageStreamWriter:
    """Appends encoded Anthropic SSE events to `out` lists; one per client stream."""

    def __init__(self, ctx: ResponseContext) -> None:
        self.ctx = ctx
        self.message_id = message_id()
        self.started = False
        self.finished = False
        self.error: str | None = None
        self.error_type: str | None = None
        self.stop_reason: str | None = None
        self.stop_sequence: str | None = None
        self.usage: dict = {}
        self.output_chars = 0
        self._next_index = 0
        self._open_kind: str | None = None  # "text" | "thinking" | "tool"
        self._thinking: list[str] = []
        self._signature: str | None = None  # an upstream's own signature for the open thinking block
        self._arguments: list[str] = []
        # The message as the client adds it up: message_start's message, each block as started, and the
        # open block's pieces (text, thinking and arguments have lists of their own).
        self._message: dict = {}
        self._blocks: list[dict] = []
        self._text: list[str] = []

    @property
    def open_kind(self) -> str | None:
        return self._open_kind

    @staticmethod
    def emit(event: dict, out: list[bytes]) -> None:
        out.append(encode_event(event))

    def start(self, out: list[bytes]) -> None:
        if self.started:
            return
        self.started = True
        message = {
            "id": self.message_id,
            "type": "message",
            "role": "assistant",
            "model": self.ctx.client_model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": anthropic_usage(self.ctx.estimated_input_tokens, 0),
        }
        self._message = message
        self.emit({"type": "message_start", "message": message}, out)
        self.emit(PING, out)

    # -- content

    def text(self, text: str, out: list[bytes]) -> None:
        if not text:
            return
        if self._open_kind != "text":
            self._open("text", {"type": "text", "text": ""}, out)
        self.output_chars += len(text)  # first: a translator's TypeError for a non-string leaves no trace
        self._text.append(text)
        self._delta(b"text_delta", b"text", text, out)

    def more_text(self, text: str, text_json: bytes) -> bytes:
        """The next delta of the open text block, for a non-empty `text` whose JSON the caller already has."""
        self.output_chars += len(text)
        self._text.append(text)
        return encode_json_delta(self._next_index - 1, b"text_delta", b"text", text_json)

    def thinking(self, text: str, out: list[bytes]) -> None:
        if self._open_kind != "thinking":
            self._open("thinking", {"type": "thinking", "thinking": "", "signature": ""}, out)
        if text:
            self.output_chars += len(text)
            self._thinking.append(text)
            self._delta(b"thinking_delta", b"thinking", text, out)

    def sign_thinking(self, signature: str) -> None:
        """The upstream's own signature for the open thinking block (sent when the block closes)."""
        self._signature = signature

    def start_tool(self, upstream_id: str | None, upstream_name: str, out: list[bytes]) -> int:
        block = {
            "type": "tool_use",
            "id": tool_use_id(upstream_id),
            "name": self.ctx.client_tool_name(upstream_name),
            "input": {},
        }
        return self._open("tool", block, out)

    def tool_arguments(self, fragment: str, out: list[bytes]) -> None:
        """Streams a fragment of the open tool call's JSON arguments (as `input_json_delta`)."""
        if not fragment or self._open_kind != "tool":
            return
        self.output_chars += len(fragment)
        self._arguments.append(fragment)
        self._delta(b"input_json_delta", b"partial_json", fragment, out)

    def close(self, out: list[bytes]) -> None:
        """Closes the open block, if any: thinking gets its signature, tool arguments a repaired tail."""
        if self._open_kind is None:
            return
        if self._open_kind == "thinking":
            signature = self._signature or thinking_signature("".join(self._thinking))
            self._blocks[-1]["signature"] = signature
            self._delta(b"signature_delta", b"signature", signature, out)
        elif self._open_kind == "tool":
            self._repair_arguments(out)
        self._fill(self._blocks[-1])
        self._thinking, self._signature = [], None
        self.emit({"type": "content_block_stop", "index": self._next_index - 1}, out)
        self._open_kind = None

    # -- the end

    def finish(self, stop_reason: str, usage: dict | None, out: list[bytes], stop_sequence: str | None = None) -> None:
        """A clean end: `message_delta` with the stop reason and usage, then `message_stop`.

        Without upstream usage the counts are estimates (the request's size, the characters streamed).
        """
        if self.finished:
            return
        self.start(out)
        self.close(out)
        if usage is None:
            usage = anthropic_usage(self.ctx.estimated_input_tokens, estimate_output_tokens(self.output_chars))
        self.stop_reason, self.stop_sequence, self.usage = stop_reason, stop_sequence, usage
        self.emit({"type": "message_delta", "delta": {"stop_reason": stop_reason, "stop_sequence": stop_sequence},
                   "usage": usage}, out)
        self.emit({"type": "message_stop"}, out)
        self.finished = True

    def fail(self, status: int, message: str, out: list[bytes]) -> None:
        """Never a clean end: the client gets `event: error` and no `message_stop`."""
        if self.finished:
            return
        message = mask_secrets(message, self.ctx.secrets)
        self.error, self.error_type = message, error_type(status)
        self.emit(error_body(status, message), out)
        self.finished = True

    def message(self) -> dict:
        """The message the client has been sent so far, as an SDK adds up the events: what
        `accumulate.accumulate_message` makes of the bytes, without parsing them again."""
        message: dict = {}
        if self.started:
            message = {**self._message, "content": [dict(block) for block in self._blocks],
                       "usage": dict(self._message["usage"])}
            if self._open_kind is not None:
                self._fill(message["content"][-1])
            if self.finished and self.error is None:
                message["stop_reason"], message["stop_sequence"] = self.stop_reason, self.stop_sequence
                message["usage"].update(self.usage)
        if self.error is not None:
            message["error"] = {"type": self.error_type, "message": self.error}
        return message

    # -- blocks

    def _fill(self, block: dict) -> None:
        """The open block's text, thinking or input so far."""
        if self._open_kind == "text":
            block["text"] = "".join(self._text)
        elif self._open_kind == "thinking":
            block["thinking"] = "".join(self._thinking)
        elif self._open_kind == "tool" and self._arguments:
            block["input"] = tool_input("".join(self._arguments))

    def _open(self, kind: str, block: dict, out: list[bytes]) -> int:
        self.start(out)
        self.close(out)
        index = self._next_index
        self._next_index += 1
        self._open_kind = kind
        self._arguments, self._text = [], []
        self._blocks.append(block)
        self.emit({"type": "content_block_start", "index": index, "content_block": block}, out)
        return index

    def _delta(self, delta_type: bytes, field: bytes, value: str, out: list[bytes]) -> None:
        """A delta of the open block (the last one opened)."""
        out.append(encode_delta(self._next_index - 1, delta_type, field, value))

    def _repair_arguments(self, out: list[bytes]) -> None:
        try:
            _, closer = parse_tool_arguments("".join(self._arguments))
        except ValueError:
            return  # the client reports unusable arguments to the model; the gateway invents nothing
        if closer:
            self._arguments.append(closer)
            self._delta(b"input_json_delta", b"partial_json", closer, out)


class WrittenStream:
    """Base of the dialect translators: what the flow log reads of a stream is kept by its writer."""

    writer: MessageStreamWriter
    upstream: str
    sends = 0  # reads that sent the client something: the keep-alive watches it move

    def translate(self, data: bytes) -> list[bytes]:
        raise NotImplementedError

    def __call__(self, data: bytes) -> list[bytes]:
        """The `flow.response.stream` callable. An upstream's stream is untrusted input: whatever a translator
        cannot read ends the client's stream with an error event (mitmproxy would leave it hanging)."""
        try:
            out = self.translate(data)
        except Exception as error:
            out = []
            self.writer.fail(502, f"{self.upstream} upstream sent stream data of an unexpected shape "
                                  f"({type(error).__name__})", out)
        if out:
            self.sends += 1
        return out

    @property
    def ended(self) -> bool:
        return self.writer.finished

    def idle(self) -> list[bytes]:
        """What keeps a silent stream alive: a `ping`, after the `message_start` the upstream has not yet
        given cause for (a converting stream's message_start needs nothing from the upstream)."""
        out: list[bytes] = []
        if not self.writer.finished:
            if self.writer.started:
                self.writer.emit(PING, out)
            else:
                self.writer.start(out)  # message_start, then its ping
        return out

    # What the flow log reads once the stream has ended.
    @property
    def finished(self) -> bool:
        return self.writer.finished

    @property
    def stop_reason(self) -> str | None:
        return self.writer.stop_reason

    @property
    def usage(self) -> dict:
        return self.writer.usage

    @property
    def error(self) -> str | None:
        return self.writer.error

    @property
    def error_type(self) -> str | None:
        return self.writer.error_type

    def message(self) -> dict:
        return self.writer.message()
