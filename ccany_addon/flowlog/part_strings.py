"""Long strings stored once however many parts hold them. Pure functions, no I/O.

The same text comes back in several parts: a tool result is in the client's message, again in that message once
Claude Code's cache marker has left it, in the upstream request written in another dialect, and in the turn's
searchable text. A part is stored as a template: each long string it holds is cut out (a part of its own, the
string as JSON writes it) and a marker naming it is left in its place. Markers are control bytes JSON never holds
unescaped: `\\x00<hash>\\x00` puts the string back as JSON (quoted and escaped), `\\x01<hash>\\x01` as plain text.
Putting a template back is byte for byte.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from ccany_addon.flowlog.parts import HASH_CHARS, part_hash
from ccany_addon.util.json_codec import dumps, loads

LONG_STRING = 512  # characters: a shorter string is left in its part
_AS_JSON, _AS_TEXT = b"\x00", b"\x01"
_MARKER = re.compile(rb"([\x00\x01])([0-9a-f]{%d})\1" % HASH_CHARS)


def strings_in(data: bytes) -> dict[str, bytes] | None:
    """The long strings of a JSON part, each as JSON writes it, by hash; None for a long part that is not JSON (a
    text, a stream's events, JSON cut at the size cap), which may hold any string, as JSON or as text."""
    if len(data) < LONG_STRING:
        return {}
    if data[:1] not in (b"{", b"[", b'"'):
        return None
    if _too_short(data):
        return {}
    try:
        value = loads(data)
    except ValueError:
        return None
    found: list[str] = []
    _collect(value, found)
    return {part_hash(encoded): encoded for encoded in map(dumps, found)}


def _too_short(data: bytes) -> bool:
    """Whether no string of `data` can be long, read without parsing it: with no escaped quote in it, each string is
    what lies between two quotes, and a character takes at least a byte. (Most new parts are a short message, a
    chunk of hashes or a stream's timeline.)"""
    return b'\\"' not in data and max(map(len, data.split(b'"'))) < LONG_STRING


def _collect(value: object, found: list[str]) -> None:
    if isinstance(value, str):
        if len(value) >= LONG_STRING:
            found.append(value)
    elif isinstance(value, list):
        for item in value:
            _collect(item, found)
    elif isinstance(value, dict):
        for item in value.values():
            _collect(item, found)


def text_forms(strings: Mapping[str, bytes]) -> dict[str, bytes]:
    """Each string as plain text, for the text parts it may sit in (when it holds no marker byte)."""
    forms = {digest: loads(encoded).encode() for digest, encoded in strings.items()}
    return {digest: text for digest, text in forms.items() if _AS_JSON not in text and _AS_TEXT not in text}


def cut_out(data: bytes, strings: Mapping[str, bytes],
            texts: Mapping[str, bytes] | None = None) -> tuple[bytes, list[str]]:
    """`data` with every occurrence of `strings` replaced by markers (JSON-written, else plain as in `texts`, from
    `text_forms`), and the hashes it names. Bytes that already hold a marker byte are left whole."""
    if _AS_JSON in data or _AS_TEXT in data:
        return data, []
    if texts is None:
        texts = text_forms(strings)
    named = []
    for digest, encoded in strings.items():
        # as JSON writes it (a JSON part, a stream's events), else as plain text (the searchable text)
        if encoded in data:
            data = data.replace(encoded, _AS_JSON + digest.encode() + _AS_JSON)
        elif (text := texts.get(digest)) is not None and text in data:
            data = data.replace(text, _AS_TEXT + digest.encode() + _AS_TEXT)
        else:
            continue
        named.append(digest)
    return data, named


def put_back(template: bytes, strings: Mapping[str, bytes]) -> bytes:
    """The part a template stands for, given its strings (JSON-written) by hash."""
    def string(marker: re.Match[bytes]) -> bytes:
        encoded = strings[marker[2].decode()]
        return encoded if marker[1] == _AS_JSON else loads(encoded).encode()

    return _MARKER.sub(string, template)
