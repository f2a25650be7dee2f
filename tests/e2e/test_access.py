"""Client keys, routes and settings from the config DB, through a real mitmdump, changed while it runs."""

from __future__ import annotations

import time

import httpx
import pytest

from ccany_addon.config import store
from tests.conftest import UPSTREAM_KEY, config_db, secret, start_proxy, stop
from tests.e2e.flow_db import stored_bytes

PROVIDER_KEY = secret("sk-provider-KEY-for-access-tests-0042")
BODY = {"max_tokens": 500, "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture(scope="module")
def gateway(fake_upstream, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("access")
    path = tmp / "data" / "config.db"
    db = config_db(path)
    store.add_provider(db, "test", "routed", f"{fake_upstream.url}/v1")
    store.set_provider_key(db, "test", "routed", PROVIDER_KEY)
    store.add_route(db, "test", "*haiku*", "routed", "routed-model")
    keys = {name: _registered(store.create_client_key(db, "test", name, expires, models))
            for name, expires, models in (("valid", None, None), ("disabled", None, None),
                                          ("expired", "2020-01-31", None), ("haiku-only", None, ["*haiku*"]))}
    db.execute("UPDATE client_keys SET enabled = 0 WHERE name = 'disabled'")
    db.conn.commit()
    store.set_setting(db, "test", "ccany_max_tokens_limit", "50")
    proxy = start_proxy(fake_upstream.url, tmp, f"ccany_config_db={path}", "ccany_request_timeout=30")
    yield proxy, db, keys
    stop(proxy.process)
    db.close()


def _registered(created: tuple[int, str]) -> tuple[int, str]:
    secret(created[1])
    return created


def post(proxy, key: str | None, model: str) -> httpx.Response:
    headers = {"authorization": f"Bearer {key}"} if key else {}
    return httpx.post(f"{proxy.url}/v1/messages", json={**BODY, "model": model}, headers=headers, timeout=20)


@pytest.mark.parametrize(
    ("who", "status", "error_type", "words"),
    [(None, 401, "authentication_error", "needs a client key"),
     ("wrong", 401, "authentication_error", "Invalid client key"),
     ("disabled", 401, "authentication_error", "is disabled"),
     ("expired", 401, "authentication_error", "expired on 2020-01-31"),
     ("haiku-only", 400, "invalid_request_error", "may not use model 'claude-sonnet-4-5'")],
)
def test_requests_without_a_usable_key_are_refused(gateway, fake_upstream, who, status, error_type, words):
    proxy, _, keys = gateway
    fake_upstream.clear()
    key = "cck_not-a-real-key" if who == "wrong" else keys[who][1] if who else None
    response = post(proxy, key, "claude-sonnet-4-5")
    assert response.status_code == status and response.json()["error"]["type"] == error_type
    assert words in response.json()["error"]["message"]
    assert response.headers["x-should-retry"] == "false"  # Claude Code would otherwise retry for minutes
    assert fake_upstream.requests() == []
    row = proxy.flow(response.headers["request-id"])
    assert row["status_code"] == status and row["error_type"] == error_type


def test_a_valid_key_is_routed_by_the_config_and_logged_by_id(gateway, fake_upstream):
    proxy, _, keys = gateway
    fake_upstream.clear()
    key_id, key = keys["haiku-only"]
    response = post(proxy, key, "claude-haiku-4-5")
    assert response.status_code == 200, response.text
    upstream = fake_upstream.requests()[-1]
    assert upstream["body"]["model"] == "routed-model"
    assert upstream["headers"]["authorization"] == f"Bearer {PROVIDER_KEY}"
    assert upstream["body"]["max_tokens"] == 50  # the DB setting, as the command line left it alone
    row = proxy.flow(response.headers["request-id"])
    assert row["client_key_id"] == str(key_id) and row["provider"] == "routed" and row["route"] == "route *haiku*"
    counted = httpx.post(f"{proxy.url}/v1/messages/count_tokens", headers={"x-api-key": keys["valid"][1]},
                         json={"model": "claude-opus-4-1", "messages": BODY["messages"]}, timeout=20)
    assert counted.status_code == 200
    # an unrouted model goes to the reverse-mode upstream with the environment's key
    fake_upstream.clear()
    assert post(proxy, keys["valid"][1], "claude-opus-4-1").status_code == 200
    assert fake_upstream.requests()[-1]["headers"]["authorization"] == f"Bearer {UPSTREAM_KEY}"
    # `provider,model` picks both, whatever the routes say
    fake_upstream.clear()
    named = post(proxy, keys["valid"][1], "routed,named-model")
    assert named.status_code == 200 and fake_upstream.requests()[-1]["body"]["model"] == "named-model"
    assert proxy.flow(named.headers["request-id"])["route"] == "provider,model"


def test_config_changes_apply_without_a_restart(gateway, fake_upstream):
    proxy, db, keys = gateway
    _, new_key = _registered(store.create_client_key(db, "test", "added-while-running"))
    store.add_route(db, "test", "*opus*", "routed", "hot-model", priority=5)
    store.set_setting(db, "test", "ccany_max_tokens_limit", "77")
    store.set_setting(db, "test", "ccany_temperature_override", "0.3")
    deadline = time.monotonic() + 5
    while True:
        fake_upstream.clear()
        response = post(proxy, new_key, "claude-opus-4-1")
        if response.status_code == 200 and fake_upstream.requests()[-1]["body"]["model"] == "hot-model":
            break
        assert time.monotonic() < deadline, f"change not picked up: {response.status_code} {response.text}"
        time.sleep(0.2)
    assert fake_upstream.requests()[-1]["body"]["max_tokens"] == 77
    assert fake_upstream.requests()[-1]["body"]["temperature"] == 0.3
    db.execute("UPDATE client_keys SET enabled = 0 WHERE name = 'added-while-running'")
    db.conn.commit()
    time.sleep(2.5)
    assert post(proxy, new_key, "claude-opus-4-1").status_code == 401


def test_command_line_options_win_over_the_db(fake_upstream, tmp_path):
    path = tmp_path / "config.db"
    db = config_db(path)
    store.set_setting(db, "test", "ccany_max_tokens_limit", "50")
    proxy = start_proxy(fake_upstream.url, tmp_path, f"ccany_config_db={path}", "ccany_max_tokens_limit=100")
    try:
        fake_upstream.clear()
        assert post(proxy, None, "gpt-4o").status_code == 200
        assert fake_upstream.requests()[-1]["body"]["max_tokens"] == 100
        assert "no client keys in the config DB: serving clients on this machine (loopback) only" in proxy.log()
    finally:
        stop(proxy.process)
        db.close()


def test_keys_never_reach_the_db_files_or_the_log(gateway):
    proxy, _, keys = gateway
    time.sleep(1.5)
    secrets = [PROVIDER_KEY.encode(), UPSTREAM_KEY.encode()] + [key.encode() for _, key in keys.values()]
    files = {path.name: path.read_bytes() for path in proxy.db.parent.glob("data/config.db*")}
    files |= stored_bytes(proxy.db)  # the flow DB's files, and its bodies' parts decompressed
    assert "flows.db" in files and "config.db" in files
    for where, data in files.items():
        assert not [secret for secret in secrets if secret in data], where
    log = proxy.log().encode()
    assert not [secret for secret in secrets if secret in log]
