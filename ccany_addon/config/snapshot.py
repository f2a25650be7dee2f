"""An immutable picture of the config DB, read in one go and swapped in whole: requests never touch the DB."""

from __future__ import annotations

import fnmatch
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import urlsplit

import sqlite_utils

from ccany_addon.config.schema import SETTINGS
from ccany_addon.config.secrets import Cipher, SecretError
from ccany_addon.costs.prices import PriceOverride
from ccany_addon.limits.key_limits import KeyLimits, Payer, key_scope, user_scope
from ccany_addon.upstreams.models import TIERS, CapabilityOverride

logger = logging.getLogger("ccany")


@dataclass(frozen=True, slots=True)
class ProviderKey:
    id: int
    name: str
    secret: str
    cooling_until: float = 0.0  # epoch seconds: a cooldown the gateway recorded (survives restarts)
    created_at: float = 0.0  # epoch seconds: a key disabled in the fleet before it was added is not this one

    @property
    def label(self) -> str:
        return f"{self.id}:{self.name}"


@dataclass(frozen=True, slots=True)
class Provider:
    id: int
    name: str
    kind: str
    scheme: str
    host: str
    port: int
    path_prefix: str
    api_version: str | None
    models: dict[str, str]  # tier → upstream model
    keys: tuple[ProviderKey, ...]  # decrypted, enabled
    key_strategy: str = "round-robin"
    fallback: tuple[str, ...] = ()  # providers to use while every key of this one is cooling down

    @property
    def secrets(self) -> tuple[str, ...]:
        return tuple(key.secret for key in self.keys)


@dataclass(frozen=True, slots=True)
class Route:
    pattern: str
    provider: Provider
    upstream_model: str | None
    scenario: str | None = None  # a condition on the request besides the model pattern

    def matches(self, model: str) -> bool:
        return fnmatch.fnmatchcase(model.lower(), self.pattern.lower())


@dataclass(frozen=True, slots=True)
class ClientKey:
    id: int
    name: str
    expires_at: str | None
    allowed_models: tuple[str, ...]
    enabled: bool
    limits: KeyLimits = KeyLimits()
    owner: str | None = None  # the user whose key it is (their budgets cover all their keys)
    owner_limits: Payer | None = None
    scope: str = ""  # its name in the shared counters (`key_scope`)

    @property
    def payers(self) -> tuple[Payer, ...]:
        """Whose limits a request of this key is held to: the key's own, then its owner's budgets."""
        own = Payer(self.scope or f"key:{self.id}", f"client key {self.name!r}", self.limits)
        return (own,) if self.owner_limits is None else (own, self.owner_limits)

    def allows(self, model: str) -> bool:
        return not self.allowed_models or any(
            fnmatch.fnmatchcase(model.lower(), pattern.lower()) for pattern in self.allowed_models
        )


@dataclass(frozen=True, slots=True)
class ConfigSnapshot:
    providers: dict[str, Provider] = field(default_factory=dict)
    routes: tuple[Route, ...] = ()
    client_keys: dict[str, ClientKey] = field(default_factory=dict)  # by key hash
    settings: dict[str, object] = field(default_factory=dict)
    problems: tuple[str, ...] = ()
    capabilities: tuple[CapabilityOverride, ...] = ()
    prices: tuple[PriceOverride, ...] = ()  # a provider's own first, then by id

    def route(self, model: str, scenarios: frozenset[str] = frozenset()) -> Route | None:
        """The first route (by priority) whose pattern matches and whose scenario, if any, the request meets."""
        return next(self.matching_routes(model, scenarios), None)

    def matching_routes(self, model: str, scenarios: frozenset[str] = frozenset()) -> Iterator[Route]:
        """Every route that applies to the request, by priority (a fallback looks for its own among them)."""
        return (route for route in self.routes
                if route.matches(model) and (route.scenario is None or route.scenario in scenarios))

    @property
    def secrets(self) -> tuple[str, ...]:
        """Every provider key, each once: the flow log searches every body it keeps for each of them."""
        return tuple(dict.fromkeys(secret for provider in self.providers.values() for secret in provider.secrets))

    @property
    def key_ids(self) -> set[int]:
        return {key.id for provider in self.providers.values() for key in provider.keys}


