"""Remembers an upstream that refused connections, so later requests get an Anthropic error (with their
request-id) from the `request` hook instead of mitmproxy's own answer; a background probe notices when it
comes back. The hooks stay synchronous: nothing here waits on the network in a request's path."""

from __future__ import annotations

import asyncio
import contextlib
import logging

logger = logging.getLogger("ccany")

PROBE_INTERVAL = 1.0
PROBE_TIMEOUT = 2.0


class Reachability:
    def __init__(self) -> None:
        self.down_reason: str | None = None
        self._down: tuple[str, int] | None = None
        self._probe: asyncio.Task | None = None

    def down_reason_for(self, host: str, port: int) -> str | None:
        return self.down_reason if self._down == (host, port) else None

    def mark_down(self, host: str, port: int, reason: str) -> None:
        if self.down_reason is None:
            logger.warning(f"ccany: upstream {host}:{port} is unreachable ({reason}); probing until it is back")
        self.down_reason = reason
        self._down = (host, port)
        if self._probe is None or self._probe.done():
            self._probe = asyncio.get_running_loop().create_task(self._wait_until_up(host, port))

    def stop(self) -> None:
        if self._probe is not None:
            self._probe.cancel()
        self.down_reason = None

    async def _wait_until_up(self, host: str, port: int) -> None:
        while self.down_reason is not None:
            await asyncio.sleep(PROBE_INTERVAL)
            try:
                _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), PROBE_TIMEOUT)
            except (OSError, TimeoutError) as error:
                self.down_reason = str(error) or type(error).__name__
                continue
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            logger.info(f"ccany: upstream {host}:{port} is reachable again")
            self.down_reason = None
