"""What a client key may use (a leaf: the config snapshot reads it from `client_keys`, the limits addon enforces
it). None: no limit of that kind."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, fields

LIMIT_COLUMNS = ("rpm_limit", "tpm_limit", "max_streams", "daily_budget_usd", "monthly_budget_usd")
BUDGET_COLUMNS = ("daily_budget_usd", "monthly_budget_usd")  # what a user (all their keys together) may have
OVER_BUDGET_COLUMN = "over_budget_model"  # of a key and of a user: the Claude model to answer with over a budget


@dataclass(frozen=True, slots=True)
class KeyLimits:
    rpm: int | None = None  # requests a minute
    tpm: int | None = None  # tokens a minute: input (cache writes included, cache reads not) and output
    streams: int | None = None  # streams at once
    daily_usd: float | None = None  # spend per UTC day
    monthly_usd: float | None = None  # spend per UTC month
    over_budget_model: str | None = None  # over a budget, requests go to this (cheaper) model instead of refused

    @classmethod
    def from_row(cls, row: dict) -> KeyLimits:
        """A `client_keys` row's limits; a row from before config DB v8 has none."""
        return cls(*(row.get(column) for column in LIMIT_COLUMNS), over_budget_model=row.get(OVER_BUDGET_COLUMN))

    @classmethod
    def budgets_of(cls, row: dict) -> KeyLimits:
        """A `users` row's budgets."""
        return cls(daily_usd=row.get("daily_budget_usd"), monthly_usd=row.get("monthly_budget_usd"),
                   over_budget_model=row.get(OVER_BUDGET_COLUMN))

    def __bool__(self) -> bool:
        return any(getattr(self, f.name) is not None for f in fields(self))


def key_scope(key_hash: str) -> str:
    """A client key's name in the counters gateway processes share: the same on every machine the key was imported
    to (row ids may differ between config DBs), and nothing that tells the key or its hash."""
    return "key:" + hashlib.sha256(b"ccany-limits:" + key_hash.encode()).hexdigest()[:16]


def user_scope(username: str) -> str:
    return f"user:{username}"


@dataclass(frozen=True, slots=True)
class Payer:
    """Whose limits a request is held to: a client key (`key:3`), or the user owning it (`user:1`)."""

    scope: str  # `key_scope`, `user_scope`: counters are named by it
    name: str  # for messages: "client key 'laptop'", "user 'ada'"
    limits: KeyLimits
