"""Anthropic Messages request → OpenAI Chat Completions body, rule by rule (shared/PROTOCOL.md)."""

from __future__ import annotations

import json

import pytest

from ccany_addon.anthropic_api.conformance import check_stream
from ccany_addon.anthropic_api.errors import GatewayError
from ccany_addon.anthropic_api.schema import MessagesRequest, parse
from ccany_addon.anthropic_api.tool_cache import ToolCache
from ccany_addon.converters.common import MAX_TOOL_NAME, ResponseContext, UpstreamTarget
from ccany_addon.converters.openai_chat import to_chat_request, to_message
from ccany_addon.converters.openai_chat_stream import ChatStreamTranslator
from ccany_addon.upstreams.models import ModelTiers, capabilities

PNG_B64 = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg=="
PDF_B64 = "JVBERi0xLjQKJcfsj6IKMSAwIG9iago8PC9UeXBlIC9DYXRhbG9nPj4KZW5kb2JqCg=="
LONG_NAME = "mcp__very_long_server_name_for_testing__and_an_even_longer_tool_name_that_goes_on"


def target(model: str = "gpt-4o", **kwargs) -> UpstreamTarget:
    return UpstreamTarget(model, capabilities(model), **kwargs)


def request(**fields) -> MessagesRequest:
    body = {"model": "claude-sonnet-4-5", "max_tokens": 1024, "messages": [{"role": "user", "content": "hi"}]}
    body.update(fields)
    return parse(MessagesRequest, json.dumps(body).encode())


def convert(fields: dict, chat_target: UpstreamTarget | None = None) -> tuple[dict, list[str]]:
    return to_chat_request(request(**fields), chat_target or target())


def user(content) -> dict:
    return {"role": "user", "content": content}


def assistant(content) -> dict:
    return {"role": "assistant", "content": content}


def text(value: str, **extra) -> dict:
    return {"type": "text", "text": value, **extra}


def tool_use(call_id: str, name: str, arguments: dict) -> dict:
    return {"type": "tool_use", "id": call_id, "name": name, "input": arguments}


def tool_result(call_id: str, content, **extra) -> dict:
    return {"type": "tool_result", "tool_use_id": call_id, "content": content, **extra}


def openai_call(call_id: str, name: str, arguments: dict) -> dict:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": json.dumps(arguments)}}


def _normalise(messages: list[dict]) -> list[dict]:
    """Tool-call arguments compared as JSON values, not as strings with a particular spacing."""
    out = json.loads(json.dumps(messages))
    for message in out:
        for call in message.get("tool_calls") or ():
            call["function"]["arguments"] = json.loads(call["function"]["arguments"])
    return out


ASK_TOOLS = assistant([text("Let me look."), tool_use("call_1", "Read", {"path": "a.py"}),
                       tool_use("call_2", "Bash", {"command": "ls -la"})])
ASK_TOOLS_OUT = {"role": "assistant", "content": "Let me look.",
                 "tool_calls": [openai_call("call_1", "Read", {"path": "a.py"}),
                                openai_call("call_2", "Bash", {"command": "ls -la"})]}

