"""The message a client holds after an Anthropic event stream, as an SDK adds the events up.

Runtime code (the stream writer, the flow log) and the test-side checker (conformance.py) both read it; it
depends on neither.
"""

from __future__ import annotations

import json


def accumulate_message(events: list[dict]) -> dict:
    """The message a sequence of Anthropic stream events adds up to. Tool input that is not valid JSON
    (a stream cut short) stays the string it was."""
    message: dict = {}
    for event in events:
        kind = event["type"]
        if kind == "message_start":
            start = event["message"]
            message = {**start, "content": [dict(block) for block in start.get("content", ())],
                       "usage": dict(start.get("usage") or {})}
        elif kind == "content_block_start" and "content" in message:
            message["content"].append(dict(event["content_block"]))
        elif kind == "content_block_delta" and event["index"] < len(message.get("content", ())):
            block, delta = message["content"][event["index"]], event["delta"]
            match delta["type"]:
                case "text_delta":
                    block["text"] += delta["text"]
                case "thinking_delta":
                    block["thinking"] += delta["thinking"]
                case "signature_delta":
                    block["signature"] = delta["signature"]
                case "input_json_delta":
                    block["_json"] = block.get("_json", "") + delta["partial_json"]
        elif kind == "message_delta":
            message.update(event["delta"])
            message["usage"] = {**message.get("usage", {}), **event["usage"]}
    for block in message.get("content", []):
        if "_json" in block:
            block["input"] = tool_input(block.pop("_json"))
    return message


def received_message(events: list[dict]) -> dict:
    """What a client holds after these events: the message they add up to, with the stream's last error (if
    it ended in one) as `error`."""
    message = accumulate_message([event for event in events if event["type"] != "error"])
    errors = [event["error"] for event in events if event["type"] == "error"]
    if errors:
        message["error"] = errors[-1]
    return message


def tool_input(partial_json: str) -> object:
    """A tool_use block's input from its concatenated `partial_json`: the string itself when not JSON."""
    try:
        return json.loads(partial_json or "{}")
    except ValueError:
        return partial_json
