"""Anthropic Messages ⇄ Gemini: request body, schema cleaning, thought signatures, answers and streams."""

from __future__ import annotations

import functools
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ccany_addon.anthropic_api.conformance import check_stream
from ccany_addon.anthropic_api.errors import GatewayError
from ccany_addon.anthropic_api.schema import MessagesRequest, parse
from ccany_addon.converters.common import MAX_TOOL_NAME, ResponseContext, UpstreamTarget, short_tool_name
from ccany_addon.converters.gemini import (
    DUMMY_SIGNATURE,
    to_gemini_request,
    to_message,
)
from ccany_addon.converters.gemini_schema import clean_schema
from ccany_addon.converters.gemini_stream import GeminiStreamTranslator
from ccany_addon.converters.shared_answer import upstream_error
from ccany_addon.upstreams.models import capabilities
from tests.fake_gemini import schema_problems
from tests.unit.streams import byte_by_byte, comparable_events, draw_split, feed_chunks

PNG_B64 = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg=="
LONG_NAME = "mcp__very_long_server_name_for_testing__and_an_even_longer_tool_name_that_goes_on"
CTX = ResponseContext(client_model="claude-sonnet-4-5", estimated_input_tokens=321)


def request(**fields) -> MessagesRequest:
    body = {"model": "claude-sonnet-4-5", "max_tokens": 1024, "messages": [{"role": "user", "content": "hi"}]}
    body.update(fields)
    return parse(MessagesRequest, json.dumps(body).encode())


def target(model: str, **kwargs) -> UpstreamTarget:
    return UpstreamTarget(model, capabilities(model), **kwargs)


def convert(model: str = "gemini-2.5-pro", **fields) -> tuple[dict, list[str]]:
    return to_gemini_request(request(**fields), target(model))


def tool_use(call_id: str, name: str, arguments: dict) -> dict:
    return {"type": "tool_use", "id": call_id, "name": name, "input": arguments}


def tool_result(call_id: str, content, **extra) -> dict:
    return {"type": "tool_result", "tool_use_id": call_id, "content": content, **extra}


def thinking(text: str, signature: str) -> dict:
    return {"type": "thinking", "thinking": text, "signature": signature}


WRITE_TOOL = {"name": "Write", "description": "Write a file",
              "input_schema": {"$schema": "http://json-schema.org/draft-07/schema#", "type": "object",
                               "additionalProperties": False, "required": ["file_path", "content"],
                               "properties": {"file_path": {"type": "string"}, "content": {"type": "string"}}}}


# ---------------------------------------------------------------- request: messages


