"""Anthropic Messages ⇄ OpenAI Responses API: request body, response object and stream events."""

from __future__ import annotations

import functools
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ccany_addon.anthropic_api.conformance import StreamReport, check_stream
from ccany_addon.anthropic_api.errors import GatewayError
from ccany_addon.anthropic_api.schema import MessagesRequest, parse
from ccany_addon.converters.common import MAX_TOOL_NAME, ResponseContext, UpstreamTarget, short_tool_name
from ccany_addon.converters.openai_responses import to_message, to_responses_request
from ccany_addon.converters.openai_responses_stream import ResponsesStreamTranslator
from ccany_addon.upstreams.models import capabilities
from tests import fake_responses
from tests.unit.streams import byte_by_byte, comparable_events, draw_split, feed_chunks

PNG_B64 = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg=="
PDF_B64 = "JVBERi0xLjQKJcfsj6IKMSAwIG9iago8PC9UeXBlIC9DYXRhbG9nPj4KZW5kb2JqCg=="
LONG_NAME = "mcp__very_long_server_name_for_testing__and_an_even_longer_tool_name_that_goes_on"
CTX = ResponseContext(client_model="claude-sonnet-4-5", tool_names={short_tool_name(LONG_NAME): LONG_NAME},
                      estimated_input_tokens=321)


# ---------------------------------------------------------------- request

def request(**fields) -> MessagesRequest:
    body = {"model": "claude-sonnet-4-5", "max_tokens": 1024, "messages": [{"role": "user", "content": "hi"}]}
    body.update(fields)
    return parse(MessagesRequest, json.dumps(body).encode())


def convert(model: str = "gpt-4.1", **fields) -> tuple[dict, list[str]]:
    return to_responses_request(request(**fields), UpstreamTarget(model, capabilities(model)))


def user_text(text: str) -> dict:
    return {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}


def tool_use(call_id: str, name: str, arguments: dict) -> dict:
    return {"type": "tool_use", "id": call_id, "name": name, "input": arguments}


def tool_result(call_id: str, content, **extra) -> dict:
    return {"type": "tool_result", "tool_use_id": call_id, "content": content, **extra}


def test_basic_body():
    body, notes = convert(system="Be brief.", stream=True, temperature=0.2, top_p=0.9)
    assert body == {"model": "gpt-4.1", "instructions": "Be brief.", "input": [user_text("hi")],
                    "max_output_tokens": 1024, "temperature": 0.2, "top_p": 0.9, "stream": True, "store": False}
    assert notes == []


def test_system_blocks_join_and_cache_control_is_dropped():
    system = [{"type": "text", "text": "A", "cache_control": {"type": "ephemeral"}}, {"type": "text", "text": "B"}]
    body, _ = convert(system=system)
    assert body["instructions"] == "A\n\nB"
    assert "cache_control" not in json.dumps(body)


@pytest.mark.parametrize("fold", [False, True])
def test_late_system_messages(fold):
    messages = [{"role": "user", "content": "hi"}, {"role": "system", "content": "Reminder."},
                {"role": "user", "content": "again"}]
    body, _ = to_responses_request(request(system="S", messages=messages),
                                   UpstreamTarget("gpt-4.1", fold_system_messages=fold))
    if fold:
        assert body["instructions"] == "S\n\nReminder."
        assert body["input"] == [user_text("hi"), user_text("again")]
    else:
        assert body["instructions"] == "S"
        assert body["input"][1] == {"type": "message", "role": "system",
                                    "content": [{"type": "input_text", "text": "Reminder."}]}


def test_tool_turn_becomes_function_call_and_output_items():
    messages = [
        {"role": "user", "content": "Read two files"},
        {"role": "assistant", "content": [
            {"type": "thinking", "thinking": "I will read them.", "signature": "sig"},
            {"type": "text", "text": "Reading."},
            tool_use("toolu_1", "Read", {"file_path": "/a"}),
            tool_use("toolu_2", "Read", {"file_path": "/b"}),
        ]},
        {"role": "user", "content": [
            tool_result("toolu_1", "alpha"),
            tool_result("toolu_2", [{"type": "text", "text": "no such file"}], is_error=True),
            {"type": "text", "text": "Now summarise."},
        ]},
    ]
    body, _ = convert(messages=messages)
    items = body["input"]
    assert items[1] == {"type": "message", "role": "assistant",
                        "content": [{"type": "output_text", "text": "Reading."}]}
    assert [(i["type"], i["call_id"], i["name"]) for i in items[2:4]] == [("function_call", "toolu_1", "Read"),
                                                                         ("function_call", "toolu_2", "Read")]
    assert json.loads(items[2]["arguments"]) == {"file_path": "/a"}
    assert items[4:6] == [
        {"type": "function_call_output", "call_id": "toolu_1", "output": "alpha"},
        {"type": "function_call_output", "call_id": "toolu_2", "output": "[tool error] no such file"},
    ]
    assert items[6] == user_text("Now summarise.")
    assert "I will read them." not in json.dumps(body)  # thinking cannot be sent back without stored responses


