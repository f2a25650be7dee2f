"""OpenAI Responses API stream → Anthropic stream: an incremental translator (Responses stream events in,
Anthropic SSE bytes out).

A small state machine over the shared stream writer; no I/O. The request and the non-streamed answer are in
openai_responses.py; the rules are in docs/conversion.md.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from ccany_addon.anthropic_api.sse import SSEDecoder
from ccany_addon.converters.common import ResponseContext
from ccany_addon.converters.message_stream import MessageStreamWriter, WrittenStream
from ccany_addon.converters.shared_answer import (
    json_object,
    responses_failure_status,
    responses_message_text,
    responses_reasoning_text,
    responses_stop_reason,
    responses_usage,
)
from ccany_addon.util.json_codec import loads


@dataclass(slots=True)
class _Item:
    """One upstream output item and what of it has reached the client."""

    kind: str
    sent: list[str] = field(default_factory=list)  # text, thinking or argument fragments
    summary_index: int | None = None
    started: bool = False  # a function call's block has been opened
    done: bool = False


class ResponsesStreamTranslator(WrittenStream):
    """Responses API stream events in, Anthropic SSE bytes out (the `flow.response.stream` callable).

    Each upstream output item becomes one content block. The API streams items one after another (added,
    deltas, done); an item's `done` event (and the final response) carries the whole item, so what a server
    did not stream as deltas is sent then.
    """

    def __init__(self, ctx: ResponseContext, upstream: str = "upstream") -> None:
        self.ctx = ctx
        self.upstream = upstream
        self.writer = MessageStreamWriter(ctx)
        self._decoder = SSEDecoder()
        self._items: dict[int, _Item] = {}
        self._by_id: dict[str, int] = {}
        self._last: int | None = None
        self._writing: _Item | None = None  # the item whose block is open
        self._refused = False

    def translate(self, data: bytes) -> list[bytes]:
        out: list[bytes] = []
        if self.writer.finished:
            return out
        self.writer.start(out)
        events = self._decoder.feed(data) if data else self._decoder.close()
        for event in events:
            try:
                self._event(event.event, event.data, out)
            except (AttributeError, TypeError):  # a field of the wrong type: reported, never a crash mid-stream
                self.writer.fail(500, f"{self.upstream} upstream sent a malformed event: {event.data[:200]!r}", out)
            if self.writer.finished:
                break
        if not data and not self.writer.finished:
            self.writer.fail(500, f"{self.upstream} upstream ended the stream before the answer was complete", out)
        return [b"".join(out)] if out else []

    def _event(self, name: str | None, data: str, out: list[bytes]) -> None:
        if not data or data == "[DONE]":  # `[DONE]` is not OpenAI's, but some compatible servers end with it
            return
        try:
            payload = loads(data)
        except ValueError:
            self.writer.fail(500, f"{self.upstream} upstream sent malformed stream data: {data[:200]!r}", out)
            return
        if not isinstance(payload, dict):
            return
        kind = payload.get("type") or name
        delta = payload.get("delta")
        delta = delta if isinstance(delta, str) else ""
        match kind:
            case "response.output_item.added":
                added = json_object(payload.get("item"))
                if added.get("type") == "function_call":  # text and thinking open on their first content
                    call = self._item(payload, "function_call")
                    self._start_tool(call, added, out)
                    self._arguments(call, added.get("arguments") or "", out)
            case "response.output_text.delta" | "response.refusal.delta":
                self._refused = self._refused or kind == "response.refusal.delta"
                self._content(self._item(payload, "message"), delta, self.writer.text, out)
            case "response.reasoning_summary_text.delta":
                item = self._item(payload, "reasoning")
                part = payload.get("summary_index")
                if delta and item.sent and part != item.summary_index:
                    delta = "\n\n" + delta  # a new summary part: joined as in the non-streamed answer
                item.summary_index = part if delta else item.summary_index
                self._content(item, delta, self.writer.thinking, out)
            case "response.reasoning_text.delta":
                self._content(self._item(payload, "reasoning"), delta, self.writer.thinking, out)
            case "response.function_call_arguments.delta":
                self._arguments(self._item(payload, "function_call"), delta, out)
            case "response.output_item.done":
                if isinstance(item := payload.get("item"), dict):
                    self._done(self._item(payload, item.get("type") or ""), item, out)
            case "response.completed" | "response.incomplete":
                self._complete(json_object(payload.get("response")), out)
            case "response.failed":
                self._fail(json_object(json_object(payload.get("response")).get("error")), out)
            case "error":
                self._fail(json_object(payload.get("error")) or payload, out)

    # -- items

    def _item(self, payload: dict, kind: str) -> _Item:
        """The item an event is about: by `output_index`, else by item id, else the latest one."""
        index = payload.get("output_index")
        item_id = payload.get("item_id") or json_object(payload.get("item")).get("id")
        if not isinstance(index, int):
            index = self._by_id.get(item_id) if item_id else self._last
            if index is None or (not item_id and self._items[index].kind != kind):
                index = -len(self._items) - 1  # a made-up index, clashing with no real one
        if index not in self._items:
            self._items[index] = _Item(kind)
            self._last = index
            if item_id:
                self._by_id[item_id] = index
        return self._items[index]

    def _switch_to(self, item: _Item | None, out: list[bytes]) -> None:
        """`item` writes next: the block of the item before ends (for good)."""
        if self._writing is not item:
            self.writer.close(out)
            self._writing = item

    def _content(self, item: _Item, text: str, write: Callable[[str, list[bytes]], None], out: list[bytes]) -> None:
        if text:
            self._switch_to(item, out)
            item.sent.append(text)
            write(text, out)

    def _start_tool(self, item: _Item, upstream_item: dict, out: list[bytes]) -> None:
        if not item.started:
            self._switch_to(item, out)
            item.started = True
            call_id = upstream_item.get("call_id") or upstream_item.get("id")
            self.writer.start_tool(call_id, upstream_item.get("name") or "unknown_tool", out)

    def _arguments(self, item: _Item, fragment: str, out: list[bytes]) -> None:
        # Fragments of a call never announced are dropped: its `done` item brings all the arguments.
        if not fragment or not item.started:
            return
        if not isinstance(fragment, str):
            raise TypeError("function call arguments are not a string")  # reported as a malformed event
        if self._writing is not item:
            self.writer.fail(500, f"{self.upstream} upstream sent arguments for a tool call that had ended", out)
            return
        item.sent.append(fragment)
        self.writer.tool_arguments(fragment, out)

    def _done(self, item: _Item, upstream_item: dict, out: list[bytes]) -> None:
        """An item is complete: whatever of it was not streamed goes out now."""
        if item.done or self.writer.finished:
            return
        item.done = True
        sent = "".join(item.sent)
        if item.kind == "function_call":
            self._start_tool(item, upstream_item, out)
            full = upstream_item.get("arguments") or ""
            if isinstance(full, str) and full.startswith(sent):
                self._arguments(item, full[len(sent):], out)
            if self._writing is item:
                self._switch_to(None, out)
        elif item.kind == "message":
            full, refused = responses_message_text(upstream_item)
            self._refused = self._refused or refused
            if full.startswith(sent):
                self._content(item, full[len(sent):], self.writer.text, out)
        elif item.kind == "reasoning":
            full = responses_reasoning_text(upstream_item)
            if full.startswith(sent):
                self._content(item, full[len(sent):], self.writer.thinking, out)

    # -- the end

    def _complete(self, response: dict, out: list[bytes]) -> None:
        for index, upstream_item in enumerate(response.get("output") or ()):
            if isinstance(upstream_item, dict):
                known = self._by_id.get(upstream_item.get("id") or "")
                payload = {"output_index": index if known is None else known, "item": upstream_item}
                self._done(self._item(payload, upstream_item.get("type") or ""), upstream_item, out)
        has_tools = any(item.kind == "function_call" for item in self._items.values())
        usage = response.get("usage")
        self.writer.finish(responses_stop_reason(response, has_tools, self._refused),
                           responses_usage(usage) if isinstance(usage, dict) else None, out)

    def _fail(self, error: dict, out: list[bytes]) -> None:
        message = str(error.get("message") or "the answer failed")
        self.writer.fail(responses_failure_status(error), f"{self.upstream} upstream: {message}", out)
