"""The gateway addon: its hooks admit a client request, route it, have its dialect build the upstream request,
and turn the upstream's answer back. What it learns goes into the flow's record (`FlowState.record`) for the log.

The rest lives beside it: the gateway's own answers (`replies`), the upstream request (`upstream_request`), the
key (`key_injector`, `key_failures`), the proxy's own endpoints (`local_answers`), and what each provider kind
speaks (`upstreams/dialects.py`).
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from dataclasses import replace
from typing import Any

from mitmproxy import ctx, exceptions, http

from ccany_addon.anthropic_api.count_tokens import rough_input_tokens
from ccany_addon.anthropic_api.errors import GatewayError, mask_secrets
from ccany_addon.anthropic_api.schema import MessagesRequest, parse
from ccany_addon.anthropic_api.tool_cache import ToolCache
from ccany_addon.config.access import authenticate, authorize_model, presented_key
from ccany_addon.config.addon import ConfigWatcher
from ccany_addon.config.options import declare
from ccany_addon.config.snapshot import ConfigSnapshot
from ccany_addon.converters import prompt_cache
from ccany_addon.converters.anthropic_passthrough import message_facts
from ccany_addon.converters.common import ResponseContext, UpstreamTarget
from ccany_addon.proxy import (
    endpoints,
    key_injector,
    local_answers,
    mitm_compat,
    replies,
    request_body,
    upstream_failures,
    upstream_request,
)
from ccany_addon.proxy.fail_closed import (
    ReplacementBody,
    SecretFilter,
    fail_closed,
    internal_error_message,
    log_internal_error,
)
from ccany_addon.proxy.flow_state import FlowState
from ccany_addon.proxy.key_failures import KeyFailures
from ccany_addon.proxy.metrics import Metrics
from ccany_addon.proxy.option_checks import require_bounds, reverse_upstream
from ccany_addon.proxy.response_cache import ResponseCache, cache_key
from ccany_addon.upstreams import routing
from ccany_addon.upstreams.dialects import DIALECTS, Conversion
from ccany_addon.upstreams.key_pool import KeyPools
from ccany_addon.upstreams.models import TIERS, ModelTiers, capabilities
from ccany_addon.upstreams.routing import Upstream
from ccany_addon.util.json_codec import loads

logger = logging.getLogger("ccany")

_NO_CONFIG = ConfigSnapshot()

# An upstream answer is untrusted input: one a converter cannot read raises one of these, the upstream's failure.
_UNREADABLE = (TypeError, ValueError, KeyError, AttributeError, IndexError, OverflowError, RecursionError)


class Gateway:
    """Turns Anthropic Messages requests into upstream requests and the answers back."""

    def __init__(self, config: ConfigWatcher | None = None) -> None:
        self.config = config
        self.upstream: Upstream | None = None  # the reverse-mode target: used when no config route matches
        self.tiers = ModelTiers("", "", "")
        self._temperature: float | None = None
        self.pools = KeyPools()
        self.keys = KeyFailures(self.pools, lambda: self.snapshot,
                                config.record_key_failure if config is not None else lambda failure: None)
        self.cache = ResponseCache()
        self.tools = ToolCache()  # a session's tools array, parsed and converted once for all its turns
        self.metrics = Metrics(lambda: (self.tiers, self.snapshot))  # model labels: configured models only
        self._flows: weakref.WeakKeyDictionary[http.HTTPFlow, FlowState] = weakref.WeakKeyDictionary()
        self._secret_filter = SecretFilter(lambda: self.known_secrets)
        self.counting: set[asyncio.Task] = set()  # count_tokens answers counting on a thread
        self._known_secrets: tuple[ConfigSnapshot | None, str, tuple[str, ...]] = (None, "", ())

    # -- options

    def load(self, loader: Any) -> None:
        declare(loader, "gateway")

    def configure(self, updated: set[str]) -> None:
        options = ctx.options
        require_bounds(updated, ("ccany_request_timeout", "ccany_max_body_size"),
                       ("ccany_max_tokens_limit", "ccany_long_context_threshold", "ccany_cache_ttl",
                        "ccany_cache_max_entries", "ccany_cache_max_mb"))
        self.cache.resize(options.ccany_cache_ttl, options.ccany_cache_max_entries,
                          options.ccany_cache_max_mb * 1024 * 1024)
        if "ccany_upstream_path" in updated and not options.ccany_upstream_path.startswith("/"):
            raise exceptions.OptionsError("ccany_upstream_path must start with '/'")
        if options.ccany_unknown_claude_tier not in TIERS:  # mitmproxy shows `choices` but does not enforce them
            raise exceptions.OptionsError(f"ccany_unknown_claude_tier must be one of {', '.join(TIERS)}")
        if "ccany_temperature_override" in updated:
            text = options.ccany_temperature_override.strip()
            try:
                self._temperature = float(text) if text else None
            except ValueError:
                raise exceptions.OptionsError("ccany_temperature_override must be a number or empty") from None
        if "ccany_max_body_size" in updated:
            # mitmproxy then stops reading a chunked body at the limit (and refuses a larger Content-Length
            # before reading) instead of buffering it whole; a non-streamed upstream answer is bounded alike.
            options.body_size_limit = str(options.ccany_max_body_size)
        self.tiers = ModelTiers(options.ccany_big_model, options.ccany_middle_model, options.ccany_small_model,
                                options.ccany_unknown_claude_tier)
        self.upstream = reverse_upstream(options)
        # The default `eager` strategy connects to the reverse target for every client connection.
        if options.connection_strategy != "lazy":
            options.connection_strategy = "lazy"

    def running(self) -> None:
        mitm_compat.install()
        self._secret_filter.install()
        if self.upstream is None:
            logger.warning("ccany: no upstream; start mitmproxy with --mode reverse:https://api.example.com")
        elif not self.upstream.key:
            logger.warning(
                f"ccany: no upstream API key: set {ctx.options.ccany_upstream_key_env} in the proxy's environment; "
                "until then clients get an authentication_error saying so"
            )
        else:
            logger.info(f"ccany: forwarding to {self.upstream.scheme}://{self.upstream.name}")

    def done(self) -> None:
        mitm_compat.uninstall()
        self._secret_filter.uninstall()

    # -- hooks

    @fail_closed
    def requestheaders(self, flow: http.HTTPFlow) -> None:
        """What can be refused from the headers is refused before the body is read: its size, its encoding,
        and (when the gateway has client keys) the client's key."""
        state = self._flows[flow] = FlowState.begin(flow)
        headers = flow.request.headers
        try:
            length = headers.get("content-length", "")
            if length.isdigit() and int(length) > ctx.options.ccany_max_body_size:
                raise request_body.too_large(int(length), ctx.options.ccany_max_body_size)
            request_body.check_encoding(headers.get("content-encoding", ""))
            if flow.request.path.startswith("/v1/"):
                self._admit(flow, state)
        except GatewayError as error:
            state.fail(error)
            mitm_compat.refuse(flow, replies.answer(state.request_id, error.status, error.body(), error=error))

    @fail_closed
    def request(self, flow: http.HTTPFlow) -> None:
        state = self._flows.get(flow)
        if state is None or flow.response is not None or state.error is not None:
            return
        state.record.client_request = flow.request.raw_content
        path = flow.request.path.split("?", 1)[0]
        try:
            handler = state.handler = endpoints.route(flow.request.method, path)
            if handler == "messages":
                self._forward(flow, state)
            elif handler == "count_tokens":
                raw = request_body.of(flow.request, ctx.options.ccany_max_body_size)
                local_answers.count_tokens(self, flow, state, raw)
            else:
                local_answers.answer(self, flow, state, handler, path)
        except GatewayError as error:
            self._fail(flow, state, error)

    @fail_closed
    def responseheaders(self, flow: http.HTTPFlow) -> None:
        key_injector.redact(flow)
        state = self._flows.get(flow)
        if state is None or state.response_context is None or state.dialect is None:
            return
        self._stop_timer(state)
        response = flow.response
        assert response is not None
        record = state.record
        record.upstream_status, record.upstream_response_headers = response.status_code, response.headers.fields
        if state.forwarded_at is not None:
            record.upstream_ttfb = time.time() - state.forwarded_at
        if response.status_code == 200 and state.stream:
            state.translator = state.dialect.translator(state.response_context, state.upstream_name)
            response.headers = replies.header_fields(
                ("content-type", "text/event-stream; charset=utf-8"),
                ("cache-control", "no-cache"),
                ("transfer-encoding", "chunked"),
                ("request-id", state.request_id),
            )
            response.stream = state.translator

    @fail_closed
    def response(self, flow: http.HTTPFlow) -> None:
        state = self._flows.get(flow)
        if state is None or state.response_context is None or state.translator is not None:
            return
        if not state.sent:  # its responseheaders hook failed; the answer is already the gateway's error
            return
        response = flow.response
        assert response is not None
        state.record.upstream_response = response.raw_content
        try:
            self._answer_upstream(flow, state, response)
        except GatewayError as error:
            self._fail(flow, state, error)
        except _UNREADABLE as error:
            logger.warning(mask_secrets(f"ccany: {state.request_id}: unreadable answer from {state.upstream_name}: "
                                        f"{type(error).__name__}: {error}"[:500], self.known_secrets))
            self._fail(flow, state, GatewayError(
                502, f"{state.upstream_name} upstream answered with data of an unexpected shape "
                     f"({type(error).__name__})"))

    @fail_closed
    def error(self, flow: http.HTTPFlow) -> None:
        key_injector.redact(flow)
        state = self._flows.get(flow)
        if state is None:
            return
        self._stop_timer(state)
        message = flow.error.msg if flow.error else "unknown error"
        if flow.response is None:
            failure = state.error
            if failure is None and mitm_compat.body_too_large(message):
                failure = request_body.too_large(f"more than {ctx.options.ccany_max_body_size}",
                                                  ctx.options.ccany_max_body_size)
            elif failure is None and state.response_context is not None:
                failure = upstream_failures.unanswered(flow, state, message, ctx.options.ccany_request_timeout)
            if failure is not None:
                state.fail(failure)
                answer = replies.answer(state.request_id, failure.status, failure.body(), error=failure)
                mitm_compat.answer_failure(flow.request, answer)
                message = failure.message
        logger.info(f"ccany: {state.request_id} failed: {message}")

    def internal_error(self, flow: http.HTTPFlow, hook: str, error: Exception) -> None:
        """A hook raised: the flow ends in the gateway's own 500, never in what mitmproxy would do with it."""
        state = self._flows.get(flow)
        if state is None:
            state = self._flows[flow] = FlowState.begin(flow)
        key_injector.redact(flow)
        self._stop_timer(state)
        log_internal_error(state.request_id, hook, error, self.known_secrets)
        failure = GatewayError(500, internal_error_message(state.request_id))
        state.fail(failure)
        state.translator, state.sent = None, False
        answer = replies.answer(state.request_id, failure.status, failure.body(), error=failure)
        if flow.error is not None or hook == "error":
            mitm_compat.answer_failure(flow.request, answer)
        elif hook == "responseheaders" and flow.response is not None:
            # The upstream's body is still to come: the client gets the error in its place.
            flow.response.status_code, flow.response.reason = answer.status_code, answer.reason
            flow.response.headers = answer.headers
            flow.response.headers["transfer-encoding"] = "chunked"
            flow.response.stream = ReplacementBody(failure.body())
        else:
            flow.response = answer

    # -- forwarding

    def _admit(self, flow: http.HTTPFlow, state: FlowState) -> None:
        """Client keys: when the config has any, every /v1 request needs a valid one."""
        snapshot = self.snapshot
        key = presented_key(flow.request.headers) if snapshot.client_keys else None  # unused without keys
        state.client = authenticate(snapshot, key, state.record.client_addr)
        state.record.client_key_id = state.client.id if state.client else None

    def _forward(self, flow: http.HTTPFlow, state: FlowState) -> None:
        raw = request_body.of(flow.request, ctx.options.ccany_max_body_size)
        request = parse(MessagesRequest, raw, tools=self.tools)
        record = state.record
        record.last_message = request.messages[-1] if request.messages else None
        if (billing := prompt_cache.billing_facts(request)) is not None:
            record.cc_version, record.cc_entrypoint = billing.cc_version, billing.cc_entrypoint
        state.prompt_cache_key = prompt_cache.cache_key(flow.request.headers.get("x-claude-code-session-id"))
        authorize_model(state.client, request.model)
        estimated_tokens = rough_input_tokens(request, len(flow.request.raw_content or b""))
        snapshot = self.snapshot
        self.pools.forget_disabled(snapshot)
        scenarios = routing.request_scenarios(request, estimated_tokens, ctx.options.ccany_long_context_threshold,
                                              flow.request.headers.get("x-claude-code-request-class", ""))
        choice = routing.choose(state.model_override or request.model, snapshot, self.upstream, self.tiers, scenarios,
                                lambda provider: self.pools.ready_in(provider) == 0)
        upstream, upstream_model = choice.upstream, choice.model
        state.upstream, state.provider, state.stream = upstream, choice.provider, request.stream
        record.route, record.client_model = choice.rule, request.model
        dialect = state.dialect = DIALECTS[upstream.kind]
        if (refusal := dialect.refusal(request)) is not None:
            raise refusal
        if not request.stream and self.cache.enabled:
            client = str(state.client.id) if state.client else ""
            state.cache_key = cache_key(client, upstream.provider, upstream_model, flow.request.raw_content or b"")
            if (cached := self.cache.get(state.cache_key)) is not None:
                record.cache_hit, record.provider, record.upstream_model = True, upstream.provider, upstream_model
                record.stop_reason, record.usage = message_facts(loads(cached))
                replies.reply(flow, state.request_id, 200, cached)
                return
        if choice.provider is not None:
            state.key = self.pools.pick(choice.provider)
            if state.key is None:
                raise self.keys.none_healthy(choice.provider)
            record.provider_key, record.secrets = state.key.label, (state.key.secret,)
            upstream = state.upstream = replace(upstream, key=state.key.secret)
        if not upstream.key:
            raise GatewayError(401, upstream.missing_key)
        record.provider, record.upstream_model, record.is_stream = upstream.provider, upstream_model, request.stream
        state.response_context = ResponseContext.for_request(request, estimated_tokens, self.known_secrets)
        caps = capabilities(upstream_model, snapshot.capabilities)
        sends_cache_key = prompt_cache.sends_cache_key(upstream.kind, upstream.host, caps.prompt_cache_key)
        outgoing = dialect.build(Conversion(
            request, raw,
            UpstreamTarget(upstream_model, caps, ctx.options.ccany_max_tokens_limit,
                           ctx.options.ccany_fold_system_messages or not caps.late_system,
                           reasoning_object=upstream.is_openrouter, tools=self.tools),
            upstream.path_prefix, upstream.api_version,
            query=flow.request.path.split("?", 1)[1] if "?" in flow.request.path else "",
            client_headers=flow.request.headers,
            temperature=self._temperature,
            prompt_cache_key=state.prompt_cache_key if sends_cache_key else None,
        ))
        state.late_system = outgoing.late_system
        for note in outgoing.notes:
            logger.info(f"ccany: {state.request_id}: {note}")
        record.notes = list(outgoing.notes) + ([f"over budget: routed as {state.model_override}"]
                                               if state.model_override else [])
        upstream_request.rewrite(flow.request, upstream, outgoing, request.stream)
        record.upstream_url = upstream_request.url(upstream, outgoing.path)
        record.upstream_request = outgoing.body
        flow.comment = f"{request.model} → {upstream_model}"
        state.forwarded_at = time.time()
        state.sent = True
        state.timer = asyncio.get_running_loop().call_later(
            ctx.options.ccany_request_timeout, self._timeout, flow, state
        )

    def _timeout(self, flow: http.HTTPFlow, state: FlowState) -> None:
        """No response headers in time: drop the upstream connection; the client gets an Anthropic error."""
        state.timer = None
        if flow.response is not None or flow.error is not None:
            return
        state.timed_out = True
        mitm_compat.cancel_upstream(flow, f"ccany: no answer within {ctx.options.ccany_request_timeout} s")

    @staticmethod
    def _stop_timer(state: FlowState) -> None:
        if state.timer is not None:
            state.timer.cancel()
            state.timer = None

    # -- answers

    def _answer_upstream(self, flow: http.HTTPFlow, state: FlowState, response: http.Response) -> None:
        assert state.response_context is not None and state.dialect is not None
        raw = upstream_failures.decoded_answer(state, response, ctx.options.ccany_max_body_size)
        if response.status_code != 200:
            raise upstream_failures.answered(state, response, raw, self.keys, self.known_secrets)
        try:
            body = loads(raw)
        except ValueError:
            raise GatewayError(502, f"{state.upstream_name} upstream answered with non-JSON data") from None
        content, state.record.stop_reason, state.record.usage = state.dialect.answer(raw, body,
                                                                                    state.response_context)
        replies.reply(flow, state.request_id, 200, content)
        if state.cache_key is not None:
            self.cache.put(state.cache_key, content)

    def _fail(self, flow: http.HTTPFlow, state: FlowState, error: GatewayError) -> None:
        error.message = mask_secrets(error.message, self.known_secrets)
        state.fail(error)
        replies.reply(flow, state.request_id, error.status, error.body(), error=error)

    # -- what the other addons ask

    @property
    def snapshot(self) -> ConfigSnapshot:
        return self.config.snapshot if self.config is not None else _NO_CONFIG

    @property
    def known_secrets(self) -> tuple[str, ...]:
        """Every upstream key the gateway holds, to be masked wherever text leaves it."""
        snapshot, own = self.snapshot, self.upstream.key if self.upstream else ""
        # asked per request and per log line: worked out again only when the config or the key changes
        if self._known_secrets[0] is not snapshot or self._known_secrets[1] != own:
            secrets = tuple(dict.fromkeys(((own,) if own else ()) + snapshot.secrets))
            self._known_secrets = (snapshot, own, secrets)
        return self._known_secrets[2]

    def state(self, flow: http.HTTPFlow) -> FlowState | None:
        return self._flows.get(flow)

    def upstream_key(self, flow: http.HTTPFlow) -> tuple[str, str] | None:
        """The key header for a request the gateway built whole (`sent`) and has not answered itself."""
        state = self._flows.get(flow)
        if state is None or state.upstream is None or not state.sent or flow.response is not None:
            return None
        return state.upstream.key_header()
