"""OpenAI Chat Completions response → Anthropic message, and upstream errors → Anthropic errors."""

from __future__ import annotations

import json
import re

import pytest

from ccany_addon.anthropic_api.errors import GatewayError
from ccany_addon.anthropic_api.schema import MessagesRequest, parse
from ccany_addon.converters.common import ResponseContext, UpstreamTarget
from ccany_addon.converters.openai_chat import to_chat_request, to_message
from ccany_addon.converters.shared_answer import upstream_error
from ccany_addon.upstreams.models import capabilities

CTX = ResponseContext(client_model="claude-sonnet-4-5", stop_sequences=("###", "END"))


def completion(message: dict, finish_reason: str | None = "stop", usage: dict | None = None, **choice) -> dict:
    body = {"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "gpt-4o",
            "choices": [{"index": 0, "message": {"role": "assistant", **message}, "finish_reason": finish_reason,
                         **choice}]}
    if usage is not None:
        body["usage"] = usage
    return body


def call(call_id: str | None, name: str, arguments: str) -> dict:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def test_plain_text_message_shape():
    message = to_message(completion({"content": "Hello!"}, usage={"prompt_tokens": 10, "completion_tokens": 3}),
                         CTX)
    assert re.fullmatch(r"msg_[A-Za-z0-9]+", message["id"])
    assert message["type"] == "message" and message["role"] == "assistant"
    assert message["model"] == "claude-sonnet-4-5"
    assert message["content"] == [{"type": "text", "text": "Hello!"}]
    assert message["stop_reason"] == "end_turn" and message["stop_sequence"] is None
    assert message["usage"] == {"input_tokens": 10, "output_tokens": 3, "cache_creation_input_tokens": 0,
                                "cache_read_input_tokens": 0}


def test_content_order_thinking_text_tool_use():
    message = to_message(completion({
        "tool_calls": [call("call_a", "Read", '{"path": "a.py"}'), call("call_b", "Bash", '{"command": "ls"}')],
        "content": "I will read it.",
        "reasoning_content": "The user wants a.py.",
    }, "tool_calls"), CTX)
    assert [b["type"] for b in message["content"]] == ["thinking", "text", "tool_use", "tool_use"]
    thinking = message["content"][0]
    assert thinking["thinking"] == "The user wants a.py."
    assert isinstance(thinking["signature"], str) and thinking["signature"]
    assert message["content"][1]["text"] == "I will read it."
    assert message["content"][2] == {"type": "tool_use", "id": "call_a", "name": "Read", "input": {"path": "a.py"}}
    assert message["content"][3] == {"type": "tool_use", "id": "call_b", "name": "Bash", "input": {"command": "ls"}}
    assert message["stop_reason"] == "tool_use"


def test_reasoning_field_also_becomes_thinking():
    message = to_message(completion({"content": "4", "reasoning": "2+2"}), CTX)
    assert message["content"][0]["type"] == "thinking" and message["content"][0]["thinking"] == "2+2"
    assert message["content"][0]["signature"]


def test_thinking_signature_is_accepted_back_in_history():
    message = to_message(completion({"content": "ok", "reasoning_content": "think",
                                     "tool_calls": [call("call_1", "Bash", '{"command": "ls"}')]}, "tool_calls"), CTX)
    body = {"model": "claude-sonnet-4-5", "max_tokens": 100,
            "messages": [{"role": "user", "content": "go"}, {"role": "assistant", "content": message["content"]},
                         {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "call_1",
                                                       "content": "a.py"}]}]}
    request = parse(MessagesRequest, json.dumps(body).encode())
    chat, _ = to_chat_request(request, UpstreamTarget("deepseek-chat", capabilities("deepseek-chat")))
    assert chat["messages"][1]["reasoning_content"] == "think"
    assert chat["messages"][1]["tool_calls"][0]["id"] == "call_1"
    assert chat["messages"][2] == {"role": "tool", "tool_call_id": "call_1", "content": "a.py"}


