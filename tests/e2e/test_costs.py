"""Flow costs through the real proxy: streamed and non-streamed turns priced from the maintained table, an
override winning (0 for a local model), an override changed while the proxy runs, a response-cache hit costing
nothing, and the spend queries in Datasette adding them up."""

from __future__ import annotations

import time

import anthropic
import httpx
import pytest

from ccany_addon.config import store
from ccany_addon.costs.prices import PRICE_TABLE
from tests.conftest import config_db, secret, start_proxy, stop
from tests.datasette.conftest import rows_of
from tests.e2e.test_key_pools import flows

KEY = secret("sk-priced-0123456789abcdef0123456789")
# What the fake upstream reports for every answer: 1200 prompt tokens of which 1000 cached, 42 completion tokens.
GPT_4O = (200 * 2.5 + 1000 * 1.25 + 42 * 10) / 1_000_000


@pytest.fixture(scope="module")
def priced(fake_upstream, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("costs")
    path = tmp / "config.db"
    db = config_db(path)
    upstream = fake_upstream.url + "/v1"
    store.add_provider(db, "test", "openai", upstream, models={"big": "gpt-4o", "small": "gpt-4o-mini"})
    store.set_provider_key(db, "test", "openai", KEY)
    store.add_route(db, "test", "claude-*", "openai", None)
    store.add_provider(db, "test", "ollama", upstream)
    store.set_provider_key(db, "test", "ollama", KEY)
    store.add_route(db, "test", "local-*", "ollama", "llama3.3")
    store.add_route(db, "test", "mystery-*", "ollama", "my-own-finetune-7b")
    store.set_price(db, "test", "llama*", input_per_mtok=0, output_per_mtok=0)
    db.close()
    running = start_proxy(fake_upstream.url, tmp, f"ccany_config_db={path}", "ccany_cache_ttl=60")
    running.config_path = path
    yield running
    stop(running.process)


def test_turns_are_priced_from_the_table(priced):
    client = anthropic.Anthropic(base_url=priced.url, api_key="unused", max_retries=0)
    with client.messages.stream(model="claude-opus-4-1", max_tokens=50,
                                messages=[{"role": "user", "content": "a streamed question"}]) as stream:
        stream.get_final_message()
    client.messages.create(model="claude-opus-4-1", max_tokens=50,
                           messages=[{"role": "user", "content": "a plain question"}])
    rows = flows(priced, "provider = 'openai'", 2)
    assert sorted(row["is_stream"] for row in rows) == [0, 1]
    for row in rows:
        assert row["upstream_model"] == "gpt-4o"
        assert row["cost_usd"] == pytest.approx(GPT_4O)
        # the fake listens on 127.0.0.1, which no provider of the table is at: priced by the model's name
        assert row["price_source"] == f"{PRICE_TABLE}: openai gpt-4o, by model name"


def test_an_override_wins_and_a_change_applies_without_a_restart(priced):
    def ask(model: str, text: str) -> str:
        response = httpx.post(f"{priced.url}/v1/messages", timeout=20, json={
            "model": model, "max_tokens": 20, "messages": [{"role": "user", "content": text}]})
        assert response.status_code == 200, response.text
        return response.headers["request-id"]

    free = ask("local-model", "on my own GPU")
    unknown = ask("mystery-model", "a model nobody prices")
    row = priced.flow(free)
    assert (row["upstream_model"], row["cost_usd"], row["price_source"]) == ("llama3.3", 0.0, "override llama*")
    row = priced.flow(unknown)
    assert (row["cost_usd"], row["price_source"], row["input_tokens"]) == (None, None, 200)  # unpriced, not free
    db = config_db(priced.config_path)
    store.set_price(db, "test", "llama*", "ollama", input_per_mtok=1.0, output_per_mtok=2.0)
    db.close()
    deadline = time.monotonic() + 10
    while True:  # the proxy reads a changed config within a second
        row = priced.flow(ask("local-model", f"after the change {time.monotonic()}"))
        if row["cost_usd"] or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    # the provider's own price wins over the any-provider one; a cache price left out costs as much as input
    assert row["price_source"] == "override llama* (ollama)"
    assert row["cost_usd"] == pytest.approx((200 * 1.0 + 1000 * 1.0 + 42 * 2.0) / 1_000_000)


def test_a_response_cache_hit_costs_nothing(priced):
    body = {"model": "claude-opus-4-1", "max_tokens": 20, "messages": [{"role": "user", "content": "same again"}]}
    first = httpx.post(f"{priced.url}/v1/messages", json=body, timeout=20)
    second = httpx.post(f"{priced.url}/v1/messages", json=body, timeout=20)
    assert first.status_code == second.status_code == 200
    paid, cached = priced.flow(first.headers["request-id"]), priced.flow(second.headers["request-id"])
    assert paid["cache_hit"] == 0 and paid["cost_usd"] == pytest.approx(GPT_4O)
    assert cached["cache_hit"] == 1 and (cached["cost_usd"], cached["price_source"]) == (0.0, "response cache")


def test_datasette_adds_up_the_spend(priced):
    rows = flows(priced, "1", 1)
    spent = sum(row["cost_usd"] or 0 for row in rows)
    by_model = rows_of(priced.db, "/flows/spend_by_model.json?_shape=array")
    gpt = next(row for row in by_model if row["model"] == "gpt-4o · openai")
    assert gpt["cost_usd"] == pytest.approx(sum(r["cost_usd"] for r in rows if r["upstream_model"] == "gpt-4o"))
    assert f"{PRICE_TABLE}: openai gpt-4o, by model name" in gpt["price_sources"]
    mystery = next(row for row in by_model if row["model"].startswith("my-own-finetune-7b"))
    assert (mystery["cost_usd"], mystery["unpriced"]) == (0, 1)
    hourly = rows_of(priced.db, "/flows/spend_per_hour.json?_shape=array")
    assert sum(row["cost_usd"] for row in hourly) == pytest.approx(spent, abs=1e-5)
    sessions = rows_of(priced.db, "/flows/spend_by_client_key.json?_shape=array")
    assert [(row["client_key_id"], row["requests"]) for row in sessions] == [("(none)", len(rows))]
