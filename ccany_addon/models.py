"""The one model mapping, and what the gateway knows about upstream model families."""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ModelTiers:
    big: str
    middle: str
    small: str

    def map(self, client_model: str) -> str:
        """Claude tier names map to the configured models; any other name passes through unchanged."""
        name = client_model.lower()
        if "haiku" in name:
            return self.small
        if "sonnet" in name:
            return self.middle or self.big
        if "opus" in name:
            return self.big
        return client_model


@dataclass(frozen=True, slots=True)
class Capabilities:
    max_output_tokens: int | None = None
    reasoning: bool = False
    # OpenAI's reasoning models refuse `max_tokens` and want `max_completion_tokens`.
    uses_max_completion_tokens: bool = False
    # DeepSeek answers 400 on a tool turn whose assistant message lacks its `reasoning_content`.
    echo_reasoning: bool = False
    web_search: bool = False


_FAMILIES: tuple[tuple[re.Pattern[str], Capabilities], ...] = tuple(
    (re.compile(pattern), caps)
    for pattern, caps in (
        (r"^(o1|o3|o4)(-|$)", Capabilities(100_000, reasoning=True, uses_max_completion_tokens=True)),
        (r"^gpt-5", Capabilities(128_000, reasoning=True, uses_max_completion_tokens=True)),
        (r"^gpt-4\.1", Capabilities(32_768)),
        (r"^gpt-4o.*search", Capabilities(16_384, web_search=True)),
        (r"^gpt-4o", Capabilities(16_384)),
        (r"^gpt-4-turbo", Capabilities(4_096)),
        (r"^gpt-3\.5", Capabilities(4_096)),
        (r"^deepseek-reasoner", Capabilities(65_536, reasoning=True, echo_reasoning=True)),
        (r"^deepseek", Capabilities(8_192, echo_reasoning=True)),
    )
)


def capabilities(upstream_model: str) -> Capabilities:
    """Built-in facts for well-known families, matched on the name after any `vendor/` prefix."""
    name = upstream_model.lower().rsplit("/", 1)[-1]
    for pattern, caps in _FAMILIES:
        if pattern.search(name):
            return caps
    return Capabilities()
