"""Limits and budgets over the shared state: the in-process state and a real redis-server behave alike; two
Redis clients (two gateway processes) share one count; a Redis that goes away is counted around and caught up
with when it comes back; admission refuses with the words and headers the clients act on."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime

import pytest

from ccany_addon.anthropic_api.errors import GatewayError
from ccany_addon.limits.admission import admit, budgets, over_budget_model, used_by
from ccany_addon.limits.key_limits import KeyLimits, Payer
from ccany_addon.limits.redis_state import RedisState
from ccany_addon.limits.shared_state import KeySwitch, Lease, LocalState, Take
from tests.conftest import RedisServer, start_redis, stop

NOON = datetime(2026, 12, 5, 12, 0, 10, tzinfo=UTC).timestamp()


def payers(key_id: int, name: str, limits: KeyLimits, owner: Payer | None = None) -> tuple[Payer, ...]:
    key = Payer(f"key:{key_id}", f"client key {name!r}", limits)
    return (key,) if owner is None else (key, owner)


def admit_(state, payers_, stream, lease, now):
    return asyncio.run(admit(state, payers_, stream, lease, now))


def settle_(state, payers_, usage, cost, ended, lease=None):
    state.count_now(used_by(payers_, usage, cost, ended), lease)


class Clock:
    def __init__(self, now: float = NOON) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory) -> Iterator[RedisServer]:
    server = start_redis(tmp_path_factory.mktemp("redis"))
    yield server
    stop(server.process)


def run(work: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(work())


@pytest.fixture(params=["local", "redis"])
def make_state(request, redis_server):
    """A fresh state of each kind, made inside the test's event loop (a Redis client belongs to one)."""
    async def make():
        if request.param == "local":
            return LocalState()  # the real clock, as Redis has
        state = RedisState(redis_server.url)
        await state.client.flushdb()
        return state

    return make


def test_admit_stops_at_each_limit_and_counts_nothing_it_refuses(make_state):
    async def body():
        shared = await make_state()
        rpm = Take("rpm:key:1:7", 1, 3, 120)
        taken = [(await shared.admit([], rpm, None)).refused for _ in range(5)]
        assert taken == [None, None, None, "take", "take"]
        assert await shared.read(["rpm:key:1:7", "rpm:key:1:8"]) == [3.0, 0.0]
        await shared.count([("usd:key:1:d:x", 0.25, 3600), ("usd:user:1:d:x", 0.25, 3600)], None)
        await shared.count([("usd:key:1:d:x", 0.5, 3600)], None)
        assert await shared.read(["usd:key:1:d:x", "usd:user:1:d:x"]) == [0.75, 0.25]
        # a counter at its limit refuses, and then nothing is taken nor leased
        reads = [("usd:user:1:d:x", 1.0), ("usd:key:1:d:x", 0.75)]
        refused = await shared.admit(reads, Take("rpm:key:1:9", 1, 10, 120), Lease("streams:key:1", "a", 5, 60))
        assert (refused.refused, refused.index, refused.values) == ("read", 1, [0.25, 0.75])
        assert await shared.read(["rpm:key:1:9"]) == [0.0]
        # a take that would pass its limit adds nothing, even when some room is left
        assert (await shared.admit([], Take("tokens", 700, 1000, 60), None)).total == 700.0
        second = await shared.admit([], Take("tokens", 400, 1000, 60), None)
        assert (second.refused, second.total) == ("take", 700.0)

    run(body)


def test_leases_count_what_is_open(make_state):
    async def body():
        shared = await make_state()

        async def lease(name: str) -> str | None:
            return (await shared.admit([], None, Lease("streams:key:1", name, 2, 60))).refused

        assert [await lease("a"), await lease("b"), await lease("c")] == [None, None, "lease"]
        assert await lease("a") is None  # held already: holding it again is no new place
        await shared.count([], ("streams:key:1", "a"))
        assert await lease("c") is None
        # a stream refused its place takes none of the minute's requests
        refused = await shared.admit([], Take("rpm:key:1:1", 1, 9, 120), Lease("streams:key:1", "d", 2, 60))
        assert refused.refused == "lease" and await shared.read(["rpm:key:1:1"]) == [0.0]

    run(body)