def test_content_as_parts_list():
    message = to_message(completion({"content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}),
                         CTX)
    assert message["content"] == [{"type": "text", "text": "ab"}]


def test_empty_content_gives_no_blocks():
    message = to_message(completion({"content": ""}), CTX)
    assert message["content"] == []


@pytest.mark.parametrize(
    ("upstream_id", "expected"),
    [
        ("call_abc-123_XYZ", "call_abc-123_XYZ"),
        ("call:abc.123/xyz", "call_abc_123_xyz"),
        ("functions.Read:0", "functions_Read_0"),
        ("call abc", "call_abc"),
    ],
)
def test_tool_ids_sanitised(upstream_id, expected):
    message = to_message(completion({"tool_calls": [call(upstream_id, "Read", "{}")]}, "tool_calls"), CTX)
    assert message["content"][0]["id"] == expected


@pytest.mark.parametrize("upstream_id", [None, ""])
def test_missing_tool_id_gets_a_valid_one(upstream_id):
    message = to_message(completion({"tool_calls": [call(upstream_id, "Read", "{}"),
                                                    call(upstream_id, "Read", "{}")]}, "tool_calls"), CTX)
    ids = [b["id"] for b in message["content"]]
    assert all(re.fullmatch(r"[A-Za-z0-9_-]+", i) for i in ids)
    assert ids[0] != ids[1]


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        ('{"path": "a.py", "limit": 10}', {"path": "a.py", "limit": 10}),
        ("", {}),
        ("   ", {}),
        ("{}", {}),
        ('{"a": "b', {"a": "b"}),
        ('{"a": [1, 2', {"a": [1, 2]}),
        ('{"a": {"b": "c\\"d', {"a": {"b": 'c"d'}}),
        ('{"a": "x}]"', {"a": "x}]"}),
    ],
)
def test_tool_arguments_parsed_and_truncation_repaired(arguments, expected):
    message = to_message(completion({"tool_calls": [call("c1", "Read", arguments)]}, "tool_calls"), CTX)
    assert message["content"][0]["input"] == expected


def test_tool_arguments_as_an_object():
    """Some OpenAI-compatible servers send `arguments` as a JSON object instead of a string."""
    message = to_message(completion({"tool_calls": [{"id": "c1", "type": "function",
                                                     "function": {"name": "Read", "arguments": {"path": "x"}}}]},
                                    "tool_calls"), CTX)
    assert message["content"][0]["input"] == {"path": "x"}


@pytest.mark.parametrize("arguments", ["not json at all", '{"a": 1}}', "{'a': 1}", '{"a": tru'])
def test_garbage_tool_arguments_are_an_error(arguments):
    with pytest.raises(GatewayError) as caught:
        to_message(completion({"tool_calls": [call("c1", "Read", arguments)]}, "tool_calls"), CTX)
    assert caught.value.status >= 500
    assert "Read" in caught.value.message


def test_legacy_function_call():
    message = to_message(completion({"content": None, "function_call": {"name": "Read", "arguments": '{"p": 1}'}},
                                    "function_call"), CTX)
    assert message["content"][0]["type"] == "tool_use"
    assert message["content"][0]["name"] == "Read" and message["content"][0]["input"] == {"p": 1}
    assert message["stop_reason"] == "tool_use"


@pytest.mark.parametrize(
    ("finish_reason", "choice_extra", "expected_reason", "expected_sequence"),
    [
        ("stop", {}, "end_turn", None),
        ("stop", {"stop_reason": "###"}, "stop_sequence", "###"),
        ("stop", {"matched_stop": "END"}, "stop_sequence", "END"),
        ("stop", {"stop_reason": "not-requested"}, "end_turn", None),
        ("stop", {"stop_reason": 128001}, "end_turn", None),
        ("length", {}, "max_tokens", None),
        ("tool_calls", {}, "tool_use", None),
        ("function_call", {}, "tool_use", None),
        ("content_filter", {}, "refusal", None),
        (None, {}, "end_turn", None),
    ],
)
def test_finish_reasons(finish_reason, choice_extra, expected_reason, expected_sequence):
    message = to_message(completion({"content": "text"}, finish_reason, **choice_extra), CTX)
    assert message["stop_reason"] == expected_reason
    assert message["stop_sequence"] == expected_sequence


def test_stop_with_tool_calls_is_tool_use():
    message = to_message(completion({"tool_calls": [call("c1", "Read", "{}")]}, "stop"), CTX)
    assert message["stop_reason"] == "tool_use"


def test_length_with_tool_calls_is_max_tokens():
    message = to_message(completion({"tool_calls": [call("c1", "Read", '{"a": "b')]}, "length"), CTX)
    assert message["stop_reason"] == "max_tokens"
    assert message["content"][0]["input"] == {"a": "b"}


