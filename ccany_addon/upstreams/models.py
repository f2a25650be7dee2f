"""The one model mapping, and what the gateway knows about upstream model families."""

from __future__ import annotations

import fnmatch
import functools
import re
from dataclasses import dataclass, fields, replace

TIERS = ("big", "middle", "small")


@dataclass(frozen=True, slots=True)
class ModelTiers:
    big: str
    middle: str
    small: str
    # The tier of a Claude name with no tier word (Fable, Mythos, whatever family comes next): passed through
    # unchanged it would reach an upstream that has no such model and fail with a 404.
    unknown_claude: str = "big"

    def map(self, client_model: str) -> str:
        """Claude tier names map to the configured models (a Claude name without a tier word to the
        `unknown_claude` tier); any other name passes through unchanged."""
        name = client_model.lower()
        if "haiku" in name:
            return self.tier("small")
        if "sonnet" in name:
            return self.tier("middle")
        if "opus" in name:
            return self.tier("big")
        if is_claude_name(name):
            return self.tier(self.unknown_claude)
        return client_model

    def tier(self, tier: str) -> str:
        """The model of a tier name (big, middle, small); middle falls back to big, as sonnet does."""
        if tier == "small":
            return self.small
        if tier == "middle":
            return self.middle or self.big
        return self.big


def is_claude_name(model: str) -> bool:
    """`claude-…`, also behind a vendor prefix (`anthropic/claude-…`, as OpenRouter spells it)."""
    return model.lower().rsplit("/", 1)[-1].startswith("claude")


@dataclass(frozen=True, slots=True)
class Capabilities:
    max_output_tokens: int | None = None
    context_window: int | None = None
    reasoning: bool = False
    vision: bool = True
    tools: bool = True
    # OpenAI's reasoning models refuse `max_tokens` and want `max_completion_tokens`.
    uses_max_completion_tokens: bool = False
    # Some chat templates (Qwen, Mistral on vLLM) reject a system message after the first turn.
    late_system: bool = True
    # DeepSeek answers 400 on a tool turn whose assistant message lacks its `reasoning_content`.
    echo_reasoning: bool = False
    web_search: bool = False
    # Send OpenAI's `prompt_cache_key` (a hash of the Claude Code session) to an OpenAI-dialect upstream. None:
    # the upstream's host decides (only api.openai.com gets it; strict compatible servers refuse unknown fields).
    prompt_cache_key: bool | None = None
    # `output_config.format` as the upstream's JSON-schema answer format; without it the protocol's rejection
    # (capability_rejected: structured_outputs_unsupported). Off for unknown servers, on for known families.
    structured_outputs: bool = False
    # OpenAI's `xhigh` reasoning effort (models after gpt-5.1-codex-max); elsewhere `high` is the top.
    xhigh_effort: bool = False


@dataclass(frozen=True, slots=True)
class CapabilityOverride:
    """A `model_capabilities` row of the config DB: a glob on the upstream model name, and the facts it sets
    (None: keep the built-in)."""

    pattern: str
    max_output_tokens: int | None = None
    context_window: int | None = None
    vision: bool | None = None
    tools: bool | None = None
    reasoning: bool | None = None
    uses_max_completion_tokens: bool | None = None
    late_system: bool | None = None
    prompt_cache_key: bool | None = None
    structured_outputs: bool | None = None
    xhigh_effort: bool | None = None

    @classmethod
    def from_row(cls, row: dict) -> CapabilityOverride:
        """A row as read from the table; a column the row lacks (a row from before config DB v6) is unset."""
        flag = {name: None if (value := row.get(name)) is None else bool(value)
                for name in ("vision", "tools", "reasoning", "late_system", "prompt_cache_key", "structured_outputs",
                             "xhigh_effort")}
        field_name = row["max_tokens_field"]
        return cls(row["pattern"], row["max_output_tokens"], row["context_window"], **flag,
                   uses_max_completion_tokens=None if field_name is None else field_name == "max_completion_tokens")

    def matches(self, upstream_model: str) -> bool:
        return fnmatch.fnmatchcase(upstream_model.lower(), self.pattern.lower())

    def apply(self, caps: Capabilities) -> Capabilities:
        changes = {f.name: value for f in fields(self) if f.name != "pattern" and (value := getattr(self, f.name))
                   is not None}
        return replace(caps, **changes)


_FAMILIES: tuple[tuple[re.Pattern[str], Capabilities], ...] = tuple(
    (re.compile(pattern), caps)
    for pattern, caps in (
        (r"^(o1|o3|o4)(-|$)", Capabilities(100_000, 200_000, reasoning=True, uses_max_completion_tokens=True,
                                           structured_outputs=True)),
        (r"^gpt-5\.(?:[2-9]|1-codex-max)|^gpt-[6-9]",
         Capabilities(128_000, 400_000, reasoning=True, uses_max_completion_tokens=True, structured_outputs=True,
                      xhigh_effort=True)),
        (r"^gpt-5", Capabilities(128_000, 400_000, reasoning=True, uses_max_completion_tokens=True,
                                 structured_outputs=True)),
        (r"^codex", Capabilities(128_000, 400_000, reasoning=True, uses_max_completion_tokens=True,
                                 structured_outputs=True)),
        (r"^gpt-4\.1", Capabilities(32_768, 1_047_576, structured_outputs=True)),
        (r"^gpt-4o.*search", Capabilities(16_384, 128_000, web_search=True)),
        (r"^gpt-4o", Capabilities(16_384, 128_000, structured_outputs=True)),
        (r"^gpt-4-turbo", Capabilities(4_096, 128_000)),
        (r"^gpt-3\.5", Capabilities(4_096, 16_385, vision=False)),
        (r"^deepseek-reasoner", Capabilities(65_536, 128_000, reasoning=True, vision=False, echo_reasoning=True)),
        (r"^deepseek", Capabilities(8_192, 128_000, vision=False, echo_reasoning=True)),
        (r"^gemini-(2\.5|3)", Capabilities(65_536, 1_048_576, reasoning=True, structured_outputs=True)),
        (r"^gemini", Capabilities(8_192, 1_048_576, structured_outputs=True)),
        (r"^claude", Capabilities(64_000, 200_000, reasoning=True)),
        (r"^(qwen3?-coder|qwen3)", Capabilities(65_536, 262_144, late_system=False)),
        (r"^qwen", Capabilities(8_192, 131_072, late_system=False)),
    )
)


@functools.lru_cache(maxsize=256)  # every request asks; the answer costs a dozen regex searches (3 µs)
def capabilities(upstream_model: str, overrides: tuple[CapabilityOverride, ...] = ()) -> Capabilities:
    """Built-in facts for well-known families, matched on the name after any `vendor/` prefix, then the config
    DB's overrides (every matching row, in order: a later row wins)."""
    name = upstream_model.lower().rsplit("/", 1)[-1]
    caps = next((caps for pattern, caps in _FAMILIES if pattern.search(name)), Capabilities())
    for override in overrides:
        if override.matches(upstream_model) or override.matches(name):
            caps = override.apply(caps)
    return caps