def test_images_in_tool_results_follow_in_a_user_message():
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG_B64}}
    messages = [{"role": "user", "content": "shot"},
                {"role": "assistant", "content": [tool_use("t1", "Screenshot", {})]},
                {"role": "user", "content": [tool_result("t1", [{"type": "text", "text": "done"}, image])]}]
    body, _ = convert(messages=messages)
    assert body["input"][-2] == {"type": "function_call_output", "call_id": "t1", "output": "done"}
    assert body["input"][-1] == {"type": "message", "role": "user", "content": [
        {"type": "input_image", "image_url": f"data:image/png;base64,{PNG_B64}", "detail": "auto"}]}


@pytest.mark.parametrize(
    ("block", "part"),
    [
        ({"type": "image", "source": {"type": "url", "url": "https://x.test/a.png"}},
         {"type": "input_image", "image_url": "https://x.test/a.png", "detail": "auto"}),
        ({"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": PDF_B64}},
         {"type": "input_file", "filename": "document.pdf", "file_data": f"data:application/pdf;base64,{PDF_B64}"}),
        ({"type": "document", "title": "Notes", "source": {"type": "text", "media_type": "text/plain", "data": "x"}},
         {"type": "input_text", "text": "Notes\nx"}),
    ],
)
def test_user_content_parts(block, part):
    body, _ = convert(messages=[{"role": "user", "content": [block, {"type": "text", "text": "what is it?"}]}])
    assert body["input"] == [{"type": "message", "role": "user",
                              "content": [part, {"type": "input_text", "text": "what is it?"}]}]


def test_files_api_images_are_a_clear_400():
    block = {"type": "image", "source": {"type": "file", "file_id": "file_1"}}
    with pytest.raises(GatewayError) as caught:
        convert(messages=[{"role": "user", "content": [block]}])
    assert caught.value.status == 400


def test_tools_are_flat_functions():
    tools = [{"name": "Read", "description": "Reads a file",
              "input_schema": {"$schema": "http://json-schema.org/draft-07/schema#", "type": "object",
                               "properties": {"file_path": {"type": "string"}}}},
             {"name": LONG_NAME, "input_schema": {"type": "object"}},
             {"name": "web_search", "type": "web_search_20250305"},
             {"name": "Later", "input_schema": {"type": "object"}, "defer_loading": True}]
    body, notes = convert(tools=tools)
    assert body["tools"] == [
        {"type": "function", "name": "Read", "description": "Reads a file", "strict": False,
         "parameters": {"type": "object", "properties": {"file_path": {"type": "string"}}}},
        {"type": "function", "name": short_tool_name(LONG_NAME), "parameters": {"type": "object"}, "strict": False},
    ]
    assert len(body["tools"][1]["name"]) <= MAX_TOOL_NAME
    assert any("web_search" in note for note in notes) and any("Later" in note for note in notes)
    assert "web_search_options" not in body


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ({"type": "auto"}, {"tool_choice": "auto"}),
        ({"type": "any"}, {"tool_choice": "required"}),
        ({"type": "none"}, {"tool_choice": "none"}),
        ({"type": "tool", "name": "Read"}, {"tool_choice": {"type": "function", "name": "Read"}}),
        ({"type": "tool", "name": LONG_NAME},
         {"tool_choice": {"type": "function", "name": short_tool_name(LONG_NAME)}}),
        ({"type": "auto", "disable_parallel_tool_use": True}, {"tool_choice": "auto", "parallel_tool_calls": False}),
    ],
)
def test_tool_choice(choice, expected):
    tools = [{"name": "Read", "input_schema": {"type": "object"}}, {"name": LONG_NAME, "input_schema": {}}]
    body, _ = convert(tools=tools, tool_choice=choice)
    assert {k: body[k] for k in ("tool_choice", "parallel_tool_calls") if k in body} == expected


def test_no_tools_means_no_tool_choice():
    body, _ = convert(tool_choice={"type": "any"})
    assert "tools" not in body and "tool_choice" not in body


