"""Anthropic Messages ⇄ Google Gemini (`generateContent`): the request and the non-streamed response.

The stream (`streamGenerateContent?alt=sse`) is gemini_stream.py; what both read of an answer (finish reasons,
usage, errors, parts, the signature prefix) is in shared_answer.py. Pure functions; no I/O. The general rules
are in docs/conversion.md.

Thought signatures: Gemini 2.5/3 attach an opaque `thoughtSignature` to the functionCall parts they emit, and
Gemini 3 answers 400 when the next request's history lacks it. The one place in Anthropic history where an
upstream's opaque state survives the client's round trip is a thinking block's `signature`; so a signed
functionCall becomes a thinking block signed `gemini.<signature>` right before its tool_use, and on the way
back that signature goes onto the next functionCall of the same model turn. Thought text is shown to the
client but never sent back (Gemini does not take it).
"""

from __future__ import annotations

import mimetypes
import re

from ccany_addon.anthropic_api.errors import GatewayError, mask_secrets
from ccany_addon.anthropic_api.schema import (
    DocumentBlock,
    ImageBlock,
    MessagesRequest,
    SearchResultBlock,
    TextBlock,
    Tool,
    ToolReferenceBlock,
    ToolResultBlock,
)
from ccany_addon.converters.common import (
    ResponseContext,
    UpstreamTarget,
    message_id,
    short_tool_name,
    thinking_signature,
    tool_use_id,
)
from ccany_addon.converters.gemini_schema import clean_schema
from ccany_addon.converters.shared_answer import (
    GEMINI_SIGNATURE_PREFIX,
    gemini_error_status,
    gemini_parts,
    gemini_stop_reason,
    usage_from_gemini,
)
from ccany_addon.converters.shared_request import system_text
from ccany_addon.converters.structured import effort_level, gemini_thinking_budget, gemini_thinking_level, output_schema
from ccany_addon.converters.tool_search import conversation_tools, reference_text

# The Gemini docs' value for a functionCall whose signature was never issued (history begun on another model).
DUMMY_SIGNATURE = "skip_thought_signature_validator"
MAX_STOP_SEQUENCES = 5
# Gemini 1.x/2.0 neither think nor sign; every later model (2.5, 3, the `-latest` aliases) does.
_THINKING_MODEL = re.compile(r"^gemini-(?!1\.|2\.0|embedding)")


# ---------------------------------------------------------------- request


def to_gemini_request(request: MessagesRequest, target: UpstreamTarget) -> tuple[dict, list[str]]:
    """The GenerateContentRequest body for `request`, and notes on what could not be carried over."""
    notes: list[str] = []
    model = _model_name(target.model)
    contents, system = _contents(request, bool(_THINKING_MODEL.match(model)), notes)
    body: dict = {"contents": contents}
    if system:
        body["systemInstruction"] = {"parts": [{"text": system}]}

    config: dict = {"maxOutputTokens": target.max_tokens(request.max_tokens)}  # the model's limit: models.py
    if request.temperature is not None:
        config["temperature"] = request.temperature
    if request.top_p is not None:
        config["topP"] = request.top_p
    if request.top_k is not None:
        config["topK"] = request.top_k
    if request.stop_sequences:
        config["stopSequences"] = request.stop_sequences[:MAX_STOP_SEQUENCES]
        if len(request.stop_sequences) > MAX_STOP_SEQUENCES:
            notes.append(f"kept the first {MAX_STOP_SEQUENCES} of {len(request.stop_sequences)} stop sequences")
    if thinking := _thinking_config(request, model):
        config["thinkingConfig"] = thinking
    if (schema := output_schema(request, target.capabilities)) is not None:
        config.update(_response_schema(schema, model))
    body["generationConfig"] = config

    changes = conversation_tools(request)
    notes.extend(changes.notes(request.tools))
    tools = changes.declared(request.tools) if target.capabilities.tools else None
    declarations = _function_declarations(tools, changes.loaded, notes)
    if declarations:
        body["tools"] = [{"functionDeclarations": declarations}]
        if (choice := request.tool_choice) is not None:
            calling: dict = {"mode": {"any": "ANY", "tool": "ANY", "none": "NONE"}.get(choice.type, "AUTO")}
            if choice.type == "tool" and choice.name:
                calling["allowedFunctionNames"] = [short_tool_name(choice.name)]
            body["toolConfig"] = {"functionCallingConfig": calling}
            if choice.disable_parallel_tool_use:
                notes.append("Gemini has no switch for parallel function calls: disable_parallel_tool_use ignored")
    return body, notes


