"""Answer pieces several converters share: an upstream's error body as an Anthropic error, an error a stream
reports as a status, and what a Chat Completions answer's finish reason, usage and content mean (read by the
non-streamed and the streamed Chat Completions converters alike). Pure functions; no I/O.
"""

from __future__ import annotations

from ccany_addon.anthropic_api.errors import GatewayError, mask_secrets
from ccany_addon.converters.common import ResponseContext, dict_field, token_count
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
    return {
        "input_tokens": max(prompt - cached, 0),
        "output_tokens": token_count(usage.get("completion_tokens")),
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": cached,
    }


def chat_matched_stop(choice: dict) -> object:
    # vLLM reports the stop string as `stop_reason`, SGLang as `matched_stop`; OpenAI does not say.
    return choice.get("stop_reason") or choice.get("matched_stop")


def chat_text(content: object) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ""
