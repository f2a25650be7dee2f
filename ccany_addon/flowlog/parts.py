"""Content-addressed bodies: a body is cut into parts, each part is kept once under the hash of its bytes, and a
flow row keeps a small manifest that puts the body back together. Pure functions, no I/O.

Claude Code sends the whole conversation on every turn, so a turn's request is mostly parts an earlier turn
already stored: each system block, the tools array, each message. A manifest is JSON text:

- `{"json": {...}}` for a JSON object: its top-level fields in their order, small ones as they are; a large
  value as `{"$part": h}`, and a list that is split by element (`SPLIT_LISTS`) as `{"$chunks": [c...],
  "$parts": [h...]}`: the elements of each chunk, in order, then the elements listed after. A chunk is itself a
  part, the JSON list of `CHUNK` element hashes: a manifest stays small however long the conversation grows
  (it would otherwise grow with the square of a session's length, as the bodies did).
- `{"text": h}` for anything else: a body cut at the size cap, not JSON, not an object.

Reassembly joins the parts' bytes: the JSON it gives parses to the same value as the body did (compact, the
keys in their order), and a text body comes back byte for byte.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from itertools import accumulate, chain, repeat

from ccany_addon.util.json_codec import dumps, loads

HASH_CHARS = 20  # hex digits of SHA-256 (80 bits): one collision in about 10^12 parts
CHUNK = 8
# Lists whose elements are parts of their own: what a conversation appends to (Anthropic's system and messages,
# Gemini's contents, the Responses API's input).
SPLIT_LISTS = frozenset(("system", "messages", "contents", "input"))
WHOLE_PART_MIN = 64  # bytes: a top-level value at least this long is a part of its own (the tools array, metadata)
# The order a prompt cache reads a request in (tools, then system, then messages); the fields that are not
# listed here do not change what is cached.
CACHE_ORDER = ("tools", "system", "systemInstruction", "instructions", "messages", "contents", "input")
_REFERENCE_KEYS = frozenset(("$part", "$parts", "$chunks"))
_CACHE_CONTROL = b'"cache_control"'
# every digit as "0", every other byte as " ": a run of 19 digits may be an integer past 64 bits
_DIGITS_AS_ZERO = bytes(ord("0") if chr(byte).isdigit() and byte < 128 else ord(" ") for byte in range(256))
_DIGIT_RUN = b"0" * 19


def part_hash(data: bytes) -> str:
    # SHA-256 runs in the CPU's SHA instructions: 0.7 ms for a 420 KB conversation, BLAKE2b 1.0
    return hashlib.sha256(data).hexdigest()[:HASH_CHARS]


@dataclass(slots=True)
class Prompt:
    """A request's parts in prompt-cache order (tools, system blocks, messages): each one's key and size. A key is
    the part's hash, with any `cache_control` marker left out (Claude Code moves the marker to the newest message
    every turn; what a cache holds does not change with it)."""

    keys: list[str] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)
    spans: list[tuple[str, int, bool]] = field(default_factory=list)  # (field, parts, split by element)

    def label(self, index: int) -> str:
        """`system[0]`, `tools`, `messages[12]`: where the part at `index` is in the request."""
        for name, count, split in self.spans:
            if index < count:
                return f"{name}[{index}]" if split else name
            index -= count
        raise IndexError(index)


@dataclass(slots=True)
class Field:
    """A top-level field of a JSON object body, encoded: a split list's elements, or the value's bytes as one
    item. A small value that is no part of its own stays in the manifest as it is (its hash is "")."""

    name: str
    value: object
    data: list[bytes]
    hashes: list[str]
    keys: list[str]  # prompt-cache keys, for the fields in CACHE_ORDER
    split: bool


@dataclass(slots=True)
class Layout:
    """A packed body's bytes when they are exactly what its parts join to (a compact JSON writer's, as Claude
    Code's and the gateway's are), with where each field's items sit in them: what `parts_delta` needs to pack
    the next request of a session from what changed."""

    raw: bytes
    fields: list[Field]
    starts: list[list[int]]  # per field, where each of its items starts in `raw`


@dataclass(slots=True)
class Packed:
    manifest: str
    parts: dict[str, bytes] = field(default_factory=dict)  # every part the manifest needs, chunks included
    prompt: Prompt | None = None  # a JSON object's; None for a text body
    layout: Layout | None = None


def pack(text: str | bytes) -> Packed:
    """The manifest and parts of a body (already capped and scrubbed)."""
    raw = text.encode() if isinstance(text, str) else text
    try:
        body = loads(raw)
    except ValueError:  # not JSON, cut at the cap, or what orjson refuses (invalid UTF-8, lone surrogates)
        body = None
    if not isinstance(body, dict):
        return pack_text(raw)
    return checked(assemble([encode_field(name, value) for name, value in body.items()], raw), raw)


def checked(packed: Packed, raw: bytes) -> Packed:
    """`packed`, unless the body may hold an integer orjson read as a float (it takes integers beyond 64 bits as
    floats, silently): then the body whole. Bytes the parts join to exactly (`layout`) lost nothing."""
    if packed.layout is None and _DIGIT_RUN in raw.translate(_DIGITS_AS_ZERO):
        return pack_text(raw)
    return packed


def pack_text(text: str | bytes) -> Packed:
    """A body kept whole, as one part."""
    parts: dict[str, bytes] = {}
    return Packed(dumps({"text": _add(text.encode() if isinstance(text, str) else text, parts)}).decode(), parts)


def encode_field(name: str, value: object) -> Field:
    if name in SPLIT_LISTS and isinstance(value, list):
        data = list(map(encoded, value))
        hashes = list(map(part_hash, data))
        return Field(name, None, data, hashes, cache_keys(data, hashes) if name in CACHE_ORDER else [], True)
    data = encoded(value)
    whole = len(data) >= WHOLE_PART_MIN or (isinstance(value, dict) and bool(_REFERENCE_KEYS & value.keys()))
    digest = part_hash(data) if whole or name in CACHE_ORDER else ""
    keys = cache_keys([data], [digest]) if name in CACHE_ORDER else []
    return Field(name, None if whole else value, [data], [digest if whole else ""], keys, False)


def encoded(value: object) -> bytes:
    """`value` as compact JSON, in a bytes object of its own size: orjson's results keep a buffer of 4 KB or more,
    and a session's layout holds hundreds of them (measured: 436 MB more RSS under load without this copy)."""
    return memoryview(dumps(value)).tobytes()


