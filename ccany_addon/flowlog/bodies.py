"""On the writer thread, between a record's row and the database: each body of the row becomes a manifest and
its parts (`parts.py`), and each request is compared with the previous request of its Claude Code session to
see how much of it a prompt cache could have served (cache forensics).

The previous request of a session is kept in memory: its parts' keys and sizes for the forensics, and its layout
(its bytes and parts, within `LAYOUT_BYTES`) to pack the next one from. A session not in memory (the first flow
after a restart, or one forgotten as others came) has its previous request recalled: the writer reads it back from
the flow DB (`Recall`), and it is packed again once.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from ccany_addon.flowlog.parts import Layout, Packed, Prompt, pack, pack_text
from ccany_addon.flowlog.parts_delta import pack_after
from ccany_addon.flowlog.schema import BODY_MANIFESTS, SEARCH_TEXT

SESSIONS_KEPT = 2000  # sessions whose previous request is remembered
LAYOUT_BYTES = 32 * 1024 * 1024  # of previous requests kept to pack the next ones from (about 2× their size)
_REQUESTS = ("client_request", "upstream_request")

# The body `name` of the flow before `row` in its session, by the same agent to the same model, as stored; None
# when there is none.
Recall = Callable[[dict, str], bytes | None]


@dataclass(frozen=True, slots=True)
class Prefix:
    """What a request shares with the one before it, in prompt-cache order."""

    parts: int
    bytes: int
    total: int  # bytes of all its segments
    broken_at: str | None  # "system[0] changed", "messages[4] removed"; None: the earlier request is all shared


def shared_prefix(previous: Prompt, current: Prompt) -> Prefix:
    shared = 0
    for before, now in zip(previous.keys, current.keys, strict=False):
        if before != now:
            break
        shared += 1
    broken_at = None
    if shared < len(previous.keys):
        broken_at = f"{current.label(shared)} changed" if shared < len(current.keys) else \
            f"{previous.label(shared)} removed"
    return Prefix(shared, sum(current.sizes[:shared]), sum(current.sizes), broken_at)


@dataclass(slots=True)
class _Previous:
    prompt: Prompt
    layout: Layout | None


class Sessions:
    """The previous request of each session: its parts in prompt-cache order (for forensics) and its layout (to
    pack the next one from what changed). Bounded: the least recently seen sessions are forgotten, and past
    `layout_bytes` of layouts the oldest lose theirs."""

    def __init__(self, limit: int = SESSIONS_KEPT, layout_bytes: int = LAYOUT_BYTES) -> None:
        self.limit = limit
        self.layout_bytes = layout_bytes
        self._last: OrderedDict[tuple, _Previous] = OrderedDict()
        self._bytes = 0

    def get(self, key: tuple) -> _Previous | None:
        return self._last.get(key)

    def remember(self, key: tuple, prompt: Prompt, layout: Layout | None) -> None:
        self._forget(self._last.pop(key, None))
        self._last[key] = _Previous(prompt, layout)
        self._bytes += _size(layout)
        if len(self._last) > self.limit:
            self._forget(self._last.popitem(last=False)[1])
        for previous in self._last.values():
            if self._bytes <= self.layout_bytes:
                break
            self._forget(previous)

    def _forget(self, previous: _Previous | None) -> None:
        if previous is not None:
            self._bytes -= _size(previous.layout)
            previous.layout = None


def _size(layout: Layout | None) -> int:
    return 0 if layout is None else 2 * len(layout.raw)  # its bytes, and its parts' bytes


class BodyPacker:
    def __init__(self) -> None:
        self.sessions = Sessions()

    def pack_row(self, row: dict, parts: dict[str, bytes], recall: Recall | None = None) -> None:
        """Replace the row's body texts with manifests (adding their parts to `parts`) and fill its forensics."""
        for name, manifest in BODY_MANIFESTS.items():
            text = row.get(name)
            if text is None:
                continue
            raw = text if isinstance(text, bytes) else text.encode()
            packed = self._request(row, name, raw, recall) if name in _REQUESTS else pack_text(raw)
            row[name], row[manifest] = None, packed.manifest
            if name == "conversation":
                row[SEARCH_TEXT] = text
            parts.update(packed.parts)

    def _request(self, row: dict, name: str, raw: bytes, recall: Recall | None) -> Packed:
        """A request packed from the previous one of its session when it can be, and compared with it. A client
        that names no session (an SDK) has its requests packed from the previous one of the same client key and
        model: a conversation re-sent turn after turn, without forensics."""
        session = row.get("session_id")
        who = (session, row.get("agent_id")) if session is not None else (None, row.get("client_key_id"))
        key = ("client", *who, row.get("client_model")) if name == "client_request" else \
            ("upstream", *who, row.get("provider"), row.get("upstream_model"))
        previous = self.sessions.get(key)
        if previous is None and session is not None and recall is not None:
            previous = self._recalled(key, recall(row, name))
        packed = None
        if previous is not None and previous.layout is not None:
            packed = pack_after(previous.layout, raw)
        if packed is None:
            packed = pack(raw)
        if packed.prompt is None:
            return packed
        if session is None:
            self.sessions.remember(key, packed.prompt, packed.layout)
            return packed
        if name == "upstream_request":
            row["upstream_prompt_bytes"] = sum(packed.prompt.sizes)
        if previous is not None:
            prefix = shared_prefix(previous.prompt, packed.prompt)
            if name == "client_request":
                row["prefix_parts"], row["prefix_break"] = prefix.parts, prefix.broken_at
            else:
                row["upstream_prefix_parts"], row["upstream_prefix_break"] = prefix.parts, prefix.broken_at
                row["upstream_prefix_bytes"] = prefix.bytes
        self.sessions.remember(key, packed.prompt, packed.layout)
        return packed

    def _recalled(self, key: tuple, raw: bytes | None) -> _Previous | None:
        if raw is None:
            return None
        packed = pack(raw)
        if packed.prompt is None:
            return None
        self.sessions.remember(key, packed.prompt, packed.layout)
        return self.sessions.get(key)
