"""mitmproxy answers some failures itself (upstream unreachable, upstream gone before answering, a request
it cannot parse) with an HTML page, and its `error` hook cannot replace that answer. Every client of this
gateway speaks the Anthropic API, so the page becomes an Anthropic error body instead: the one the gateway
chose for the flow in its `error` hook when there is one, else a generic one.
"""

from __future__ import annotations

import sys
import weakref

from mitmproxy import http
from mitmproxy.net.http import http1
from mitmproxy.proxy.layers.http import _http1

from ccany_addon.errors import client_status, error_json

_ORIGINAL_MAKE = _http1.make_error_response

# Keyed by the request object mitmproxy's HTTP/1 server layer shares with the flow.
_chosen: weakref.WeakKeyDictionary[http.Request, http.Response] = weakref.WeakKeyDictionary()


def answer_failure(request: http.Request, response: http.Response) -> None:
    """Use `response` if mitmproxy has to answer this request's failure itself."""
    _chosen[request] = response


def _anthropic_error_response(status_code: int, message: str = "") -> bytes:
    # mitmproxy calls this from its HTTP/1 server layer (`Http1Server.send` for a ResponseProtocolError), whose
    # `request` names the flow. Looking at the caller's frame costs only these rare failures; wrapping `send`
    # instead cost every chunk of every stream a call.
    server = sys._getframe(1).f_locals.get("self")
    request = server.request if isinstance(server, _http1.Http1Server) else None
    chosen = _chosen.pop(request, None) if request is not None else None
    if chosen is not None:
        chosen.headers["connection"] = "close"
        return http1.assemble_response(chosen)
    if status_code >= 500:
        message = f"ccany: the upstream did not answer: {message}"
    status = client_status(status_code)
    response = http.Response.make(
        status,
        error_json(status, message or http.status_codes.RESPONSES.get(status_code, "error")),
        {"content-type": "application/json", "connection": "close"},
    )
    return http1.assemble_response(response)


def install() -> None:
    _http1.make_error_response = _anthropic_error_response


def uninstall() -> None:
    _http1.make_error_response = _ORIGINAL_MAKE