# (request fields, target, the expected `messages` of the Chat Completions body)
MESSAGE_CASES = [
    pytest.param(
        {"system": "Be brief."},
        None,
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}],
        id="system-string",
    ),
    pytest.param(
        {"system": [text("You are Claude Code.", cache_control={"type": "ephemeral"}),
                    text("Project rules.", cache_control={"type": "ephemeral", "ttl": "1h"})]},
        None,
        [{"role": "system", "content": "You are Claude Code.\n\nProject rules."}, {"role": "user", "content": "hi"}],
        id="system-blocks-cache-control-dropped",
    ),
    pytest.param(
        {"system": "S", "messages": [user("q1"), assistant("a1"), {"role": "system", "content": "late note"},
                                     user("q2")]},
        None,
        [{"role": "system", "content": "S"}, {"role": "user", "content": "q1"},
         {"role": "assistant", "content": "a1"}, {"role": "system", "content": "late note"},
         {"role": "user", "content": "q2"}],
        id="system-message-kept-in-place",
    ),
    pytest.param(
        {"system": "S", "messages": [user("q1"), assistant("a1"),
                                     {"role": "system", "content": [text("late"), text("note")]}, user("q2")]},
        target(fold_system_messages=True),
        [{"role": "system", "content": "S\n\nlate\n\nnote"}, {"role": "user", "content": "q1"},
         {"role": "assistant", "content": "a1"}, {"role": "user", "content": "q2"}],
        id="system-message-folded",
    ),
    pytest.param(
        {"messages": [user("q1"), {"role": "system", "content": "only late"}, user("q2")]},
        target(fold_system_messages=True),
        [{"role": "system", "content": "only late"}, {"role": "user", "content": "q1"},
         {"role": "user", "content": "q2"}],
        id="system-message-folded-without-top-level-system",
    ),
    pytest.param(
        {"messages": [user([text("just one", cache_control={"type": "ephemeral"})])]},
        None,
        [{"role": "user", "content": "just one"}],
        id="user-single-text-is-plain-string",
    ),
    pytest.param(
        {"messages": [user([text("one"), text("two")])]},
        None,
        [{"role": "user", "content": [text("one"), text("two")]}],
        id="user-two-texts-are-parts",
    ),
    pytest.param(
        {"messages": [user([{"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                                         "data": PNG_B64}},
                            text("what is this?")])]},
        None,
        [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG_B64}"}},
            text("what is this?")]}],
        id="image-base64",
    ),
    pytest.param(
        {"messages": [user([{"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}}])]},
        None,
        [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}}]}],
        id="image-url",
    ),
    pytest.param(
        {"messages": [user([{"type": "document", "source": {"type": "base64", "media_type": "application/pdf",
                                                            "data": PDF_B64}},
                            text("summarise")])]},
        None,
        [{"role": "user", "content": [
            {"type": "file", "file": {"filename": "document.pdf",
                                      "file_data": f"data:application/pdf;base64,{PDF_B64}"}},
            text("summarise")]}],
        id="document-pdf-base64-file-part",
    ),
    pytest.param(
        {"messages": [user([{"type": "document", "title": "report.pdf",
                             "source": {"type": "base64", "media_type": "application/pdf", "data": PDF_B64}}])]},
        None,
        [{"role": "user", "content": [
            {"type": "file", "file": {"filename": "report.pdf",
                                      "file_data": f"data:application/pdf;base64,{PDF_B64}"}}]}],
        id="document-pdf-titled",
    ),
    pytest.param(
        {"messages": [user([{"type": "document", "source": {"type": "text", "media_type": "text/plain",
                                                            "data": "plain document body"}},
                            text("summarise")])]},
        None,
        [{"role": "user", "content": [text("plain document body"), text("summarise")]}],
        id="document-text-source",
    ),
    pytest.param(
        {"messages": [user("run it"), ASK_TOOLS,
                      user([text("and also check b.py"),
                            tool_result("call_1", "print('a')", cache_control={"type": "ephemeral"}),
                            tool_result("call_2", "a.py b.py")])]},
        None,
        [{"role": "user", "content": "run it"}, ASK_TOOLS_OUT,
         {"role": "tool", "tool_call_id": "call_1", "content": "print('a')"},
         {"role": "tool", "tool_call_id": "call_2", "content": "a.py b.py"},
         {"role": "user", "content": "and also check b.py"}],
        id="tool-results-before-other-user-content",
    ),
    pytest.param(
        {"messages": [user("run it"), ASK_TOOLS,
                      user([tool_result("call_1", [text("line 1"), text("line 2")]),
                            tool_result("call_2", [text("see picture"),
                                                   {"type": "image", "source": {"type": "base64",
                                                                                "media_type": "image/png",
                                                                                "data": PNG_B64}}])])]},
        None,
        [{"role": "user", "content": "run it"}, ASK_TOOLS_OUT,
         {"role": "tool", "tool_call_id": "call_1", "content": "line 1\nline 2"},
         {"role": "tool", "tool_call_id": "call_2", "content": "see picture"},
         {"role": "user", "content": [
             {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG_B64}"}}]}],
        id="tool-result-blocks-joined-images-moved",
    ),
    pytest.param(
        {"messages": [user("go"), assistant([tool_use("toolu_01", "Read", {"path": "/etc/x"})]),
                      user([tool_result("toolu_01", "")])]},
        None,
        [{"role": "user", "content": "go"},
         {"role": "assistant", "content": None, "tool_calls": [openai_call("toolu_01", "Read", {"path": "/etc/x"})]},
         {"role": "tool", "tool_call_id": "toolu_01", "content": ""}],
        id="assistant-only-tool-use-content-null",
    ),
    pytest.param(
        {"messages": [user("go"), assistant([{"type": "thinking", "thinking": "I should list.", "signature": "s"},
                                             {"type": "redacted_thinking", "data": "opaque"},
                                             text("Listing."), tool_use("c1", "Bash", {"command": "ls"})]),
                      user([tool_result("c1", "x")])]},
        target("deepseek-chat"),
        [{"role": "user", "content": "go"},
         {"role": "assistant", "content": "Listing.", "tool_calls": [openai_call("c1", "Bash", {"command": "ls"})],
          "reasoning_content": "I should list."},
         {"role": "tool", "tool_call_id": "c1", "content": "x"}],
        id="thinking-echoed-as-reasoning-content",
    ),
    pytest.param(
        {"messages": [user("go"), assistant([{"type": "thinking", "thinking": "I should list.", "signature": "s"},
                                             {"type": "redacted_thinking", "data": "opaque"},
                                             text("Listing."), tool_use("c1", "Bash", {"command": "ls"})]),
                      user([tool_result("c1", "x")])]},
        None,
        [{"role": "user", "content": "go"},
         {"role": "assistant", "content": "Listing.", "tool_calls": [openai_call("c1", "Bash", {"command": "ls"})]},
         {"role": "tool", "tool_call_id": "c1", "content": "x"}],
        id="thinking-dropped-without-echo-reasoning",
    ),
    pytest.param(
        {"messages": [user("go"), assistant([{"type": "redacted_thinking", "data": "opaque"}, text("ok")])]},
        target("deepseek-chat"),
        [{"role": "user", "content": "go"}, {"role": "assistant", "content": "ok"}],
        id="redacted-thinking-dropped",
    ),
    pytest.param(
        {"messages": [user("go"), assistant([tool_use("c1", "Bash", {"command": "ls"})]),
                      {"role": "system", "content": "a reminder"},
                      user([tool_result("c1", "x"), text("next")])]},
        None,
        [{"role": "user", "content": "go"},
         {"role": "assistant", "content": None, "tool_calls": [openai_call("c1", "Bash", {"command": "ls"})]},
         {"role": "tool", "tool_call_id": "c1", "content": "x"},
         {"role": "system", "content": "a reminder"},
         {"role": "user", "content": "next"}],
        id="tool-results-right-after-calls-even-past-a-system-message",
    ),
]


@pytest.mark.parametrize(("fields", "chat_target", "expected"), MESSAGE_CASES)
def test_messages(fields, chat_target, expected):
    chat, _ = convert(fields, chat_target)
    assert _normalise(chat["messages"]) == _normalise(expected)
    assert "cache_control" not in json.dumps(chat)


def test_tool_call_arguments_are_a_json_string():
    chat, _ = convert({"messages": [user("go"), ASK_TOOLS, user([tool_result("call_1", "a"),
                                                                tool_result("call_2", "b")])]})
    calls = chat["messages"][1]["tool_calls"]
    assert [type(c["function"]["arguments"]) for c in calls] == [str, str]
    assert json.loads(calls[1]["function"]["arguments"]) == {"command": "ls -la"}


def test_tool_error_stays_visible():
    chat, _ = convert({"messages": [user("go"), assistant([tool_use("c1", "Bash", {"command": "false"})]),
                                    user([tool_result("c1", "exit status 1", is_error=True)])]})
    tool = chat["messages"][2]
    assert tool["role"] == "tool" and tool["tool_call_id"] == "c1"
    assert "exit status 1" in tool["content"]
    assert "error" in tool["content"].lower()

    ok, _ = convert({"messages": [user("go"), assistant([tool_use("c1", "Bash", {"command": "true"})]),
                                  user([tool_result("c1", "exit status 1", is_error=False)])]})
    assert ok["messages"][2]["content"] == "exit status 1"


def test_tool_error_with_block_content_stays_visible():
    chat, _ = convert({"messages": [user("go"), assistant([tool_use("c1", "Bash", {"command": "false"})]),
                                    user([tool_result("c1", [text("boom")], is_error=True)])]})
    assert "boom" in chat["messages"][2]["content"] and "error" in chat["messages"][2]["content"].lower()


@pytest.mark.parametrize(
    "block",
    [
        pytest.param({"type": "document", "source": {"type": "url", "url": "https://example.com/a.pdf"}},
                     id="document-url"),
        pytest.param({"type": "document", "source": {"type": "file", "file_id": "file_011"}}, id="document-file"),
        pytest.param({"type": "image", "source": {"type": "file", "file_id": "file_012"}}, id="image-file"),
    ],
)
def test_unsendable_sources_are_a_clear_400(block):
    with pytest.raises(GatewayError) as caught:
        convert({"messages": [user([block, text("read this")])]})
    assert caught.value.status == 400
    assert caught.value.error_type == "invalid_request_error"
    assert block["source"]["type"] in caught.value.message


# ---------------------------------------------------------------- tools

READ_TOOL = {
    "name": "Read",
    "description": "Read a file",
    "input_schema": {"$schema": "http://json-schema.org/draft-07/schema#", "type": "object",
                     "properties": {"path": {"type": "string"}}, "required": ["path"],
                     "additionalProperties": False},
}


def test_custom_tool_becomes_function_without_schema_keyword():
    chat, notes = convert({"tools": [dict(READ_TOOL, cache_control={"type": "ephemeral"})]})
    assert chat["tools"] == [{"type": "function", "function": {
        "name": "Read", "description": "Read a file",
        "parameters": {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"],
                       "additionalProperties": False}}}]
    assert notes == []
    assert "tool_choice" not in chat


def test_long_tool_names_are_shortened_and_restored():
    long_tool = {"name": LONG_NAME, "input_schema": {"type": "object", "properties": {}}}
    fields = {"tools": [READ_TOOL, long_tool], "tool_choice": {"type": "tool", "name": LONG_NAME},
              "messages": [user("go"), assistant([tool_use("c0", LONG_NAME, {})]), user([tool_result("c0", "ok")])]}
    chat, _ = convert(fields)
    short = chat["tools"][1]["function"]["name"]
    assert len(LONG_NAME) > MAX_TOOL_NAME >= len(short)
    assert short != LONG_NAME
    assert chat["tool_choice"] == {"type": "function", "function": {"name": short}}
    assert chat["messages"][1]["tool_calls"][0]["function"]["name"] == short
    assert chat["tools"][0]["function"]["name"] == "Read"

    # the same request converted twice shortens the same way (history stays consistent across turns)
    again, _ = convert(fields)
    assert again["tools"][1]["function"]["name"] == short

    ctx = ResponseContext.for_request(request(**fields))
    message = to_message({"choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
        "role": "assistant", "content": None,
        "tool_calls": [{"id": "call_9", "type": "function", "function": {"name": short, "arguments": "{}"}},
                       {"id": "call_8", "type": "function",
                        "function": {"name": "Read", "arguments": '{"path": "x"}'}}]}}]}, ctx)
    assert [b["name"] for b in message["content"]] == [LONG_NAME, "Read"]

    translator = ChatStreamTranslator(ctx)
    chunk = {"choices": [{"index": 0, "delta": {"tool_calls": [
        {"index": 0, "id": "call_9", "type": "function", "function": {"name": short, "arguments": "{}"}}]},
        "finish_reason": "tool_calls"}]}
    out = b"".join(translator(f"data: {json.dumps(chunk)}\n\ndata: [DONE]\n\n".encode()) + translator(b""))
    report = check_stream(out)
    assert report.complete, report.violations
    assert report.message()["content"][0]["name"] == LONG_NAME


