"""The gateway's hook-level behaviour in-process, with mitmproxy's own test helpers (tests/unit/hooks.py drives
`build_addons()` under `taddons` in mitmproxy's hook order): what the e2e tests check through a subprocess — a body
over the limit, a cache hit, a key on cooldown, the key header, fail-closed — at the level of the hooks, with what
would go upstream and the flow's record in view."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from mitmproxy import http
from mitmproxy.flow import Error

from ccany_addon.config import store
from ccany_addon.proxy import request_body
from ccany_addon.proxy.gateway import Gateway
from ccany_addon.proxy.key_injector import KeyInjector
from ccany_addon.upstreams import routing
from ccany_addon.upstreams.dialects import DIALECTS
from ccany_addon.upstreams.kinds import KEY_HEADERS, PROVIDER_KINDS, REDACTED
from tests.conftest import UPSTREAM_KEY, config_db, secret
from tests.unit import hooks
from tests.unit.hooks import Exchange, Proxy, Upstream, chat_completion, messages, openai_error

FIRST = secret("sk-hooks-first-0123456789abcdef")
SECOND = secret("sk-hooks-second-0123456789abcdef")
KIND_KEY = secret("sk-hooks-kind-key-0123456789abcdef")
CLIENT_KEY = "client-own-key-0123456789"


def ask(text: str = "hi", model: str = "claude-haiku-4-5", stream: bool = False) -> dict:
    return {"model": model, "max_tokens": 20, "stream": stream, "messages": [{"role": "user", "content": text}]}


class FakeUpstream:
    """Answers what leaves the proxy, and keeps it."""

    def __init__(self, answer: Upstream | None = None) -> None:
        self.answer = answer or (lambda request: chat_completion("Hello from upstream"))
        self.received: list[http.Request] = []

    def __call__(self, request: http.Request) -> http.Response:
        self.received.append(request)
        return self.answer(request)


@pytest.fixture(autouse=True)
def upstream_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """The reverse target's key, read from the environment when the gateway is configured."""
    monkeypatch.setenv("OPENAI_API_KEY", UPSTREAM_KEY)
    monkeypatch.delenv("CCANY_MASTER_KEY", raising=False)  # a config DB's master key lies beside it


def carries_no_key(request: http.Request, *keys: str) -> bool:
    return not any(key in value for _, value in request.headers.items(multi=True) for key in keys)


# -- bounded before read


def test_a_content_length_over_the_limit_is_refused_from_the_headers():
    async def scenario(proxy: Proxy) -> None:
        refused = await proxy.exchange(messages(b"{}", headers={"content-length": str(100 * 1024 * 1024)}))
        message = refused.error(413, "request_too_large")
        # the gateway's own words from `requestheaders` (the error hook's would say "more than 1000")
        assert message == "Request body is 104857600 bytes; this gateway accepts at most 1000 bytes"
        assert refused.answer is not None and refused.answer.headers["connection"] == "close"
        flow = refused.flow
        assert flow.request.data.content is None and refused.sent is None  # not a byte read, nothing sent
        assert flow.response is None and not flow.killable
        record = proxy.record(flow)
        assert (record.status_code, record.error_type, record.client_request) == (413, "request_too_large", None)
        assert refused.requested is None  # the `request` hooks never ran

        small = await proxy.exchange(messages(ask()), FakeUpstream())
        assert small.status == 200 and small.sent is not None

    hooks.run(scenario, ccany_max_body_size=1000)


def test_the_gateway_refuses_a_large_content_length_even_without_mitmproxys_own_limit():
    """mitmproxy's `body_size_limit` (set from ccany_max_body_size) is not what refuses it: the gateway's
    `requestheaders` hook kills the flow and chooses its answer."""

    async def scenario(proxy: Proxy) -> None:
        proxy.tctx.options.body_size_limit = None
        refused = await proxy.exchange(messages(b"{}", headers={"content-length": "5000"}))
        assert "Request body is 5000 bytes" in refused.error(413, "request_too_large")
        assert refused.flow.error is not None and refused.flow.error.msg == Error.KILLED_MESSAGE
        assert refused.flow.request.data.content is None and refused.sent is None

    hooks.run(scenario, ccany_max_body_size=1000)


def test_a_chunked_body_over_the_limit_gets_the_anthropic_413():
    async def scenario(proxy: Proxy) -> None:
        refused = await proxy.exchange(messages(ask("x" * 2000), chunked=True))
        assert "more than 1000 bytes" in refused.error(413, "request_too_large")
        assert refused.sent is None and proxy.record(refused.flow).error_type == "request_too_large"

    hooks.run(scenario, ccany_max_body_size=1000)


def test_an_unknown_content_encoding_is_refused_before_the_body():
    async def scenario(proxy: Proxy) -> None:
        refused = await proxy.exchange(messages(ask(), headers={"content-encoding": "snappy"}))
        assert "Content-Encoding 'snappy' is not supported" in refused.error(400, "invalid_request_error")
        assert refused.flow.request.data.content is None and refused.sent is None
        assert proxy.record(refused.flow).error_type == "invalid_request_error"

    hooks.run(scenario)


