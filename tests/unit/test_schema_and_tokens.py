"""Request validation (400s that name the field) and the offline token counter."""

from __future__ import annotations

import base64
import json
import struct
import zlib

import pytest

from ccany_addon.anthropic_api import schema
from ccany_addon.anthropic_api.count_tokens import TOOLS_OVERHEAD, count_tokens, image_dimensions, text_tokens
from ccany_addon.anthropic_api.errors import GatewayError
from ccany_addon.anthropic_api.schema import CountTokensRequest, MessagesRequest, parse
from ccany_addon.anthropic_api.tool_cache import ToolCache

BASE = {"model": "claude-sonnet-4-5", "max_tokens": 1024, "messages": [{"role": "user", "content": "hi"}]}


def body(**fields) -> bytes:
    data = dict(BASE)
    for key, value in fields.items():
        if value is ...:
            data.pop(key)
        else:
            data[key] = value
    return json.dumps(data).encode()


def one_block(block: dict) -> bytes:
    return body(messages=[{"role": "user", "content": [block]}])


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param(b'{"model": "x", ', "not valid JSON", id="malformed-json"),
        pytest.param(b"", "not valid JSON", id="empty-body"),
        pytest.param(b"[]", "must be a JSON object", id="array-body"),
        pytest.param(b'"hello"', "must be a JSON object", id="string-body"),
        pytest.param(body(model=...), "model: Field required", id="missing-model"),
        pytest.param(body(model=""), "model:", id="empty-model"),
        pytest.param(body(max_tokens=...), "max_tokens: Field required", id="missing-max-tokens"),
        pytest.param(body(messages=...), "messages: Field required", id="missing-messages"),
        pytest.param(body(max_tokens="lots"), "max_tokens: Input should be a valid integer", id="max-tokens-string"),
        pytest.param(body(max_tokens=1.5), "max_tokens:", id="max-tokens-fraction"),
        pytest.param(body(max_tokens=0), "max_tokens:", id="max-tokens-zero"),
        pytest.param(body(messages={"role": "user"}), "messages:", id="messages-not-list"),
        pytest.param(body(messages=[{"role": "robot", "content": "x"}]), "messages.0.role:", id="bad-role"),
        pytest.param(body(messages=[{"role": "user"}]), "messages.0.content: Field required", id="missing-content"),
        pytest.param(one_block({"type": 7}), "messages.0.content.0.type: unknown content block type '7'",
                     id="block-type-not-a-string"),
        pytest.param(body(messages=[{"role": "user", "content": "a"}, {"role": "assistant", "content": [
            {"type": "bar"}, {"type": "text"}]}]),
                     "messages.1.content.1.text: Field required", id="known-block-wrong-after-unknown-block"),
        pytest.param(one_block({"text": "no type"}), "messages.0.content.0.type: Field required",
                     id="block-without-type"),
        pytest.param(one_block({"type": "tool_result", "content": "x"}),
                     "messages.0.content.0.tool_use_id: Field required", id="tool-result-without-id"),
        pytest.param(one_block({"type": "tool_result", "content": [{"type": "foo"}]}),
                     "messages.0.content.0.tool_use_id: Field required", id="tool-result-wrong-with-unknown-block"),
        pytest.param(one_block({"type": "tool_result", "tool_use_id": "t", "content": [{"type": "foo"},
                                                                                      {"type": "image"}]}),
                     "messages.0.content.0.content.1.source: Field required", id="wrong-block-in-tool-result"),
        pytest.param(one_block({"type": "tool_addition"}), "messages.0.content.0.tool: Field required",
                     id="tool-addition-without-tool"),
        pytest.param(one_block({"type": "text"}), "messages.0.content.0.text: Field required", id="text-without-text"),
        pytest.param(one_block({"type": "tool_use", "id": "t", "input": {}}), "messages.0.content.0.name:",
                     id="tool-use-without-name"),
        pytest.param(one_block({"type": "image", "source": {"type": "base64", "data": "AAAA"}}),
                     "messages.0.content.0.source.media_type: Field required", id="image-without-media-type"),
        pytest.param(one_block({"type": "image", "source": {"type": "ftp", "url": "x"}}),
                     "messages.0.content.0.source.type: unknown source type 'ftp'", id="unknown-source-type"),
        pytest.param(body(system=[{"type": "image"}]), "system.0.type:", id="system-block-not-text"),
        pytest.param(body(tools=[{"description": "no name"}]), "tools.0.name: Field required", id="tool-no-name"),
        pytest.param(body(tool_choice={"type": "sometimes"}), "tool_choice.type:", id="bad-tool-choice"),
        pytest.param(body(thinking={"type": "enabled", "budget_tokens": "many"}), "thinking.budget_tokens:",
                     id="bad-thinking-budget"),
        pytest.param(body(stop_sequences="END"), "stop_sequences:", id="stop-sequences-not-list"),
        pytest.param(body(temperature="hot"), "temperature:", id="bad-temperature"),
    ],
)
def test_parse_errors_name_the_field(raw, expected):
    with pytest.raises(GatewayError) as caught:
        parse(MessagesRequest, raw)
    error = caught.value
    assert error.status == 400 and error.error_type == "invalid_request_error"
    assert expected in error.message
    assert json.loads(error.body())["error"] == {"type": "invalid_request_error", "message": error.message}