def cache_keys(data: list[bytes], hashes: list[str]) -> list[str]:
    return [digest if _CACHE_CONTROL not in item else part_hash(dumps(_without_cache_control(loads(item))))
            for item, digest in zip(data, hashes, strict=True)]


def assemble(fields: list[Field], raw: bytes | None = None) -> Packed:
    """The manifest, parts and prompt of encoded fields; with the body's bytes, also its layout when they are
    what the fields join to."""
    parts: dict[str, bytes] = {}
    manifest: dict[str, object] = {}
    for item in fields:
        if item.split:
            parts.update(zip(item.hashes, item.data, strict=True))
            manifest[item.name] = _list_reference(item.hashes, parts)
        elif item.hashes[0]:
            parts[item.hashes[0]] = item.data[0]
            manifest[item.name] = {"$part": item.hashes[0]}
        else:
            manifest[item.name] = item.value
    prompt = Prompt()
    by_name = {item.name: item for item in fields}
    for name in CACHE_ORDER:
        if (item := by_name.get(name)) is not None:
            prompt.keys += item.keys
            prompt.sizes += map(len, item.data)
            prompt.spans.append((name, len(item.data), item.split))
    packed = Packed(dumps({"json": manifest}).decode(), parts, prompt)
    if raw is not None:
        packed.layout = _layout(fields, raw)
    return packed


_PLUS_ONE = (1).__add__


def _layout(fields: list[Field], raw: bytes) -> Layout | None:
    # One join of every piece, compared once: joining each list first copied a 400 KB body three times.
    pieces = [b"{"]
    starts: list[list[int]] = []
    at = 1
    for number, item in enumerate(fields):
        head = (b"," if number else b"") + dumps(item.name) + (b":[" if item.split else b":")
        pieces.append(head)
        at += len(head)
        if item.split:
            # each item and its comma, summed in C
            starts.append(list(accumulate(map(_PLUS_ONE, map(len, item.data[:-1])), initial=at)) if item.data
                          else [])
            pieces += chain.from_iterable(zip(item.data, repeat(b",")))
            if item.data:
                pieces[-1] = b"]"
                at = starts[-1][-1] + len(item.data[-1]) + 1
            else:
                pieces.append(b"]")
                at += 1
        else:
            pieces.append(item.data[0])
            starts.append([at])
            at += len(item.data[0])
    pieces.append(b"}")
    return Layout(raw, fields, starts) if b"".join(pieces) == raw else None


