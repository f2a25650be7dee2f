"""Long strings stored once however many parts hold them (`flowlog/part_strings.py`, and `PartStore` on a real
SQLite file): a part's template puts back byte for byte, whichever part a string came from and however it is
written there (a JSON string, or plain text in a text part); a string is stored once, and marked used with every
part that holds it, so that pruning keeps it while a kept flow names such a part."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ccany_addon.flowlog import schema
from ccany_addon.flowlog.bodies import BodyPacker
from ccany_addon.flowlog.part_compression import decompress
from ccany_addon.flowlog.part_store import PartStore, fetch_parts, with_bodies
from ccany_addon.flowlog.part_strings import LONG_STRING, cut_out, put_back, strings_in
from ccany_addon.flowlog.parts import part_hash
from ccany_addon.flowlog.prune import Pruning
from ccany_addon.flowlog.store import Stored, store_batch
from ccany_addon.util.json_codec import dumps, loads
from ccany_addon.util.utc import utc_day

# Any character but lone surrogates (which JSON text cannot hold), with what JSON escapes made likely.
_CHARS = st.characters(exclude_categories=("Cs",)) | st.sampled_from(['"', "\\", "\n", "\r", "\t", "/", "é", "😀"])
_SHORT = st.text(_CHARS, max_size=30)
# A long string: a head, a piece repeated to LONG_STRING characters at least, a tail (cheaper to draw than 512
# independent characters, and as varied where it matters: at its ends).
_LONG = st.builds(lambda head, piece, tail: head + piece * (LONG_STRING // len(piece) + 1) + tail,
                  st.text(_CHARS, max_size=40), st.text(_CHARS, min_size=1, max_size=6), st.text(_CHARS, max_size=40))
_SCALARS = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | _SHORT


def _values(pool: list[str]) -> st.SearchStrategy:
    """JSON values whose strings are short ones or the pool's long ones, a long one also as an object's key."""
    leaves = _SCALARS | st.sampled_from(pool) | _LONG
    return st.recursive(
        leaves,
        lambda children: st.lists(children, max_size=4)
        | st.dictionaries(_SHORT | st.sampled_from(pool), children, max_size=4),
        max_leaves=8,
    )


@st.composite
def _shared_parts(draw: st.DrawFn) -> tuple[list[str], bytes, bytes]:
    """Long strings, and two JSON parts (as `dumps` writes them) that may both hold some of them."""
    pool = draw(st.lists(_LONG, min_size=1, max_size=4, unique=True))
    first, second = draw(_values(pool)), draw(_values(pool))
    return pool, dumps(first), dumps(second)


def _long_values(value: object) -> list[str]:
    """The strings of at least LONG_STRING characters among a JSON value's values (not its keys)."""
    if isinstance(value, str):
        return [value] if len(value) >= LONG_STRING else []
    if isinstance(value, list):
        return [found for item in value for found in _long_values(item)]
    if isinstance(value, dict):
        return [found for item in value.values() for found in _long_values(item)]
    return []


def _markers(template: bytes, strings: dict[str, bytes]) -> set[str]:
    """The hashes of `strings` a template holds a marker of (either form)."""
    return {digest for digest in strings
            if b"\x00" + digest.encode() + b"\x00" in template or b"\x01" + digest.encode() + b"\x01" in template}


def _assert_cut_and_put_back(data: bytes, strings: dict[str, bytes]) -> tuple[bytes, list[str]]:
    template, named = cut_out(data, strings)
    assert put_back(template, strings) == data
    assert len(named) == len(set(named)) and set(named) == _markers(template, strings)
    assert all(encoded not in template for encoded in strings.values())  # every JSON occurrence was cut out
    if named:
        assert len(template) < len(data)
    return template, named


def long_strings(data: bytes) -> dict[str, bytes]:
    """A part's own long strings: none for a part that is not JSON."""
    return strings_in(data) or {}