SERVER_TOOLS = [
    pytest.param({"type": "web_search_20250305", "name": "web_search", "max_uses": 5}, id="web-search"),
    pytest.param({"type": "web_fetch_20250910", "name": "web_fetch"}, id="web-fetch"),
    pytest.param({"type": "code_execution_20250825", "name": "code_execution"}, id="code-execution"),
    pytest.param({"type": "tool_search_tool_regex_20251119", "name": "tool_search_tool_regex"}, id="tool-search"),
    pytest.param({"name": "LazyTool", "description": "deferred", "defer_loading": True,
                  "input_schema": {"type": "object", "properties": {}}}, id="defer-loading"),
]


@pytest.mark.parametrize("tool", SERVER_TOOLS)
def test_server_and_deferred_tools_are_left_out_with_a_note(tool):
    chat, notes = convert({"tools": [READ_TOOL, tool], "tool_choice": {"type": "auto"}})
    assert [t["function"]["name"] for t in chat["tools"]] == ["Read"]
    assert len(notes) == 1 and tool["name"] in notes[0]
    assert "web_search_options" not in chat


@pytest.mark.parametrize("tool", SERVER_TOOLS)
def test_only_server_tools_send_no_tools_and_no_tool_choice(tool):
    chat, notes = convert({"tools": [tool], "tool_choice": {"type": "any"}})
    assert "tools" not in chat and "tool_choice" not in chat and "parallel_tool_calls" not in chat
    assert notes


