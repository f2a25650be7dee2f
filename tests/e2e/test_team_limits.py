"""Two real gateway processes sharing a real redis-server: a per-key request limit holds across both, a budget
spent on one is spent on the other, the Claude Code CLI stops on a budget refusal instead of retrying, and killing
Redis mid-run loses no flow while both keep answering."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import redis

from ccany_addon.config import store
from ccany_addon.config.secrets import client_key_hash
from ccany_addon.limits.key_limits import key_scope
from tests.conftest import Proxy, RedisServer, config_db, secret, start_proxy, start_redis, stop
from tests.datasette.conftest import rows_of
from tests.e2e.flow_db import flow_rows
from tests.e2e.test_claude_code import run_claude

KEY = secret("sk-team-upstream-0123456789abcdef012")
COST = (200 * 2.5 + 1000 * 1.25 + 42 * 10) / 1_000_000  # every fake answer, priced as gpt-4o ($0.00217)


@dataclass
class Team:
    redis: RedisServer
    proxies: tuple[Proxy, Proxy]
    keys: dict[str, str]
    key_ids: dict[str, int]
    tmp: Path


def team_config(path: Path, upstream_url: str):
    """A config DB shared by gateway processes: claude-* to the fake upstream as gpt-4o, slow-* trickling (9
    chunks 150 ms apart); the caller adds the client keys."""
    db = config_db(path)
    store.add_provider(db, "test", "openai", upstream_url + "/v1", models={"big": "gpt-4o", "small": "gpt-4o"})
    store.set_provider_key(db, "test", "openai", KEY)
    store.add_route(db, "test", "claude-*", "openai", None)
    store.add_route(db, "test", "slow-*", "openai", "scenario:trickle_150")
    return db


@pytest.fixture(scope="module")
def team(fake_upstream, tmp_path_factory) -> Iterator[Team]:
    tmp = tmp_path_factory.mktemp("team")
    redis = start_redis(tmp)
    path = tmp / "config.db"
    db = team_config(path, fake_upstream.url)
    store.add_user(db, "test", "ada", "correct horse battery")
    keys, key_ids = {}, {}
    for name, limits in (("paced", {"rpm_limit": 3}), ("budgeted", {"daily_budget_usd": 0.01}),
                         ("cli", {"daily_budget_usd": 0.001}), ("outage", {"rpm_limit": 1000}),
                         ("single", {"max_streams": 1})):
        key_ids[name], keys[name] = store.create_client_key(db, "test", name)
        secret(keys[name])
        store.set_client_key_limits(db, "test", name, "ada" if name == "budgeted" else None, **limits)
    db.close()
    proxies = tuple(start_proxy(fake_upstream.url, tmp_path_factory.mktemp(f"gateway-{n}"), f"ccany_config_db={path}",
                                f"ccany_redis_url={redis.url}") for n in (1, 2))
    team = Team(redis, proxies, keys, key_ids, tmp)  # type: ignore[arg-type]
    yield team
    for proxy in proxies:
        stop(proxy.process)
    stop(team.redis.process)  # the server a test restarted, when one did


def ask(proxy: Proxy, key: str, text: str = "hi") -> httpx.Response:
    """As the key's holder; with no key, as a client on the gateway's own machine (a config without client keys)."""
    return httpx.post(f"{proxy.url}/v1/messages", headers={"x-api-key": key} if key else {}, timeout=20, json={
        "model": "claude-opus-4-1", "max_tokens": 20, "messages": [{"role": "user", "content": text}]})


def metric(proxy: Proxy, name: str) -> float:
    for line in httpx.get(f"{proxy.url}/metrics", timeout=5).text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


def wait_for_a_fresh_minute(margin: float = 15.0) -> None:
    """Requests-a-minute count per UTC minute: start a check early enough in one that it ends in it."""
    if time.time() % 60 > 60 - margin:
        time.sleep(60 - time.time() % 60 + 0.1)


def test_a_request_limit_holds_across_both_gateways(team):
    wait_for_a_fresh_minute()
    answers = [ask(team.proxies[n % 2], team.keys["paced"]) for n in range(6)]
    assert [a.status_code for a in answers] == [200, 200, 200, 429, 429, 429]  # 3 in all, not 3 each
    assert [a.headers["anthropic-ratelimit-requests-remaining"] for a in answers[:3]] == ["2", "1", "0"]
    refused = answers[3]
    assert refused.json()["error"]["type"] == "rate_limit_error"
    assert "'paced' has sent its 3 requests a minute" in refused.json()["error"]["message"]
    assert refused.headers["x-should-retry"] == "true" and 1 <= int(refused.headers["retry-after"]) <= 60
    assert refused.headers["anthropic-ratelimit-requests-limit"] == "3"
    # each gateway logged its own refusals, as flows
    rows = [team.proxies[n % 2].flow(answers[n].headers["request-id"]) for n in (3, 4)]
    assert [row["error_type"] for row in rows] == ["rate_limit_error", "rate_limit_error"]
    assert metric(team.proxies[0], 'ccany_limited_total{reason="rate"}') >= 1
    # a limit of 3 is exact: no request of it was admitted ahead of Redis's answer (`admit_ahead.py`)
    assert [metric(proxy, "ccany_admitted_ahead_total") for proxy in team.proxies] == [0, 0]


def test_a_budget_spent_through_one_gateway_is_spent_on_the_other(team):
    statuses, left = [], []
    for n in range(8):
        answer = ask(team.proxies[n % 2], team.keys["budgeted"], f"question {n}")
        statuses.append(answer.status_code)
        left.append(answer.headers.get("x-ccany-budget-remaining"))
        if answer.status_code == 200:
            team.proxies[n % 2].flow(answer.headers["request-id"])  # priced and counted once its row is written
    # $0.00217 a turn: the fifth takes the day's spend past $0.01, the sixth is refused, on either gateway
    assert statuses == [200] * 5 + [402] * 3
    # what was left before each answered turn, whichever gateway answered it
    assert [float(value.removeprefix("key:daily=")) for value in left[:5]] == pytest.approx(
        [0.01 - n * COST for n in range(5)])
    refused = ask(team.proxies[0], team.keys["budgeted"])
    body = refused.json()["error"]
    assert (refused.status_code, body["type"], refused.headers["x-should-retry"]) == (402, "billing_error", "false")
    assert f"has used its daily budget (${5 * COST:.4g} of $0.01); it resets at " in body["message"]
    assert team.proxies[0].flow(refused.headers["request-id"])["error_type"] == "billing_error"
    spent = sum(row[0] for proxy in team.proxies for row in sqlite3.connect(proxy.db).execute(
        "SELECT cost_usd FROM flows WHERE client_key_id = ?", [str(team.key_ids["budgeted"])]).fetchall() if row[0])
    assert spent == pytest.approx(5 * COST)  # what the two flow logs hold is what the budget counted
    # the key's owner is on its flows, and the spend by user adds them up
    by_user = {row["client_user"]: row for row in rows_of(team.proxies[0].db, "/flows/spend_by_user.json?_shape=array")}
    assert by_user["ada"]["cost_usd"] == pytest.approx(3 * COST)  # gateway 1 served turns 1, 3 and 5


def test_one_stream_at_a_time_across_both_gateways(team):
    """A key allowed one stream at a time: while it streams through one gateway, the other refuses it a second;
    once the first has ended, the place is free again."""
    body = {"model": "slow-model", "max_tokens": 20, "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    headers = {"x-api-key": team.keys["single"]}
    with httpx.Client(timeout=20) as first, first.stream("POST", f"{team.proxies[0].url}/v1/messages", json=body,
                                                        headers=headers) as streaming:
        assert streaming.status_code == 200
        chunks = streaming.iter_raw()  # kept: a dropped iterator closes the stream, and the client hangs up
        assert b"message_start" in next(chunks)  # the stream is open
        second = httpx.post(f"{team.proxies[1].url}/v1/messages", json=body, headers=headers, timeout=20)
        rest = b"".join(chunks)
        assert second.status_code == 429 and second.headers["x-should-retry"] == "true"
        assert "'single' already has 1 streams open" in second.json()["error"]["message"]
        assert b"message_stop" in rest
    time.sleep(0.3)  # the place is given back just after the answer
    again = httpx.post(f"{team.proxies[1].url}/v1/messages", json=body, headers=headers, timeout=20)
    assert again.status_code == 200 and "message_stop" in again.text


def test_the_stream_places_of_a_gateway_that_died_are_free_again_within_15_s(fake_upstream, tmp_path):
    """A gateway killed mid-stream cannot give its stream's place back: the place expires, because only a
    running gateway renews the places of its open streams."""
    redis_server = start_redis(tmp_path)
    path = tmp_path / "config.db"
    db = config_db(path)
    store.add_provider(db, "test", "openai", fake_upstream.url + "/v1", models={"big": "gpt-4o"})
    store.set_provider_key(db, "test", "openai", KEY)
    store.add_route(db, "test", "slow-*", "openai", "scenario:trickle_150")
    _, key = store.create_client_key(db, "test", "single")
    store.set_client_key_limits(db, "test", "single", max_streams=1)
    db.close()
    for name in ("doomed", "survivor"):
        (tmp_path / name).mkdir()
    doomed, survivor = (start_proxy(fake_upstream.url, tmp_path / name, f"ccany_config_db={path}",
                                    f"ccany_redis_url={redis_server.url}") for name in ("doomed", "survivor"))
    body = {"model": "slow-model", "max_tokens": 20, "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    try:
        with httpx.Client(timeout=20) as client, client.stream("POST", f"{doomed.url}/v1/messages", json=body,
                                                               headers={"x-api-key": key}) as streaming:
            assert b"message_start" in next(streaming.iter_raw())
            doomed.process.kill()  # no goodbye: its place stays in Redis
            killed = time.monotonic()
        refused = httpx.post(f"{survivor.url}/v1/messages", json=body, headers={"x-api-key": key}, timeout=20)
        assert refused.status_code == 429 and "already has 1 streams open" in refused.text
        while (answer := httpx.post(f"{survivor.url}/v1/messages", json=body, headers={"x-api-key": key},
                                    timeout=20)).status_code == 429 and time.monotonic() - killed < 25:
            time.sleep(1)
        assert answer.status_code == 200 and "message_stop" in answer.text
        assert 5 < time.monotonic() - killed < 18  # its last renewal, at most 5 s before, lasted 15 s
    finally:
        stop(doomed.process)
        stop(survivor.process)
        stop(redis_server.process)


def test_claude_code_stops_on_a_budget_refusal(team, tmp_path):
    proxy = team.proxies[1]
    assert ask(proxy, team.keys["cli"]).status_code == 200  # $0.00217 of a $0.001 budget: over it
    started = time.monotonic()
    result = run_claude(proxy, tmp_path, "Say hello", api_key=team.keys["cli"])
    took = time.monotonic() - started
    assert result.returncode != 0
    shown = result.stdout + result.stderr
    assert "daily budget" in shown and "resets at" in shown, shown
    assert took < 60  # it gave up at once instead of retrying with backoff for minutes
    time.sleep(0.5)  # the writer's next batch
    with sqlite3.connect(proxy.db) as conn:
        refusals = conn.execute("SELECT started_at, client_model, is_stream FROM flows WHERE client_key_id = ? AND "
                                "error_type = 'billing_error'", [str(team.key_ids["cli"])]).fetchall()
    assert 1 <= len(refusals) <= 2, refusals  # the turn (and at most a title request), never retried


def test_killing_redis_loses_no_flow_and_both_keep_answering(team):
    ids = [ask(team.proxies[n % 2], team.keys["outage"], f"before {n}").headers["request-id"] for n in range(2)]
    stop(team.redis.process)
    during = [ask(team.proxies[n % 2], team.keys["outage"], f"during {n}") for n in range(4)]
    assert [answer.status_code for answer in during] == [200] * 4
    assert [metric(proxy, "ccany_shared_state_up") for proxy in team.proxies] == [0.0, 0.0]
    assert all(metric(proxy, "ccany_shared_state_outages_total") == 1 for proxy in team.proxies)
    ids += [answer.headers["request-id"] for answer in during]
    team.redis = start_redis(team.tmp, team.redis.port)  # back, empty: it keeps nothing on disk
    time.sleep(3.2)  # the gateways try the server again 3 s after it stopped answering
    after = [ask(team.proxies[n % 2], team.keys["outage"], f"after {n}") for n in range(2)]
    assert [answer.status_code for answer in after] == [200, 200]
    assert [metric(proxy, "ccany_shared_state_up") for proxy in team.proxies] == [1.0, 1.0]
    ids += [answer.headers["request-id"] for answer in after]
    for n, request_id in enumerate(ids):
        assert team.proxies[n % 2].flow(request_id)["status_code"] == 200
    # what each gateway counted alone was added to the shared count when Redis came back: the 4 requests made
    # while it was away, and the 2 since
    server = redis.Redis(port=team.redis.port)
    minute, scope = int(time.time() // 60), key_scope(client_key_hash(team.keys["outage"]))
    assert sum(float(server.get(f"ccany:rpm:{scope}:{m}") or 0) for m in (minute - 1, minute)) == 6


LIMITED = secret("sk-limited-60-team0123456789abcdef01")  # the fake answers 429, retry after 60 s
REVOKED = secret("sk-revoked-team-0123456789abcdef01234")  # the fake answers 401
HEALTHY = secret("sk-team-healthy-0123456789abcdef0123")


@contextmanager
def two_machines(fake_upstream, tmp_path: Path, first_key: str) -> Iterator[tuple[Proxy, Proxy, RedisServer]]:
    """Two gateways with a config DB each (as on two machines: nothing shared but Redis) and the same provider,
    whose keys are tried in order: `first_key` as "first", then a healthy one as "second"."""
    redis_server = start_redis(tmp_path)
    proxies = []
    try:
        for name in ("east", "west"):
            path = tmp_path / name / "config.db"
            path.parent.mkdir()
            db = config_db(path)
            store.add_provider(db, "test", "pool", fake_upstream.url + "/v1", models={"big": "gpt-4o"},
                               key_strategy="fill-first")
            store.set_provider_key(db, "test", "pool", first_key, name="first")
            store.set_provider_key(db, "test", "pool", HEALTHY, name="second")
            store.add_route(db, "test", "claude-*", "pool", None)
            db.close()
            proxies.append(start_proxy(fake_upstream.url, path.parent, f"ccany_config_db={path}",
                                       f"ccany_redis_url={redis_server.url}"))
        fake_upstream.clear()
        yield proxies[0], proxies[1], redis_server
    finally:
        for proxy in proxies:
            stop(proxy.process)
        stop(redis_server.process)


def keys_used(fake_upstream) -> list[str]:
    return [r["headers"].get("authorization", "").removeprefix("Bearer ") for r in fake_upstream.requests()]


def first_key_row(tmp_path: Path, machine: str, enabled: int | None = None) -> dict:
    """Key "first" in a machine's config DB; with `enabled`, once the gateway has written it so (10 s at most)."""
    deadline = time.time() + 10
    while True:
        with sqlite3.connect(tmp_path / machine / "config.db") as db:
            db.row_factory = sqlite3.Row
            row = dict(db.execute("SELECT * FROM provider_keys WHERE name = 'first'").fetchone())
        if enabled is None or row["enabled"] == enabled or time.time() > deadline:
            return row
        time.sleep(0.1)