def _add(data: bytes, parts: dict[str, bytes]) -> str:
    digest = part_hash(data)
    parts[digest] = data
    return digest


def _list_reference(hashes: list[str], parts: dict[str, bytes]) -> dict[str, list]:
    """A list's elements as a left-aligned tree: each full run of CHUNK element hashes is a chunk, each full run of
    CHUNK chunks a chunk of the level above, and so on; what does not fill a run stays listed at its level."""
    whole = len(hashes) - len(hashes) % CHUNK
    groups, levels = hashes[:whole], []
    while groups:
        chunks = []
        for start in range(0, len(groups), CHUNK):
            digest, data = _chunk(tuple(groups[start:start + CHUNK]))
            parts[digest] = data
            chunks.append(digest)
        whole = len(chunks) - len(chunks) % CHUNK
        levels.append(chunks[whole:])
        groups = chunks[:whole]
    reference: dict[str, list] = {"$chunks": levels[::-1]} if levels else {}
    return reference | {"$parts": hashes[len(hashes) - len(hashes) % CHUNK:]}


@lru_cache(maxsize=8192)
def _chunk(hashes: tuple[str, ...]) -> tuple[str, bytes]:
    """A chunk part, remembered: a session's next request repeats all its chunks but the newest (8192: ~4 MB)."""
    data = dumps(list(hashes))
    return part_hash(data), data


def _without_cache_control(value: object) -> object:
    if isinstance(value, dict):
        return {key: _without_cache_control(item) for key, item in value.items() if key != "cache_control"}
    if isinstance(value, list):
        return [_without_cache_control(item) for item in value]
    return value


class MissingPart(LookupError):
    """A manifest names a part the store does not have (pruned, or the DB was edited)."""


Fetch = Callable[[list[str]], Mapping[str, bytes]]


def unpack(manifest: str, fetch: Fetch) -> str:
    """The body a manifest stands for; `fetch` returns the bytes of the parts it is given (it may leave out
    parts it does not have: `MissingPart` is raised)."""
    return unpack_bytes(manifest, fetch).decode("utf-8", "replace")


def unpack_bytes(manifest: str, fetch: Fetch) -> bytes:
    described = loads(manifest)
    if "text" in described:
        return _fetched([described["text"]], fetch)[described["text"]]
    fields: dict = described["json"]
    elements = {key: _elements(value, fetch) for key, value in fields.items() if _is_list_reference(value)}
    wholes = {key: value["$part"] for key, value in fields.items() if _is_part_reference(value)}
    data = _fetched([digest for hashes in elements.values() for digest in hashes] + list(wholes.values()), fetch)
    out = bytearray(b"{")
    for number, (key, value) in enumerate(fields.items()):
        if number:
            out += b","
        out += dumps(key) + b":"
        if key in elements:
            out += b"[" + b",".join(data[digest] for digest in elements[key]) + b"]"
        elif key in wholes:
            out += data[wholes[key]]
        else:
            out += dumps(value)
    out += b"}"
    return bytes(out)


def _elements(reference: dict, fetch: Fetch) -> list[str]:
    """The element hashes of a list reference, its chunks expanded level by level (highest first)."""
    levels: list[list[str]] = reference.get("$chunks", [])
    expanded: list[str] = []
    for chunks in levels:  # expanded so far: chunks of this level; each one level down is CHUNK of the next
        found = _fetched(expanded + chunks, fetch)
        expanded = [digest for chunk in expanded + chunks for digest in loads(found[chunk])]
    return expanded + reference["$parts"]


def part_count(manifest: str) -> int:
    """How many parts a manifest's body has (a chunk counts as its elements)."""
    described = loads(manifest)
    if "text" in described:
        return 1
    return sum(_list_count(value) if _is_list_reference(value) else int(_is_part_reference(value))
               for value in described["json"].values())


def _list_count(reference: dict) -> int:
    levels = reference.get("$chunks", [])
    return sum(len(chunks) * CHUNK ** (len(levels) - level) for level, chunks in enumerate(levels)) + \
        len(reference["$parts"])


def _is_list_reference(value: object) -> bool:
    return isinstance(value, dict) and "$parts" in value


def _is_part_reference(value: object) -> bool:
    return isinstance(value, dict) and "$part" in value


def _fetched(hashes: list[str], fetch: Fetch) -> Mapping[str, bytes]:
    if not hashes:
        return {}
    found = fetch(list(dict.fromkeys(hashes)))
    for digest in hashes:
        if digest not in found:
            raise MissingPart(digest)
    return found
