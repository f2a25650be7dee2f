"""Model capabilities: built-in families, config DB overrides, and fitting a request to them."""

from __future__ import annotations

from ccany_addon.anthropic_api.schema import MessagesRequest
from ccany_addon.converters.capability_fit import IMAGE_PLACEHOLDER, fit_request
from ccany_addon.upstreams.models import Capabilities, CapabilityOverride, capabilities

IMAGE = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}}


def request() -> MessagesRequest:
    return MessagesRequest.model_validate({
        "model": "claude-sonnet-4-5", "max_tokens": 100,
        "tools": [{"name": "Read", "input_schema": {"type": "object"}}], "tool_choice": {"type": "auto"},
        "messages": [
            {"role": "user", "content": [IMAGE, {"type": "text", "text": "what is this?"}]},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "Read", "input": {}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": [IMAGE]}]},
        ]})


def test_built_in_families_and_overrides_in_order():
    assert capabilities("deepseek-chat").max_output_tokens == 8192
    assert capabilities("openrouter/deepseek/deepseek-chat").vision is False
    assert capabilities("gemini-2.5-pro").context_window == 1_048_576
    assert capabilities("qwen3-coder-plus").late_system is False
    assert capabilities("my-local-model") == Capabilities()
    overrides = (CapabilityOverride("my-*", max_output_tokens=4096, tools=False),
                 CapabilityOverride("my-local-*", max_output_tokens=2048, uses_max_completion_tokens=True))
    caps = capabilities("my-local-model", overrides)
    assert (caps.max_output_tokens, caps.tools, caps.uses_max_completion_tokens, caps.vision) == (2048, False, True,
                                                                                                   True)
    # an override only changes what it sets
    assert capabilities("deepseek-chat", (CapabilityOverride("deepseek-*", vision=True),)).max_output_tokens == 8192


def test_override_from_a_config_row():
    row = {"pattern": "x-*", "max_output_tokens": None, "context_window": 32000, "vision": 0, "tools": None,
           "reasoning": 1, "max_tokens_field": "max_tokens", "late_system": None}
    override = CapabilityOverride.from_row(row)
    assert override == CapabilityOverride("x-*", context_window=32000, vision=False, reasoning=True,
                                          uses_max_completion_tokens=False)


def test_a_full_model_keeps_the_request_as_it_is():
    original = request()
    fitted, notes = fit_request(original, Capabilities())
    assert fitted is original and notes == []


def test_no_vision_means_placeholders_and_no_tools_means_no_definitions():
    fitted, notes = fit_request(request(), Capabilities(vision=False, tools=False))
    assert fitted.tools is None and fitted.tool_choice is None
    first, _, result = fitted.messages
    assert [block.type for block in first.content] == ["text", "text"] and first.content[0].text == IMAGE_PLACEHOLDER
    assert result.content[0].content[0].text == IMAGE_PLACEHOLDER
    assert notes == ["left out 1 tools: the upstream model does not take tools",
                     "replaced 2 images with a placeholder: the upstream model does not accept images"]
