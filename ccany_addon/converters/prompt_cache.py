"""Keeping a converted prompt cacheable: what changes per conversation must not sit in front of what does not.

OpenAI, DeepSeek, Gemini and vLLM cache a prompt by its prefix. Claude Code's system block 0 is
`x-anthropic-billing-header: cc_version=2.1.332.<hash>; cc_entrypoint=cli;`, whose hash changes between
conversations and subagents; sent as the first line of the upstream's system prompt it would make every
conversation's prefix its own. On converting kinds the block is taken out and its facts go to the flow log.

OpenAI's own API also takes a `prompt_cache_key`, which routes requests that share a prefix to the same cache;
the gateway derives one from Claude Code's session id (hashed: the raw id never leaves the gateway).

Pure functions: no I/O, no mitmproxy.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from ccany_addon.anthropic_api.schema import MessagesRequest, TextBlock

BILLING_PREFIX = "x-anthropic-billing-header:"

# Provider kinds whose dialect is OpenAI's and so may take `prompt_cache_key` (Chat Completions, Azure's copy of
# it, the Responses API). Gemini caches by prefix without a key; Anthropic has its own `cache_control`.
CACHE_KEY_KINDS = frozenset({"openai", "azure", "responses"})
# OpenAI's own API: the one host known to accept `prompt_cache_key`. Strict OpenAI-compatible servers answer 400
# on a field they do not know, so every other host gets it only when a capability override says so.
OPENAI_HOSTS = frozenset({"api.openai.com"})
CACHE_KEY_PREFIX = "ccany-"


@dataclass(frozen=True, slots=True)
class BillingFacts:
    """What Claude Code's billing-header block said (None: it said nothing of that)."""

    cc_version: str | None = None
    cc_entrypoint: str | None = None


def _is_billing(text: str) -> bool:
    return text.lstrip().lower().startswith(BILLING_PREFIX)


def _facts(text: str) -> BillingFacts:
    """`x-anthropic-billing-header: cc_version=2.1.332.abc; cc_entrypoint=cli;` → its two facts (other pairs,
    present or future, are ignored)."""
    values: dict[str, str] = {}
    for pair in text.split(":", 1)[1].split(";"):
        name, sep, value = pair.partition("=")
        if sep and name.strip() and value.strip():
            values.setdefault(name.strip().lower(), value.strip())
    return BillingFacts(values.get("cc_version"), values.get("cc_entrypoint"))


def billing_facts(request: MessagesRequest) -> BillingFacts | None:
    """The facts of the request's billing-header block, or None when it has none (not Claude Code)."""
    system = request.system
    if isinstance(system, str):
        first = system.split("\n", 1)[0]
        return _facts(first) if _is_billing(first) else None
    for block in system or ():
        if isinstance(block, TextBlock) and _is_billing(block.text):
            return _facts(block.text.lstrip().split("\n", 1)[0])
    return None


def without_billing(request: MessagesRequest) -> MessagesRequest:
    """The request without its billing-header block (the same object when it has none). A string system prompt
    loses the header's line; a list loses the block (a block holding more than the header keeps the rest)."""
    system = request.system
    if isinstance(system, str):
        first, _, rest = system.partition("\n")
        if not _is_billing(first):
            return request
        return request.model_copy(update={"system": rest.lstrip("\n") or None})
    if not system or not any(isinstance(block, TextBlock) and _is_billing(block.text) for block in system):
        return request
    kept: list[TextBlock] = []
    for block in system:
        if isinstance(block, TextBlock) and _is_billing(block.text):
            rest = block.text.lstrip().partition("\n")[2].lstrip("\n")
            if not rest:
                continue
            block = TextBlock(**{**vars(block), "text": rest})  # its cache_control and other fields stay
        kept.append(block)
    return request.model_copy(update={"system": kept or None})


def opening_system_first(request: MessagesRequest) -> MessagesRequest:
    """System messages among the opening user turn moved ahead of it (the same object when there are none).
    Claude Code puts its ~9 KB environment there (working directory, platform, today's date): the same for every
    conversation of a project on a day, while the opening prompt is not, so behind the prompt no two
    conversations could share it from an upstream's prefix cache. Every turn of a conversation moves it alike,
    so the prefix also stays stable from turn to turn."""
    messages = request.messages
    opening = next((i for i, message in enumerate(messages) if message.role == "assistant"), len(messages))
    systems = [message for message in messages[:opening] if message.role == "system"]
    if not systems or all(message.role == "system" for message in messages[:len(systems)]):
        return request
    others = [message for message in messages[:opening] if message.role != "system"]
    return request.model_copy(update={"messages": [*systems, *others, *messages[opening:]]})


def cache_key(session_id: str | None) -> str | None:
    """The `prompt_cache_key` of a Claude Code session: a hash of its id (None without one). Every request of a
    session, subagents included, shares it; OpenAI routes requests of one key and prefix to the same cache."""
    if not session_id or not session_id.strip():
        return None
    return CACHE_KEY_PREFIX + hashlib.sha256(session_id.strip().encode()).hexdigest()[:32]


def sends_cache_key(kind: str, host: str, capability: bool | None) -> bool:
    """Whether an upstream gets `prompt_cache_key`: only OpenAI-dialect kinds; there, a capability override
    (True or False) decides, and without one only OpenAI's own API (api.openai.com) gets it."""
    if kind not in CACHE_KEY_KINDS:
        return False
    if capability is not None:
        return capability
    return host.lower().rstrip(".") in OPENAI_HOSTS
