"""The OpenAI Responses API (`POST /v1/responses`, as Codex uses it) for the fake upstream in fake_openai.py.

It answers with real Responses objects and semantic stream events (`response.created` … `response.completed`,
no `[DONE]`), each event written in two pieces. The scenario is chosen by the requested model name:

- any other name: plays Claude Code's model — `Create the file X containing exactly: Y` in the last user text
  calls the `Write` tool; a request ending with a `function_call_output` gets "The file is written."; anything
  else gets a text answer. With `reasoning` in the request, a reasoning summary comes first.
- `scenario:tools`: two parallel function calls, arguments in small fragments.
- `scenario:error`: HTTP 429 with an OpenAI error body and `retry-after`.
- `scenario:failed`: a stream that starts answering, then reports `response.failed`.
"""

from __future__ import annotations

import asyncio
import json
import re

TEXT = "Hello from the fake Responses upstream."
SUMMARY = ["**Planning** I should greet the user.", "A short answer will do."]
TOOL_CALLS = [("call_weather_1", "get_weather", '{"city": "Paris", "unit": "celsius"}'),
              ("call_time_2", "get_time", '{"timezone": "Europe/Paris"}')]
USAGE = {"input_tokens": 1500, "input_tokens_details": {"cached_tokens": 1200}, "output_tokens": 57,
         "output_tokens_details": {"reasoning_tokens": 20}, "total_tokens": 1557}
CREATED = 1_760_000_000


def _pieces(text: str, size: int) -> list[str]:
    return [text[i:i + size] for i in range(0, len(text), size)]


class _Plan:
    """The output items of one answer, and the stream events that build them."""

    def __init__(self, body: dict) -> None:
        self.model = body.get("model", "")
        self.items: list[dict] = []
        self.events: list[dict] = []

    def reasoning(self, summary: list[str]) -> None:
        item = {"id": f"rs_{len(self.items)}", "type": "reasoning", "summary": []}
        self._added(item)
        for part, text in enumerate(summary):
            where = {"item_id": item["id"], "output_index": len(self.items), "summary_index": part}
            self._event("response.reasoning_summary_part.added", **where, part={"type": "summary_text", "text": ""})
            for piece in _pieces(text, 9):
                self._event("response.reasoning_summary_text.delta", **where, delta=piece)
            self._event("response.reasoning_summary_text.done", **where, text=text)
            self._event("response.reasoning_summary_part.done", **where, part={"type": "summary_text", "text": text})
        self._done({**item, "summary": [{"type": "summary_text", "text": text} for text in summary]})

    def message(self, text: str) -> None:
        item = {"id": f"msg_{len(self.items)}", "type": "message", "status": "in_progress", "role": "assistant",
                "content": []}
        self._added(item)
        where = {"item_id": item["id"], "output_index": len(self.items), "content_index": 0}
        self._event("response.content_part.added", **where, part={"type": "output_text", "text": "", "annotations": []})
        for piece in _pieces(text, 7):
            self._event("response.output_text.delta", **where, delta=piece, logprobs=[])
        part = {"type": "output_text", "text": text, "annotations": []}
        self._event("response.output_text.done", **where, text=text, logprobs=[])
        self._event("response.content_part.done", **where, part=part)
        self._done({**item, "status": "completed", "content": [part]})

    def function_call(self, call_id: str, name: str, arguments: str) -> None:
        item = {"id": f"fc_{len(self.items)}", "type": "function_call", "status": "in_progress", "call_id": call_id,
                "name": name, "arguments": ""}
        self._added(item)
        where = {"item_id": item["id"], "output_index": len(self.items)}
        for piece in _pieces(arguments, 5):
            self._event("response.function_call_arguments.delta", **where, delta=piece)
        self._event("response.function_call_arguments.done", **where, arguments=arguments)
        self._done({**item, "status": "completed", "arguments": arguments})

    def response(self, status: str, **extra: object) -> dict:
        return {"id": "resp_fake", "object": "response", "created_at": CREATED, "status": status,
                "model": self.model, "output": list(self.items), "parallel_tool_calls": True, "tool_choice": "auto",
                "tools": [], "error": None, "incomplete_details": None, "usage": None, **extra}

    def stream(self, end: dict) -> list[dict]:
        """Every event of the answer: created, in_progress, the items', then `end` (completed or failed)."""
        start = self.response("in_progress", output=[])
        opening = [{"type": "response.created", "response": start}, {"type": "response.in_progress", "response": start}]
        events = [*opening, *self.events, end]
        return [{**event, "sequence_number": n} for n, event in enumerate(events)]

    def _added(self, item: dict) -> None:
        self._event("response.output_item.added", output_index=len(self.items), item=item)

    def _done(self, item: dict) -> None:
        self._event("response.output_item.done", output_index=len(self.items), item=item)
        self.items.append(item)

    def _event(self, kind: str, **fields: object) -> None:
        self.events.append({"type": kind, **fields})


