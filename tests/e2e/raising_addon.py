"""A second mitmproxy script for the fail-closed tests: it makes one of the gateway's hooks raise, once per flow,
when the client's request carries `x-test-raise: <hook>`. It patches what each hook calls (never the hooks
themselves), so the guard under test is the gateway's own.

    mitmdump -s ccany_addon/addon.py -s tests/e2e/raising_addon.py …
"""

from __future__ import annotations

import sys

from ccany_addon.proxy.flow_state import FlowState
from ccany_addon.proxy.gateway import Gateway

_raised: set[str] = set()


class TestRaise(RuntimeError):
    pass


def _asked(state: FlowState | None, hook: str, headers: object = None) -> None:
    if state is None or state.request_id in _raised:
        return
    fields = headers if headers is not None else state.record.client_request_headers
    asked = next((value for name, value in fields if name.lower() == b"x-test-raise"), None)
    if asked == hook.encode():
        _raised.add(state.request_id)
        raise TestRaise(f"test: the {hook} hook raises (sk-test-raise-echo-0123456789abcdef)")


_admit, _forward, _answer_upstream = Gateway._admit, Gateway._forward, Gateway._answer_upstream
_stop_timer, _upstream_key = Gateway._stop_timer, Gateway.upstream_key


def admit(self, flow, state):
    _asked(state, "requestheaders", flow.request.headers.fields)
    return _admit(self, flow, state)


def forward(self, flow, state):
    _forward(self, flow, state)  # the upstream request is built, its provider chosen: then the hook raises
    _asked(state, "request")


def answer_upstream(self, flow, state, response):
    _asked(state, "response")
    return _answer_upstream(self, flow, state, response)


def stop_timer(state):
    caller = sys._getframe(1).f_code.co_name
    if caller in ("responseheaders", "error"):
        _asked(state, caller)
    _stop_timer(state)


def upstream_key(self, flow):
    _asked(self.state(flow), "keyinjector")
    return _upstream_key(self, flow)


Gateway._admit, Gateway._forward, Gateway._answer_upstream = admit, forward, answer_upstream
Gateway._stop_timer, Gateway.upstream_key = staticmethod(stop_timer), upstream_key
