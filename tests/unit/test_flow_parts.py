"""Content-addressed bodies (`flowlog/parts.py`, `flowlog/bodies.py`): packing and reassembly of any body, what a
growing Claude Code conversation stores, manifests' size, prompt-cache segments and cache forensics."""

from __future__ import annotations

import json
import sqlite3
import zlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ccany_addon.flowlog import schema
from ccany_addon.flowlog.bodies import BodyPacker, Sessions, shared_prefix
from ccany_addon.flowlog.part_store import PartStore, body_text, previous_body
from ccany_addon.flowlog.parts import (
    CHUNK,
    WHOLE_PART_MIN,
    MissingPart,
    Packed,
    Prompt,
    pack,
    pack_text,
    part_count,
    part_hash,
    unpack,
    unpack_bytes,
)
from ccany_addon.util.json_codec import dumps

FIXTURE = Path(__file__).resolve().parent.parent / "fixtures" / "claude_code_2_1_332" / "main.json"


def fetch_from(store: dict[str, bytes]):
    """A fetch over a dict of parts: gives what it has, leaves out what it has not (as the DB does)."""
    return lambda hashes: {digest: store[digest] for digest in hashes if digest in store}


def roundtrip(text: str) -> str:
    packed = pack(text)
    return unpack(packed.manifest, fetch_from(packed.parts))


def ordered(text: str) -> object:
    """A JSON text's value with every object as its (key, value) pairs in order: equal only when the keys are in
    the same order too."""
    return json.loads(text, object_pairs_hook=list)


# -- any body comes back: a JSON object as the same value, keys in their order; anything else byte for byte

_INT64 = st.integers(min_value=-(2**63), max_value=2**64 - 1)
_SCALARS = (st.none() | st.booleans() | _INT64 | st.floats(allow_nan=False, allow_infinity=False) | st.text()
            | st.builds(lambda piece, times: piece * times, st.text(min_size=1, max_size=4), st.integers(0, 150)))
_REFERENCE_LOOKALIKES = st.sampled_from([
    {"$part": "x"}, {"$parts": []}, {"$parts": ["0123456789abcdef0123"]}, {"$chunks": ["x"], "$parts": []},
    {"$part": {"$parts": []}}, [{"$part": "x"}], "$part",
])
_VALUES = st.recursive(
    _SCALARS | _REFERENCE_LOOKALIKES,
    lambda children: st.lists(children, max_size=6) | st.dictionaries(st.text(max_size=8), children, max_size=6),
    max_leaves=25,
)
# Lists around the chunk size: none, part of one, one, one and a bit, two, two and a bit.
_LONG_LISTS = st.sampled_from([0, 1, 15, 16, 17, 31, 32, 33, 40]).flatmap(
    lambda size: st.lists(_SCALARS | st.dictionaries(st.text(max_size=3), _SCALARS, max_size=2),
                          min_size=size, max_size=size))
_KEYS = st.sampled_from(["messages", "system", "tools", "contents", "input", "model", "metadata", "stream",
                         "$part", "$parts", "$chunks", "json", "text"]) | st.text(max_size=10)
_BODIES = st.lists(st.tuples(_KEYS, _VALUES | _LONG_LISTS), max_size=8, unique_by=lambda pair: pair[0]).map(dict)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=_BODIES, ensure_ascii=st.booleans(), indent=st.sampled_from([None, 1]))
def test_any_json_object_comes_back_as_the_same_value_with_its_keys_in_order(body, ensure_ascii, indent):
    text = json.dumps(body, ensure_ascii=ensure_ascii, indent=indent)
    packed = pack(text)
    again = unpack(packed.manifest, fetch_from(packed.parts))
    assert json.loads(again) == body
    assert ordered(again) == ordered(text)
    assert unpack_bytes(packed.manifest, fetch_from(packed.parts)) == again.encode()


_CUT_OBJECTS = st.builds(lambda body, share: (text := json.dumps(body))[: int(len(text) * share)],
                         _BODIES, st.floats(0, 0.99))
