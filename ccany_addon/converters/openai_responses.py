"""Anthropic Messages ⇄ the OpenAI Responses API (as Codex uses it): request, response, stream translator.

Pure functions and a small state machine; no I/O. Content conversion reuses the Chat Completions converter's
helpers (system text, user parts, tool results, tool schemas, reasoning effort, user field) and reshapes their
output into Responses items, so both dialects carry the same things over.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from ccany_addon.anthropic_api.errors import GatewayError, mask_secrets
from ccany_addon.anthropic_api.schema import (
    DocumentBlock,
    ImageBlock,
    MessagesRequest,
    SearchResultBlock,
    TextBlock,
    ToolResultBlock,
    ToolUseBlock,
)
from ccany_addon.anthropic_api.sse import SSEDecoder
from ccany_addon.converters.common import (
    ResponseContext,
    UpstreamTarget,
    dict_field,
    message_id,
    parse_tool_arguments,
    short_tool_name,
    thinking_signature,
    token_count,
    tool_use_id,
)
from ccany_addon.converters.message_stream import MessageStreamWriter, WrittenStream
from ccany_addon.converters.shared_answer import stream_error_status
from ccany_addon.converters.shared_request import (
    function_tools,
    system_text,
    tool_result_content,
    user_field,
    user_part,
)
from ccany_addon.converters.structured import openai_effort, output_schema, responses_text_format
from ccany_addon.converters.tool_search import conversation_tools
from ccany_addon.util.json_codec import dumps_str, loads

# OpenAI answers 400 below this; Claude Code's quota probe asks for max_tokens 1.
_MIN_OUTPUT_TOKENS = 16


# ---------------------------------------------------------------- request


def to_responses_request(request: MessagesRequest, target: UpstreamTarget) -> tuple[dict, list[str]]:
    """The Responses API body for `request`, and notes on what could not be carried over."""
    notes: list[str] = []
    caps = target.capabilities
    instructions, items = _input(request, target)
    body: dict = {"model": target.model}
    if instructions:
        body["instructions"] = instructions
    body["input"] = items

    max_tokens = target.max_tokens(request.max_tokens)
    if max_tokens < _MIN_OUTPUT_TOKENS:
        notes.append(f"raised max_tokens {max_tokens} to the Responses API's minimum of {_MIN_OUTPUT_TOKENS}")
        max_tokens = _MIN_OUTPUT_TOKENS
    body["max_output_tokens"] = max_tokens

    if not caps.reasoning:
        if request.temperature is not None:
            body["temperature"] = request.temperature
        if request.top_p is not None:
            body["top_p"] = request.top_p
    if request.stop_sequences:
        notes.append(f"left out {len(request.stop_sequences)} stop sequences: the Responses API has none")
    if request.stream:
        body["stream"] = True
    # Nothing is kept upstream: every turn carries the whole conversation, as it does for Chat Completions.
    body["store"] = False
    if request.metadata and request.metadata.user_id:
        body["user"] = user_field(request.metadata.user_id)
    if caps.reasoning and (effort := openai_effort(request, caps.xhigh_effort)):
        body["reasoning"] = {"effort": effort, "summary": "auto"}
    if (schema := output_schema(request, caps)) is not None:
        body["text"] = {"format": responses_text_format(schema)}

    # Responses models have no `web_search_options`: server tools are left out with a note.
    changes = conversation_tools(request)
    notes.extend(changes.notes(request.tools))
    chat_tools = function_tools(changes.declared(request.tools) if caps.tools else None, web_search=False,
                                loaded=frozenset(changes.loaded), cache=target.tools)
    notes.extend(chat_tools.notes)
    if chat_tools.functions:
        body["tools"] = [{"type": "function", **tool["function"], "strict": False} for tool in chat_tools.functions]
        choice = request.tool_choice
        if choice is not None:
            if choice.type == "tool" and choice.name:
                body["tool_choice"] = {"type": "function", "name": short_tool_name(choice.name)}
            else:
                body["tool_choice"] = {"any": "required", "none": "none"}.get(choice.type, "auto")
            if choice.disable_parallel_tool_use:
                body["parallel_tool_calls"] = False
    return body, notes


def _input(request: MessagesRequest, target: UpstreamTarget) -> tuple[str, list[dict]]:
    """(instructions, input items)."""
    instructions = [system_text(request.system)]
    items: list[dict] = []
    for message in request.messages:
        blocks = [TextBlock(type="text", text=message.content)] if isinstance(message.content, str) else message.content
        if message.role == "system":
            text = "\n\n".join(b.text for b in blocks if isinstance(b, TextBlock))
            if target.fold_system_messages:
                instructions.append(text)
            elif text:
                items.append(_message("system", [{"type": "input_text", "text": text}]))
        elif message.role == "assistant":
            items.extend(_assistant_items(blocks))
        else:
            items.extend(_user_items(blocks))
    return "\n\n".join(text for text in instructions if text), items


def _message(role: str, content: list[dict]) -> dict:
    return {"type": "message", "role": role, "content": content}


def _input_part(part: dict) -> dict:
    """A Chat Completions content part (from the shared helpers) as a Responses input part."""
    match part["type"]:
        case "text":
            return {"type": "input_text", "text": part["text"]}
        case "image_url":
            return {"type": "input_image", "image_url": part["image_url"]["url"], "detail": "auto"}
        case _:
            return {"type": "input_file", **part["file"]}


def _user_items(blocks: list) -> list[dict]:
    """Tool outputs first (they answer the calls just before), then the user's other content in one message."""
    outputs: list[dict] = []
    parts: list[dict] = []
    result_parts: list[dict] = []
    for block in blocks:
        if isinstance(block, ToolResultBlock):
            text, extra = tool_result_content(block)
            outputs.append({"type": "function_call_output", "call_id": block.tool_use_id, "output": text})
            result_parts.extend(extra)
        elif isinstance(block, TextBlock | ImageBlock | DocumentBlock | SearchResultBlock):
            parts.extend(user_part(block))
    parts = result_parts + parts
    if not parts:
        return outputs
    return [*outputs, _message("user", [_input_part(part) for part in parts])]


