"""What a provider key's failure means for the client: the key goes on cooldown (or is disabled), the config DB
hears of it, and the client learns when a retry will find a healthy key (or that none will come by itself)."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

from mitmproxy import http

from ccany_addon.anthropic_api.errors import GatewayError
from ccany_addon.config.snapshot import ConfigSnapshot, Provider, ProviderKey
from ccany_addon.upstreams.key_pool import KeyFailure, KeyPools

logger = logging.getLogger("ccany")


class KeyFailures:
    def __init__(self, pools: KeyPools, snapshot: Callable[[], ConfigSnapshot],
                 record: Callable[[KeyFailure], None]) -> None:
        self.pools = pools
        self.snapshot = snapshot
        self.record = record  # the config DB keeps failures (disabled keys survive a restart)
        # tells the other gateway processes (the limits addon's shared state)
        self.on_failure: Callable[[Provider, KeyFailure], None] | None = None

    def failed(self, request_id: str, provider: Provider, key: ProviderKey, response: http.Response, raw: bytes,
               error: GatewayError) -> GatewayError:
        failure = self.pools.failed(key, response.status_code, response.headers, raw, error.message)
        self.record(failure)
        if self.on_failure is not None:
            self.on_failure(provider, failure)
        what = f"disabled ({failure.disabled})" if failure.disabled else f"cooling down for {failure.cooldown:.0f} s"
        logger.warning(f"ccany: {request_id}: key {key.label} of provider {provider.name} {what}")
        wait = self.ready_in(provider)
        if wait is None:
            error.should_retry = False
            return error
        if failure.disabled:
            message = (f"ccany: provider {provider.name} refused key {key.label} "
                       f"(HTTP {response.status_code}); it is disabled until an admin re-enables it; "
                       "a retry uses another key")
            error = GatewayError(500, message)
        error.retry_after, error.should_retry = math.ceil(wait), True
        return error

    def ready_in(self, provider: Provider) -> float | None:
        """Seconds until the provider, or one of its fallbacks, has a healthy key (None: never by itself)."""
        candidates = [provider, *filter(None, map(self.snapshot().providers.get, provider.fallback))]
        waits = [wait for candidate in candidates if (wait := self.pools.ready_in(candidate)) is not None]
        return min(waits) if waits else None

    def none_healthy(self, provider: Provider) -> GatewayError:
        wait = self.ready_in(provider)
        if wait is None:
            return GatewayError(401, f"provider {provider.name} has no usable key: every key is disabled or "
                                     "missing; re-enable or add one in the config DB", should_retry=False)
        return GatewayError(429, f"ccany: every key of provider {provider.name} is cooling down; "
                                 f"one is ready in {math.ceil(wait)} s", retry_after=math.ceil(wait),
                            should_retry=True)
