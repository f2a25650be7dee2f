"""Pieces every dialect converter shares: ids, tool names, signatures, the target, the response context,
tool arguments and token counts.

How the converters import each other: a dialect module (openai_chat, openai_chat_stream, openai_responses,
openai_responses_stream, gemini, gemini_stream, anthropic_passthrough: one per upstream dialect, or one side of
it) imports shared modules only, never another dialect module, and no shared module imports a dialect module
(the Dialect table in upstreams/dialects.py and the gateway do). What two dialects both need moves to a shared
module: this one, shared_request (system text, content parts, tool results, the user field, function tools),
shared_answer (upstream errors; Chat Completions, Gemini and Responses API finish reasons and usage),
message_stream, structured, tool_search, prompt_cache, error_words, capability_fit, gemini_schema,
text_template. No converter imports mitmproxy, SQLite or Datasette. tests/unit/test_converter_imports.py holds
these rules.
"""

from __future__ import annotations

import base64
import hashlib
import math
import re
import secrets
from dataclasses import dataclass, field

from ccany_addon.anthropic_api.schema import MessagesRequest
from ccany_addon.anthropic_api.tool_cache import ToolCache
from ccany_addon.upstreams.models import Capabilities
from ccany_addon.util.json_codec import loads

MAX_TOOL_NAME = 64
_UNSAFE_ID = re.compile(r"[^A-Za-z0-9_-]")


def message_id() -> str:
    return "msg_" + secrets.token_hex(12)


def tool_use_id(upstream_id: str | None) -> str:
    """Anthropic ids are `[A-Za-z0-9_-]`; upstream ids are kept where they already fit."""
    if not upstream_id:
        return "toolu_" + secrets.token_hex(12)
    return _UNSAFE_ID.sub("_", upstream_id)


def short_tool_name(name: str) -> str:
    """Names over the upstream's 64-character limit get a stable hash suffix, reversible per request."""
    if len(name) <= MAX_TOOL_NAME:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{name[: MAX_TOOL_NAME - 9]}_{digest}"


def thinking_signature(thinking: str) -> str:
    """The gateway's own signature for thinking it relays; clients send it back in history untouched."""
    digest = hashlib.sha256(thinking.encode()).digest()[:24]
    return "ccany." + base64.urlsafe_b64encode(digest).decode().rstrip("=")


@dataclass(frozen=True, slots=True)
class UpstreamTarget:
    """Where a converted request goes, and what that upstream accepts."""

    model: str
    capabilities: Capabilities = field(default_factory=Capabilities)
    max_tokens_limit: int = 0  # 0: only the model's own limit
    fold_system_messages: bool = False
    reasoning_object: bool = False  # OpenRouter: `reasoning: {max_tokens | effort}`, not `reasoning_effort`
    # The gateway's cache of converted tools lists; None (tests, scripts): every request is converted afresh.
    tools: ToolCache | None = field(default=None, compare=False)

    def max_tokens(self, requested: int) -> int:
        limits = [n for n in (self.max_tokens_limit, self.capabilities.max_output_tokens) if n]
        return min([requested, *limits])


@dataclass(slots=True)
class ResponseContext:
    """What converting an answer back needs to know about the request it answers."""

    client_model: str
    tool_names: dict[str, str] = field(default_factory=dict)  # upstream name → client name
    stop_sequences: tuple[str, ...] = ()
    estimated_input_tokens: int = 0
    secrets: tuple[str, ...] = ()  # the keys the gateway holds: masked in every error a stream reports

    @classmethod
    def for_request(cls, request: MessagesRequest, estimated_input_tokens: int = 0,
                    secrets: tuple[str, ...] = ()) -> ResponseContext:
        names = {short_tool_name(t.name): t.name for t in request.tools or () if len(t.name) > MAX_TOOL_NAME}
        return cls(
            client_model=request.model,
            tool_names=names,
            stop_sequences=tuple(request.stop_sequences or ()),
            estimated_input_tokens=estimated_input_tokens,
            secrets=secrets,
        )

    def client_tool_name(self, upstream_name: str) -> str:
        return self.tool_names.get(upstream_name, upstream_name)

    def matched_stop_sequence(self, value: object) -> str | None:
        return value if isinstance(value, str) and value in self.stop_sequences else None


def parse_tool_arguments(arguments: str) -> tuple[object, str | None]:
    """JSON arguments, repairing only a truncated tail (unclosed strings and brackets).

    Returns (input, closing text that was appended) or raises ValueError when it is not JSON.
    """
    if not arguments.strip():
        return {}, None
    try:
        return loads(arguments), None
    except ValueError:
        closer = _closing_text(arguments)
        if closer:
            try:
                return loads(arguments + closer), closer
            except ValueError:
                pass
        raise ValueError(f"tool arguments are not valid JSON: {arguments[:200]!r}") from None


def _closing_text(text: str) -> str:
    stack: list[str] = []
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "{[":
            stack.append("}" if char == "{" else "]")
        elif char in "}]":
            if not stack:
                return ""
            stack.pop()
    return ('"' if in_string else "") + "".join(reversed(stack))


# Token counts an upstream reports are untrusted input: anything but a plausible count becomes one (JSON-safe).
MAX_TOKEN_COUNT = 2**53 - 1


def token_count(value: object) -> int:
    """An upstream's token count as a non-negative int: a number of another type or a string of digits is
    read as one, anything else counts 0 (a client reading `usage` wants integers)."""
    if type(value) is int:
        return min(max(value, 0), MAX_TOKEN_COUNT)
    if isinstance(value, float) and math.isfinite(value):
        return min(max(int(value), 0), MAX_TOKEN_COUNT)
    if isinstance(value, str) and value.isdigit() and len(value) < 20:
        return min(int(value), MAX_TOKEN_COUNT)
    return 0


def anthropic_usage(input_tokens: int, output_tokens: int, cache_read: int = 0) -> dict:
    """The usage object of an Anthropic message, as every converter reports it: cached input is counted apart from
    `input_tokens` (Claude Code adds the figures up), and no upstream we convert from reports cache writes."""
    return {"input_tokens": input_tokens, "output_tokens": output_tokens, "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": cache_read}


def dict_field(value: object, name: str) -> object:
    """`value[name]` when `value` is an object, else None."""
    return value.get(name) if isinstance(value, dict) else None


def estimate_output_tokens(text_chars: int) -> int:
    return max(1, text_chars // 4) if text_chars else 0
