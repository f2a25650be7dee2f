"""What the gateway keeps about one client request while it is in flight: the flow's record for the log, filled
as each fact is learned, and what only the hooks need (the chosen upstream and key, the translator, the timer)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from mitmproxy import http

from ccany_addon.anthropic_api.errors import GatewayError
from ccany_addon.config.snapshot import ClientKey, Provider, ProviderKey
from ccany_addon.converters.common import ResponseContext
from ccany_addon.flowlog.record import FlowRecord
from ccany_addon.upstreams.dialects import Dialect, StreamTranslator
from ccany_addon.upstreams.routing import Upstream


def request_id(flow: http.HTTPFlow) -> str:
    return "req_" + flow.id.replace("-", "")


@dataclass(slots=True)
class FlowState:
    record: FlowRecord  # the flow log's row to be: the gateway fills it, the flow log adds the end and submits
    handler: str = ""  # which endpoint answered (endpoints.route)
    stream: bool = False
    response_context: ResponseContext | None = None
    translator: StreamTranslator | None = None
    timer: asyncio.TimerHandle | None = None
    timed_out: bool = False
    error: GatewayError | None = None
    upstream: Upstream | None = None
    dialect: Dialect | None = None
    client: ClientKey | None = None
    provider: Provider | None = None  # a config DB provider: its key pool chose `key`
    key: ProviderKey | None = None
    cache_key: bytes | None = None  # set when the answer may be cached
    forwarded_at: float | None = None
    sent: bool = False  # the upstream request is whole and the gateway's own: only then does it get the key
    late_system: bool = False  # the converted request carries a system message after the first
    prompt_cache_key: str | None = None  # the session's hashed id, for upstreams that take `prompt_cache_key`
    model_override: str | None = None  # the model routed instead of the client's (the limits addon: over budget)

    @classmethod
    def begin(cls, flow: http.HTTPFlow) -> FlowState:
        request = flow.request
        peer = flow.client_conn.peername
        return cls(FlowRecord(
            id=request_id(flow), started=request.timestamp_start, method=request.method, path=request.path,
            client_addr=peer[0] if peer else "", client_request=None, client_request_headers=request.headers.fields,
        ))

    @property
    def request_id(self) -> str:
        return self.record.id

    def fail(self, error: GatewayError) -> None:
        self.error = error
        self.record.error_type, self.record.error_message = error.error_type, error.message

    @property
    def upstream_name(self) -> str:
        return self.upstream.name if self.upstream else "upstream"
