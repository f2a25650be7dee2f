"""Claude Code's billing-header block leaves converted prompts; the session becomes a prompt_cache_key."""

from __future__ import annotations

import json

import pytest

from ccany_addon.anthropic_api.schema import MessagesRequest, as_dict, parse
from ccany_addon.converters import prompt_cache
from ccany_addon.converters.common import UpstreamTarget
from ccany_addon.upstreams.dialects import CONVERTING
from ccany_addon.upstreams.models import CapabilityOverride, capabilities

BILLING = "x-anthropic-billing-header: cc_version=2.1.332.a1f; cc_entrypoint=cli;"
PROMPT = "You are Claude Code, Anthropic's official CLI for Claude."


def request(system: object, **extra: object) -> MessagesRequest:
    body = {"model": "claude-opus-4-5", "max_tokens": 100, "messages": [{"role": "user", "content": "hi"}],
            "system": system, **extra}
    return parse(MessagesRequest, json.dumps(body).encode())


def blocks(*texts: str) -> list[dict]:
    return [{"type": "text", "text": text, "cache_control": {"type": "ephemeral"}} for text in texts]


def test_the_billing_blocks_facts_are_read():
    facts = prompt_cache.billing_facts(request(blocks(BILLING, PROMPT)))
    assert facts == prompt_cache.BillingFacts("2.1.332.a1f", "cli")
    other = "x-anthropic-billing-header: cc_entrypoint=sdk-ts; cc_version=2.1.332.ff0; cch=00000;"
    assert prompt_cache.billing_facts(request(blocks(other))) == prompt_cache.BillingFacts("2.1.332.ff0", "sdk-ts")
    assert prompt_cache.billing_facts(request(f"{BILLING}\n{PROMPT}")).cc_version == "2.1.332.a1f"


@pytest.mark.parametrize("system", [None, PROMPT, blocks(PROMPT), blocks(PROMPT, "x-anthropic-billing-header")])
def test_a_request_without_the_block_has_no_facts_and_is_kept_as_it_is(system):
    req = request(system)
    assert prompt_cache.billing_facts(req) is None
    assert prompt_cache.without_billing(req) is req


def test_the_block_is_taken_out_and_the_rest_keeps_its_fields():
    stripped = prompt_cache.without_billing(request(blocks(BILLING, PROMPT)))
    assert as_dict(stripped.system) == blocks(PROMPT)
    assert prompt_cache.without_billing(request(blocks(BILLING))).system is None
    # a block holding more than the header keeps the rest; a string prompt loses the header's line
    assert as_dict(prompt_cache.without_billing(request(blocks(f"{BILLING}\n{PROMPT}"))).system) == blocks(PROMPT)
    assert prompt_cache.without_billing(request(f"{BILLING}\n\n{PROMPT}")).system == PROMPT
    assert prompt_cache.without_billing(request(BILLING)).system is None


@pytest.mark.parametrize("kind", ["openai", "azure", "responses", "gemini"])
def test_two_conversations_share_the_converted_prefix(kind):
    """Two requests that differ only in the billing hash convert to the same upstream body."""
    target = UpstreamTarget("gpt-4o", capabilities("gpt-4o"), 0, False)
    bodies = [CONVERTING[kind].to_request(prompt_cache.without_billing(request(blocks(
        f"x-anthropic-billing-header: cc_version=2.1.332.{h}; cc_entrypoint=cli;", PROMPT))), target)[0]
        for h in ("a1f", "9c3")]
    assert bodies[0] == bodies[1]
    assert "billing" not in json.dumps(bodies[0]) and PROMPT in json.dumps(bodies[0])