def _assistant_items(blocks: list) -> list[dict]:
    """Text as `output_text` messages and tool calls as `function_call` items, in the order they came.

    Thinking is dropped: without stored responses the upstream's encrypted reasoning cannot be sent back.
    """
    items: list[dict] = []
    texts: list[str] = []

    def flush() -> None:
        if text := "".join(texts):
            items.append(_message("assistant", [{"type": "output_text", "text": text}]))
        texts.clear()

    for block in blocks:
        if isinstance(block, TextBlock):
            texts.append(block.text)
        elif isinstance(block, ToolUseBlock):
            flush()
            items.append({"type": "function_call", "call_id": block.id, "name": short_tool_name(block.name),
                          "arguments": dumps_str(block.input)})
    flush()
    return items


# ---------------------------------------------------------------- response


def _usage(usage: dict | None) -> dict:
    usage = usage if isinstance(usage, dict) else {}
    cached = token_count(dict_field(usage.get("input_tokens_details"), "cached_tokens"))
    # Anthropic counts cached input apart: Claude Code adds the figures up for its context meter.
    return {"input_tokens": max(token_count(usage.get("input_tokens")) - cached, 0),
            "output_tokens": token_count(usage.get("output_tokens")),
            "cache_creation_input_tokens": 0, "cache_read_input_tokens": cached}


def _stop_reason(response: dict, has_tools: bool, refused: bool) -> str:
    if response.get("status") == "incomplete":
        reason = (response.get("incomplete_details") or {}).get("reason")
        return "refusal" if reason == "content_filter" else "max_tokens"
    if refused:
        return "refusal"
    return "tool_use" if has_tools else "end_turn"


def _reasoning_text(item: dict) -> str:
    """The summary (what OpenAI models show), else the raw reasoning text (open models such as gpt-oss)."""
    summary = [part.get("text") or "" for part in item.get("summary") or () if isinstance(part, dict)]
    if any(summary):
        return "\n\n".join(text for text in summary if text)
    return "".join(part.get("text") or "" for part in item.get("content") or () if isinstance(part, dict))


