"""OpenAI chat.completion.chunk streams → Anthropic SSE events (ChatStreamTranslator)."""

from __future__ import annotations

import functools
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ccany_addon.anthropic_api.conformance import StreamReport, check_stream
from ccany_addon.converters.common import ResponseContext
from ccany_addon.converters.openai_chat_stream import ChatStreamTranslator
from tests.unit.streams import added_up, byte_by_byte, comparable_events, draw_split, feed_chunks

CTX = ResponseContext(client_model="claude-sonnet-4-5", stop_sequences=("###",), estimated_input_tokens=321)
DONE = b"data: [DONE]\n\n"


def chunk(delta: dict | None = None, finish: str | None = None, **choice_extra) -> dict:
    return {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o",
            "choices": [{"index": 0, "delta": delta or {}, "finish_reason": finish, **choice_extra}]}


def usage_chunk(prompt: int = 1200, completion: int = 42, cached: int = 1000) -> dict:
    return {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o", "choices": [],
            "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
                      "prompt_tokens_details": {"cached_tokens": cached}}}


def tool_delta(index: int, call_id: str | None = None, name: str | None = None, arguments: str = "") -> dict:
    call: dict = {"index": index, "function": {"arguments": arguments}}
    if call_id:
        call["id"] = call_id
        call["type"] = "function"
    if name:
        call["function"]["name"] = name
    return {"tool_calls": [call]}


def sse(*chunks: dict, done: bool = True) -> bytes:
    body = b"".join(f"data: {json.dumps(c, ensure_ascii=False)}\n\n".encode() for c in chunks)
    return body + (DONE if done else b"")


def feed(pieces: list[bytes], ctx: ResponseContext = CTX) -> tuple[bytes, ChatStreamTranslator]:
    translator = ChatStreamTranslator(ctx, upstream="openai")
    return feed_chunks(translator, pieces), translator


def run(stream: bytes, ctx: ResponseContext = CTX) -> tuple[StreamReport, bytes]:
    out, _ = feed([stream], ctx)
    report = check_stream(out)
    assert report.ok, report.violations
    assert b"[DONE]" not in out
    return report, out


def kinds(report: StreamReport) -> list[str]:
    return [e["type"] for e in report.events]


def block_starts(report: StreamReport) -> list[dict]:
    return [e["content_block"] for e in report.events if e["type"] == "content_block_start"]


def deltas(report: StreamReport, kind: str) -> list[dict]:
    return [e for e in report.events if e["type"] == "content_block_delta" and e["delta"]["type"] == kind]


TEXT_STREAM = sse(
    chunk({"role": "assistant", "content": ""}),
    chunk({"content": "Hel"}),
    chunk({"content": "lo, wörld ✓ "}),
    chunk({"content": "日本語 🎉"}),
    chunk({}, "stop"),
    usage_chunk(),
)

REASONING_STREAM = sse(
    chunk({"role": "assistant", "content": None, "reasoning_content": ""}),
    chunk({"reasoning_content": "The user "}),
    chunk({"reasoning_content": "greets me."}),
    chunk({"content": "Hi "}),
    chunk({"content": "there!"}),
    chunk({}, "stop"),
    usage_chunk(prompt=80, completion=20, cached=0),
)

TOOL_ARGS = ['{"pa', 'th": "/tmp/', 'a b.py", "li', 'mit": 1', "0}"]
TOOL_STREAM = sse(
    chunk({"role": "assistant", "content": "Reading."}),
    chunk(tool_delta(0, "call_abc", "Read", "")),
    *[chunk(tool_delta(0, arguments=part)) for part in TOOL_ARGS],
    chunk({}, "tool_calls"),
    usage_chunk(),
)

INTERLEAVED_STREAM = sse(
    chunk({"role": "assistant", "content": None}),
    chunk(tool_delta(0, "call_0", "Read", "")),
    chunk(tool_delta(1, "call_1", "Bash", "")),
    chunk(tool_delta(0, arguments='{"path"')),
    chunk(tool_delta(1, arguments='{"command": ')),
    chunk(tool_delta(0, arguments=': "a.py"}')),
    chunk(tool_delta(1, arguments='"ls -la"}')),
    chunk({}, "tool_calls"),
    usage_chunk(),
)


