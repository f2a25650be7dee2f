"""Request pieces several dialects share: the system text, a user turn's content parts, tool results, the
`user` field and the client's tools as function tools.

Content parts come in Chat Completions shape (`text`, `image_url`, `file`); the Responses converter maps each
to its own input part. Pure functions; no I/O.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from ccany_addon.anthropic_api.errors import GatewayError
from ccany_addon.anthropic_api.schema import (
    DocumentBlock,
    ImageBlock,
    SearchResultBlock,
    TextBlock,
    Tool,
    ToolReferenceBlock,
    ToolResultBlock,
)
from ccany_addon.anthropic_api.tool_cache import ToolCache
from ccany_addon.converters.common import short_tool_name
from ccany_addon.converters.tool_search import reference_text

MAX_USER_FIELD = 64


def system_text(system: str | list[TextBlock] | None) -> str:
    if system is None:
        return ""
    if isinstance(system, str):
        return system
    return "\n\n".join(block.text for block in system if block.text)


def tool_result_content(block: ToolResultBlock) -> tuple[str, list[dict]]:
    """The text of a tool result, and the images or files in it (which go in a following user message)."""
    texts: list[str] = []
    extra: list[dict] = []
    if isinstance(block.content, str):
        texts.append(block.content)
    else:
        for item in block.content or ():
            for part in user_part(item):
                if part["type"] == "text":
                    texts.append(part["text"])
                else:
                    extra.append(part)
    text = "\n".join(texts)
    if block.is_error:
        text = f"[tool error] {text}" if text else "[tool error]"
    return text, extra


def user_part(block: TextBlock | ImageBlock | DocumentBlock | SearchResultBlock | ToolReferenceBlock) -> list[dict]:
    if isinstance(block, TextBlock):
        return [{"type": "text", "text": block.text}] if block.text else []
    if isinstance(block, ToolReferenceBlock):  # the tool itself is declared (tool_search.py)
        text = reference_text(block)
        return [{"type": "text", "text": text}] if text else []
    if isinstance(block, SearchResultBlock):
        body = "\n".join(item.text for item in block.content)
        return [{"type": "text", "text": f"{block.title} ({block.source})\n{body}"}]
    if isinstance(block, ImageBlock):
        source = block.source
        if source.type == "base64":
            return [{"type": "image_url", "image_url": {"url": f"data:{source.media_type};base64,{source.data}"}}]
        if source.type == "url":
            return [{"type": "image_url", "image_url": {"url": source.url}}]
        raise GatewayError(400, "image source type 'file' (Anthropic Files API) cannot be sent to this upstream")
    if isinstance(block, DocumentBlock):
        return _document_part(block)
    return []  # a block of an unknown type (a note says so: tool_search.py)


def _document_part(block: DocumentBlock) -> list[dict]:
    source = block.source
    title = f"{block.title}\n" if block.title else ""
    if source.type == "text":
        return [{"type": "text", "text": title + source.data}]
    if source.type == "content":
        if isinstance(source.content, str):
            return [{"type": "text", "text": title + source.content}]
        texts = [item.get("text", "") for item in source.content if item.get("type") == "text"]
        return [{"type": "text", "text": title + "\n".join(texts)}]
    if source.type == "base64":
        filename = block.title or ("document.pdf" if source.media_type == "application/pdf" else "document")
        data_url = f"data:{source.media_type};base64,{source.data}"
        return [{"type": "file", "file": {"filename": filename, "file_data": data_url}}]
    raise GatewayError(
        400,
        f"document source type '{source.type}' cannot be sent to this upstream; send the document as base64 or text",
    )


def user_field(user_id: str) -> str:
    if len(user_id) <= MAX_USER_FIELD:
        return user_id
    return "user_" + hashlib.sha256(user_id.encode()).hexdigest()[:40]


@dataclass(frozen=True, slots=True)
class FunctionTools:
    """A request's tools as Chat Completions function tools, and what became of the others."""

    functions: list[dict]  # shared by every request with the same tools list: never to be changed
    notes: tuple[str, ...] = ()
    web_search: bool = False  # a web search tool that the upstream runs itself (`web_search_options`)


_NO_TOOLS = FunctionTools([])


def function_tools(tools: list[Tool] | None, web_search: bool, loaded: frozenset[str] = frozenset(),
                   cache: ToolCache | None = None) -> FunctionTools:
    """The tools for an upstream that runs web search itself (`web_search`) or not; deferred tools only when
    tool search has `loaded` them.

    With the gateway's `cache`, a tools list it handed out is converted once per (web_search, loaded).
    """
    if not tools:
        return _NO_TOOLS
    if cache is None:
        return _function_tools(tools, web_search, loaded)
    key = (web_search, loaded)
    if type(known := cache.converted(tools, key)) is FunctionTools:
        return known
    converted = _function_tools(tools, web_search, loaded)
    cache.keep(tools, key, converted)
    return converted


def _function_tools(tools: list[Tool], web_search: bool, loaded: frozenset[str]) -> FunctionTools:
    functions: list[dict] = []
    notes: list[str] = []
    searches = False
    for tool in tools:
        if not tool.is_custom:
            if (tool.type or "").startswith("web_search") and web_search:
                searches = True
            else:
                notes.append(f"left out server tool {tool.name!r} ({tool.type}): the upstream has no equivalent")
            continue
        if tool.defer_loading and tool.name not in loaded:
            notes.append(f"left out deferred tool {tool.name!r}")
            continue
        schema = {k: v for k, v in (tool.input_schema or {}).items() if k != "$schema"}
        function: dict = {"name": short_tool_name(tool.name), "parameters": schema}
        if tool.description:
            function["description"] = tool.description
        functions.append({"type": "function", "function": function})
    return FunctionTools(functions, tuple(notes), searches)