def test_system_text_and_late_system_messages_become_the_system_instruction():
    body, _ = convert(system=[{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
                      messages=[{"role": "user", "content": "hi"}, {"role": "system", "content": "Use tools."},
                                {"role": "user", "content": [{"type": "text", "text": "again"}]}])
    assert body["systemInstruction"] == {"parts": [{"text": "Be brief.\n\nUse tools."}]}
    # the two user messages around the folded system message become one turn
    assert body["contents"] == [{"role": "user", "parts": [{"text": "hi"}, {"text": "again"}]}]


def test_roles_and_merging_of_same_role_neighbours():
    body, _ = convert(messages=[{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
                                {"role": "assistant", "content": [{"type": "text", "text": "c"}]},
                                {"role": "user", "content": "d"}])
    assert body["contents"] == [{"role": "user", "parts": [{"text": "a"}]},
                                {"role": "model", "parts": [{"text": "b"}, {"text": "c"}]},
                                {"role": "user", "parts": [{"text": "d"}]}]
    assert "systemInstruction" not in body


@pytest.mark.parametrize("block, part", [
    ({"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG_B64}},
     {"inlineData": {"mimeType": "image/png", "data": PNG_B64}}),
    ({"type": "image", "source": {"type": "url", "url": "https://example.com/cat.png?size=2"}},
     {"fileData": {"mimeType": "image/png", "fileUri": "https://example.com/cat.png?size=2"}}),
    ({"type": "image", "source": {"type": "url", "url": "https://example.com/photo"}},
     {"fileData": {"mimeType": "image/jpeg", "fileUri": "https://example.com/photo"}}),
    ({"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0="}},
     {"inlineData": {"mimeType": "application/pdf", "data": "JVBERi0="}}),
    ({"type": "document", "title": "Notes", "source": {"type": "text", "media_type": "text/plain", "data": "x"}},
     {"text": "Notes\nx"}),
    ({"type": "document", "source": {"type": "content", "content": [{"type": "text", "text": "inner"}]}},
     {"text": "inner"}),
    ({"type": "search_result", "source": "https://s", "title": "T", "content": [{"type": "text", "text": "r"}]},
     {"text": "T (https://s)\nr"}),
])
def test_user_content_parts(block, part):
    body, _ = convert(messages=[{"role": "user", "content": [block]}])
    assert body["contents"][0]["parts"] == [part]


def test_files_api_sources_are_a_clear_400():
    with pytest.raises(GatewayError) as caught:
        convert(messages=[{"role": "user", "content": [{"type": "image", "source": {"type": "file",
                                                                                     "file_id": "f1"}}]}])
    assert caught.value.status == 400 and "base64" in caught.value.message


def test_tool_result_finds_its_function_name_from_the_earlier_call():
    body, notes = convert(messages=[
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": [{"type": "text", "text": "Checking."},
                                          tool_use("toolu_a", "get_weather", {"city": "Paris"}),
                                          tool_use("toolu_b", LONG_NAME, {})]},
        {"role": "user", "content": [
            tool_result("toolu_b", [{"type": "text", "text": "line 1"}, {"type": "text", "text": "line 2"},
                                    {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                                                 "data": PNG_B64}}]),
            tool_result("toolu_a", "boom", is_error=True),
            {"type": "text", "text": "and then?"}]},
    ])
    model, answer = body["contents"][1], body["contents"][2]
    assert model["parts"][0] == {"text": "Checking."}
    assert model["parts"][2]["functionCall"] == {"id": "toolu_b", "name": short_tool_name(LONG_NAME), "args": {}}
    assert answer["parts"] == [
        {"functionResponse": {"id": "toolu_b", "name": short_tool_name(LONG_NAME),
                              "response": {"result": "line 1\nline 2"}}},
        {"functionResponse": {"id": "toolu_a", "name": "get_weather", "response": {"error": "boom"}}},
        {"inlineData": {"mimeType": "image/png", "data": PNG_B64}},
        {"text": "and then?"},
    ]
    assert notes == []


def test_tool_result_without_its_call_goes_as_text_with_a_note():
    body, notes = convert(messages=[{"role": "user", "content": [tool_result("toolu_gone", "old output")]}])
    assert body["contents"][0]["parts"] == [{"text": "[result of tool call toolu_gone]\nold output"}]
    assert "toolu_gone" in notes[0]


# ---------------------------------------------------------------- request: thought signatures


def test_a_gemini_signature_goes_onto_the_next_function_call_and_thought_text_stays_home():
    body, _ = convert(messages=[
        {"role": "user", "content": "go"},
        {"role": "assistant", "content": [thinking("private thoughts", "gemini.SIG-1"), {"type": "text", "text": "ok"},
                                          tool_use("toolu_1", "Read", {"path": "a"}),
                                          tool_use("toolu_2", "Read", {"path": "b"})]},
        {"role": "user", "content": [tool_result("toolu_1", "A"), tool_result("toolu_2", "B")]},
        {"role": "assistant", "content": [thinking("", "gemini.SIG-2"), tool_use("toolu_3", "Read", {"path": "c"})]},
    ])
    first, second = body["contents"][1]["parts"], body["contents"][3]["parts"]
    assert first[0] == {"text": "ok"}
    assert first[1]["thoughtSignature"] == "SIG-1" and "thoughtSignature" not in first[2]
    assert second == [{"functionCall": {"id": "toolu_3", "name": "Read", "args": {"path": "c"}},
                       "thoughtSignature": "SIG-2"}]
    assert "private thoughts" not in json.dumps(body)


@pytest.mark.parametrize("model, expected", [
    ("gemini-2.5-pro", DUMMY_SIGNATURE),
    ("gemini-3-pro-preview", DUMMY_SIGNATURE),
    ("models/gemini-flash-latest", DUMMY_SIGNATURE),
    ("gemini-2.0-flash", None),  # no thinking, no validator
])
def test_a_call_gemini_never_signed_gets_the_documented_dummy(model, expected):
    """History begun on another model: its thinking signature is not Gemini's, the call has none."""
    body, _ = convert(model, messages=[
        {"role": "user", "content": "go"},
        {"role": "assistant", "content": [thinking("claude thought", "EqQBCkYIBxgCKkB..."),
                                          {"type": "redacted_thinking", "data": "xyz"},
                                          tool_use("toolu_1", "Read", {}), tool_use("toolu_2", "Read", {})]},
        {"role": "user", "content": [tool_result("toolu_1", "A"), tool_result("toolu_2", "B")]}])
    parts = body["contents"][1]["parts"]
    assert parts[0].get("thoughtSignature") == expected and "thoughtSignature" not in parts[1]
    assert "claude thought" not in json.dumps(body)