def test_a_renewed_lease_outlives_its_first_term_and_one_not_renewed_ends(make_state):
    """A process renews the places of the streams it has open; those of a process that died end on their own."""
    async def body():
        shared = await make_state()

        async def lease(name: str) -> str | None:
            return (await shared.admit([], None, Lease("streams:key:2", name, 2, 1.0))).refused

        assert [await lease("alive"), await lease("dead")] == [None, None]
        await asyncio.sleep(0.6)
        await shared.renew([("streams:key:2", "alive"), ("streams:key:2", "gone")], 1.0)  # "gone" was never held
        await asyncio.sleep(0.6)  # "dead" has expired, "alive" has not
        assert [await lease("new"), await lease("another")] == [None, "lease"]
        await shared.count([], ("streams:key:2", "new"))
        assert await lease("gone") is None  # renewing did not take a place for it

    run(body)


def test_cooldowns_keep_the_latest_and_end_on_their_own(make_state):
    async def body():
        shared = await make_state()
        soon, later = time.time() + 30, time.time() + 90
        await shared.cool("pool/first", later)
        await shared.cool("pool/first", soon)  # an earlier end does not shorten it
        await shared.cool("pool/second", time.time() - 1)  # over already
        assert await shared.cooling() == {"pool/first": pytest.approx(later)}

    run(body)


def test_a_key_switch_keeps_the_latest_and_survives_the_server_going_away(make_state, redis_server):
    async def body():
        shared = await make_state()
        await shared.switch("pool/first", KeySwitch(False, 200.0, 401, "upstream answered 401: bad key"))
        await shared.switch("pool/first", KeySwitch(True, 100.0))  # older than what is kept: ignored
        await shared.switch("pool/second", KeySwitch(True, 150.0))
        assert await shared.switches() == {"pool/first": KeySwitch(False, 200.0, 401, "upstream answered 401: bad key"),
                                           "pool/second": KeySwitch(True, 150.0)}
        await shared.switch("pool/first", KeySwitch(True, 300.0))
        assert (await shared.switches())["pool/first"] == KeySwitch(True, 300.0)

    run(body)


def test_a_key_switched_while_redis_is_away_reaches_it_when_it_is_back(tmp_path):
    async def body():
        server = start_redis(tmp_path)
        clock = Clock(0.0)
        state = RedisState(server.url, clock=clock)
        stop(server.process)
        await state.switch("pool/first", KeySwitch(False, 50.0, 403, "forbidden"))
        assert not state.up and await state.switches() == {"pool/first": KeySwitch(False, 50.0, 403, "forbidden")}
        server = start_redis(tmp_path, server.port)  # back, empty
        try:
            clock.now += 5
            assert await state.switches() == {}  # asked again: the server answers with what it holds...
            assert state.up  # ...and is then told what was switched meanwhile
            assert await state.switches() == {"pool/first": KeySwitch(False, 50.0, 403, "forbidden")}
        finally:
            await state.close()
            stop(server.process)

    run(body)


def test_leases_and_counters_expire_in_the_process():
    clock = Clock()
    local = LocalState(clock)
    local.count_now([("rpm:key:1:1", 5, 120)], None)
    assert local.admit_now([], None, Lease("streams:key:1", "a", 1, 10)).refused is None
    clock.now += 11
    # the first lease ended on its own (its process died)
    assert local.admit_now([], None, Lease("streams:key:1", "b", 1, 10)).refused is None
    clock.now += 110
    assert local.read_now(["rpm:key:1:1"]) == [0.0]


def test_two_redis_clients_share_one_limit(redis_server):
    async def body():
        first, second = RedisState(redis_server.url), RedisState(redis_server.url)
        await first.client.flushdb()
        take = Take("rpm:key:9:1", 1, 5, 120)
        taken = [(await state.admit([], take, None)).refused is None for state in (first, second) * 4]
        assert taken.count(True) == 5 and taken[5:] == [False, False, False]
        assert (await first.admit([], None, Lease("streams:key:9", "x", 1, 60))).refused is None
        assert (await second.admit([], None, Lease("streams:key:9", "y", 1, 60))).refused == "lease"
        await first.close()
        await second.close()

    run(body)


