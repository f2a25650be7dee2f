"""Keep-alive for silent streams: while a reasoning model thinks or a local model prefills, the upstream sends
nothing after its headers, and Claude Code aborts a byte-idle stream (300 s by default) and sends the whole request
again. mitmproxy calls the stream translator only when upstream bytes arrive, so nothing in it can speak during a
silence; this addon looks at each streamed answer every half interval and, when the translator sent the client
nothing since its last look, sends an Anthropic `ping` itself (after a `message_start`, which a converting stream
can send before the upstream says anything). The bytes go beside mitmproxy's own writes (mitm_compat), for plain
HTTP/1 clients, as Claude Code's are when it talks to a local gateway."""

from __future__ import annotations

import asyncio
import logging
import weakref
from typing import Any

from mitmproxy import ctx, http

from ccany_addon.config.options import declare
from ccany_addon.proxy import mitm_compat
from ccany_addon.proxy.gateway import Gateway
from ccany_addon.proxy.option_checks import require_bounds
from ccany_addon.upstreams.dialects import StreamTranslator

logger = logging.getLogger("ccany")


class KeepAlive:
    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self._timers: weakref.WeakKeyDictionary[http.HTTPFlow, asyncio.TimerHandle] = weakref.WeakKeyDictionary()

    def load(self, loader: Any) -> None:
        declare(loader, "keepalive")

    def configure(self, updated: set[str]) -> None:
        require_bounds(updated, non_negative=("ccany_keepalive_interval",))

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        state = self.gateway.state(flow)
        interval = ctx.options.ccany_keepalive_interval
        if interval and state is not None and state.translator is not None:
            self._watch(flow, state.translator, state.translator.sends, interval / 2)

    def response(self, flow: http.HTTPFlow) -> None:
        if (timer := self._timers.pop(flow, None)) is not None:
            timer.cancel()

    error = response

    def _watch(self, flow: http.HTTPFlow, stream: StreamTranslator, seen: int, every: float) -> None:
        self._timers[flow] = asyncio.get_running_loop().call_later(every, self._look, flow, stream, seen, every)

    def _look(self, flow: http.HTTPFlow, stream: StreamTranslator, seen: int, every: float) -> None:
        self._timers.pop(flow, None)
        if stream.ended or flow.error is not None or not flow.live:
            return
        try:
            silent = stream.sends == seen
            if silent and (data := b"".join(stream.idle())) and not mitm_compat.write_to_client(flow, data):
                return  # a client this cannot reach (TLS, HTTP/2): no more looks
            self._watch(flow, stream, stream.sends, every)
        except Exception as error:  # a keep-alive must never take a stream down
            logger.warning(f"ccany: keep-alive stopped for a stream: {type(error).__name__}")
