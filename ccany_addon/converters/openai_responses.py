"""Anthropic Messages ⇄ the OpenAI Responses API (as Codex uses it): the request and the non-streamed response.

The stream is openai_responses_stream.py; what both read of an answer (usage, stop reason, reasoning and
message text, failures) is in shared_answer.py. Pure functions; no I/O. Content conversion reuses the helpers
the Chat Completions converter uses (shared_request.py: system text, user parts, tool results, tool schemas,
user field; structured.py: reasoning effort) and reshapes their output into Responses items, so both dialects
carry the same things over.
"""

from __future__ import annotations

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
from ccany_addon.converters.common import (
    ResponseContext,
    UpstreamTarget,
    message_id,
    parse_tool_arguments,
    short_tool_name,
    thinking_signature,
    tool_use_id,
)
from ccany_addon.converters.shared_answer import (
    json_object,
    responses_failure_status,
    responses_message_text,
    responses_reasoning_text,
    responses_stop_reason,
    responses_usage,
)
from ccany_addon.converters.shared_request import (
    function_tools,
    system_text,
    tool_result_content,
    user_field,
    user_part,
)
from ccany_addon.converters.structured import openai_effort, output_schema, responses_text_format
from ccany_addon.converters.tool_search import conversation_tools
from ccany_addon.util.json_codec import dumps_str

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


def to_message(body: dict, ctx: ResponseContext) -> dict:
    """An Anthropic message from a Responses API `response` object."""
    output = body.get("output") if isinstance(body, dict) else None
    if not isinstance(output, list):
        raise GatewayError(502, "upstream answered with something that is not a Responses API response")
    if body.get("status") == "failed":
        error = json_object(body.get("error"))
        message = error.get("message") or "the response failed"
        raise GatewayError(responses_failure_status(error), mask_secrets(f"upstream: {message}"))
    try:
        content, has_tools, refused = _blocks(output, ctx)
        stop_reason, usage = responses_stop_reason(body, has_tools, refused), responses_usage(body.get("usage"))
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
        if kind == "reasoning" and (thinking := responses_reasoning_text(item)):
            content.append({"type": "thinking", "thinking": thinking, "signature": thinking_signature(thinking)})
        elif kind == "message":
            text, refusal = responses_message_text(item)
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