def test_a_redis_that_goes_away_is_counted_around_and_caught_up_with(tmp_path, caplog):
    async def body():
        server = start_redis(tmp_path)
        clock = Clock(0.0)
        state = RedisState(server.url, clock=clock)
        await state.count([("usd:key:1:d:x", 1.0, 3600)], None)
        stop(server.process)
        # away: the process counts alone, says so once, and does not wait on the dead server again for a while
        await state.count([("usd:key:1:d:x", 2.0, 3600)], None)
        assert (await state.admit([("usd:key:1:d:x", 5)], Take("rpm:key:1:1", 1, 1, 120), None)).refused is None
        assert (await state.admit([], Take("rpm:key:1:1", 1, 1, 120), None)).refused == "take"
        assert not state.up and state.outages == 1
        assert "does not answer" in caplog.text and "counted by this process alone" in caplog.text
        assert state.describe().endswith("(away: counting in this process meanwhile)")
        server = start_redis(tmp_path, server.port)  # back, empty (it kept nothing on disk)
        try:
            assert await state.read(["usd:key:1:d:x"]) == [2.0]  # still within the retry pause: the local count
            clock.now += 5
            assert await state.read(["usd:key:1:d:x"]) == [0.0]  # asked again: the server answers...
            assert state.up and "answers again; 2 counters" in caplog.text
            # ...and what was counted meanwhile has been added to it
            assert await state.read(["usd:key:1:d:x", "rpm:key:1:1"]) == [2.0, 1.0]
            assert await state.client.ttl("ccany:usd:key:1:d:x") > 3000
        finally:
            await state.close()
            stop(server.process)

    run(body)


def test_over_budget_a_payer_naming_a_model_is_routed_as_it_and_never_refused(make_state):
    async def body():
        shared = await make_state()
        now = time.time()
        frugal = KeyLimits(daily_usd=0.01, over_budget_model="claude-haiku-4-5")
        owner = Payer("user:1", "user 'ada'", KeyLimits(monthly_usd=1.0))
        key = payers(1, "laptop", frugal, owner)
        assert await over_budget_model(shared, key, now) is None  # money left
        await shared.count(used_by(key, {}, 0.02, now), None)
        assert await over_budget_model(shared, key, now) == "claude-haiku-4-5"
        admitted = await admit(shared, key, False, "req_1", now)  # over the key's budget, admitted all the same
        assert ("x-ccany-budget-remaining", "key:daily=0, user:monthly=0.98") in admitted.headers
        await shared.count(used_by(key, {}, 1.0, now), None)  # the owner's budget names no model: it refuses
        with pytest.raises(GatewayError) as refused:
            await admit(shared, key, False, "req_2", now)
        assert refused.value.status == 402 and "user 'ada' has used its monthly budget" in refused.value.message
        plain = payers(2, "desktop", KeyLimits(daily_usd=0.01))
        assert await over_budget_model(shared, plain, now) is None

    run(body)


def test_dollars_read_as_people_write_them():
    from ccany_addon.limits.admission import dollars

    assert [dollars(x) for x in (0.00651, 0.005, 0.01085, 5, 4.5, 12.5, 1234.5)] == [
        "$0.00651", "$0.005", "$0.01085", "$5", "$4.5", "$12.50", "$1,234.50"]


def test_budgets_follow_the_utc_calendar():
    limits = KeyLimits(daily_usd=5, monthly_usd=100)
    daily, monthly = budgets("key:3", limits, datetime(2026, 12, 31, 23, 59, tzinfo=UTC).timestamp())
    assert daily.counter == "usd:key:3:d:2026-12-31" and monthly.counter == "usd:key:3:m:2026-12"
    assert datetime.fromtimestamp(daily.resets_at, UTC) == datetime(2027, 1, 1, tzinfo=UTC)
    assert datetime.fromtimestamp(monthly.resets_at, UTC) == datetime(2027, 1, 1, tzinfo=UTC)
    assert budgets("key:3", KeyLimits(rpm=5), NOON) == []


