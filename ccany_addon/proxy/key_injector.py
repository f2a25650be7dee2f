"""The upstream key goes on a forwarded request last of all addons (after mitmweb's view has taken its copy of the
request), and is hidden again once sent, so neither mitmweb, a saved flow nor a log line ever holds it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mitmproxy import http

from ccany_addon.proxy.fail_closed import fail_closed
from ccany_addon.upstreams.kinds import KEY_HEADERS, REDACTED

if TYPE_CHECKING:
    from ccany_addon.proxy.gateway import Gateway

_KEY_HEADER_NAMES = frozenset(name.encode() for name in KEY_HEADERS)
_REDACTED = REDACTED.encode()


class KeyInjector:
    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    @fail_closed
    def request(self, flow: http.HTTPFlow) -> None:
        if (header := self.gateway.upstream_key(flow)) is not None:
            name, value = header
            flow.request.headers[name] = value

    def internal_error(self, flow: http.HTTPFlow, hook: str, error: Exception) -> None:
        self.gateway.internal_error(flow, hook, error)


def redact(flow: http.HTTPFlow) -> None:
    headers = flow.request.headers
    if any(name.lower() in _KEY_HEADER_NAMES for name, _ in headers.fields):
        headers.fields = tuple(
            (name, _REDACTED if name.lower() in _KEY_HEADER_NAMES else value) for name, value in headers.fields
        )