def test_web_search_maps_to_web_search_options_where_supported():
    chat, notes = convert({"tools": [{"type": "web_search_20250305", "name": "web_search"}]},
                          target("gpt-4o-search-preview"))
    assert chat["web_search_options"] == {}
    assert "tools" not in chat
    assert notes == []


def test_one_tools_list_is_converted_once_per_web_search_capability():
    """The gateway's ToolCache hands every request with the same tools array one list; its conversion is kept,
    and a request of another list, or for an upstream that searches the web itself, is converted on its own."""
    search = {"type": "web_search_20250305", "name": "web_search"}
    first = request(tools=[READ_TOOL, search])
    second = request(messages=[user("again")])
    second.tools = first.tools  # as ToolCache shares it
    cache = ToolCache()
    plain, searching = target("gpt-4o", tools=cache), target("gpt-4o-search-preview", tools=cache)
    chat, notes = to_chat_request(first, plain)
    again, again_notes = to_chat_request(second, plain)
    assert again["tools"] is chat["tools"] and again_notes == notes and len(notes) == 1
    searched, searched_notes = to_chat_request(second, searching)
    assert searched["web_search_options"] == {} and searched_notes == []
    assert searched["tools"] == chat["tools"] and searched["tools"] is not chat["tools"]
    fresh, _ = to_chat_request(request(tools=[READ_TOOL, search]), plain)
    assert fresh["tools"] == chat["tools"] and fresh["tools"] is not chat["tools"]


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ({"type": "auto"}, "auto"),
        ({"type": "any"}, "required"),
        ({"type": "tool", "name": "Read"}, {"type": "function", "function": {"name": "Read"}}),
        ({"type": "none"}, "none"),
    ],
)
def test_tool_choice(choice, expected):
    chat, _ = convert({"tools": [READ_TOOL], "tool_choice": choice})
    assert chat["tool_choice"] == expected
    assert "parallel_tool_calls" not in chat