def test_admission_refuses_past_the_request_limit_with_anthropic_headers():
    local = LocalState(Clock())
    limits = KeyLimits(rpm=2)
    first = admit_(local, payers(1, "laptop", limits), False, "req_1", NOON)
    assert dict(first.headers) == {"anthropic-ratelimit-requests-limit": "2",
                                   "anthropic-ratelimit-requests-remaining": "1",
                                   "anthropic-ratelimit-requests-reset": "2026-12-05T12:01:00Z"}
    admit_(local, payers(1, "laptop", limits), False, "req_2", NOON)
    with pytest.raises(GatewayError) as refused:
        admit_(local, payers(1, "laptop", limits), False, "req_3", NOON)
    error = refused.value
    assert (error.status, error.error_type, error.retry_after, error.should_retry) == (429, "rate_limit_error", 50,
                                                                                        True)
    assert "'laptop' has sent its 2 requests a minute; try again in 50 s" in error.message
    assert ("anthropic-ratelimit-requests-remaining", "0") in error.headers
    # the next minute is a new count; another key never shared this one
    assert admit_(local, payers(1, "laptop", limits), False, "req_4", NOON + 60).headers
    assert admit_(local, payers(2, "desktop", limits), False, "req_5", NOON).headers


def test_tokens_a_minute_count_what_flows_used():
    local = LocalState(Clock())
    limits = KeyLimits(tpm=1000)
    admit_(local, payers(1, "laptop", limits), False, "req_1", NOON)
    used = {"input_tokens": 600, "cache_read_input_tokens": 50_000, "output_tokens": 300}
    settle_(local, payers(1, "laptop", limits), used, None, NOON + 1)
    admitted = admit_(local, payers(1, "laptop", limits), False, "req_2", NOON + 2)
    assert ("anthropic-ratelimit-tokens-remaining", "100") in admitted.headers  # cache reads are free
    settle_(local, payers(1, "laptop", limits), {"input_tokens": 200, "output_tokens": 0}, None, NOON + 3)
    with pytest.raises(GatewayError) as refused:
        admit_(local, payers(1, "laptop", limits), False, "req_3", NOON + 4)
    assert refused.value.status == 429 and "its 1000 tokens a minute" in refused.value.message


def test_a_key_over_budget_is_refused_until_the_budget_resets():
    local = LocalState(Clock())
    limits = KeyLimits(rpm=100, daily_usd=0.01)
    lefts = []
    for n in range(4):
        admitted = admit_(local, payers(1, "laptop", limits), False, f"req_{n}", NOON)
        lefts.append(dict(admitted.headers)["x-ccany-budget-remaining"])
        settle_(local, payers(1, "laptop", limits), {"input_tokens": 10}, 0.003, NOON)
    assert lefts == ["key:daily=0.01", "key:daily=0.007", "key:daily=0.004", "key:daily=0.001"]
    with pytest.raises(GatewayError) as refused:
        admit_(local, payers(1, "laptop", limits), False, "req_5", NOON + 1)
    error = refused.value
    assert (error.status, error.error_type, error.should_retry) == (402, "billing_error", False)
    assert error.message == ("ccany: client key 'laptop' has used its daily budget ($0.012 of $0.01); it resets at "
                             "2026-12-06T00:00:00Z")
    assert error.retry_after == 43_189
    assert local.read_now([f"rpm:key:1:{int(NOON // 60)}"]) == [4.0]  # the refused request took no request
    local.clock.now = NOON + 43_200  # the next UTC day (LocalState's counters expire by its own clock)
    assert admit_(local, payers(1, "laptop", limits), False, "req_6", NOON + 43_200) is not None


def test_streams_at_once_hold_a_lease_until_released():
    local = LocalState(Clock())
    limits = KeyLimits(streams=1)
    first = admit_(local, payers(1, "laptop", limits), True, "req_1", NOON)
    assert first.lease == ("streams:key:1", "req_1")
    assert admit_(local, payers(1, "laptop", limits), False, "req_2", NOON).lease is None  # not a stream: not counted
    with pytest.raises(GatewayError) as refused:
        admit_(local, payers(1, "laptop", limits), True, "req_3", NOON)
    assert refused.value.status == 429 and "already has 1 streams open" in refused.value.message
    local.count_now([], first.lease)
    assert admit_(local, payers(1, "laptop", limits), True, "req_4", NOON).lease == ("streams:key:1", "req_4")


