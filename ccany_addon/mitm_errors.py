"""mitmproxy answers some failures itself (upstream unreachable, upstream gone before answering, a request
it cannot parse) with an HTML page, and its `error` hook cannot replace that answer. Every client of this
gateway speaks the Anthropic API, so the page becomes an Anthropic error body instead.
"""

from __future__ import annotations

from mitmproxy import http
from mitmproxy.net.http import http1
from mitmproxy.proxy.layers.http import _http1

from ccany_addon.errors import client_status, error_json

_ORIGINAL = _http1.make_error_response


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


def install() -> None:
    _http1.make_error_response = _anthropic_error_response


def uninstall() -> None:
    _http1.make_error_response = _ORIGINAL