@pytest.mark.parametrize(
    ("model", "fields", "reasoning"),
    [
        ("gpt-5-codex", {"thinking": {"type": "enabled", "budget_tokens": 2000}}, {"effort": "low", "summary": "auto"}),
        ("gpt-5-codex", {"thinking": {"type": "enabled", "budget_tokens": 10000}},
         {"effort": "medium", "summary": "auto"}),
        ("o3", {"thinking": {"type": "enabled", "budget_tokens": 32000}}, {"effort": "high", "summary": "auto"}),
        ("gpt-5", {"thinking": {"type": "adaptive"}, "output_config": {"effort": "max"}},
         {"effort": "high", "summary": "auto"}),
        ("gpt-5", {"thinking": {"type": "disabled"}}, None),
        ("gpt-5", {}, None),
        ("gpt-4.1", {"thinking": {"type": "enabled", "budget_tokens": 10000}}, None),
    ],
)
def test_thinking_becomes_reasoning_for_reasoning_models(model, fields, reasoning):
    body, _ = convert(model, **fields)
    assert body.get("reasoning") == reasoning


def test_sampling_is_dropped_for_reasoning_models():
    body, _ = convert("gpt-5-codex", temperature=0.5, top_p=0.5)
    assert "temperature" not in body and "top_p" not in body


@pytest.mark.parametrize(
    ("model", "max_tokens", "limit", "expected", "noted"),
    [
        ("gpt-4.1", 64000, 0, 32768, False),  # the model's own output limit
        ("some-model", 64000, 8192, 8192, False),  # the configured limit
        ("some-model", 1, 0, 16, True),  # Claude Code's quota probe: below the API's minimum
    ],
)
def test_max_output_tokens(model, max_tokens, limit, expected, noted):
    body, notes = to_responses_request(request(max_tokens=max_tokens),
                                       UpstreamTarget(model, capabilities(model), max_tokens_limit=limit))
    assert body["max_output_tokens"] == expected
    assert bool(notes) == noted


def test_user_id_is_kept_short_and_hashed_when_long():
    short, _ = convert(metadata={"user_id": "alice"})
    long, _ = convert(metadata={"user_id": "user_" + "a" * 150})
    assert short["user"] == "alice"
    assert long["user"].startswith("user_") and len(long["user"]) <= 64 and "aaaa" not in long["user"]


def test_stop_sequences_are_noted():
    body, notes = convert(stop_sequences=["###"])
    assert "stop" not in body and notes == ["left out 1 stop sequences: the Responses API has none"]


# ---------------------------------------------------------------- response

USAGE = {"input_tokens": 1500, "input_tokens_details": {"cached_tokens": 1200}, "output_tokens": 57,
         "output_tokens_details": {"reasoning_tokens": 20}, "total_tokens": 1557}


def response(*output: dict, status: str = "completed", **extra) -> dict:
    return {"id": "resp_1", "object": "response", "created_at": 1, "model": "gpt-5-codex", "status": status,
            "output": list(output), "usage": USAGE, **extra}


def message_item(*parts: dict) -> dict:
    return {"id": "msg_1", "type": "message", "role": "assistant", "status": "completed", "content": list(parts)}


def output_text(text: str) -> dict:
    return {"type": "output_text", "text": text, "annotations": []}


def reasoning_item(*summary: str, content: tuple[str, ...] = ()) -> dict:
    return {"id": "rs_1", "type": "reasoning", "summary": [{"type": "summary_text", "text": s} for s in summary],
            **({"content": [{"type": "reasoning_text", "text": c} for c in content]} if content else {})}


def call_item(call_id: str, name: str, arguments: str) -> dict:
    return {"id": f"fc_{call_id}", "type": "function_call", "call_id": call_id, "name": name,
            "arguments": arguments, "status": "completed"}