def test_source_type_is_not_called_a_content_block():
    with pytest.raises(GatewayError) as caught:
        parse(MessagesRequest, one_block({"type": "document", "source": {"type": "zzz"}}))
    assert "content block" not in caught.value.message
    assert "'zzz'" in caught.value.message and "source.type" in caught.value.message


def test_unknown_fields_accepted():
    request = parse(MessagesRequest, body(
        context_management={"edits": [{"type": "clear_tool_uses_20250919"}]},
        output_config={"effort": "high", "format": {"type": "json_schema"}},
        safeguards={"x": 1}, diagnostics=None,
        messages=[{"role": "user", "content": [{"type": "text", "text": "hi", "cache_control": {"type": "ephemeral"},
                                                "citations": None, "brand_new_field": [1, 2]}]}],
        tools=[{"name": "Read", "input_schema": {"type": "object"}, "cache_control": {"type": "ephemeral"},
                "input_examples": [{}], "strict": True}],
    ))
    assert request.model == "claude-sonnet-4-5" and request.max_tokens == 1024
    assert request.output_config.effort == "high"
    assert request.messages[0].content[0].text == "hi"


def test_valid_claude_code_shaped_request_parses():
    request = parse(MessagesRequest, body(
        system=[{"type": "text", "text": "You are Claude Code.", "cache_control": {"type": "ephemeral"}}],
        messages=[{"role": "user", "content": "go"},
                  {"role": "assistant", "content": [{"type": "thinking", "thinking": "t", "signature": "s"},
                                                    {"type": "tool_use", "id": "toolu_1", "name": "Bash",
                                                     "input": {"command": "ls"}}]},
                  {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "a",
                                                "cache_control": {"type": "ephemeral"}}]},
                  {"role": "system", "content": "reminder"}],
        thinking={"type": "adaptive"}, stream=True, metadata={"user_id": "u" * 150},
        tools=[{"type": "web_search_20250305", "name": "web_search", "max_uses": 5}],
    ))
    assert [m.role for m in request.messages] == ["user", "assistant", "user", "system"]
    assert request.tools[0].is_custom is False


# ---------------------------------------------------------------- count_tokens


def png(width: int, height: int) -> bytes:
    """A tiny but valid PNG: signature, IHDR with the given size, one empty IDAT, IEND."""
    def part(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + part(b"IHDR", header) + part(b"IDAT", zlib.compress(b"")) + part(b"IEND", b"")


def tokens(**fields) -> int:
    data = {"model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": "hi"}], **fields}
    return count_tokens(parse(CountTokensRequest, json.dumps(data).encode()))


