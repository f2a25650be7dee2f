"""The flow log addon: sits after the gateway, turns each finished flow into a record for the writer thread,
and counts it in the gateway's metrics. Its hooks never touch SQLite, and never raise: a flow whose record
cannot be read is logged with what is known, or counted as lost.

It also knows which flows are in flight: `GracefulStop` waits for them at a stop, and `done` logs the ones
still unfinished as interrupted before it closes the writer."""

from __future__ import annotations

import logging
import time
import weakref
from dataclasses import replace
from typing import Any

from mitmproxy import ctx, exceptions, http

from ccany_addon.anthropic_api.errors import mask_secrets
from ccany_addon.config.options import BODY_POLICIES, declare
from ccany_addon.config.snapshot import ConfigSnapshot
from ccany_addon.converters.message_stream import WrittenStream
from ccany_addon.costs.prices import PriceTable, load_price_table
from ccany_addon.flowlog.record import (
    FlowRecord,
    LogPolicy,
    StreamClock,
    StreamRecorder,
    minimal_row,
    record_size,
    to_row,
)
from ccany_addon.flowlog.writer import FlowWriter, describe_failure
from ccany_addon.proxy.flow_state import FlowState
from ccany_addon.proxy.gateway import Gateway
from ccany_addon.proxy.option_checks import require_bounds

logger = logging.getLogger("ccany")

# Probes would fill the log with noise; everything else, refused or failed, is a flow.
UNLOGGED_HANDLERS = frozenset({"health", "ready", "root", "hello", "metrics"})
CLIENT_DISCONNECTED = "Client disconnected."
INTERRUPTED = "interrupted"  # the error_type of a flow still unfinished when the proxy stopped