def test_text_stream():
    report, _ = run(TEXT_STREAM)
    assert report.complete
    assert kinds(report) == ["message_start", "ping", "content_block_start", "content_block_delta",
                             "content_block_delta", "content_block_delta", "content_block_stop", "message_delta",
                             "message_stop"]
    start = report.events[0]["message"]
    assert start["model"] == "claude-sonnet-4-5" and start["role"] == "assistant" and start["content"] == []
    assert start["id"].startswith("msg_")
    message = report.message()
    assert message["content"] == [{"type": "text", "text": "Hello, wörld ✓ 日本語 🎉"}]
    assert message["stop_reason"] == "end_turn" and message["stop_sequence"] is None
    assert message["usage"]["output_tokens"] == 42
    assert message["usage"]["input_tokens"] == 200
    assert message["usage"]["cache_read_input_tokens"] == 1000


def test_reasoning_then_text():
    report, _ = run(REASONING_STREAM)
    assert report.complete
    message = report.message()
    assert [b["type"] for b in message["content"]] == ["thinking", "text"]
    assert message["content"][0]["thinking"] == "The user greets me."
    assert message["content"][0]["signature"]
    assert message["content"][1]["text"] == "Hi there!"
    assert [d["index"] for d in deltas(report, "signature_delta")] == [0]
    assert message["usage"]["input_tokens"] == 80 and message["usage"]["output_tokens"] == 20


def test_reasoning_field_name_also_works():
    report, _ = run(sse(chunk({"reasoning": "hmm"}), chunk({"content": "ok"}), chunk({}, "stop")))
    assert report.complete
    assert [b["type"] for b in report.message()["content"]] == ["thinking", "text"]


def test_tool_call_with_fragmented_arguments():
    report, _ = run(TOOL_STREAM)
    assert report.complete
    starts = block_starts(report)
    assert starts[0] == {"type": "text", "text": ""}
    assert starts[1] == {"type": "tool_use", "id": "call_abc", "name": "Read", "input": {}}
    json_deltas = deltas(report, "input_json_delta")
    assert {d["index"] for d in json_deltas} == {1}
    assert "".join(d["delta"]["partial_json"] for d in json_deltas) == "".join(TOOL_ARGS)
    message = report.message()
    assert message["content"][0] == {"type": "text", "text": "Reading."}
    assert message["content"][1] == {"type": "tool_use", "id": "call_abc", "name": "Read",
                                     "input": {"path": "/tmp/a b.py", "limit": 10}}
    assert message["stop_reason"] == "tool_use"


def test_tool_arguments_stream_live():
    """Fragments go out as they arrive, not all at the end."""
    translator = ChatStreamTranslator(CTX)
    translator(sse(chunk(tool_delta(0, "call_abc", "Read", "")), done=False))
    out = b"".join(translator(sse(chunk(tool_delta(0, arguments=TOOL_ARGS[0])), done=False)))
    assert b"input_json_delta" in out and json.dumps(TOOL_ARGS[0]).encode() in out


def test_tool_arguments_in_first_fragment_go_as_delta():
    report, _ = run(sse(chunk(tool_delta(0, "call_x", "Bash", '{"command": "pwd"}')), chunk({}, "tool_calls")))
    assert report.complete
    assert block_starts(report) == [{"type": "tool_use", "id": "call_x", "name": "Bash", "input": {}}]
    assert report.message()["content"][0]["input"] == {"command": "pwd"}


def test_tool_id_sanitised_in_stream():
    report, _ = run(sse(chunk(tool_delta(0, "functions.Read:0", "Read", "{}")), chunk({}, "tool_calls")))
    assert report.message()["content"][0]["id"] == "functions_Read_0"


def test_interleaved_parallel_tool_calls():
    report, _ = run(INTERLEAVED_STREAM)
    assert report.complete
    message = report.message()
    assert message["content"] == [
        {"type": "tool_use", "id": "call_0", "name": "Read", "input": {"path": "a.py"}},
        {"type": "tool_use", "id": "call_1", "name": "Bash", "input": {"command": "ls -la"}},
    ]
    assert all(s["input"] == {} for s in block_starts(report))
    # each block is contiguous: start, its deltas, stop, before the next block starts
    per_index = [e.get("index") for e in report.events if e["type"].startswith("content_block")]
    assert per_index == sorted(per_index)
    assert message["stop_reason"] == "tool_use"