@pytest.mark.parametrize("kind", ["auto", "any", "tool"])
def test_disable_parallel_tool_use(kind):
    choice = {"type": kind, "disable_parallel_tool_use": True} | ({"name": "Read"} if kind == "tool" else {})
    chat, _ = convert({"tools": [READ_TOOL], "tool_choice": choice})
    assert chat["parallel_tool_calls"] is False


# ---------------------------------------------------------------- parameters

# (request fields, target model, target options, expected keys, keys that must be absent)
PARAMETER_CASES = [
    pytest.param({"max_tokens": 64000}, "deepseek-chat", {}, {"max_tokens": 8192}, ["max_completion_tokens"],
                 id="max-tokens-clamped-deepseek"),
    pytest.param({"max_tokens": 32000}, "gpt-4o", {}, {"max_tokens": 16384}, [], id="max-tokens-clamped-gpt-4o"),
    pytest.param({"max_tokens": 32000}, "gpt-4o", {"max_tokens_limit": 4000}, {"max_tokens": 4000}, [],
                 id="max-tokens-target-limit"),
    pytest.param({"max_tokens": 32000}, "my-model", {"max_tokens_limit": 20000}, {"max_tokens": 20000}, [],
                 id="max-tokens-target-limit-unknown-model"),
    pytest.param({"max_tokens": 128000}, "my-model", {}, {"max_tokens": 128000}, [],
                 id="max-tokens-unknown-model-unclamped"),
    pytest.param({"max_tokens": 1000}, "deepseek-chat", {"max_tokens_limit": 4000}, {"max_tokens": 1000}, [],
                 id="max-tokens-below-limits-kept"),
    pytest.param({"max_tokens": 128000}, "gpt-5", {}, {"max_completion_tokens": 128000}, ["max_tokens"],
                 id="max-completion-tokens-gpt-5"),
    pytest.param({"max_tokens": 128000}, "o3", {}, {"max_completion_tokens": 100000}, ["max_tokens"],
                 id="max-completion-tokens-o3-clamped"),
    pytest.param({"temperature": 0.2, "top_p": 0.9}, "gpt-4o", {}, {"temperature": 0.2, "top_p": 0.9}, [],
                 id="temperature-top-p"),
    pytest.param({"temperature": 0}, "gpt-4o", {}, {"temperature": 0}, ["top_p"], id="temperature-zero-kept"),
    pytest.param({"temperature": 1, "top_p": 0.9}, "o3", {}, {}, ["temperature", "top_p"],
                 id="temperature-dropped-o3"),
    pytest.param({"temperature": 1, "top_p": 0.9}, "gpt-5", {}, {}, ["temperature", "top_p"],
                 id="temperature-dropped-gpt-5"),
    pytest.param({"top_k": 40}, "gpt-4o", {}, {}, ["top_k"], id="top-k-not-sent-to-openai"),
    pytest.param({"stop_sequences": ["###", "END"]}, "gpt-4o", {}, {"stop": ["###", "END"]}, [], id="stop"),
    pytest.param({"stop_sequences": ["a", "b", "c", "d", "e", "f"]}, "gpt-4o", {}, {"stop": ["a", "b", "c", "d"]},
                 [], id="stop-at-most-four"),
    pytest.param({"stream": True}, "gpt-4o", {}, {"stream": True, "stream_options": {"include_usage": True}}, [],
                 id="stream"),
    pytest.param({"stream": False}, "gpt-4o", {}, {}, ["stream", "stream_options"], id="no-stream"),
    pytest.param({"metadata": {"user_id": "user_abc"}}, "gpt-4o", {}, {"user": "user_abc"}, [], id="user-short"),
    pytest.param({"thinking": {"type": "enabled", "budget_tokens": 2048}}, "o3", {}, {"reasoning_effort": "low"},
                 [], id="thinking-low"),
    pytest.param({"thinking": {"type": "enabled", "budget_tokens": 10000}}, "o3", {},
                 {"reasoning_effort": "medium"}, [], id="thinking-medium"),
    pytest.param({"thinking": {"type": "enabled", "budget_tokens": 31999}}, "gpt-5", {},
                 {"reasoning_effort": "high"}, [], id="thinking-high"),
    pytest.param({"thinking": {"type": "adaptive"}}, "gpt-5", {}, {"reasoning_effort": "medium"}, [],
                 id="thinking-adaptive"),
    pytest.param({"thinking": {"type": "adaptive"}, "output_config": {"effort": "high"}}, "o3", {},
                 {"reasoning_effort": "high"}, [], id="thinking-adaptive-effort-high"),
    pytest.param({"thinking": {"type": "adaptive"}, "output_config": {"effort": "max"}}, "o3", {},
                 {"reasoning_effort": "high"}, [], id="thinking-adaptive-effort-max"),
    pytest.param({"thinking": {"type": "adaptive"}, "output_config": {"effort": "low"}}, "o3", {},
                 {"reasoning_effort": "low"}, [], id="thinking-adaptive-effort-low"),
    pytest.param({"thinking": {"type": "disabled"}}, "o3", {}, {}, ["reasoning_effort"], id="thinking-disabled"),
    pytest.param({"thinking": {"type": "enabled", "budget_tokens": 10000}}, "anthropic/claude-sonnet-4.5",
                 {"reasoning_object": True}, {"reasoning": {"max_tokens": 10000}}, ["reasoning_effort"],
                 id="openrouter-thinking-budget"),
    pytest.param({"thinking": {"type": "adaptive"}, "output_config": {"effort": "high"}}, "openai/gpt-5",
                 {"reasoning_object": True}, {"reasoning": {"effort": "high"}}, ["reasoning_effort"],
                 id="openrouter-thinking-adaptive"),
    pytest.param({"thinking": {"type": "disabled"}}, "openai/gpt-5", {"reasoning_object": True}, {},
                 ["reasoning", "reasoning_effort"], id="openrouter-thinking-disabled"),
    pytest.param({"thinking": {"type": "enabled", "budget_tokens": 10000}}, "gpt-4o", {}, {},
                 ["reasoning_effort"], id="thinking-ignored-for-non-reasoning-model"),
    pytest.param({"thinking": {"type": "adaptive"}}, "deepseek-chat", {}, {}, ["reasoning_effort"],
                 id="thinking-ignored-for-deepseek-chat"),
    pytest.param({"context_management": {"edits": [{"type": "clear_tool_uses_20250919"}]},
                  "output_config": {"effort": "high", "format": None}, "safeguards": {"level": "x"},
                  "container": "c1", "service_tier": "auto"},
                 "gpt-4o", {}, {}, ["context_management", "output_config", "safeguards", "container",
                                     "service_tier", "reasoning_effort"],
                 id="unknown-top-level-fields-ignored"),
]


