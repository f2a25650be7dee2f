"""Shared state in Redis or Valkey (`ccany_redis_url`): every gateway process pointed at the same server counts in
the same counters, so a limit of N requests a minute lets N through in all, not N per process.

Each operation is one round trip, atomic on the server (a Lua script), awaited on the event loop so that other
flows go on meanwhile; a busy key's admission is sent right behind the request instead, admitted on Redis's answer
of a moment ago (`admit_ahead.py`). When the server does not answer within a quarter of a second (down,
restarting, cut off) the process counts in its own memory, says so once in the log and in `/metrics`
(`ccany_shared_state_up 0`), asks the server again every few seconds, and when it answers adds what was counted
meanwhile to the shared counters (leases held meanwhile stay local and end on their own). One server, not a
cluster: a script's keys must live together.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from typing import TypeVar
from urllib.parse import urlsplit

import redis
import redis.asyncio

from ccany_addon.limits.admit_ahead import AheadOfRedis
from ccany_addon.limits.shared_state import Admitted, KeySwitch, Lease, LocalState, Take
from ccany_addon.util.json_codec import dumps, loads

logger = logging.getLogger("ccany")

T = TypeVar("T")
PREFIX = "ccany:"
TIMEOUT = 0.25  # seconds a call may take before the process counts alone
RETRY_AFTER = 3.0  # seconds between tries while the server is away

# KEYS: the counters read, then the take's counter, then the leases' set (each when given). ARGV[1], JSON (one
# argument: encoding each in Python cost more than the round trip): {"limits": [...], "take": [amount, limit, ttl]
# or null, "lease": [lease, limit, ttl] or null, "force": counted even past a limit (admitted ahead,
# `admit_ahead.py`)}. Leases are scored by the server's clock, so that those of processes on several machines
# expire alike. Answers the refusal, the read counter at its limit, the take's total, the leases held, the reads.
_ADMIT = """
local asked = cjson.decode(ARGV[1])
local force = asked.force
local n = #asked.limits
local values, refused, index = {}, nil, 0
for i = 1, n do
  local value = tonumber(redis.call('GET', KEYS[i]) or '0')
  values[i] = tostring(value)
  if not force and not refused and value >= asked.limits[i] then refused, index = 'read', i - 1 end
end
local take, lease = asked.take, asked.lease
local k = n + 1
local take_key, lease_key
if take ~= cjson.null then take_key = KEYS[k]; k = k + 1 end
if lease ~= cjson.null then lease_key = KEYS[k] end
local total, now, held = 0, 0, 0
if lease_key then
  local clock = redis.call('TIME')
  now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
  redis.call('ZREMRANGEBYSCORE', lease_key, '-inf', now)
  held = redis.call('ZCARD', lease_key)
  if not force and not refused and not redis.call('ZSCORE', lease_key, lease[1]) and held >= lease[2] then
    refused = 'lease'
  end
end
if not refused and take_key then
  total = tonumber(redis.call('GET', take_key) or '0')
  if not force and total + take[1] > take[2] then
    refused = 'take'
  else
    total = tonumber(redis.call('INCRBYFLOAT', take_key, take[1]))
    if redis.call('TTL', take_key) < 0 then redis.call('EXPIRE', take_key, take[3]) end
  end
end
if not refused and lease_key then
  redis.call('ZADD', lease_key, now + lease[3], lease[1])
  redis.call('EXPIRE', lease_key, math.ceil(lease[3]) + 1)
  held = redis.call('ZCARD', lease_key)
end
return {refused or '', index, tostring(total), held, unpack(values)}
"""
# KEYS: the counters added to, then the leases' set. ARGV[1], JSON: {"adds": [[amount, ttl], ...], "lease": the
# lease to give back, or null}.
_COUNT = """
local asked = cjson.decode(ARGV[1])
for i, add in ipairs(asked.adds) do
  redis.call('INCRBYFLOAT', KEYS[i], add[1])
  if redis.call('TTL', KEYS[i]) < 0 then redis.call('EXPIRE', KEYS[i], add[2]) end
