"""The error words Claude Code acts on, through the real proxy: a context overflow, a refused late system message,
the gateway's own key refused and auto mode's `safeguards`, as the SDK and raw HTTP see them."""

from __future__ import annotations

import re

import anthropic
import httpx
import pytest

from tests.e2e.test_http import anthropic_error

LATE_SYSTEM = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},
               {"role": "system", "content": "The user's files changed."}, {"role": "user", "content": "go on"}]


@pytest.mark.parametrize("stream", [False, True])
def test_an_overflow_becomes_anthropics_prompt_is_too_long_with_its_numbers(proxy, stream):
    body = {"model": "scenario:overflow", "max_tokens": 100, "stream": stream,
            "messages": [{"role": "user", "content": "a very long conversation"}]}
    response = httpx.post(f"{proxy.url}/v1/messages", json=body, timeout=20)
    message = anthropic_error(response, 400, "invalid_request_error")
    assert message == "prompt is too long: 131072 tokens > 128000 maximum"
    row = proxy.flow(response.headers["request-id"])
    assert "maximum context length is 128000 tokens" in row["notes"]  # the upstream's own words stay in the log


def test_a_refused_late_system_message_is_a_capability_rejection_the_cli_retries_without(proxy):
    client = anthropic.Anthropic(base_url=proxy.url, api_key="x", max_retries=0, timeout=20)
    with pytest.raises(anthropic.BadRequestError) as refused:
        client.messages.create(model="scenario:strict_system", max_tokens=50, messages=LATE_SYSTEM)
    assert refused.value.body["error"]["message"] == "capability_rejected: mid_conv_system"
    assert refused.value.response.headers["x-should-retry"] == "false"
    # what the CLI does next: the same conversation without the system message, which the upstream takes
    retried = [message for message in LATE_SYSTEM if message["role"] != "system"]
    assert client.messages.create(model="scenario:strict_system", max_tokens=50, messages=retried).content


def test_the_gateways_own_key_refused_is_not_retried_and_says_whose_key(proxy):
    response = httpx.post(f"{proxy.url}/v1/messages", timeout=20, json={
        "model": "scenario:http_401", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]})
    message = anthropic_error(response, 401, "authentication_error")
    assert "gateway's own API key (not your client key)" in message and "fake upstream says 401" in message
    assert response.headers["x-should-retry"] == "false"


def test_auto_modes_safeguards_are_refused_in_words_the_cli_retries_without(proxy, fake_upstream):
    """The gateway protocol: an upstream that cannot run auto mode's check answers 400 naming `safeguards`, and the
    client retries without it, running the check itself with ordinary requests."""
    fake_upstream.clear()
    body = {"model": "scenario:text", "max_tokens": 50, "messages": [{"role": "user", "content": "ls"}],
            "safeguards": {"version": 1}}
    message = anthropic_error(httpx.post(f"{proxy.url}/v1/messages", json=body, timeout=20), 400,
                              "invalid_request_error")
    assert re.match(r"^(?:body\.)?safeguards(?:\.\w+)*:", message)  # the CLI's own test of the message
    assert fake_upstream.requests() == []
    body.pop("safeguards")
    assert httpx.post(f"{proxy.url}/v1/messages", json=body, timeout=20).status_code == 200