def test_sequential_parallel_tool_calls():
    report, _ = run(sse(
        chunk(tool_delta(0, "call_0", "Read", '{"path": ')), chunk(tool_delta(0, arguments='"x"}')),
        chunk(tool_delta(1, "call_1", "Read", '{"path": ')), chunk(tool_delta(1, arguments='"y"}')),
        chunk(tool_delta(2, "call_2", "Glob", '{"pattern": "*.py"}')),
        chunk({}, "tool_calls"), usage_chunk()))
    assert report.complete
    assert [(b["id"], b["input"]) for b in report.message()["content"]] == [
        ("call_0", {"path": "x"}), ("call_1", {"path": "y"}), ("call_2", {"pattern": "*.py"})]


def test_usage_chunk_after_finish_carries_into_message_delta():
    translator = ChatStreamTranslator(CTX)
    before = b"".join(translator(sse(chunk({"content": "hi"}), chunk({}, "stop"), done=False)))
    assert b"message_delta" not in before and b"message_stop" not in before
    after = b"".join(translator(sse(usage_chunk(prompt=500, completion=9, cached=100))))
    rest = b"".join(translator(b""))
    report = check_stream(before + after + rest)
    assert report.complete, report.violations
    [message_delta] = [e for e in report.events if e["type"] == "message_delta"]
    assert message_delta["usage"] == {"input_tokens": 400, "output_tokens": 9, "cache_creation_input_tokens": 0,
                                      "cache_read_input_tokens": 100}
    assert translator.usage["output_tokens"] == 9 and translator.stop_reason == "end_turn"


def test_usage_in_the_finish_chunk():
    final = chunk({}, "stop")
    final["usage"] = {"prompt_tokens": 30, "completion_tokens": 4, "prompt_cache_hit_tokens": 10}
    report, _ = run(sse(chunk({"content": "ok"}), final))
    assert report.complete
    assert report.message()["usage"]["input_tokens"] == 20
    assert report.message()["usage"]["cache_read_input_tokens"] == 10
    assert report.message()["usage"]["output_tokens"] == 4


def test_usage_in_every_chunk_reports_the_last():
    """vLLM's continuous_usage_stats: cumulative usage on every chunk, the finish chunk included."""
    chunks = []
    for n, piece in enumerate(["a", "b", "c"], start=1):
        c = chunk({"content": piece})
        c["usage"] = {"prompt_tokens": 50, "completion_tokens": n, "total_tokens": 50 + n}
        chunks.append(c)
    final = chunk({}, "stop")
    final["usage"] = {"prompt_tokens": 50, "completion_tokens": 4, "total_tokens": 54}
    report, _ = run(sse(*chunks, final))
    assert report.complete
    assert report.message()["usage"]["output_tokens"] == 4
    assert report.message()["usage"]["input_tokens"] == 50


def test_tool_arguments_as_an_object():
    call = {"index": 0, "id": "c1", "type": "function", "function": {"name": "Read", "arguments": {"path": "x"}}}
    report, _ = run(sse(chunk({"tool_calls": [call]}), chunk({}, "tool_calls")))
    assert report.complete
    assert report.message()["content"][0]["input"] == {"path": "x"}


def test_null_usage_in_ordinary_chunks_is_ignored():
    first = chunk({"content": "ok"})
    first["usage"] = None
    report, _ = run(sse(first, chunk({}, "stop"), usage_chunk(prompt=10, completion=1, cached=0)))
    assert report.complete
    assert report.message()["usage"]["input_tokens"] == 10


def test_without_usage_the_end_estimates():
    report, _ = run(sse(chunk({"content": "some words " * 10}), chunk({}, "stop")))
    assert report.complete
    usage = report.message()["usage"]
    assert usage["input_tokens"] == 321
    assert usage["output_tokens"] > 0


def test_without_done_the_end_still_completes_after_finish():
    report, _ = run(sse(chunk({"content": "ok"}), chunk({}, "stop"), usage_chunk(), done=False))
    assert report.complete


