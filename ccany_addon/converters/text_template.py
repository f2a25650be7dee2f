"""Reading an upstream's text chunks by their bytes when nothing but the text changes from one to the next.

Most reads of an OpenAI-style stream are one chunk whose bytes repeat the previous chunk's except for the text
(same id, created, model and choice). A `TextChunkTemplate` keeps the bytes before and after the text; a read
that is those bytes around a plain JSON string (no escapes, no quotes, no control characters) carries that
string as its text, and orjson would write the string as exactly those bytes again. So the read is answered
by slicing, without parsing the chunk or encoding the text (1.3 instead of 2.6 µs a read).

Why the slice is right: the template is only made after a probe (a random string put where the text was) is
read back as the text by the translator's own check for a text-only chunk. Parsing is the same for any
string token in that place, so every read that fits the template is a text-only chunk with that string as
its text.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable

from ccany_addon.util.json_codec import dumps

# A JSON string orjson writes byte for byte as it reads it: orjson escapes only `"`, `\` and controls.
_PLAIN_STRING = re.compile(rb'"[^"\\\x00-\x1f]+"')
_PROBE = f"ccany-probe-{secrets.token_hex(16)}"
_PROBE_LITERAL = dumps(_PROBE)


class TextChunkTemplate:
    __slots__ = ("head", "tail", "_start", "_tail_length")

    def __init__(self, head: bytes, tail: bytes) -> None:
        self.head, self.tail = head, tail
        self._start, self._tail_length = len(head), len(tail)

    @classmethod
    def learn(cls, data: bytes, text: str, text_of: Callable[[bytes], str | None]) -> TextChunkTemplate | None:
        """The template of `data`, a read that `text_of` found to be a text-only chunk carrying `text`; None
        when the text is not in it as a plain string or the probe shows it is not where `text_of` reads it."""
        literal = dumps(text)
        start = data.find(literal)
        if start < 0 or not _PLAIN_STRING.fullmatch(literal):
            return None
        head, tail = data[:start], data[start + len(literal):]
        if text_of(head + _PROBE_LITERAL + tail) != _PROBE:
            return None
        return cls(head, tail)

    def text(self, data: bytes) -> tuple[str, bytes] | None:
        """The text of a read that is the template around another plain string, and the string's JSON (as
        `dumps` writes it); None for any other read."""
        if not (data.startswith(self.head) and data.endswith(self.tail)):
            return None
        end = len(data) - self._tail_length
        if not _PLAIN_STRING.fullmatch(data, self._start, end):
            return None
        try:
            return data[self._start + 1:end - 1].decode(), data[self._start:end]
        except UnicodeDecodeError:
            return None  # the general path reports the malformed chunk