# -- the response cache


def test_an_identical_request_is_answered_from_the_cache_without_an_upstream_request():
    async def scenario(proxy: Proxy) -> None:
        upstream = FakeUpstream()
        first = await proxy.exchange(messages(ask("cache me")), upstream)
        assert first.status == 200 and len(upstream.received) == 1
        assert first.json()["content"] == [{"type": "text", "text": "Hello from upstream"}]
        assert not proxy.record(first.flow).cache_hit

        second = await proxy.exchange(messages(ask("cache me")), upstream)
        assert len(upstream.received) == 1 and second.sent is None
        assert second.status == 200 and second.json() == first.json()
        assert second.answer is not None and second.answer.headers["request-id"] == second.request_id
        state, record = proxy.state(second.flow), proxy.record(second.flow)
        assert not state.sent and record.cache_hit
        assert (record.provider, record.upstream_model, record.route) == ("openai", "gpt-4o-mini", "tier")
        assert record.upstream_request is None and record.usage == proxy.record(first.flow).usage
        assert record.stop_reason == "end_turn" and record.status_code == 200
        assert second.requested is not None and carries_no_key(second.requested, UPSTREAM_KEY)  # no key added

        other = await proxy.exchange(messages(ask("something else")), upstream)
        assert other.status == 200 and len(upstream.received) == 2 and not proxy.record(other.flow).cache_hit
        streamed = await proxy.exchange(messages(ask("cache me", stream=True)))  # streams are never cached
        assert streamed.sent is not None and not proxy.record(streamed.flow).cache_hit

    hooks.run(scenario, ccany_cache_ttl=60)


def test_without_a_ttl_nothing_is_cached():
    async def scenario(proxy: Proxy) -> None:
        upstream = FakeUpstream()
        for _ in range(2):
            assert (await proxy.exchange(messages(ask("not cached")), upstream)).status == 200
        assert len(upstream.received) == 2

    hooks.run(scenario)


# -- key pools


def pool_config(tmp_path: Path) -> Path:
    path = tmp_path / "config.db"
    db = config_db(path)
    store.add_provider(db, "test", "pool", f"{hooks.REVERSE_TARGET}/v1",
                       models={"big": "gpt-4o", "small": "gpt-4o-mini"}, key_strategy="fill-first")
    store.set_provider_key(db, "test", "pool", FIRST, name="first")
    store.set_provider_key(db, "test", "pool", SECOND, name="second")
    store.add_route(db, "test", "claude-*", "pool", None)
    db.close()
    return path


def bearer(request: http.Request) -> str:
    return request.headers.get("authorization", "").removeprefix("Bearer ")


def test_a_key_on_cooldown_is_skipped_and_with_every_key_cooling_the_gateway_answers_itself(tmp_path: Path):
    limits = {FIRST: "30"}  # key → the retry-after of its 429

    def answer(request: http.Request) -> http.Response:
        if (wait := limits.get(bearer(request))) is not None:
            return openai_error(429, "Rate limit reached for requests", {"retry-after": wait})
        return chat_completion("Hello from the second key")

    upstream = FakeUpstream(answer)

    async def scenario(proxy: Proxy) -> None:
        limited = await proxy.exchange(messages(ask("one")), upstream)
        limited.error(429, "rate_limit_error")
        assert limited.answer is not None
        # the second key is healthy: retry at once
        assert (limited.answer.headers["retry-after"], limited.answer.headers["x-should-retry"]) == ("0", "true")
        record = proxy.record(limited.flow)
        assert record.provider_key == "1:first" and record.provider == "pool" and record.route == "route claude-*"

        healthy = await proxy.exchange(messages(ask("two")), upstream)
        assert healthy.status == 200 and proxy.record(healthy.flow).provider_key == "2:second"

        limits[SECOND] = "20"
        cooling = await proxy.exchange(messages(ask("three")), upstream)
        cooling.error(429, "rate_limit_error")
        assert cooling.answer is not None and cooling.answer.headers["retry-after"] == "20"  # the sooner key
        assert cooling.answer.headers["x-should-retry"] == "true"
        assert [bearer(request) for request in upstream.received] == [FIRST, SECOND, SECOND]

        none_left = await proxy.exchange(messages(ask("four")), upstream)
        message = none_left.error(429, "rate_limit_error")
        assert message == "ccany: every key of provider pool is cooling down; one is ready in 20 s"
        assert none_left.answer is not None
        assert (none_left.answer.headers["retry-after"], none_left.answer.headers["x-should-retry"]) == ("20", "true")
        assert none_left.sent is None and len(upstream.received) == 3  # no upstream request was built
        assert not proxy.state(none_left.flow).sent
        assert none_left.requested is not None and carries_no_key(none_left.requested, FIRST, SECOND)
        assert proxy.record(none_left.flow).error_type == "rate_limit_error"

    hooks.run(scenario, ccany_config_db=str(pool_config(tmp_path)))
    # the config addon wrote both cooldowns to the config DB (its queue is drained when the proxy stops)
    db = config_db(tmp_path / "config.db")
    rows = db.execute("SELECT name, last_status, cooling_until, enabled FROM provider_keys ORDER BY id").fetchall()
    db.close()
    assert [(name, status, enabled) for name, status, _, enabled in rows] == [("first", 429, 1), ("second", 429, 1)]
    assert all(cooling_until for _, _, cooling_until, _ in rows)


