"""Structured outputs and effort on converting kinds: one table per dialect (item 7 of issue 17)."""

from __future__ import annotations

import json

import pytest

from ccany_addon.anthropic_api.errors import GatewayError
from ccany_addon.anthropic_api.schema import MessagesRequest, parse
from ccany_addon.converters.common import UpstreamTarget
from ccany_addon.converters.gemini import to_gemini_request
from ccany_addon.converters.openai_chat import to_chat_request
from ccany_addon.converters.openai_responses import to_responses_request
from ccany_addon.converters.structured import STRUCTURED_OUTPUTS_UNSUPPORTED
from ccany_addon.upstreams.models import CapabilityOverride, capabilities

SCHEMA = {"$schema": "http://json-schema.org/draft-07/schema#", "type": "object",
          "properties": {"title": {"type": "string"}}, "required": ["title"], "additionalProperties": False}
WITHOUT_DOLLAR_SCHEMA = {key: value for key, value in SCHEMA.items() if key != "$schema"}
TITLE = {"output_config": {"format": {"type": "json_schema", "schema": SCHEMA}}}


def request(**fields) -> MessagesRequest:
    body = {"model": "claude-haiku-4-5", "max_tokens": 512, "messages": [{"role": "user", "content": "name this"}],
            **fields}
    return parse(MessagesRequest, json.dumps(body).encode())


def target(model: str, **kwargs) -> UpstreamTarget:
    return UpstreamTarget(model, capabilities(model), **kwargs)


def effort(level: str | None, thinking: dict | None = None) -> dict:
    fields: dict = {"thinking": thinking or {"type": "adaptive"}}
    if level is not None:
        fields["output_config"] = {"effort": level}
    return fields


# ---------------------------------------------------------------- effort


@pytest.mark.parametrize(("model", "level", "expected"), [
    ("gpt-5", "low", "low"), ("gpt-5", "medium", "medium"), ("gpt-5", "high", "high"),
    ("gpt-5", "xhigh", "high"), ("gpt-5", "max", "high"), ("o3", "xhigh", "high"),
    ("gpt-5.2", "low", "low"), ("gpt-5.2", "high", "high"), ("gpt-5.2", "xhigh", "xhigh"), ("gpt-5.2", "max", "xhigh"),
    ("gpt-5.1-codex-max", "xhigh", "xhigh"), ("gpt-5", None, "medium"), ("gpt-5", "turbo", "medium"),
])
def test_openai_effort_scale(model, level, expected):
    body, _ = to_chat_request(request(**effort(level)), target(model))
    assert body["reasoning_effort"] == expected


def test_openai_effort_without_thinking_and_none_when_disabled():
    assert to_chat_request(request(output_config={"effort": "xhigh"}), target("gpt-5.2"))[0]["reasoning_effort"] \
        == "xhigh"
    body, _ = to_chat_request(request(**effort("high", {"type": "disabled"})), target("gpt-5.2"))
    assert "reasoning_effort" not in body


def test_openrouter_takes_xhigh():
    body, _ = to_chat_request(request(**effort("max")), target("openai/gpt-5", reasoning_object=True))
    assert body["reasoning"] == {"effort": "xhigh"}


@pytest.mark.parametrize(("model", "level", "expected"), [
    ("gpt-5-codex", "low", "low"), ("gpt-5-codex", "medium", "medium"), ("gpt-5-codex", "high", "high"),
    ("gpt-5-codex", "xhigh", "high"), ("gpt-5-codex", "max", "high"),
    ("gpt-5.2-codex", "xhigh", "xhigh"), ("gpt-5.2-codex", "max", "xhigh"),
])
def test_responses_effort_scale(model, level, expected):
    body, _ = to_responses_request(request(**effort(level)), target(model))
    assert body["reasoning"] == {"effort": expected, "summary": "auto"}


