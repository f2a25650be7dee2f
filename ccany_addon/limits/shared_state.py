"""The state that limits and budgets count in, behind one small interface: in this process (the default) or in
Redis/Valkey (`redis_state.py`), so that several gateway processes enforce one limit jointly.

Two operations a flow, each one atomic step (one round trip to Redis): `admit` reads the counters a request must be
under, counts the request and holds a lease for its stream, or does none of it; `count` adds what a finished flow
used and gives its lease back. And the provider keys cooling down (`cool`, `cooling`), so that a key an upstream
refused in one process is skipped by the others, and the keys disabled or re-enabled (`switch`, `switches`), so
that a key an upstream refused as unauthorised is out of use in every process until an admin re-enables it in one
(`fleet_keys.py`). Counters are named by the caller with their window in the name (`rpm:key:<16 hex>:29387712`,
`usd:user:ada:d:2026-12-05`; `key_limits.key_scope`) and expire on their own; leases expire too, so that a process
that dies holding one does not hold it for ever.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Take:
    """Add `amount` to `counter` unless its total would pass `limit`."""

    counter: str
    amount: float
    limit: float
    ttl: int


@dataclass(frozen=True, slots=True)
class Lease:
    """Hold `lease` among the leases of `name` unless `limit` are held; it ends after `ttl` seconds."""

    name: str
    lease: str
    limit: int
    ttl: float


@dataclass(frozen=True, slots=True)
class Admitted:
    refused: str | None  # None, "read" (a counter at its limit), "take" or "lease"
    values: list[float] = field(default_factory=list)  # the read counters, in order
    index: int = -1  # of the read counter at its limit
    total: float = 0.0  # the take's counter after it (or when refused)


@dataclass(frozen=True, slots=True)
class KeySwitch:
    """A provider key disabled (an upstream's 401/403) or re-enabled (by an admin), at `at` (epoch seconds):
    the latest switch of a key wins."""

    enabled: bool
    at: float
    status: int = 0
    reason: str = ""


class SharedState(Protocol):
    async def admit(self, reads: list[tuple[str, float]], take: Take | None, lease: Lease | None) -> Admitted:
        """All or nothing: refused when a read counter has reached its limit, the take would pass its own or no
        place is left for the lease; else the take is added and the lease held."""
        ...

    async def count(self, adds: list[tuple[str, float, int]], release: tuple[str, str] | None) -> None:
        """Add each (counter, amount, ttl) and give the lease (name, lease) back."""
        ...

    async def read(self, counters: list[str]) -> list[float]:
        ...

    async def renew(self, leases: list[tuple[str, str]], ttl: float) -> None:
        """Hold each (name, lease) still held `ttl` seconds more (a stream still open)."""
        ...

    async def cool(self, key: str, until: float) -> None:
        """A provider key (`provider/key name`, the same on every machine) is cooling down until `until` (epoch s)."""
        ...

    async def cooling(self) -> dict[str, float]:
        """Every provider key still cooling down, and until when."""
        ...

    async def switch(self, key: str, switch: KeySwitch) -> None:
        """A provider key was disabled or re-enabled; kept unless a later switch of the key is already there."""
        ...

    async def switches(self) -> dict[str, KeySwitch]:
        """The latest switch of every provider key that was ever switched."""
        ...

    def describe(self) -> str:
        ...


class LocalState:
    """Counters and leases in this process's memory: nothing to install, nothing shared."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self._counters: dict[str, tuple[float, float]] = {}  # name → (total, expires at)
        self._leases: dict[str, dict[str, float]] = {}  # name → lease → expires at
        self._cooling: dict[str, float] = {}
        self._switches: dict[str, KeySwitch] = {}
        self._next_sweep = 0.0

    async def admit(self, reads: list[tuple[str, float]], take: Take | None, lease: Lease | None) -> Admitted:
        return self.admit_now(reads, take, lease)

    async def count(self, adds: list[tuple[str, float, int]], release: tuple[str, str] | None) -> None:
        self.count_now(adds, release)

    async def read(self, counters: list[str]) -> list[float]:
        return self.read_now(counters)

    async def renew(self, leases: list[tuple[str, str]], ttl: float) -> None:
        self.renew_now(leases, ttl)

    async def cool(self, key: str, until: float) -> None:
        self.cool_now(key, until)

    async def cooling(self) -> dict[str, float]:
        return self.cooling_now()

    async def switch(self, key: str, switch: KeySwitch) -> None:
        self.switch_now(key, switch)

    async def switches(self) -> dict[str, KeySwitch]:
        return self.switches_now()

    def describe(self) -> str:
        return "this process"

    # the same, for callers without an event loop (RedisState counting alone while Redis is away)

    def read_now(self, counters: list[str]) -> list[float]:
        return [self._total(counter) for counter in counters]

    def cool_now(self, key: str, until: float) -> None:
        self._cooling[key] = max(self._cooling.get(key, 0.0), until)

    def cooling_now(self) -> dict[str, float]:
        now = self.clock()
        self._cooling = {key: until for key, until in self._cooling.items() if until > now}
        return dict(self._cooling)

    def switch_now(self, key: str, switch: KeySwitch) -> None:
        if (kept := self._switches.get(key)) is None or kept.at < switch.at:
            self._switches[key] = switch

    def renew_now(self, leases: list[tuple[str, str]], ttl: float) -> None:
        until = self.clock() + ttl
        for name, lease in leases:
            if lease in (held := self._leases.get(name, {})):
                held[lease] = until

    def switches_now(self) -> dict[str, KeySwitch]:
        return dict(self._switches)

    def admit_now(self, reads: list[tuple[str, float]], take: Take | None, lease: Lease | None) -> Admitted:
        now = self.clock()
        values = [self._total(counter) for counter, _ in reads]
        for index, ((_, limit), value) in enumerate(zip(reads, values, strict=True)):
            if value >= limit:
                return Admitted("read", values, index)
        held: dict[str, float] = {}
        if lease is not None:
            held = {key: until for key, until in self._leases.get(lease.name, {}).items() if until > now}
            if len(held) >= lease.limit and lease.lease not in held:
                return Admitted("lease", values)
        total = 0.0
        if take is not None:
            total = self._total(take.counter)
            if total + take.amount > take.limit:
                return Admitted("take", values, total=total)
            total = self._add(take.counter, take.amount, take.ttl, now)
        if lease is not None:
            held[lease.lease] = now + lease.ttl
            self._leases[lease.name] = held
        return Admitted(None, values, total=total)

    def count_now(self, adds: list[tuple[str, float, int]], release: tuple[str, str] | None) -> None:
        now = self.clock()
        self._sweep(now)
        for counter, amount, ttl in adds:
            self._add(counter, amount, ttl, now)
        if release is not None and (held := self._leases.get(release[0])) is not None:
            held.pop(release[1], None)
            if not held:
                del self._leases[release[0]]

    def _add(self, counter: str, amount: float, ttl: int, now: float) -> float:
        total, expires = self._counters.get(counter, (0.0, now + ttl))
        if expires <= now:
            total, expires = 0.0, now + ttl
        self._counters[counter] = (total + amount, expires)
        return total + amount

    def _total(self, counter: str) -> float:
        total, expires = self._counters.get(counter, (0.0, 0.0))
        return total if expires > self.clock() else 0.0

    def _sweep(self, now: float) -> None:
        """Forget expired counters and leases now and then: windows roll over every minute."""
        if now < self._next_sweep:
            return
        self._next_sweep = now + 60
        self._counters = {name: value for name, value in self._counters.items() if value[1] > now}
        for name in list(self._leases):
            self._leases[name] = {key: until for key, until in self._leases[name].items() if until > now}
            if not self._leases[name]:
                del self._leases[name]
