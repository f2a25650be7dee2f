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

from ccany_addon.util.json_codec import dumps, loads

HASH_CHARS = 20  # hex digits of SHA-256 (80 bits): one collision in about 10^12 parts
CHUNK = 16
# Lists whose elements are parts of their own: what a conversation appends to (Anthropic's system and messages,
# Gemini's contents, the Responses API's input).
SPLIT_LISTS = frozenset(("system", "messages", "contents", "input"))
WHOLE_PART_MIN = 256  # bytes: a top-level value at least this long is a part of its own (the tools array)
# The order a prompt cache reads a request in (tools, then system, then messages); the fields that are not
# listed here do not change what is cached.
CACHE_ORDER = ("tools", "system", "systemInstruction", "instructions", "messages", "contents", "input")
_REFERENCE_KEYS = frozenset(("$part", "$parts", "$chunks"))
_CACHE_CONTROL = b'"cache_control"'


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

    def add(self, name: str, data: list[bytes], hashes: list[str], split: bool) -> None:
        self.keys += [digest if _CACHE_CONTROL not in part else part_hash(dumps(_without_cache_control(loads(part))))
                      for part, digest in zip(data, hashes, strict=True)]
        self.sizes += map(len, data)
        self.spans.append((name, len(data), split))


@dataclass(slots=True)
class Packed:
    manifest: str
    parts: dict[str, bytes] = field(default_factory=dict)  # every part the manifest needs, chunks included
    prompt: Prompt | None = None  # a JSON object's; None for a text body


def pack(text: str) -> Packed:
    """The manifest and parts of a body's text (already capped and scrubbed)."""
    try:
        body = loads(text)
    except ValueError:  # not JSON, cut at the cap, or what orjson refuses (lone surrogates, huge integers)
        body = None
    if not isinstance(body, dict):
        return pack_text(text)
    parts: dict[str, bytes] = {}
    fields: dict[str, object] = {}
    encoded: dict[str, tuple[list[bytes], list[str], bool]] = {}
    for key, value in body.items():
        if key in SPLIT_LISTS and isinstance(value, list):
            data = list(map(dumps, value))
            hashes = list(map(part_hash, data))
            parts.update(zip(hashes, data, strict=True))
            encoded[key] = data, hashes, True
            fields[key] = _list_reference(hashes, parts)
            continue
        data = dumps(value)
        digest = ""
        if len(data) >= WHOLE_PART_MIN or (isinstance(value, dict) and _REFERENCE_KEYS & value.keys()):
            digest = _add(data, parts)
            fields[key] = {"$part": digest}
        else:
            fields[key] = value
        if key in CACHE_ORDER:
            encoded[key] = [data], [digest or part_hash(data)], False
    prompt = Prompt()
    for key in CACHE_ORDER:
        if key in encoded:
            prompt.add(key, *encoded[key])
    return Packed(dumps({"json": fields}).decode(), parts, prompt)


def pack_text(text: str) -> Packed:
    """A body kept whole, as one part."""
    parts: dict[str, bytes] = {}
    return Packed(dumps({"text": _add(text.encode(), parts)}).decode(), parts)


def _add(data: bytes, parts: dict[str, bytes]) -> str:
    digest = part_hash(data)
    parts[digest] = data
    return digest


def _list_reference(hashes: list[str], parts: dict[str, bytes]) -> dict[str, list[str]]:
    whole = len(hashes) - len(hashes) % CHUNK
    chunks = [_add(dumps(hashes[start:start + CHUNK]), parts) for start in range(0, whole, CHUNK)]
    reference = {"$chunks": chunks} if chunks else {}
    return reference | {"$parts": hashes[whole:]}


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
    lists = {key: value for key, value in fields.items() if _is_list_reference(value)}
    chunks = {digest: loads(data) for digest, data in _fetched(
        [chunk for value in lists.values() for chunk in value.get("$chunks", ())], fetch).items()}
    elements = {key: [digest for chunk in value.get("$chunks", ()) for digest in chunks[chunk]] + value["$parts"]
                for key, value in lists.items()}
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


def part_count(manifest: str) -> int:
    """How many parts a manifest's body has (a chunk counts as its elements)."""
    described = loads(manifest)
    if "text" in described:
        return 1
    return sum(len(value.get("$chunks", ())) * CHUNK + len(value["$parts"]) if _is_list_reference(value)
               else int(_is_part_reference(value)) for value in described["json"].values())


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