def read_snapshot(db: sqlite_utils.Database, cipher: Cipher | None) -> ConfigSnapshot:
    problems: list[str] = []
    keys: dict[int, list[ProviderKey]] = {}
    query = ("SELECT id, provider_id, name, secret, cooling_until, created_at FROM provider_keys WHERE enabled "
             "ORDER BY id")
    for key_id, provider_id, name, secret, cooling_until, created_at in db.execute(query).fetchall():
        try:
            if cipher is None:
                raise SecretError("no master key")
            key = ProviderKey(key_id, name, cipher.decrypt(secret), utc_seconds(cooling_until), utc_seconds(created_at))
            keys.setdefault(provider_id, []).append(key)
        except SecretError as error:
            problems.append(f"a key of provider {provider_id} cannot be used: {error}")
    providers: dict[str, Provider] = {}
    by_id: dict[int, Provider] = {}
    for row in db["providers"].rows_where("enabled"):
        url = urlsplit(row["base_url"])
        if url.scheme not in ("http", "https") or not url.hostname:
            problems.append(f"provider {row['name']}: base_url {row['base_url']!r} is not an http(s) URL")
            continue
        provider = Provider(
            id=row["id"], name=row["name"], kind=row["kind"], scheme=url.scheme, host=url.hostname,
            port=url.port or (443 if url.scheme == "https" else 80), path_prefix=url.path.rstrip("/"),
            api_version=row["api_version"],
            models={tier: row[f"{tier}_model"] for tier in TIERS if row[f"{tier}_model"]},
            keys=tuple(keys.get(row["id"], ())),
            key_strategy=row["key_strategy"],
            fallback=tuple(name.strip() for name in (row["fallback"] or "").split(",") if name.strip()),
        )
        providers[provider.name] = by_id[provider.id] = provider
    routes = tuple(
        Route(row["pattern"], by_id[row["provider_id"]], row["upstream_model"], row["scenario"])
        for row in db["routes"].rows_where("enabled", order_by="priority, id")
        if row["provider_id"] in by_id
    )
    client_keys = {}
    owners = {row["id"]: row for row in db.execute_returning_dicts(
        "SELECT id, username, daily_budget_usd, monthly_budget_usd, over_budget_model FROM users")}
    for row in db["client_keys"].rows:
        owner = owners.get(row["user_id"])
        budgets = KeyLimits.budgets_of(owner) if owner else KeyLimits()
        client_keys[row["key_hash"]] = ClientKey(
            row["id"], row["name"], row["expires_at"], allowed_models(row["allowed_models"]), bool(row["enabled"]),
            KeyLimits.from_row(row), owner["username"] if owner else None,
            Payer(user_scope(owner["username"]), f"user {owner['username']!r}", budgets) if owner and budgets else None,
            key_scope(row["key_hash"]))
    settings: dict[str, object] = {}
    for row in db["settings"].rows:
        kind = SETTINGS.get(row["name"])
        if kind is None or row["value"] is None:
            continue
        try:
            settings[row["name"]] = setting_value(kind, row["value"])
        except ValueError:
            problems.append(f"setting {row['name']}={row['value']!r} is not a {kind.__name__}")
    capabilities = tuple(CapabilityOverride.from_row(row) for row in db["model_capabilities"].rows_where(order_by="id"))
    prices = tuple(PriceOverride.from_row(row) for row in db["model_prices"].rows_where(order_by="provider = '', id"))
    return ConfigSnapshot(providers, routes, client_keys, settings, tuple(problems), capabilities, prices)


def utc_seconds(text: str | None) -> float:
    """Epoch seconds of the config DB's UTC `YYYY-MM-DD HH:MM:SS` text (0 for none)."""
    if not text:
        return 0.0
    try:
        return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()
    except ValueError:
        return 0.0


def allowed_models(stored: str | None) -> tuple[str, ...]:
    """A client key's model patterns: a JSON list (as the CLI and admin page write them), or a comma list typed
    into Datasette's row editor."""
    if not stored:
        return ()
    try:
        return tuple(json.loads(stored))
    except ValueError:
        return tuple(part.strip() for part in stored.split(",") if part.strip())


def setting_value(kind: type, value: str) -> object:
    """A setting row's text as its type (ValueError when it is not one); import checks values with it too."""
    if kind is bool:
        lowered = value.strip().lower()
        if lowered not in ("true", "false", "1", "0", "yes", "no", "on", "off"):
            raise ValueError(value)
        return lowered in ("true", "1", "yes", "on")
    return kind(value)
