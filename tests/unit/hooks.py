"""ccany's addons driven in-process through mitmproxy's own hook machinery: the chain `build_addons()` returns,
under `mitmproxy.test.taddons`, each hook fired on the whole chain as mitmproxy's HTTP layer fires it
(`requestheaders`, the body, `request`, then either the gateway's own answer or the upstream's, and `error` for a
killed flow). No subprocess, no socket: the upstream is a function of the request that would leave the proxy.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from mitmproxy import flow as mitm_flow
from mitmproxy import hooks, http
from mitmproxy.addons.proxyserver import Proxyserver
from mitmproxy.net.http.http1 import expected_http_body_size, read_response_head
from mitmproxy.proxy.layers import http as http_layer
from mitmproxy.proxy.layers.http import _events, _http1
from mitmproxy.test import taddons, tflow
from mitmproxy.utils import human

from ccany_addon.flowlog.record import FlowRecord
from ccany_addon.proxy.assembly import build_addons
from ccany_addon.proxy.flow_state import FlowState, request_id
from ccany_addon.proxy.gateway import Gateway

REVERSE_TARGET = "http://127.0.0.1:9"  # nothing listens there: every upstream answer comes from a test's function

type Upstream = Callable[[http.Request], http.Response]

# Quiet, timer-free defaults: no flow log file, no config DB unless a test names one, no client or keep-alive
# timers, and a stop that does not wait for flows a test leaves unfinished.
QUIET = {
    "ccany_db": "",
    "ccany_config_db": "",
    "ccany_shutdown_grace": 0,
    "ccany_client_header_timeout": 0,
    "ccany_client_body_timeout": 0,
    "ccany_keepalive_interval": 0,
}


@dataclass
class Exchange:
    flow: http.HTTPFlow
    sent: http.Request | None  # the request as it leaves for the upstream (after every `request` hook), if any
    answer: http.Response | None  # what the client gets: the flow's response, or mitmproxy's for a killed flow
    streamed: bytes | None = None  # the client's body of a streamed answer, as `response.stream` wrote it
    # the flow's request as the `request` hooks left it (mitmweb's view and a saved flow hold it until the gateway
    # redacts the key in `responseheaders`); None when the flow ended before them
    requested: http.Request | None = None

    @property
    def status(self) -> int:
        assert self.answer is not None, "the client got no answer"
        return self.answer.status_code

    @property
    def body(self) -> bytes:
        assert self.answer is not None, "the client got no answer"
        return self.streamed if self.streamed is not None else self.answer.raw_content or b""

    def json(self) -> Any:
        return json.loads(self.body)

    def error(self, status: int, error_type: str) -> str:
        """The Anthropic error's message, once the status, the body's shape and the request-id are checked."""
        assert self.status == status, (self.status, self.body)
        body = self.json()
        assert body["type"] == "error" and body["error"]["type"] == error_type, body
        assert self.answer is not None and self.answer.headers["request-id"] == self.request_id
        return body["error"]["message"]

    @property
    def request_id(self) -> str:
        return request_id(self.flow)


class Proxy:
    def __init__(self, tctx: taddons.context, addons: list[object]) -> None:
        self.tctx = tctx
        self.gateway = next(addon for addon in addons if isinstance(addon, Gateway))

    async def fire(self, hook: hooks.Hook) -> None:
        """One flow hook on the whole chain, as mitmproxy's proxy server runs it (an addon error is logged, not
        raised)."""
        await self.tctx.master.addons.handle_lifecycle(hook)

    def state(self, flow: http.HTTPFlow) -> FlowState:
        state = self.gateway.state(flow)
        assert state is not None
        return state

    def record(self, flow: http.HTTPFlow) -> FlowRecord:
        return self.state(flow).record

    async def exchange(self, request: http.Request, upstream: Upstream | None = None) -> Exchange:
        """One client request through the hooks, in mitmproxy's order (its HTTP layer's `state_*` methods).
        `upstream` answers what leaves the proxy; without one, a forwarded flow is left waiting for its answer."""
        flow = tflow.tflow(req=request)
        body, request.data.content = request.data.content, None  # the hooks see the headers first
        limit = human.parse_size(self.tctx.options.body_size_limit)
        declared = expected_http_body_size(request)
        if limit is not None and declared is not None and declared > limit:
            # mitmproxy's early check: `requestheaders`, then the flow fails without a byte of the body read
            await self.fire(http_layer.HttpRequestHeadersHook(flow))
            return await self._too_large(flow)
        await self.fire(http_layer.HttpRequestHeadersHook(flow))
        if await self._killed(flow):
            return Exchange(flow, None, _failure_answer(flow, _events.ErrorCode.KILL, "killed"))
        if limit is not None and len(body or b"") > limit:  # a chunked body: reading stops at the limit
            return await self._too_large(flow)
        request.data.content = body
        await self.fire(http_layer.HttpRequestHook(flow))
        requested = flow.request.copy()
        if await self._killed(flow):
            return Exchange(flow, None, _failure_answer(flow, _events.ErrorCode.KILL, "killed"), requested=requested)
        if flow.response is not None:  # answered by an addon: mitmproxy then emulates `responseheaders`
            await self.fire(http_layer.HttpResponseHeadersHook(flow))
            await self.fire(http_layer.HttpResponseHook(flow))
            return Exchange(flow, None, flow.response, requested=requested)
        sent = requested
        if upstream is None:
            return Exchange(flow, sent, None, requested=requested)
        response = upstream(sent)
        upstream_body, response.data.content = response.data.content, None
        flow.response = response
        await self.fire(http_layer.HttpResponseHeadersHook(flow))
        if await self._killed(flow):
            return Exchange(flow, sent, _failure_answer(flow, _events.ErrorCode.KILL, "killed"), requested=requested)
        streamed = None
        if callable(flow.response.stream):
            stream = flow.response.stream
            streamed = b"".join([*_chunks(stream(upstream_body or b"")), *_chunks(stream(b""))])
        else:
            flow.response.data.content = upstream_body
        await self.fire(http_layer.HttpResponseHook(flow))
        return Exchange(flow, sent, flow.response, streamed, requested)

    async def _killed(self, flow: http.HTTPFlow) -> bool:
        if flow.error is None or flow.error.msg != mitm_flow.Error.KILLED_MESSAGE:
            return False
        await self.fire(http_layer.HttpErrorHook(flow))
        return True

    async def _too_large(self, flow: http.HTTPFlow) -> Exchange:
        message = "Request body exceeds mitmproxy's body_size_limit."
        flow.error = mitm_flow.Error(message)
        await self.fire(http_layer.HttpErrorHook(flow))
        flow.live = False
        return Exchange(flow, None, _failure_answer(flow, _events.ErrorCode.REQUEST_TOO_LARGE, message))


def _chunks(returned: bytes | list[bytes]) -> list[bytes]:
    return [returned] if isinstance(returned, bytes) else list(returned)


def _failure_answer(flow: http.HTTPFlow, code: _events.ErrorCode, message: str) -> http.Response:
    """What mitmproxy's HTTP/1 server sends for a flow that failed with `code`: it asks `make_error_response`
    (which ccany's mitm_compat replaces while the gateway runs) from a method of the connection whose `request`
    is the flow's (`Http1Server.send`, held by tests/unit/test_mitm_compat.py)."""

    class Server(_http1.Http1Server):
        def __init__(self, request: http.Request) -> None:  # no connection: only `request` is read
            self.request = request

        def error_page(self) -> bytes:
            status = code.http_status_code()
            assert status is not None, f"mitmproxy sends nothing for {code}"
            return _http1.make_error_response(status, message)

    data = Server(flow.request).error_page()
    head, _, content = data.partition(b"\r\n\r\n")
    response = read_response_head(head.split(b"\r\n"))
    response.content = content
    return response


def messages(body: dict | bytes, path: str = "/v1/messages", headers: dict[str, str] | None = None,
             method: str = "POST", chunked: bool = False) -> http.Request:
    """A client's request to the proxy, as mitmproxy has it in reverse mode (`headers` win over the
    content-length of `body`)."""
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = http.Request.make(method, REVERSE_TARGET + path, content, {"content-type": "application/json"})
    if chunked:
        del request.headers["content-length"]
        request.headers["transfer-encoding"] = "chunked"
    request.headers.update(headers or {})
    return request


def chat_completion(text: str, model: str = "gpt-4o-mini") -> http.Response:
    """An OpenAI Chat Completions answer."""
    body = {"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17}}
    return http.Response.make(200, json.dumps(body), {"content-type": "application/json"})


def openai_error(status: int, message: str, headers: dict[str, str] | None = None) -> http.Response:
    """An OpenAI error answer, worded as its rate limiter words one."""
    body = {"error": {"message": message, "type": "requests", "code": "rate_limit_exceeded"}}
    return http.Response.make(status, json.dumps(body), {"content-type": "application/json", **(headers or {})})


class _AddonErrors(logging.Handler):
    """What mitmproxy logs as "Addon error": a hook that raised past ccany's own guards."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@asynccontextmanager
async def running(**options: Any) -> AsyncIterator[Proxy]:
    """ccany's whole chain, configured with `options` over `QUIET` and the reverse target, started, and stopped
    (its `done` hooks) at the end. mitmproxy's proxy server addon comes first, as in mitmproxy, for the options
    it declares (it listens nowhere: its servers start only when the mode changes after `running`). A hook that
    raises past ccany's guards fails the test: mitmproxy would only have logged it and gone on with the flow."""
    addons = build_addons()
    errors = _AddonErrors()
    logging.getLogger("mitmproxy.addonmanager").addHandler(errors)
    try:
        with taddons.context(Proxyserver(), *addons) as tctx:
            proxy = Proxy(tctx, addons)
            tctx.configure(proxy.gateway, mode=[f"reverse:{REVERSE_TARGET}"], **{**QUIET, **options})
            await tctx.master.addons.trigger_event(hooks.RunningHook())
            try:
                yield proxy
            finally:
                await tctx.master.addons.trigger_event(hooks.DoneHook())
    finally:
        logging.getLogger("mitmproxy.addonmanager").removeHandler(errors)
    assert not errors.messages, errors.messages


def run(scenario: Callable[[Proxy], Awaitable[None]], **options: Any) -> None:
    """Runs `scenario` against a started proxy on an event loop of its own (the gateway's timers need one)."""

    async def main() -> None:
        async with running(**options) as proxy:
            await scenario(proxy)

    asyncio.run(main())
