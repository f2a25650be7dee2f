"""A second mitmproxy script for the fail-closed tests: it makes one of the gateway's hooks raise, once per flow,
when the client's request carries `x-test-raise: <hook>`. It patches what each hook calls (never the hooks
themselves), so the guard under test is the gateway's own.

    mitmdump -s ccany_addon/addon.py -s tests/e2e/raising_addon.py …
"""

from __future__ import annotations

import sys

from ccany_addon.proxy.gateway import FlowState, Gateway

_raised: set[str] = set()


class TestRaise(RuntimeError):
    pass


def _asked(state: FlowState | None, hook: str, headers: object = None) -> None:
    if state is None or state.request_id in _raised:
        return
    fields = headers if headers is not None else state.client_headers
    asked = next((value for name, value in fields if name.lower() == b"x-test-raise"), None)
    if asked == hook.encode():
        _raised.add(state.request_id)
        raise TestRaise(f"test: the {hook} hook raises (sk-test-raise-echo-0123456789abcdef)")


_admit, _forward, _convert_answer = Gateway._admit, Gateway._forward, Gateway._convert_answer
_stop_timer, _forwarded = Gateway._stop_timer, Gateway.forwarded


def admit(self, flow, state):
    _asked(state, "requestheaders", flow.request.headers.fields)
    return _admit(self, flow, state)


def forward(self, flow, state):
    _forward(self, flow, state)  # the upstream request is built, its provider chosen: then the hook raises
    _asked(state, "request")


def convert_answer(self, flow, state, response):
    _asked(state, "response")
    return _convert_answer(self, flow, state, response)


def stop_timer(state):
    caller = sys._getframe(1).f_code.co_name
    if caller in ("responseheaders", "error"):
        _asked(state, caller)
    _stop_timer(state)


def forwarded(self, flow):
    _asked(self.state(flow), "keyinjector")
    return _forwarded(self, flow)


Gateway._admit, Gateway._forward, Gateway._convert_answer = admit, forward, convert_answer
Gateway._stop_timer, Gateway.forwarded = staticmethod(stop_timer), forwarded