def test_a_round_trip_through_the_anthropic_stream_keeps_the_signature():
    stream = sse(chunk([{"text": "Let me see.", "thought": True}]),
                 chunk([{"functionCall": {"name": "Write", "args": {"file_path": "/x", "content": "y"}},
                         "thoughtSignature": "c2lnbmF0dXJl"}], finish="STOP", usage=USAGE))
    message = run(stream)[0].message()
    body, _ = convert(messages=[{"role": "user", "content": "write"},
                                {"role": "assistant", "content": message["content"]},
                                {"role": "user", "content": [tool_result(message["content"][1]["id"], "done")]}],
                      tools=[WRITE_TOOL])
    call = body["contents"][1]["parts"][0]
    assert call["thoughtSignature"] == "c2lnbmF0dXJl"
    assert call["functionCall"]["id"] == message["content"][1]["id"]
    assert body["contents"][2]["parts"][0]["functionResponse"]["name"] == "Write"
    assert not schema_problems(body["tools"][0]["functionDeclarations"][0]["parameters"], "parameters")


# ---------------------------------------------------------------- request: generation config, tools


def test_generation_config():
    body, notes = convert(max_tokens=128000, temperature=0.3, top_p=0.9, top_k=40,
                          stop_sequences=["a", "b", "c", "d", "e", "f"])
    assert body["generationConfig"] == {"maxOutputTokens": 65536, "temperature": 0.3, "topP": 0.9, "topK": 40,
                                        "stopSequences": ["a", "b", "c", "d", "e"]}
    assert notes == ["kept the first 5 of 6 stop sequences"]


@pytest.mark.parametrize("model, limit, requested, expected", [
    ("gemini-2.5-flash", 0, 32000, 32000),
    ("gemini-2.0-flash", 0, 32000, 8192),
    ("gemini-2.5-pro", 16000, 32000, 16000),
])
def test_max_output_tokens_is_clamped(model, limit, requested, expected):
    body, _ = to_gemini_request(request(max_tokens=requested), target(model, max_tokens_limit=limit))
    assert body["generationConfig"]["maxOutputTokens"] == expected


@pytest.mark.parametrize("model, thinking_field, expected", [
    ("gemini-2.5-pro", {"type": "enabled", "budget_tokens": 10000}, {"includeThoughts": True, "thinkingBudget": 10000}),
    ("gemini-2.5-pro", {"type": "enabled", "budget_tokens": 60000}, {"includeThoughts": True, "thinkingBudget": 32768}),
    ("gemini-2.5-flash", {"type": "enabled", "budget_tokens": 60000},
     {"includeThoughts": True, "thinkingBudget": 24576}),
    ("gemini-2.5-pro", {"type": "adaptive"}, {"includeThoughts": True, "thinkingBudget": -1}),
    ("gemini-2.5-pro", None, None),
    ("gemini-2.5-pro", {"type": "disabled"}, None),
    ("gemini-2.5-flash", None, {"thinkingBudget": 0}),
    ("gemini-2.5-flash-lite", {"type": "disabled"}, {"thinkingBudget": 0}),
    ("gemini-3-pro-preview", {"type": "enabled", "budget_tokens": 4000},
     {"includeThoughts": True, "thinkingLevel": "low"}),
    ("gemini-3-pro-preview", {"type": "enabled", "budget_tokens": 20000},
     {"includeThoughts": True, "thinkingLevel": "high"}),
    ("gemini-3-flash-preview", {"type": "adaptive"}, {"includeThoughts": True}),
    ("gemini-3-pro-preview", None, None),
    ("gemini-2.0-flash", {"type": "enabled", "budget_tokens": 4000}, None),
    ("gemini-1.5-pro", {"type": "adaptive"}, None),
])
def test_thinking_config(model, thinking_field, expected):
    fields = {"max_tokens": 64000, **({"thinking": thinking_field} if thinking_field else {})}
    body, _ = convert(model, **fields)
    assert body["generationConfig"].get("thinkingConfig") == expected


