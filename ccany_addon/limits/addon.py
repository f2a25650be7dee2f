"""The limits addon: sits after the gateway and the flow log. Admits or refuses each request of a client key that
has limits or budgets (`admission.py`), puts the key's `anthropic-ratelimit-*` headers on its answers, and counts
what each flow used when it ends (its tokens, and the cost the flow log priced it at)."""

from __future__ import annotations

import asyncio
import logging
import os
import time
import weakref
from typing import Any
from urllib.parse import urlsplit

from mitmproxy import ctx, exceptions, http

from ccany_addon.anthropic_api.errors import GatewayError
from ccany_addon.config.options import declare
from ccany_addon.config.snapshot import ClientKey, Provider
from ccany_addon.flowlog.writer import describe_failure
from ccany_addon.limits.admission import LEASE_RENEWAL, STREAM_LEASE_TTL, Admission, admit, over_budget_model, used_by
from ccany_addon.limits.fleet_keys import FleetKeys
from ccany_addon.limits.redis_state import RedisState
from ccany_addon.limits.seed import seed_spend
from ccany_addon.limits.shared_state import LocalState, SharedState
from ccany_addon.proxy import endpoints, replies
from ccany_addon.proxy.fail_closed import fail_closed, fail_closed_async
from ccany_addon.proxy.gateway import Gateway
from ccany_addon.upstreams.key_pool import KeyFailure

logger = logging.getLogger("ccany")

PASSWORD_ENV = "CCANY_REDIS_PASSWORD"
REASONS = {402: "budget", 429: "rate"}
KEYS_POLL = 1.0  # seconds between reads of the provider keys other processes put on cooldown or switched


