"""Who may use the gateway: client access keys when any exist, loopback clients only when none do."""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Mapping
from datetime import UTC, datetime

from ccany_addon.anthropic_api.errors import GatewayError
from ccany_addon.config.secrets import client_key_hash
from ccany_addon.config.snapshot import ClientKey, ConfigSnapshot


def presented_key(headers: Mapping[str, str]) -> str | None:
    """The key a client sent: `x-api-key` (SDK 0.x/1.x) or `Authorization: Bearer` (SDK 2.x, Claude Code)."""
    if key := headers.get("x-api-key", "").strip():
        return key
    scheme, _, token = headers.get("authorization", "").partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


@functools.lru_cache(maxsize=1024)  # asked for every request of a gateway without client keys
def is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address.removeprefix("::ffff:")).is_loopback
    except ValueError:
        return False


def authenticate(snapshot: ConfigSnapshot, key: str | None, client_address: str,
                 now: datetime | None = None) -> ClientKey | None:
    """The client key that admits this request (None: admitted as a loopback client); raises the 401/403."""
    if not snapshot.client_keys:
        if is_loopback(client_address):
            return None
        raise GatewayError(403, "This gateway has no client keys yet and serves only clients on this machine; "
                                "an admin must create a client key")
    if not key:
        raise GatewayError(401, "This gateway needs a client key: send it as x-api-key or Authorization: Bearer")
    client = snapshot.client_keys.get(client_key_hash(key))
    if client is None:
        raise GatewayError(401, "Invalid client key")
    if not client.enabled:
        raise GatewayError(401, f"Client key {client.name!r} is disabled")
    if client.expires_at and _expired(client.expires_at, now or datetime.now(UTC)):
        raise GatewayError(401, f"Client key {client.name!r} expired on {client.expires_at}")
    return client


def authorize_model(client: ClientKey | None, model: str) -> None:
    if client is not None and not client.allows(model):
        # 400, as the gateway protocol has it: the CLI shows it and does not retry
        raise GatewayError(400, f"Client key {client.name!r} may not use model {model!r}", should_retry=False)


def _expired(expires_at: str, now: datetime) -> bool:
    try:
        moment = datetime.fromisoformat(expires_at.replace("Z", "+00:00"))
    except ValueError:
        return True  # an unreadable expiry admits nobody
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    if len(expires_at.strip()) == 10:  # a date: valid through that whole day
        moment = moment.replace(hour=23, minute=59, second=59)
    return now > moment