def test_tools_are_declared_with_clean_schemas_and_short_names():
    body, notes = convert(tools=[
        WRITE_TOOL,
        {"name": LONG_NAME, "input_schema": {"type": "object", "properties": {}}},
        {"name": "web_search", "type": "web_search_20250305"},
        {"name": "Later", "input_schema": {"type": "object"}, "defer_loading": True},
    ])
    declarations = body["tools"][0]["functionDeclarations"]
    assert declarations[0] == {"name": "Write", "description": "Write a file", "parameters": {
        "type": "object", "properties": {"file_path": {"type": "string"}, "content": {"type": "string"}},
        "required": ["file_path", "content"]}}
    # an object without properties is a 400 at Gemini: the declaration goes without parameters
    assert declarations[1] == {"name": short_tool_name(LONG_NAME)} and len(declarations[1]["name"]) <= MAX_TOOL_NAME
    assert len(declarations) == 2
    assert any("web_search" in note for note in notes) and any("Later" in note for note in notes)


@pytest.mark.parametrize("choice, expected", [
    ({"type": "auto"}, {"mode": "AUTO"}),
    ({"type": "any"}, {"mode": "ANY"}),
    ({"type": "none"}, {"mode": "NONE"}),
    ({"type": "tool", "name": "Write"}, {"mode": "ANY", "allowedFunctionNames": ["Write"]}),
])
def test_tool_choice(choice, expected):
    body, _ = convert(tools=[WRITE_TOOL], tool_choice=choice)
    assert body["toolConfig"] == {"functionCallingConfig": expected}


def test_disable_parallel_tool_use_is_noted_and_no_tools_means_no_tool_config():
    _, notes = convert(tools=[WRITE_TOOL], tool_choice={"type": "auto", "disable_parallel_tool_use": True})
    assert notes and "parallel" in notes[0]
    body, _ = convert(tool_choice={"type": "auto"})
    assert "tools" not in body and "toolConfig" not in body


# ---------------------------------------------------------------- schema cleaning


