"""Structured outputs (`output_config.format`) and effort (`output_config.effort`, `thinking`) for converting
kinds: each upstream dialect's own fields, or the gateway protocol's rejection where the model cannot. Pure.

Claude Code asks for structured outputs for session titles, auto-mode setup and its classifiers; answering
`capability_rejected: structured_outputs_unsupported` makes it stop asking that model and carry on without.
"""

from __future__ import annotations

from typing import Any

from ccany_addon.anthropic_api.errors import GatewayError
from ccany_addon.anthropic_api.schema import MessagesRequest
from ccany_addon.upstreams.models import Capabilities

# The gateway protocol's words (code.claude.com, "LLM gateway protocol reference"): the whole error message.
STRUCTURED_OUTPUTS_UNSUPPORTED = "capability_rejected: structured_outputs_unsupported"
SCHEMA_NAME = "response"  # OpenAI wants a name (^[A-Za-z0-9_-]{1,64}$); Anthropic's format has none

# Anthropic's effort scale, lowest first.
EFFORTS = ("low", "medium", "high", "xhigh", "max")


# ---------------------------------------------------------------- effort


def effort_level(request: MessagesRequest) -> str | None:
    """The effort a request asks for, on Anthropic's scale, or None (no thinking asked for).

    A thinking budget reads as low (≤ 4k), medium (≤ 16k) or high; adaptive thinking takes `output_config.effort`
    (medium when absent); effort alone (no `thinking`) counts too. An effort value this gateway does not know
    reads as medium: never a 4xx."""
    thinking = request.thinking
    effort = request.output_config.effort if request.output_config else None
    if thinking is not None and thinking.type == "disabled":
        return None
    if thinking is not None and thinking.type == "enabled":
        budget = thinking.budget_tokens or 0
        return "low" if budget <= 4096 else "medium" if budget <= 16384 else "high"
    if thinking is None and effort is None:
        return None
    return effort if effort in EFFORTS else "medium"


def openai_effort(request: MessagesRequest, xhigh: bool) -> str | None:
    """OpenAI's `reasoning_effort` / Responses `reasoning.effort`: Anthropic's top two (xhigh, max) become the
    model's highest, `xhigh` where it has it (`xhigh`: Capabilities.xhigh_effort), else `high`."""
    level = effort_level(request)
    if level in ("xhigh", "max"):
        return "xhigh" if xhigh else "high"
    return level


def gemini_thinking_level(level: str, flash: bool) -> str | None:
    """Gemini 3's `thinkingLevel` for an effort: Flash has low, medium and high; Pro only low and high (None:
    its own dynamic default, the high level)."""
    if level == "low":
        return "low"
    if level == "medium":
        return "medium" if flash else None
    return "high"


def gemini_thinking_budget(level: str, ceiling: int) -> int:
    """Gemini 2.5's `thinkingBudget` for an effort: the family's ceiling for the top two."""
    return {"low": 2048, "medium": 8192, "high": 16384}.get(level, ceiling)


# ---------------------------------------------------------------- structured outputs


def output_schema(request: MessagesRequest, caps: Capabilities) -> dict | None:
    """The JSON schema `output_config.format` asks the answer to follow, or None when it asks for nothing.
    A model without structured outputs (or a format type this gateway does not know) gets the protocol's
    rejection, so the client stops asking for it instead of getting free text it cannot parse."""
    config = request.output_config
    answer_format = config.format if config is not None else None
    if answer_format is None:
        return None
    schema = answer_format.get("schema")
    if not caps.structured_outputs or answer_format.get("type") != "json_schema" or not isinstance(schema, dict):
        raise GatewayError(400, STRUCTURED_OUTPUTS_UNSUPPORTED)
    return {key: value for key, value in schema.items() if key != "$schema"}


def openai_response_format(schema: dict[str, Any]) -> dict:
    """Chat Completions `response_format`. Not strict: OpenAI's strict mode refuses schemas that leave out
    `additionalProperties: false` or list optional properties, which Anthropic schemas may do."""
    return {"type": "json_schema", "json_schema": {"name": SCHEMA_NAME, "schema": schema, "strict": False}}


def responses_text_format(schema: dict[str, Any]) -> dict:
    """The Responses API's `text.format`."""
    return {"type": "json_schema", "name": SCHEMA_NAME, "schema": schema, "strict": False}
