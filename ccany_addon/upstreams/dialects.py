"""The one table of upstream dialects: per provider kind, where a converted request goes and which converter
functions build it and read the answer. Every converter module has the same small shape: request → upstream
body (plus notes on what could not be carried over); upstream body → Anthropic message; a stream translator
(bytes in, Anthropic SSE bytes out) that the flow log reads `stop_reason`, `usage` and `error` from."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import quote

from ccany_addon.anthropic_api.schema import MessagesRequest
from ccany_addon.converters import gemini, openai_chat, openai_chat_stream, openai_responses
from ccany_addon.converters.common import ResponseContext, UpstreamTarget
from ccany_addon.upstreams.kinds import AZURE_DEFAULT_API_VERSION


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
class Dialect:
    to_request: Callable[[MessagesRequest, UpstreamTarget], tuple[dict, list[str]]]
    to_message: Callable[[dict, ResponseContext], dict]
    translator: Callable[[ResponseContext, str], StreamTranslator]
    # (path prefix, upstream model, api version, stream) → the upstream path and query
    path: Callable[[str, str, str | None, bool], str]


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

DIALECTS: dict[str, Dialect] = {
    "openai": Dialect(*_CHAT, _chat_path),
    "azure": Dialect(*_CHAT, _azure_path),
    "responses": Dialect(openai_responses.to_responses_request, openai_responses.to_message,
                         openai_responses.ResponsesStreamTranslator, _responses_path),
    "gemini": Dialect(gemini.to_gemini_request, gemini.to_message, gemini.GeminiStreamTranslator, _gemini_path),
}