@pytest.mark.parametrize(
    ("body", "content", "stop_reason"),
    [
        (response(message_item(output_text("Hello "), output_text("there."))),
         [{"type": "text", "text": "Hello there."}], "end_turn"),
        (response(reasoning_item("First.", "Second."), message_item(output_text("4"))),
         [{"type": "thinking", "thinking": "First.\n\nSecond."}, {"type": "text", "text": "4"}], "end_turn"),
        (response(reasoning_item(content=("raw ", "thoughts")), message_item(output_text("ok"))),
         [{"type": "thinking", "thinking": "raw thoughts"}, {"type": "text", "text": "ok"}], "end_turn"),
        (response(reasoning_item(), message_item(output_text("ok"))), [{"type": "text", "text": "ok"}], "end_turn"),
        (response(message_item(output_text("Reading both.")), call_item("call_1", "Read", '{"file_path": "/a"}'),
                  call_item("call.2", LONG_NAME[:55] + "_" + short_tool_name(LONG_NAME)[-8:], "")),
         [{"type": "text", "text": "Reading both."},
          {"type": "tool_use", "id": "call_1", "name": "Read", "input": {"file_path": "/a"}},
          {"type": "tool_use", "id": "call_2", "name": LONG_NAME, "input": {}}], "tool_use"),
        (response(message_item({"type": "refusal", "refusal": "I can't help with that."})),
         [{"type": "text", "text": "I can't help with that."}], "refusal"),
        (response(message_item(output_text("Cut")), status="incomplete",
                  incomplete_details={"reason": "max_output_tokens"}), [{"type": "text", "text": "Cut"}], "max_tokens"),
        (response(call_item("c1", "Write", '{"file_path": "a.txt", "content": "ab'), status="incomplete",
                  incomplete_details={"reason": "max_output_tokens"}),
         [{"type": "tool_use", "id": "c1", "name": "Write", "input": {"file_path": "a.txt", "content": "ab"}}],
         "max_tokens"),
        (response(status="incomplete", incomplete_details={"reason": "content_filter"}), [], "refusal"),
    ],
    ids=["text", "reasoning", "reasoning-text", "empty-reasoning", "tools", "refusal", "max-tokens",
         "truncated-arguments", "content-filter"],
)
def test_response_to_message(body, content, stop_reason):
    message = to_message(body, CTX)
    assert message["id"].startswith("msg_") and message["type"] == "message" and message["role"] == "assistant"
    assert message["model"] == "claude-sonnet-4-5"
    for block in message["content"]:
        if block["type"] == "thinking":
            assert block.pop("signature")
    assert message["content"] == content
    assert message["stop_reason"] == stop_reason and message["stop_sequence"] is None
    assert message["usage"] == {"input_tokens": 300, "output_tokens": 57, "cache_creation_input_tokens": 0,
                                "cache_read_input_tokens": 1200}


def test_missing_usage_counts_zero():
    body = response(message_item(output_text("x")))
    del body["usage"]
    assert to_message(body, CTX)["usage"]["output_tokens"] == 0


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        ({"error": {"message": "nope"}}, 500, "not a Responses API response"),
        ([1, 2], 500, "not a Responses API response"),
        (response(call_item("c1", "Read", "not json at all")), 500, "unusable arguments for tool 'Read'"),
        (response(status="failed", error={"code": "server_error", "message": "boom"}), 500, "boom"),
        (response(status="failed", error={"code": "rate_limit_exceeded", "message": "slow down"}), 429, "slow down"),
        (response(status="failed", error={"code": "invalid_prompt", "message": "flagged"}), 400, "flagged"),
    ],
)
def test_bodies_that_are_not_an_answer(body, status, words):
    with pytest.raises(GatewayError) as caught:
        to_message(body, CTX)
    assert caught.value.status == status and words in caught.value.message


# ---------------------------------------------------------------- stream

def event(kind: str, **fields) -> dict:
    return {"type": kind, **fields}


def sse(*events: dict) -> bytes:
    return b"".join(f"event: {e['type']}\ndata: {json.dumps(e, ensure_ascii=False)}\n\n".encode() for e in events)


def completed(*output: dict, usage: dict | None = USAGE, status: str = "completed", **extra) -> dict:
    body = response(*output, status=status, **extra)
    body["usage"] = usage
    return event("response.completed" if status == "completed" else "response.incomplete", response=body)


def opening() -> list[dict]:
    start = response(status="in_progress", usage=None)
    return [event("response.created", response=start), event("response.in_progress", response=start)]


def text_item_events(index: int, pieces: list[str], kind: str = "output_text") -> list[dict]:
    item = {"id": f"msg_{index}", "type": "message", "role": "assistant", "status": "in_progress", "content": []}
    where = {"item_id": item["id"], "output_index": index, "content_index": 0}
    delta = "response.refusal.delta" if kind == "refusal" else "response.output_text.delta"
    text = "".join(pieces)
    part = {"type": "refusal", "refusal": text} if kind == "refusal" else output_text(text)
    return [event("response.output_item.added", output_index=index, item=item),
            event("response.content_part.added", **where, part={**part, kind if kind == "refusal" else "text": ""}),
            *(event(delta, **where, delta=piece) for piece in pieces),
            event("response.content_part.done", **where, part=part),
            event("response.output_item.done", output_index=index, item={**item, "content": [part]})]


def reasoning_events(index: int, parts: list[list[str]]) -> list[dict]:
    item = {"id": f"rs_{index}", "type": "reasoning", "summary": []}
    events = [event("response.output_item.added", output_index=index, item=item)]
    for summary_index, pieces in enumerate(parts):
        events += [event("response.reasoning_summary_text.delta", item_id=item["id"], output_index=index,
                         summary_index=summary_index, delta=piece) for piece in pieces]
    summary = [{"type": "summary_text", "text": "".join(pieces)} for pieces in parts]
    return [*events, event("response.output_item.done", output_index=index, item={**item, "summary": summary})]