class Limits:
    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.shared: SharedState = LocalState()
        self._admitted: weakref.WeakKeyDictionary[http.HTTPFlow, tuple[ClientKey, Admission]] = \
            weakref.WeakKeyDictionary()
        self._counting: set[asyncio.Task] = set()  # what ended flows used, on its way to the shared state
        self.fleet_keys = FleetKeys(lambda: self.shared, gateway.pools, lambda: gateway.snapshot, gateway.config)
        self._watching: asyncio.Task | None = None  # other processes' provider keys, read every second
        self._renewing: asyncio.Task | None = None  # the places of the streams open here, held while they run

    def load(self, loader: Any) -> None:
        declare(loader, "limits")

    def configure(self, updated: set[str]) -> None:
        if "ccany_redis_url" not in updated:
            return
        url = ctx.options.ccany_redis_url.strip()
        if url:
            parts = urlsplit(url)
            if parts.scheme not in ("redis", "rediss", "unix"):
                raise exceptions.OptionsError("ccany_redis_url must be a redis://, rediss:// or unix:// URL")
            if parts.password:
                raise exceptions.OptionsError(
                    f"ccany_redis_url must not carry a password (options show in mitmweb and process lists): "
                    f"put it in {PASSWORD_ENV}")
        if isinstance(self.shared, RedisState):
            self._later(self.shared.close())  # options change while the proxy runs, on its event loop
        self.shared = RedisState(url, os.environ.get(PASSWORD_ENV)) if url else LocalState()
        logger.info(f"ccany: client key limits and budgets are counted in {self.shared.describe()}")

    def running(self) -> None:
        if isinstance(self.shared, LocalState):
            try:
                seeded = seed_spend(self.shared, ctx.options.ccany_db, self.gateway.snapshot, time.time())
            except Exception as error:  # the gateway still serves; budgets start from nothing
                logger.error(f"ccany: this month's spend could not be read back: {describe_failure(error)}")
                seeded = 0
            if seeded:
                logger.info(f"ccany: budgets: this month's spend of {seeded} client keys read back from the flow log")
        self.gateway.keys.on_failure = self._key_failed
        loop = asyncio.get_running_loop()
        if isinstance(self.shared, RedisState):
            self._watching = loop.create_task(self._watch_keys())
        self._renewing = loop.create_task(self._renew_leases())
        gauges = self.gateway.metrics.gauges
        gauges["ccany_shared_state_up"] = lambda: float(getattr(self.shared, "up", True))
        gauges["ccany_shared_state_outages_total"] = lambda: float(getattr(self.shared, "outages", 0))
        gauges["ccany_admitted_ahead_total"] = lambda: float(getattr(self.shared, "admitted_ahead", 0))

    def _key_failed(self, provider: Provider, failure: KeyFailure) -> None:
        if (telling := self.fleet_keys.failed(provider, failure)) is not None:
            self._later(telling)

    async def _watch_keys(self) -> None:
        """Keys that failed in another gateway process cool down or are disabled here too (within a second)."""
        while True:
            await asyncio.sleep(KEYS_POLL)
            try:
                await self.fleet_keys.refresh()
            except Exception as error:  # the next poll tries again; the gateway serves on meanwhile
                logger.error(f"ccany: shared provider keys could not be read: {describe_failure(error)}")

    async def _renew_leases(self) -> None:
        """A stream's place expires unless renewed, so that a process that dies does not hold its places."""
        while True:
            await asyncio.sleep(LEASE_RENEWAL)
            leases = [admission.lease for _, admission in list(self._admitted.values()) if admission.lease]
            if not leases:
                continue
            try:
                await self.shared.renew(leases, STREAM_LEASE_TTL)
            except Exception as error:  # the next round tries again
                logger.error(f"ccany: stream places could not be renewed: {describe_failure(error)}")

    async def done(self) -> None:
        for task in (self._watching, self._renewing):
            if task is not None:
                task.cancel()
        if self._counting:
            await asyncio.wait(list(self._counting), timeout=5)
        if isinstance(self.shared, RedisState):
            await self.shared.close()

    def internal_error(self, flow: http.HTTPFlow, hook: str, error: Exception) -> None:
        self.gateway.internal_error(flow, hook, error)

    # -- hooks

    @fail_closed_async
    async def requestheaders(self, flow: http.HTTPFlow) -> None:
        """Before the gateway routes the request: a key (or owner) over a budget that names an over-budget model
        has its request routed as that model (the flow log notes it) instead of being refused at admission."""
        state = self.gateway.state(flow)
        if state is None or state.error is not None or flow.response is not None or state.client is None:
            return
        payers = state.client.payers
        if not any(payer.limits.over_budget_model for payer in payers):
            return
        if flow.request.path.split("?", 1)[0] != endpoints.MESSAGES:
            return
        state.model_override = await over_budget_model(self.shared, payers, time.time())

    @fail_closed_async
    async def request(self, flow: http.HTTPFlow) -> None:
        """After the gateway has read the request (a stream or not) and before the key injector: a request the
        gateway answers itself (count_tokens, the response cache, an error) is never refused or counted."""
        state = self.gateway.state(flow)
        if state is None or state.handler != "messages" or flow.response is not None or state.error is not None:
            return
        client = state.client
        if client is None or not (client.limits or client.owner_limits):
            return
        try:
            admission = await admit(self.shared, client.payers, state.stream, state.request_id, time.time())
        except GatewayError as error:
            state.fail(error)
            state.sent = False  # never sent: no key, and the gateway does not take this answer for the upstream's
            self.gateway.metrics.count("ccany_limited_total", (("reason", REASONS.get(error.status, "other")),))
            replies.reply(flow, state.request_id, error.status, error.body(), error=error)
            return
        self._admitted[flow] = (client, admission)

    @fail_closed
    def responseheaders(self, flow: http.HTTPFlow) -> None:
        self._add_headers(flow)

    @fail_closed
    def response(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None and not flow.response.stream:  # a stream's headers went out long ago
            self._add_headers(flow)  # the gateway wrote a non-streamed answer's headers in its own response hook
        self._end(flow)

    @fail_closed
    def error(self, flow: http.HTTPFlow) -> None:
        self._end(flow)

    def _add_headers(self, flow: http.HTTPFlow) -> None:
        admitted = self._admitted.get(flow)
        if admitted is not None and flow.response is not None and admitted[1].headers:
            # in one pass (7 headers one by one cost 17 µs); ours replace an upstream's own (the anthropic kind's)
            ours = tuple((name.encode(), value.encode()) for name, value in admitted[1].headers)
            names = {name for name, _ in ours}
            headers = flow.response.headers
            headers.fields = tuple(field for field in headers.fields if field[0].lower() not in names) + ours

    def _end(self, flow: http.HTTPFlow) -> None:
        admitted = self._admitted.pop(flow, None)
        state = self.gateway.state(flow)
        if admitted is None or state is None:
            return
        client, admission = admitted
        record = state.record
        adds = used_by(client.payers, record.usage, record.cost_usd, record.ended or time.time())
        if isinstance(self.shared, LocalState):  # counting in memory: no round trip, no task
            self.shared.count_now(adds, admission.lease)
        elif adds or admission.lease is not None:
            self._later(self.shared.count(adds, admission.lease))  # after the answer: the client does not wait

    def _later(self, work: Any) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._counting.add(task)
        task.add_done_callback(self._counted)

    def _counted(self, task: asyncio.Task) -> None:
        self._counting.discard(task)
        if not task.cancelled() and (error := task.exception()) is not None:
            logger.error(f"ccany: what a flow used could not be counted: {describe_failure(error)}")
