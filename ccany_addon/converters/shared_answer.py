"""Answer pieces several converters share: an upstream's error body as an Anthropic error, an error a stream
reports as a status, and what a Chat Completions, Gemini or Responses API answer's finish reason, usage and
content mean (each read by its dialect's non-streamed and streamed converters alike). Pure functions; no I/O.
"""

from __future__ import annotations

from ccany_addon.anthropic_api.errors import GatewayError, mask_secrets
from ccany_addon.converters.common import (
    MAX_TOKEN_COUNT,
    ResponseContext,
    anthropic_usage,
    dict_field,
    token_count,
)
from ccany_addon.util.json_codec import loads


def upstream_error(status: int, raw: bytes, upstream: str, secrets: tuple[str, ...] = ()) -> GatewayError:
    """The Anthropic error for an upstream's non-2xx answer, its own message passed through (secrets masked)."""
    message = ""
    try:
        parsed = loads(raw)
    except ValueError:
        parsed = None
    if isinstance(parsed, list) and len(parsed) == 1:  # Gemini's streamGenerateContent without alt=sse
        parsed = parsed[0]
    if isinstance(parsed, dict):
        error = parsed.get("error", parsed)
        if isinstance(error, dict):
            message = _error_text(error.get("message") or error.get("msg") or error.get("detail"))
        elif isinstance(error, str):
            message = error
    if not message:
        message = raw[:500].decode("utf-8", errors="replace").strip() or f"HTTP {status}"
    return GatewayError(status, mask_secrets(f"{upstream} upstream: {message}", secrets))


def _error_text(value: object) -> str:
    """FastAPI-style servers (vLLM, LM Studio) send `detail` as a list of {loc, msg} problems."""
    if isinstance(value, list):
        problems = [item for item in value if isinstance(item, dict)]
        return "; ".join(
            ".".join(str(part) for part in item.get("loc", ())) + f": {item.get('msg', '')}" for item in problems
        )
    return str(value or "")


def stream_error_status(error: dict) -> int:
    """The status for an error object an upstream reports in its stream (or a failed answer)."""
    code = error.get("code") or error.get("status")
    if isinstance(code, int) and 400 <= code < 600:
        return code
    kind = f"{error.get('type', '')} {code or ''}".lower()
    if "rate" in kind or "quota" in kind:
        return 429
    if "overload" in kind or "unavailable" in kind:
        return 529
    if "timeout" in kind:
        return 504
    return 500


# ---------------------------------------------------------------- Chat Completions answers


_CHAT_FINISH_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}


def chat_stop_reason(finish_reason: str | None, matched: object, ctx: ResponseContext,
                     has_tools: bool) -> tuple[str, str | None]:
    """(stop_reason, stop_sequence) for an OpenAI finish reason."""
    if finish_reason in (None, "stop"):
        if has_tools:
            return "tool_use", None
        if sequence := ctx.matched_stop_sequence(matched):
            return "stop_sequence", sequence
    return _CHAT_FINISH_REASONS.get(finish_reason or "stop", "end_turn"), None


def usage_from_openai(usage: dict | None) -> dict:
    usage = usage if isinstance(usage, dict) else {}
    prompt = token_count(usage.get("prompt_tokens"))
    cached = token_count(dict_field(usage.get("prompt_tokens_details"), "cached_tokens")
                         or usage.get("prompt_cache_hit_tokens"))
    return anthropic_usage(max(prompt - cached, 0), token_count(usage.get("completion_tokens")), cached)


def chat_matched_stop(choice: dict) -> object:
    # vLLM reports the stop string as `stop_reason`, SGLang as `matched_stop`; OpenAI does not say.
    return choice.get("stop_reason") or choice.get("matched_stop")


def chat_text(content: object) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ""


# ---------------------------------------------------------------- Gemini answers