def image_message(data: bytes, media_type: str = "image/png") -> list[dict]:
    return [{"role": "user", "content": [
        {"type": "image", "source": {"type": "base64", "media_type": media_type,
                                     "data": base64.b64encode(data).decode()}},
        {"type": "text", "text": "describe"}]}]


def test_tokens_grow_with_text():
    sentence = "The quick brown fox jumps over the lazy dog. "
    counts = [tokens(messages=[{"role": "user", "content": sentence * n}]) for n in (1, 10, 100)]
    assert counts[0] < counts[1] < counts[2]
    assert 8 <= counts[0] <= 20
    assert 800 <= counts[2] <= 1500  # about 10 tokens per sentence


def test_text_tokens_plausible():
    assert text_tokens("") == 0
    assert 2 <= text_tokens("Hello, world!") <= 5
    assert text_tokens("antidisestablishmentarianism") > text_tokens("cat")
    assert 8 <= text_tokens("日本語のテキストです。") <= 14


def test_more_messages_more_tokens():
    one = tokens(messages=[{"role": "user", "content": "hello there"}])
    three = tokens(messages=[{"role": "user", "content": "hello there"}, {"role": "assistant", "content": "hi!"},
                             {"role": "user", "content": "how are you doing today?"}])
    assert three > one


def test_tools_add_tokens():
    tool = {"name": "Read", "description": "Read a file from the local filesystem.",
            "input_schema": {"type": "object", "properties": {"file_path": {"type": "string",
                                                                           "description": "Absolute path"}},
                             "required": ["file_path"]}}
    without = tokens()
    with_one = tokens(tools=[tool])
    with_two = tokens(tools=[tool, dict(tool, name="Write", description="Write a file to disk, replacing it.")])
    assert with_one - without >= TOOLS_OVERHEAD
    assert with_two - with_one > 10


def test_system_counted():
    without = tokens()
    with_string = tokens(system="You are a helpful assistant that answers questions about the weather.")
    with_blocks = tokens(system=[{"type": "text", "text": "You are a helpful assistant",
                                  "cache_control": {"type": "ephemeral"}},
                                 {"type": "text", "text": "that answers questions about the weather."}])
    assert with_string - without >= 10
    assert abs(with_blocks - with_string) <= 2


def test_tool_use_and_results_counted():
    without = tokens()
    history = tokens(messages=[
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "Bash",
                                           "input": {"command": "find . -name '*.py' | xargs wc -l"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1",
                                      "content": "120 a.py\n300 b.py\n420 total"}]}])
    assert history - without >= 20


def test_png_header_dimensions():
    assert image_dimensions(png(1000, 500)) == (1000, 500)
    assert image_dimensions(png(1, 1)) == (1, 1)
    assert image_dimensions(b"not an image") is None


@pytest.mark.parametrize(("width", "height"), [(1000, 500), (200, 200), (1000, 1000), (800, 600), (1568, 400)])
def test_image_priced_by_area(width, height):
    text_only = tokens(messages=[{"role": "user", "content": [{"type": "text", "text": "describe"}]}])
    with_image = tokens(messages=image_message(png(width, height)))
    expected = width * height / 750
    assert abs((with_image - text_only) - expected) <= max(5, expected * 0.02)


def test_large_image_priced_after_resize():
    text_only = tokens(messages=[{"role": "user", "content": [{"type": "text", "text": "describe"}]}])
    with_image = tokens(messages=image_message(png(4000, 3000)))
    assert 1400 <= with_image - text_only <= 1600  # resized to ~1.15 megapixels, never 16000 tokens


def test_image_not_priced_by_base64_size():
    small = tokens(messages=image_message(png(100, 100) + b"\0" * 200_000))
    assert small < 100


