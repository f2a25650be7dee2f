"""Tool search and open lists on converting kinds: a deferred tool that a `tool_reference` loaded is declared
upstream (from the request's own history), `tool_addition`/`tool_removal` change the tools, and blocks of
unknown types are left out with a note. One table per dialect."""

from __future__ import annotations

import json

import pytest

from ccany_addon.anthropic_api.schema import MessagesRequest, parse
from ccany_addon.anthropic_api.tool_cache import ToolCache
from ccany_addon.converters.common import UpstreamTarget
from ccany_addon.converters.gemini import to_gemini_request
from ccany_addon.converters.openai_chat import to_chat_request
from ccany_addon.converters.openai_responses import to_responses_request
from ccany_addon.converters.shared_request import function_tools
from ccany_addon.upstreams.models import capabilities

SCHEMA = {"type": "object", "properties": {"url": {"type": "string"}}, "required": ["url"]}
TOOLS = [{"name": "ToolSearch", "description": "Finds tools", "input_schema": {"type": "object", "properties": {
             "query": {"type": "string"}}}},
         {"name": "WebFetch", "description": "Fetches a URL", "input_schema": SCHEMA, "defer_loading": True},
         {"name": "NotebookEdit", "description": "Edits", "input_schema": SCHEMA, "defer_loading": True}]


def declared_chat(body: dict) -> list[str]:
    return [tool["function"]["name"] for tool in body.get("tools", ())]


def declared_responses(body: dict) -> list[str]:
    return [tool["name"] for tool in body.get("tools", ())]


def declared_gemini(body: dict) -> list[str]:
    return [d["name"] for tools in body.get("tools", ()) for d in tools["functionDeclarations"]]


DIALECTS = [
    pytest.param(to_chat_request, "gpt-4o", declared_chat, id="openai"),
    pytest.param(to_responses_request, "gpt-5-codex", declared_responses, id="responses"),
    pytest.param(to_gemini_request, "gemini-2.5-flash", declared_gemini, id="gemini"),
]


def convert(convert_fn, model: str, messages: list[dict], tools: list[dict] = TOOLS) -> tuple[dict, list[str]]:
    body = {"model": "claude-sonnet-4-5", "max_tokens": 1024, "tools": tools, "messages": messages}
    request = parse(MessagesRequest, json.dumps(body).encode())
    return convert_fn(request, UpstreamTarget(model, capabilities(model)))


SEARCH = [{"role": "user", "content": "fetch example.com"},
          {"role": "assistant", "content": [{"type": "tool_use", "id": "call_1", "name": "ToolSearch",
                                             "input": {"query": "fetch"}}]},
          {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "call_1", "content": [
              {"type": "tool_reference", "tool_name": "WebFetch"}]}]}]
LATER = [*SEARCH,
         {"role": "assistant", "content": [{"type": "tool_use", "id": "call_2", "name": "WebFetch",
                                            "input": {"url": "https://example.com"}}]},
         {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "call_2", "content": "<html>"}]}]


@pytest.mark.parametrize(("convert_fn", "model", "declared"), DIALECTS)
def test_deferred_tools_stay_out_until_tool_search_loads_them(convert_fn, model, declared):
    body, notes = convert(convert_fn, model, SEARCH[:1])
    assert declared(body) == ["ToolSearch"]
    assert "left out deferred tool 'WebFetch'" in notes


@pytest.mark.parametrize(("convert_fn", "model", "declared"), DIALECTS)
@pytest.mark.parametrize("messages", [SEARCH, LATER], ids=["this-request", "later-request"])
def test_a_tool_reference_declares_the_deferred_tool(convert_fn, model, declared, messages):
    body, notes = convert(convert_fn, model, messages)
    assert declared(body) == ["ToolSearch", "WebFetch"]
    assert "left out deferred tool 'NotebookEdit'" in notes
    assert any("declared 1 deferred tools that tool search loaded: WebFetch" in note for note in notes)
    text = json.dumps(body)
    assert "Tool WebFetch is now available." in text and "tool_reference" not in text


ADD_INLINE = {"role": "system", "content": [{"type": "tool_addition", "tool": {"type": "tool_definition",
                                             "definition": {"name": "Late", "description": "A late tool",
                                                            "input_schema": SCHEMA}}}]}
ADD_BY_NAME = {"role": "system", "content": [{"type": "tool_addition", "tool": {"type": "tool_reference",
                                                                                "name": "NotebookEdit"}}]}
REMOVE = {"role": "system", "content": [{"type": "tool_removal", "tool": {"type": "tool_reference",
                                                                         "name": "Late"}}]}
HI = {"role": "user", "content": "hi"}
OK = {"role": "assistant", "content": "ok"}


@pytest.mark.parametrize(("convert_fn", "model", "declared"), DIALECTS)
@pytest.mark.parametrize(("messages", "expected"), [
    pytest.param([HI, OK, ADD_INLINE, HI], ["ToolSearch", "Late"], id="inline-definition"),
    pytest.param([HI, OK, ADD_BY_NAME, HI], ["ToolSearch", "NotebookEdit"], id="by-reference"),
    pytest.param([HI, OK, ADD_INLINE, HI, OK, REMOVE, HI], ["ToolSearch"], id="added-then-removed"),
])
def test_tool_changes_in_system_messages(convert_fn, model, declared, messages, expected):
    body, _ = convert(convert_fn, model, messages)
    assert declared(body) == expected
    text = json.dumps(body)
    assert "tool_addition" not in text and "tool_removal" not in text
    if convert_fn is to_chat_request:  # a system message of tool changes only says nothing: none is sent
        assert all(message.get("content") for message in body["messages"])


UNKNOWN = [{"role": "user", "content": [{"type": "hologram", "glow": "bright"}, {"type": "text", "text": "hi"}]},
           {"role": "assistant", "content": [{"type": "text", "text": "ok"}, {"type": "sparkle"},
                                             {"type": "tool_use", "id": "call_1", "name": "ToolSearch",
                                              "input": {"query": "x"}}]},
           {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "call_1", "content": [
               {"type": "text", "text": "none"}, {"type": "hologram", "glow": "dim"}]}]}]


@pytest.mark.parametrize(("convert_fn", "model", "declared"), DIALECTS)
def test_unknown_blocks_are_left_out_with_a_note(convert_fn, model, declared):
    body, notes = convert(convert_fn, model, UNKNOWN)
    text = json.dumps(body)
    assert "hologram" not in text and "sparkle" not in text and "glow" not in text
    assert "hi" in text and "none" in text
    assert any("left out 3 content blocks of types the upstream cannot take: hologram ×2, sparkle" in note
               for note in notes), notes


def test_a_tool_search_session_reuses_its_converted_tools():
    body = {"model": "m", "max_tokens": 5, "tools": TOOLS, "messages": SEARCH}
    tools = parse(MessagesRequest, json.dumps(body).encode()).tools
    loaded, cache = frozenset({"WebFetch"}), ToolCache()
    assert function_tools(tools, False, loaded, cache) is function_tools(tools, False, frozenset({"WebFetch"}), cache)
    assert function_tools(tools, False, loaded, cache) is not function_tools(tools, False, cache=cache)
