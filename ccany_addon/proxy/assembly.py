"""The addons that make up ccany, in hook order: the graceful stop first (its `done` must run while the others
are whole), the client timeouts, the config, the gateway, the flow log, then the keep-alive."""

from __future__ import annotations

from ccany_addon.config.addon import ConfigWatcher
from ccany_addon.flowlog.addon import FlowLog
from ccany_addon.flowlog.shutdown import GracefulStop
from ccany_addon.proxy.client_timeouts import ClientTimeouts
from ccany_addon.proxy.gateway import Gateway
from ccany_addon.proxy.keepalive import KeepAlive


def build_addons() -> list[object]:
    config = ConfigWatcher()
    gateway = Gateway(config)
    return [GracefulStop(flowlog := FlowLog(gateway)), ClientTimeouts(), config, gateway, flowlog,
            KeepAlive(gateway)]