# -- tools seen before are not parsed again (tool_cache.ToolCache)

SCHEMA = {"type": "object", "properties": {f"p{i}": {"type": "string", "description": "An argument " * 4}
                                           for i in range(4)}, "required": ["p0"]}
TOOLS = [{"name": f"Tool{i}", "description": "Does a useful thing. " * 6, "input_schema": SCHEMA} for i in range(6)]
OTHER_TOOLS = [{"name": "Small", "input_schema": {"type": "object"}}]
TOOLS_JSON = json.dumps(TOOLS, separators=(",", ":"))


def compact(value: object) -> bytes:
    """As Claude Code writes its bodies (JSON.stringify): no spaces."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


@pytest.fixture
def known_tools() -> ToolCache:
    known = ToolCache()
    parse(MessagesRequest, compact({**BASE, "tools": TOOLS}), tools=known)
    return known


def full_parse(raw: bytes) -> dict | str:
    """What the request is when no tools are known: its fields, or the 400 it gets."""
    try:
        return parse(MessagesRequest, raw).model_dump()
    except GatewayError as error:
        return error.message


def test_known_tools_are_reused_and_the_request_is_what_a_full_parse_gives(known_tools):
    first = parse(MessagesRequest, compact({**BASE, "tools": TOOLS}), tools=known_tools)
    turn = compact({**BASE, "messages": [{"role": "user", "content": "next turn"}], "tools": TOOLS, "stream": True})
    second = parse(MessagesRequest, turn, tools=known_tools)
    assert second.tools is first.tools
    assert second.model_dump() == full_parse(turn)
    assert second.messages[0].content == "next turn" and second.stream is True
    counted = parse(CountTokensRequest, compact({"model": "m", "messages": BASE["messages"], "tools": TOOLS}),
                    tools=known_tools)
    assert counted.tools is first.tools


NESTED_INPUT = {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "Tool1",
                                                  "input": {"tools": TOOLS}}]}
TRICKY_BODIES = {
    # The known array at the top level, the last "tools": in the body: the only case the known tools serve.
    "same tools, another turn": compact({**BASE, "tools": TOOLS, "max_tokens": 7}),
    # The last "tools": is a tool input's key holding the same bytes; the top-level tools come first.
    "same array nested after the tools": compact({"tools": OTHER_TOOLS, **BASE,
                                                  "messages": [BASE["messages"][0], NESTED_INPUT,
                                                               BASE["messages"][0]]}),
    "known tools first, the same nested after": compact({"tools": TOOLS, **BASE,
                                                         "messages": [BASE["messages"][0], NESTED_INPUT,
                                                                      BASE["messages"][0]]}),
    # Duplicate keys: the last one counts, with or without the known array.
    "known tools, then other tools": compact(BASE)[:-1] + b',"tools":' + TOOLS_JSON.encode()
    + b',"tools":' + compact(OTHER_TOOLS) + b"}",
    "other tools, then known tools": compact(BASE)[:-1] + b',"tools":' + compact(OTHER_TOOLS)
    + b',"tools":' + TOOLS_JSON.encode() + b"}",
    # The array's text inside a string: escaped there, so never taken for the array.
    "the array as text": compact({**BASE, "messages": [{"role": "user", "content": '"tools":' + TOOLS_JSON}]}),
    "spaces": json.dumps({**BASE, "tools": TOOLS}).encode(),
    "the known array then more": compact({**BASE})[:-1] + b',"tools":' + TOOLS_JSON.encode() + b"]}",
    "the known array cut short": compact({**BASE})[:-1] + b',"tools":' + TOOLS_JSON[:-1].encode() + b"}",
    "an invalid field beside them": compact({**BASE, "max_tokens": "many", "tools": TOOLS}),
    "tools in a non-object body": b'["tools":' + TOOLS_JSON.encode() + b"]",
    "a space after the known array": compact(BASE)[:-1] + b',"tools":' + TOOLS_JSON.encode() + b' ,"stream":true}',
}


@pytest.mark.parametrize("raw", TRICKY_BODIES.values(), ids=TRICKY_BODIES.keys())
def test_a_body_with_known_tools_is_read_as_a_full_parse_reads_it(known_tools, raw):
    try:
        got: dict | str = parse(MessagesRequest, raw, tools=known_tools).model_dump()
    except GatewayError as error:
        got = error.message
    assert got == full_parse(raw)


def test_converters_leave_known_tools_as_they_were(known_tools):
    from ccany_addon.converters.common import UpstreamTarget
    from ccany_addon.upstreams.dialects import CONVERTING

    request = parse(MessagesRequest, compact({**BASE, "tools": TOOLS}), tools=known_tools)
    for name, dialect in CONVERTING.items():
        dialect.to_request(request, UpstreamTarget("gemini-2.5-pro" if name == "gemini" else "gpt-4o",
                                                   tools=known_tools))
    count_tokens(request)
    again = parse(MessagesRequest, compact({**BASE, "tools": TOOLS}), tools=known_tools)
    assert again.tools is request.tools and again.model_dump() == full_parse(compact({**BASE, "tools": TOOLS}))


def test_nesting_deeper_than_the_stack_is_a_400_not_a_crash():
    body = b'{"model": "m", "max_tokens": 5, "messages": [], "x": ' + b"[" * 3000 + b"]" * 3000 + b"}"
    with pytest.raises(GatewayError) as raised:
        parse(MessagesRequest, body)
    assert raised.value.status == 400 and "not valid JSON" in raised.value.message


def test_tool_reference_blocks_in_a_tool_result_are_counted():
    body = {"model": "m", "messages": [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t",
                                                                     "content": [{"type": "tool_reference",
                                                                                  "tool_name": "WebFetch"}]}]}]}
    assert count_tokens(parse(CountTokensRequest, json.dumps(body).encode())) > 0


@pytest.mark.parametrize("parse_twice", [False, True], ids=["first-parse", "known-tools"])
def test_unknown_content_blocks_are_accepted_as_they_came(known_tools, parse_twice):
    """Open lists: a block of a type the gateway does not know is no 400, anywhere a content block can stand."""
    blocks = [{"type": "hologram", "depth": [1, 2]}, {"type": "text", "text": "hi"},
              {"type": "tool_result", "tool_use_id": "t", "content": [{"type": "smell", "note": "x"},
                                                                      {"type": "text", "text": "ok"}]}]
    raw = compact({**BASE, "tools": TOOLS, "messages": [{"role": "user", "content": blocks}]})
    request = parse(MessagesRequest, raw)
    if parse_twice:
        request = parse(MessagesRequest, raw)
    content = request.messages[0].content
    assert isinstance(content[0], schema.UnknownBlock) and isinstance(content[2].content[0], schema.UnknownBlock)
    assert schema.as_dict(content[0]) == blocks[0]
    assert schema.as_dict(content[2].content[0]) == {"type": "smell", "note": "x"}


def test_unknown_blocks_are_counted_never_refused():
    words = "a block of a future type with some words in it " * 10
    known = {"model": "m", "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]}
    unknown = {"model": "m", "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"},
                                                                       {"type": "hologram", "caption": words}]}]}
    assert count_tokens(parse(CountTokensRequest, json.dumps(unknown).encode())) > \
        count_tokens(parse(CountTokensRequest, json.dumps(known).encode())) + 50


def test_tool_changes_parse():
    addition = {"type": "tool_addition", "tool": {"type": "tool_definition", "definition": {
        "name": "Late", "input_schema": {"type": "object"}}}}
    request = parse(MessagesRequest, body(messages=[{"role": "user", "content": "hi"},
                                                    {"role": "system", "content": [addition]}]))
    assert isinstance(request.messages[1].content[0], schema.ToolChangeBlock)
