"""The mitmproxy addon: hooks only, delegating to the endpoints, the schema and the converters."""

from __future__ import annotations

import asyncio
import logging
import math
import os
import time
import weakref
from dataclasses import dataclass, field, replace
from typing import Any

from mitmproxy import ctx, exceptions, http
from mitmproxy.net.http import status_codes
from mitmproxy.proxy import mode_specs

from ccany_addon.anthropic_api.count_tokens import count_tokens, rough_input_tokens
from ccany_addon.anthropic_api.errors import GatewayError, mask_secrets
from ccany_addon.anthropic_api.schema import CountTokensRequest, Message, MessagesRequest, parse
from ccany_addon.config.access import authenticate, authorize_model, presented_key
from ccany_addon.config.addon import ConfigWatcher
from ccany_addon.config.snapshot import ClientKey, ConfigSnapshot, Provider, ProviderKey
from ccany_addon.converters import anthropic_passthrough as passthrough
from ccany_addon.converters import prompt_cache
from ccany_addon.converters.capability_fit import fit_request
from ccany_addon.converters.common import ResponseContext, UpstreamTarget
from ccany_addon.converters.error_words import client_words
from ccany_addon.converters.shared_answer import upstream_error
from ccany_addon.proxy import endpoints, mitm_compat, request_body
from ccany_addon.proxy.fail_closed import (
    ReplacementBody,
    SecretFilter,
    fail_closed,
    internal_error_message,
    log_internal_error,
)
from ccany_addon.proxy.metrics import Metrics
from ccany_addon.proxy.option_checks import require_bounds
from ccany_addon.proxy.response_cache import ResponseCache, cache_key
from ccany_addon.upstreams import routing
from ccany_addon.upstreams.dialects import DIALECTS, Dialect, StreamTranslator
from ccany_addon.upstreams.key_pool import KeyPools, cooldown_from, is_key_failure
from ccany_addon.upstreams.kinds import KEY_HEADERS, REDACTED
from ccany_addon.upstreams.models import TIERS, ModelTiers, capabilities
from ccany_addon.upstreams.routing import Upstream
from ccany_addon.util.json_codec import dumps, loads

logger = logging.getLogger("ccany")

_NO_CONFIG = ConfigSnapshot()

USER_AGENT = "ccany-addon/0.1"
_KEY_HEADER_NAMES = frozenset(name.encode() for name in KEY_HEADERS)
_REDACTED = REDACTED.encode()


def header_fields(*pairs: tuple[str, str]) -> http.Headers:
    """Headers from (name, value) pairs, names in lower case: mitmproxy's keyword form costs four times as
    much (8.8 vs 2.1 µs for four headers), and every flow builds two or three sets."""
    return http.Headers([(name.encode(), value.encode("utf-8", "surrogateescape")) for name, value in pairs])


@dataclass(slots=True)
class FlowState:
    """What the gateway remembers about one client request while it is in flight."""

    request_id: str
    started: float
    client_model: str = ""
    upstream_model: str = ""
    stream: bool = False
    response_context: ResponseContext | None = None
    translator: StreamTranslator | None = None
    timer: asyncio.TimerHandle | None = None
    timed_out: bool = False
    error: GatewayError | None = None
    notes: list[str] = field(default_factory=list)
    upstream: Upstream | None = None
    route: str | None = None
    client: ClientKey | None = None
    provider: Provider | None = None  # a config DB provider: its key pool chose `key`
    key: ProviderKey | None = None
    cache_hit: bool = False
    cache_key: bytes | None = None  # set when the answer may be cached
    # What the flow log needs of what the gateway rewrites or replaces.
    handler: str = ""
    client_request: bytes | None = None
    last_message: Message | None = None  # the turn's newest input, for the log's full-text search
    client_headers: tuple = ()
    client_path: str = ""
    forwarded_at: float | None = None
    upstream_status: int | None = None
    upstream_headers: tuple = ()
    upstream_answered_at: float | None = None
    upstream_body: bytes | None = None
    stop_reason: str | None = None
    usage: dict = field(default_factory=dict)
    sent: bool = False  # the upstream request is whole and the gateway's own: only then does it get the key
    late_system: bool = False  # the converted request carries a system message after the first
    cc_version: str | None = None  # from Claude Code's billing-header system block, for the flow log
    cc_entrypoint: str | None = None
    prompt_cache_key: str | None = None  # the session's hashed id, for upstreams that take `prompt_cache_key`


