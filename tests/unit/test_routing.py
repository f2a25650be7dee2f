"""Which upstream answers a model, and the rule that chose it."""

from __future__ import annotations

import pytest

from ccany_addon.anthropic_api.errors import GatewayError
from ccany_addon.anthropic_api.schema import MessagesRequest
from ccany_addon.config.snapshot import ConfigSnapshot, Provider, ProviderKey, Route
from ccany_addon.upstreams.models import ModelTiers
from ccany_addon.upstreams.routing import Upstream, choose, request_scenarios

TIERS = ModelTiers("gpt-4o", "", "gpt-4o-mini")
DEFAULT = Upstream("https", "api.openai.com", 443, "/v1", "sk-env", "set OPENAI_API_KEY")


def provider(name: str, kind: str = "openai", models: dict | None = None, fallback: tuple[str, ...] = ()) -> Provider:
    keys = (ProviderKey(1, "k1", "secret-1"), ProviderKey(2, "k2", "secret-2"))
    return Provider(1, name, kind, "http", "127.0.0.1", 9000, "/v1", None, models or {}, keys, fallback=fallback)


def snapshot(*routes: Route, extra: tuple[Provider, ...] = ()) -> ConfigSnapshot:
    providers = {p.name: p for p in (*(route.provider for route in routes), *extra)}
    return ConfigSnapshot(providers=providers, routes=routes)


def test_without_config_the_tiers_map_claude_names_and_others_pass():
    choice = choose("claude-haiku-4-5", ConfigSnapshot(), DEFAULT, TIERS)
    assert (choice.upstream, choice.model, choice.rule) == (DEFAULT, "gpt-4o-mini", "tier")
    assert choose("llama3", ConfigSnapshot(), DEFAULT, TIERS).rule == "default"


def test_routes_in_priority_order_with_their_model_or_the_providers_tiers():
    local = provider("local", models={"small": "qwen-small"})
    config = snapshot(Route("*haiku*", local, None), Route("claude-*", local, "qwen-big"))
    haiku = choose("claude-haiku-4-5", config, DEFAULT, TIERS)
    assert (haiku.upstream.provider, haiku.model, haiku.rule, haiku.provider) == (
        "local", "qwen-small", "route *haiku*", local)
    assert haiku.upstream.key == ""  # the key pool gives the key when the request is sent
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


def request(**fields) -> MessagesRequest:
    return MessagesRequest.model_validate({"model": "claude-sonnet-4-5", "max_tokens": 10,
                                           "messages": [{"role": "user", "content": "hi"}], **fields})


IMAGE = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}}


