"""On the writer thread, between a record's row and the database: each body of the row becomes a manifest and
its parts (`parts.py`), and each request is compared with the previous request of its Claude Code session to
see how much of it a prompt cache could have served (cache forensics).

The previous request of a session is kept in memory (its parts' hashes and sizes, not its text): the first flow
of a session after a restart has no forensics.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from ccany_addon.flowlog.parts import Packed, Prompt, pack, pack_text
from ccany_addon.flowlog.schema import BODY_MANIFESTS

SESSIONS_KEPT = 2000  # sessions whose previous request is remembered (most recently seen first)
_REQUESTS = ("client_request", "upstream_request")


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


class SessionPrefixes:
    """The previous request of each session (bounded: the least recently seen sessions are forgotten)."""

    def __init__(self, limit: int = SESSIONS_KEPT) -> None:
        self.limit = limit
        self._last: OrderedDict[tuple, Prompt] = OrderedDict()

    def follow(self, key: tuple, prompt: Prompt) -> Prefix | None:
        """Compare with the session's previous request (None for its first), and remember this one."""
        previous = self._last.pop(key, None)
        self._last[key] = prompt
        if len(self._last) > self.limit:
            self._last.popitem(last=False)
        return None if previous is None else shared_prefix(previous, prompt)


class BodyPacker:
    def __init__(self) -> None:
        self.sessions = SessionPrefixes()

    def pack_row(self, row: dict, parts: dict[str, bytes]) -> None:
        """Replace the row's body texts with manifests (adding their parts to `parts`) and fill its forensics."""
        for name, manifest in BODY_MANIFESTS.items():
            text = row.get(name)
            if text is None:
                continue
            packed = pack(text) if name in _REQUESTS else pack_text(text)
            row[name], row[manifest] = None, packed.manifest
            parts.update(packed.parts)
            if name in _REQUESTS:
                self._forensics(row, name, packed)

    def _forensics(self, row: dict, name: str, packed: Packed) -> None:
        session = row.get("session_id")
        if session is None or packed.prompt is None:
            return
        if name == "client_request":
            prefix = self.sessions.follow(("client", session, row.get("agent_id"), row.get("client_model")),
                                          packed.prompt)
            if prefix is not None:
                row["prefix_parts"], row["prefix_break"] = prefix.parts, prefix.broken_at
            return
        key = ("upstream", session, row.get("agent_id"), row.get("provider"), row.get("upstream_model"))
        prefix = self.sessions.follow(key, packed.prompt)
        row["upstream_prompt_bytes"] = sum(packed.prompt.sizes)
        if prefix is not None:
            row["upstream_prefix_parts"], row["upstream_prefix_break"] = prefix.parts, prefix.broken_at
            row["upstream_prefix_bytes"] = prefix.bytes
