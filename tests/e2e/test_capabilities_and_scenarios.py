"""Capabilities and scenario routes from the config DB, through the real proxy."""

from __future__ import annotations

import json

import httpx
import pytest

from ccany_addon.config import store
from tests.conftest import config_db, secret, start_proxy, stop

KEY = secret("sk-capabilities-0123456789abcdef0123")
IMAGE = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}}


@pytest.fixture(scope="module")
def proxy(fake_upstream, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("capabilities")
    path = tmp / "config.db"
    db = config_db(path)
    upstream = fake_upstream.url + "/v1"
    store.add_provider(db, "test", "local", upstream, models={"big": "tiny-model", "small": "tiny-model"})
    store.set_provider_key(db, "test", "local", KEY)
    store.add_provider(db, "test", "thinker", upstream)
    store.set_provider_key(db, "test", "thinker", KEY, name="thinker")
    store.add_provider(db, "test", "eyes", upstream)
    store.set_provider_key(db, "test", "eyes", KEY, name="eyes")
    # scenario routes first (lower priority number), then the catch-all
    store.add_route(db, "test", "*", "thinker", "scenario:reasoning", priority=10, scenario="thinking")
    store.add_route(db, "test", "*", "eyes", "gpt-4o", priority=20, scenario="image")
    store.add_route(db, "test", "*", "eyes", "gpt-4o-mini", priority=30, scenario="background")
    store.add_route(db, "test", "claude-*", "local", None, priority=100)
    store.set_capabilities(db, "test", "tiny-*", max_output_tokens=1000, tools=False, vision=False, late_system=False)
    db.close()
    running = start_proxy(fake_upstream.url, tmp, f"ccany_config_db={path}")
    yield running
    stop(running.process)


def post(proxy, **fields) -> httpx.Response:
    body = {"model": "claude-sonnet-4-5", "max_tokens": 32000, "messages": [{"role": "user", "content": "hi"}],
            **fields}
    return httpx.post(f"{proxy.url}/v1/messages", json=body, timeout=20)


def test_capabilities_from_the_config_db_shape_the_upstream_request(proxy, fake_upstream):
    fake_upstream.clear()
    answer = post(proxy, tools=[{"name": "Read", "input_schema": {"type": "object"}}], messages=[
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "ok"},
        {"role": "system", "content": "late instructions"},
        {"role": "user", "content": [{"type": "text", "text": "look"}]},
    ])
    assert answer.status_code == 200
    sent = fake_upstream.requests()[-1]["body"]
    assert sent["model"] == "tiny-model" and sent["max_tokens"] == 1000
    assert "tools" not in sent
    assert [m["role"] for m in sent["messages"]] == ["system", "user", "assistant", "user"]  # the late one folded
    assert "late instructions" in sent["messages"][0]["content"]
    notes = json.loads(proxy.flow(answer.headers["request-id"])["notes"])
    assert any("does not take tools" in note for note in notes)


def test_scenario_routes_pick_the_provider_for_thinking_and_images(proxy, fake_upstream):
    fake_upstream.clear()
    thinking = post(proxy, thinking={"type": "enabled", "budget_tokens": 2000})
    assert thinking.status_code == 200 and thinking.json()["content"][0]["type"] == "thinking"
    assert proxy.flow(thinking.headers["request-id"])["route"] == "route * [thinking]"
    image = post(proxy, messages=[{"role": "user", "content": [IMAGE, {"type": "text", "text": "what is it?"}]}])
    row = proxy.flow(image.headers["request-id"])
    assert (row["provider"], row["upstream_model"], row["route"]) == ("eyes", "gpt-4o", "route * [image]")
    assert fake_upstream.requests()[-1]["body"]["messages"][0]["content"][0]["type"] == "image_url"
    plain = post(proxy)
    assert proxy.flow(plain.headers["request-id"])["route"] == "route claude-*"


def test_claude_codes_request_class_puts_compaction_on_the_background_route(proxy, fake_upstream):
    """With CLAUDE_CODE_GATEWAY_HINT_HEADERS=1 Claude Code names what a request is for; a compaction of a Sonnet
    conversation is background work although its model name says otherwise."""
    compaction = httpx.post(f"{proxy.url}/v1/messages", timeout=20, headers={
        "x-claude-code-request-class": "compaction", "x-claude-code-session-id": "s-1"},
        json={"model": "claude-sonnet-5-5", "max_tokens": 1000, "messages": [{"role": "user", "content": "sum up"}]})
    row = proxy.flow(compaction.headers["request-id"])
    assert (row["provider"], row["upstream_model"], row["route"], row["request_class"]) == (
        "eyes", "gpt-4o-mini", "route * [background]", "compaction")
    main = httpx.post(f"{proxy.url}/v1/messages", timeout=20, headers={"x-claude-code-request-class": "main"},
                      json={"model": "claude-sonnet-5-5", "max_tokens": 1000, "messages": [{"role": "user",
                                                                                              "content": "go"}]})
    assert proxy.flow(main.headers["request-id"])["route"] == "route claude-*"


def test_the_model_list_names_where_each_model_and_scenario_goes(proxy):
    models = {m["id"]: m for m in httpx.get(f"{proxy.url}/v1/models?limit=1000", timeout=20).json()["data"]}
    fable = models["claude-fable-5-2"]
    assert fable["display_name"] == "Fable 5.2 → tiny-model @ local"  # no tier word: the provider's big model
    assert "background requests → gpt-4o-mini @ eyes" in fable["description"]
    assert "thinking requests → scenario:reasoning @ thinker" in fable["description"]
