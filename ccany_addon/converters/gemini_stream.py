"""Google Gemini stream → Anthropic stream: an incremental translator (`streamGenerateContent?alt=sse` bytes in,
Anthropic SSE bytes out).

A small state machine over the shared stream writer; no I/O. The request, the non-streamed answer and why
thought signatures become signed thinking blocks are in gemini.py; the rules are in docs/conversion.md.
"""

from __future__ import annotations

from ccany_addon.anthropic_api.errors import GatewayError
from ccany_addon.anthropic_api.sse import SSEDecoder
from ccany_addon.converters.common import ResponseContext
from ccany_addon.converters.message_stream import MessageStreamWriter, WrittenStream
from ccany_addon.converters.shared_answer import (
    GEMINI_SIGNATURE_PREFIX,
    gemini_error_status,
    gemini_parts,
    gemini_stop_reason,
    usage_from_gemini,
)
from ccany_addon.util.json_codec import dumps_str, loads


class GeminiStreamTranslator(WrittenStream):
    """Gemini SSE bytes in (`data: {GenerateContentResponse}` per event), Anthropic SSE bytes out.

    Gemini sends each functionCall whole, in one part; its arguments go out as one `input_json_delta`.
    Every chunk repeats the usage so far (the last one counts); the chunk with a finishReason ends the message.
    """

    def __init__(self, ctx: ResponseContext, upstream: str = "upstream") -> None:
        self.ctx = ctx
        self.upstream = upstream
        self.writer = MessageStreamWriter(ctx)
        self._decoder = SSEDecoder()
        self._usage: dict | None = None
        self._signed = False  # the open thinking block already carries a Gemini signature
        self._calls = 0

    def translate(self, data: bytes) -> list[bytes]:
        out: list[bytes] = []
        if self.writer.finished:
            return out
        self.writer.start(out)
        for event in self._decoder.feed(data) if data else self._decoder.close():
            self._event(event.data, out)
            if self.writer.finished:
                break
        if not data and not self.writer.finished:
            self.writer.fail(500, f"{self.upstream} upstream ended the stream before the answer was complete", out)
        return [b"".join(out)] if out else []

    def _event(self, data: str, out: list[bytes]) -> None:
        try:
            chunk = loads(data)
        except ValueError:
            self.writer.fail(500, f"{self.upstream} upstream sent malformed stream data: {data[:200]!r}", out)
            return
        if isinstance(chunk, list) and len(chunk) == 1:  # the non-SSE framing wraps objects in an array
            chunk = chunk[0]
        if not isinstance(chunk, dict):
            return
        if isinstance(error := chunk.get("error"), dict):
            message = f"{self.upstream} upstream: {error.get('message') or 'stream error'}"
            self.writer.fail(gemini_error_status(error), message, out)
            return
        if isinstance(chunk.get("usageMetadata"), dict):
            self._usage = chunk["usageMetadata"]
        candidates = [c for c in chunk.get("candidates") or () if isinstance(c, dict)]
        if not candidates:
            if (chunk.get("promptFeedback") or {}).get("blockReason"):
                self._finish("refusal", out)
            return
        candidate = candidates[0]
        for part in gemini_parts(candidate):
            self._part(part, out)
        if finish_reason := candidate.get("finishReason"):
            try:
                stop_reason = gemini_stop_reason(finish_reason, self._calls > 0, candidate, self.upstream)
            except GatewayError as failure:
                self.writer.fail(failure.status, failure.message, out)
                return
            self._finish(stop_reason, out)

    def _part(self, part: dict, out: list[bytes]) -> None:
        writer = self.writer
        signature = part.get("thoughtSignature")
        if part.get("thought"):
            if writer.open_kind == "thinking" and self._signed:
                writer.close(out)  # a signed block belongs to the call it preceded; new thoughts start anew
            thought = part.get("text")
            self._thinking(thought if isinstance(thought, str) else "", signature, out)
        elif isinstance(call := part.get("functionCall"), dict):
            if signature:  # signs the open thinking block (its thoughts led to this call), else an empty one
                if writer.open_kind != "thinking" or self._signed:
                    writer.close(out)
                self._thinking("", signature, out)
            args = call.get("args")
            writer.start_tool(call.get("id"), str(call.get("name") or ""), out)
            writer.tool_arguments(dumps_str(args if isinstance(args, dict) else {}), out)
            writer.close(out)
            self._calls += 1
        elif isinstance(text := part.get("text"), str) and text:
            writer.text(text, out)

    def _thinking(self, text: str, signature: str | None, out: list[bytes]) -> None:
        if self.writer.open_kind != "thinking":
            self._signed = False
        self.writer.thinking(text, out)
        if signature:
            self.writer.sign_thinking(GEMINI_SIGNATURE_PREFIX + signature)
            self._signed = True

    def _finish(self, stop_reason: str, out: list[bytes]) -> None:
        usage = usage_from_gemini(self._usage) if self._usage is not None else None
        self.writer.finish(stop_reason, usage, out)
