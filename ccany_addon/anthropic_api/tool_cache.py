"""The one cache of a client's tools: their parsed definitions by the bytes they came in, and what each
converter made of a parsed list.

Claude Code sends the same tools, two thirds of its body, on every turn. The gateway owns one `ToolCache` and
hands it to `schema.parse` (tools seen before are not parsed again) and, through `UpstreamTarget.tools`, to the
converters (a tools list is converted once). Code that passes none (unit tests, scripts) parses and converts
every time, with the same result.
"""

from __future__ import annotations

import secrets
from collections.abc import Hashable

from ccany_addon.anthropic_api.schema import Request, Tool, validate
from ccany_addon.util.json_codec import dumps, loads


class ToolCache:
    """The tool definitions of recent requests, by their exact bytes, already validated; and the conversions
    of the lists it handed out.

    Parsing: when the bytes after a body's last `"tools":` begin with a known array, only the rest of the body
    is parsed, with a placeholder where the array stood, and the array's validated tools are reused. The
    placeholder is a string no client knows: finding it as the top-level `tools` proves that the array stood in
    that place, so the request is the one parsing every byte would give. Anything else (unknown tools, another
    layout, a body that does not parse) is None: the caller parses the whole body.

    Converting: every request with the same array gets the same list, so a conversion is kept by the list's
    identity (16 tools take 13 µs to convert); holding the list keeps its id from being reused.
    """

    KEY = b'"tools":'
    SMALLEST = 1024  # bytes of an array worth remembering
    SIZE = 8  # arrays (and conversions) remembered: a session's agent and its subagents each have their own

    def __init__(self) -> None:
        self._placeholder = f"ccany-known-tools-{secrets.token_hex(16)}"
        self._placeholder_json = dumps(self._placeholder)
        self._known: dict[bytes, list[Tool]] = {}
        self._converted: dict[tuple[int, Hashable], tuple[list[Tool], object]] = {}

    # -- parsing

    def parse[T: Request](self, model: type[T], body: bytes) -> T | None:
        start = body.rfind(self.KEY) + len(self.KEY)
        if start < len(self.KEY):
            return None
        text = next((text for text in self._known if body.startswith(text, start)), None)
        if text is None:
            return None
        try:
            value = loads(body[:start] + self._placeholder_json + body[start + len(text) :])
            if not isinstance(value, dict) or value.get("tools") != self._placeholder:
                return None
            value["tools"] = None
            request = validate(model, value)
        except ValueError:
            return None
        tools = self._known.pop(text)
        self._known[text] = tools  # the most recently used last
        request.tools = tools
        return request

    def remember(self, body: bytes, value: dict, tools: list[Tool]) -> None:
        """Tools a whole body gave, when their array is written in the body as we would write it."""
        start = body.rfind(self.KEY) + len(self.KEY)
        if start < len(self.KEY) or body[start : start + 1] != b"[":  # not written as we write it
            return
        text = dumps(value["tools"])
        if len(text) < self.SMALLEST or not body.startswith(text, start):
            return
        self._known.pop(text, None)
        self._known[text] = tools
        while len(self._known) > self.SIZE:
            del self._known[next(iter(self._known))]

    # -- converting

    def converted(self, tools: list[Tool], key: Hashable) -> object | None:
        """What a converter kept for this very list under `key` (its own options), or None."""
        recent = self._converted.get((id(tools), key))
        return recent[1] if recent is not None and recent[0] is tools else None

    def keep(self, tools: list[Tool], key: Hashable, conversion: object) -> None:
        """`conversion` is shared by every request with this list: whoever gets it must not change it."""
        self._converted[(id(tools), key)] = (tools, conversion)
        if len(self._converted) > self.SIZE:
            del self._converted[next(iter(self._converted))]
