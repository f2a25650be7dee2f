"""Provider keys across a fleet of gateway processes sharing state (`ccany_redis_url`): a key one process saw
rate-limited cools down in all of them, and a key an upstream refused as unauthorised (401/403) is disabled in all
of them until an admin re-enables it in any one of them.

Each process writes what it learns to its own config DB, as if it had seen the failure itself, so that every
machine's admin pages show the key disabled and a restart keeps it so; an admin's re-enabling in one config DB
becomes a shared switch that the other processes write to theirs. A switch never touches a key added after it
(a key replaced under the same name is a new key), nor one disabled by hand (no `disabled_reason`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

from ccany_addon.config.addon import ConfigWatcher
from ccany_addon.config.snapshot import ConfigSnapshot, Provider, ProviderKey
from ccany_addon.limits.shared_state import KeySwitch, SharedState
from ccany_addon.upstreams.key_pool import KeyFailure, KeyPools, shared_name

logger = logging.getLogger("ccany")


class FleetKeys:
    def __init__(self, shared: Callable[[], SharedState], pools: KeyPools, snapshot: Callable[[], ConfigSnapshot],
                 config: ConfigWatcher | None, clock: Callable[[], float] = time.time) -> None:
        self.shared = shared
        self.pools = pools
        self.snapshot = snapshot
        self.config = config
        self.clock = clock
        self._seen: dict[str, KeySwitch] = {}  # key name → the latest switch this process made or acted on

    def failed(self, provider: Provider, failure: KeyFailure) -> Coroutine[Any, Any, None] | None:
        """What to tell the other processes of a key's failure (the caller runs it on the event loop)."""
        name = shared_name(provider, failure.key)
        if failure.disabled:
            self._seen[name] = switch = KeySwitch(False, self.clock(), failure.status, failure.disabled)
            return self.shared().switch(name, switch)
        if failure.cooldown:
            return self.shared().cool(name, self.clock() + failure.cooldown)
        return None

    async def refresh(self) -> None:
        """Every second: the keys other processes put on cooldown, switched, and the re-enablings seen here."""
        shared = self.shared()
        self.pools.shared_cooling = await shared.cooling()
        snapshot = self.snapshot()
        self.pools.forget_disabled(snapshot)
        for name in self._reenabled_here(snapshot):
            self._seen[name] = switch = KeySwitch(True, self.clock())
            logger.info(f"ccany: provider key {name} re-enabled: every gateway process sharing state may use it")
            await shared.switch(name, switch)
        for name, switch in (await shared.switches()).items():
            seen = self._seen.get(name)
            if seen is None or seen.at < switch.at:
                self._seen[name] = switch
                self._apply(name, switch, snapshot)

    def _reenabled_here(self, snapshot: ConfigSnapshot) -> list[str]:
        """Keys an admin re-enabled in this process's config DB (not those it re-enabled on a shared switch)."""
        if not self.pools.reenabled:
            return []
        ids, self.pools.reenabled = self.pools.reenabled, set()
        names = [shared_name(provider, key) for provider, key in _keys(snapshot) if key.id in ids]
        return [name for name in names if (seen := self._seen.get(name)) is None or not seen.enabled]

    def _apply(self, name: str, switch: KeySwitch, snapshot: ConfigSnapshot) -> None:
        enabled = {shared_name(provider, key): key for provider, key in _keys(snapshot)}
        if switch.enabled:
            if name not in enabled and self.config is not None:
                self.config.enable_switched_key(name, switch.at)
            return
        key: ProviderKey | None = enabled.get(name)
        if key is None or key.created_at > switch.at or self.pools.is_disabled(key):
            return
        self.pools.disable(key)
        reason = f"{switch.reason} (seen by another gateway process)"[:500]
        logger.warning(f"ccany: provider key {name} disabled: {reason}")
        if self.config is not None:
            self.config.record_key_failure(KeyFailure(key, switch.status, disabled=reason, message=switch.reason))


def _keys(snapshot: ConfigSnapshot) -> list[tuple[Provider, ProviderKey]]:
    return [(provider, key) for provider in snapshot.providers.values() for key in provider.keys]