@pytest.mark.parametrize(("fields", "model", "options", "expected", "absent"), PARAMETER_CASES)
def test_parameters(fields, model, options, expected, absent):
    chat, _ = convert(fields, target(model, **options))
    assert chat["model"] == model
    for key, value in expected.items():
        assert chat[key] == value, key
    for key in absent:
        assert key not in chat, key


def test_only_known_keys_are_sent():
    chat, _ = convert({"context_management": {"edits": []}, "anthropic_beta": ["x"], "system": "S",
                       "metadata": {"user_id": "u"}, "stream": True})
    assert set(chat) == {"model", "messages", "max_tokens", "stream", "stream_options", "user"}


def test_more_than_four_stop_sequences_leaves_a_note():
    _, notes = convert({"stop_sequences": ["a", "b", "c", "d", "e"]})
    assert len(notes) == 1 and "4" in notes[0]


def test_long_user_id_is_hashed_to_the_limit():
    long_id = "user_" + "0123456789abcdef" * 4 + "_account__session_" + "a1b2c3d4-" * 8
    assert len(long_id) > 64
    chat, _ = convert({"metadata": {"user_id": long_id}})
    assert 0 < len(chat["user"]) <= 64
    assert chat["user"] != long_id[:len(chat["user"])]
    again, _ = convert({"metadata": {"user_id": long_id}})
    other, _ = convert({"metadata": {"user_id": long_id + "x"}})
    assert again["user"] == chat["user"] != other["user"]


