"""A checker for Anthropic SSE streams: every way a stream can break the clients' grammar.

    message_start → ping? → (content_block_start(i) → content_block_delta(i)* → content_block_stop(i))*
    → message_delta (once, with usage.output_tokens) → message_stop

An `event: error` may end a stream at any point; the stream then has no `message_stop`.
Usage: `python -m ccany_addon.anthropic_api.conformance < stream.txt`.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field

from ccany_addon.anthropic_api.accumulate import accumulate_message
from ccany_addon.anthropic_api.sse import SSEDecoder

_DELTA_FOR_BLOCK = {
    "text": {"text_delta", "citations_delta"},
    "thinking": {"thinking_delta", "signature_delta"},
    "redacted_thinking": set(),
    "tool_use": {"input_json_delta"},
    "server_tool_use": {"input_json_delta"},
}


@dataclass
class StreamReport:
    events: list[dict] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    error: dict | None = None  # the body of a terminating `event: error`

    @property
    def ok(self) -> bool:
        return not self.violations

    @property
    def complete(self) -> bool:
        """A clean, conforming end: grammar respected and `message_stop` reached."""
        return self.ok and self.error is None and bool(self.events) and self.events[-1]["type"] == "message_stop"

    def message(self) -> dict:
        """The message the events add up to (as an SDK accumulates it)."""
        return accumulate_message(self.events)


def check_stream(data: bytes) -> StreamReport:
    report = StreamReport()
    violations = report.violations
    decoder = SSEDecoder()
    raw_events = decoder.feed(data)
    if decoder.pending:
        violations.append("stream does not end with a complete event (missing blank line)")
    raw_events += decoder.close()

    state = "start"  # start → started → (in_block ↔ between) → delta_sent → stopped
    open_index: int | None = None
    open_type: str | None = None
    next_index = 0
    for position, raw in enumerate(raw_events):
        where = f"event {position}"
        if raw.data.strip() == "[DONE]":
            violations.append(f"{where}: '[DONE]' is not part of the Anthropic stream")
            continue
        if raw.event is None:
            violations.append(f"{where}: data without an 'event:' line")
        try:
            event = json.loads(raw.data)
        except ValueError:
            violations.append(f"{where}: data is not JSON: {raw.data[:80]!r}")
            continue
        if not isinstance(event, dict) or "type" not in event:
            violations.append(f"{where}: payload has no 'type'")
            continue
        kind = event["type"]
        report.events.append(event)
        if raw.event is not None and raw.event != kind:
            violations.append(f"{where}: 'event: {raw.event}' but payload type {kind!r}")
        if state == "stopped" or report.error is not None:
            violations.append(f"{where}: {kind} after the stream ended")
            continue

        if kind == "error":
            error = event.get("error")
            if not (isinstance(error, dict) and isinstance(error.get("type"), str) and "message" in error):
                violations.append(f"{where}: error event without error.type and error.message")
            report.error = error if isinstance(error, dict) else {}
            continue
        if kind == "ping":
            if state == "start":
                violations.append(f"{where}: ping before message_start")
            continue
        if state == "start":
            if kind != "message_start":
                violations.append(f"{where}: first event is {kind!r}, not message_start")
            state = "started"
            message = event.get("message")
            if kind == "message_start" and not (isinstance(message, dict) and isinstance(message.get("usage"), dict)):
                violations.append(f"{where}: message_start without message.usage")
            elif kind == "message_start" and message.get("content") != []:
                violations.append(f"{where}: message_start with non-empty content")
            continue
        if kind == "message_start":
            violations.append(f"{where}: second message_start")
        elif kind == "content_block_start":
            index, block = event.get("index"), event.get("content_block")
            if state == "delta_sent":
                violations.append(f"{where}: content_block_start after message_delta")
            if open_index is not None:
                violations.append(f"{where}: block {index} starts while block {open_index} is open")
            if index != next_index:
                violations.append(f"{where}: block index {index}, expected {next_index}")
            if not isinstance(block, dict) or block.get("type") not in _DELTA_FOR_BLOCK:
                violations.append(f"{where}: unknown content block {block!r}")
                block = {"type": None}
            elif block["type"] in ("tool_use", "server_tool_use"):
                if block.get("input") != {}:
                    violations.append(f"{where}: tool_use input must arrive as input_json_delta, not in the start")
                if not block.get("id") or not block.get("name"):
                    violations.append(f"{where}: tool_use block without id or name")
            open_index, open_type = index, block["type"]
            next_index = (index if isinstance(index, int) else next_index) + 1
        elif kind == "content_block_delta":
            index, delta = event.get("index"), event.get("delta") or {}
            if open_index is None or index != open_index:
                violations.append(f"{where}: delta for block {index}, but the open block is {open_index}")
            elif delta.get("type") not in _DELTA_FOR_BLOCK.get(open_type or "", set()):
                violations.append(f"{where}: {delta.get('type')} inside a {open_type} block")
        elif kind == "content_block_stop":
            if open_index is None or event.get("index") != open_index:
                violations.append(f"{where}: stop for block {event.get('index')}, but the open block is {open_index}")
            open_index = open_type = None
        elif kind == "message_delta":
            if state == "delta_sent":
                violations.append(f"{where}: second message_delta")
            if open_index is not None:
                violations.append(f"{where}: message_delta while block {open_index} is open")
            usage = event.get("usage")
            if not (isinstance(usage, dict) and isinstance(usage.get("output_tokens"), int)):
                violations.append(f"{where}: message_delta without usage.output_tokens")
            if "stop_reason" not in (event.get("delta") or {}):
                violations.append(f"{where}: message_delta without delta.stop_reason")
            state = "delta_sent"
        elif kind == "message_stop":
            if state != "delta_sent":
                violations.append(f"{where}: message_stop without a message_delta before it")
            state = "stopped"
        else:
            violations.append(f"{where}: unknown event type {kind!r}")

    if report.error is None and state != "stopped":
        violations.append("stream ends without message_stop or an error event")
    return report


def main() -> int:
    report = check_stream(sys.stdin.buffer.read())
    for violation in report.violations:
        print(violation)
    if report.error:
        print(f"ended with error: {report.error}")
    print(f"{len(report.events)} events, {len(report.violations)} violations")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
