"""`GET /v1/models`: what Claude Code's model discovery reads (id, display_name, description)."""

from __future__ import annotations

import re

from ccany_addon.config.snapshot import ConfigSnapshot, Provider, ProviderKey, Route
from ccany_addon.proxy.endpoints import CLAUDE_CODE_MODELS, model_info, models_list, route
from ccany_addon.upstreams.models import ModelTiers
from ccany_addon.upstreams.routing import Upstream

TIERS = ModelTiers("gpt-5", "", "gpt-5-mini")
DEFAULT = Upstream("https", "api.openai.com", 443, "/v1", "sk-env", "set OPENAI_API_KEY")
# What Claude Code keeps of the list (DESIGN.md §6).
KEPT = re.compile(r"claude|anthropic", re.IGNORECASE)


def provider(name: str, kind: str = "openai", models: dict | None = None) -> Provider:
    return Provider(1, name, kind, "http", "127.0.0.1", 9000, "/v1", None, models or {},
                    (ProviderKey(1, "k", "secret"),))


def by_id(listing: dict) -> dict[str, dict]:
    return {entry["id"]: entry for entry in listing["data"]}


def test_the_current_claude_code_ids_each_name_where_they_go():
    listing = models_list(TIERS, ConfigSnapshot(), DEFAULT)
    models = by_id(listing)
    assert list(models) == [model_id for model_id, _ in CLAUDE_CODE_MODELS]
    assert {"claude-opus-5-5", "claude-sonnet-5-5", "claude-haiku-5-5", "claude-fable-5-2"} <= set(models)
    assert models["claude-haiku-5-5"]["display_name"] == "Haiku 5.5 → gpt-5-mini @ api.openai.com"
    assert models["claude-sonnet-5-5"]["display_name"] == "Sonnet 5.5 → gpt-5 @ api.openai.com"  # no middle: big
    assert models["claude-fable-5-2"]["display_name"] == "Fable 5.2 → gpt-5 @ api.openai.com"  # no tier word: big
    assert all(KEPT.search(model_id) for model_id in models)
    assert all(entry["description"] and entry["type"] == "model" for entry in models.values())
    assert (listing["has_more"], listing["first_id"], listing["last_id"]) == (
        False, "claude-opus-5-5", "claude-fable-5-2")


def test_the_unknown_claude_tier_option_shows_in_the_fable_row():
    small = ModelTiers("gpt-5", "", "gpt-5-mini", "small")
    assert by_id(models_list(small, ConfigSnapshot(), DEFAULT))["claude-fable-5-2"]["display_name"].endswith(
        "→ gpt-5-mini @ api.openai.com")


def test_config_routes_are_listed_and_followed():
    local = provider("local", models={"big": "qwen-big", "small": "qwen-small"})
    deep = provider("deep")
    config = ConfigSnapshot(providers={"local": local, "deep": deep}, routes=(
        Route("claude-house-model", deep, "deepseek-chat"),
        Route("*", deep, "deepseek-reasoner", "background"),
        Route("claude-*", local, None),
    ))
    models = by_id(models_list(TIERS, config, DEFAULT))
    # a route whose pattern is a plain name becomes an id of its own; a glob cannot be listed
    assert models["claude-house-model"]["display_name"] == "claude-house-model → deepseek-chat @ deep"
    assert "claude-*" not in models and "*" not in models
    assert models["claude-opus-5-5"]["display_name"] == "Opus 5.5 → qwen-big @ local"
    assert models["claude-haiku-5-5"]["display_name"] == "Haiku 5.5 → qwen-small @ local"
    # a scenario route sends some requests elsewhere: the description says so
    assert "background requests → deepseek-reasoner @ deep" in models["claude-opus-5-5"]["description"]


def test_without_any_upstream_the_list_still_answers():
    models = by_id(models_list(TIERS, ConfigSnapshot(), None))
    assert models["claude-opus-5-5"]["display_name"] == "Opus 5.5 → no upstream"


def test_one_model_by_id_listed_or_not():
    assert model_info(TIERS, "claude-fable-5-2", ConfigSnapshot(), DEFAULT)["display_name"] == (
        "Fable 5.2 → gpt-5 @ api.openai.com")
    assert model_info(TIERS, "claude-opus-4-1", ConfigSnapshot(), DEFAULT)["display_name"] == (
        "claude-opus-4-1 → gpt-5 @ api.openai.com")


def test_the_warm_up_probe_is_answered_by_the_gateway():
    assert route("HEAD", "/api/hello") == route("GET", "/api/hello") == "hello"