def test_user_id_of_exactly_64_chars_kept():
    chat, _ = convert({"metadata": {"user_id": "u" * 64}})
    assert chat["user"] == "u" * 64


# ---------------------------------------------------------------- model mapping (DESIGN.md §1)

TIERS = ModelTiers(big="gpt-5", middle="gpt-4.1", small="gpt-4o-mini")


@pytest.mark.parametrize(
    ("tiers", "client_model", "expected"),
    [
        (TIERS, "claude-3-5-haiku-20241022", "gpt-4o-mini"),
        (TIERS, "claude-haiku-4-5", "gpt-4o-mini"),
        (TIERS, "Claude-HAIKU-x", "gpt-4o-mini"),
        (TIERS, "claude-sonnet-4-5-20250929", "gpt-4.1"),
        (TIERS, "claude-3-7-sonnet-latest", "gpt-4.1"),
        (ModelTiers(big="gpt-5", middle="", small="gpt-4o-mini"), "claude-sonnet-4-5", "gpt-5"),
        (TIERS, "claude-opus-4-1-20250805", "gpt-5"),
        (TIERS, "claude-opus-4-5", "gpt-5"),
        (TIERS, "gpt-4o", "gpt-4o"),
        (TIERS, "deepseek/DeepSeek-Chat", "deepseek/DeepSeek-Chat"),
        # a Claude name with no tier word goes to the `unknown_claude` tier (big unless set), never upstream as is
        (TIERS, "claude-instant-1", "gpt-5"),
        (TIERS, "claude-fable-5-2", "gpt-5"),
        (TIERS, "anthropic/claude-mythos-5", "gpt-5"),
        (ModelTiers("gpt-5", "gpt-4.1", "gpt-4o-mini", "small"), "claude-fable-5-2", "gpt-4o-mini"),
        (ModelTiers("gpt-5", "gpt-4.1", "gpt-4o-mini", "middle"), "Claude-Fable-5", "gpt-4.1"),
        (ModelTiers("gpt-5", "", "gpt-4o-mini", "middle"), "claude-fable-5", "gpt-5"),
        (TIERS, "my-claude-clone", "my-claude-clone"),
    ],
)
def test_model_tiers(tiers, client_model, expected):
    assert tiers.map(client_model) == expected