@pytest.mark.parametrize("schema, expected", [
    ({"type": "string", "format": "uri", "default": "x", "examples": ["y"]}, {"type": "string"}),
    ({"type": "string", "format": "date-time"}, {"type": "string", "format": "date-time"}),
    ({"type": "integer", "format": "int64", "exclusiveMinimum": 0, "minimum": 1},
     {"type": "integer", "minimum": 1, "format": "int64"}),
    ({"type": ["string", "null"], "description": "d"}, {"type": "string", "description": "d", "nullable": True}),
    ({"type": ["string", "integer"]}, {"anyOf": [{"type": "string"}, {"type": "integer"}]}),
    ({"const": "fixed"}, {"type": "string", "enum": ["fixed"]}),
    ({"const": 3}, {"type": "integer", "description": "One of: 3"}),
    ({"enum": ["a", None]}, {"type": "string", "enum": ["a"], "nullable": True}),
    ({"type": "integer", "enum": [1, 2], "description": "Level."},
     {"type": "integer", "description": "Level. One of: 1, 2"}),
    ({"anyOf": [{"type": "string"}, {"type": "null"}], "description": "maybe"},
     {"type": "string", "description": "maybe", "nullable": True}),
    ({"oneOf": [{"type": "string"}, {"type": "number"}]}, {"anyOf": [{"type": "string"}, {"type": "number"}]}),
    ({"type": "array"}, {"type": "array", "items": {"type": "string"}}),
    ({"type": "array", "items": [{"type": "string"}, {"type": "integer"}]},
     {"type": "array", "items": {"anyOf": [{"type": "string"}, {"type": "integer"}]}}),
    ({"type": "object", "additionalProperties": {"type": "string"}, "propertyNames": {"pattern": "^x"}},
     {"type": "object"}),
    ({"description": "anything"}, {"type": "string", "description": "anything"}),
    ({"type": "object", "patternProperties": {"^x": {"type": "string"}}, "properties": {"a": {"type": "boolean"}},
      "required": ["a", "ghost"]},
     {"type": "object", "properties": {"a": {"type": "boolean"}}, "required": ["a"]}),
    ({"allOf": [{"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]},
                {"properties": {"b": {"type": "number"}}, "required": ["b"]}]},
     {"type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "number"}}, "required": ["a", "b"]}),
])
def test_schema_cleaning_of_one_property(schema, expected):
    cleaned = clean_schema({"type": "object", "properties": {"p": schema}})
    assert cleaned["properties"]["p"] == expected
    assert not schema_problems(cleaned, "parameters")


def test_schema_cleaning_is_recursive_and_inlines_simple_refs():
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object", "additionalProperties": False,
        "$defs": {"Todo": {"type": "object", "additionalProperties": False, "required": ["content", "status"],
                           "properties": {"content": {"type": "string", "minLength": 1},
                                          "status": {"enum": ["pending", "done"]},
                                          "tags": {"type": "array", "items": {"type": "string", "format": "uri"}}}},
                  "Node": {"type": "object", "properties": {"children": {"type": "array",
                                                                         "items": {"$ref": "#/$defs/Node"}}}}},
        "properties": {"todos": {"type": "array", "items": {"$ref": "#/$defs/Todo"}},
                       "tree": {"$ref": "#/$defs/Node", "description": "A tree."}},
        "required": ["todos"],
    }
    cleaned = clean_schema(schema)
    assert cleaned["properties"]["todos"]["items"] == {
        "type": "object", "properties": {"content": {"type": "string", "minLength": 1},
                                         "status": {"type": "string", "enum": ["pending", "done"]},
                                         "tags": {"type": "array", "items": {"type": "string"}}},
        "required": ["content", "status"]}
    tree = cleaned["properties"]["tree"]
    assert tree["description"] == "A tree."
    # the recursion is cut one level down with an object stand-in
    assert tree["properties"]["children"]["items"] == {"type": "object", "description": "(see #/$defs/Node)"}
    assert not schema_problems(cleaned, "parameters")
    assert '"$' not in json.dumps(cleaned)  # no `$…` keyword left


_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.text(max_size=4))
_KEYWORDS = st.sampled_from(["type", "format", "enum", "const", "default", "examples", "$schema", "$id",
                             "additionalProperties", "exclusiveMinimum", "propertyNames", "patternProperties",
                             "minimum", "title", "description", "required", "$ref", "nullable", "unknownThing"])
_TYPE_VALUES = st.one_of(st.sampled_from(["string", "integer", "number", "boolean", "array", "object", "null"]),
                         st.lists(st.sampled_from(["string", "integer", "null", "object"]), max_size=3))


def _schemas() -> st.SearchStrategy:
    leaf = st.fixed_dictionaries({}, optional={"type": _TYPE_VALUES, "format": st.sampled_from(["uri", "date-time",
                                                                                                "enum", "int32"]),
                                               "enum": st.lists(_SCALARS, max_size=3), "const": _SCALARS,
                                               "default": _SCALARS, "$ref": st.sampled_from(["#/$defs/A", "#/x"]),
                                               "required": st.lists(st.text(max_size=2), max_size=2)})
    return st.recursive(leaf, lambda inner: st.one_of(
        st.fixed_dictionaries({"type": st.just("object")},
                              optional={"properties": st.dictionaries(st.text(max_size=3), inner, max_size=3),
                                        "additionalProperties": st.one_of(st.booleans(), inner),
                                        "required": st.lists(st.text(max_size=3), max_size=3)}),
        st.fixed_dictionaries({"type": st.just("array")}, optional={"items": inner}),
        st.fixed_dictionaries({"anyOf": st.lists(inner, max_size=3)}),
        st.fixed_dictionaries({"allOf": st.lists(inner, max_size=2)}),
        st.dictionaries(_KEYWORDS, _SCALARS, max_size=3),
    ), max_leaves=12)


@settings(max_examples=300, deadline=None)
@given(properties=st.dictionaries(st.text(max_size=3), _schemas(), max_size=4), defs=_schemas())
def test_any_schema_cleans_to_one_gemini_accepts(properties, defs):
    cleaned = clean_schema({"type": "object", "properties": properties, "$defs": {"A": defs}})
    assert cleaned["type"] == "object"
    assert not schema_problems(cleaned, "parameters"), cleaned


# ---------------------------------------------------------------- response


USAGE = {"promptTokenCount": 1200, "candidatesTokenCount": 40, "thoughtsTokenCount": 12,
         "cachedContentTokenCount": 1000, "totalTokenCount": 1252}


def response(parts: list[dict], finish: str | None = "STOP", usage: dict | None = None, **extra) -> dict:
    candidate: dict = {"content": {"role": "model", "parts": parts}, "index": 0}
    if finish:
        candidate["finishReason"] = finish
    return {"candidates": [candidate], "usageMetadata": usage or USAGE, "modelVersion": "gemini-2.5-pro", **extra}


def test_text_answer_with_usage():
    message = to_message(response([{"text": "Hello "}, {"text": "world"}]), CTX)
    assert message["content"] == [{"type": "text", "text": "Hello world"}]
    assert message["model"] == "claude-sonnet-4-5" and message["id"].startswith("msg_")
    assert message["stop_reason"] == "end_turn" and message["stop_sequence"] is None
    assert message["usage"] == {"input_tokens": 200, "output_tokens": 52, "cache_creation_input_tokens": 0,
                                "cache_read_input_tokens": 1000}


def test_thoughts_and_signed_calls():
    ctx = ResponseContext("claude-x", tool_names={short_tool_name(LONG_NAME): LONG_NAME})
    message = to_message(response([
        {"text": "Plan: ", "thought": True}, {"text": "read both.", "thought": True},
        {"functionCall": {"name": "Read", "args": {"path": "a"}}, "thoughtSignature": "U0lHMQ=="},
        {"functionCall": {"id": "call.7", "name": short_tool_name(LONG_NAME), "args": {}}},
        {"functionCall": {"name": "Read", "args": {"path": "b"}}, "thoughtSignature": "U0lHMg=="},
    ]), ctx)
    kinds = [block["type"] for block in message["content"]]
    assert kinds == ["thinking", "tool_use", "tool_use", "thinking", "tool_use"]
    first, second = message["content"][0], message["content"][3]
    assert first == {"type": "thinking", "thinking": "Plan: read both.", "signature": "gemini.U0lHMQ=="}
    assert second == {"type": "thinking", "thinking": "", "signature": "gemini.U0lHMg=="}
    calls = [block for block in message["content"] if block["type"] == "tool_use"]
    assert calls[0]["id"].startswith("toolu_") and calls[0]["input"] == {"path": "a"}
    assert calls[1]["id"] == "call_7" and calls[1]["name"] == LONG_NAME
    assert message["stop_reason"] == "tool_use"


def test_thoughts_without_a_call_get_the_gateways_own_signature():
    message = to_message(response([{"text": "hmm", "thought": True}, {"text": "Answer.", "thoughtSignature": "x"}]),
                         CTX)
    assert message["content"][0]["signature"].startswith("ccany.")
    assert message["content"][1] == {"type": "text", "text": "Answer."}


@pytest.mark.parametrize("finish, stop_reason", [
    ("STOP", "end_turn"), ("MAX_TOKENS", "max_tokens"), ("SAFETY", "refusal"), ("RECITATION", "refusal"),
    ("PROHIBITED_CONTENT", "refusal"), ("BLOCKLIST", "refusal"), ("SPII", "refusal"), ("OTHER", "end_turn"),
    ("FINISH_REASON_UNSPECIFIED", "end_turn"), (None, "end_turn"),
])
def test_finish_reasons(finish, stop_reason):
    assert to_message(response([{"text": "x"}], finish), CTX)["stop_reason"] == stop_reason


def test_a_blocked_prompt_is_a_refusal():
    message = to_message({"promptFeedback": {"blockReason": "SAFETY"}, "usageMetadata": {"promptTokenCount": 9}}, CTX)
    assert message["content"] == [] and message["stop_reason"] == "refusal"
    assert message["usage"]["input_tokens"] == 9


@pytest.mark.parametrize("body", [{}, {"candidates": []}, [], {"candidates": [None]}])
def test_non_responses_are_502s(body):
    with pytest.raises(GatewayError) as caught:
        to_message(body, CTX)
    assert caught.value.status == 500 and caught.value.error_type == "api_error"


def test_malformed_function_call_is_an_error():
    with pytest.raises(GatewayError) as caught:
        to_message(response([], "MALFORMED_FUNCTION_CALL", finishMessage="Malformed function call: print(x"), CTX)
    assert "MALFORMED_FUNCTION_CALL" in caught.value.message and caught.value.status == 500


@pytest.mark.parametrize("raw, status, text", [
    (b'{"error": {"code": 429, "message": "Quota exceeded", "status": "RESOURCE_EXHAUSTED"}}', 429, "Quota exceeded"),
    (b'[{"error": {"code": 400, "message": "API key not valid", "status": "INVALID_ARGUMENT"}}]', 400,
     "API key not valid"),
])
def test_upstream_errors_in_both_gemini_shapes(raw, status, text):
    error = upstream_error(status, raw, "gemini")
    assert error.status == status and error.message == f"gemini upstream: {text}"


# ---------------------------------------------------------------- stream


def chunk(parts: list[dict], finish: str | None = None, usage: dict | None = None) -> dict:
    return response(parts, finish, usage or {"promptTokenCount": 1200, "totalTokenCount": 1200})


def sse(*chunks: dict) -> bytes:
    return b"".join(b"data: " + json.dumps(c, ensure_ascii=False).encode() + b"\r\n\r\n" for c in chunks)


def feed(pieces: list[bytes]) -> tuple[bytes, GeminiStreamTranslator]:
    translator = GeminiStreamTranslator(CTX, upstream="gemini")
    return feed_chunks(translator, pieces), translator


def run(stream: bytes):
    out, translator = feed([stream])
    report = check_stream(out)
    assert report.ok, report.violations
    return report, translator


def deltas(report, kind: str) -> list[dict]:
    return [e["delta"] for e in report.events if e["type"] == "content_block_delta" and e["delta"]["type"] == kind]


TEXT_STREAM = sse(chunk([{"text": "Hello"}]), chunk([{"text": ", wor"}]),
                  chunk([{"text": "ld ✓"}], "STOP", USAGE))
THINKING_STREAM = sse(chunk([{"text": "**Plan** ", "thought": True}]), chunk([{"text": "go.", "thought": True}]),
                      chunk([{"text": "Done."}], "STOP", USAGE))
TOOL_STREAM = sse(chunk([{"text": "Reading.", "thought": True}]),
                  chunk([{"functionCall": {"name": "Read", "args": {"path": "ü.py"}}, "thoughtSignature": "U0lH"},
                         {"functionCall": {"name": "Grep", "args": {"pattern": "x", "n": [1, 2]}}}]),
                  chunk([], "STOP", USAGE))


def test_text_stream():
    report, translator = run(TEXT_STREAM)
    assert report.complete
    assert "".join(d["text"] for d in deltas(report, "text_delta")) == "Hello, world ✓"
    assert report.events[-2]["delta"] == {"stop_reason": "end_turn", "stop_sequence": None}
    assert report.events[-2]["usage"]["output_tokens"] == 52
    assert translator.finished and translator.stop_reason == "end_turn"
    assert translator.usage["cache_read_input_tokens"] == 1000 and translator.error is None


def test_thoughts_stream_as_thinking_with_the_gateways_signature():
    report, _ = run(THINKING_STREAM)
    message = report.message()
    assert [b["type"] for b in message["content"]] == ["thinking", "text"]
    assert message["content"][0]["thinking"] == "**Plan** go."
    assert message["content"][0]["signature"].startswith("ccany.")


def test_calls_stream_their_arguments_as_input_json_delta_behind_a_signed_thinking_block():
    report, translator = run(TOOL_STREAM)
    message = report.message()
    assert [b["type"] for b in message["content"]] == ["thinking", "tool_use", "tool_use"]
    assert message["content"][0]["signature"] == "gemini.U0lH"
    assert message["content"][1]["input"] == {"path": "ü.py"}
    assert message["content"][2]["input"] == {"pattern": "x", "n": [1, 2]}
    starts = [e["content_block"] for e in report.events if e["type"] == "content_block_start"]
    assert all(block.get("input", {}) == {} for block in starts)
    assert translator.stop_reason == "tool_use" and message["stop_reason"] == "tool_use"


def test_a_signed_call_without_thoughts_gets_an_empty_thinking_block():
    report, _ = run(sse(chunk([{"text": "I will write."}]),
                        chunk([{"functionCall": {"name": "Write", "args": {}}, "thoughtSignature": "QQ=="}], "STOP")))
    content = report.message()["content"]
    assert [b["type"] for b in content] == ["text", "thinking", "tool_use"]
    assert content[1] == {"type": "thinking", "thinking": "", "signature": "gemini.QQ=="}
    assert deltas(report, "input_json_delta") == [{"type": "input_json_delta", "partial_json": "{}"}]


def test_stream_and_answer_agree():
    body = response([{"text": "Reading.", "thought": True},
                     {"functionCall": {"name": "Read", "args": {"path": "ü.py"}}, "thoughtSignature": "U0lH"},
                     {"functionCall": {"name": "Grep", "args": {"pattern": "x", "n": [1, 2]}}}])
    streamed, answered = run(TOOL_STREAM)[0].message(), to_message(body, CTX)
    for message in (streamed, answered):
        for block in message["content"]:
            block.pop("id", None)
    assert streamed["content"] == answered["content"] and streamed["usage"] == answered["usage"]


@pytest.mark.parametrize("error, status_type", [
    ({"code": 429, "message": "Resource exhausted", "status": "RESOURCE_EXHAUSTED"}, "rate_limit_error"),
    ({"message": "Resource exhausted", "status": "RESOURCE_EXHAUSTED"}, "rate_limit_error"),
    ({"code": 503, "message": "The model is overloaded.", "status": "UNAVAILABLE"}, "overloaded_error"),
    ({"code": 500, "message": "Internal error with key AIzaSyA1234567890abcdefghijklmnop", "status": "INTERNAL"},
     "api_error"),
])
def test_error_mid_stream(error, status_type):
    report, translator = run(sse(chunk([{"text": "partial"}])) + b"data: " + json.dumps({"error": error}).encode()
                             + b"\r\n\r\n")
    assert not report.complete and report.error["type"] == status_type
    assert translator.error_type == status_type and "AIzaSyA1234567890" not in translator.error
    assert translator.error.startswith("gemini upstream: ")


@pytest.mark.parametrize("stream", [
    sse(chunk([{"text": "no end"}])),
    sse(chunk([{"text": "half"}])) + b'data: {"candidates": [{"content": {"pa',
    b"",
])
def test_a_stream_without_finish_reason_is_an_error(stream):
    report, translator = run(stream)
    assert not report.complete and report.error is not None
    assert "ended the stream" in translator.error or "malformed" in translator.error


def test_malformed_data_and_malformed_calls_are_errors():
    report, translator = run(b"data: {not json\r\n\r\n")
    assert report.error and "malformed" in translator.error
    report, translator = run(sse(chunk([], "MALFORMED_FUNCTION_CALL")))
    assert report.error and "MALFORMED_FUNCTION_CALL" in translator.error


def test_a_blocked_prompt_streams_a_refusal():
    report, _ = run(sse({"promptFeedback": {"blockReason": "PROHIBITED_CONTENT"},
                         "usageMetadata": {"promptTokenCount": 9}}))
    assert report.complete and report.message()["stop_reason"] == "refusal"


def test_nothing_after_the_end():
    translator = GeminiStreamTranslator(CTX)
    assert translator(TEXT_STREAM)
    assert translator(sse(chunk([{"text": "late"}]))) == [] and translator(b"") == []


# ---------------------------------------------------------------- split anywhere, same events

GOOD_STREAMS = [TEXT_STREAM, THINKING_STREAM, TOOL_STREAM,
                sse(chunk([{"text": "Plan ", "thought": True}]), chunk([{"text": "Doing ✓"}]),
                    chunk([{"functionCall": {"name": "Write", "args": {"file_path": "/tmp/ü", "content": "a\nb"}},
                            "thoughtSignature": "c2ln"}], "STOP", USAGE))]


def _events(out: bytes) -> list[dict]:
    return comparable_events(out, generated_block_ids=True)


@functools.cache
def whole(which: int) -> list[dict]:
    return _events(feed([GOOD_STREAMS[which]])[0])


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_splitting_anywhere_gives_the_same_events(data):
    which, pieces = draw_split(data, GOOD_STREAMS)
    out, _ = feed(pieces)
    assert _events(out) == whole(which)


@pytest.mark.parametrize("which", range(len(GOOD_STREAMS)))
def test_byte_by_byte_worst_case(which):
    out, _ = feed(byte_by_byte(GOOD_STREAMS[which]))
    assert _events(out) == whole(which)


def test_a_thought_whose_text_is_not_a_string_is_an_empty_thought():
    report, translator = run(sse(chunk([{"text": ["not", "text"], "thought": True}, {"text": "answer"}], "STOP")))
    assert report.complete and deltas(report, "text_delta") == [{"type": "text_delta", "text": "answer"}]
    assert not deltas(report, "thinking_delta")
    assert translator.message()["content"][-1] == {"type": "text", "text": "answer"}
