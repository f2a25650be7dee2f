"""The state that limits and budgets count in, behind one small interface: in this process (the default) or in
Redis/Valkey (`redis_state.py`), so that several gateway processes enforce one limit jointly.

Counters are named by the caller with their window in the name (`rpm:3:29387712`, `usd:key:3:d:2026-12-05`) and
expire on their own; leases count what is in flight (concurrent streams) and expire too, so that a process that
dies holding one does not hold it for ever.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol


class SharedState(Protocol):
    def take(self, counter: str, amount: float, limit: float, ttl: int) -> tuple[bool, float]:
        """Add `amount` to `counter` unless the total would pass `limit`: whether it was added, and the total."""
        ...

    def add(self, counter: str, amount: float, ttl: int) -> float:
        """Add `amount` to `counter` (made to expire `ttl` seconds after its first use); the new total."""
        ...

    def read(self, counters: list[str]) -> list[float]:
        ...

    def acquire(self, name: str, lease: str, limit: int, ttl: float) -> bool:
        """Hold `lease` among the leases of `name`, unless `limit` of them are held; leases end after `ttl`."""
        ...

    def release(self, name: str, lease: str) -> None:
        ...

    def describe(self) -> str:
        ...


class LocalState:
    """Counters and leases in this process's memory: nothing to install, nothing shared."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self._counters: dict[str, tuple[float, float]] = {}  # name → (total, expires at)
        self._leases: dict[str, dict[str, float]] = {}  # name → lease → expires at
        self._next_sweep = 0.0

    def take(self, counter: str, amount: float, limit: float, ttl: int) -> tuple[bool, float]:
        total = self._total(counter)
        if total + amount > limit:
            return False, total
        return True, self.add(counter, amount, ttl)

    def add(self, counter: str, amount: float, ttl: int) -> float:
        now = self.clock()
        self._sweep(now)
        total, expires = self._counters.get(counter, (0.0, now + ttl))
        if expires <= now:
            total, expires = 0.0, now + ttl
        self._counters[counter] = (total + amount, expires)
        return total + amount

    def read(self, counters: list[str]) -> list[float]:
        return [self._total(counter) for counter in counters]

    def acquire(self, name: str, lease: str, limit: int, ttl: float) -> bool:
        now = self.clock()
        held = {key: until for key, until in self._leases.get(name, {}).items() if until > now}
        if len(held) >= limit and lease not in held:
            self._leases[name] = held
            return False
        held[lease] = now + ttl
        self._leases[name] = held
        return True

    def release(self, name: str, lease: str) -> None:
        held = self._leases.get(name)
        if held is not None:
            held.pop(lease, None)
            if not held:
                del self._leases[name]

    def describe(self) -> str:
        return "this process"

    def _total(self, counter: str) -> float:
        total, expires = self._counters.get(counter, (0.0, 0.0))
        return total if expires > self.clock() else 0.0

    def _sweep(self, now: float) -> None:
        """Forget expired counters now and then: windows roll over every minute."""
        if now < self._next_sweep:
            return
        self._next_sweep = now + 60
        self._counters = {name: value for name, value in self._counters.items() if value[1] > now}
        for name in list(self._leases):
            self._leases[name] = {key: until for key, until in self._leases[name].items() if until > now}
            if not self._leases[name]:
                del self._leases[name]