def test_response_keeps_client_model_name():
    req = request(model="claude-opus-4-1")
    chat, _ = to_chat_request(req, target(TIERS.map(req.model)))
    assert chat["model"] == "gpt-5"
    message = to_message({"model": "gpt-5", "choices": [{"index": 0, "finish_reason": "stop",
                                                         "message": {"role": "assistant", "content": "hi"}}]},
                         ResponseContext.for_request(req))
    assert message["model"] == "claude-opus-4-1"


def test_a_tool_reference_in_a_tool_result_reads_as_text():
    """Claude Code's tool search answers with `tool_reference` blocks inside a tool result: never a 400; a model
    that does not know the block reads that the tool is available (tests/unit/test_tool_search.py: declared)."""
    from ccany_addon.converters.gemini import to_gemini_request
    from ccany_addon.converters.openai_responses import to_responses_request

    fields = {"messages": [
        user("find a tool"), assistant([tool_use("call_1", "ToolSearch", {"query": "fetch"})]),
        user([tool_result("call_1", [text("Found one."), {"type": "tool_reference", "tool_name": "WebFetch"}]),
              text("go on")])]}
    body, _ = convert(fields)
    assert body["messages"][2] == {"role": "tool", "tool_call_id": "call_1",
                                   "content": "Found one.\nTool WebFetch is now available."}
    responses, _ = to_responses_request(request(**fields), target("gpt-5-codex"))
    assert "tool_reference" not in json.dumps(responses) and "Tool WebFetch is now available." in json.dumps(responses)
    gemini, _ = to_gemini_request(request(**fields), target("gemini-2.5-flash"))
    assert "tool_reference" not in json.dumps(gemini) and "Tool WebFetch is now available." in json.dumps(gemini)