# -- pure functions: long_strings, cut_out, put_back


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(parts=_shared_parts())
def test_json_parts_put_back_byte_for_byte_with_strings_from_any_part_cut_out(parts):
    pool, first, second = parts
    own = long_strings(first)
    # a long string is any value of LONG_STRING characters or more, as JSON writes it, under its hash
    assert sorted(map(loads, own.values())) == sorted(set(_long_values(loads(first))))
    assert all(digest == part_hash(encoded) for digest, encoded in own.items())
    strings = own | long_strings(second)
    for data in (first, second):
        template, named = _assert_cut_and_put_back(data, strings)
        # a string the part holds (its own, or the other part's where it shares one) is cut out, unless it was
        # inside a longer string cut out before it
        if any(encoded in data for encoded in strings.values()):
            assert named
        for digest in long_strings(data):
            swallowed = [other for other in named
                         if strings[digest] in strings[other] or strings[digest] in loads(strings[other]).encode()]
            assert digest in named or swallowed


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(parts=_shared_parts(), before=_SHORT, after=_SHORT)
def test_a_text_part_holding_the_strings_as_plain_text_puts_back_byte_for_byte(parts, before, after):
    pool, first, second = parts
    strings = long_strings(dumps(pool)) | long_strings(first) | long_strings(second)
    # the turn's searchable text (one that starts as JSON does is searched for the strings as JSON writes them)
    conversation = ("user: " + before + "\n" + "\n".join(pool) + "\n" + after).encode()
    template, named = cut_out(conversation, strings)
    assert put_back(template, strings) == conversation
    if b"\x00" in conversation or b"\x01" in conversation:
        assert (template, named) == (conversation, [])  # bytes that already hold a marker byte are left whole
    else:
        assert named and len(template) < len(conversation)
        assert set(named) == _markers(template, strings)


def test_a_string_in_a_json_part_is_cut_as_json_and_in_a_text_part_as_plain_text():
    text = 'a "quoted" line\nwith a back\\slash, é and 😀 ' * 20
    assert len(text) >= LONG_STRING
    encoded = dumps(text)
    digest = part_hash(encoded)
    assert long_strings(dumps({"content": text})) == {digest: encoded}

    message = dumps({"role": "user", "content": [{"type": "tool_result", "content": text}]})
    template, named = cut_out(message, {digest: encoded})
    assert named == [digest]
    assert template == dumps({"role": "user", "content": [{"type": "tool_result", "content": "@"}]}).replace(
        b'"@"', b"\x00" + digest.encode() + b"\x00")
    assert put_back(template, {digest: encoded}) == message

    conversation = ("question\n" + text + "\nanswer").encode()
    template, named = cut_out(conversation, {digest: encoded})
    assert named == [digest]
    assert template == b"question\n\x01" + digest.encode() + b"\x01\nanswer"
    assert put_back(template, {digest: encoded}) == conversation


def test_only_strings_of_512_characters_or_more_are_long():
    short, long = "é" * 511, "é" * 512  # characters, not bytes
    assert [loads(encoded) for encoded in long_strings(dumps({"a": short, "b": [long], long: 1})).values()] == [long]
    assert long_strings(dumps(long)) == {part_hash(dumps(long)): dumps(long)}  # a part that is one string
    assert long_strings(long.encode()) == {}  # a text part has no strings of its own
    assert long_strings(b'{"a": "' + long.encode() + b'", ') == {}  # nor does JSON cut at the size cap


@given(value=_values(["x" * LONG_STRING, "\"" * LONG_STRING, "é" * LONG_STRING, "ab\\" * 200]))
def test_long_strings_finds_what_parsing_the_part_finds(value):
    """`long_strings` passes over a part whose quotes leave no room for a long string without parsing it: what it
    finds is still every string of 512 characters or more the part's values hold."""

    def strings(item: object) -> list[str]:
        if isinstance(item, str):
            return [item] if len(item) >= LONG_STRING else []
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else []
        return [string for child in children for string in strings(child)]

    data = dumps(value)
    assert set(long_strings(data).values()) == set(map(dumps, strings(value)))


