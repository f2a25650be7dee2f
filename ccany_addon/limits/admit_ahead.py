"""Admitting a busy key's request on what Redis answered a moment ago, instead of waiting for Redis again.

Why: with 32 streams at once, awaiting Redis before each request added about a millisecond to its time to first
byte, most of it spent waiting for the event loop's turn and for a core rather than in the round trip itself.
So when Redis answered an admission of the same counters less than `FRESH` ago, and the request would keep every
counter under `NEAR` of its limit, it is admitted at once; the same admission then goes to Redis right behind it,
forced (counted even where Redis would now refuse), and its answer refreshes the view. At most `AHEAD` requests of a
key are admitted so before Redis has answered for one of them, and a request limit or stream limit allows it only
from 100 up and then for at most 1% of it, so a limit is passed by a few in the worst race, never doubled. Near a
limit, under a small one, or after a pause longer than `FRESH` (a person's next turn through another gateway), each
request waits for Redis as before and is exact. No I/O here: `RedisState` asks and tells.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ccany_addon.limits.shared_state import Admitted, Lease, Take

FRESH = 0.05  # seconds an answer of Redis is acted on: busy keys ask far more often, a person's turns far less
NEAR = 0.9  # of a limit: past it, every request waits for Redis
AHEAD = 8  # requests of a key admitted before Redis has answered for one of them
SMALLEST = 100  # request and stream limits under this are never admitted ahead (1% of them is less than one)
KEPT = 256  # views kept before those no longer fresh are forgotten


@dataclass(slots=True)
class View:
    """What Redis last answered for one admission's counters, and what was admitted here since."""

    values: list[float]  # the read counters
    total: float  # the take's counter
    held: int  # leases held
    at: float
    ahead: int = 0  # admitted here, not yet answered for


Signature = tuple[tuple[str, ...], str | None, str | None]


def signature(reads: list[tuple[str, float]], take: Take | None, lease: Lease | None) -> Signature:
    return (tuple(counter for counter, _ in reads), take.counter if take is not None else None,
            lease.name if lease is not None else None)


class AheadOfRedis:
    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self._views: dict[Signature, View] = {}

    def admit(self, reads: list[tuple[str, float]], take: Take | None, lease: Lease | None) -> Admitted | None:
        """Admitted on the view (the caller sends the admission to Redis behind it), or None: ask Redis first."""
        view = self._views.get(signature(reads, take, lease))
        if view is None or self.clock() - view.at > FRESH:
            return None
        most = AHEAD
        if take is not None:
            most = min(most, int(take.limit // SMALLEST))
        if lease is not None:
            most = min(most, lease.limit // SMALLEST)
        ahead = view.ahead + 1
        total = view.total + ahead * take.amount if take is not None else 0.0
        if (ahead > most or any(value >= NEAR * limit for value, (_, limit) in zip(view.values, reads, strict=True))
                or (take is not None and total > NEAR * take.limit)
                or (lease is not None and view.held + ahead > NEAR * lease.limit)):
            return None
        view.ahead = ahead
        return Admitted(None, list(view.values), total=total)

    def read(self, counters: list[str]) -> list[float] | None:
        """The counters as a fresh view has them (a budget read before routing), or None: ask Redis."""
        now, found = self.clock(), {}
        for (names, _, _), view in self._views.items():
            if now - view.at <= FRESH:
                found.update(zip(names, view.values, strict=False))
        return [found[counter] for counter in counters] if all(counter in found for counter in counters) else None

    def answered(self, reads: list[tuple[str, float]], take: Take | None, lease: Lease | None, answer: Admitted,
                 held: int, ahead: bool) -> None:
        """Redis answered an admission (`ahead`: one admitted here before it asked)."""
        key = signature(reads, take, lease)
        view = self._views.get(key)
        if view is None:
            if len(self._views) >= KEPT:
                now = self.clock()
                self._views = {name: kept for name, kept in self._views.items() if now - kept.at <= FRESH}
            view = self._views[key] = View([], 0.0, 0, 0.0)
        view.values, view.total, view.held, view.at = list(answer.values), answer.total, held, self.clock()
        if ahead:
            view.ahead = max(0, view.ahead - 1)

    def forget(self, reads: list[tuple[str, float]], take: Take | None, lease: Lease | None) -> None:
        """An admission admitted ahead that Redis never got (it is away): it no longer counts as ahead."""
        if (view := self._views.get(signature(reads, take, lease))) is not None:
            view.ahead = max(0, view.ahead - 1)

    def counted(self, adds: list[tuple[str, float, int]]) -> None:
        """What a flow here used, in the views at once: this process's next request sees its own spend."""
        amounts = {counter: amount for counter, amount, _ in adds}
        for (counters, _, _), view in self._views.items():
            for index, counter in enumerate(counters):
                if counter in amounts and index < len(view.values):
                    view.values[index] += amounts[counter]