def _model_name(model: str) -> str:
    return model.lower().removeprefix("models/").rsplit("/", 1)[-1]


def _thinking_config(request: MessagesRequest, model: str) -> dict | None:
    """Anthropic thinking → thinkingConfig. The rule, chosen so no setting can cause a 4xx:

    - 1.x/2.0 models: never a thinkingConfig (they reject it).
    - Gemini 3 (thinks always; `thinkingLevel` is its knob, a budget is only tolerated): thinking asked for →
      `includeThoughts`, plus level low (budget ≤ 8k) or high; adaptive takes `output_config.effort` on the
      model's scale (structured.gemini_thinking_level), and without one keeps the model's own dynamic level.
    - Gemini 2.5 and aliases: thinking asked for → `includeThoughts` with the budget clamped to the family's
      maximum (Pro 32,768, others 24,576); adaptive takes the effort's budget (xhigh and max: the maximum), and
      without one -1 (dynamic). Not asked for → Flash models get budget 0 (Anthropic semantics: no thinking,
      and no thinking cost); Pro cannot stop thinking, so nothing.
    """
    if not _THINKING_MODEL.match(model):
        return None
    thinking = request.thinking
    wanted = thinking is not None and thinking.type != "disabled"
    effort = effort_level(request) if request.output_config and request.output_config.effort else None
    if model.startswith("gemini-3"):
        if not wanted:
            return None
        config: dict = {"includeThoughts": True}
        if thinking.type == "enabled":
            config["thinkingLevel"] = "low" if (thinking.budget_tokens or 0) <= 8192 else "high"
        elif effort and (level := gemini_thinking_level(effort, "flash" in model)):
            config["thinkingLevel"] = level
        return config
    if not wanted:
        return {"thinkingBudget": 0} if "flash" in model else None
    ceiling = 32_768 if "pro" in model else 24_576
    if thinking.type == "adaptive":
        return {"includeThoughts": True, "thinkingBudget": gemini_thinking_budget(effort, ceiling) if effort else -1}
    return {"includeThoughts": True, "thinkingBudget": min(thinking.budget_tokens or 1024, ceiling)}


def _response_schema(schema: dict, model: str) -> dict:
    """Structured outputs: 2.5 and later take JSON Schema as it is (`responseJsonSchema`); older models only
    their OpenAPI subset (`responseSchema`), cleaned as tool schemas are."""
    if _THINKING_MODEL.match(model):
        return {"responseMimeType": "application/json", "responseJsonSchema": schema}
    try:
        cleaned = clean_schema(schema)
    except (TypeError, ValueError, AttributeError, RecursionError) as error:
        raise GatewayError(400, "output_config.format.schema: a schema of this shape cannot be converted for "
                                f"Gemini ({type(error).__name__})") from None
    return {"responseMimeType": "application/json", "responseSchema": cleaned}


def _contents(request: MessagesRequest, signs: bool, notes: list[str]) -> tuple[list[dict], str]:
    """Gemini `contents` (user/model turns, same-role neighbours merged) and the system instruction text."""
    system = [system_text(request.system)]
    contents: list[dict] = []
    names: dict[str, str] = {}  # tool_use id → the function name sent upstream (tool_result carries only the id)
    for message in request.messages:
        blocks = [TextBlock(type="text", text=message.content)] if isinstance(message.content, str) else message.content
        if message.role == "system":  # Gemini has no system turns: fold into the instruction
            system.append("\n\n".join(b.text for b in blocks if isinstance(b, TextBlock)))
            continue
        role = "model" if message.role == "assistant" else "user"
        parts = _model_parts(blocks, names, signs) if role == "model" else _user_parts(blocks, names, notes)
        if not parts:
            continue  # Gemini rejects a turn without parts
        if contents and contents[-1]["role"] == role:
            contents[-1]["parts"].extend(parts)
        else:
            contents.append({"role": role, "parts": parts})
    return contents, "\n\n".join(text for text in system if text)


