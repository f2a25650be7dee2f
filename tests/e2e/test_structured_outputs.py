"""Structured outputs through the real proxy, as Claude Code asks for its session titles: `output_config.format`
becomes the upstream's response format where the model takes one, and the protocol's rejection where it does not
(the CLI then stops asking that model for structured output)."""

from __future__ import annotations

import httpx

from tests.e2e.test_http import anthropic_error

TITLE_FORMAT = {"type": "json_schema", "schema": {"type": "object", "properties": {"title": {"type": "string"}},
                                                  "required": ["title"], "additionalProperties": False}}


def titled(model: str) -> dict:
    return {"model": model, "max_tokens": 50, "output_config": {"effort": "xhigh", "format": TITLE_FORMAT},
            "messages": [{"role": "user", "content": "Name this session"}]}


def test_a_model_that_takes_json_schema_gets_it_as_response_format(proxy, fake_upstream):
    fake_upstream.clear()
    response = httpx.post(f"{proxy.url}/v1/messages", json=titled("claude-opus-5-5"), timeout=20)  # → gpt-4o
    assert response.status_code == 200, response.text
    sent = fake_upstream.requests()[-1]["body"]
    assert sent["model"] == "gpt-4o"
    assert sent["response_format"]["type"] == "json_schema"
    assert sent["response_format"]["json_schema"]["schema"]["required"] == ["title"]


def test_a_model_without_it_gets_the_protocols_rejection(proxy, fake_upstream):
    fake_upstream.clear()
    response = httpx.post(f"{proxy.url}/v1/messages", json=titled("scenario:text"), timeout=20)  # an unknown server
    message = anthropic_error(response, 400, "invalid_request_error")
    assert message == "capability_rejected: structured_outputs_unsupported"
    assert fake_upstream.requests() == []
