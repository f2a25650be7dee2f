"""Fail closed, by construction. When an addon hook raises, mitmproxy logs "Addon error" and carries on with the
flow: in reverse mode the client's raw request goes to the reverse target, and an upstream body passes through
as it came. Every hook that decides a flow's fate is wrapped by `fail_closed`, so that an exception ends in the
gateway's own Anthropic error (the owner's `internal_error`), and, should even that raise, in a killed flow
(which mitm_compat answers with an Anthropic error too). Nothing is forwarded that the gateway did not build.
"""

from __future__ import annotations

import functools
import logging
import traceback
from collections.abc import Awaitable, Callable
from typing import Protocol

from mitmproxy import http

from ccany_addon.anthropic_api.errors import mask_secrets, replace_secrets

logger = logging.getLogger("ccany")


def internal_error_message(request_id: str) -> str:
    return f"ccany: internal error while handling this request; the proxy's log has the details under {request_id}"


class Guarded(Protocol):
    def internal_error(self, flow: http.HTTPFlow, hook: str, error: Exception) -> None: ...


def fail_closed[G: Guarded](hook: Callable[[G, http.HTTPFlow], None]) -> Callable[[G, http.HTTPFlow], None]:
    name = hook.__name__

    @functools.wraps(hook)
    def guarded(self: G, flow: http.HTTPFlow) -> None:
        try:
            hook(self, flow)
        except Exception as error:
            _answer_failure(self, flow, name, error)

    return guarded


def fail_closed_async[G: Guarded](hook: Callable[[G, http.HTTPFlow], Awaitable[None]]
                                  ) -> Callable[[G, http.HTTPFlow], Awaitable[None]]:
    """`fail_closed` for a hook that awaits (mitmproxy awaits it before the next addon's hook)."""
    name = hook.__name__

    @functools.wraps(hook)
    async def guarded(self: G, flow: http.HTTPFlow) -> None:
        try:
            await hook(self, flow)
        except Exception as error:
            _answer_failure(self, flow, name, error)

    return guarded


def _answer_failure(owner: Guarded, flow: http.HTTPFlow, hook: str, error: Exception) -> None:
    try:
        owner.internal_error(flow, hook, error)
    except Exception:
        logger.error(f"ccany: the {hook} hook failed and so did its error answer; the flow is killed")
        if flow.killable:
            flow.kill()


def log_internal_error(request_id: str, hook: str, error: BaseException, secrets: tuple[str, ...]) -> None:
    """The traceback, for whoever runs the gateway; an exception's text may quote upstream data, so it is masked."""
    text = "".join(traceback.format_exception(error)).rstrip()
    logger.error(mask_secrets(f"ccany: {request_id}: internal error in the {hook} hook:\n{text}", secrets))


class ReplacementBody:
    """A `response.stream` that sends `body` in place of whatever the upstream sends."""

    def __init__(self, body: bytes) -> None:
        self.body: bytes | None = body

    def __call__(self, data: bytes) -> list[bytes]:
        body, self.body = self.body, None
        return [body] if body else []


class SecretFilter(logging.Filter):
    """Masks the keys the gateway holds in every log record a handler writes (mitmproxy's own lines included:
    an upstream may echo a key in what mitmproxy reports)."""

    def __init__(self, secrets: Callable[[], tuple[str, ...]]) -> None:
        super().__init__()
        self.secrets = secrets

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if record.exc_info:  # a traceback's last line quotes the exception's text
            message += "\n" + "".join(traceback.format_exception(*record.exc_info)).rstrip()
            record.exc_info = record.exc_text = None
            record.msg, record.args = message, None
        if (masked := replace_secrets(message, self.secrets())) is not message:
            record.msg, record.args = masked, None
        return True

    def install(self) -> None:
        for handler in logging.getLogger().handlers:
            if self not in handler.filters:
                handler.addFilter(self)

    def uninstall(self) -> None:
        for handler in logging.getLogger().handlers:
            handler.removeFilter(self)