def test_strings_in_names_a_json_parts_strings_and_says_when_a_part_is_not_json():
    """What the store searches a part for: a JSON part holds the strings parsing it finds (none, when it is too
    short or its quotes leave no room for one); any other part may hold any string (None)."""
    long = "é" * LONG_STRING
    assert strings_in(dumps({"a": long, "b": "short"})) == strings_in(dumps({"a": long})) != {}
    assert strings_in(dumps({"a": ["short"] * 200})) == {}
    assert strings_in(b"x" * (LONG_STRING - 1)) == {}  # no long string fits
    assert strings_in(long.encode()) is None  # the searchable text
    assert strings_in(b"data: " + dumps({"a": long}) + b"\n\n") is None  # a stream's events
    assert strings_in(b'{"a": "' + long.encode() + b'", ') is None  # JSON cut at the size cap


def test_a_string_that_occurs_twice_is_replaced_twice():
    text = "x" * LONG_STRING
    strings = {part_hash(dumps(text)): dumps(text)}
    digest = next(iter(strings)).encode()
    data = dumps([text, {"again": text}, "short"])
    template, named = _assert_cut_and_put_back(data, strings)
    assert template.count(b"\x00" + digest + b"\x00") == 2 and named == [digest.decode()]

    conversation = f"{text}\n--\n{text}".encode()
    template, named = _assert_cut_and_put_back(conversation, strings)
    assert template == b"\x01" + digest + b"\x01\n--\n\x01" + digest + b"\x01"


def test_data_already_holding_a_marker_byte_is_left_whole():
    text = "y" * LONG_STRING
    strings = {part_hash(dumps(text)): dumps(text)}
    for data in (b"\x00" + dumps(text), dumps(text) + b"\x01", f"{text}\x00 and \x01{text}".encode()):
        assert cut_out(data, strings) == (data, [])
        assert put_back(data, strings) == data
    # a control character inside a JSON string is escaped: that JSON is cut as any other
    escaped = dumps(["\x00\x01" + text])
    assert b"\x00" not in escaped
    _assert_cut_and_put_back(escaped, long_strings(escaped))


# -- PartStore on a real SQLite file


def _part(value: object) -> tuple[str, bytes]:
    data = dumps(value)
    return part_hash(data), data


def _parts_table(db) -> dict[str, dict]:
    return {row["hash"]: row for row in db["parts"].rows}


LONG_TEXT = ("def handler(request):\n    return {\"status\": \"ok\", \"path\": \"C:\\\\tmp\"}  # é 😀\n" * 12)


def test_two_parts_sharing_a_long_string_store_it_once_and_both_come_back_byte_for_byte(tmp_path):
    db = schema.open_db(str(tmp_path / "f.db"))
    string_hash = part_hash(dumps(LONG_TEXT))
    first = _part({"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": LONG_TEXT}]})
    second = _part({"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": LONG_TEXT,
                                                 "cache_control": {"type": "ephemeral"}}]})
    third = _part({"contents": [{"parts": [{"text": LONG_TEXT}]}]})  # the same string, in a later batch
    store = PartStore()
    with db.conn:
        store.remember(store.save(db.conn, dict([first, second])))
    with db.conn:
        store.remember(store.save(db.conn, dict([third])))

    stored = _parts_table(db)
    assert set(stored) == {first[0], second[0], third[0], string_hash}  # the string once, a part of its own
    assert decompress(stored[string_hash]["body"]) == dumps(LONG_TEXT) and stored[string_hash]["refs"] is None
    for digest, data in (first, second, third):
        template = decompress(stored[digest]["body"])
        assert LONG_TEXT.encode() not in template and len(template) < len(data) // 4
        assert json.loads(stored[digest]["refs"]) == [string_hash]
        assert stored[digest]["size"] == len(data)

    fetched = fetch_parts(db.conn, [first[0], second[0], third[0], "0" * 20])
    assert fetched == dict([first, second, third])  # byte for byte; a part not stored is left out
    db.close()