class FlowLog:
    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.writer: FlowWriter[FlowRecord] | None = None
        self.policy = LogPolicy()
        # A StreamClock leaves `response.stream` once it has the first token; this is where it is found after.
        self._clocks: weakref.WeakKeyDictionary[http.HTTPFlow, StreamClock] = weakref.WeakKeyDictionary()
        # Seen in `requestheaders`, not yet ended. Weak: a flow mitmproxy forgets without an end hook is not kept.
        self.in_flight: weakref.WeakSet[http.HTTPFlow] = weakref.WeakSet()
        self.draining = False  # set by GracefulStop: responses tell HTTP/1 clients the connection closes
        self._closed = False
        self.failed = 0  # flows lost before they reached the writer
        self.degraded = 0  # flows whose record could not be read whole: logged with what was known
        self._prices: tuple[ConfigSnapshot | None, PriceTable] = (None, PriceTable())

    def load(self, loader: Any) -> None:
        declare(loader, "flowlog")

    def configure(self, updated: set[str]) -> None:
        options = ctx.options
        require_bounds(updated, ("ccany_log_body_cap", "ccany_log_queue_size", "ccany_log_queue_mb"),
                       ("ccany_log_retention_days",))
        if options.ccany_log_bodies not in BODY_POLICIES:
            raise exceptions.OptionsError(f"ccany_log_bodies must be one of {', '.join(BODY_POLICIES)}")
        self.policy = LogPolicy(options.ccany_log_bodies, options.ccany_log_body_cap)  # type: ignore[arg-type]
        if self.writer is not None and updated & {"ccany_db", "ccany_log_retention_days", "ccany_log_queue_size",
                                                  "ccany_log_queue_mb"}:
            self.writer.close()
            self.writer = None
            self._start_writer()

    def running(self) -> None:
        try:
            load_price_table()
        except Exception as error:  # flows are still logged, unpriced, each with a note
            logger.error(f"ccany: the price table cannot be read; flows go unpriced: {describe_failure(error)}")
        if self.writer is None:
            self._start_writer()
        metrics = self.gateway.metrics
        metrics.gauges["ccany_log_queue_depth"] = lambda: self.writer.depth if self.writer else 0
        metrics.gauges["ccany_log_queue_bytes"] = lambda: self.writer.queued_bytes if self.writer else 0
        metrics.gauges["ccany_log_written_total"] = lambda: self.writer.written if self.writer else 0
        metrics.gauges["ccany_log_dropped_total"] = lambda: self.writer.dropped if self.writer else 0
        metrics.gauges["ccany_log_failed_total"] = lambda: self.failed + (self.writer.failed if self.writer else 0)
        metrics.gauges["ccany_log_degraded_total"] = \
            lambda: self.degraded + (self.writer.degraded if self.writer else 0)

    def done(self) -> None:
        self._log_interrupted()
        self._closed = True  # a flow that ends from here on was logged as interrupted
        if self.writer is not None:
            queued = self.writer.depth
            self.writer.close()
            logger.info(f"ccany: flow log closed ({queued} flows were still queued; {self.writer.written} written)")

    def _log_interrupted(self) -> None:
        """Log every flow still in flight (GracefulStop's grace period is over) with what is known of it."""
        unfinished = list(self.in_flight)
        self.in_flight.clear()
        logged = 0
        for flow in unfinished:
            try:
                state = self.gateway.state(flow)
                if state is None or state.handler in UNLOGGED_HANDLERS:
                    continue
                record = self._safe_record(flow, state)
                earlier = f"; before that: {record.error_type}: {record.error_message}" if record.error_type else ""
                record.error_type = INTERRUPTED
                record.error_message = f"ccany stopped before this flow finished{earlier}"
                if self.writer is not None:
                    self.writer.submit(record)
                self._observe(record)
                logged += 1
            except Exception as error:
                self._lost(error)
        if logged:
            logger.warning(f"ccany: {logged} flows were unfinished at the stop; logged as {INTERRUPTED}")

    def _start_writer(self) -> None:
        options = ctx.options
        if not options.ccany_db:
            logger.warning("ccany: ccany_db is empty: flows are not logged")
            return
        self.writer = FlowWriter(
            options.ccany_db,
            lambda record: to_row(record, replace(self.policy, secrets=self.gateway.known_secrets), raw_bodies=True),
            options.ccany_log_queue_size,
            options.ccany_log_retention_days,
            salvage=minimal_row,
            size=record_size,
            queue_bytes=options.ccany_log_queue_mb * 1024 * 1024,
            scrub=lambda text: mask_secrets(text, self.gateway.known_secrets),
        )
        self.writer.start()
        logger.info(f"ccany: logging flows to {options.ccany_db}")

    # -- hooks

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        self.in_flight.add(flow)

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        try:
            self._wrap_stream(flow)
            self._close_when_draining(flow)
        except Exception as error:  # the stream goes on unrecorded rather than the hook failing the flow
            logger.error(f"ccany: flow log could not follow a stream: {describe_failure(error)}")

    def _close_when_draining(self, flow: http.HTTPFlow) -> None:
        """During a stop the listener is closed: a kept-alive HTTP/1 connection takes no next request. Set on
        the response headers (streams) and again on the response (answers the gateway builds in its `response`
        hook); mitmproxy closes the connection after a response that says so."""
        if self.draining and flow.response is not None and flow.request.http_version.startswith("HTTP/1"):
            flow.response.headers["connection"] = "close"

    def _wrap_stream(self, flow: http.HTTPFlow) -> None:
        response, state = flow.response, self.gateway.state(flow)
        if response is not None and state is not None and state.translator is not None \
                and response.stream is state.translator:
            if self.writer is not None:
                response.stream = StreamRecorder(state.translator)
            else:
                response.stream = self._clocks[flow] = StreamClock(state.translator, response)

    def response(self, flow: http.HTTPFlow) -> None:
        self._finish(flow)

    def error(self, flow: http.HTTPFlow) -> None:
        self._finish(flow)

    def _finish(self, flow: http.HTTPFlow) -> None:
        self.in_flight.discard(flow)
        if self._closed:
            return
        try:
            self._close_when_draining(flow)
            self._log(flow)
        except Exception as error:
            self._lost(error)

    def _lost(self, error: Exception) -> None:
        self.failed += 1
        logger.error(f"ccany: a flow could not be logged: {describe_failure(error)} ({self.failed} lost so far)")

    def _safe_record(self, flow: http.HTTPFlow, state: FlowState) -> FlowRecord:
        """The flow's record with its end added; when some part of it cannot be read, a record of what is sure
        to be there."""
        try:
            return self._ended(flow, state)
        except Exception as error:
            logger.error(f"ccany: flow {state.request_id} is logged without its details: {describe_failure(error)}")
            failure = error
        self.degraded += 1
        known = state.record
        return FlowRecord(
            id=known.id, started=known.started, method=known.method, path=known.path, client_addr="",
            client_request=None, client_request_headers=(), client_model=known.client_model,
            status_code=flow.response.status_code if flow.response else None,
            error_type=known.error_type, ended=time.time(),
            notes=[f"flow log: the flow could not be read whole ({type(failure).__name__})"],
        )

    def _log(self, flow: http.HTTPFlow) -> None:
        state = self.gateway.state(flow)
        if state is None or state.handler in UNLOGGED_HANDLERS:
            return
        record = self._safe_record(flow, state)
        if self.writer is not None:
            self.writer.submit(record)
        self._observe(record)

    def _observe(self, record: FlowRecord) -> None:
        try:
            self._count(record)
        except Exception as error:  # the metrics, not the log: the flow is already queued
            logger.error(f"ccany: a flow could not be counted in the metrics: {describe_failure(error)}")

    def _count(self, record: FlowRecord) -> None:
        self.gateway.metrics.observe_flow(
            record.upstream_model or record.client_model or "none",
            record.status_code or 0,
            record.error_type,
            record.usage,
            record.ended - record.started,
            None if record.first_token_at is None else record.first_token_at - record.started,
        )

    def _ended(self, flow: http.HTTPFlow, state: FlowState) -> FlowRecord:
        """The gateway's record of the flow, with how it ended: the client's answer (or its stream), the upstream
        request's headers as sent (the key redacted), and the failure if any."""
        record, response = state.record, flow.response
        record.ended = time.time()
        if state.client is not None:
            record.client_user = state.client.owner
        if state.response_context is not None:
            record.upstream_request_headers = flow.request.headers.fields
        if response is not None:
            record.status_code = response.status_code
            record.client_response_headers = response.headers.fields
            stream = self._clocks.pop(flow, None) or response.stream
            if isinstance(stream, StreamRecorder | StreamClock):
                self._stream_side(stream, record)
            else:
                record.client_response = response.raw_content
                record.first_token_at = record.ended if response.status_code == 200 else None
        if state.error is not None:  # the gateway's own verdict wins over what a stream reported
            record.error_type, record.error_message = state.error.error_type, state.error.message
            if response is None:
                record.status_code, record.client_response = state.error.status, state.error.body()
        if flow.error is not None and record.error_type is None:
            disconnected = flow.error.msg == CLIENT_DISCONNECTED
            record.error_type = "client_disconnected" if disconnected else "upstream_disconnected"
            record.error_message = flow.error.msg
            if response is None:
                record.status_code = 499
        self._price(record)
        return record

    def _price(self, record: FlowRecord) -> None:
        """The flow's cost, from the config's prices (a changed config brings a new table) or the maintained
        table; a flow that cannot be priced is logged unpriced, with a note."""
        try:
            if record.cache_hit:  # answered from the response cache: the upstream billed nothing
                record.cost_usd, record.price_source = 0.0, "response cache"
                return
            snapshot = self.gateway.snapshot
            if self._prices[0] is not snapshot:
                table = self._prices[1]
                self._prices = (snapshot, table if table.overrides == snapshot.prices else PriceTable(snapshot.prices))
            cost = self._prices[1].cost(record.usage, record.upstream_model, record.provider, record.upstream_url,
                                        record.started)
            if cost is not None:
                record.cost_usd, record.price_source = cost.usd, cost.source
        except Exception as error:
            record.notes.append(f"flow log: the flow could not be priced ({describe_failure(error)})")

    @staticmethod
    def _stream_side(recorder: StreamRecorder | StreamClock, record: FlowRecord) -> None:
        translator = recorder.translator  # a ChatStreamTranslator or an AnthropicEventStream
        record.first_token_at = recorder.first_token_at
        record.stop_reason, record.usage = translator.stop_reason, translator.usage
        if translator.error is not None:
            record.error_type, record.error_message = translator.error_type, translator.error
        if isinstance(recorder, StreamRecorder):
            record.reads = recorder.reads
            if isinstance(translator, WrittenStream):
                record.message = translator.message()