def call_events(index: int, call_id: str, name: str, fragments: list[str]) -> list[dict]:
    item = {"id": f"fc_{index}", "type": "function_call", "status": "in_progress", "call_id": call_id, "name": name,
            "arguments": ""}
    return [event("response.output_item.added", output_index=index, item=item),
            *(event("response.function_call_arguments.delta", item_id=item["id"], output_index=index, delta=f)
              for f in fragments),
            event("response.function_call_arguments.done", item_id=item["id"], output_index=index,
                  arguments="".join(fragments)),
            event("response.output_item.done", output_index=index,
                  item={**item, "status": "completed", "arguments": "".join(fragments)})]


def feed(pieces: list[bytes], ctx: ResponseContext = CTX) -> tuple[bytes, ResponsesStreamTranslator]:
    translator = ResponsesStreamTranslator(ctx, upstream="codex")
    return feed_chunks(translator, pieces), translator


def run(stream: bytes) -> tuple[StreamReport, ResponsesStreamTranslator]:
    out, translator = feed([stream])
    report = check_stream(out)
    assert report.ok, report.violations
    return report, translator


def kinds(report: StreamReport) -> list[str]:
    return [e["type"] for e in report.events]


def deltas(report: StreamReport, kind: str) -> list[dict]:
    return [e for e in report.events if e["type"] == "content_block_delta" and e["delta"]["type"] == kind]


TEXT_PIECES = ["Hel", "lo, wörld ✓ ", "日本語 🎉"]
TEXT_STREAM = sse(*opening(), *text_item_events(0, TEXT_PIECES),
                  completed(message_item(output_text("".join(TEXT_PIECES)))))
REASONING_STREAM = sse(*opening(), *reasoning_events(0, [["The user ", "greets me."], ["Answer ", "briefly."]]),
                       *text_item_events(1, ["Hi ", "there!"]),
                       completed(reasoning_item("The user greets me.", "Answer briefly."),
                                 message_item(output_text("Hi there!"))))
CALL_FRAGMENTS = [['{"pa', 'th": "/tmp/', 'a b.py", "li', 'mit": 1', "0}"], ['{"command": ', '"ls -la"}']]
TOOLS_STREAM = sse(*opening(), *text_item_events(0, ["Running two tools."]),
                   *call_events(1, "call_0", "Read", CALL_FRAGMENTS[0]),
                   *call_events(2, "call_1", "Bash", CALL_FRAGMENTS[1]),
                   completed(message_item(output_text("Running two tools.")),
                             call_item("call_0", "Read", "".join(CALL_FRAGMENTS[0])),
                             call_item("call_1", "Bash", "".join(CALL_FRAGMENTS[1]))))


def test_text_stream():
    report, translator = run(TEXT_STREAM)
    assert report.complete
    assert kinds(report) == ["message_start", "ping", "content_block_start", "content_block_delta",
                             "content_block_delta", "content_block_delta", "content_block_stop", "message_delta",
                             "message_stop"]
    message = report.message()
    assert message["model"] == "claude-sonnet-4-5"
    assert message["content"] == [{"type": "text", "text": "Hello, wörld ✓ 日本語 🎉"}]
    assert message["stop_reason"] == "end_turn"
    assert message["usage"] == {"input_tokens": 300, "output_tokens": 57, "cache_creation_input_tokens": 0,
                                "cache_read_input_tokens": 1200}
    assert translator.finished and translator.stop_reason == "end_turn" and translator.error is None
    assert translator.usage["output_tokens"] == 57 and translator.error_type is None


def test_reasoning_summary_becomes_thinking_then_text():
    report, _ = run(REASONING_STREAM)
    assert report.complete
    message = report.message()
    assert [b["type"] for b in message["content"]] == ["thinking", "text"]
    assert message["content"][0]["thinking"] == "The user greets me.\n\nAnswer briefly."
    assert message["content"][0]["signature"]
    assert message["content"][1]["text"] == "Hi there!"
    assert [d["index"] for d in deltas(report, "signature_delta")] == [0]
    # the same as the non-streamed answer
    body = response(reasoning_item("The user greets me.", "Answer briefly."), message_item(output_text("Hi there!")))
    assert to_message(body, CTX)["content"] == message["content"]


