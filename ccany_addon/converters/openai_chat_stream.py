"""OpenAI Chat Completions stream → Anthropic stream: an incremental translator (chat.completion.chunk bytes in,
Anthropic SSE bytes out).

A small state machine over the shared stream writer; no I/O. The rules are in docs/conversion.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ccany_addon.anthropic_api.sse import SSEDecoder
from ccany_addon.converters.common import ResponseContext
from ccany_addon.converters.message_stream import MessageStreamWriter, WrittenStream
from ccany_addon.converters.shared_answer import (
    chat_matched_stop,
    chat_stop_reason,
    chat_text,
    stream_error_status,
    usage_from_openai,
)
from ccany_addon.converters.text_template import TextChunkTemplate
from ccany_addon.util.json_codec import dumps_str, loads


@dataclass(slots=True)
class _ToolCall:
    id: str | None = None
    name: str = ""
    arguments: list[str] = field(default_factory=list)
    started: bool = False
    closed: bool = False


# What else a delta may carry that the general path acts on (reasoning, tool calls).
_NOT_TEXT = ("reasoning_content", "reasoning", "tool_calls", "function_call")
# How many times a stream makes a TextChunkTemplate from its text chunks.
_TEMPLATE_LEARNS = 3


class ChatStreamTranslator(WrittenStream):
    """OpenAI chat.completion.chunk bytes in, Anthropic SSE bytes out (the `flow.response.stream` callable).

    The first tool call streams live; later calls are held until the live one is closed, so calls that
    an upstream interleaves by `index` still each get one contiguous block.
    """

    def __init__(self, ctx: ResponseContext, upstream: str = "upstream") -> None:
        self.ctx = ctx
        self.upstream = upstream
        self.writer = MessageStreamWriter(ctx)
        self._decoder = SSEDecoder()
        self._open_tool: _ToolCall | None = None
        self._tools: dict[int, _ToolCall] = {}
        self._finish_reason: str | None = None
        self._matched_stop: object = None
        self._usage: dict | None = None
        self._template: TextChunkTemplate | None = None
        self._template_learns = _TEMPLATE_LEARNS

    def translate(self, data: bytes) -> list[bytes]:
        out: list[bytes] = []
        writer = self.writer
        if writer.finished:
            return out
        if writer.open_kind == "text" and not self._decoder.pending:
            if self._template is not None and (known := self._template.text(data)) is not None:
                return [writer.more_text(known[0], known[1])]  # not *known: 150 ns more
            if (text := self._lone_text(data)) is not None:
                self._learn_template(data, text)
                writer.text(text, out)
                return out
        writer.start(out)
        events = self._decoder.feed(data) if data else self._decoder.close()
        for event in events:
            self._event(event.data, out)
            if writer.finished:
                break
        if not data and not writer.finished:
            self._end_of_input(out)
        # One chunk per upstream read: mitmproxy writes each list item to the socket on its own.
        return out if len(out) < 2 else [b"".join(out)]

    def _lone_text(self, data: bytes) -> str | None:
        """The text of a read that is exactly one chunk carrying nothing but more text for the open text
        block, or None (the decoder holding nothing back). Most reads of a stream are that; answering them
        without the decoder and the general walk below costs 2.9 instead of 4.0 µs a read. Anything else
        (None) takes the general path, which gives the same result for these reads."""
        # One event of one line: the only line feeds end it (a CR before them is whitespace to JSON, as it is
        # after the decoder's CRLF folding).
        if data[-2:] != b"\n\n" or data.find(b"\n") != len(data) - 2 or not data.startswith(b"data: {"):
            return None
        try:
            chunk = loads(data[6:-2])
        except ValueError:
            return None
        if type(chunk) is not dict or chunk.get("error") is not None or chunk.get("usage") is not None:
            return None
        choices = chunk.get("choices")
        if type(choices) is not list or len(choices) != 1:
            return None
        choice = choices[0]
        if type(choice) is not dict or choice.get("index") or choice.get("finish_reason"):
            return None
        delta = choice.get("delta")
        if type(delta) is not dict or type(text := delta.get("content")) is not str or not text:
            return None
        if len(delta) > 1 and any(delta.get(key) for key in _NOT_TEXT):
            return None
        return text

    def _learn_template(self, data: bytes, text: str) -> None:
        """After a miss (or at the start), this lone-text read becomes the template for the next reads. A
        stream whose chunks differ in more than their text (a per-chunk nonce) soon stops trying."""
        if self._template_learns:
            self._template_learns -= 1
            self._template = TextChunkTemplate.learn(data, text, self._lone_text)

    def _event(self, data: str, out: list[bytes]) -> None:
        if data == "[DONE]":
            self._complete(out)
            return
        try:
            chunk = loads(data)
        except ValueError:
            self.writer.fail(500, f"{self.upstream} upstream sent malformed stream data: {data[:200]!r}", out)
            return
        if not isinstance(chunk, dict):
            return
        if isinstance(error := chunk.get("error"), (dict, str)):
            error = error if isinstance(error, dict) else {"message": error}
            message = str(error.get("message") or "stream error")
            self.writer.fail(stream_error_status(error), f"{self.upstream} upstream: {message}", out)
            return
        # Usage first: a chunk may carry both the finish reason and the final (or cumulative) usage.
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            self._usage = usage
        for choice in chunk.get("choices") or ():
            if isinstance(choice, dict) and not choice.get("index"):
                self._choice(choice, out)
        if isinstance(usage, dict) and self._finish_reason is not None:
            self._complete(out)

    def _choice(self, choice: dict, out: list[bytes]) -> None:
        delta = choice.get("delta") or {}
        text_only = len(delta) == 1 and "content" in delta  # most chunks: skip the other lookups
        if not text_only:
            reasoning = delta.get("reasoning_content") or delta.get("reasoning")
            if isinstance(reasoning, str) and reasoning:
                self._leave_tool(out)
                self.writer.thinking(reasoning, out)
        text = chat_text(delta.get("content"))
        if text:
            self._leave_tool(out)
            self.writer.text(text, out)
        if not text_only:
            for call in delta.get("tool_calls") or ():
                if isinstance(call, dict):
                    self._tool_fragment(call.get("index") or 0, call.get("id"), call.get("function") or {}, out)
            if isinstance(delta.get("function_call"), dict):
                self._tool_fragment(0, None, delta["function_call"], out)
        if choice.get("finish_reason"):
            self._finish_reason = choice["finish_reason"]
            self._matched_stop = chat_matched_stop(choice)
            if self._usage is not None:
                self._complete(out)

    # -- tool calls

    def _leave_tool(self, out: list[bytes]) -> None:
        """Another block is starting: the live tool call, if any, has ended."""
        if self._open_tool is not None:
            self._open_tool.closed = True
            self._open_tool = None
            self.writer.close(out)

    def _tool_fragment(self, position: int, call_id: str | None, function: dict, out: list[bytes]) -> None:
        call = self._tools.setdefault(position, _ToolCall())
        if call_id and not call.id:
            call.id = call_id
        if function.get("name") and not call.name:
            call.name = function["name"]
        fragment = function.get("arguments") or ""
        if not isinstance(fragment, str):
            fragment = dumps_str(fragment)
        if call.closed:
            self.writer.fail(500, f"{self.upstream} upstream sent arguments for a tool call that had ended", out)
            return
        call.arguments.append(fragment)
        if call is self._open_tool:
            self.writer.tool_arguments(fragment, out)
        elif self._open_tool is None and call.name and self._all_earlier_started(position):
            self._start_tool(call, out)

    def _all_earlier_started(self, position: int) -> bool:
        return all(c.started for p, c in self._tools.items() if p < position)

    def _start_tool(self, call: _ToolCall, out: list[bytes]) -> None:
        self.writer.start_tool(call.id, call.name, out)
        call.started = True
        self._open_tool = call
        self.writer.tool_arguments("".join(call.arguments), out)

    # -- the end

    def _complete(self, out: list[bytes]) -> None:
        if self.writer.finished:
            return
        self._leave_tool(out)
        for position in sorted(self._tools):
            call = self._tools[position]
            if not call.started:
                call.name = call.name or "unknown_tool"
                self._start_tool(call, out)
                self._leave_tool(out)
        stop_reason, stop_sequence = chat_stop_reason(
            self._finish_reason, self._matched_stop, self.ctx, bool(self._tools)
        )
        usage = usage_from_openai(self._usage) if self._usage is not None else None
        self.writer.finish(stop_reason, usage, out, stop_sequence)

    def _end_of_input(self, out: list[bytes]) -> None:
        if self._finish_reason is not None:
            self._complete(out)
        else:
            message = f"{self.upstream} upstream ended the stream before the answer was complete"
            self.writer.fail(500, message, out)
