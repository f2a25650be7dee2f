"""The upstream request, written over the client's in place: a fresh header set (nothing of the client's, no
credentials: the key injector adds the key last), the upstream's origin, path and body."""

from __future__ import annotations

from mitmproxy import http

from ccany_addon.proxy.replies import header_fields
from ccany_addon.upstreams.dialects import Outgoing
from ccany_addon.upstreams.routing import Upstream

USER_AGENT = "ccany-addon/0.1"


def rewrite(request: http.Request, upstream: Upstream, outgoing: Outgoing, stream: bool) -> None:
    host = upstream.host if upstream.port in (80, 443) else upstream.name
    http2 = request.is_http2 or request.is_http3  # these carry the host as :authority, not a header
    # A fresh header set: nothing of the client's (credentials, cookies) reaches the upstream; the anthropic kind
    # keeps only the protocol's own headers (version, betas).
    request.headers = header_fields(
        *(() if http2 else (("host", host),)),
        ("content-type", "application/json"),
        ("content-length", str(len(outgoing.body))),
        ("accept", "text/event-stream" if stream else "application/json"),
        ("user-agent", USER_AGENT),
        *outgoing.headers,
    )
    # Straight to the request's data: the setters of host and port each work out the Host header and authority
    # again (7 µs in all), and the headers are already whole.
    data = request.data
    data.method, data.scheme = b"POST", upstream.scheme.encode()
    data.path = outgoing.path.encode("utf-8", "surrogateescape")
    data.host, data.port = upstream.host, upstream.port
    if http2 or data.authority:
        data.authority = host.encode()
    request.raw_content = outgoing.body  # its length is in the headers above (`.content =` costs 6 µs to say so)


def url(upstream: Upstream, path: str) -> str:
    """The upstream URL as the flow log shows it (never with credentials: keys travel in headers)."""
    return f"{upstream.scheme}://{upstream.host}:{upstream.port}{path}"