def _model_parts(blocks: list, names: dict[str, str], signs: bool) -> list[dict]:
    parts: list[dict] = []
    signature: str | None = None
    first_call: dict | None = None
    for block in blocks:
        if block.type == "text" and block.text:
            parts.append({"text": block.text})
        elif block.type == "thinking" and (block.signature or "").startswith(GEMINI_SIGNATURE_PREFIX):
            signature = block.signature.removeprefix(GEMINI_SIGNATURE_PREFIX)
        elif block.type == "tool_use":
            name = names[block.id] = short_tool_name(block.name)
            call = {"id": block.id, "name": name, "args": block.input if isinstance(block.input, dict) else {}}
            part: dict = {"functionCall": call}
            if signature:
                part["thoughtSignature"], signature = signature, None
            first_call = first_call or part
            parts.append(part)
        # other thinking, redacted thinking and server-tool blocks mean nothing to Gemini
    if signs and first_call is not None and "thoughtSignature" not in first_call:
        # Gemini 3 validates the first functionCall of each step; a call it never signed gets the documented dummy.
        first_call["thoughtSignature"] = DUMMY_SIGNATURE
    return parts


def _user_parts(blocks: list, names: dict[str, str], notes: list[str]) -> list[dict]:
    """Function responses first (Gemini pairs them with the previous turn's calls), then the other content."""
    responses: list[dict] = []
    media: list[dict] = []
    parts: list[dict] = []
    for block in blocks:
        if isinstance(block, ToolResultBlock):
            text, extra = _tool_result(block)
            name = names.get(block.tool_use_id)
            if name is None:  # its call is not in the history (trimmed): plain text keeps the content
                notes.append(f"tool_result {block.tool_use_id!r} answers no tool_use in the history: sent as text")
                parts.append({"text": f"[result of tool call {block.tool_use_id}]\n{text}"})
                parts.extend(extra)
                continue
            response = {"error": text} if block.is_error else {"result": text}
            responses.append({"functionResponse": {"id": block.tool_use_id, "name": name, "response": response}})
            media.extend(extra)
        elif isinstance(block, TextBlock | ImageBlock | DocumentBlock | SearchResultBlock):
            parts.extend(_content_part(block))
    return responses + media + parts


def _tool_result(block: ToolResultBlock) -> tuple[str, list[dict]]:
    """A tool result's text, and its images or documents as parts of their own."""
    if isinstance(block.content, str):
        return block.content, []
    texts: list[str] = []
    extra: list[dict] = []
    for item in block.content or ():
        for part in _content_part(item):
            if "text" in part:
                texts.append(part["text"])
            else:
                extra.append(part)
    return "\n".join(texts), extra


def _content_part(block: TextBlock | ImageBlock | DocumentBlock | SearchResultBlock | ToolReferenceBlock) -> list[dict]:
    if isinstance(block, TextBlock):
        return [{"text": block.text}] if block.text else []
    if isinstance(block, ToolReferenceBlock):  # the tool itself is declared (tool_search.py)
        text = reference_text(block)
        return [{"text": text}] if text else []
    if isinstance(block, SearchResultBlock):
        body = "\n".join(item.text for item in block.content)
        return [{"text": f"{block.title} ({block.source})\n{body}"}]
    if not isinstance(block, ImageBlock | DocumentBlock):
        return []  # a block of an unknown type (a note says so: tool_search.py)
    source = block.source
    title = f"{block.title}\n" if isinstance(block, DocumentBlock) and block.title else ""
    if source.type == "base64":
        return [{"inlineData": {"mimeType": source.media_type, "data": source.data}}]
    if source.type == "url":
        fallback = "image/jpeg" if isinstance(block, ImageBlock) else "application/pdf"
        mime = mimetypes.guess_type(source.url.split("?", 1)[0])[0] or fallback
        return [{"fileData": {"mimeType": mime, "fileUri": source.url}}]
    if source.type == "text":
        return [{"text": title + source.data}]
    if source.type == "content":
        if isinstance(source.content, str):
            return [{"text": title + source.content}]
        return [{"text": title + "\n".join(i.get("text", "") for i in source.content if i.get("type") == "text")}]
    raise GatewayError(400, f"{block.type} source type '{source.type}' (Anthropic Files API) cannot be sent to "
                            "Gemini; send it as base64, a URL or text")


