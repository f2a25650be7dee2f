"""The one error table: HTTP status ⇄ Anthropic error type, and the Anthropic error body."""

from __future__ import annotations

import re

from ccany_addon.util.json_codec import dumps

ERROR_TYPES: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}

# Upstream statuses that have no Anthropic twin are answered with the nearest one the clients know.
_CLIENT_STATUS: dict[int, int] = {
    408: 504,
    409: 400,
    422: 400,
    502: 500,
    503: 529,
}


def client_status(upstream_status: int) -> int:
    """The status a client gets for an upstream answer of `upstream_status`."""
    status = _CLIENT_STATUS.get(upstream_status, upstream_status)
    if status in ERROR_TYPES:
        return status
    return 400 if 400 <= status < 500 else 500


def error_type(status: int) -> str:
    return ERROR_TYPES[client_status(status)]


def error_body(status: int, message: str) -> dict:
    return {"type": "error", "error": {"type": error_type(status), "message": message}}


def error_json(status: int, message: str) -> bytes:
    return dumps(error_body(status, message))


class GatewayError(Exception):
    """A failure that reaches the client as an Anthropic error."""

    def __init__(self, status: int, message: str, retry_after: int | None = None,
                 should_retry: bool | None = None, headers: tuple[tuple[str, str], ...] = ()) -> None:
        super().__init__(message)
        self.status = client_status(status)
        self.message = message
        self.retry_after = retry_after  # seconds, sent as `retry-after`
        # sent as `x-should-retry`, which the Anthropic SDKs and Claude Code obey: a 401 is never worth a retry
        # (without it Claude Code retries a wrong key for about three minutes)
        self.should_retry = False if should_retry is None and self.status == 401 else should_retry
        self.headers = headers  # more response headers: a refused key's `anthropic-ratelimit-*`

    @property
    def error_type(self) -> str:
        return ERROR_TYPES[self.status]

    def body(self) -> bytes:
        return error_json(self.status, self.message)


# Bearer tokens and the usual key shapes (sk-…, AIza…, long hex/base64 runs after "key").
_SECRET_PATTERNS = re.compile(
    r"(?:sk|pk|rk)-[A-Za-z0-9_\-]{8,}"
    r"|AIza[0-9A-Za-z_\-]{20,}"
    r"|(?i:bearer)\s+[A-Za-z0-9._\-~+/=]{8,}"
    r"|(?i:(?:api[_-]?key|key|token)[\"']?\s*[:=]\s*[\"']?)[A-Za-z0-9._\-~+/=]{12,}"
)


def replace_secrets[T: (str, bytes)](text: T, secrets: tuple[str, ...], mark: str = "***") -> T:
    """Hide the secrets the gateway knows (and nothing else: a logged body keeps its key-shaped words); in text, or
    in UTF-8 bytes (a secret is found in them where it is in their text)."""
    for secret in secrets:
        if len(secret) < 4:
            continue
        found, replacement = (secret.encode(), mark.encode()) if isinstance(text, bytes) else (secret, mark)
        if found in text:
            text = text.replace(found, replacement)  # type: ignore[arg-type]
    return text


def mask_secrets(text: str, secrets: tuple[str, ...] = ()) -> str:
    """Hide known secrets and anything shaped like an API key before text reaches a client or a log."""
    return _SECRET_PATTERNS.sub(lambda m: m.group(0)[:4] + "***", replace_secrets(text, secrets))