def test_a_users_budget_covers_all_their_keys():
    local = LocalState(Clock())
    ada = Payer("user:7", "user 'ada'", KeyLimits(monthly_usd=0.022))
    laptop, desktop = payers(1, "laptop", KeyLimits(), ada), payers(2, "desktop", KeyLimits(daily_usd=1), ada)
    for n in range(3):
        admit_(local, laptop, False, f"req_l{n}", NOON)
        settle_(local, laptop, {"output_tokens": 10}, 0.004, NOON)
        admit_(local, desktop, False, f"req_d{n}", NOON)
        settle_(local, desktop, {"output_tokens": 10}, 0.004, NOON)
    # $0.024 spent through two keys: each key is under its own budget (the laptop has none), the user is not
    for both in (laptop, desktop):
        with pytest.raises(GatewayError) as refused:
            admit_(local, both, False, "req_x", NOON)
        assert refused.value.status == 402
        assert refused.value.message.startswith("ccany: user 'ada' has used its monthly budget ($0.024 of $0.022); "
                                                "it resets at 2027-01-01T00:00:00Z")
    assert local.read_now(["usd:key:2:d:2026-12-05", "usd:user:7:m:2026-12"]) == [pytest.approx(0.012),
                                                                               pytest.approx(0.024)]
    # another user's key is not held to ada's budget
    assert admit_(local, payers(3, "other", KeyLimits(daily_usd=1)), False, "req_o", NOON) is not None


def test_a_restarted_gateway_reads_this_months_spend_back_from_its_flow_log(tmp_path):
    from ccany_addon.config.snapshot import ClientKey, ConfigSnapshot
    from ccany_addon.flowlog.schema import insert_flows, open_db

    path = str(tmp_path / "flows.db")
    db = open_db(path)
    rows = [("a", "2026-12-05 09:00:00.000", "1", 0.004), ("b", "2026-12-04 09:00:00.000", "1", 0.003),
            ("c", "2026-11-30 23:59:00.000", "1", 5.0),  # last month: not this month's spend
            ("d", "2026-12-05 10:00:00.000", "2", 0.5), ("e", "2026-12-05 11:00:00.000", None, 9.0)]
    with db.conn:
        insert_flows(db, [{"id": id_, "started_at": at, "client_key_id": key, "cost_usd": cost, "conversation": None}
                          for id_, at, key, cost in rows])
    db.close()
    ada = Payer("user:7", "user 'ada'", KeyLimits(monthly_usd=1.0))
    laptop = ClientKey(1, "laptop", None, (), True, KeyLimits(daily_usd=0.005), "ada", ada)
    desktop = ClientKey(2, "desktop", None, (), True, KeyLimits(), "ada", ada)
    free = ClientKey(3, "free", None, (), True, KeyLimits(rpm=10))
    snapshot = ConfigSnapshot(client_keys={"h1": laptop, "h2": desktop, "h3": free})
    local = LocalState(Clock())
    from ccany_addon.limits.seed import seed_spend

    assert seed_spend(local, path, snapshot, NOON) == 2
    assert local.read_now(["usd:key:1:d:2026-12-05", "usd:user:7:m:2026-12"]) == [pytest.approx(0.004),
                                                                               pytest.approx(0.507)]
    # the laptop's day is nearly spent: one more cent refuses it, as before the restart
    settle_(local, laptop.payers, {"output_tokens": 1}, 0.002, NOON)
    with pytest.raises(GatewayError) as refused:
        admit_(local, laptop.payers, False, "req_x", NOON)
    assert "client key 'laptop' has used its daily budget" in refused.value.message
    # no flow DB, or not one yet: nothing to read back
    assert seed_spend(LocalState(Clock()), str(tmp_path / "none.db"), snapshot, NOON) == 0


def test_redis_with_a_password_from_the_environment(tmp_path):
    """The password comes apart from the URL (CCANY_REDIS_PASSWORD): a server that asks for one is used with it,
    and without it the process counts alone rather than failing the request."""
    import subprocess

    from tests.conftest import free_port

    port = free_port()
    server = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                               "--appendonly", "no", "--requirepass", "s3cret-redis-pass"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        time.sleep(0.3)

        async def body():
            with_password = RedisState(f"redis://127.0.0.1:{port}/0", "s3cret-redis-pass")
            assert (await with_password.admit([], Take("rpm:key:1:1", 1, 5, 120), None)).refused is None
            assert with_password.up and await with_password.read(["rpm:key:1:1"]) == [1.0]
            await with_password.close()
            without = RedisState(f"redis://127.0.0.1:{port}/0")
            assert (await without.admit([], Take("rpm:key:1:1", 1, 5, 120), None)).refused is None
            assert not without.up  # refused by the server: counted alone, and said so
            assert "s3cret" not in without.describe()
            await without.close()

        run(body)
    finally:
        server.terminate()
        server.wait()
