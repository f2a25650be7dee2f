"""The one table of upstream dialects: per provider kind, how a client request becomes the upstream request, and
how the upstream's answer, error or stream comes back. Every kind goes through the same five steps, so the
gateway never asks which kind it is talking to:

- `refusal`: what the dialect cannot carry at all, refused before a key is picked;
- `build`: the upstream path, body and headers (plus notes on what could not be carried over);
- `answer`: a non-streamed answer → the client's body, its stop reason and usage;
- `error`: a non-2xx answer → the client's Anthropic error (in the words Claude Code acts on);
- `translator`: a stream translator (bytes in, Anthropic SSE bytes out) the flow log reads `stop_reason`,
  `usage` and `error` from.

Converting kinds share one request pipeline (`Converting.build`); the `anthropic` kind forwards the request as it
is (`Passthrough`). Pure: no I/O, no mitmproxy.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol
from urllib.parse import quote

from ccany_addon.anthropic_api.errors import GatewayError
from ccany_addon.anthropic_api.schema import MessagesRequest
from ccany_addon.converters import anthropic_passthrough as passthrough
from ccany_addon.converters import (
    gemini,
    gemini_stream,
    openai_chat,
    openai_chat_stream,
    openai_responses,
    openai_responses_stream,
    prompt_cache,
)
from ccany_addon.converters.capability_fit import fit_request
from ccany_addon.converters.common import ResponseContext, UpstreamTarget
from ccany_addon.converters.error_words import client_words
from ccany_addon.converters.shared_answer import upstream_error
from ccany_addon.upstreams.kinds import ANTHROPIC_VERSION, AZURE_DEFAULT_API_VERSION
from ccany_addon.util.json_codec import dumps

# Auto mode asks the upstream to run its safety check (`safeguards`); a converting upstream cannot. The gateway
# protocol's answer: a 400 whose message names the field, and Claude Code retries without it and runs the check
# itself with ordinary requests (its own parser reads the message from `safeguards:` on).
SAFEGUARDS_REFUSED = ("safeguards: not supported by this gateway's upstream model; send the request without it and "
                      "run auto mode's check with ordinary requests")


class StreamTranslator(Protocol):
    finished: bool
    stop_reason: str | None
    usage: dict
    error: str | None
    error_type: str | None
    sends: int  # reads that sent the client something (the keep-alive watches it move)
    ended: bool

    def __call__(self, data: bytes) -> list[bytes]: ...

    def idle(self) -> list[bytes]: ...  # what keeps the client's stream alive while the upstream is silent


@dataclass(frozen=True, slots=True)
class Conversion:
    """Everything a dialect needs to build one upstream request."""

    request: MessagesRequest
    raw: bytes  # the client's body, decoded
    target: UpstreamTarget
    path_prefix: str
    api_version: str | None = None
    query: str = ""  # the client's query string, without `?`
    client_headers: Mapping[str, str] = field(default_factory=dict)
    temperature: float | None = None  # the gateway's override
    prompt_cache_key: str | None = None  # set only for an upstream that takes one


@dataclass(frozen=True, slots=True)
class Outgoing:
    path: str
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()  # besides the gateway's own (content type, length, accept, agent)
    notes: tuple[str, ...] = ()
    late_system: bool = False  # a system message after the first: the error words mention it


class Dialect(Protocol):
    def refusal(self, request: MessagesRequest) -> GatewayError | None: ...

    def build(self, conversion: Conversion) -> Outgoing: ...

    def answer(self, raw: bytes, body: object, context: ResponseContext) -> tuple[bytes, str | None, dict]: ...

    def error(self, status: int, raw: bytes, upstream: str, secrets: tuple[str, ...],
              late_system: bool) -> tuple[GatewayError, str | None]: ...

    def translator(self, context: ResponseContext, upstream: str) -> StreamTranslator: ...


@dataclass(frozen=True, slots=True)
class Converting:
    """A kind whose requests and answers are converted: the same pipeline for each, its own converter functions."""

    to_request: Callable[[MessagesRequest, UpstreamTarget], tuple[dict, list[str]]]
    to_message: Callable[[dict, ResponseContext], dict]
    stream: Callable[[ResponseContext, str], StreamTranslator]
    # (path prefix, upstream model, api version, stream) → the upstream path and query
    path: Callable[[str, str, str | None, bool], str]

    def refusal(self, request: MessagesRequest) -> GatewayError | None:
        if request.model_extra and "safeguards" in request.model_extra:
            return GatewayError(400, SAFEGUARDS_REFUSED, should_retry=False)
        return None

    def build(self, conversion: Conversion) -> Outgoing:
        request, target = conversion.request, conversion.target
        if conversion.temperature is not None:
            request = request.model_copy(update={"temperature": conversion.temperature})
        # the billing header changes per conversation: in front of the prompt it would defeat prefix caching
        request = prompt_cache.opening_system_first(prompt_cache.without_billing(request))
        request, fitted = fit_request(request, target.capabilities)
        late_system = not target.fold_system_messages and any(message.role == "system" for message in request.messages)
        body, notes = self.to_request(request, target)
        if conversion.prompt_cache_key is not None:
            body["prompt_cache_key"] = conversion.prompt_cache_key
        path = self.path(conversion.path_prefix, target.model, conversion.api_version, request.stream)
        return Outgoing(path, dumps(body), (), (*fitted, *notes), late_system)

    def answer(self, raw: bytes, body: object, context: ResponseContext) -> tuple[bytes, str | None, dict]:
        message = self.to_message(body, context)  # type: ignore[arg-type]  # a shape it cannot read raises
        return dumps(message), message["stop_reason"], message["usage"]

    def error(self, status: int, raw: bytes, upstream: str, secrets: tuple[str, ...],
              late_system: bool) -> tuple[GatewayError, str | None]:
        error = upstream_error(status, raw, upstream, secrets)
        if (words := client_words(status, error.message, late_system)) is not None:
            # a refusal of this request the CLI recovers from, in the words it acts on (not a key's failure)
            return GatewayError(400, words, should_retry=False), f"upstream said: {error.message[:300]}"
        return error, None

    def translator(self, context: ResponseContext, upstream: str) -> StreamTranslator:
        return self.stream(context, upstream)


class Passthrough:
    """The `anthropic` kind: the request goes as it came (only the model may be renamed by a route), with the
    protocol's own headers (version, betas); the answer comes back untouched, an error with its status mapped by the
    error table and the upstream's name in front of its own message."""

    def refusal(self, request: MessagesRequest) -> GatewayError | None:
        return None

    def build(self, conversion: Conversion) -> Outgoing:
        path = f"{conversion.path_prefix}/messages" + (f"?{conversion.query}" if conversion.query else "")
        body = passthrough.to_anthropic_request(conversion.raw, conversion.request.model, conversion.target.model)
        headers = {name: conversion.client_headers[name] for name in passthrough.FORWARDED_HEADERS
                   if name in conversion.client_headers}
        headers.setdefault("anthropic-version", ANTHROPIC_VERSION)
        return Outgoing(path, body, tuple(headers.items()))

    def answer(self, raw: bytes, body: object, context: ResponseContext) -> tuple[bytes, str | None, dict]:
        stop_reason, usage = passthrough.message_facts(body)
        return raw, stop_reason, usage

    def error(self, status: int, raw: bytes, upstream: str, secrets: tuple[str, ...],
              late_system: bool) -> tuple[GatewayError, str | None]:
        return upstream_error(status, raw, upstream, secrets), None

    def translator(self, context: ResponseContext, upstream: str) -> StreamTranslator:
        return passthrough.AnthropicEventStream(upstream, context.secrets)


