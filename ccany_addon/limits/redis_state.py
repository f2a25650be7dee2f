"""Shared state in Redis or Valkey (`ccany_redis_url`): every gateway process pointed at the same server counts in
the same counters, so a limit of N requests a minute lets N through in all, not N per process.

Each operation is one round trip, atomic on the server (a Lua script: check and add in one step). Calls block the
event loop for that round trip, so they time out quickly: when the server does not answer (down, restarting, cut
off) the process counts in its own memory, says so once in the log and in `/metrics`
(`ccany_shared_state_up 0`), tries the server again every few seconds, and when it answers again adds what it
counted meanwhile to the shared counters (leases held meanwhile stay local and end on their own).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar
from urllib.parse import urlsplit

import redis

from ccany_addon.limits.shared_state import LocalState

logger = logging.getLogger("ccany")

T = TypeVar("T")
PREFIX = "ccany:"
TIMEOUT = 0.25  # seconds a call may take before the process counts alone
RETRY_AFTER = 3.0  # seconds between tries while the server is away

_TAKE = """
local total = tonumber(redis.call('GET', KEYS[1]) or '0')
if total + tonumber(ARGV[1]) > tonumber(ARGV[2]) then return {0, tostring(total)} end
total = redis.call('INCRBYFLOAT', KEYS[1], ARGV[1])
if redis.call('TTL', KEYS[1]) < 0 then redis.call('EXPIRE', KEYS[1], ARGV[3]) end
return {1, tostring(total)}
"""
_ADD = """
local total = redis.call('INCRBYFLOAT', KEYS[1], ARGV[1])
if redis.call('TTL', KEYS[1]) < 0 then redis.call('EXPIRE', KEYS[1], ARGV[2]) end
return tostring(total)
"""
# The server's clock, not each process's: leases of processes on several machines expire alike.
_ACQUIRE = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) and redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then
  return 0
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
redis.call('EXPIRE', KEYS[1], math.ceil(tonumber(ARGV[3])) + 1)
return 1
"""


def server_name(url: str) -> str:
    """Where the server is, for log lines: never the password a URL may carry."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or 'localhost'}:{parts.port or 6379}{parts.path or ''}"


class RedisState:
    def __init__(self, url: str, password: str | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.name = server_name(url)
        self.client = redis.Redis.from_url(url, password=password or None, socket_timeout=TIMEOUT,
                                           socket_connect_timeout=TIMEOUT, decode_responses=True)
        self._take = self.client.register_script(_TAKE)
        self._add = self.client.register_script(_ADD)
        self._acquire = self.client.register_script(_ACQUIRE)
        self.local = LocalState()
        self.clock = clock
        self.up = True
        self.outages = 0
        self._retry_at = 0.0
        self._missed: dict[str, tuple[float, int]] = {}  # counted alone while away: counter → (amount, ttl)

    def describe(self) -> str:
        return f"Redis at {self.name}" + ("" if self.up else " (away: counting in this process meanwhile)")

    def take(self, counter: str, amount: float, limit: float, ttl: int) -> tuple[bool, float]:
        def shared() -> tuple[bool, float]:
            taken, total = self._take(keys=[PREFIX + counter], args=[amount, limit, ttl])
            return bool(taken), float(total)

        def alone() -> tuple[bool, float]:
            taken, total = self.local.take(counter, amount, limit, ttl)
            if taken:
                self._remember(counter, amount, ttl)
            return taken, total

        return self._call(shared, alone)

    def add(self, counter: str, amount: float, ttl: int) -> float:
        def alone() -> float:
            self._remember(counter, amount, ttl)
            return self.local.add(counter, amount, ttl)

        return self._call(lambda: float(self._add(keys=[PREFIX + counter], args=[amount, ttl])), alone)

    def read(self, counters: list[str]) -> list[float]:
        if not counters:
            return []
        return self._call(lambda: [float(value or 0) for value in self.client.mget([PREFIX + c for c in counters])],
                          lambda: self.local.read(counters))

    def acquire(self, name: str, lease: str, limit: int, ttl: float) -> bool:
        return self._call(lambda: bool(self._acquire(keys=[PREFIX + name], args=[lease, limit, ttl])),
                          lambda: self.local.acquire(name, lease, limit, ttl))

    def release(self, name: str, lease: str) -> None:
        self.local.release(name, lease)
        self._call(lambda: self.client.zrem(PREFIX + name, lease), lambda: None)

    def close(self) -> None:
        self.client.close()

    # -- the server away and back

    def _call(self, shared: Callable[[], T], alone: Callable[[], T]) -> T:
        if not self.up and self.clock() < self._retry_at:
            return alone()
        try:
            result = shared()
        except redis.RedisError as error:
            self._away(error)
            return alone()
        if not self.up:
            self._back()
        return result

    def _away(self, error: Exception) -> None:
        self._retry_at = self.clock() + RETRY_AFTER
        if self.up:
            self.up = False
            self.outages += 1
            logger.warning(f"ccany: shared state: {self.name} does not answer ({type(error).__name__}); limits and "
                           "budgets are counted by this process alone until it is back")

    def _back(self) -> None:
        self.up = True
        missed, self._missed = self._missed, {}
        try:
            with self.client.pipeline(transaction=False) as pipe:
                for counter, (amount, ttl) in missed.items():
                    self._add(keys=[PREFIX + counter], args=[amount, ttl], client=pipe)
                pipe.execute()
        except redis.RedisError as error:  # away again: keep what was missed for the next return
            self._missed = missed
            self._away(error)
            return
        logger.warning(f"ccany: shared state: {self.name} answers again; {len(missed)} counters counted meanwhile "
                       "were added to it")

    def _remember(self, counter: str, amount: float, ttl: int) -> None:
        total, _ = self._missed.get(counter, (0.0, ttl))
        self._missed[counter] = (total + amount, ttl)