def _last_user_text(body: dict) -> str:
    items = body.get("input")
    if isinstance(items, str):
        return items
    for item in reversed(items or []):
        if item.get("type", "message") == "message" and item.get("role") == "user":
            content = item.get("content")
            if isinstance(content, str):
                return content
            return " ".join(part.get("text", "") for part in content if part.get("type") == "input_text")
    return ""


def _answer(body: dict, plan: _Plan) -> None:
    if plan.model == "scenario:bench":  # 50 events, as the chat fake's bench stream has 50 chunks
        plan.message("abcdefg" * 42)
        return
    if plan.model == "scenario:tools":
        for call in TOOL_CALLS:
            plan.function_call(*call)
        return
    items = body.get("input") or []
    if isinstance(items, list) and items and items[-1].get("type") == "function_call_output":
        plan.message("The file is written.")
        return
    match = re.search(r"Create the file (\S+) containing exactly: (.+)$", _last_user_text(body), re.S)
    tools = {tool.get("name") for tool in body.get("tools") or ()}
    if match and "Write" in tools:
        arguments = json.dumps({"file_path": match.group(1), "content": match.group(2).strip()})
        plan.function_call("call_write_1", "Write", arguments)
        return
    if body.get("reasoning"):
        plan.reasoning(SUMMARY)
    plan.message(TEXT)


def stream_events(body: dict) -> list[dict]:
    """Every stream event of the answer to `body`; the last one holds the final response object."""
    plan = _Plan(body)
    if body.get("model") == "scenario:failed":
        plan.message("This answer will fail")
        plan.events = plan.events[:4]  # added, part added, two text deltas
        failure = {"code": "server_error", "message": "The model failed to finish the answer."}
        return plan.stream({"type": "response.failed", "response": plan.response("failed", output=[], error=failure)})
    _answer(body, plan)
    return plan.stream({"type": "response.completed", "response": plan.response("completed", usage=USAGE)})


async def handle(writer: asyncio.StreamWriter, method: str, path: str, headers: dict[str, str], body: dict) -> bool:
    """Answers the request and returns True when the path is this dialect's; False otherwise."""
    if method != "POST" or path.split("?")[0] != "/v1/responses":
        return False
    scheme, _, token = headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        error = {"message": "You didn't provide an API key.", "type": "invalid_request_error", "param": None,
                 "code": None}
        await send_json(writer, 401, {"error": error})
        return True
    if body.get("model") == "scenario:error":
        error = {"message": "Rate limit reached for requests", "type": "requests", "param": None,
                 "code": "rate_limit_exceeded"}
        await send_json(writer, 429, {"error": error}, {"retry-after": "7"})
        return True
    events = stream_events(body)
    if not body.get("stream"):
        await send_json(writer, 200, events[-1]["response"])  # the final response object
        return True
    writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
    for event in events:
        data = f"event: {event['type']}\ndata: {json.dumps(event)}\n\n".encode()
        for part in (data[: len(data) // 2], data[len(data) // 2 :]):
            writer.write(b"%x\r\n%s\r\n" % (len(part), part))
            await writer.drain()
    writer.write(b"0\r\n\r\n")
    await writer.drain()
    return True


async def send_json(writer: asyncio.StreamWriter, status: int, body: object, extra: dict | None = None) -> None:
    """One HTTP/1.1 JSON answer (the chat fake answers with it too)."""
    data = json.dumps(body).encode()
    head = f"HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {len(data)}\r\n"
    for name, value in (extra or {}).items():
        head += f"{name}: {value}\r\n"
    writer.write(head.encode() + b"\r\n" + data)
    await writer.drain()