# Auto mode asks the upstream to run its safety check (`safeguards`); a converting upstream cannot. The gateway
# protocol's answer: a 400 whose message names the field, and Claude Code retries without it and runs the check
# itself with ordinary requests (its own parser reads the message from `safeguards:` on).
SAFEGUARDS_REFUSED = ("safeguards: not supported by this gateway's upstream model; send the request without it and "
                      "run auto mode's check with ordinary requests")

# count_tokens bodies larger than this are counted on a thread (a 1 MB Claude Code body counts in ~40 ms).
COUNT_ON_LOOP_BYTES = 1024 * 1024


def request_id(flow: http.HTTPFlow) -> str:
    return "req_" + flow.id.replace("-", "")


def _reverse_target(modes: Any) -> tuple[str, str, int] | None:
    for spec in modes or ():
        mode = mode_specs.ProxyMode.parse(spec)
        if isinstance(mode, mode_specs.ReverseMode) and mode.scheme in ("http", "https"):
            return mode.scheme, mode.address[0], mode.address[1]
    return None


class Gateway:
    """Turns Anthropic Messages requests into upstream requests and the answers back."""

    def __init__(self, config: ConfigWatcher | None = None) -> None:
        self.config = config
        self.upstream: Upstream | None = None  # the reverse-mode target: used when no config route matches
        self.tiers = ModelTiers("", "", "")
        self._temperature: float | None = None
        self.pools = KeyPools()
        self.cache = ResponseCache()
        self.metrics = Metrics(lambda: (self.tiers, self.snapshot))  # model labels: configured models only
        self._flows: weakref.WeakKeyDictionary[http.HTTPFlow, FlowState] = weakref.WeakKeyDictionary()
        self._secret_filter = SecretFilter(lambda: self.known_secrets)
        self._counting: set[asyncio.Task] = set()
        self._known_secrets: tuple[ConfigSnapshot | None, str, tuple[str, ...]] = (None, "", ())

    # -- options

    def load(self, loader: Any) -> None:
        loader.add_option("ccany_big_model", str, "gpt-4o", "Upstream model for opus requests.")
        loader.add_option(
            "ccany_middle_model", str, "", "Upstream model for sonnet requests (empty: the big model)."
        )
        loader.add_option("ccany_small_model", str, "gpt-4o-mini", "Upstream model for haiku requests.")
        loader.add_option(
            "ccany_unknown_claude_tier", str, "big",
            "Tier (big, middle, small) of a claude-* name with no haiku/sonnet/opus in it, such as claude-fable-5-2.",
            choices=TIERS,
        )
        loader.add_option(
            "ccany_upstream_key_env", str, "OPENAI_API_KEY",
            "Environment variable holding the upstream API key (the key itself is never an option).",
        )
        loader.add_option("ccany_upstream_path", str, "/v1", "Path prefix of the upstream's API.")
        loader.add_option(
            "ccany_request_timeout", int, 600,
            "Seconds to wait for the upstream's response headers before giving up.",
        )
        loader.add_option(
            "ccany_max_tokens_limit", int, 0,
            "Clamp max_tokens to this many (0: only the upstream model's known limit).",
        )
        loader.add_option(
            "ccany_max_body_size", int, 32 * 1024 * 1024, "Largest client request body accepted, in bytes."
        )
        loader.add_option(
            "ccany_temperature_override", str, "",
            "Send every request upstream with this temperature (empty: the client's own).",
        )
        loader.add_option(
            "ccany_cache_ttl", int, 0,
            "Seconds a non-streamed answer is reused for an identical request (0: no response cache).",
        )
        loader.add_option("ccany_cache_max_entries", int, 1000, "Most answers the response cache keeps.")
        loader.add_option("ccany_cache_max_mb", int, 64, "Most megabytes of answers the response cache keeps.")
        loader.add_option(
            "ccany_long_context_threshold", int, 60_000,
            "Estimated input tokens above which a request meets the long_context route scenario (0: never).",
        )
        loader.add_option(
            "ccany_fold_system_messages", bool, False,
            "Fold system messages from the conversation into the leading one (for strict backends).",
        )

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
        target = _reverse_target(options.mode)
        key_env = options.ccany_upstream_key_env
        if target is None:
            self.upstream = None
        else:
            scheme, host, port = target
            self.upstream = Upstream(
                scheme, host, port, options.ccany_upstream_path.rstrip("/"), os.environ.get(key_env, ""),
                f"ccany has no upstream API key: set {key_env} in the proxy's environment and restart it",
            )
        # The default `eager` strategy connects to the reverse target for every client connection.
        if options.connection_strategy != "lazy":
            options.connection_strategy = "lazy"

    def running(self) -> None:
        mitm_compat.install()
        self._secret_filter.install()
        # The key goes in last, after mitmweb's view has taken its copy of the request.
        if ctx.master.addons.get("ccanykeyinjector") is None:
            ctx.master.addons.add(KeyInjector(self))
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
        state = FlowState(request_id(flow), time.time())
        self._flows[flow] = state
        headers = flow.request.headers
        try:
            length = headers.get("content-length", "")
            if length.isdigit() and int(length) > ctx.options.ccany_max_body_size:
                raise request_body.too_large(int(length), ctx.options.ccany_max_body_size)
            request_body.check_encoding(headers.get("content-encoding", ""))
            if flow.request.path.startswith("/v1/"):
                self._admit(flow, state)
        except GatewayError as error:
            state.error = error
            mitm_compat.refuse(flow, self._response(state, error.status, error.body(), error=error))

    @fail_closed
    def request(self, flow: http.HTTPFlow) -> None:
        state = self._flows.get(flow)
        if state is None or flow.response is not None or state.error is not None:
            return
        state.client_request = flow.request.raw_content
        state.client_headers = flow.request.headers.fields
        state.client_path = flow.request.path
        path = flow.request.path.split("?", 1)[0]
        try:
            handler = state.handler = endpoints.route(flow.request.method, path)
            if handler == "messages":
                self._forward(flow, state)
            elif handler == "count_tokens":
                counted = parse(CountTokensRequest, self._decoded(flow))
                authorize_model(state.client, counted.model)
                if len(flow.request.raw_content or b"") > COUNT_ON_LOOP_BYTES:
                    self._count_off_loop(flow, state, counted)
                else:
                    self._answer(flow, state, 200, {"input_tokens": count_tokens(counted)})
            elif handler == "models":
                self._answer(flow, state, 200, endpoints.models_list(self.tiers, self.snapshot, self.upstream))
            elif handler == "model":
                self._answer(flow, state, 200, endpoints.model_info(self.tiers, path.rsplit("/", 1)[1],
                                                                    self.snapshot, self.upstream))
            elif handler == "metrics":
                text = b"" if flow.request.method == "HEAD" else self.metrics.render().encode()
                flow.response = self._response(state, 200, text, "text/plain; version=0.0.4; charset=utf-8")
            elif handler == "ready":
                ready = (self.upstream is not None and bool(self.upstream.key)) or any(
                    provider.keys for provider in self.snapshot.providers.values()
                )
                self._answer(flow, state, 200 if ready else 503, {"status": "ready" if ready else "not ready"})
            else:
                self._answer(flow, state, 200, {"status": "ok"})
        except GatewayError as error:
            self._answer_error(flow, state, error)

    @fail_closed
    def responseheaders(self, flow: http.HTTPFlow) -> None:
        KeyInjector.redact(flow)
        state = self._flows.get(flow)
        if state is None or state.response_context is None:
            return
        self._stop_timer(state)
        response = flow.response
        assert response is not None
        state.upstream_status, state.upstream_headers = response.status_code, response.headers.fields
        state.upstream_answered_at = time.time()
        if response.status_code == 200 and state.stream:
            name = self._upstream_name(state)
            anthropic = state.upstream is not None and state.upstream.kind == "anthropic"
            state.translator = (
                passthrough.AnthropicEventStream(name, self.known_secrets) if anthropic
                else DIALECTS[state.upstream.kind].translator(state.response_context, name)
            )
            response.headers = header_fields(
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
        state.upstream_body = response.raw_content
        try:
            self._convert_answer(flow, state, response)
        except GatewayError as error:
            self._answer_error(flow, state, error)
        except (TypeError, ValueError, KeyError, AttributeError, IndexError, OverflowError, RecursionError) as error:
            # An upstream answer is untrusted input: one of an unexpected shape is the upstream's failure.
            logger.warning(mask_secrets(f"ccany: {state.request_id}: unreadable answer from "
                                        f"{self._upstream_name(state)}: {type(error).__name__}: {error}"[:500],
                                        self.known_secrets))
            self._answer_error(flow, state, GatewayError(
                502, f"{self._upstream_name(state)} upstream answered with data of an unexpected shape "
                     f"({type(error).__name__})"))

    def _convert_answer(self, flow: http.HTTPFlow, state: FlowState, response: http.Response) -> None:
        assert state.response_context is not None and state.upstream is not None
        raw = self._decoded_answer(state, response)
        if response.status_code != 200:
            error = upstream_error(response.status_code, raw, self._upstream_name(state), self.known_secrets)
            if state.upstream.kind != "anthropic" and \
                    (words := client_words(response.status_code, error.message, state.late_system)) is not None:
                # a refusal of this request the CLI recovers from, in the words it acts on (not a key's failure)
                state.notes.append(f"upstream said: {error.message[:300]}")
                raise GatewayError(400, words, should_retry=False)
            if response.status_code in (401, 403) and state.key is None:
                error.message = (f"ccany: the upstream refused the gateway's own API key (not your client key); "
                                 f"whoever runs the gateway must fix it: {error.message}")
                error.should_retry = False
            if state.key is not None and is_key_failure(response.status_code):
                error = self._key_failed(state, response, raw, error)
            elif (wait := cooldown_from(response.headers, raw, time.time())) is not None:
                error.retry_after = max(0, math.ceil(wait))
            raise error
        try:
            body = loads(raw)
        except ValueError:
            raise GatewayError(502, f"{self._upstream_name(state)} upstream answered with non-JSON data") from None
        if state.upstream.kind == "anthropic":
            state.stop_reason, state.usage = passthrough.message_facts(body)
            self._reply(flow, state, 200, raw)  # the upstream's answer, untouched
            if state.cache_key is not None:
                self.cache.put(state.cache_key, raw)
            return
        message = DIALECTS[state.upstream.kind].to_message(body, state.response_context)
        state.stop_reason, state.usage = message["stop_reason"], message["usage"]
        self._answer(flow, state, 200, message)
        if state.cache_key is not None:
            self.cache.put(state.cache_key, response.raw_content or b"")

    @fail_closed
    def error(self, flow: http.HTTPFlow) -> None:
        KeyInjector.redact(flow)
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
                failure = self._upstream_failure(flow, state, message)
            if failure is not None:
                state.error = failure
                answer = self._response(state, failure.status, failure.body(), error=failure)
                mitm_compat.answer_failure(flow.request, answer)
                message = failure.message
        logger.info(f"ccany: {state.request_id} failed: {message}")

    def _count_off_loop(self, flow: http.HTTPFlow, state: FlowState, counted: CountTokensRequest) -> None:
        """Counting a large conversation takes seconds of Python: it runs on a thread, which hands the event
        loop back every few milliseconds, while the flow waits (mitmproxy's intercept, made for this)."""
        async def count() -> None:
            try:
                tokens = await asyncio.to_thread(count_tokens, counted)
                self._answer(flow, state, 200, {"input_tokens": tokens})
            except Exception as error:
                self.internal_error(flow, "request", error)
            finally:
                self._counting.discard(task)
                flow.resume()

        flow.intercept()
        task = asyncio.get_running_loop().create_task(count())
        self._counting.add(task)  # the loop keeps only a weak reference to a task

    def _upstream_failure(self, flow: http.HTTPFlow, state: FlowState, message: str) -> GatewayError:
        name = self._upstream_name(state)
        if state.timed_out:
            return GatewayError(504, f"upstream {name} did not answer within {ctx.options.ccany_request_timeout} s")
        if flow.server_conn.timestamp_tcp_setup is None and state.upstream is not None:
            return GatewayError(500, f"ccany: upstream {name} is unreachable: {message}")
        return GatewayError(500, f"ccany: upstream {name} failed before answering: {message}")

    # -- forwarding

    def _admit(self, flow: http.HTTPFlow, state: FlowState) -> None:
        """Client keys: when the config has any, every /v1 request needs a valid one."""
        snapshot = self.snapshot
        key = presented_key(flow.request.headers) if snapshot.client_keys else None  # unused without keys
        peer = flow.client_conn.peername[0] if flow.client_conn.peername else ""
        state.client = authenticate(snapshot, key, peer)

    def _forward(self, flow: http.HTTPFlow, state: FlowState) -> None:
        raw = self._decoded(flow)
        request = parse(MessagesRequest, raw)
        state.last_message = request.messages[-1] if request.messages else None
        if (billing := prompt_cache.billing_facts(request)) is not None:
            state.cc_version, state.cc_entrypoint = billing.cc_version, billing.cc_entrypoint
        state.prompt_cache_key = prompt_cache.cache_key(flow.request.headers.get("x-claude-code-session-id"))
        authorize_model(state.client, request.model)
        estimated_tokens = rough_input_tokens(request, len(flow.request.raw_content or b""))
        snapshot = self.snapshot
        self.pools.forget_disabled(snapshot)
        scenarios = routing.request_scenarios(request, estimated_tokens, ctx.options.ccany_long_context_threshold,
                                              flow.request.headers.get("x-claude-code-request-class", ""))
        choice = routing.choose(request.model, snapshot, self.upstream, self.tiers, scenarios,
                                lambda provider: self.pools.ready_in(provider) == 0)
        upstream, upstream_model = choice.upstream, choice.model
        state.upstream, state.route, state.provider = upstream, choice.rule, choice.provider
        state.client_model, state.upstream_model, state.stream = request.model, upstream_model, request.stream
        if upstream.kind != "anthropic" and request.model_extra and "safeguards" in request.model_extra:
            raise GatewayError(400, SAFEGUARDS_REFUSED, should_retry=False)
        if not request.stream and self.cache.enabled:
            client = str(state.client.id) if state.client else ""
            state.cache_key = cache_key(client, upstream.provider, upstream_model, flow.request.raw_content or b"")
            if (cached := self.cache.get(state.cache_key)) is not None:
                state.cache_hit = True
                state.stop_reason, state.usage = passthrough.message_facts(loads(cached))
                flow.response = self._response(state, 200, cached)
                return
        if choice.provider is not None:
            state.key = self.pools.pick(choice.provider)
            if state.key is None:
                raise self._no_healthy_key(choice.provider)
            upstream = state.upstream = replace(upstream, key=state.key.secret)
        if not upstream.key:
            raise GatewayError(401, upstream.missing_key)
        state.response_context = ResponseContext.for_request(request, estimated_tokens, self.known_secrets)
        client_headers = flow.request.headers
        if upstream.kind == "anthropic":
            path = f"{upstream.path_prefix}/messages"
            if "?" in flow.request.path:
                path += "?" + flow.request.path.split("?", 1)[1]
            body = passthrough.to_anthropic_request(raw, request.model, upstream_model)
            headers = {name: client_headers[name] for name in passthrough.FORWARDED_HEADERS if name in client_headers}
            headers.setdefault("anthropic-version", passthrough.DEFAULT_VERSION)
        else:
            dialect = DIALECTS[upstream.kind]
            path = dialect.path(upstream.path_prefix, upstream_model, upstream.api_version, request.stream)
            body, headers = self._converted_body(dialect, request, upstream_model, state), {}
        self._send_upstream(flow, state, upstream, path, body, headers)

    def _converted_body(self, dialect: Dialect, request: MessagesRequest, upstream_model: str,
                        state: FlowState) -> bytes:
        caps = capabilities(upstream_model, self.snapshot.capabilities)
        target = UpstreamTarget(
            upstream_model,
            caps,
            ctx.options.ccany_max_tokens_limit,
            ctx.options.ccany_fold_system_messages or not caps.late_system,
            reasoning_object=state.upstream is not None and state.upstream.is_openrouter,
        )
        if self._temperature is not None:
            request = request.model_copy(update={"temperature": self._temperature})
        # the billing header changes per conversation: in front of the prompt it would defeat prefix caching
        request = prompt_cache.opening_system_first(prompt_cache.without_billing(request))
        request, fitted = fit_request(request, caps)
        state.late_system = not target.fold_system_messages and any(
            message.role == "system" for message in request.messages)
        body, notes = dialect.to_request(request, target)
        upstream = state.upstream
        if state.prompt_cache_key is not None and upstream is not None and \
                prompt_cache.sends_cache_key(upstream.kind, upstream.host, caps.prompt_cache_key):
            body["prompt_cache_key"] = state.prompt_cache_key
        notes = fitted + notes
        for note in notes:
            logger.info(f"ccany: {state.request_id}: {note}")
        state.notes = notes
        return dumps(body)

    def _send_upstream(self, flow: http.HTTPFlow, state: FlowState, upstream: Upstream, path: str, body: bytes,
                       headers: dict[str, str]) -> None:
        outgoing = flow.request
        host = upstream.host if upstream.port in (80, 443) else upstream.name
        http2 = outgoing.is_http2 or outgoing.is_http3  # these carry the host as :authority, not a header
        # A fresh header set: nothing of the client's (credentials, cookies) reaches the upstream; the
        # anthropic kind keeps only the protocol's own headers (version, betas).
        outgoing.headers = header_fields(
            *(() if http2 else (("host", host),)),
            ("content-type", "application/json"),
            ("content-length", str(len(body))),
            ("accept", "text/event-stream" if state.stream else "application/json"),
            ("user-agent", USER_AGENT),
            *headers.items(),
        )
        # Straight to the request's data: the setters of host and port each work out the Host header and
        # authority again (7 µs in all), and the headers are already whole.
        data = outgoing.data
        data.method, data.scheme, data.path = b"POST", upstream.scheme.encode(), path.encode("utf-8", "surrogateescape")
        data.host, data.port = upstream.host, upstream.port
        if http2 or data.authority:
            data.authority = host.encode()
        outgoing.raw_content = body  # its length is in the headers above (`.content =` costs 6 µs to say so)
        flow.comment = f"{state.client_model} → {state.upstream_model}"
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

    def _decoded_answer(self, state: FlowState, response: http.Response) -> bytes:
        """The upstream's body, decompressed within the same limit as a client's (it was asked for none)."""
        raw = response.raw_content or b""
        if not (encoding := response.headers.get("content-encoding", "")):
            return raw
        try:
            return request_body.decoded(raw, encoding, ctx.options.ccany_max_body_size)
        except GatewayError as error:
            raise GatewayError(502, f"{self._upstream_name(state)} upstream answered with a body the gateway "
                                    f"cannot read: {error.message}") from None

    @staticmethod
    def _decoded(flow: http.HTTPFlow) -> bytes:
        """The request body, decompressed within the size limit (mitmproxy's own decoding has no bound)."""
        raw = flow.request.raw_content or b""
        encoding = flow.request.headers.get("content-encoding", "")
        return request_body.decoded(raw, encoding, ctx.options.ccany_max_body_size) if encoding else raw

    @staticmethod
    def _answer_headers(state: FlowState, content_type: str, error: GatewayError | None) -> http.Headers:
        """Every answer the gateway gives itself carries the flow's request-id; errors say when to retry."""
        headers = [("content-type", content_type), ("request-id", state.request_id)]
        if error is not None and error.retry_after is not None:
            headers.append(("retry-after", str(error.retry_after)))
        if error is not None and error.should_retry is not None:
            headers.append(("x-should-retry", "true" if error.should_retry else "false"))
        return header_fields(*headers)

    def _response(self, state: FlowState, status: int, content: bytes, content_type: str = "application/json",
                  error: GatewayError | None = None) -> http.Response:
        return http.Response.make(status, content, self._answer_headers(state, content_type, error))

    def _reply(self, flow: http.HTTPFlow, state: FlowState, status: int, content: bytes,
               error: GatewayError | None = None) -> None:
        """The client's answer. The upstream's response, when there is one, is rewritten in place: a new one
        costs mitmproxy's type check of every field (17 µs)."""
        response = flow.response
        if response is None:
            flow.response = self._response(state, status, content, error=error)
            return
        response.status_code, response.reason = status, status_codes.RESPONSES.get(status, "")
        response.headers, response.trailers = self._answer_headers(state, "application/json", error), None
        response.content = content

    def _answer(self, flow: http.HTTPFlow, state: FlowState, status: int, body: dict) -> None:
        self._reply(flow, state, status, b"" if flow.request.method == "HEAD" else dumps(body))

    def _answer_error(self, flow: http.HTTPFlow, state: FlowState, error: GatewayError) -> None:
        error.message = mask_secrets(error.message, self.known_secrets)
        state.error = error
        self._reply(flow, state, error.status, error.body(), error)

    def internal_error(self, flow: http.HTTPFlow, hook: str, error: Exception) -> None:
        """A hook raised: the flow ends in the gateway's own 500, never in what mitmproxy would do with it."""
        state = self._flows.get(flow)
        if state is None:
            state = self._flows[flow] = FlowState(request_id(flow), time.time())
        KeyInjector.redact(flow)
        self._stop_timer(state)
        log_internal_error(state.request_id, hook, error, self.known_secrets)
        failure = state.error = GatewayError(500, internal_error_message(state.request_id))
        state.translator, state.sent = None, False
        answer = self._response(state, failure.status, failure.body(), error=failure)
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

    # -- key pools

    def _key_failed(self, state: FlowState, response: http.Response, raw: bytes,
                    error: GatewayError) -> GatewayError:
        """The key goes on cooldown (or is disabled); the client learns when a retry will find a healthy key."""
        assert state.key is not None and state.provider is not None
        failure = self.pools.failed(state.key, response.status_code, response.headers, raw, error.message)
        if self.config is not None:
            self.config.record_key_failure(failure)
        what = f"disabled ({failure.disabled})" if failure.disabled else f"cooling down for {failure.cooldown:.0f} s"
        logger.warning(f"ccany: {state.request_id}: key {state.key.label} of provider {state.provider.name} {what}")
        wait = self._ready_in(state.provider)
        if wait is None:
            error.should_retry = False
            return error
        if failure.disabled:
            message = (f"ccany: provider {state.provider.name} refused key {state.key.label} "
                       f"(HTTP {response.status_code}); it is disabled until an admin re-enables it; "
                       "a retry uses another key")
            error = GatewayError(500, message)
        error.retry_after, error.should_retry = math.ceil(wait), True
        return error

    def _ready_in(self, provider: Provider) -> float | None:
        """Seconds until the provider, or one of its fallbacks, has a healthy key (None: never by itself)."""
        candidates = [provider, *filter(None, map(self.snapshot.providers.get, provider.fallback))]
        waits = [wait for candidate in candidates if (wait := self.pools.ready_in(candidate)) is not None]
        return min(waits) if waits else None

    def _no_healthy_key(self, provider: Provider) -> GatewayError:
        wait = self._ready_in(provider)
        if wait is None:
            return GatewayError(401, f"provider {provider.name} has no usable key: every key is disabled or "
                                     "missing; re-enable or add one in the config DB", should_retry=False)
        return GatewayError(429, f"ccany: every key of provider {provider.name} is cooling down; "
                                 f"one is ready in {math.ceil(wait)} s", retry_after=math.ceil(wait),
                            should_retry=True)

    @staticmethod
    def _upstream_name(state: FlowState) -> str:
        return state.upstream.name if state.upstream else "upstream"

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

    def forwarded(self, flow: http.HTTPFlow) -> bool:
        state = self._flows.get(flow)
        return state is not None and state.response_context is not None and flow.response is None


class KeyInjector:
    """Adds the upstream key to forwarded requests as the last addon, and hides it again once sent,
    so neither mitmweb, a saved flow nor a log line ever holds it."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    @fail_closed
    def request(self, flow: http.HTTPFlow) -> None:
        state = self.gateway.state(flow)
        if state is not None and state.upstream is not None and state.sent and self.gateway.forwarded(flow):
            name, value = state.upstream.key_header()
            flow.request.headers[name] = value

    def internal_error(self, flow: http.HTTPFlow, hook: str, error: Exception) -> None:
        self.gateway.internal_error(flow, hook, error)

    @staticmethod
    def redact(flow: http.HTTPFlow) -> None:
        headers = flow.request.headers
        if any(name.lower() in _KEY_HEADER_NAMES for name, _ in headers.fields):
            headers.fields = tuple(
                (name, _REDACTED if name.lower() in _KEY_HEADER_NAMES else value) for name, value in headers.fields
            )
