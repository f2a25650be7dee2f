"""Anthropic Messages ⇄ OpenAI Chat Completions: the request and the non-streamed response.

The stream is openai_chat_stream.py. Pure functions; no I/O. The rules are in docs/conversion.md.
"""

from __future__ import annotations

from ccany_addon.anthropic_api.errors import GatewayError
from ccany_addon.anthropic_api.schema import (
    DocumentBlock,
    ImageBlock,
    MessagesRequest,
    SearchResultBlock,
    TextBlock,
    ToolResultBlock,
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
from ccany_addon.converters.shared_answer import chat_matched_stop, chat_stop_reason, chat_text, usage_from_openai
from ccany_addon.converters.shared_request import (
    function_tools,
    system_text,
    tool_result_content,
    user_field,
    user_part,
)
from ccany_addon.converters.structured import openai_effort, openai_response_format, output_schema
from ccany_addon.converters.tool_search import conversation_tools
from ccany_addon.upstreams.models import Capabilities
from ccany_addon.util.json_codec import dumps_str

MAX_STOP_SEQUENCES = 4


# ---------------------------------------------------------------- request


def to_chat_request(request: MessagesRequest, target: UpstreamTarget) -> tuple[dict, list[str]]:
    """The Chat Completions body for `request`, and notes on what could not be carried over."""
    notes: list[str] = []
    caps = target.capabilities
    body: dict = {"model": target.model, "messages": _messages(request, target)}

    max_tokens = target.max_tokens(request.max_tokens)
    body["max_completion_tokens" if caps.uses_max_completion_tokens else "max_tokens"] = max_tokens

    if not caps.reasoning:
        if request.temperature is not None:
            body["temperature"] = request.temperature
        if request.top_p is not None:
            body["top_p"] = request.top_p
    if request.stop_sequences:
        body["stop"] = request.stop_sequences[:MAX_STOP_SEQUENCES]
        if len(request.stop_sequences) > MAX_STOP_SEQUENCES:
            notes.append(f"kept the first {MAX_STOP_SEQUENCES} of {len(request.stop_sequences)} stop sequences")
    if request.stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    if request.metadata and request.metadata.user_id:
        body["user"] = user_field(request.metadata.user_id)
    if (schema := output_schema(request, caps)) is not None:
        body["response_format"] = openai_response_format(schema)
    # OpenRouter normalises `xhigh` for every model behind it.
    if caps.reasoning and (effort := openai_effort(request, caps.xhigh_effort or target.reasoning_object)):
        if not target.reasoning_object:
            body["reasoning_effort"] = effort
        elif request.thinking is not None and request.thinking.budget_tokens:
            body["reasoning"] = {"max_tokens": request.thinking.budget_tokens}  # Claude Code's own budget
        else:
            body["reasoning"] = {"effort": effort}

    changes = conversation_tools(request)
    notes.extend(changes.notes(request.tools))
    tools = function_tools(changes.declared(request.tools) if caps.tools else None, caps.web_search,
                           frozenset(changes.loaded), target.tools)
    notes.extend(tools.notes)
    if tools.web_search:
        body["web_search_options"] = {}
    if tools.functions:
        body["tools"] = tools.functions
        choice = request.tool_choice
        if choice is not None:
            body["tool_choice"] = _tool_choice(choice.type, choice.name)
            if choice.disable_parallel_tool_use:
                body["parallel_tool_calls"] = False
    return body, notes


def _messages(request: MessagesRequest, target: UpstreamTarget) -> list[dict]:
    out: list[dict] = []
    leading_system = [system_text(request.system)]
    for message in request.messages:
        blocks = [TextBlock(type="text", text=message.content)] if isinstance(message.content, str) else message.content
        if message.role == "system":
            text = "\n\n".join(b.text for b in blocks if isinstance(b, TextBlock))
            if target.fold_system_messages:
                leading_system.append(text)
            elif text:  # a system message of tool changes only (tool_search.py) says nothing to the model
                out.append({"role": "system", "content": text})
        elif message.role == "assistant":
            out.append(_assistant_message(blocks, target.capabilities))
        else:
            converted = _user_messages(blocks)
            tools = [m for m in converted if m["role"] == "tool"]
            # Tool results go right after the calls: past any system message that came in between.
            at = len(out)
            while tools and at > 0 and out[at - 1]["role"] == "system":
                at -= 1
            if at < len(out) and at > 0 and out[at - 1].get("tool_calls"):
                out[at:at] = tools
                converted = converted[len(tools) :]
            out.extend(converted)
    system = "\n\n".join(text for text in leading_system if text)
    if system:
        out.insert(0, {"role": "system", "content": system})
    return out


def _user_messages(blocks: list) -> list[dict]:
    """Tool results first, one `tool` message each, then the user's other content in one message."""
    tool_messages: list[dict] = []
    result_parts: list[dict] = []
    parts: list[dict] = []
    for block in blocks:
        if isinstance(block, ToolResultBlock):
            text, extra = tool_result_content(block)
            tool_messages.append({"role": "tool", "tool_call_id": block.tool_use_id, "content": text})
            result_parts.extend(extra)
        elif isinstance(block, TextBlock | ImageBlock | DocumentBlock | SearchResultBlock):
            parts.extend(user_part(block))
        # thinking and server-tool blocks in a user turn carry nothing an OpenAI model can use
    parts = result_parts + parts
    if not parts:
        return tool_messages
    if len(parts) == 1 and parts[0]["type"] == "text":
        return [*tool_messages, {"role": "user", "content": parts[0]["text"]}]
    return [*tool_messages, {"role": "user", "content": parts}]


def _assistant_message(blocks: list, caps: Capabilities) -> dict:
    texts: list[str] = []
    reasoning: list[str] = []
    calls: list[dict] = []
    for block in blocks:
        match block.type:
            case "text":
                texts.append(block.text)
            case "thinking":
                reasoning.append(block.thinking)
            case "tool_use":
                calls.append(
                    {
                        "id": block.id,
                        "type": "function",
                        "function": {
                            "name": short_tool_name(block.name),
                            "arguments": dumps_str(block.input),
                        },
                    }
                )
    message: dict = {"role": "assistant", "content": "".join(texts) or (None if calls else "")}
    if calls:
        message["tool_calls"] = calls
    if reasoning and caps.echo_reasoning:
        message["reasoning_content"] = "".join(reasoning)
    return message


def _tool_choice(kind: str, name: str | None) -> str | dict:
    if kind == "tool" and name:
        return {"type": "function", "function": {"name": short_tool_name(name)}}
    return {"auto": "auto", "any": "required", "none": "none"}.get(kind, "auto")


# ---------------------------------------------------------------- response


def to_message(body: dict, ctx: ResponseContext) -> dict:
    """An Anthropic message from a Chat Completions response body."""
    choices = body.get("choices") if isinstance(body, dict) else None
    if not choices or not isinstance(choices[0], dict):
        raise GatewayError(502, "upstream answered without any choices")
    choice = choices[0]
    message = choice.get("message") or {}
    content: list[dict] = []
    reasoning = message.get("reasoning_content") or message.get("reasoning")
    if isinstance(reasoning, str) and reasoning:
        content.append({"type": "thinking", "thinking": reasoning, "signature": thinking_signature(reasoning)})
    if text := chat_text(message.get("content")):
        content.append({"type": "text", "text": text})
    calls = list(message.get("tool_calls") or ())
    if message.get("function_call"):
        calls.append({"function": message["function_call"]})
    for call in calls:
        function = call.get("function") or {}
        name = ctx.client_tool_name(function.get("name") or "")
        arguments = function.get("arguments") or ""
        if not isinstance(arguments, str):  # some OpenAI-compatible servers send an object
            arguments = dumps_str(arguments)
        try:
            tool_input, _ = parse_tool_arguments(arguments)
        except ValueError as error:
            raise GatewayError(502, f"upstream returned unusable arguments for tool {name!r}: {error}") from None
        content.append({"type": "tool_use", "id": tool_use_id(call.get("id")), "name": name, "input": tool_input})
    stop_reason, stop_sequence = chat_stop_reason(choice.get("finish_reason"), chat_matched_stop(choice), ctx,
                                                  bool(calls))
    return {
        "id": message_id(),
        "type": "message",
        "role": "assistant",
        "model": ctx.client_model,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": stop_sequence,
        "usage": usage_from_openai(body.get("usage")),
    }