@pytest.mark.parametrize(("fields", "tokens", "expected"), [
    ({}, 100, set()),
    ({"model": "claude-haiku-4-5"}, 100, {"background"}),
    ({"thinking": {"type": "enabled", "budget_tokens": 2000}}, 100, {"thinking"}),
    ({"thinking": {"type": "adaptive"}}, 100, {"thinking"}),
    ({"thinking": {"type": "disabled"}}, 100, set()),
    ({}, 70_000, {"long_context"}),
    ({"tools": [{"type": "web_search_20250305", "name": "web_search"}]}, 100, {"web_search"}),
    ({"messages": [{"role": "user", "content": [IMAGE, {"type": "text", "text": "what is it?"}]}]}, 100, {"image"}),
    ({"messages": [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": [IMAGE]}]}]},
     100, {"image"}),
    # an image earlier in the conversation is not this turn's
    ({"messages": [{"role": "user", "content": [IMAGE]}, {"role": "assistant", "content": "a cat"},
                   {"role": "user", "content": "thanks"}]}, 100, set()),
])
def test_request_scenarios(fields, tokens, expected):
    assert request_scenarios(request(**fields), tokens, 60_000) == expected


@pytest.mark.parametrize(("request_class", "expected"), [
    ("compaction", {"background"}), ("auxiliary", {"background"}), ("Compaction", {"background"}),
    ("main", set()), ("subagent", set()), ("side_reply", set()), ("", set()), ("something-new", set()),
])
def test_the_request_class_hint_header_marks_background_work(request_class, expected):
    assert request_scenarios(request(), 100, 60_000, request_class) == expected


def test_a_claude_name_without_a_tier_word_goes_to_the_chosen_tier():
    fable = choose("claude-fable-5-2", ConfigSnapshot(), DEFAULT, TIERS)
    assert (fable.model, fable.rule) == ("gpt-4o", "tier")
    small = ModelTiers("gpt-4o", "", "gpt-4o-mini", "small")
    assert choose("claude-fable-5-2", ConfigSnapshot(), DEFAULT, small).model == "gpt-4o-mini"
    assert choose("llama3", ConfigSnapshot(), DEFAULT, small).model == "llama3"  # not Claude: unchanged


def test_a_routed_providers_tiers_follow_the_same_rule_for_unknown_claude_names():
    local = provider("local", models={"big": "qwen-big", "small": "qwen-small"})
    config = snapshot(Route("claude-*", local, None))
    assert choose("claude-fable-5-2", config, DEFAULT, TIERS).model == "qwen-big"
    assert choose("claude-fable-5-2", config, DEFAULT, ModelTiers("gpt-4o", "", "gpt-4o-mini", "small")).model \
        == "qwen-small"
    # the anthropic kind knows every Claude name itself
    anthropic = snapshot(Route("claude-*", provider("anthropic", kind="anthropic"), None))
    assert choose("claude-fable-5-2", anthropic, DEFAULT, TIERS).model == "claude-fable-5-2"


def test_a_fallback_gets_the_chosen_tier_for_an_unknown_claude_name():
    backup = provider("backup", models={"big": "b-big", "small": "b-small"})
    main = provider("main", models={"big": "m-big"}, fallback=("backup",))
    config = snapshot(Route("claude-*", main, None), extra=(backup,))
    cooling = lambda candidate: candidate.name != "main"  # noqa: E731
    small = ModelTiers("gpt-4o", "", "gpt-4o-mini", "small")
    assert choose("claude-fable-5-2", config, DEFAULT, TIERS, usable=cooling).model == "b-big"
    assert choose("claude-fable-5-2", config, DEFAULT, small, usable=cooling).model == "b-small"


def test_scenario_routes_apply_only_when_the_request_meets_them():
    main, thinker = provider("main"), provider("thinker")
    config = snapshot(Route("*", thinker, "deep-reasoner", "thinking"), Route("claude-*", main, "plain"))
    thinking = choose("claude-sonnet-4-5", config, DEFAULT, TIERS, frozenset({"thinking"}))
    assert (thinking.upstream.provider, thinking.model, thinking.rule) == ("thinker", "deep-reasoner",
                                                                          "route * [thinking]")
    plain = choose("claude-sonnet-4-5", config, DEFAULT, TIERS, frozenset({"image"}))
    assert (plain.upstream.provider, plain.model, plain.rule) == ("main", "plain", "route claude-*")


def test_a_provider_without_a_healthy_key_falls_back_in_list_order():
    backup = provider("backup", models={"big": "backup-big"})
    spare = provider("spare")
    main = provider("main", fallback=("missing", "backup", "spare"))
    config = snapshot(Route("claude-*", main, "main-model"), extra=(backup, spare))
    choice = choose("claude-opus-4-1", config, DEFAULT, TIERS, usable=lambda p: p.name != "main")
    assert (choice.provider, choice.model, choice.rule) == (backup, "backup-big", "route claude-* → fallback backup")
    # nothing usable: the routed provider stays, and the gateway tells the client when to retry
    stuck = choose("claude-opus-4-1", config, DEFAULT, TIERS, usable=lambda p: False)
    assert (stuck.provider, stuck.rule) == (main, "route claude-*")


def fallback_choice(backup: Provider, client_model: str = "claude-haiku-4-5", route_model: str | None = None,
                    primary_models: dict | None = None, extra_routes: tuple[Route, ...] = ()):
    main = provider("main", models=primary_models, fallback=(backup.name,))
    config = snapshot(Route("*", main, route_model), *extra_routes, extra=(backup,))
    return choose(client_model, config, DEFAULT, TIERS, usable=lambda p: p.name != "main")


@pytest.mark.parametrize(("client_model", "expected"), [
    ("claude-haiku-4-5", "b-small"), ("claude-sonnet-4-5", "b-middle"), ("claude-opus-4-1", "b-big")])
def test_a_fallback_gets_its_own_model_for_the_requested_tier(client_model, expected):
    backup = provider("backup", models={"big": "b-big", "middle": "b-middle", "small": "b-small"})
    choice = fallback_choice(backup, client_model, route_model="main-model")
    assert (choice.provider, choice.model) == (backup, expected)


def test_a_fallback_without_a_middle_model_answers_sonnet_with_its_big_one():
    backup = provider("backup", models={"big": "b-big", "small": "b-small"})
    assert fallback_choice(backup, "claude-sonnet-4-5").model == "b-big"


def test_a_fallback_never_gets_the_command_line_tiers_or_the_client_name():
    # the command-line small model (gpt-4o-mini) belongs to the default upstream; the backup declares only big
    backup = provider("backup", models={"big": "b-big"})
    assert fallback_choice(backup, "claude-haiku-4-5").model == "b-big"
    # no Claude tier in the name, a route model foreign to the backup: the backup's own model, not "team-model"
    assert fallback_choice(backup, "team-model", route_model="main-model").model == "b-big"


def test_a_fallback_takes_the_tier_of_the_routed_model():
    backup = provider("backup", models={"big": "b-big", "small": "b-small"})
    choice = fallback_choice(backup, "team-fast", route_model="m-small", primary_models={"small": "m-small"})
    assert choice.model == "b-small"


def test_a_fallbacks_own_route_for_the_request_names_its_model():
    backup = provider("backup", models={"big": "b-big"})
    # later (lower-priority) routes of the backup itself: the first that applies and names a model wins
    own = (Route("team-*", backup, "b-team", scenario="thinking"), Route("team-*", backup, None),
           Route("team-*", backup, "b-team-plain"))
    assert fallback_choice(backup, "team-model", extra_routes=own).model == "b-team-plain"


def test_a_fallback_with_no_model_of_its_own_is_skipped():
    bare, spare = provider("bare"), provider("spare", models={"small": "s-small"})
    main = provider("main", fallback=("bare", "spare"))
    config = snapshot(Route("*", main, "main-model"), extra=(bare, spare))
    choice = choose("claude-opus-4-1", config, DEFAULT, TIERS, usable=lambda p: p.name != "main")
    assert (choice.provider, choice.model, choice.rule) == (spare, "s-small", "route * → fallback spare")
    only_bare = snapshot(Route("*", provider("main", fallback=("bare",)), "main-model"), extra=(bare,))
    stuck = choose("claude-opus-4-1", only_bare, DEFAULT, TIERS, usable=lambda p: p.name != "main")
    assert (stuck.provider.name, stuck.model) == ("main", "main-model")


def test_an_anthropic_fallback_without_models_takes_claude_names_only():
    claude = provider("claude", kind="anthropic")
    assert fallback_choice(claude, "claude-sonnet-4-5").model == "claude-sonnet-4-5"
    assert fallback_choice(claude, "team-model").provider.name == "main"


@pytest.mark.parametrize(("host", "expected"), [("openrouter.ai", True), ("eu.openrouter.ai", True),
                                                ("api.openai.com", False), ("notopenrouter.ai", False)])
def test_openrouter_is_known_by_its_host(host, expected):
    assert Upstream("https", host, 443, "/api/v1", "k", "").is_openrouter is expected
