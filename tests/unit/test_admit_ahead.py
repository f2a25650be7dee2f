"""Admitting a busy key's requests ahead of Redis: on a fresh answer and far from every limit a request does not
wait for Redis, Redis still counts it, and near a limit, under a small one or after a pause every request waits
for Redis's answer again; two processes hammering one limit pass it by a few at most."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine, Iterator
from typing import Any

import pytest

from ccany_addon.limits.admit_ahead import AHEAD, FRESH, AheadOfRedis
from ccany_addon.limits.redis_state import PREFIX, RedisState
from ccany_addon.limits.shared_state import Admitted, Lease, Take
from tests.conftest import RedisServer, start_redis, stop

BUSY = Take("rpm:key:a:1", 1, 100_000, 120)  # a limit far away
BUDGET = [("usd:key:a:d:x", 10.0)]


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def answered(ahead: AheadOfRedis, reads, take, lease, values, total=0.0, held=0, was_ahead=False) -> None:
    ahead.answered(reads, take, lease, Admitted(None, values, total=total), held, was_ahead)


def test_nothing_is_admitted_ahead_before_redis_has_answered_for_the_same_counters():
    ahead = AheadOfRedis(Clock())
    assert ahead.admit(BUDGET, BUSY, None) is None
    answered(ahead, BUDGET, BUSY, None, [1.0], total=5)
    assert ahead.admit(BUDGET, Take("rpm:key:a:2", 1, 100_000, 120), None) is None  # the next minute's counter
    admitted = ahead.admit(BUDGET, BUSY, None)
    assert admitted is not None and admitted.refused is None
    assert (admitted.values, admitted.total) == ([1.0], 6)  # what the answer's headers are made of


def test_at_most_a_few_ahead_of_redis_and_then_each_answer_lets_one_more_through():
    ahead = AheadOfRedis(Clock())
    answered(ahead, BUDGET, BUSY, None, [0.0], total=10)
    totals = [admitted.total for _ in range(AHEAD) if (admitted := ahead.admit(BUDGET, BUSY, None)) is not None]
    assert totals == [11 + n for n in range(AHEAD)]
    assert ahead.admit(BUDGET, BUSY, None) is None  # AHEAD admitted, none answered for: ask Redis
    answered(ahead, BUDGET, BUSY, None, [0.0], total=11, was_ahead=True)
    assert ahead.admit(BUDGET, BUSY, None).total == 11 + AHEAD  # the answer counted the first; 7 still ahead


def test_an_old_answer_a_small_limit_or_a_counter_near_its_limit_waits_for_redis():
    clock = Clock()
    ahead = AheadOfRedis(clock)
    answered(ahead, BUDGET, BUSY, None, [0.0])
    clock.now += FRESH * 1.01
    assert ahead.admit(BUDGET, BUSY, None) is None  # a pause: another gateway may have counted meanwhile

    small = Take("rpm:key:b:1", 1, 99, 120)
    answered(ahead, [], small, None, [], total=0)
    assert ahead.admit([], small, None) is None  # 1% of 99 requests is less than one

    answered(ahead, BUDGET, None, None, [8.99])
    assert ahead.admit(BUDGET, None, None) is not None
    answered(ahead, BUDGET, None, None, [9.0])
    assert ahead.admit(BUDGET, None, None) is None  # $9 of $10: 90% of the budget

    edge = Take("rpm:key:c:1", 1, 1000, 120)
    answered(ahead, [], edge, None, [], total=899)
    assert ahead.admit([], edge, None).total == 900
    assert ahead.admit([], edge, None) is None  # would be the 901st of 1000

    streams = Lease("streams:key:d", "s1", 200, 15)
    answered(ahead, [], None, streams, [], held=178)
    assert ahead.admit([], None, streams) is not None  # 179 of 200
    assert ahead.admit([], None, streams) is not None  # 180
    assert ahead.admit([], None, streams) is None  # 181 > 90%; and 1% of 200 is 2 ahead anyway


def test_a_budget_read_before_routing_comes_from_a_fresh_view():
    clock = Clock()
    ahead = AheadOfRedis(clock)
    answered(ahead, [*BUDGET, ("usd:user:ada:d:x", 50.0)], BUSY, None, [1.5, 20.0])
    assert ahead.read(["usd:user:ada:d:x", "usd:key:a:d:x"]) == [20.0, 1.5]
    assert ahead.read(["usd:key:a:m:x"]) is None  # never answered for
    clock.now += FRESH * 1.01
    assert ahead.read(["usd:key:a:d:x"]) is None


def test_what_a_flow_here_used_counts_in_the_view_at_once():
    ahead = AheadOfRedis(Clock())
    answered(ahead, BUDGET, BUSY, None, [1.0])
    ahead.counted([("usd:key:a:d:x", 8.5, 3600), ("tpm:key:a:1", 900, 120)])
    assert ahead.admit(BUDGET, BUSY, None) is None  # $9.50 of $10: this process's own spend is seen at once


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory) -> Iterator[RedisServer]:
    server = start_redis(tmp_path_factory.mktemp("redis"))
    yield server
    stop(server.process)


async def paused(state: RedisState, seconds: float) -> None:
    """Redis stops answering anyone (as when it is busy) for a while."""
    await state.client.execute_command("CLIENT", "PAUSE", int(seconds * 1000), "ALL")


def without_waiting(admission: Coroutine[Any, Any, Admitted]) -> Admitted:
    """What an admission answers when it never waits for anything (Redis's answer, the event loop's turn)."""
    try:
        admission.send(None)
    except StopIteration as done:
        return done.value
    admission.close()
    raise AssertionError("the admission waited")


def test_a_busy_key_does_not_wait_for_redis_and_redis_still_counts_it(redis_server):
    async def body():
        state, other = (RedisState(redis_server.url, timeout=5) for _ in range(2))  # the pause is not an outage
        await state.client.flushdb()
        lease = Lease("streams:key:a", "first", 1000, 15)
        assert (await state.admit(BUDGET, BUSY, lease)).refused is None  # asks Redis: nothing known yet
        small = Take("rpm:key:small:1", 1, 50, 120)
        assert (await state.admit([], small, None)).refused is None

        await paused(other, 0.15)
        admitted = without_waiting(state.admit(BUDGET, BUSY, Lease(lease.name, "second", 1000, 15)))
        assert admitted.refused is None  # on the answer of a moment ago, though Redis does not answer now
        assert state.admitted_ahead == 1  # in /metrics as ccany_admitted_ahead_total
        started = time.monotonic()
        assert (await state.admit([], small, None)).refused is None
        assert time.monotonic() - started > 0.08  # a small limit waited for Redis

        await state.close()  # waits for what was admitted ahead to reach Redis
        assert float(await other.client.get(PREFIX + BUSY.counter)) == 2
        assert await other.client.zrange(PREFIX + lease.name, 0, -1) == ["first", "second"]
        await other.close()

    asyncio.run(body())


def test_a_stream_admitted_ahead_that_ends_at_once_gives_its_place_back(redis_server):
    async def body():
        state = RedisState(redis_server.url)
        await state.client.flushdb()
        lease = Lease("streams:key:e", "first", 1000, 15)
        await state.admit([], None, lease)
        await state.count([], (lease.name, lease.lease))
        second = Lease(lease.name, "second", 1000, 15)
        await state.admit([], None, second)
        await state.count([], (second.name, second.lease))  # before its admission has reached Redis
        await state.close()
        check = RedisState(redis_server.url)
        assert await check.client.zcard(PREFIX + lease.name) == 0
        await check.close()

    asyncio.run(body())


def test_two_processes_hammering_one_limit_pass_it_by_a_few_at_most(redis_server):
    async def body():
        # a slow machine's pause must not make a process count alone (this test is about Redis answering)
        first, second = (RedisState(redis_server.url, timeout=10) for _ in range(2))
        await first.client.flushdb()
        take = Take("rpm:key:f:1", 1, 1000, 120)
        asked_redis = 0
        real = RedisState._admit_on_server

        async def counting(self, *args, force):
            nonlocal asked_redis
            asked_redis += not force
            return await real(self, *args, force=force)

        for state in (first, second):
            state._admit_on_server = counting.__get__(state)
        admitted = 0
        for _ in range(80):  # in waves of AHEAD from each, as gateways under load
            wave = [state.admit([], take, None) for _ in range(AHEAD) for state in (first, second)]
            admitted += sum(answer.refused is None for answer in await asyncio.gather(*wave))
            await asyncio.sleep(0.002)
        assert first.up and second.up
        await first.close()
        await second.close()
        check = RedisState(redis_server.url)
        counted = float(await check.client.get(PREFIX + take.counter))
        await check.close()
        assert counted == admitted  # every admission counted once, ahead or not
        assert 1000 <= admitted <= 1000 + 2 * 10  # at most 1% of the limit ahead in each process
        assert asked_redis < 1280 - 700  # until 90% of the limit, nearly every request went on without Redis

    asyncio.run(body())