_TEXTS = (st.text() | _CUT_OBJECTS | st.lists(_VALUES, max_size=20).map(json.dumps) | _VALUES.map(json.dumps)
          | st.sampled_from(["", " ", "{", "{}x", '{"a": 1', "[1, 2", "null", "NaN", '{"a": NaN}', "\ufeff{}",
                             '{"a": 1e400}', "event: ping\ndata: {}\n\n"]))


@settings(max_examples=200, deadline=None)
@given(text=_TEXTS)
def test_a_body_that_is_not_a_json_object_comes_back_byte_for_byte(text):
    kept_whole = pack_text(text)
    assert unpack(kept_whole.manifest, fetch_from(kept_whole.parts)) == text
    assert part_count(kept_whole.manifest) == 1 and kept_whole.prompt is None
    try:
        is_object = isinstance(json.loads(text), dict)
    except ValueError:
        is_object = False
    again = roundtrip(text)
    if again != text:  # only a JSON object may come back in another layout, and then as the same value
        assert is_object and ordered(again) == ordered(text)


@pytest.mark.parametrize("body", [
    {"$part": "x"},
    {"$parts": []},
    {"$chunks": ["abc"], "$parts": ["def"]},
    {"a": {"$part": "x"}},
    {"a": {"$parts": []}, "b": {"$chunks": [], "$parts": ["0" * 20]}},
    {"tools": {"$part": "0" * 20}, "system": {"$parts": ["0" * 20]}},
    {"messages": [{"$part": "x"}, {"$parts": []}] * 20, "system": "a string, not a list"},
    {"json": {"$part": "x"}, "text": "0" * 20},
])
def test_a_value_that_looks_like_a_reference_comes_back_as_itself(body):
    text = json.dumps(body)
    assert ordered(roundtrip(text)) == ordered(text)


# -- a Claude Code conversation growing turn by turn


def strip_markers(value: object) -> object:
    if isinstance(value, dict):
        return {key: strip_markers(item) for key, item in value.items() if key != "cache_control"}
    if isinstance(value, list):
        return [strip_markers(item) for item in value]
    return value


def _marked(message: dict) -> dict:
    """The message with Claude Code's cache marker on its last content block."""
    content = [dict(block) for block in message["content"]]
    content[-1]["cache_control"] = {"type": "ephemeral"}
    return {**message, "content": content}


