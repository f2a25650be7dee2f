"""The requests the proxy answers itself, never forwarded: token counts, the model list, health, readiness and
metrics (which handler answers which path is `endpoints.route`)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from mitmproxy import http

from ccany_addon.anthropic_api.count_tokens import count_tokens as counted_tokens
from ccany_addon.anthropic_api.schema import CountTokensRequest, parse
from ccany_addon.config.access import authorize_model
from ccany_addon.proxy import endpoints, replies
from ccany_addon.proxy.flow_state import FlowState

if TYPE_CHECKING:
    from ccany_addon.proxy.gateway import Gateway

# count_tokens bodies larger than this are counted on a thread (a 1 MB Claude Code body counts in ~40 ms).
COUNT_ON_LOOP_BYTES = 1024 * 1024
METRICS_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def answer(gateway: Gateway, flow: http.HTTPFlow, state: FlowState, handler: str, path: str) -> None:
    request_id = state.request_id
    if handler == "models":
        replies.reply(flow, request_id, 200, endpoints.models_list(gateway.tiers, gateway.snapshot, gateway.upstream))
    elif handler == "model":
        model = path.rsplit("/", 1)[1]
        replies.reply(flow, request_id, 200,
                      endpoints.model_info(gateway.tiers, model, gateway.snapshot, gateway.upstream))
    elif handler == "metrics":
        text = b"" if flow.request.method == "HEAD" else gateway.metrics.render().encode()
        flow.response = replies.answer(request_id, 200, text, METRICS_TYPE)
    elif handler == "ready":
        ready = (gateway.upstream is not None and bool(gateway.upstream.key)) or any(
            provider.keys for provider in gateway.snapshot.providers.values()
        )
        replies.reply(flow, request_id, 200 if ready else 503, {"status": "ready" if ready else "not ready"})
    else:
        replies.reply(flow, request_id, 200, {"status": "ok"})


def count_tokens(gateway: Gateway, flow: http.HTTPFlow, state: FlowState, body: bytes) -> None:
    counted = parse(CountTokensRequest, body, tools=gateway.tools)
    authorize_model(state.client, counted.model)
    if len(flow.request.raw_content or b"") <= COUNT_ON_LOOP_BYTES:
        replies.reply(flow, state.request_id, 200, {"input_tokens": counted_tokens(counted)})
        return

    # Counting a large conversation takes seconds of Python: it runs on a thread, which hands the event loop back
    # every few milliseconds, while the flow waits (mitmproxy's intercept, made for this).
    async def count() -> None:
        try:
            tokens = await asyncio.to_thread(counted_tokens, counted)
            replies.reply(flow, state.request_id, 200, {"input_tokens": tokens})
        except Exception as error:
            gateway.internal_error(flow, "request", error)
        finally:
            gateway.counting.discard(task)
            flow.resume()

    flow.intercept()
    task = asyncio.get_running_loop().create_task(count())
    gateway.counting.add(task)  # the loop keeps only a weak reference to a task
