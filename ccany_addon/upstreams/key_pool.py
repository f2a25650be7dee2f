"""Key pools: which of a provider's keys a request uses, and what an upstream failure does to that key.

A 429 or 5xx puts the key on cooldown for as long as the upstream asked (`retry-after`, `retry-after-ms`,
OpenAI's `x-ratelimit-reset-*`, Anthropic's `anthropic-ratelimit-*-reset`, Gemini's `RetryInfo`), or a default;
a 401/403 disables it until an admin re-enables it in the config DB. Pure state with an injectable clock.
"""

from __future__ import annotations

import itertools
import math
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from email.utils import parsedate_to_datetime

from ccany_addon.config.snapshot import ConfigSnapshot, Provider, ProviderKey
from ccany_addon.util.json_codec import loads

DEFAULT_COOLDOWN = {429: 60.0, 500: 15.0}  # seconds, when the upstream does not say (5xx share 500's)
MAX_COOLDOWN = 3600.0
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


@dataclass(frozen=True, slots=True)
class KeyFailure:
    """What an upstream failure did to a key: a cooldown in seconds, or disabled (auth) with a reason."""

    key: ProviderKey
    status: int
    cooldown: float = 0.0
    disabled: str | None = None
    message: str = ""


def is_key_failure(status: int) -> bool:
    return status in (401, 403, 429) or status >= 500


def shared_name(provider: Provider, key: ProviderKey) -> str:
    """A key's name in the state gateway processes share: the same on every machine (ids may differ)."""
    return f"{provider.name}/{key.name}"


class KeyPools:
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        # keys other gateway processes saw fail (the limits addon refreshes it from the shared state): name → until
        self.shared_cooling: dict[str, float] = {}
        self._cooling_until: dict[int, float] = {}
        self._disabled: dict[int, bool] = {}  # key id → the config DB has since listed it as disabled
        self.reenabled: set[int] = set()  # keys an admin re-enabled since the limits addon last looked (to share it)
        self._turn: dict[str, itertools.count] = {}

    def pick(self, provider: Provider) -> ProviderKey | None:
        """A healthy key (round-robin or fill-first), or None when every key is cooling down or disabled."""
        healthy = [key for key in provider.keys if self._ready_in(provider, key) == 0]
        if not healthy:
            return None
        if provider.key_strategy == "fill-first":
            return healthy[0]
        turn = next(self._turn.setdefault(provider.name, itertools.count()))
        return healthy[turn % len(healthy)]

    def ready_in(self, provider: Provider) -> float | None:
        """Seconds until the provider has a healthy key (0: it has one now; None: none will recover alone)."""
        waits = [wait for key in provider.keys if (wait := self._ready_in(provider, key)) is not None]
        return min(waits) if waits else None

    def _ready_in(self, provider: Provider, key: ProviderKey) -> float | None:
        if key.id in self._disabled:
            return None
        until = max(self._cooling_until.get(key.id, 0.0), key.cooling_until,
                    self.shared_cooling.get(shared_name(provider, key), 0.0) if self.shared_cooling else 0.0)
        return max(0.0, until - self.clock())

    def failed(self, key: ProviderKey, status: int, headers: Mapping[str, str], body: bytes,
               message: str) -> KeyFailure:
        if status in (401, 403):
            reason = f"upstream answered {status}: {message}"[:500]
            self.disable(key)
            return KeyFailure(key, status, disabled=reason, message=message)
        now = self.clock()
        asked = cooldown_from(headers, body, now)
        cooldown = min(asked if asked is not None else DEFAULT_COOLDOWN[429 if status == 429 else 500], MAX_COOLDOWN)
        self._cooling_until[key.id] = max(self._cooling_until.get(key.id, 0.0), now + cooldown)
        return KeyFailure(key, status, cooldown=cooldown, message=message)

    def disable(self, key: ProviderKey) -> None:
        """Out of use until the config DB lists the key as disabled and then as enabled again."""
        self._disabled[key.id] = False

    def is_disabled(self, key: ProviderKey) -> bool:
        return key.id in self._disabled

    def forget_disabled(self, snapshot: ConfigSnapshot) -> None:
        """A disabled key is usable again once the config DB has listed it as disabled and then as enabled
        (an admin re-enabled it); until the gateway's own write reaches the DB, it stays disabled."""
        if not self._disabled:  # the usual case: nothing to look up, on every request
            return
        enabled = snapshot.key_ids
        for key_id, seen_disabled in list(self._disabled.items()):
            if key_id not in enabled:
                self._disabled[key_id] = True
            elif seen_disabled:
                del self._disabled[key_id]
                self.reenabled.add(key_id)


def cooldown_from(headers: Mapping[str, str], body: bytes, now: float) -> float | None:
    """The wait an upstream asked for, in seconds, or None when it did not say it usably (an upstream's word is
    untrusted input: `retry-after: nan` or `1e400` must not become a cooldown)."""
    wait = _asked_wait(headers, body, now)
    return wait if wait is not None and math.isfinite(wait) else None


def _asked_wait(headers: Mapping[str, str], body: bytes, now: float) -> float | None:
    lowered = {name.lower(): value for name, value in headers.items()}
    if (value := lowered.get("retry-after-ms")) and _is_number(value):
        return float(value) / 1000
    if value := lowered.get("retry-after"):
        if _is_number(value):
            return float(value)
        try:
            return parsedate_to_datetime(value).timestamp() - now
        except (TypeError, ValueError):
            pass
    resets = [duration(value) for name, value in lowered.items()
              if name.startswith("x-ratelimit-reset-") and _exhausted(lowered, name, "x-ratelimit-reset-")]
    resets += [timestamp(value) - now for name, value in lowered.items()
               if name.startswith("anthropic-ratelimit-") and name.endswith("-reset")]
    if waits := [wait for wait in resets if wait is not None and wait > 0]:
        return max(waits)
    return _retry_delay(body)


def _exhausted(headers: dict[str, str], reset_name: str, prefix: str) -> bool:
    """OpenAI sends resets for every limit; only those whose remaining count is 0 explain the 429."""
    remaining = headers.get("x-ratelimit-remaining-" + reset_name[len(prefix):])
    return remaining is None or remaining.strip() in ("0", "0.0")


def duration(text: str) -> float | None:
    """OpenAI's reset durations: `1s`, `6m0s`, `20ms`, `1h2m3.5s`."""
    parts = _DURATION_PART.findall(text.strip())
    if not parts or "".join(n + u for n, u in parts) != text.strip():
        return float(text) if _is_number(text) else None
    return sum(float(number) * _UNIT_SECONDS[unit] for number, unit in parts)


def timestamp(text: str) -> float | None:
    try:
        return datetime.fromisoformat(text.strip().replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _retry_delay(body: bytes) -> float | None:
    """Gemini puts the wait in the error body: `details: [{"@type": "…RetryInfo", "retryDelay": "37s"}]`."""
    if b"retryDelay" not in body:
        return None
    try:
        parsed = loads(body)
    except ValueError:
        return None
    error = (parsed[0] if isinstance(parsed, list) and parsed else parsed) or {}
    details = error.get("error", {}).get("details", []) if isinstance(error, dict) else []
    for detail in details if isinstance(details, list) else ():
        if isinstance(detail, dict) and isinstance(delay := detail.get("retryDelay"), str):
            return duration(delay)
    return None


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