@pytest.mark.parametrize(
    ("usage", "expected"),
    [
        ({"prompt_tokens": 1200, "completion_tokens": 42, "total_tokens": 1242,
          "prompt_tokens_details": {"cached_tokens": 1000}},
         {"input_tokens": 200, "output_tokens": 42, "cache_creation_input_tokens": 0,
          "cache_read_input_tokens": 1000}),
        ({"prompt_tokens": 900, "completion_tokens": 7, "prompt_cache_hit_tokens": 640,
          "prompt_cache_miss_tokens": 260},
         {"input_tokens": 260, "output_tokens": 7, "cache_creation_input_tokens": 0,
          "cache_read_input_tokens": 640}),
        ({"prompt_tokens": 50, "completion_tokens": 5, "prompt_tokens_details": None},
         {"input_tokens": 50, "output_tokens": 5, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}),
        ({"prompt_tokens": 50, "completion_tokens": 5, "prompt_tokens_details": {"cached_tokens": 0}},
         {"input_tokens": 50, "output_tokens": 5, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}),
        (None, {"input_tokens": 0, "output_tokens": 0, "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0}),
    ],
    ids=["openai-cached", "deepseek-cache-hit", "details-null", "no-cache", "no-usage"],
)
def test_usage(usage, expected):
    message = to_message(completion({"content": "x"}, usage=usage), CTX)
    assert message["usage"] == expected
    if usage:
        total_input = sum(message["usage"][k] for k in ("input_tokens", "cache_read_input_tokens",
                                                         "cache_creation_input_tokens"))
        assert total_input == usage["prompt_tokens"]  # the context meter never double-counts


@pytest.mark.parametrize("body", [{}, {"choices": []}, {"choices": None}, {"error": {"message": "x"}}, []])
def test_no_choices_is_an_error(body):
    with pytest.raises(GatewayError) as caught:
        to_message(body, CTX)
    assert caught.value.status >= 500


# ---------------------------------------------------------------- upstream errors


@pytest.mark.parametrize(
    ("status", "client_status", "error_type"),
    [
        (400, 400, "invalid_request_error"),
        (401, 401, "authentication_error"),
        (402, 402, "billing_error"),
        (403, 403, "permission_error"),
        (404, 404, "not_found_error"),
        (413, 413, "request_too_large"),
        (422, 400, "invalid_request_error"),
        (429, 429, "rate_limit_error"),
        (500, 500, "api_error"),
        (503, 529, "overloaded_error"),
        (504, 504, "timeout_error"),
        (529, 529, "overloaded_error"),
    ],
)
def test_upstream_error_status_and_type(status, client_status, error_type):
    raw = json.dumps({"error": {"message": "The model `gpt-9` does not exist", "type": "invalid_request_error",
                                "code": "model_not_found"}}).encode()
    error = upstream_error(status, raw, "openai")
    assert error.status == client_status
    assert error.error_type == error_type
    assert "The model `gpt-9` does not exist" in error.message
    assert "openai" in error.message
    body = json.loads(error.body())
    assert body == {"type": "error", "error": {"type": error_type, "message": error.message}}


@pytest.mark.parametrize(
    "raw",
    [
        b'{"error": {"message": "Incorrect API key provided: sk-abcdef123456789. Check it."}}',
        b'{"error": "Incorrect API key provided: sk-abcdef123456789. Check it."}',
        b'{"detail": "Incorrect API key provided: sk-abcdef123456789. Check it."}',
        b"Incorrect API key provided: sk-abcdef123456789. Check it.",
    ],
    ids=["openai-shape", "error-string", "detail", "plain-text"],
)
def test_upstream_error_masks_secrets(raw):
    error = upstream_error(401, raw, "openai")
    assert error.status == 401 and error.error_type == "authentication_error"
    assert "sk-abcdef123456789" not in error.message
    assert "abcdef123456789" not in error.message
    assert "Incorrect API key provided" in error.message and "Check it." in error.message


def test_upstream_error_masks_configured_secret():
    error = upstream_error(403, b'{"error": {"message": "key my-weird-key-value is blocked"}}', "azure",
                           secrets=("my-weird-key-value",))
    assert "my-weird-key-value" not in error.message
    assert "blocked" in error.message and error.error_type == "permission_error"


def test_upstream_error_without_body():
    error = upstream_error(500, b"", "openai")
    assert error.status == 500 and error.error_type == "api_error"
    assert "500" in error.message and "openai" in error.message


def test_upstream_error_reads_fastapi_validation_details():
    raw = b'{"detail": [{"loc": ["body", "max_tokens"], "msg": "must be at most 8192", "type": "value_error"}]}'
    error = upstream_error(422, raw, "vllm")
    assert error.status == 400
    assert error.message == "vllm upstream: body.max_tokens: must be at most 8192"


@pytest.mark.parametrize(("usage", "expected"), [
    ({"prompt_tokens": "1200", "completion_tokens": "42", "prompt_tokens_details": {"cached_tokens": "1000"}},
     (200, 42, 1000)),
    ({"prompt_tokens": 2**64, "completion_tokens": -5, "prompt_tokens_details": "many"}, (2**53 - 1, 0, 0)),
    ({"prompt_tokens": 12.9, "completion_tokens": float("nan"), "prompt_tokens_details": [1]}, (12, 0, 0)),
    ({"prompt_tokens": None, "completion_tokens": [3], "prompt_tokens_details": {"cached_tokens": {"n": 1}}},
     (0, 0, 0)),
    ("lots", (0, 0, 0)),
], ids=["strings", "huge-negative", "floats", "wrong-types", "usage-a-string"])
def test_usage_counts_of_any_type_become_integers(usage, expected):
    """An upstream's usage is untrusted input: a client reading `usage` always gets integers."""
    usage_out = to_message(completion({"content": "x"}, usage=usage), CTX)["usage"]
    assert (usage_out["input_tokens"], usage_out["output_tokens"], usage_out["cache_read_input_tokens"]) == expected
    assert all(type(value) is int for value in usage_out.values())