def test_a_key_on_cooldown_in_one_gateway_is_on_cooldown_in_the_other(fake_upstream, tmp_path):
    """The key one gateway saw rate-limited is skipped by the other."""
    with two_machines(fake_upstream, tmp_path, LIMITED) as (east, west, redis_server):
        refused = ask(east, "")
        assert refused.status_code == 429 and refused.headers["x-should-retry"] == "true"
        time.sleep(1.5)  # each gateway reads the shared cooldowns every second
        assert ask(west, "").status_code == 200
        assert keys_used(fake_upstream) == [LIMITED, HEALTHY]  # west never tried the key east saw refused
        until = float(redis.Redis(port=redis_server.port).hget("ccany:cooling", "pool/first"))
        assert 50 < until - time.time() <= 60


def test_a_key_refused_in_one_gateway_is_disabled_in_the_other_until_an_admin_re_enables_it(fake_upstream, tmp_path):
    """An upstream's 401 in east disables the key in west too, in west's own config DB (its admin pages show it);
    an admin re-enabling it in west's config DB re-enables it in east's."""
    with two_machines(fake_upstream, tmp_path, REVOKED) as (east, west, _):
        refused = ask(east, "")
        assert refused.status_code == 500 and "disabled until an admin re-enables it" in refused.text
        assert first_key_row(tmp_path, "east", enabled=0)["enabled"] == 0
        time.sleep(1.5)  # each gateway reads the shared switches every second
        assert ask(west, "").status_code == 200
        assert keys_used(fake_upstream) == [REVOKED, HEALTHY]  # west never tried the key east saw refused
        in_west = first_key_row(tmp_path, "west", enabled=0)
        assert in_west["enabled"] == 0 and in_west["last_status"] == 401
        assert in_west["disabled_reason"].endswith("(seen by another gateway process)")
        assert REVOKED not in in_west["disabled_reason"]  # the fake's message quotes the key; the gateway's never
        time.sleep(1.5)  # west reads its config DB every second: it now lists the key as disabled
        db = config_db(tmp_path / "west" / "config.db")
        store.set_key_enabled(db, "admin", in_west["id"], True)
        db.close()
        in_east = first_key_row(tmp_path, "east", enabled=1)
        assert in_east["enabled"] == 1 and in_east["disabled_reason"] is None
        time.sleep(1.5)  # east's snapshot lists it again
        fake_upstream.clear()
        ask(east, "")
        assert keys_used(fake_upstream) == [REVOKED]  # in use again (and refused again, as the fake does)