# Gemini's thought signatures travel as a thinking block's signature with this prefix (gemini.py says why).
GEMINI_SIGNATURE_PREFIX = "gemini."
_GEMINI_FINISH_REASONS = {"STOP": "end_turn", "MAX_TOKENS": "max_tokens"}
_GEMINI_REFUSALS = {"SAFETY", "RECITATION", "PROHIBITED_CONTENT", "BLOCKLIST", "SPII", "IMAGE_SAFETY"}
# The model produced a function call Gemini itself could not deliver: nothing usable reaches the client.
_GEMINI_BROKEN_CALLS = {"MALFORMED_FUNCTION_CALL", "UNEXPECTED_TOOL_CALL", "TOO_MANY_TOOL_CALLS"}
# google.rpc status names → HTTP, for error objects that carry no numeric code.
_GEMINI_RPC_STATUS = {"INVALID_ARGUMENT": 400, "FAILED_PRECONDITION": 400, "UNAUTHENTICATED": 401,
                      "PERMISSION_DENIED": 403, "NOT_FOUND": 404, "RESOURCE_EXHAUSTED": 429, "INTERNAL": 500,
                      "UNAVAILABLE": 503, "DEADLINE_EXCEEDED": 504}


def gemini_stop_reason(finish_reason: str, has_calls: bool, candidate: dict, upstream: str) -> str:
    if finish_reason in _GEMINI_BROKEN_CALLS:
        detail = candidate.get("finishMessage") or "the model produced a function call that could not be parsed"
        raise GatewayError(502, mask_secrets(f"{upstream} upstream: {finish_reason}: {detail}"))
    if finish_reason in _GEMINI_REFUSALS:
        return "refusal"
    stop = _GEMINI_FINISH_REASONS.get(finish_reason, "end_turn")
    return "tool_use" if has_calls and stop == "end_turn" else stop


def usage_from_gemini(meta: dict | None) -> dict:
    meta = meta if isinstance(meta, dict) else {}
    cached = token_count(meta.get("cachedContentTokenCount"))
    prompt = token_count(meta.get("promptTokenCount")) + token_count(meta.get("toolUsePromptTokenCount"))
    output = token_count(meta.get("candidatesTokenCount")) + token_count(meta.get("thoughtsTokenCount"))
    return anthropic_usage(min(max(prompt - cached, 0), MAX_TOKEN_COUNT), min(output, MAX_TOKEN_COUNT), cached)


def gemini_error_status(error: dict) -> int:
    code = error.get("code")
    if isinstance(code, int) and 400 <= code < 600:
        return code
    return _GEMINI_RPC_STATUS.get(str(error.get("status")), 500)


def gemini_parts(candidate: dict) -> list[dict]:
    parts = (candidate.get("content") or {}).get("parts") or ()
    return [part for part in parts if isinstance(part, dict)]


# ---------------------------------------------------------------- Responses API answers


def responses_usage(usage: dict | None) -> dict:
    usage = usage if isinstance(usage, dict) else {}
    cached = token_count(dict_field(usage.get("input_tokens_details"), "cached_tokens"))
    return anthropic_usage(max(token_count(usage.get("input_tokens")) - cached, 0),
                           token_count(usage.get("output_tokens")), cached)


def responses_stop_reason(response: dict, has_tools: bool, refused: bool) -> str:
    if response.get("status") == "incomplete":
        reason = (response.get("incomplete_details") or {}).get("reason")
        return "refusal" if reason == "content_filter" else "max_tokens"
    if refused:
        return "refusal"
    return "tool_use" if has_tools else "end_turn"


def responses_reasoning_text(item: dict) -> str:
    """The summary (what OpenAI models show), else the raw reasoning text (open models such as gpt-oss)."""
    summary = [part.get("text") or "" for part in item.get("summary") or () if isinstance(part, dict)]
    if any(summary):
        return "\n\n".join(text for text in summary if text)
    return "".join(part.get("text") or "" for part in item.get("content") or () if isinstance(part, dict))


def responses_message_text(item: dict) -> tuple[str, bool]:
    """(text, whether any of it is a refusal): a refusal is shown to the user as text."""
    parts = [part for part in item.get("content") or () if isinstance(part, dict)]
    refused = any(part.get("type") == "refusal" for part in parts)
    return "".join(part.get("refusal") or part.get("text") or "" for part in parts), refused


def json_object(value: object) -> dict:
    """`value` if it is a JSON object, else an empty one: a missing or malformed field is tolerated."""
    return value if isinstance(value, dict) else {}


def responses_failure_status(error: dict) -> int:
    """The status for an error a Responses stream or failed response reports."""
    code = str(error.get("code") or "")
    if code.startswith("invalid_") or "image" in code:  # the request's own content was refused
        return 400
    return stream_error_status(error)