def _turn_messages(turn: int) -> list[dict]:
    """An assistant tool call and the user's tool result, different every turn, ≈ 2.3 KB."""
    source = "".join(f"    line_{turn}_{number} = compute({turn}, {number})  # {'x' * (number % 7)}\n"
                     for number in range(40))
    return [
        {"role": "assistant", "content": [
            {"type": "text", "text": f"Reading part {turn} of the module."},
            {"type": "tool_use", "id": f"toolu_{turn:04d}", "name": "Read",
             "input": {"file_path": f"/src/module_{turn}.py"}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": f"toolu_{turn:04d}", "content": source}]},
    ]


def claude_code_session(turns: int) -> list[tuple[dict, dict, list[dict]]]:
    """Each turn's request body as Claude Code builds it (the fixture's tools and system prompt, a billing header
    that changes every turn, the cache marker on the newest message), with its billing block and new messages."""
    fixture = json.loads(FIXTURE.read_text())
    first = [strip_markers(message) for message in fixture["messages"]]
    history: list[dict] = list(first)
    out = []
    for turn in range(turns):
        new = _turn_messages(turn) if turn else []
        history += new
        billing = {"type": "text", "text": f"x-anthropic-billing-header: cc_version=2.1.332.{turn:03x}; "
                                           "cc_entrypoint=cli;"}
        messages = [*history[:-1], _marked(history[-1])]
        body = {**fixture, "messages": messages, "system": [billing, *fixture["system"][1:]]}
        out.append((body, billing, new))
    return out


def _is_chunk(data: bytes, known: set[str]) -> bool:
    try:
        hashes = json.loads(data)
    except ValueError:
        return False
    return isinstance(hashes, list) and len(hashes) == CHUNK and all(digest in known for digest in hashes)


def test_each_turn_of_a_growing_conversation_stores_only_what_the_turn_changed():
    session = claude_code_session(100)
    stored: dict[str, bytes] = {}
    whole_bodies = 0
    previous_last: dict | None = None
    for number, (body, billing, new) in enumerate(session):
        text = json.dumps(body)
        whole_bodies += len(text)
        packed = pack(text)
        assert json.loads(unpack(packed.manifest, fetch_from({**stored, **packed.parts}))) == body
        fresh = {digest: data for digest, data in packed.parts.items() if digest not in stored}
        stored.update(packed.parts)
        if number:
            expected = {part_hash(dumps(value)) for value in [billing, *new[:-1], _marked(new[-1])]}
            assert previous_last is not None
            expected.add(part_hash(dumps(previous_last)))  # its marker moved on: it is sent without it now
            unexpected = {digest for digest, data in fresh.items()
                          if digest not in expected and not _is_chunk(data, set(stored))}
            assert not unexpected, [fresh[digest][:120] for digest in unexpected]
            assert len(fresh) <= len(expected) + 3  # at most one chunk per level of the tree fills up
        previous_last = strip_markers(body["messages"][-1])
    final = len(json.dumps(session[-1][0]))
    assert final > 200_000
    assert sum(map(len, stored.values())) < 3 * final
    assert whole_bodies > 40 * final  # what storing each turn's body whole would have cost


def test_a_manifest_stays_small_however_long_the_conversation():
    fixture = json.loads(FIXTURE.read_text())
    messages = [message for turn in range(150) for message in _turn_messages(turn)]
    assert len(messages) == 300
    packed = pack(json.dumps({**fixture, "messages": messages}))
    assert len(packed.manifest.encode()) < 2048
    wholes = sum(1 for name, value in fixture.items()  # the tools, metadata...: each a part
                 if name not in ("system", "messages") and len(dumps(value)) >= WHOLE_PART_MIN)
    assert wholes >= 2 and part_count(packed.manifest) == wholes + len(fixture["system"]) + 300
    tree = json.loads(packed.manifest)["json"]["messages"]
    # 300 = 4 chunks of 64 + 5 chunks of 8 + 4 (CHUNK 8): 13 references instead of 300
    assert [len(level) for level in tree["$chunks"]] == [300 // CHUNK**2, 300 % CHUNK**2 // CHUNK]
    assert len(tree["$parts"]) == 300 % CHUNK


# -- prompt-cache segments


def labels(prompt: Prompt) -> list[str]:
    return [prompt.label(index) for index in range(len(prompt.keys))]


def test_segments_follow_the_prompt_cache_order_whatever_the_bodys_key_order():
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}],
            "system": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
            "tools": [{"name": "Read", "input_schema": {}}], "max_tokens": 5}
    packed = pack(json.dumps(body))
    assert packed.prompt is not None
    assert labels(packed.prompt) == ["tools", "system[0]", "system[1]", "messages[0]", "messages[1]"]
    assert packed.prompt.sizes == [len(dumps(body["tools"])), *(len(dumps(block)) for block in body["system"]),
                                   *(len(dumps(message)) for message in body["messages"])]
    with pytest.raises(IndexError):
        packed.prompt.label(5)
    assert labels(pack(json.dumps({"system": "one string", "model": "m"})).prompt) == ["system"]
    assert pack_text("not json").prompt is None and pack("[1, 2]").prompt is None


def test_moving_the_cache_marker_keeps_a_segments_key_but_not_its_part():
    plain = {"role": "user", "content": [{"type": "text", "text": "question"}]}
    before = pack(json.dumps({"messages": [_marked(plain)]}))
    after = pack(json.dumps({"messages": [plain, {"role": "assistant", "content": "answer"}]}))
    assert before.prompt is not None and after.prompt is not None
    assert before.prompt.keys[0] == after.prompt.keys[0]
    assert set(before.parts).isdisjoint(after.parts)  # the stored bytes do differ
    other = pack(json.dumps({"messages": [{"role": "user", "content": [{"type": "text", "text": "other"}]}]}))
    assert other.prompt is not None and other.prompt.keys[0] != before.prompt.keys[0]


def test_a_missing_part_raises_and_the_store_shows_a_note_instead(tmp_path):
    messages = [{"role": "user", "content": f"message {number}"} for number in range(20)]
    packed = pack(json.dumps({"model": "m", "messages": messages}))
    gone = part_hash(dumps(messages[18]))
    store = {digest: data for digest, data in packed.parts.items() if digest != gone}
    with pytest.raises(MissingPart) as raised:
        unpack(packed.manifest, fetch_from(store))
    assert raised.value.args[0] == gone
    chunk = json.loads(packed.manifest)["json"]["messages"]["$chunks"][-1][0]
    with pytest.raises(MissingPart):
        unpack(packed.manifest, fetch_from({d: b for d, b in packed.parts.items() if d != chunk}))

    db = schema.open_db(str(tmp_path / "f.db"))
    with db.conn:
        PartStore().save(db.conn, packed.parts)
    assert json.loads(body_text(db.conn, None, packed.manifest))["messages"] == messages
    assert body_text(db.conn, "inline body", packed.manifest) == "inline body"
    assert body_text(db.conn, None, None) is None
    with db.conn:
        db.execute("DELETE FROM parts WHERE hash = ?", [gone])
    note = body_text(db.conn, None, packed.manifest)
    assert note is not None and gone in note and "no longer stored" in note
    assert db.execute("SELECT ccany_body(NULL, ?)", [packed.manifest]).fetchone()[0] == note
    db.close()


def _with_another_dictionary(data: bytes) -> bytes:
    compressor = zlib.compressobj(6, zdict=b"a dictionary of a later version")
    return compressor.compress(data) + compressor.flush()


@pytest.mark.parametrize("stored", [b"not zlib at all", _with_another_dictionary(b'{"role":"user"}')])
def test_a_part_that_cannot_be_read_leaves_a_note_not_an_error(tmp_path, stored: bytes):
    """A part a later version compressed with its own dictionary, or a damaged one: the body, the SQL functions and
    the writer's look back at a session go on, saying which part it is."""
    messages = [{"role": "user", "content": f"message {number}"} for number in range(20)]
    packed = pack(json.dumps({"model": "m", "messages": messages}))
    bad = part_hash(dumps(messages[3]))
    db = schema.open_db(str(tmp_path / "f.db"))
    with db.conn:
        PartStore().save(db.conn, packed.parts)
        db.execute("UPDATE parts SET body = ? WHERE hash = ?", [stored, bad])
        db.execute("INSERT INTO flows (id, started_at, session_id, client_model, client_request_parts) "
                   "VALUES ('req_1', '2026-12-05 10:00:00.000', 's', 'm', ?)", [packed.manifest])
    note = body_text(db.conn, None, packed.manifest)
    assert note is not None and note.startswith(f"(ccany: part {bad} cannot be read: ")
    assert db.execute("SELECT ccany_body(NULL, ?)", [packed.manifest]).fetchone()[0] == note
    assert db.execute("SELECT ccany_part(?)", [bad]).fetchone()[0] == note
    later = {"id": "req_2", "started_at": "2026-12-05 10:01:00.000", "session_id": "s", "agent_id": None,
             "client_model": "m"}
    assert previous_body(db.conn, later, "client_request") is None
    db.close()


# -- cache forensics: what a request shares with the previous one of its session


_TOOLS = [{"name": "Read", "description": "reads a file " * 30, "input_schema": {"type": "object"}}]
_SYSTEM = [{"type": "text", "text": "billing"}, {"type": "text", "text": "You are Claude Code."}]


def request(messages: int, system: list[dict] = _SYSTEM, tools: list[dict] = _TOOLS) -> Packed:
    body = {"model": "m", "tools": tools, "system": system,
            "messages": [{"role": "user" if n % 2 == 0 else "assistant", "content": f"turn {n}"}
                         for n in range(messages)]}
    return pack(json.dumps(body))


def prompt(packed: Packed) -> Prompt:
    assert packed.prompt is not None
    return packed.prompt


def test_a_request_that_only_appends_shares_all_of_the_previous_one():
    before, now = prompt(request(3)), prompt(request(5))
    prefix = shared_prefix(before, now)
    assert (prefix.parts, prefix.broken_at) == (len(before.keys), None) == (1 + 2 + 3, None)
    assert prefix.bytes == sum(before.sizes) and prefix.total == sum(now.sizes) > prefix.bytes
    same = shared_prefix(now, now)
    assert (same.parts, same.broken_at, same.bytes) == (len(now.keys), None, same.total)


def test_the_first_changed_or_removed_part_breaks_the_prefix():
    changed_system = [{"type": "text", "text": "billing 2"}, _SYSTEM[1]]
    prefix = shared_prefix(prompt(request(3)), prompt(request(4, system=changed_system)))
    assert (prefix.parts, prefix.broken_at) == (1, "system[0] changed")  # the tools come first and are the same
    assert prefix.bytes == len(dumps(_TOOLS))
    tools = shared_prefix(prompt(request(3)), prompt(request(3, tools=[*_TOOLS, {"name": "Write"}])))
    assert (tools.parts, tools.broken_at, tools.bytes) == (0, "tools changed", 0)
    edited = prompt(request(6))
    middle = shared_prefix(prompt(request(6)), prompt(pack(json.dumps({
        "model": "m", "tools": _TOOLS, "system": _SYSTEM,
        "messages": [{"role": "user", "content": "turn 0"}, {"role": "assistant", "content": "edited"}]}))))
    assert (middle.parts, middle.broken_at) == (3 + 1, "messages[1] changed")
    shorter = shared_prefix(edited, prompt(request(4)))  # compacted or rewound: fewer messages
    assert (shorter.parts, shorter.broken_at) == (3 + 4, "messages[4] removed")
    no_system = shared_prefix(prompt(request(2)), prompt(pack(json.dumps({"tools": _TOOLS}))))
    assert (no_system.parts, no_system.broken_at) == (1, "system[0] removed")


def test_sessions_are_kept_apart_and_the_least_recently_seen_is_forgotten():
    sessions = Sessions(limit=2)
    sessions.remember(("a",), prompt(request(2)), None)
    sessions.remember(("b",), prompt(request(9)), None)
    assert sessions.get(("a",)).prompt == prompt(request(2))  # a's request, not b's
    sessions.remember(("a",), prompt(request(4)), None)
    sessions.remember(("c",), prompt(request(1)), None)  # three sessions: b, seen least recently, goes
    assert sessions.get(("b",)) is None
    assert sessions.get(("a",)).prompt == prompt(request(4)) and sessions.get(("c",)) is not None


def test_past_their_byte_bound_the_oldest_sessions_lose_their_layout_not_their_prompt():
    layouts = [pack(dumps({"model": "m", "messages": [{"role": "user", "content": "x" * 1000 + str(n)}]})).layout
               for n in range(3)]
    assert all(layout is not None for layout in layouts)
    sessions = Sessions(layout_bytes=2 * 2 * 1100)  # two layouts of about 1.1 KB, counted twice (bytes and parts)
    for n, layout in enumerate(layouts):
        sessions.remember((n,), prompt(request(1)), layout)
    assert sessions.get((0,)).layout is None and sessions.get((0,)).prompt == prompt(request(1))
    assert sessions.get((1,)).layout is layouts[1] and sessions.get((2,)).layout is layouts[2]


def _row(request_id: str, session: str | None, messages: int, **extra: object) -> dict:
    body = json.dumps({"model": "claude-x", "tools": _TOOLS, "system": _SYSTEM,
                       "messages": [{"role": "user", "content": f"turn {n}"} for n in range(messages)]})
    upstream = json.dumps({"model": "gpt-x", "tools": _TOOLS, "messages": [
        {"role": "system", "content": "You are Claude Code."},
        *({"role": "user", "content": f"turn {n}"} for n in range(messages))]})
    return {"id": request_id, "session_id": session, "client_model": "claude-x", "provider": "openai",
            "upstream_model": "gpt-x", "client_request": body, "upstream_request": upstream,
            "upstream_response": "data: {not json}\n\n", "client_response": '{"content": []}',
            "events": '[[1.5,"message_start",null,300]]', "conversation": f"turn {messages - 1}", **extra}


_FORENSICS = ("prefix_parts", "prefix_break", "upstream_prefix_parts", "upstream_prefix_break",
              "upstream_prefix_bytes", "upstream_prompt_bytes")


def test_body_packer_replaces_bodies_by_manifests_and_fills_forensics_per_session():
    packer = BodyPacker()
    parts: dict[str, bytes] = {}
    first, second, lone = _row("req_1", "s1", 2), _row("req_2", "s1", 4), _row("req_3", None, 4)
    originals = {row["id"]: dict(row) for row in (first, second, lone)}
    for row in (first, second, lone):
        packer.pack_row(row, parts)
    for row in (first, second, lone):
        for name, manifest in schema.BODY_MANIFESTS.items():
            assert row[name] is None and row[manifest] is not None
            again = unpack(row[manifest], fetch_from(parts))
            if name.endswith("request"):  # JSON objects: the same value
                assert ordered(again) == ordered(originals[row["id"]][name])
            else:  # answers are kept whole, byte for byte
                assert again == originals[row["id"]][name]
    assert not any(first.get(column) for column in _FORENSICS[:5])
    upstream = prompt(pack(originals["req_2"]["upstream_request"]))
    assert first["upstream_prompt_bytes"] == sum(prompt(pack(originals["req_1"]["upstream_request"])).sizes)
    assert (second["prefix_parts"], second["prefix_break"]) == (1 + 2 + 2, None)
    assert (second["upstream_prefix_parts"], second["upstream_prefix_break"]) == (1 + 1 + 2, None)
    assert second["upstream_prefix_bytes"] == sum(upstream.sizes[:4])
    assert second["upstream_prompt_bytes"] == sum(upstream.sizes)
    assert all(lone.get(column) is None for column in _FORENSICS)
    # Another session, or the same session asking another model, starts its own comparison.
    other = _row("req_4", "s2", 6)
    packer.pack_row(other, parts)
    assert other.get("prefix_parts") is None and other.get("upstream_prefix_parts") is None
    switched = _row("req_5", "s1", 6, client_model="claude-y")
    packer.pack_row(switched, parts)
    assert switched.get("prefix_parts") is None
    # A body that is not JSON is kept whole and gives no forensics.
    text = _row("req_6", "s1", 0, client_request="not json", upstream_request="not json either")
    packer.pack_row(text, parts)
    assert unpack(text["client_request_parts"], fetch_from(parts)) == "not json"
    assert text.get("prefix_parts") is None


def test_sql_can_read_a_part_and_a_body(tmp_path):
    packed = pack(json.dumps({"model": "m", "messages": [{"role": "user", "content": "é"}] * 17}))
    db = schema.open_db(str(tmp_path / "f.db"))
    with db.conn:
        PartStore().save(db.conn, packed.parts)
    one = part_hash(dumps({"role": "user", "content": "é"}))
    assert db.execute("SELECT ccany_part(?)", [one]).fetchone()[0] == '{"role":"user","content":"é"}'
    assert db.execute("SELECT ccany_part(?)", ["0" * 20]).fetchone()[0] is None
    assert db.execute("SELECT ccany_part(NULL)").fetchone()[0] is None
    plain = sqlite3.connect(str(tmp_path / "f.db"))
    from ccany_addon.flowlog.part_store import register_functions

    register_functions(plain)  # what Datasette's connection gets
    body = plain.execute("SELECT ccany_body(NULL, ?)", [packed.manifest]).fetchone()[0]
    assert json.loads(body)["messages"][16] == {"role": "user", "content": "é"}
    plain.close()
    db.close()


@pytest.mark.parametrize("number", [2**64 + 1, -(2**63) - 1, 123456789012345678901234567890])
def test_an_integer_beyond_64_bits_comes_back_exact(number):
    body = {"model": "m", "max_tokens": number, "messages": [{"role": "user", "content": [number]}]}
    for text in (json.dumps(body), json.dumps(body, separators=(",", ":"))):
        packed = pack(text)
        again = unpack(packed.manifest, lambda hashes, packed=packed: {h: packed.parts[h] for h in hashes})
        assert json.loads(again) == json.loads(text)