def _chat_path(prefix: str, model: str, api_version: str | None, stream: bool) -> str:
    return f"{prefix}/chat/completions"


def _azure_path(prefix: str, model: str, api_version: str | None, stream: bool) -> str:
    # The deployment is named in the URL, the API version in the query.
    deployment = quote(model, safe="")
    version = quote(api_version or AZURE_DEFAULT_API_VERSION, safe="")
    return f"{prefix}/openai/deployments/{deployment}/chat/completions?api-version={version}"


def _responses_path(prefix: str, model: str, api_version: str | None, stream: bool) -> str:
    return f"{prefix}/responses"


def _gemini_path(prefix: str, model: str, api_version: str | None, stream: bool) -> str:
    name = quote(model.removeprefix("models/"), safe="")
    return f"{prefix}/models/{name}:" + ("streamGenerateContent?alt=sse" if stream else "generateContent")


_CHAT = (openai_chat.to_chat_request, openai_chat.to_message, openai_chat_stream.ChatStreamTranslator)

CONVERTING: dict[str, Converting] = {
    "openai": Converting(*_CHAT, _chat_path),
    "azure": Converting(*_CHAT, _azure_path),
    "responses": Converting(openai_responses.to_responses_request, openai_responses.to_message,
                            openai_responses_stream.ResponsesStreamTranslator, _responses_path),
    "gemini": Converting(gemini.to_gemini_request, gemini.to_message, gemini_stream.GeminiStreamTranslator,
                         _gemini_path),
}
DIALECTS: dict[str, Dialect] = {**CONVERTING, "anthropic": Passthrough()}