def test_a_string_a_json_part_holds_is_cut_from_the_texts_and_streams_of_its_batch_too(tmp_path):
    """Only a part that is not JSON is searched for every string of the batch: the stream's events (the string
    as JSON inside them) and the searchable text (the string as plain text) are cut like the message is, and a
    JSON part without the string is stored whole."""
    db = schema.open_db(str(tmp_path / "f.db"))
    string_hash = part_hash(dumps(LONG_TEXT))
    message = _part({"role": "user", "content": LONG_TEXT})
    events = (b"event: content_block_delta\ndata: " + dumps({"delta": {"text": LONG_TEXT}}) + b"\n\n").decode()
    stream = (part_hash(events.encode()), events.encode())
    text = f"newest message\n{LONG_TEXT}".encode()
    conversation = (part_hash(text), text)
    other = _part({"role": "assistant", "content": ["x" * 300, "y" * 300]})  # long, no long string
    store = PartStore()
    with db.conn:
        store.remember(store.save(db.conn, dict([message, stream, conversation, other])))

    stored = _parts_table(db)
    for digest, _ in (message, stream, conversation):
        assert json.loads(stored[digest]["refs"]) == [string_hash]
        assert LONG_TEXT.encode() not in decompress(stored[digest]["body"])
    assert stored[other[0]]["refs"] is None and decompress(stored[other[0]]["body"]) == other[1]
    assert fetch_parts(db.conn, [message[0], stream[0], conversation[0], other[0]]) == \
        dict([message, stream, conversation, other])
    db.close()


def _now_text(days_ago: float = 0) -> str:
    return (datetime.now(UTC) - timedelta(days=days_ago)).strftime("%Y-%m-%d %H:%M:%S.000")


def _flow(flow_id: str, started_at: str, content: object) -> dict:
    request = {"model": "claude-sonnet-4-5", "max_tokens": 100, "messages": [{"role": "user", "content": content}]}
    return {"id": flow_id, "started_at": started_at, "client_request": json.dumps(request),
            "conversation": f"{flow_id}\n{LONG_TEXT}"}


def _store(db, rows: list[dict], part_store: PartStore) -> None:
    packer, parts = BodyPacker(), {}
    for row in rows:
        packer.pack_row(row, parts)
    assert store_batch(db, rows, parts=parts, part_store=part_store) == Stored(written=len(rows))


def test_a_part_marked_used_on_a_later_day_marks_its_string_and_pruning_keeps_both(tmp_path):
    db = schema.open_db(str(tmp_path / "f.db"))
    string_hash = part_hash(dumps(LONG_TEXT))
    kept_message = _part({"role": "user", "content": LONG_TEXT})
    pruned_message = _part({"role": "user", "content": [{"type": "text", "text": LONG_TEXT}]})
    old = [_flow("old-1", _now_text(10), LONG_TEXT),
           _flow("old-2", _now_text(10), [{"type": "text", "text": LONG_TEXT}])]
    _store(db, old, PartStore())
    stored = _parts_table(db)
    assert {kept_message[0], pruned_message[0], string_hash} <= set(stored)
    assert json.loads(stored[kept_message[0]]["refs"]) == [string_hash]
    with db.conn:  # they were written long ago
        db.execute("UPDATE parts SET last_used = '2020-01-01'")

    # A later day (a writer started afresh): a flow names the first message again, which is stored already.
    store = PartStore()
    with db.conn:
        store.remember(store.save(db.conn, dict([kept_message])))
    used = {row["hash"]: row["last_used"] for row in db["parts"].rows}
    assert used[kept_message[0]] == used[string_hash] == utc_day()
    assert used[pruned_message[0]] == "2020-01-01"

    new = _flow("new", _now_text(), LONG_TEXT)
    original = dict(new)
    _store(db, [new], store)
    pruning = Pruning(retention_days=7)
    steps = 0
    while pruning.step(db):
        steps += 1
        assert steps < 100
    assert pruning.flows == 2 and pruning.parts > 0
    remaining = _parts_table(db)
    assert pruned_message[0] not in remaining  # only the old flows named it
    assert {kept_message[0], string_hash} <= set(remaining)

    [row] = [with_bodies(db.conn, row) for row in db["flows"].rows]
    assert row["id"] == "new"
    assert json.loads(row["client_request"]) == json.loads(original["client_request"])
    assert row["conversation"] == original["conversation"]
    assert "no longer stored" not in json.dumps(row)
    db.close()