end
if asked.lease ~= cjson.null then redis.call('ZREM', KEYS[#asked.adds + 1], asked.lease) end
return 1
"""

# KEYS: the leases' sets; ARGV[1]: the seconds to add, by the server's clock; ARGV[2...]: the lease in each set. A
# lease no longer held (given back, or expired) is not taken again.
_RENEW = """
local clock = redis.call('TIME')
local expires = tonumber(clock[1]) + tonumber(clock[2]) / 1000000 + tonumber(ARGV[1])
for i, key in ipairs(KEYS) do
  if redis.call('ZSCORE', key, ARGV[i + 1]) then
    redis.call('ZADD', key, expires, ARGV[i + 1])
    redis.call('EXPIRE', key, math.ceil(tonumber(ARGV[1])) + 1)
  end
end
return 1
"""

# KEYS[1]: the hash of provider keys cooling down (`provider/key name` → until, epoch seconds). ARGV: the key and
# until; a later `until` wins. COOLING reads it and forgets the keys whose cooldown is over.
_COOL = """
local now = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
if tonumber(ARGV[2]) > now then redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) end
return 1
"""
_COOLING = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local found = redis.call('HGETALL', KEYS[1])
local cooling = {}
for i = 1, #found, 2 do
  if tonumber(found[i + 1]) > now then
    table.insert(cooling, found[i]); table.insert(cooling, found[i + 1])
  else
    redis.call('HDEL', KEYS[1], found[i])
  end
end
return cooling
"""
COOLING_KEY = PREFIX + "cooling"
# KEYS[1]: the hash of provider keys switched (`provider/key name` → JSON {enabled, at, status, reason}). ARGV: the
# key, the switch's JSON and its `at`; a later switch wins.
_SWITCH = """
local kept = redis.call('HGET', KEYS[1], ARGV[1])
if not kept or cjson.decode(kept).at < tonumber(ARGV[3]) then redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) end
return 1
"""
SWITCHES_KEY = PREFIX + "key_switches"


def server_name(url: str) -> str:
    """Where the server is, for log lines: never the password a URL may carry."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or 'localhost'}:{parts.port or 6379}{parts.path or ''}"


class RedisState:
    def __init__(self, url: str, password: str | None = None, clock: Callable[[], float] = time.monotonic,
                 timeout: float = TIMEOUT) -> None:
        self.name = server_name(url)
        self.timeout = timeout
        self.client = redis.asyncio.Redis.from_url(url, password=password or None, socket_timeout=timeout,
                                                   socket_connect_timeout=timeout, decode_responses=True)
        self._admit = self.client.register_script(_ADMIT)
        self._count = self.client.register_script(_COUNT)
        self._cool = self.client.register_script(_COOL)
        self._cooling = self.client.register_script(_COOLING)
        self._switch = self.client.register_script(_SWITCH)
        self._renew = self.client.register_script(_RENEW)
        self.local = LocalState()
        self.clock = clock
        self.up = True
        self.outages = 0
        self._retry_at = 0.0
        self._missed: dict[str, tuple[float, int]] = {}  # counted alone while away: counter → (amount, ttl)
        self._missed_switches: dict[str, KeySwitch] = {}  # keys switched while away
        self.ahead = AheadOfRedis(time.monotonic)  # `clock` paces the retries (tests step it)
        self.admitted_ahead = 0  # `/metrics`: how often a busy key did not wait for Redis
        self._confirming: set[asyncio.Task] = set()  # admissions admitted ahead, on their way to Redis
        self._leases_confirming: dict[str, asyncio.Task] = {}  # their stream leases: lease → its admission's task

    def describe(self) -> str:
        return f"Redis at {self.name}" + ("" if self.up else " (away: counting in this process meanwhile)")

    async def admit(self, reads: list[tuple[str, float]], take: Take | None, lease: Lease | None) -> Admitted:
        if self.up and (admitted := self.ahead.admit(reads, take, lease)) is not None:
            self.admitted_ahead += 1
            confirming = asyncio.get_running_loop().create_task(self._confirm(reads, take, lease))
            self._confirming.add(confirming)
            confirming.add_done_callback(self._confirming.discard)
            if lease is not None:  # its end is counted after Redis has it, or the lease would outlive the stream
                self._leases_confirming[lease.lease] = confirming
                confirming.add_done_callback(lambda _: self._leases_confirming.pop(lease.lease, None))
            return admitted

        async def shared() -> Admitted:
            admitted, held = await self._admit_on_server(reads, take, lease, force=False)
            self.ahead.answered(reads, take, lease, admitted, held, ahead=False)
            return admitted

        def alone() -> Admitted:
            admitted = self.local.admit_now(reads, take, lease)
            if admitted.refused is None and take is not None:
                self._remember([(take.counter, take.amount, take.ttl)])
            return admitted

        return await self._call(shared, alone)

    async def _confirm(self, reads: list[tuple[str, float]], take: Take | None, lease: Lease | None) -> None:
        """Counts an admission admitted ahead (`admit_ahead.py`), whatever Redis would now say of it."""
        async def shared() -> None:
            admitted, held = await self._admit_on_server(reads, take, lease, force=True)
            self.ahead.answered(reads, take, lease, admitted, held, ahead=True)

        def alone() -> None:  # counted here, and added to Redis when it is back, as an admission alone is
            self.ahead.forget(reads, take, lease)
            if take is not None:
                taken = [(take.counter, take.amount, take.ttl)]
                self._remember(taken)
                self.local.count_now(taken, None)

        try:
            await self._call(shared, alone)
        except Exception as error:  # not a Redis error: the admission stays admitted, uncounted; say so
            self.ahead.forget(reads, take, lease)
            logger.error(f"ccany: an admission could not be counted in {self.name}: {type(error).__name__}")

    async def _admit_on_server(self, reads: list[tuple[str, float]], take: Take | None, lease: Lease | None,
                               force: bool) -> tuple[Admitted, int]:
        keys = [PREFIX + counter for counter, _ in reads]
        keys += [PREFIX + take.counter] if take else []
        keys += [PREFIX + lease.name] if lease else []
        asked = {"limits": [limit for _, limit in reads], "take": [take.amount, take.limit, take.ttl] if take else None,
                 "lease": [lease.lease, lease.limit, lease.ttl] if lease else None, "force": force}
        refused, index, total, held, *values = await self._admit(keys=keys, args=[dumps(asked)])
        return Admitted(refused or None, [float(value) for value in values], int(index), float(total)), int(held)

    async def count(self, adds: list[tuple[str, float, int]], release: tuple[str, str] | None) -> None:
        self.ahead.counted(adds)
        if release is not None and (confirming := self._leases_confirming.get(release[1])) is not None:
            await asyncio.wait([confirming])

        def alone() -> None:
            self._remember(adds)
            self.local.count_now(adds, release)

        await self._call(lambda: self._count_on_server(adds, release), alone)

    async def read(self, counters: list[str]) -> list[float]:
        if self.up and (values := self.ahead.read(counters)) is not None:
            return values

        async def shared() -> list[float]:
            return [float(value or 0) for value in await self.client.mget([PREFIX + c for c in counters])]

        return await self._call(shared, lambda: self.local.read_now(counters))

    async def renew(self, leases: list[tuple[str, str]], ttl: float) -> None:
        async def shared() -> None:
            await self._renew(keys=[PREFIX + name for name, _ in leases], args=[ttl, *(lease for _, lease in leases)])

        await self._call(shared, lambda: self.local.renew_now(leases, ttl))

    async def cool(self, key: str, until: float) -> None:
        async def shared() -> None:
            await self._cool(keys=[COOLING_KEY], args=[key, until])

        await self._call(shared, lambda: self.local.cool_now(key, until))

    async def cooling(self) -> dict[str, float]:
        async def shared() -> dict[str, float]:
            found = await self._cooling(keys=[COOLING_KEY])
            return {found[i]: float(found[i + 1]) for i in range(0, len(found), 2)}

        return await self._call(shared, self.local.cooling_now)

    async def switch(self, key: str, switch: KeySwitch) -> None:
        async def shared() -> None:
            await self._switch_on_server({key: switch})

        def alone() -> None:
            self.local.switch_now(key, switch)
            self._missed_switches[key] = switch

        await self._call(shared, alone)

    async def switches(self) -> dict[str, KeySwitch]:
        async def shared() -> dict[str, KeySwitch]:
            found = await self.client.hgetall(SWITCHES_KEY)
            return {key: KeySwitch(**loads(value)) for key, value in found.items()}

        return await self._call(shared, self.local.switches_now)

    async def close(self) -> None:
        if self._confirming:
            await asyncio.wait(list(self._confirming), timeout=2 * self.timeout)
        await self.client.aclose()

    async def _count_on_server(self, adds: list[tuple[str, float, int]], release: tuple[str, str] | None) -> None:
        keys = [PREFIX + counter for counter, _, _ in adds] + ([PREFIX + release[0]] if release else [])
        asked = {"adds": [[amount, ttl] for _, amount, ttl in adds], "lease": release[1] if release else None}
        await self._count(keys=keys, args=[dumps(asked)])

    async def _switch_on_server(self, switches: dict[str, KeySwitch]) -> None:
        for key, switch in switches.items():
            await self._switch(keys=[SWITCHES_KEY], args=[key, dumps(asdict(switch)), switch.at])

    # -- the server away and back

    async def _call(self, shared: Callable[[], Awaitable[T]], alone: Callable[[], T]) -> T:
        if not self.up and self.clock() < self._retry_at:
            return alone()
        try:
            result = await shared()
        except (redis.RedisError, OSError) as error:
            self._away(error)
            return alone()
        if not self.up:
            await self._back()
        return result

    def _away(self, error: Exception) -> None:
        self._retry_at = self.clock() + RETRY_AFTER
        if self.up:
            self.up = False
            self.outages += 1
            logger.warning(f"ccany: shared state: {self.name} does not answer ({type(error).__name__}); limits and "
                           "budgets are counted by this process alone until it is back")

    async def _back(self) -> None:
        self.up = True
        missed, self._missed = self._missed, {}
        switched, self._missed_switches = self._missed_switches, {}
        try:
            await self._switch_on_server(switched)  # first: sending a switch twice does no harm, a count would
            await self._count_on_server([(counter, amount, ttl) for counter, (amount, ttl) in missed.items()], None)
        except (redis.RedisError, OSError) as error:  # away again: keep what was missed for the next return
            self._missed = missed
            self._missed_switches = switched | self._missed_switches
            self._away(error)
            return
        logger.warning(f"ccany: shared state: {self.name} answers again; {len(missed)} counters counted meanwhile "
                       "were added to it")

    def _remember(self, adds: list[tuple[str, float, int]]) -> None:
        for counter, amount, ttl in adds:
            total, _ = self._missed.get(counter, (0.0, ttl))
            self._missed[counter] = (total + amount, ttl)