# -- the key header


@pytest.mark.parametrize("kind", PROVIDER_KINDS)
def test_a_forwarded_request_carries_its_kinds_own_key_header_and_only_until_sent(kind: str, tmp_path: Path):
    path = tmp_path / "config.db"
    db = config_db(path)
    store.add_provider(db, "test", "up", f"{hooks.REVERSE_TARGET}/v1", kind=kind)
    store.set_provider_key(db, "test", "up", KIND_KEY)
    store.add_route(db, "test", "claude-*", "up", "model-1")
    db.close()
    name, value = PROVIDER_KINDS[kind].key_headers(KIND_KEY)[0]
    client_headers = {"x-api-key": CLIENT_KEY, "authorization": f"Bearer {CLIENT_KEY}"}

    async def scenario(proxy: Proxy) -> None:
        assert isinstance(proxy.tctx.master.addons.chain[-1], KeyInjector)  # after mitmweb's view has looked

        forwarded = await proxy.exchange(messages(ask(model="claude-sonnet-4-5"), headers=client_headers),
                                         lambda request: openai_error(400, "no"))
        assert forwarded.sent is not None
        assert forwarded.sent.headers.get_all(name) == [value]
        assert all(other not in forwarded.sent.headers for other in KEY_HEADERS - {name})
        assert carries_no_key(forwarded.sent, CLIENT_KEY)
        # once sent, the key is hidden: mitmweb, a saved flow and the log see it redacted
        assert forwarded.flow.request.headers.get_all(name) == [REDACTED]
        assert dict(proxy.record(forwarded.flow).upstream_request_headers)[name.encode()] == REDACTED.encode()

        refused = await proxy.exchange(messages(b'{"model": ', headers=client_headers))
        refused.error(400, "invalid_request_error")
        assert refused.sent is None and refused.requested is not None
        assert carries_no_key(refused.requested, KIND_KEY)

    hooks.run(scenario, ccany_config_db=str(path))


# -- fail closed


class _RaisingTranslator:
    """The openai dialect, except that a stream's translator cannot be made."""

    def __init__(self, dialect: Any) -> None:
        self.dialect = dialect

    def __getattr__(self, name: str) -> Any:
        return getattr(self.dialect, name)

    def translator(self, *args: Any) -> Any:
        raise RuntimeError("no translator today")


def _boom(*args: Any, **kwargs: Any) -> Any:
    raise RuntimeError(f"boom {UPSTREAM_KEY}")


SSE = b'data: {"choices": [{"index": 0, "delta": {"content": "upstream words"}}]}\n\ndata: [DONE]\n\n'


@pytest.mark.parametrize(("hook", "reaches_upstream"), [
    ("requestheaders", False), ("request", False), ("keyinjector", False), ("responseheaders", True),
    ("response", True),
])
def test_a_hook_that_raises_ends_in_the_gateways_own_500(hook: str, reaches_upstream: bool,
                                                         monkeypatch: pytest.MonkeyPatch):
    stream = hook == "responseheaders"
    if hook == "requestheaders":
        monkeypatch.setattr(request_body, "check_encoding", _boom)
    elif hook == "request":
        monkeypatch.setattr(routing, "choose", _boom)
    elif hook == "keyinjector":
        monkeypatch.setattr(Gateway, "upstream_key", _boom)
    elif hook == "responseheaders":
        monkeypatch.setitem(DIALECTS, "openai", _RaisingTranslator(DIALECTS["openai"]))
    else:
        monkeypatch.setattr(Gateway, "_answer_upstream", _boom)

    def answer(request: http.Request) -> http.Response:
        if stream:
            return http.Response.make(200, SSE, {"content-type": "text/event-stream"})
        return chat_completion("upstream words")

    async def scenario(proxy: Proxy) -> None:
        failed: Exchange = await proxy.exchange(messages(ask(stream=stream)), answer)
        message = failed.error(500, "api_error")
        assert "internal error" in message and failed.request_id in message
        assert (failed.sent is not None) == reaches_upstream
        assert b"upstream words" not in failed.body and UPSTREAM_KEY.encode() not in failed.body
        record = proxy.record(failed.flow)
        assert (record.status_code, record.error_type) == (500, "api_error")
        if failed.sent is None and failed.requested is not None:
            assert carries_no_key(failed.requested, UPSTREAM_KEY)

    hooks.run(scenario)

