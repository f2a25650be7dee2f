"""Canary for ccany_addon/proxy/mitm_compat.py, the one module that touches private mitmproxy API: when a mitmproxy
upgrade moves what it relies on, these fail loudly here, not silently in production (where the failure would be
an HTML error page, an unanswered kill, or an upstream connection that is never cancelled)."""

from __future__ import annotations

import inspect

from mitmproxy import http
from mitmproxy.addons import proxyserver
from mitmproxy.proxy import server
from mitmproxy.proxy.layers import http as http_layers
from mitmproxy.proxy.layers.http import _events, _http1

from ccany_addon.proxy import mitm_compat


def test_the_error_page_maker_is_where_it_was_and_called_as_it_was():
    assert list(inspect.signature(_http1.make_error_response).parameters) == ["status_code", "message"]
    # Http1Server.send calls it for a ResponseProtocolError, and its `request` names the flow
    source = inspect.getsource(_http1.Http1Server.send)
    assert "make_error_response(status, event.message)" in source
    assert "request" in _http1.Http1Connection.__annotations__


def test_a_kill_is_a_response_protocol_error_whose_code_gives_no_status_by_default():
    assert _events.ErrorCode.KILL.http_status_code() is None
    assert "ErrorCode.KILL" in inspect.getsource(http_layers.HttpStream.check_killed)
    assert "event.code.http_status_code()" in inspect.getsource(_http1.Http1Server.send)


def test_a_body_over_the_limit_is_recognised_by_mitmproxys_own_words():
    source = inspect.getsource(http_layers.HttpStream.check_body_size)
    assert "{'Request' if request else 'Response'} body exceeds mitmproxy's body_size_limit." in source
    assert mitm_compat.body_too_large("Request body exceeds mitmproxy's body_size_limit.")
    assert not mitm_compat.body_too_large("Client disconnected.")


def test_install_answers_kills_and_uninstall_restores():
    mitm_compat.install()
    try:
        assert _events.ErrorCode.KILL.http_status_code() == 500
        assert _events.ErrorCode.REQUEST_TOO_LARGE.http_status_code() == 413
        assert _http1.make_error_response is not mitm_compat._ORIGINAL_MAKE
    finally:
        mitm_compat.uninstall()
    assert _events.ErrorCode.KILL.http_status_code() is None
    assert _http1.make_error_response is mitm_compat._ORIGINAL_MAKE


def test_the_answer_chosen_for_a_request_is_the_one_sent():
    request = http.Request.make("POST", "http://127.0.0.1/v1/messages")
    chosen = http.Response.make(413, b'{"type":"error"}', {"request-id": "req_1"})
    mitm_compat.answer_failure(request, chosen)

    class FakeServer(_http1.Http1Server):
        def __init__(self) -> None:
            self.request = request

    def send(self: FakeServer) -> bytes:  # called from an Http1Server method, as mitmproxy does
        return mitm_compat._anthropic_error_response(413, "Request body exceeds mitmproxy's body_size_limit.")

    data = send(FakeServer())
    assert data.startswith(b"HTTP/1.1 413") and b"request-id: req_1" in data and b"connection: close" in data
    # no chosen answer: a generic Anthropic error instead of mitmproxy's HTML page
    generic = send(FakeServer())
    assert b'"type":"error"' in generic and b"text/html" not in generic


def test_connections_are_reached_as_the_module_expects():
    assert "self.connections" in inspect.getsource(proxyserver.Proxyserver.__init__)
    assert "transports" in server.ConnectionHandler.__annotations__
    assert {"handler", "writer"} <= set(server.ConnectionIO.__dataclass_fields__)
    # write_to_client frames its bytes as mitmproxy frames each chunk of a chunked HTTP/1 response, whole, in
    # one write of the connection's writer
    assert 'b"%x\\r\\n%s\\r\\n" % (len(event.data), event.data)' in inspect.getsource(_http1.Http1Server.send)
    assert "writer.write(command.data)" in inspect.getsource(server.ConnectionHandler.server_event)
