"""What the client is told when the upstream fails: an error answer (in the dialect's words, the key's failure
accounted for, the upstream's own wait passed on), an unreadable body, or no answer at all."""

from __future__ import annotations

import math
import time

from mitmproxy import http

from ccany_addon.anthropic_api.errors import GatewayError
from ccany_addon.proxy import request_body
from ccany_addon.proxy.flow_state import FlowState
from ccany_addon.proxy.key_failures import KeyFailures
from ccany_addon.upstreams.key_pool import cooldown_from, is_key_failure


def decoded_answer(state: FlowState, response: http.Response, limit: int) -> bytes:
    """The upstream's body, decompressed within the same limit as a client's (it was asked for none)."""
    raw = response.raw_content or b""
    if not (encoding := response.headers.get("content-encoding", "")):
        return raw
    try:
        return request_body.decoded(raw, encoding, limit)
    except GatewayError as error:
        raise GatewayError(502, f"{state.upstream_name} upstream answered with a body the gateway "
                                f"cannot read: {error.message}") from None


def answered(state: FlowState, response: http.Response, raw: bytes, keys: KeyFailures,
             secrets: tuple[str, ...]) -> GatewayError:
    """The client's error for the upstream's non-200 answer."""
    assert state.dialect is not None
    error, note = state.dialect.error(response.status_code, raw, state.upstream_name, secrets, state.late_system)
    if note is not None:
        state.record.notes.append(note)
        return error
    if response.status_code in (401, 403) and state.key is None:
        error.message = (f"ccany: the upstream refused the gateway's own API key (not your client key); "
                         f"whoever runs the gateway must fix it: {error.message}")
        error.should_retry = False
    if state.key is not None and state.provider is not None and is_key_failure(response.status_code):
        return keys.failed(state.request_id, state.provider, state.key, response, raw, error)
    if (wait := cooldown_from(response.headers, raw, time.time())) is not None:
        error.retry_after = max(0, math.ceil(wait))
    return error


def unanswered(flow: http.HTTPFlow, state: FlowState, message: str, timeout: int) -> GatewayError:
    """The client's error for an upstream that gave no answer: timed out, unreachable, or gone mid-way."""
    name = state.upstream_name
    if state.timed_out:
        return GatewayError(504, f"upstream {name} did not answer within {timeout} s")
    if flow.server_conn.timestamp_tcp_setup is None and state.upstream is not None:
        return GatewayError(500, f"ccany: upstream {name} is unreachable: {message}")
    return GatewayError(500, f"ccany: upstream {name} failed before answering: {message}")