def test_raw_reasoning_text_becomes_thinking():
    item = {"id": "rs_0", "type": "reasoning", "summary": []}
    report, _ = run(sse(event("response.output_item.added", output_index=0, item=item),
                        event("response.reasoning_text.delta", item_id="rs_0", output_index=0, content_index=0,
                              delta="Let me "),
                        event("response.reasoning_text.delta", item_id="rs_0", output_index=0, content_index=0,
                              delta="think."),
                        *text_item_events(1, ["4"]), completed()))
    assert report.complete
    assert report.message()["content"][0]["thinking"] == "Let me think."


def test_parallel_tool_calls_stream_their_arguments():
    report, _ = run(TOOLS_STREAM)
    assert report.complete
    starts = [e["content_block"] for e in report.events if e["type"] == "content_block_start"]
    assert starts == [{"type": "text", "text": ""},
                      {"type": "tool_use", "id": "call_0", "name": "Read", "input": {}},
                      {"type": "tool_use", "id": "call_1", "name": "Bash", "input": {}}]
    json_deltas = deltas(report, "input_json_delta")
    assert [d["delta"]["partial_json"] for d in json_deltas] == CALL_FRAGMENTS[0] + CALL_FRAGMENTS[1]
    assert [d["index"] for d in json_deltas] == [1] * 5 + [2] * 2
    message = report.message()
    assert message["content"][1]["input"] == {"path": "/tmp/a b.py", "limit": 10}
    assert message["content"][2]["input"] == {"command": "ls -la"}
    assert message["stop_reason"] == "tool_use"
    # each block is contiguous: start, its deltas, stop, before the next block starts
    per_index = [e["index"] for e in report.events if e["type"].startswith("content_block")]
    assert per_index == sorted(per_index)


def test_tool_arguments_stream_live():
    translator = ResponsesStreamTranslator(CTX)
    events = call_events(0, "call_x", "Read", ['{"file_path": ', '"/a"}'])
    first = b"".join(translator(sse(*events[:1])))
    assert b'"type":"tool_use"' in first.replace(b" ", b"")
    out = b"".join(translator(sse(events[1])))
    assert b"input_json_delta" in out and b"file_path" in out


def test_tool_names_and_ids_come_back_as_the_client_sent_them():
    short = short_tool_name(LONG_NAME)
    report, _ = run(sse(*call_events(0, "functions.mcp:0", short, ["{}"]), completed()))
    block = report.message()["content"][0]
    assert block["name"] == LONG_NAME and block["id"] == "functions_mcp_0"


def test_refusal():
    report, _ = run(sse(*text_item_events(0, ["I can't ", "help."], kind="refusal"), completed()))
    assert report.complete
    message = report.message()
    assert message["content"] == [{"type": "text", "text": "I can't help."}] and message["stop_reason"] == "refusal"


def test_incomplete_is_max_tokens_and_truncated_arguments_are_closed():
    report, _ = run(sse(*call_events(0, "c1", "Write", ['{"file_path": "a.txt", ', '"content": "ab'])[:3],
                        completed(status="incomplete", incomplete_details={"reason": "max_output_tokens"})))
    assert report.complete
    message = report.message()
    assert message["stop_reason"] == "max_tokens"
    assert message["content"][0]["input"] == {"file_path": "a.txt", "content": "ab"}


@pytest.mark.parametrize(
    "stream",
    [
        # only the finished items, no deltas (some compatible servers)
        sse(event("response.output_item.done", output_index=0, item=reasoning_item("Short.")),
            event("response.output_item.done", output_index=1, item=message_item(output_text("Whole text."))),
            event("response.output_item.done", output_index=2, item=call_item("c9", "Read", '{"file_path": "/x"}')),
            completed(usage=None)),
        # nothing but the final response
        sse(completed(reasoning_item("Short."), message_item(output_text("Whole text.")),
                      call_item("c9", "Read", '{"file_path": "/x"}'), usage=None)),
    ],
    ids=["done-items-only", "completed-only"],
)
def test_what_was_not_streamed_arrives_whole(stream):
    report, _ = run(stream)
    assert report.complete
    message = report.message()
    assert [b["type"] for b in message["content"]] == ["thinking", "text", "tool_use"]
    assert message["content"][0]["thinking"] == "Short."
    assert message["content"][1]["text"] == "Whole text."
    assert message["content"][2]["input"] == {"file_path": "/x"}
    assert message["stop_reason"] == "tool_use"
    assert message["usage"]["input_tokens"] == 321  # no upstream usage: the request's estimate


def test_done_items_do_not_repeat_what_was_streamed():
    report, _ = run(TEXT_STREAM)
    assert len(deltas(report, "text_delta")) == len(TEXT_PIECES)