@pytest.mark.parametrize(
    ("finish", "extra", "stop_reason", "stop_sequence"),
    [
        ("stop", {}, "end_turn", None),
        ("stop", {"stop_reason": "###"}, "stop_sequence", "###"),
        ("stop", {"matched_stop": "###"}, "stop_sequence", "###"),
        ("stop", {"stop_reason": "other"}, "end_turn", None),
        ("length", {}, "max_tokens", None),
        ("content_filter", {}, "refusal", None),
        ("tool_calls", {}, "tool_use", None),
        ("function_call", {}, "tool_use", None),
    ],
)
def test_finish_reasons(finish, extra, stop_reason, stop_sequence):
    report, _ = run(sse(chunk({"content": "text"}), chunk({}, finish, **extra), usage_chunk()))
    assert report.complete
    [message_delta] = [e for e in report.events if e["type"] == "message_delta"]
    assert message_delta["delta"] == {"stop_reason": stop_reason, "stop_sequence": stop_sequence}


def test_stop_with_tool_calls_is_tool_use():
    report, _ = run(sse(chunk(tool_delta(0, "c1", "Read", "{}")), chunk({}, "stop")))
    assert report.message()["stop_reason"] == "tool_use"


def test_truncated_tool_arguments_are_closed():
    report, _ = run(sse(chunk(tool_delta(0, "c1", "Write", '{"path": "a.txt", "content": "abc')),
                        chunk({}, "length"), usage_chunk()))
    assert report.complete
    message = report.message()
    assert message["content"][0]["input"] == {"path": "a.txt", "content": "abc"}
    assert message["stop_reason"] == "max_tokens"


@pytest.mark.parametrize(
    ("error", "error_type"),
    [
        ({"message": "Internal error sk-abcdef123456789", "type": "server_error", "code": None}, "api_error"),
        ({"message": "Rate limit reached", "type": "requests", "code": "rate_limit_exceeded"}, "rate_limit_error"),
        ({"message": "The server is overloaded", "type": "overloaded_error"}, "overloaded_error"),
        ({"message": "Service unavailable", "code": 503}, "overloaded_error"),
        ("plain string error", "api_error"),
    ],
)
def test_error_mid_stream(error, error_type):
    stream = sse(chunk({"content": "partial "}), {"error": error}, chunk({"content": "never"}), chunk({}, "stop"))
    report, out = run(stream)
    assert not report.complete
    assert kinds(report)[-1] == "error"
    assert "message_stop" not in kinds(report) and "message_delta" not in kinds(report)
    assert b"event: error\n" in out
    assert report.error["type"] == error_type
    message = error if isinstance(error, str) else error["message"]
    assert message.split(" sk-")[0] in report.error["message"]
    assert "abcdef123456789" not in report.error["message"]
    assert "never" not in out.decode()


@pytest.mark.parametrize(
    "stream",
    [
        pytest.param(sse(chunk({"content": "Hello"}), chunk({"content": " wor"}), done=False), id="no-finish"),
        pytest.param(sse(chunk({"content": "Hello"}), done=False) + b'data: {"choices": [{"ind', id="cut-mid-event"),
        pytest.param(sse(chunk(tool_delta(0, "c1", "Read", '{"pa')), done=False), id="cut-in-tool-call"),
        pytest.param(b"", id="empty"),
    ],
)
def test_stream_ending_without_finish_is_an_error(stream):
    report, out = run(stream)
    assert not report.complete
    assert report.error is not None and report.error["type"] == "api_error"
    assert b"message_stop" not in out
    assert kinds(report)[0] == "message_start"


def test_malformed_data_is_an_error():
    report, _ = run(sse(chunk({"content": "ok"}), done=False) + b"data: {not json\n\n" + sse(chunk({}, "stop")))
    assert report.error is not None and not report.complete


def test_done_without_finish_reason_ends_cleanly():
    report, _ = run(sse(chunk({"content": "ok"})))
    assert report.complete
    assert report.message()["stop_reason"] == "end_turn"


def test_nothing_after_the_end():
    translator = ChatStreamTranslator(CTX)
    first = translator(TEXT_STREAM)
    assert translator.finished
    assert translator(sse(chunk({"content": "late"}))) == []
    assert translator(b"") == []
    assert check_stream(b"".join(first)).complete


def test_crlf_comments_and_other_choices():
    raw = (b": OPENROUTER PROCESSING\r\n\r\n"
           + sse(chunk({"content": "A"}), done=False).replace(b"\n", b"\r\n")
           + sse({"choices": [{"index": 1, "delta": {"content": "other choice"}, "finish_reason": None}]},
                 chunk({}, "stop"), usage_chunk()))
    report, _ = run(raw)
    assert report.complete
    assert report.message()["content"] == [{"type": "text", "text": "A"}]


