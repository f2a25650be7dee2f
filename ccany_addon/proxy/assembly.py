"""The addons that make up ccany, in hook order: the graceful stop first (its `done` must run while the others
are whole), the client timeouts, the config, the gateway, the flow log, the limits (after the flow log, which
prices a flow before the limits count its cost), the keep-alive, and last of all the key injector."""

from __future__ import annotations

from typing import Any

from mitmproxy import ctx

from ccany_addon.config.addon import ConfigWatcher
from ccany_addon.flowlog.addon import FlowLog
from ccany_addon.flowlog.shutdown import GracefulStop
from ccany_addon.limits.addon import Limits
from ccany_addon.proxy.client_timeouts import ClientTimeouts
from ccany_addon.proxy.gateway import Gateway
from ccany_addon.proxy.keepalive import KeepAlive
from ccany_addon.proxy.key_injector import KeyInjector


class RunsLast:
    """Puts its addon at the very end of mitmproxy's chain when the proxy starts. Script addons come before
    mitmproxy's own: mitmweb's view shows a request as the `request` hooks before it leave it, so the upstream key
    must go in after the view has taken its look."""

    def __init__(self, addon: Any) -> None:
        self.addon = addon

    def running(self) -> None:
        if ctx.master.addons.get(type(self.addon).__name__.lower()) is None:
            ctx.master.addons.add(self.addon)


def build_addons() -> list[object]:
    config = ConfigWatcher()
    gateway = Gateway(config)
    return [GracefulStop(flowlog := FlowLog(gateway)), ClientTimeouts(), config, gateway, flowlog, Limits(gateway),
            KeepAlive(gateway), RunsLast(KeyInjector(gateway))]