def _message_text(item: dict) -> tuple[str, bool]:
    """(text, whether any of it is a refusal): a refusal is shown to the user as text."""
    parts = [part for part in item.get("content") or () if isinstance(part, dict)]
    refused = any(part.get("type") == "refusal" for part in parts)
    return "".join(part.get("refusal") or part.get("text") or "" for part in parts), refused


def _dict(value: object) -> dict:
    """`value` if it is a JSON object, else an empty one: a missing or malformed field is tolerated."""
    return value if isinstance(value, dict) else {}


def _failure_status(error: dict) -> int:
    """The status for an error a Responses stream or failed response reports."""
    code = str(error.get("code") or "")
    if code.startswith("invalid_") or "image" in code:  # the request's own content was refused
        return 400
    return stream_error_status(error)


def to_message(body: dict, ctx: ResponseContext) -> dict:
    """An Anthropic message from a Responses API `response` object."""
    output = body.get("output") if isinstance(body, dict) else None
    if not isinstance(output, list):
        raise GatewayError(502, "upstream answered with something that is not a Responses API response")
    if body.get("status") == "failed":
        error = _dict(body.get("error"))
        message = error.get("message") or "the response failed"
        raise GatewayError(_failure_status(error), mask_secrets(f"upstream: {message}"))
    try:
        content, has_tools, refused = _blocks(output, ctx)
        stop_reason, usage = _stop_reason(body, has_tools, refused), _usage(body.get("usage"))
    except (AttributeError, TypeError):  # a field of the wrong type
        raise GatewayError(502, "upstream answered with a malformed Responses API response") from None
    return {"id": message_id(), "type": "message", "role": "assistant", "model": ctx.client_model,
            "content": content, "stop_reason": stop_reason, "stop_sequence": None, "usage": usage}


def _blocks(output: list, ctx: ResponseContext) -> tuple[list[dict], bool, bool]:
    """(content blocks, whether there are tool calls, whether there is a refusal)."""
    content: list[dict] = []
    has_tools = refused = False
    for item in output:
        kind = item.get("type") if isinstance(item, dict) else None
        if kind == "reasoning" and (thinking := _reasoning_text(item)):
            content.append({"type": "thinking", "thinking": thinking, "signature": thinking_signature(thinking)})
        elif kind == "message":
            text, refusal = _message_text(item)
            refused = refused or refusal
            if text:
                content.append({"type": "text", "text": text})
        elif kind == "function_call":
            has_tools = True
            name = ctx.client_tool_name(item.get("name") or "")
            try:
                tool_input, _ = parse_tool_arguments(item.get("arguments") or "")
            except ValueError as error:
                raise GatewayError(502, f"upstream returned unusable arguments for tool {name!r}: {error}") from None
            call_id = item.get("call_id") or item.get("id")
            content.append({"type": "tool_use", "id": tool_use_id(call_id), "name": name, "input": tool_input})
    return content, has_tools, refused


# ---------------------------------------------------------------- stream


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
                added = _dict(payload.get("item"))
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
                self._complete(_dict(payload.get("response")), out)
            case "response.failed":
                self._fail(_dict(_dict(payload.get("response")).get("error")), out)
            case "error":
                self._fail(_dict(payload.get("error")) or payload, out)

    # -- items

    def _item(self, payload: dict, kind: str) -> _Item:
        """The item an event is about: by `output_index`, else by item id, else the latest one."""
        index = payload.get("output_index")
        item_id = payload.get("item_id") or _dict(payload.get("item")).get("id")
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
            full, refused = _message_text(upstream_item)
            self._refused = self._refused or refused
            if full.startswith(sent):
                self._content(item, full[len(sent):], self.writer.text, out)
        elif item.kind == "reasoning":
            full = _reasoning_text(upstream_item)
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
        self.writer.finish(_stop_reason(response, has_tools, self._refused),
                           _usage(usage) if isinstance(usage, dict) else None, out)

    def _fail(self, error: dict, out: list[bytes]) -> None:
        message = str(error.get("message") or "the answer failed")
        self.writer.fail(_failure_status(error), f"{self.upstream} upstream: {message}", out)