@pytest.mark.parametrize(("model", "level", "expected"), [
    ("gemini-2.5-pro", "low", {"thinkingBudget": 2048}), ("gemini-2.5-pro", "medium", {"thinkingBudget": 8192}),
    ("gemini-2.5-pro", "high", {"thinkingBudget": 16384}), ("gemini-2.5-pro", "xhigh", {"thinkingBudget": 32768}),
    ("gemini-2.5-pro", "max", {"thinkingBudget": 32768}), ("gemini-2.5-flash", "max", {"thinkingBudget": 24576}),
    ("gemini-2.5-flash", None, {"thinkingBudget": -1}),
    ("gemini-3-pro-preview", "low", {"thinkingLevel": "low"}), ("gemini-3-pro-preview", "medium", {}),
    ("gemini-3-pro-preview", "xhigh", {"thinkingLevel": "high"}), ("gemini-3-pro-preview", None, {}),
    ("gemini-3-flash-preview", "medium", {"thinkingLevel": "medium"}),
    ("gemini-3-flash-preview", "max", {"thinkingLevel": "high"}),
])
def test_gemini_effort_scale(model, level, expected):
    body, _ = to_gemini_request(request(**effort(level)), target(model))
    assert body["generationConfig"]["thinkingConfig"] == {"includeThoughts": True, **expected}


# ---------------------------------------------------------------- structured outputs


def test_openai_response_format():
    body, _ = to_chat_request(request(**TITLE), target("gpt-4o"))
    assert body["response_format"] == {"type": "json_schema", "json_schema": {
        "name": "response", "schema": WITHOUT_DOLLAR_SCHEMA, "strict": False}}


def test_responses_text_format():
    body, _ = to_responses_request(request(**TITLE), target("gpt-5-codex"))
    assert body["text"] == {"format": {"type": "json_schema", "name": "response", "schema": WITHOUT_DOLLAR_SCHEMA,
                                       "strict": False}}


def test_gemini_response_json_schema():
    body, _ = to_gemini_request(request(**TITLE), target("gemini-2.5-flash"))
    config = body["generationConfig"]
    assert config["responseMimeType"] == "application/json"
    assert config["responseJsonSchema"] == WITHOUT_DOLLAR_SCHEMA and "responseSchema" not in config


def test_older_gemini_gets_the_cleaned_response_schema():
    body, _ = to_gemini_request(request(**TITLE), target("gemini-2.0-flash"))
    config = body["generationConfig"]
    assert config["responseMimeType"] == "application/json" and "responseJsonSchema" not in config
    assert config["responseSchema"] == {"type": "object", "properties": {"title": {"type": "string"}},
                                        "required": ["title"]}


@pytest.mark.parametrize(("convert", "model"), [
    pytest.param(to_chat_request, "qwen3-coder-30b", id="openai-unknown-server-model"),
    pytest.param(to_chat_request, "deepseek-chat", id="openai-json-object-only"),
    pytest.param(to_responses_request, "gpt-oss-120b", id="responses-unknown"),
    pytest.param(to_gemini_request, "gemma-3-27b-it", id="gemini-unknown"),
])
def test_a_model_without_structured_outputs_gets_the_protocol_rejection(convert, model):
    with pytest.raises(GatewayError) as refused:
        convert(request(**TITLE), target(model))
    assert refused.value.status == 400 and refused.value.message == STRUCTURED_OUTPUTS_UNSUPPORTED


def test_an_unknown_format_type_gets_the_rejection_too():
    with pytest.raises(GatewayError) as refused:
        to_chat_request(request(output_config={"format": {"type": "regex", "pattern": "x"}}), target("gpt-4o"))
    assert refused.value.message == STRUCTURED_OUTPUTS_UNSUPPORTED


def test_a_capability_override_turns_structured_outputs_on():
    override = CapabilityOverride("qwen3*", structured_outputs=True)
    caps = capabilities("qwen3-coder-30b", (override,))
    body, _ = to_chat_request(request(**TITLE), UpstreamTarget("qwen3-coder-30b", caps))
    assert body["response_format"]["json_schema"]["schema"] == WITHOUT_DOLLAR_SCHEMA


def test_no_format_no_fields():
    for convert, model in ((to_chat_request, "qwen3"), (to_responses_request, "x"), (to_gemini_request, "gemma")):
        body, _ = convert(request(), target(model))
        assert "response_format" not in body and "text" not in body
        assert "responseMimeType" not in json.dumps(body)
