"""Key pools through the real proxy: a key that hits its quota cools down, a revoked key is disabled until an
admin re-enables it, a provider out of healthy keys falls back, and clients are told when to retry."""

from __future__ import annotations

import json
import sqlite3
import time

import anthropic
import httpx
import pytest

from ccany_addon.config import store
from ccany_addon.flowlog.part_store import with_bodies
from tests.conftest import config_db, secret, start_proxy, stop
from tests.e2e.test_claude_code import CLAUDE, run_claude

LIMITED = secret("sk-limited-60-first0123456789abcdef")  # the fake answers 429, retry after 60 s
SHORT_A = secret("sk-limited-2-shorta0123456789abcdef")
SHORT_B = secret("sk-limited-4-shortb0123456789abcdef")
REVOKED = secret("sk-revoked-0123456789abcdef012345")
GOOD = secret("sk-good-second0123456789abcdef0123")
BACKUP = secret("sk-good-backup0123456789abcdef0123")


@pytest.fixture(scope="module")
def pools(fake_upstream, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("key-pools")
    path = tmp / "config.db"
    db = config_db(path)
    models = {"big": "gpt-4o", "small": "gpt-4o-mini"}
    upstream = fake_upstream.url + "/v1"
    store.add_provider(db, "test", "pool", upstream, models=models, key_strategy="fill-first")
    store.set_provider_key(db, "test", "pool", LIMITED, name="first")
    store.set_provider_key(db, "test", "pool", GOOD, name="second")
    store.add_route(db, "test", "claude-*", "pool", None)
    store.add_provider(db, "test", "short", upstream, key_strategy="fill-first")
    store.set_provider_key(db, "test", "short", SHORT_A, name="a")
    store.set_provider_key(db, "test", "short", SHORT_B, name="b")
    store.add_route(db, "test", "short-*", "short", "gpt-4o")
    store.add_provider(db, "test", "auth", upstream, key_strategy="fill-first")
    store.set_provider_key(db, "test", "auth", REVOKED, name="revoked")
    store.set_provider_key(db, "test", "auth", GOOD, name="good")
    store.add_route(db, "test", "auth-*", "auth", "gpt-4o")
    store.add_provider(db, "test", "backup", upstream, models={"big": "gpt-4o-mini"})
    store.set_provider_key(db, "test", "backup", BACKUP)
    store.add_provider(db, "test", "primary", upstream, fallback=["backup"])
    store.set_provider_key(db, "test", "primary", LIMITED, name="only")
    store.add_route(db, "test", "primary-*", "primary", "gpt-4o")
    db.close()
    running = start_proxy(fake_upstream.url, tmp, f"ccany_config_db={path}")
    running.config_path = path
    yield running
    stop(running.process)


def keys_used(fake_upstream) -> list[str]:
    return [r["headers"].get("authorization", "").removeprefix("Bearer ") for r in fake_upstream.requests()]


def ask(proxy, model: str) -> httpx.Response:
    body = {"model": model, "max_tokens": 20, "messages": [{"role": "user", "content": "hi"}]}
    return httpx.post(f"{proxy.url}/v1/messages", json=body, timeout=20)


def key_row(proxy, key_id: int) -> dict:
    with sqlite3.connect(proxy.config_path) as conn:
        conn.row_factory = sqlite3.Row
        return dict(conn.execute("SELECT * FROM provider_keys WHERE id = ?", [key_id]).fetchone())


def flows(proxy, where: str, count: int, timeout: float = 10.0) -> list[dict]:
    """The flow log's rows matching `where`, once the writer has written `count` of them."""
    deadline = time.monotonic() + timeout
    while True:
        with sqlite3.connect(proxy.db) as conn:
            conn.row_factory = sqlite3.Row
            rows = [with_bodies(conn, dict(row))
                    for row in conn.execute(f"SELECT * FROM flows WHERE {where} ORDER BY started_at")]
        if len(rows) >= count or time.monotonic() > deadline:
            return rows
        time.sleep(0.05)


def test_a_claude_code_turn_completes_on_the_healthy_key(pools, fake_upstream, tmp_path):
    assert CLAUDE.exists()
    fake_upstream.clear()
    target = tmp_path / "pooled.txt"
    result = run_claude(pools, tmp_path, f"Create the file {target} containing exactly: rotated", "--allowedTools",
                        "Write")
    assert result.returncode == 0, result.stderr
    assert target.read_text() == "rotated"
    used = keys_used(fake_upstream)
    assert used[0] == LIMITED and GOOD in used
    requests = fake_upstream.requests()
    # fill-first prefers the first key whenever it is healthy: after its 429 it is not tried again
    last_limited = max(r["time"] for r, key in zip(requests, used, strict=True) if key == LIMITED)
    first_good = min(r["time"] for r, key in zip(requests, used, strict=True) if key == GOOD)
    assert last_limited < first_good
    # the log keeps both attempts, each with its key
    rows = flows(pools, "provider = 'pool'", len(requests))  # one flow per upstream request
    assert len(rows) == len(requests)
    assert rows[0]["status_code"] == 429 and rows[0]["provider_key"].endswith(":first")
    assert rows[0]["error_type"] == "rate_limit_error"
    assert {row["provider_key"].split(":")[1] for row in rows[1:]} == {"second"}
    assert all(row["status_code"] == 200 for row in rows[1:])
    # key health is in the config DB, where Datasette shows it
    health = key_row(pools, 1)
    assert health["last_status"] == 429 and health["cooling_until"] and health["enabled"] == 1


def test_clients_learn_when_a_healthy_key_is_ready(pools, fake_upstream):
    fake_upstream.clear()
    first = ask(pools, "short-1")
    assert first.status_code == 429
    assert (first.headers["retry-after"], first.headers["x-should-retry"]) == ("0", "true")  # key b is healthy
    second = ask(pools, "short-2")
    assert second.status_code == 429 and int(second.headers["retry-after"]) in (1, 2)  # a is back first
    third = ask(pools, "short-3")  # both cooling: the gateway answers without asking the upstream
    assert third.status_code == 429 and "cooling down" in third.json()["error"]["message"]
    assert int(third.headers["retry-after"]) in (1, 2)
    assert keys_used(fake_upstream) == [SHORT_A, SHORT_B]
    time.sleep(int(third.headers["retry-after"]) + 0.2)
    ask(pools, "short-4")
    assert keys_used(fake_upstream) == [SHORT_A, SHORT_B, SHORT_A]  # a's cooldown ended: back in use


def test_a_revoked_key_is_disabled_until_an_admin_reenables_it(pools, fake_upstream):
    fake_upstream.clear()
    client = anthropic.Anthropic(base_url=pools.url, api_key="x", max_retries=2, timeout=20)
    # the first attempt is refused; the SDK's own retry (x-should-retry) lands on the good key
    message = client.messages.create(model="auth-1", max_tokens=20, messages=[{"role": "user", "content": "hi"}])
    assert message.content[0].text
    assert keys_used(fake_upstream) == [REVOKED, GOOD]
    refused = flows(pools, "provider = 'auth'", 2)[0]
    assert refused["status_code"] == 500 and "disabled until an admin re-enables it" in refused["error_message"]
    assert REVOKED not in refused["error_message"]
    assert json.loads(refused["client_response_headers"])["x-should-retry"] == "true"
    revoked_id = _key_id(pools, "auth", "revoked")
    row = key_row(pools, revoked_id)
    assert row["enabled"] == 0 and "401" in row["disabled_reason"] and REVOKED not in row["disabled_reason"]
    time.sleep(1.5)  # the proxy has re-read the config DB: the key stays out
    ask(pools, "auth-2")
    assert keys_used(fake_upstream)[-1] == GOOD
    db = config_db(pools.config_path)
    store.set_key_enabled(db, "admin", revoked_id, True)
    db.close()
    assert key_row(pools, revoked_id)["disabled_reason"] is None
    deadline = time.monotonic() + 5
    while keys_used(fake_upstream)[-1] != REVOKED and time.monotonic() < deadline:
        ask(pools, "auth-3")
        time.sleep(0.3)
    assert keys_used(fake_upstream)[-1] == REVOKED  # back in the pool (and refused again)


def _key_id(proxy, provider: str, name: str) -> int:
    with sqlite3.connect(proxy.config_path) as conn:
        return conn.execute("SELECT k.id FROM provider_keys k JOIN providers p ON p.id = k.provider_id "
                            "WHERE p.name = ? AND k.name = ?", [provider, name]).fetchone()[0]


def test_a_provider_out_of_keys_falls_back(pools, fake_upstream):
    fake_upstream.clear()
    first = ask(pools, "primary-opus-1")
    assert first.status_code == 429 and first.headers["retry-after"] == "0"  # the fallback is ready
    second = ask(pools, "primary-opus-2")
    assert second.status_code == 200
    assert keys_used(fake_upstream) == [LIMITED, BACKUP]
    assert fake_upstream.requests()[-1]["body"]["model"] == "gpt-4o-mini"  # the backup's own mapping
    row = pools.flow(second.headers["request-id"])
    assert (row["provider"], row["route"]) == ("backup", "route primary-* → fallback backup")