@pytest.mark.parametrize(
    ("failure", "error_type"),
    [
        (event("response.failed", response=response(status="failed", usage=None,
                                                    error={"code": "server_error", "message": "Model crashed"})),
         "api_error"),
        (event("response.failed", response=response(status="failed", usage=None,
                                                    error={"code": "rate_limit_exceeded", "message": "Slow down"})),
         "rate_limit_error"),
        (event("response.failed", response=response(status="failed", usage=None,
                                                    error={"code": "invalid_prompt", "message": "Flagged prompt"})),
         "invalid_request_error"),
        (event("response.failed", response=response(status="failed", usage=None, error=None)), "api_error"),
        (event("error", code="server_error", message="Internal error sk-abcdef123456789", param=None), "api_error"),
        (event("error", error={"type": "server_error", "code": "overloaded", "message": "Overloaded"}),
         "overloaded_error"),
    ],
    ids=["failed", "failed-rate-limit", "failed-invalid-prompt", "failed-no-error", "error-event",
         "error-event-nested"],
)
def test_failures_become_an_error_event(failure, error_type):
    stream = sse(*opening(), *text_item_events(0, ["partial "])[:3], failure, *text_item_events(1, ["never"]))
    report, translator = run(stream)
    assert not report.complete
    assert kinds(report)[-1] == "error" and "message_stop" not in kinds(report)
    assert "message_delta" not in kinds(report)
    assert report.error["type"] == error_type == translator.error_type
    assert report.error["message"].startswith("codex upstream: ") and translator.error == report.error["message"]
    assert "abcdef123456789" not in report.error["message"]
    assert "never" not in json.dumps(report.events)


@pytest.mark.parametrize(
    "stream",
    [
        pytest.param(sse(*opening(), *text_item_events(0, ["Hello"])), id="no-completed"),
        pytest.param(sse(*opening(), *text_item_events(0, ["Hello"])[:3]) + b'event: response.out', id="cut"),
        pytest.param(sse(*call_events(0, "c1", "Read", ['{"pa'])[:2]), id="cut-in-tool-call"),
        pytest.param(b"", id="empty"),
    ],
)
def test_stream_ending_without_completed_is_an_error(stream):
    report, translator = run(stream)
    assert not report.complete
    assert report.error is not None and report.error["type"] == "api_error"
    assert "ended the stream" in report.error["message"]
    assert kinds(report)[0] == "message_start"
    assert translator.finished and translator.stop_reason is None


def test_malformed_data_is_an_error():
    report, _ = run(sse(*opening()) + b"data: {not json\n\n" + TEXT_STREAM)
    assert report.error is not None and "malformed" in report.error["message"]


def test_arguments_for_a_call_that_ended_are_an_error():
    events = call_events(0, "c1", "Read", ['{"a": 1}'])
    late = event("response.function_call_arguments.delta", item_id="fc_0", output_index=0, delta="extra")
    report, _ = run(sse(*events[:2], *text_item_events(1, ["text"]), late, completed()))
    assert report.error is not None and "had ended" in report.error["message"]


def test_done_marker_and_unknown_events_are_ignored():
    stream = (sse(event("response.queued"), event("response.output_text.annotation.added", annotation={}))
              + TEXT_STREAM + b"data: [DONE]\n\n")
    report, _ = run(stream)
    assert report.complete and b"DONE" not in feed([stream])[0]


def test_nothing_after_the_end():
    translator = ResponsesStreamTranslator(CTX)
    first = translator(TEXT_STREAM)
    assert translator.finished
    assert translator(TEXT_STREAM) == [] and translator(b"") == []
    assert check_stream(b"".join(first)).complete


def test_events_without_output_index_are_matched_by_item_id():
    stream = sse(event("response.output_item.added", item={"id": "m", "type": "message", "content": []}),
                 event("response.output_text.delta", item_id="m", delta="a"),
                 event("response.output_item.added", item={"id": "f", "type": "function_call", "call_id": "c",
                                                            "name": "Read", "arguments": ""}),
                 event("response.function_call_arguments.delta", item_id="f", delta="{}"),
                 event("response.output_text.delta", delta="b"),
                 completed())
    report, _ = run(stream)
    assert [b["type"] for b in report.message()["content"]] == ["text", "tool_use", "text"]


# ---------------------------------------------------------------- split anywhere, same events

def fake_stream(body: dict) -> bytes:
    """A stream exactly as tests/fake_responses.py sends it."""
    return sse(*fake_responses.stream_events(body))


GOOD_STREAMS = [
    TEXT_STREAM, REASONING_STREAM, TOOLS_STREAM,
    fake_stream({"model": "gpt-5-codex", "reasoning": {"effort": "low"}, "input": "hi"}),
    fake_stream({"model": "scenario:tools", "input": "weather?"}),
]


