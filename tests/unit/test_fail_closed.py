"""The fail-closed pieces on their own: the hook guard's last resort, the stream guards, the log's secret filter,
and bounded decompression."""

from __future__ import annotations

import gzip
import logging
import zlib

import brotli
import pytest
from mitmproxy.test import tflow

from ccany_addon.anthropic_api.errors import GatewayError
from ccany_addon.converters.anthropic_passthrough import AnthropicEventStream
from ccany_addon.converters.common import ResponseContext
from ccany_addon.converters.gemini_stream import GeminiStreamTranslator
from ccany_addon.converters.openai_chat_stream import ChatStreamTranslator
from ccany_addon.converters.openai_responses_stream import ResponsesStreamTranslator
from ccany_addon.proxy.fail_closed import ReplacementBody, SecretFilter, fail_closed
from ccany_addon.proxy.request_body import check_encoding, decoded

KEY = "sk-proj-known-upstream-key-0123456789"


class _Owner:
    def __init__(self, answer_raises: bool) -> None:
        self.answer_raises, self.answered = answer_raises, []

    def internal_error(self, flow, hook: str, error: Exception) -> None:
        if self.answer_raises:
            raise RuntimeError("the error answer failed too")
        self.answered.append((hook, type(error).__name__))

    @fail_closed
    def request(self, flow) -> None:
        raise KeyError("boom")


def test_a_raising_hook_is_answered_by_its_owner():
    owner, flow = _Owner(answer_raises=False), tflow.tflow()
    owner.request(flow)
    assert owner.answered == [("request", "KeyError")] and not flow.error


def test_when_the_answer_fails_too_the_flow_is_killed_never_forwarded():
    flow = tflow.tflow()
    _Owner(answer_raises=True).request(flow)
    assert flow.error is not None and flow.error.msg == flow.error.KILLED_MESSAGE


CTX = ResponseContext(client_model="claude-sonnet-4-5", secrets=(KEY,))


@pytest.mark.parametrize("translator", [ChatStreamTranslator, GeminiStreamTranslator, ResponsesStreamTranslator])
def test_a_translator_that_raises_ends_the_stream_with_an_error_event(translator, monkeypatch):
    stream = translator(CTX, "up")
    monkeypatch.setattr(stream, "translate", lambda data: 1 / 0)
    out = b"".join(stream(b"data: {}\n\n"))
    assert out.startswith(b"event: error\n") and b"ZeroDivisionError" in out
    assert stream.finished and stream.error_type == "api_error"


def test_stream_errors_are_masked_with_the_keys_the_gateway_holds():
    stream = ChatStreamTranslator(CTX, "up")
    error = b'data: {"error": {"message": "bad key ' + KEY.encode() + b'", "type": "server_error"}}\n\n'
    out = b"".join(stream(error))
    assert KEY.encode() not in out and b"***" in out and KEY not in (stream.error or "")


def test_the_passthrough_masks_an_upstream_error_event_and_survives_odd_shapes():
    stream = AnthropicEventStream("up", (KEY,))
    out = b"".join(stream(b'event: error\ndata: {"type":"error","error":{"type":"api_error","message":"' +
                          KEY.encode() + b'"}}\n\n'))
    assert KEY.encode() not in out and KEY not in (stream.error or "")
    odd = AnthropicEventStream("up")
    out = b"".join(odd(b'event: message_start\ndata: {"type":"message_start","message":[]}\n\n'))
    assert out.startswith(b"event: error\n") and odd.error is not None and odd(b"more") == []


def test_the_passthrough_does_not_hold_an_endless_event():
    stream = AnthropicEventStream("up")
    stream.MAX_EVENT = 1000
    assert stream(b"x" * 600) == []
    assert b"".join(stream(b"x" * 600)).startswith(b"event: error\n")


def test_a_replacement_body_is_sent_once_whatever_the_upstream_sends():
    body = ReplacementBody(b'{"type":"error"}')
    assert body(b"upstream bytes") == [b'{"type":"error"}'] and body(b"more") == [] and body(b"") == []
    assert ReplacementBody(b"x")(b"") == [b"x"]  # an upstream that sends no body at all


def test_log_records_are_masked_with_the_known_keys_tracebacks_included():
    records: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(self.format(record))

    handler = Keep()
    handler.addFilter(SecretFilter(lambda: (KEY,)))
    logger = logging.getLogger("test-secret-filter")
    logger.addHandler(handler)
    try:
        logger.warning("upstream said %s", KEY)
        try:
            raise ValueError(f"echo {KEY}")
        except ValueError:
            logger.exception("failed")
    finally:
        logger.removeHandler(handler)
    assert records[0] == "upstream said ***"
    assert "ValueError: echo ***" in records[1] and all(KEY not in record for record in records)


@pytest.mark.parametrize(("encoding", "compress"), [
    ("gzip", gzip.compress), ("x-gzip", gzip.compress), ("deflate", zlib.compress),
    ("deflate", lambda data: zlib.compress(data, wbits=-15)), ("br", brotli.compress), ("", lambda data: data),
])
def test_bodies_are_decoded_up_to_the_limit_and_no_further(encoding, compress):
    assert decoded(compress(b"a" * 1000), encoding, 1000) == b"a" * 1000
    with pytest.raises(GatewayError) as refused:
        decoded(compress(b"a" * 1001), encoding, 1000)
    assert refused.value.status == 413


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "br"])
def test_garbage_or_truncated_compressed_data_is_a_400(encoding):
    for data in (b"not compressed at all", {"gzip": gzip.compress, "deflate": zlib.compress,
                                             "br": brotli.compress}[encoding](b"a" * 5000)[:-8]):
        with pytest.raises(GatewayError) as refused:
            decoded(data, encoding, 10_000)
        assert refused.value.status == 400


@pytest.mark.parametrize("encoding", ["snappy", "gzip, br", "compress", "zstd"])
def test_an_unknown_content_encoding_is_refused(encoding):
    with pytest.raises(GatewayError) as refused:
        check_encoding(encoding)
    assert refused.value.status == 400 and "not supported" in refused.value.message
