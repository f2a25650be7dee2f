"""Issue 17 item 6 through a real mitmdump: Claude Code's billing-header block never reaches a converting upstream,
so two conversations share their upstream prefix, and its facts are flow columns."""

from __future__ import annotations

import httpx

BILLING = "x-anthropic-billing-header: cc_version=2.1.332.{}; cc_entrypoint=cli;"
SYSTEM = "You are Claude Code, Anthropic's official CLI for Claude."


def turn(proxy, billing_hash: str, session: str) -> httpx.Response:
    body = {"model": "claude-sonnet-4-5", "max_tokens": 64, "stream": True,
            "system": [{"type": "text", "text": BILLING.format(billing_hash)},
                       {"type": "text", "text": SYSTEM, "cache_control": {"type": "ephemeral"}}],
            "messages": [{"role": "user", "content": "hello there"}]}
    response = httpx.post(f"{proxy.url}/v1/messages?beta=true", json=body, timeout=20,
                          headers={"x-api-key": "client", "x-claude-code-session-id": session})
    assert response.status_code == 200, response.text
    return response


def test_requests_differing_only_in_the_billing_header_reach_the_upstream_identical(proxy, fake_upstream):
    fake_upstream.clear()
    first = turn(proxy, "a1f", "session-one")
    second = turn(proxy, "9c3", "session-two")
    sent = [r["body"] for r in fake_upstream.requests()]
    assert len(sent) == 2
    assert sent[0]["messages"] == sent[1]["messages"]
    assert sent[0]["messages"][0] == {"role": "system", "content": SYSTEM}
    assert sent[0] == sent[1]
    # an unknown OpenAI-compatible server (this fake, at 127.0.0.1) is not sent prompt_cache_key
    assert "prompt_cache_key" not in sent[0]
    for response, billing_hash in ((first, "a1f"), (second, "9c3")):
        row = proxy.flow(response.headers["request-id"])
        assert (row["cc_version"], row["cc_entrypoint"]) == (f"2.1.332.{billing_hash}", "cli")
        assert "x-anthropic-billing-header" in row["client_request"]  # the client's body is logged as it came
        assert "x-anthropic-billing-header" not in row["upstream_request"]


def test_a_request_without_the_block_has_no_billing_columns(proxy, fake_upstream):
    response = httpx.post(f"{proxy.url}/v1/messages", timeout=20, headers={"x-api-key": "client"}, json={
        "model": "claude-sonnet-4-5", "max_tokens": 64, "messages": [{"role": "user", "content": "hi"}]})
    row = proxy.flow(response.headers["request-id"])
    assert (row["cc_version"], row["cc_entrypoint"]) == (None, None)