def _function_declarations(tools: list[Tool] | None, loaded: set[str], notes: list[str]) -> list[dict]:
    declarations: list[dict] = []
    for position, tool in enumerate(tools or ()):
        if not tool.is_custom:
            notes.append(f"left out server tool {tool.name!r} ({tool.type}): no Gemini equivalent here")
            continue
        if tool.defer_loading and tool.name not in loaded:
            notes.append(f"left out deferred tool {tool.name!r}")
            continue
        declaration: dict = {"name": short_tool_name(tool.name)}
        if tool.description:
            declaration["description"] = tool.description
        try:
            parameters = clean_schema(tool.input_schema or {})
        except (TypeError, ValueError, AttributeError, RecursionError) as error:
            raise GatewayError(400, f"tools.{position}.input_schema: a schema of this shape cannot be converted "
                                    f"for Gemini ({type(error).__name__})") from None
        if parameters.get("properties"):  # an object without properties is a 400: no parameters at all instead
            declaration["parameters"] = parameters
        declarations.append(declaration)
    return declarations


# ---------------------------------------------------------------- response


def to_message(body: dict, ctx: ResponseContext, upstream: str = "upstream") -> dict:
    """An Anthropic message from a GenerateContentResponse body."""
    if not isinstance(body, dict):
        raise GatewayError(502, f"{upstream} upstream answered with something other than a GenerateContentResponse")
    if isinstance(error := body.get("error"), dict):
        message = str(error.get("message") or "error")
        raise GatewayError(gemini_error_status(error), mask_secrets(f"{upstream} upstream: {message}"))
    candidates = [c for c in body.get("candidates") or () if isinstance(c, dict)]
    blocked = (body.get("promptFeedback") or {}).get("blockReason")
    if not candidates and not blocked:
        raise GatewayError(502, f"{upstream} upstream answered without any candidates")
    content: list[dict] = []
    for part in gemini_parts(candidates[0]) if candidates else ():
        _add_part(content, part, ctx)
    for block in content:
        if block["type"] == "thinking" and block["signature"] is None:
            block["signature"] = thinking_signature(block["thinking"])
    has_calls = any(block["type"] == "tool_use" for block in content)
    if blocked or not candidates:
        stop_reason = "refusal"
    else:
        candidate = candidates[0]
        stop_reason = gemini_stop_reason(candidate.get("finishReason") or "STOP", has_calls, candidate, upstream)
    return {
        "id": message_id(),
        "type": "message",
        "role": "assistant",
        "model": ctx.client_model,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": usage_from_gemini(body.get("usageMetadata")),
    }


def _add_part(content: list[dict], part: dict, ctx: ResponseContext) -> None:
    """Appends one Gemini part to a message's blocks; an unsigned thinking block has `signature: None`."""
    last = content[-1] if content else None
    open_thinking = last is not None and last["type"] == "thinking" and last["signature"] is None
    signature = part.get("thoughtSignature")
    if part.get("thought"):
        if not open_thinking:
            content.append(last := {"type": "thinking", "thinking": "", "signature": None})
        last["thinking"] += part.get("text") or ""
        if signature:
            last["signature"] = GEMINI_SIGNATURE_PREFIX + signature
    elif isinstance(call := part.get("functionCall"), dict):
        if signature:
            if not open_thinking:
                content.append(last := {"type": "thinking", "thinking": "", "signature": None})
            last["signature"] = GEMINI_SIGNATURE_PREFIX + signature
        args = call.get("args")
        content.append({"type": "tool_use", "id": tool_use_id(call.get("id")),
                        "name": ctx.client_tool_name(str(call.get("name") or "")),
                        "input": args if isinstance(args, dict) else {}})
    elif isinstance(text := part.get("text"), str) and text:
        # A signature on a text part is not validated by Gemini; it is not carried.
        if last is not None and last["type"] == "text":
            last["text"] += text
        else:
            content.append({"type": "text", "text": text})