def test_a_redis_url_with_a_password_is_refused_at_start(fake_upstream, tmp_path):
    """Options show in mitmweb and in process lists: the password belongs in CCANY_REDIS_PASSWORD."""
    import subprocess

    from tests.conftest import VENV_BIN, free_port

    result = subprocess.run(
        [str(VENV_BIN / "ccany"), "--mode", f"reverse:{fake_upstream.url}", "-p", str(free_port()),
         "--set", f"ccany_db={tmp_path / 'f.db'}", "--set", "ccany_redis_url=redis://:hunter2-redis@127.0.0.1:1/0"],
        capture_output=True, text=True, timeout=30, cwd=tmp_path)
    assert result.returncode != 0
    shown = result.stdout + result.stderr
    assert "ccany_redis_url must not carry a password" in shown and "CCANY_REDIS_PASSWORD" in shown


def test_a_key_over_budget_with_an_over_budget_model_is_answered_by_that_model(fake_upstream, tmp_path):
    """Over its daily budget a key that names an over-budget model is not refused: its requests are routed as that
    model (here to a cheaper upstream model), the client still sees the model it asked for, the flow says why."""
    path = tmp_path / "config.db"
    db = config_db(path)
    store.add_provider(db, "test", "openai", fake_upstream.url + "/v1", models={"big": "gpt-4o", "small": "gpt-4o"})
    store.set_provider_key(db, "test", "openai", KEY)
    store.add_route(db, "test", "claude-*", "openai", None)
    store.add_route(db, "test", "claude-haiku-*", "openai", "gpt-4o-mini", priority=10)
    key_id, key = store.create_client_key(db, "test", "frugal")
    secret(key)
    store.set_client_key_limits(db, "test", "frugal", daily_budget_usd=0.003, over_budget_model="claude-haiku-4-5")
    db.close()
    proxy = start_proxy(fake_upstream.url, tmp_path, f"ccany_config_db={path}")
    try:
        fake_upstream.clear()
        answers = [ask(proxy, key, f"turn {n}") for n in range(3)]  # each of the first two costs $0.00217
        assert [answer.status_code for answer in answers] == [200, 200, 200]
        assert [r["body"]["model"] for r in fake_upstream.requests()] == ["gpt-4o", "gpt-4o", "gpt-4o-mini"]
        assert answers[2].json()["model"] == "claude-opus-4-1"
        assert answers[2].headers["x-ccany-budget-remaining"] == "key:daily=0"
        deadline = time.time() + 10
        while len(rows := flow_rows(proxy.db, "client_key_id = ?", [str(key_id)])) < 3 and time.time() < deadline:
            time.sleep(0.1)
        last = rows[-1]
        assert (last["client_model"], last["upstream_model"]) == ("claude-opus-4-1", "gpt-4o-mini")
        assert "over budget: routed as claude-haiku-4-5" in json.loads(last["notes"])
        assert all("over budget" not in (row["notes"] or "") for row in rows[:2])
    finally:
        stop(proxy.process)