def _events(out: bytes) -> list[dict]:
    return comparable_events(out)


@functools.cache
def whole(which: int) -> list[dict]:
    return _events(feed([GOOD_STREAMS[which]])[0])


def test_the_fakes_streams_convert():
    message = check_stream(feed([GOOD_STREAMS[3]])[0]).message()
    assert message["content"][0]["thinking"] == "\n\n".join(fake_responses.SUMMARY)
    assert message["content"][1]["text"] == fake_responses.TEXT
    tools = check_stream(feed([GOOD_STREAMS[4]])[0]).message()
    assert [(b["id"], b["name"], b["input"]) for b in tools["content"]] == [
        (call_id, name, json.loads(arguments)) for call_id, name, arguments in fake_responses.TOOL_CALLS]


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


# ---------------------------------------------------------------- any event sequence: no crash, a valid stream

_EVENT_TYPES = ["response.created", "response.output_item.added", "response.output_text.delta",
                "response.refusal.delta", "response.reasoning_summary_text.delta", "response.reasoning_text.delta",
                "response.function_call_arguments.delta", "response.output_item.done", "response.completed",
                "response.incomplete", "response.failed", "error", "response.unknown"]
_ANY = st.one_of(st.none(), st.integers(-2, 3), st.text(max_size=8), st.lists(st.integers(), max_size=2))
_UPSTREAM_ITEM = st.one_of(_ANY, st.fixed_dictionaries(
    {"type": st.sampled_from(["message", "reasoning", "function_call", "web_search_call"])},
    optional={"id": st.sampled_from(["a", "b"]), "call_id": _ANY, "name": _ANY,
              "arguments": st.one_of(_ANY, st.just('{"x": 1')),
              "content": st.one_of(_ANY, st.lists(st.fixed_dictionaries(
                  {"type": st.sampled_from(["output_text", "refusal"])},
                  optional={"text": _ANY, "refusal": _ANY}), max_size=2)),
              "summary": st.one_of(_ANY, st.lists(st.fixed_dictionaries({"text": _ANY}), max_size=2))}))
_EVENT = st.fixed_dictionaries(
    {"type": st.sampled_from(_EVENT_TYPES)},
    optional={"output_index": st.one_of(st.none(), st.integers(0, 2)), "item_id": st.sampled_from(["a", "b", None]),
              "summary_index": _ANY, "delta": st.one_of(st.text(max_size=6), _ANY), "item": _UPSTREAM_ITEM,
              "response": st.one_of(_ANY, st.fixed_dictionaries({}, optional={
                  "status": st.sampled_from(["completed", "incomplete", "failed"]), "output": st.one_of(
                      _ANY, st.lists(_UPSTREAM_ITEM, max_size=3)),
                  "usage": st.one_of(_ANY, st.just(USAGE)), "error": st.one_of(_ANY, st.just({"code": "x"})),
                  "incomplete_details": _ANY})),
              "error": _ANY, "code": _ANY, "message": _ANY})


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events=st.lists(_EVENT, max_size=12))
def test_any_event_sequence_gives_a_conforming_stream(events):
    out, translator = feed([sse(*events)])
    report = check_stream(out)
    assert report.ok, report.violations
    assert translator.finished and (report.complete or report.error is not None)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=st.fixed_dictionaries({"output": st.lists(_UPSTREAM_ITEM, max_size=4)}, optional={
    "status": st.sampled_from(["completed", "incomplete", "failed"]), "usage": st.one_of(_ANY, st.just(USAGE)),
    "error": _ANY, "incomplete_details": st.one_of(_ANY, st.just({"reason": "max_output_tokens"}))}))
def test_any_response_object_gives_a_message_or_an_error(body):
    try:
        message = to_message(body, CTX)
    except GatewayError as error:
        assert error.status in (400, 429, 500, 529) and error.message
        return
    assert message["type"] == "message" and message["stop_reason"] in ("end_turn", "tool_use", "max_tokens",
                                                                       "refusal")
    assert all(block["type"] in ("thinking", "text", "tool_use") for block in message["content"])


@pytest.mark.parametrize("arguments", [["{}"], 7, {"a": 1}])
def test_function_call_arguments_that_are_not_a_string_end_the_stream_with_an_error(arguments):
    item = {"id": "fc_0", "type": "function_call", "call_id": "call_1", "name": "Read", "arguments": arguments}
    report, translator = run(sse(event("response.output_item.added", output_index=0, item=item)))
    assert report.error is not None and "malformed event" in report.error["message"]
    assert not any(e.get("delta", {}).get("type") == "input_json_delta" for e in report.events)
    assert translator.message()["content"][0]["input"] == {}
