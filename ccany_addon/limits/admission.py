"""Whether a client key's request may go upstream, and what its flow used once it ends: the counting behind the
limits addon, over a `SharedState` (this process's memory or Redis), with no mitmproxy in it.

- Requests a minute are taken atomically at admission, so processes sharing the state let N through in all.
- Tokens a minute and spend are added when a flow ends (only then are they known); a request is refused while the
  current window's total has reached the limit.
- Budgets are USD per UTC day and per UTC month. Over budget, the answer is `402 billing_error` with
  `x-should-retry: false` (Claude Code then stops instead of retrying), naming the budget and when it resets;
  unless the key (or its owner) names an over-budget model, which the request is then routed as instead.
- Rate limits answer `429 rate_limit_error` with `retry-after` and Anthropic's `anthropic-ratelimit-*` headers,
  which successful answers carry too, so that a client can pace itself.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from datetime import UTC, datetime

from ccany_addon.anthropic_api.errors import GatewayError
from ccany_addon.limits.key_limits import KeyLimits, Payer
from ccany_addon.limits.shared_state import Lease, SharedState, Take

MINUTE = 60
BUDGET_HEADER = "x-ccany-budget-remaining"  # `key:daily=4.21, user:monthly=95.1`: USD left before the request
# A stream's place is held for this long and renewed while the stream runs (`LEASE_RENEWAL`): the places held by a
# gateway process that died are free again within it.
STREAM_LEASE_TTL = 15.0
LEASE_RENEWAL = 5.0  # seconds between renewals of the leases of the streams a process has open
NEVER = 1e300  # the limit of a budget that does not refuse (JSON has no infinity, for the Lua script)


@dataclass(frozen=True, slots=True)
class Budget:
    name: str  # "daily", "monthly"
    limit: float
    counter: str
    resets_at: float
    ttl: int


def budgets(scope: str, limits: KeyLimits, now: float) -> list[Budget]:
    """The budgets of a key (`key:3`) or user (`user:1`) in force at `now`, each with its current window's
    counter."""
    if limits.daily_usd is None and limits.monthly_usd is None:
        return []
    day, next_day, month, next_month = _calendar(int(now // 86_400))
    found = []
    if limits.daily_usd is not None:
        found.append(Budget("daily", limits.daily_usd, f"usd:{scope}:d:{day}", next_day, 2 * 86_400))
    if limits.monthly_usd is not None:
        found.append(Budget("monthly", limits.monthly_usd, f"usd:{scope}:m:{month}", next_month, 32 * 86_400))
    return found


@functools.lru_cache(maxsize=8)  # asked twice a flow, the answer changes once a day
def _calendar(day_number: int) -> tuple[str, float, str, float]:
    """A UTC day's name and when it ends; its month's name and when that ends."""
    day = datetime.fromtimestamp(day_number * 86_400, UTC)
    month = day.replace(day=1)
    next_month = month.replace(year=month.year + 1, month=1) if month.month == 12 else month.replace(
        month=month.month + 1)
    return f"{day:%Y-%m-%d}", (day_number + 1) * 86_400.0, f"{month:%Y-%m}", next_month.timestamp()


def minute_window(now: float) -> tuple[int, float]:
    """The current minute's number and when it ends."""
    number = int(now // MINUTE)
    return number, (number + 1) * MINUTE


def dollars(amount: float) -> str:
    """$1,234.50, $5, $0.00651: a small budget in cents would read "$0.01 of $0.01"."""
    return f"${amount:,.2f}" if amount >= 10 else f"${amount:.4g}"


@functools.lru_cache(maxsize=4)  # the same minute's reset, on every answer of that minute
def rfc3339(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(slots=True)
class Admission:
    """What admission learned: the headers the answer carries, and the stream lease to give back at the end."""

    headers: list[tuple[str, str]]
    lease: tuple[str, str] | None = None  # (leases name, lease)


async def admit(state: SharedState, payers: tuple[Payer, ...], stream: bool, lease: str, now: float) -> Admission:
    """Refuse (GatewayError) or admit a request of a client key (`payers[0]`; its owner's budgets may follow), in
    one atomic step of the shared state: the budgets and the minute's tokens must be under their limits, the
    request is counted against the minute's requests and its stream holds a place, or nothing is counted."""
    key = payers[0]
    limits = key.limits
    minute, reset_at = minute_window(now)
    in_force = [(payer, budget) for payer in payers for budget in budgets(payer.scope, payer.limits, now)]
    reads = [(budget.counter, NEVER if payer.limits.over_budget_model else budget.limit) for payer, budget in in_force]
    if limits.tpm is not None:
        reads.append((f"tpm:{key.scope}:{minute}", limits.tpm))
    take = None if limits.rpm is None else Take(f"rpm:{key.scope}:{minute}", 1, limits.rpm, 2 * MINUTE)
    held = None if not stream or limits.streams is None else \
        Lease(f"streams:{key.scope}", lease, limits.streams, STREAM_LEASE_TTL)
    if not reads and take is None and held is None:
        return Admission([])
    counted = await state.admit(reads, take, held)
    if counted.refused == "read" and counted.index < len(in_force):
        payer, budget = in_force[counted.index]
        raise GatewayError(
            402, f"ccany: {payer.name} has used its {budget.name} budget ({dollars(counted.values[counted.index])} "
                 f"of {dollars(budget.limit)}); it resets at {rfc3339(budget.resets_at)}",
            retry_after=math.ceil(budget.resets_at - now), should_retry=False)
    headers: list[tuple[str, str]] = []
    if in_force:  # what the key's owner can read off any answer: each budget's USD left before this flow
        headers.append((BUDGET_HEADER, ", ".join(
            f"{payer.scope.split(':')[0]}:{budget.name}={max(0.0, budget.limit - spent):.6g}"
            for (payer, budget), spent in zip(in_force, counted.values, strict=False))))
    if limits.tpm is not None:
        headers += _rate_headers("tokens", limits.tpm, max(0, limits.tpm - int(counted.values[-1])), reset_at)
    if limits.rpm is not None:
        headers += _rate_headers("requests", limits.rpm, max(0, limits.rpm - int(counted.total)), reset_at)
    wait = max(1, math.ceil(reset_at - now))
    if counted.refused == "read":
        raise _too_many(f"ccany: {key.name} has used its {limits.tpm} tokens a minute", wait, headers)
    if counted.refused == "take":
        raise _too_many(f"ccany: {key.name} has sent its {limits.rpm} requests a minute", wait, headers)
    if counted.refused == "lease":
        raise _too_many(f"ccany: {key.name} already has {limits.streams} streams open", 1, headers)
    return Admission(headers, None if held is None else (held.name, held.lease))


async def over_budget_model(state: SharedState, payers: tuple[Payer, ...], now: float) -> str | None:
    """The model a request is routed as when a payer that names one has used up one of its budgets (the key's
    first, then its owner's); None while every such budget has money left."""
    in_force = [(payer, budget) for payer in payers if payer.limits.over_budget_model
                for budget in budgets(payer.scope, payer.limits, now)]
    if not in_force:
        return None
    spent = await state.read([budget.counter for _, budget in in_force])
    return next((payer.limits.over_budget_model for (payer, budget), value in zip(in_force, spent, strict=True)
                 if value >= budget.limit), None)


def used_by(payers: tuple[Payer, ...], usage: dict, cost_usd: float | None,
            ended: float) -> list[tuple[str, float, int]]:
    """What a finished flow adds to the counters (SharedState.count): its tokens in the minute it ended (the
    key's), its cost in every budget of the key and its owner."""
    key = payers[0]
    adds: list[tuple[str, float, int]] = []
    if key.limits.tpm is not None:
        tokens = sum(count for name in ("input_tokens", "cache_creation_input_tokens", "output_tokens")
                     if isinstance(count := usage.get(name), int) and count > 0)
        if tokens:
            adds.append((f"tpm:{key.scope}:{minute_window(ended)[0]}", tokens, 2 * MINUTE))
    if cost_usd:
        adds += [(budget.counter, cost_usd, budget.ttl) for payer in payers
                 for budget in budgets(payer.scope, payer.limits, ended)]
    return adds


def _rate_headers(kind: str, limit: int, remaining: int, reset_at: float) -> list[tuple[str, str]]:
    prefix = f"anthropic-ratelimit-{kind}"
    return [(f"{prefix}-limit", str(limit)), (f"{prefix}-remaining", str(remaining)),
            (f"{prefix}-reset", rfc3339(reset_at))]


def _too_many(message: str, wait: int, headers: list[tuple[str, str]]) -> GatewayError:
    return GatewayError(429, f"{message}; try again in {wait} s", retry_after=wait, should_retry=True,
                        headers=tuple(headers))