def test_done_is_never_forwarded():
    for stream in (TEXT_STREAM, TOOL_STREAM, INTERLEAVED_STREAM, REASONING_STREAM):
        _, out = run(stream)
        assert b"[DONE]" not in out and b"DONE" not in out


# ---------------------------------------------------------------- split anywhere, same events

GOOD_STREAMS = [TEXT_STREAM, REASONING_STREAM, TOOL_STREAM, INTERLEAVED_STREAM,
                sse(chunk({"reasoning_content": "Plan: two calls. "}), chunk({"content": "Doing it ✓"}),
                    chunk(tool_delta(0, "call_0", "Read", "")), chunk(tool_delta(1, "call_1", "Grep", '{"pat')),
                    chunk(tool_delta(0, arguments='{"path": "ü.py"}')), chunk(tool_delta(1, arguments='tern": "x"}')),
                    chunk({}, "tool_calls"), usage_chunk(prompt=10, completion=5, cached=2))]


def _events(out: bytes) -> list[dict]:
    return comparable_events(out)


@functools.cache
def whole(which: int) -> list[dict]:
    """The events for a stream fed in one piece."""
    return _events(feed([GOOD_STREAMS[which]])[0])


@pytest.mark.parametrize("which", range(len(GOOD_STREAMS)))
def test_good_streams_complete(which):
    assert whole(which)[-1] == {"type": "message_stop"}


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


@pytest.mark.parametrize("second", [
    chunk({"content": "more"}),
    chunk({"content": "more", "role": "assistant", "refusal": None}),
    chunk({"content": "more", "reasoning_content": None}),  # DeepSeek's text chunks
    chunk({"content": "more", "reasoning_content": "hmm"}),
    chunk({"content": "more", "reasoning": "hmm"}),
    chunk({"content": "more", "tool_calls": [{"index": 0, "id": "c1", "function": {"name": "Read"}}]}),
    chunk({"content": "more"}, "stop"),
    chunk({"content": [{"type": "text", "text": "parts"}]}),
    chunk({"content": ""}),
    {**chunk({"content": "more"}), "usage": usage_chunk(completion=7)["usage"]},  # the stream's only usage
    {**chunk({"content": "more"}), "error": {"message": "overloaded"}},
    {**chunk({"content": "more"}), "choices": [chunk({"content": "a"})["choices"][0], {"index": 1, "delta": {}}]},
    {**chunk(), "choices": [{"index": 1, "delta": {"content": "other choice"}}]},
])
def test_a_read_of_one_text_chunk_gives_what_the_same_bytes_split_give(second):
    """Whole-chunk reads of text take a shortcut past the decoder; a read split in two cannot. Both must send
    the same events, whatever else the chunk carries."""
    tail = [chunk({}, "stop")] if "usage" in second else [chunk({}, "stop"), usage_chunk()]
    stream = sse(chunk({"role": "assistant", "content": "Hi"}), second, *tail)
    first_end = stream.index(b"\n\n") + 2
    second_end = stream.index(b"\n\n", first_end) + 2
    whole, _ = feed([stream[:first_end], stream[first_end:second_end], stream[second_end:]])
    middle = (first_end + second_end) // 2
    split, _ = feed([stream[:first_end], stream[first_end:middle], stream[middle:second_end], stream[second_end:]])
    whole_events, split_events = check_stream(whole).events, check_stream(split).events
    whole_events[0]["message"].pop("id"), split_events[0]["message"].pop("id")
    assert whole_events == split_events and len(whole_events) > 3


# -- reads that fit the text-chunk template of the reads before them

def reads(*chunks: dict | bytes) -> list[bytes]:
    """One read per chunk; bytes are a read as they are."""
    return [c if isinstance(c, bytes) else sse(c, done=False) for c in chunks]