def test_the_cache_key_is_a_hash_of_the_session():
    key = prompt_cache.cache_key("5f1e7c2a-0000-4000-8000-000000000001")
    assert key is not None and key.startswith("ccany-") and len(key) == len("ccany-") + 32
    assert "5f1e7c2a" not in key
    assert key == prompt_cache.cache_key("5f1e7c2a-0000-4000-8000-000000000001")
    assert key != prompt_cache.cache_key("5f1e7c2a-0000-4000-8000-000000000002")
    assert prompt_cache.cache_key(None) is None and prompt_cache.cache_key(" ") is None


@pytest.mark.parametrize(("kind", "host", "capability", "sends"), [
    ("openai", "api.openai.com", None, True),
    ("responses", "api.openai.com", None, True),
    ("openai", "API.OpenAI.com", None, True),
    ("openai", "localhost", None, False),  # vLLM, llama.cpp, anything compatible: off unless told
    ("openai", "api.deepseek.com", None, False),
    ("openai", "openrouter.ai", None, False),
    ("azure", "me.openai.azure.com", None, False),
    ("openai", "localhost", True, True),  # a capability override turns it on for a server known to take it
    ("azure", "me.openai.azure.com", True, True),
    ("openai", "api.openai.com", False, False),  # ... or off
    ("gemini", "generativelanguage.googleapis.com", True, False),  # never outside OpenAI's dialect
    ("anthropic", "api.anthropic.com", True, False),
])
def test_who_gets_the_cache_key(kind, host, capability, sends):
    assert prompt_cache.sends_cache_key(kind, host, capability) is sends


def test_the_capability_is_unset_by_default_and_overridable():
    assert capabilities("gpt-5").prompt_cache_key is None
    assert capabilities("qwen3-coder").prompt_cache_key is None
    on = CapabilityOverride("my-vllm-*", prompt_cache_key=True)
    assert capabilities("my-vllm-model", (on,)).prompt_cache_key is True
    off = CapabilityOverride("gpt-*", prompt_cache_key=False)
    assert capabilities("gpt-5", (off,)).prompt_cache_key is False
    row = {"pattern": "x*", "max_output_tokens": None, "context_window": None, "vision": None, "tools": None,
           "reasoning": None, "max_tokens_field": None, "late_system": None}
    assert CapabilityOverride.from_row(row).prompt_cache_key is None  # a config DB without the column
    assert CapabilityOverride.from_row({**row, "prompt_cache_key": 1}).prompt_cache_key is True


ENVIRONMENT = {"role": "system",
               "content": "# Environment\nPrimary working directory: /work\nToday's date is 2026-12-04."}


def conversation(prompt: str, *later: dict) -> MessagesRequest:
    return parse(MessagesRequest, json.dumps({"model": "claude-opus-5-5", "max_tokens": 10, "system": PROMPT,
                                              "messages": [{"role": "user", "content": prompt}, ENVIRONMENT,
                                                           *later]}).encode())


@pytest.mark.parametrize("kind", ["openai", "azure", "responses"])  # Gemini keeps system text apart from contents
def test_the_opening_environment_goes_in_front_of_the_prompt_so_conversations_share_it(kind):
    target = UpstreamTarget("gpt-4o", capabilities("gpt-4o"))
    first, second = (CONVERTING[kind].to_request(prompt_cache.opening_system_first(conversation(prompt)), target)[0]
                     for prompt in ("Fix the bug in parser.py", "Write a README"))
    shared = json.dumps(first)[:json.dumps(first).find("Fix the bug")]
    assert "Today's date is 2026-12-04." in shared and json.dumps(second).startswith(shared)


def test_only_the_opening_turn_is_reordered_and_a_request_already_in_order_is_kept():
    later = [{"role": "assistant", "content": "Done."}, {"role": "system", "content": "A file changed."},
             {"role": "user", "content": "Thanks"}]
    moved = prompt_cache.opening_system_first(conversation("Fix the bug", *later))
    assert [m.role for m in moved.messages] == ["system", "user", "assistant", "system", "user"]
    assert moved.messages[3].content == "A file changed."  # a system message later on stays where it was
    assert prompt_cache.opening_system_first(moved) is moved
