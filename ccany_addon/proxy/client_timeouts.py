"""Slow clients are closed (slowloris): a connection has `ccany_client_header_timeout` seconds to send its first
request's headers, and a request `ccany_client_body_timeout` seconds to send its body. mitmproxy's own
`tcp_timeout` only closes connections that send nothing at all, so a byte every few seconds held one open for
ever. Idle keep-alive connections between requests are left alone: Claude Code keeps them for minutes."""

from __future__ import annotations

import asyncio
import logging
import weakref
from typing import Any

from mitmproxy import connection, ctx, http

from ccany_addon.config.options import declare
from ccany_addon.proxy import mitm_compat
from ccany_addon.proxy.option_checks import require_bounds

logger = logging.getLogger("ccany")


class ClientTimeouts:
    def __init__(self) -> None:
        self._headers: dict[str, asyncio.TimerHandle] = {}  # by client connection id
        self._bodies: weakref.WeakKeyDictionary[http.HTTPFlow, asyncio.TimerHandle] = weakref.WeakKeyDictionary()

    def load(self, loader: Any) -> None:
        declare(loader, "timeouts")

    def configure(self, updated: set[str]) -> None:
        require_bounds(updated, (), ("ccany_client_header_timeout", "ccany_client_body_timeout"))

    def client_connected(self, client: connection.Client) -> None:
        if seconds := ctx.options.ccany_client_header_timeout:
            self._headers[client.id] = asyncio.get_running_loop().call_later(
                seconds, self._close, client, f"no request headers within {seconds} s"
            )

    def client_disconnected(self, client: connection.Client) -> None:
        if (timer := self._headers.pop(client.id, None)) is not None:
            timer.cancel()

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        self.client_disconnected(flow.client_conn)
        if (seconds := ctx.options.ccany_client_body_timeout) and flow.response is None and not flow.error:
            self._bodies[flow] = asyncio.get_running_loop().call_later(
                seconds, self._close, flow.client_conn, f"request body not complete within {seconds} s"
            )

    def request(self, flow: http.HTTPFlow) -> None:
        if (timer := self._bodies.pop(flow, None)) is not None:
            timer.cancel()

    error = request

    def _close(self, client: connection.Client, reason: str) -> None:
        self._headers.pop(client.id, None)
        peer = client.peername[0] if client.peername else "?"
        logger.info(f"ccany: closing the connection of {peer}: {reason}")
        mitm_compat.close_client(client, f"ccany: {reason}")