def halves(pieces: list[bytes]) -> list[bytes]:
    """Every read cut in two: no read is a whole chunk, so none takes a shortcut."""
    return [half for piece in pieces for half in (piece[:len(piece) // 2], piece[len(piece) // 2:])]


def same_as_general_path(pieces: list[bytes]) -> bytes:
    out, _ = feed(pieces)
    cut, _ = feed(halves(pieces))
    events, cut_events = check_stream(out).events, check_stream(cut).events
    events[0]["message"].pop("id"), cut_events[0]["message"].pop("id")
    assert events == cut_events
    return out


LEARNT = (chunk({"role": "assistant", "content": "Hi"}), chunk({"content": " there"}))  # the second is learnt
TEMPLATE_BYTES = sse(chunk({"content": "\x00"}), done=False).split(b'"\\u0000"')
END = (chunk({}, "stop"), usage_chunk(), DONE)


@pytest.mark.parametrize("later", [
    chunk({"content": "more"}),
    chunk({"content": "é, 😀, \u2028 and \x7f as they are"}),
    chunk({"content": 'a "quoted" \\ path'}),
    chunk({"content": "two\nlines\tand a tab"}),
    sse(chunk({"content": "é"}), done=False).replace("é".encode(), b"\\u00e9"),  # an escape for a plain letter
    chunk({"content": "more"}, "stop"),
    {**chunk({"content": "more"}), "id": "chatcmpl-2"},
    TEMPLATE_BYTES[0] + b'"\xff\xfe"' + TEMPLATE_BYTES[1],  # not UTF-8
    # Between the template's ends, but more than one string: a second choice with its own finish.
    TEMPLATE_BYTES[0] + b'"a"},"finish_reason":null},{"index":1,"delta":{"content":"b"' + TEMPLATE_BYTES[1],
    TEMPLATE_BYTES[0] + b'"a"},"finish_reason":"length"}],"x":{"y":{"content":"b"' + TEMPLATE_BYTES[1],
])
def test_a_read_fitting_the_template_gives_what_the_general_path_gives(later):
    same_as_general_path(reads(*LEARNT, later, *END))


def test_the_template_is_learnt_where_the_text_is_not_where_it_first_appears():
    """The first chunk's text is also its id. A template taken at the id would read the next chunk's id
    as its text."""
    first = {**chunk({"content": "chatcmpl-1"}), "id": "chatcmpl-1"}
    out = same_as_general_path(reads(LEARNT[0], first, {**chunk({"content": "chatcmpl-1"}), "id": "chatcmpl-2"}, *END))
    assert added_text(out) == "Hichatcmpl-1chatcmpl-1"


def added_text(out: bytes) -> str:
    return "".join(block["text"] for block in added_up(out)["content"] if block["type"] == "text")


@settings(max_examples=100, deadline=None)
@given(texts=st.lists(st.text(min_size=1), min_size=1, max_size=8), ascii_only=st.booleans())
def test_any_texts_through_the_template_give_the_general_paths_events(texts, ascii_only):
    pieces = [f"data: {json.dumps(chunk({'content': text}), ensure_ascii=ascii_only)}\n\n".encode()
              for text in texts]
    out = same_as_general_path(reads(*LEARNT, *pieces, *END))
    assert added_text(out) == "Hi there" + "".join(texts)


def test_reads_fitting_the_template_are_not_parsed(monkeypatch):
    from ccany_addon.converters import openai_chat_stream

    translator = ChatStreamTranslator(CTX, upstream="openai")
    for piece in reads(*LEARNT):
        translator(piece)
    parsed: list[bytes] = []
    monkeypatch.setattr(openai_chat_stream, "loads", lambda data: parsed.append(data) or json.loads(data))
    words = reads(*(chunk({"content": f"word {n} "}) for n in range(10)))
    out = b"".join(b"".join(translator(piece)) for piece in words)
    assert parsed == [] and out.count(b'"text_delta"') == 10


def test_a_stream_whose_chunks_all_differ_stops_learning(monkeypatch):
    """A per-chunk nonce (like OpenAI's `obfuscation`) means no read fits: after a few tries, each read is
    parsed once, not twice."""
    from ccany_addon.converters import openai_chat_stream

    translator = ChatStreamTranslator(CTX, upstream="openai")
    for piece in reads(*LEARNT):
        translator(piece)
    parsed: list[bytes] = []
    monkeypatch.setattr(openai_chat_stream, "loads", lambda data: parsed.append(data) or json.loads(data))
    for n in range(20):
        translator(sse({**chunk({"content": "x"}), "obfuscation": "n" * n}, done=False))
    assert 20 <= len(parsed) <= 23
