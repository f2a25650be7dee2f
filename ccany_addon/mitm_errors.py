"""mitmproxy answers some failures itself (upstream unreachable, upstream gone before answering, a request
it cannot parse) with an HTML page, and its `error` hook cannot replace that answer. Every client of this
gateway speaks the Anthropic API, so the page becomes an Anthropic error body instead: the one the gateway
chose for the flow in its `error` hook when there is one, else a generic one.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from typing import Any

from mitmproxy import http
from mitmproxy.connection import ConnectionState
from mitmproxy.net.http import http1
from mitmproxy.proxy import commands
from mitmproxy.proxy.layers.http import ResponseProtocolError, _http1

from ccany_addon.errors import client_status, error_json

_ORIGINAL_MAKE = _http1.make_error_response
_ORIGINAL_SEND = _http1.Http1Server.send

# Keyed by the request object mitmproxy's HTTP/1 server layer shares with the flow.
_chosen: weakref.WeakKeyDictionary[http.Request, http.Response] = weakref.WeakKeyDictionary()


def answer_failure(request: http.Request, response: http.Response) -> None:
    """Use `response` if mitmproxy has to answer this request's failure itself."""
    _chosen[request] = response


def _anthropic_error_response(status_code: int, message: str = "") -> bytes:
    if status_code >= 500:
        message = f"ccany: the upstream did not answer: {message}"
    status = client_status(status_code)
    response = http.Response.make(
        status,
        error_json(status, message or http.status_codes.RESPONSES.get(status_code, "error")),
        {"content-type": "application/json", "connection": "close"},
    )
    return http1.assemble_response(response)


def _send(self: _http1.Http1Server, event: Any) -> Iterator[commands.Command]:
    # A plain function handing back mitmproxy's own generator: this runs for every chunk of every stream,
    # and a wrapping generator would add a frame to each of them.
    if isinstance(event, ResponseProtocolError) and self.request is not None:
        chosen = _chosen.pop(self.request, None)
        if chosen is not None and not self.response and self.conn.state & ConnectionState.CAN_WRITE:
            return _send_chosen(self, chosen)
    return _ORIGINAL_SEND(self, event)


def _send_chosen(self: _http1.Http1Server, chosen: http.Response) -> Iterator[commands.Command]:
    chosen.headers["connection"] = "close"
    yield commands.SendData(self.conn, http1.assemble_response(chosen))
    yield commands.CloseConnection(self.conn)


def install() -> None:
    _http1.make_error_response = _anthropic_error_response
    _http1.Http1Server.send = _send  # type: ignore[method-assign]


def uninstall() -> None:
    _http1.make_error_response = _ORIGINAL_MAKE
    _http1.Http1Server.send = _ORIGINAL_SEND  # type: ignore[method-assign]
