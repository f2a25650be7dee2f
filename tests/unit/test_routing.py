"""Which upstream answers a model, and the rule that chose it."""

from __future__ import annotations

import pytest

from ccany_addon.config.snapshot import ConfigSnapshot, Provider, Route
from ccany_addon.errors import GatewayError
from ccany_addon.models import ModelTiers
from ccany_addon.routing import Upstream, choose

TIERS = ModelTiers("gpt-4o", "", "gpt-4o-mini")
DEFAULT = Upstream("https", "api.openai.com", 443, "/v1", "sk-env", "set OPENAI_API_KEY")


def provider(name: str, kind: str = "openai", models: dict | None = None) -> Provider:
    return Provider(1, name, kind, "http", "127.0.0.1", 9000, "/v1", None, models or {}, ("k1", "k2"))


def snapshot(*routes: Route) -> ConfigSnapshot:
    providers = {route.provider.name: route.provider for route in routes}
    return ConfigSnapshot(providers=providers, routes=routes)


def test_without_config_the_tiers_map_claude_names_and_others_pass():
    choice = choose("claude-haiku-4-5", ConfigSnapshot(), DEFAULT, TIERS)
    assert (choice.upstream, choice.model, choice.rule) == (DEFAULT, "gpt-4o-mini", "tier")
    assert choose("llama3", ConfigSnapshot(), DEFAULT, TIERS).rule == "default"


def test_routes_in_priority_order_with_their_model_or_the_providers_tiers():
    local = provider("local", models={"small": "qwen-small"})
    config = snapshot(Route("*haiku*", local, None), Route("claude-*", local, "qwen-big"))
    haiku = choose("claude-haiku-4-5", config, DEFAULT, TIERS)
    assert (haiku.upstream.provider, haiku.model, haiku.rule, haiku.upstream.key) == (
        "local", "qwen-small", "route *haiku*", "k1")
    assert choose("claude-opus-4-1", config, DEFAULT, TIERS).model == "qwen-big"
    assert choose("gpt-4o", config, DEFAULT, TIERS).upstream is DEFAULT


def test_provider_comma_model_names_both():
    config = snapshot(Route("never", provider("deepseek"), None))
    choice = choose("deepseek,deepseek-chat", config, DEFAULT, TIERS)
    assert (choice.upstream.provider, choice.model, choice.rule) == ("deepseek", "deepseek-chat", "provider,model")
    with pytest.raises(GatewayError, match="names no known provider") as caught:
        choose("nope,model", config, DEFAULT, TIERS)
    assert caught.value.status == 400


def test_anthropic_kind_keeps_claude_names():
    config = snapshot(Route("claude-*", provider("anthropic", kind="anthropic"), None))
    assert choose("claude-sonnet-4-5", config, DEFAULT, TIERS).model == "claude-sonnet-4-5"


def test_no_upstream_at_all_is_a_clear_error():
    with pytest.raises(GatewayError, match="no upstream"):
        choose("claude-haiku-4-5", ConfigSnapshot(), None, TIERS)
