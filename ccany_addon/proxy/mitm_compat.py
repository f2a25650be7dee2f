"""The one place that touches mitmproxy's private API (tests/unit/test_mitm_compat.py fails loudly when what it
relies on changes).

- mitmproxy answers some failures itself (upstream unreachable, a body over `body_size_limit`, a request it
  cannot parse, a killed flow) with an HTML page, and its `error` hook cannot replace that answer. Every client
  of this gateway speaks the Anthropic API, so the page becomes an Anthropic error body instead: the one the
  gateway chose for the flow when there is one, else a generic one. A killed flow gets an answer too, so the
  gateway can refuse a request from its headers (`refuse`) without reading the body.
- Three things no hook can do: cancel an upstream connection that has not answered, close a client
  connection that never finished sending its request, and stop accepting connections while flows finish.
"""

from __future__ import annotations

import sys
import weakref

from mitmproxy import connection, ctx, http
from mitmproxy.net.http import http1
from mitmproxy.proxy.layers.http import _events, _http1

from ccany_addon.anthropic_api.errors import client_status, error_json

_ORIGINAL_MAKE = _http1.make_error_response
_ORIGINAL_STATUS = _events.ErrorCode.http_status_code
_KILLED_STATUS = 500

# Keyed by the request object mitmproxy's HTTP/1 server layer shares with the flow.
_chosen: weakref.WeakKeyDictionary[http.Request, http.Response] = weakref.WeakKeyDictionary()


def body_too_large(error_message: str) -> bool:
    """Whether a flow's error is mitmproxy's refusal of a request body over `body_size_limit`."""
    return error_message.startswith("Request body exceeds")


def answer_failure(request: http.Request, response: http.Response) -> None:
    """Use `response` if mitmproxy has to answer this request's failure itself."""
    _chosen[request] = response


def refuse(flow: http.HTTPFlow, response: http.Response) -> None:
    """Answer `response` from the `requestheaders` hook and close the connection, without reading the body
    (a response set there is only sent after the whole body has arrived)."""
    answer_failure(flow.request, response)
    if flow.killable:
        flow.kill()


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
    if message == "killed":
        message = "ccany: the flow was killed before it was answered"
    elif status_code >= 500:
        message = f"ccany: the upstream did not answer: {message}"
    status = client_status(status_code)
    response = http.Response.make(
        status,
        error_json(status, message or http.status_codes.RESPONSES.get(status_code, "error")),
        {"content-type": "application/json", "connection": "close"},
    )
    return http1.assemble_response(response)


def _http_status_code(code: _events.ErrorCode) -> int | None:
    # A killed flow is answered (mitmproxy closes the connection without a word): a client of this gateway
    # must always get an Anthropic answer, and `refuse` relies on it.
    return _KILLED_STATUS if code is _events.ErrorCode.KILL else _ORIGINAL_STATUS(code)


def install() -> None:
    _http1.make_error_response = _anthropic_error_response
    _events.ErrorCode.http_status_code = _http_status_code  # type: ignore[method-assign]


def uninstall() -> None:
    _http1.make_error_response = _ORIGINAL_MAKE
    _events.ErrorCode.http_status_code = _ORIGINAL_STATUS  # type: ignore[method-assign]


def _transport(client: connection.Client, conn: connection.Connection):  # -> ConnectionIO | None
    server = ctx.master.addons.get("proxyserver")
    handler = server.connections.get(client.id) if server else None
    return handler.transports.get(conn) if handler else None


def cancel_upstream(flow: http.HTTPFlow, reason: str) -> None:
    """Drop the upstream connection of `flow`; mitmproxy then fires the `error` hook."""
    io = _transport(flow.client_conn, flow.server_conn)
    if io is not None and io.handler is not None:
        io.handler.cancel(reason)


def close_client(client: connection.Client, reason: str) -> None:
    """Close a client connection from outside its flows (a client too slow to send its request)."""
    io = _transport(client, client)
    if io is not None and io.handler is not None:
        io.handler.cancel(reason)


async def stop_listening() -> int:
    """Close mitmproxy's listening sockets; connections already open go on. Returns how many servers closed.

    Private API: mitmproxy has no public way to stop accepting while the event loop keeps running (the
    `proxyserver` addon stops its servers only when the `mode` option changes, and that would also drop the
    reverse target the gateway reads). This reads `Proxyserver.servers` and awaits `ServerInstance.stop()`
    (12.2); test_graceful_stop_closes_mitmproxys_listeners… in tests/unit/test_flow_writer.py fails when either
    changes."""
    proxyserver = ctx.master.addons.get("proxyserver")
    if proxyserver is None:
        return 0
    running = [server for server in proxyserver.servers if server.is_running]
    for server in running:
        await server.stop()
    return len(running)


def write_to_client(flow: http.HTTPFlow, data: bytes) -> bool:
    """Send `data` as one more chunk of the flow's chunked HTTP/1 response, beside mitmproxy's own writes (which
    always write whole chunks, so the client's stream is between two of them whenever this runs). Only for a
    plain-text HTTP/1 client: through TLS or HTTP/2 the bytes would need mitmproxy's own layers. False when it
    could not be sent."""
    response = flow.response
    if (flow.client_conn.tls or response is None or not flow.request.http_version.startswith("HTTP/1")
            or "chunked" not in response.headers.get("transfer-encoding", "").lower()):
        return False
    io = _transport(flow.client_conn, flow.client_conn)
    writer = io.writer if io is not None else None
    if writer is None or writer.is_closing():
        return False
    writer.write(b"%x\r\n%s\r\n" % (len(data), data))
    return True
