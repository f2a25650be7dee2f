"""A fake OpenAI Chat Completions server on 127.0.0.1 for the end-to-end tests.

It speaks the real wire protocol (JSON answers, `text/event-stream` chunks ending in `data: [DONE]`, OpenAI
error bodies) and plays a scenario chosen by the requested model name, `scenario:<name>`. Every request it
receives is kept and served back at `GET /_requests` (`DELETE /_requests` clears them).

    python tests/fake_openai.py [--port N]     # prints "listening on PORT"
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))  # run as a script or imported from the tests package alike
import fake_gemini  # noqa: E402
import fake_responses  # noqa: E402
from fake_responses import send_json  # noqa: E402

Plan = list  # of ("chunk", dict) | ("raw", bytes) | ("sleep", seconds) | ("drop",)

CREATED = 1_760_000_000


def _chunk(model: str, delta: dict | None = None, finish: str | None = None, extra: dict | None = None) -> dict:
    choice = {"index": 0, "delta": delta or {}, "finish_reason": finish, **(extra or {})}
    return {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": CREATED, "model": model,
            "choices": [choice]}


def _usage_chunk(model: str, prompt: int = 1200, completion: int = 42, cached: int = 1000) -> dict:
    return {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": CREATED, "model": model,
            "choices": [], "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                                     "total_tokens": prompt + completion,
                                     "prompt_tokens_details": {"cached_tokens": cached}}}


def _text_plan(model: str, text: str, finish: str = "stop", extra: dict | None = None) -> Plan:
    plan: Plan = [("chunk", _chunk(model, {"role": "assistant", "content": ""}))]
    for i in range(0, len(text), 7):
        plan.append(("chunk", _chunk(model, {"content": text[i:i + 7]})))
    plan.append(("chunk", _chunk(model, {}, finish, extra)))
    plan.append(("chunk", _usage_chunk(model)))
    return plan


def _tool_plan(model: str, calls: list[tuple[str, str, str]], interleave: bool = False) -> Plan:
    """Tool calls whose arguments arrive in small fragments; interleaved by index when asked."""
    plan: Plan = [("chunk", _chunk(model, {"role": "assistant", "content": None}))]
    fragments: list[list[dict]] = []
    for position, (call_id, name, arguments) in enumerate(calls):
        parts = [{"index": position, "id": call_id, "type": "function", "function": {"name": name, "arguments": ""}}]
        parts += [{"index": position, "function": {"arguments": arguments[i:i + 5]}}
                  for i in range(0, len(arguments), 5)]
        fragments.append(parts)
    if interleave:
        longest = max(len(parts) for parts in fragments)
        ordered = [parts[i] for i in range(longest) for parts in fragments if i < len(parts)]
    else:
        ordered = [part for parts in fragments for part in parts]
    plan += [("chunk", _chunk(model, {"tool_calls": [part]})) for part in ordered]
    plan.append(("chunk", _chunk(model, {}, "tool_calls")))
    plan.append(("chunk", _usage_chunk(model)))
    return plan


def _last_user_text(body: dict) -> str:
    for message in reversed(body.get("messages", [])):
        if message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, str):
                return content
            return " ".join(p.get("text", "") for p in content if p.get("type") == "text")
    return ""


def _claude_code_plan(model: str, body: dict) -> Plan:
    """Plays a model that uses Claude Code's Write tool when asked to create a file, then confirms."""
    messages = body.get("messages", [])
    if messages and "You are a security monitor for autonomous AI coding agents" in str(messages[0].get("content")):
        return _text_plan(model, "<severity>20</severity>")  # auto mode's own check (the CLI's classifier): allow
    if messages and messages[-1].get("role") == "tool":
        return _text_plan(model, "The file is written.")
    match = re.search(r"Create the file (\S+) containing exactly: (.+)$", _last_user_text(body), re.S)
    tool_names = {t["function"]["name"] for t in body.get("tools", [])}
    if match and "Write" in tool_names:
        arguments = json.dumps({"file_path": match.group(1), "content": match.group(2).strip()})
        return _tool_plan(model, [("call_write_1", "Write", arguments)])
    wanted = re.search(r"Load the tool (\w+)", _last_user_text(body))
    if wanted and "ToolSearch" in tool_names and not (messages and messages[-1].get("role") == "tool"):
        arguments = json.dumps({"query": f"select:{wanted.group(1)}"})
        return _tool_plan(model, [("call_search_1", "ToolSearch", arguments)])
    command = re.search(r"Run the command: (.+)$", _last_user_text(body), re.S)
    if command and "Bash" in tool_names:
        arguments = json.dumps({"command": command.group(1).strip(), "description": "Run the command asked for"})
        return _tool_plan(model, [("call_bash_1", "Bash", arguments)])
    return _text_plan(model, "Hello from the fake upstream.")


def plan_for(body: dict) -> tuple[int, dict | None, Plan]:
    """(status, error body, stream plan) for a request body."""
    model = body.get("model", "")
    scenario = model.split(":", 1)[1] if model.startswith("scenario:") else "claude-code"
    if scenario == "overflow":  # OpenAI's words for a prompt over the context window
        return 400, {"error": {"message": "This model's maximum context length is 128000 tokens. However, your "
                                          "messages resulted in 131072 tokens. Please reduce the length of the "
                                          "messages.", "type": "invalid_request_error",
                               "code": "context_length_exceeded"}}, []
    if scenario == "strict_system" and any(m.get("role") == "system" for m in body.get("messages", [])[1:]):
        # vLLM with a Mistral-style chat template: a system message anywhere but first is refused
        return 400, {"object": "error", "message": "System message must be at the beginning.",
                     "type": "BadRequestError", "param": None, "code": 400}, []
    if (m := re.fullmatch(r"http_(\d{3})", scenario)):
        status = int(m.group(1))
        kind = {401: "invalid_request_error", 429: "rate_limit_exceeded"}.get(status, "server_error")
        return status, {"error": {"message": f"fake upstream says {status}", "type": kind, "code": None}}, []
    if (m := re.fullmatch(r"trickle_(\d+)", scenario)):  # a text stream whose chunks come N ms apart
        pause = int(m.group(1)) / 1000
        return 200, None, [step for chunk in _text_plan(model, "A slow answer, one piece at a time.")
                           for step in (("sleep", pause), chunk)]
    plans = {
        "text": lambda: _text_plan(model, "Hello! This is a streamed answer from the fake upstream."),
        "length": lambda: _text_plan(model, "Cut short", "length"),
        "content_filter": lambda: _text_plan(model, "", "content_filter"),
        "stop_sequence": lambda: _text_plan(model, "Count: 1 2 3", "stop", {"stop_reason": "END"}),
        "reasoning": lambda: [("chunk", _chunk(model, {"role": "assistant", "reasoning_content": "Let me "})),
                              ("chunk", _chunk(model, {"reasoning_content": "think."})),
                              *_text_plan(model, "The answer is 4.")],
        "tool": lambda: _tool_plan(model, [("call_abc.1", "get_weather", '{"city": "Paris", "unit": "celsius"}')]),
        "parallel": lambda: _tool_plan(model, [("call_1", "Read", '{"file_path": "/tmp/a.txt"}'),
                                               ("call_2", "Read", '{"file_path": "/tmp/b.txt"}')], interleave=True),
        "midstream_error": lambda: [*_text_plan(model, "Partial answer")[:3],
                                    ("raw", b'data: {"error": {"message": "The server had an error", '
                                            b'"type": "server_error"}}\n\n')],
        "drop": lambda: [*_text_plan(model, "This answer will be cut")[:3], ("sleep", 0.05), ("drop",)],
        "truncated": lambda: _text_plan(model, "No ending")[:3],
        "slow": lambda: [("sleep", 5.0), *_text_plan(model, "Too late")],
        "silent": lambda: [("sleep", 15.0), *_text_plan(model, "Thought it over.")],  # headers, then 15 s of nothing
        "hang": lambda: [*_text_plan(model, "Wait for it")[:3], ("sleep", 30.0)],
        "claude-code": lambda: _claude_code_plan(model, body),
        "bench": lambda: _text_plan(model, "abcdefg" * 47),  # 50 chunks: role, 47 pieces, finish, usage
    }
    return 200, None, plans.get(scenario, plans["text"])()


def completion_from_plan(plan: Plan) -> dict:
    """The non-streaming answer the same plan adds up to."""
    content, reasoning, calls, finish, usage, model, extra = "", "", {}, None, None, "", {}
    for step in plan:
        if step[0] != "chunk":
            continue
        chunk = step[1]
        model = chunk["model"]
        usage = chunk.get("usage") or usage
        for choice in chunk["choices"]:
            delta = choice["delta"]
            content += delta.get("content") or ""
            reasoning += delta.get("reasoning_content") or ""
            for part in delta.get("tool_calls") or ():
                call = calls.setdefault(part["index"], {"id": part.get("id"), "type": "function",
                                                        "function": {"name": "", "arguments": ""}})
                call["function"]["name"] += part["function"].get("name", "")
                call["function"]["arguments"] += part["function"].get("arguments", "")
            if choice["finish_reason"]:
                finish = choice["finish_reason"]
                extra = {k: v for k, v in choice.items() if k not in ("index", "delta", "finish_reason")}
    message: dict = {"role": "assistant", "content": content or None}
    if reasoning:
        message["reasoning_content"] = reasoning
    if calls:
        message["tool_calls"] = [calls[i] for i in sorted(calls)]
    return {"id": "chatcmpl-fake", "object": "chat.completion", "created": CREATED, "model": model,
            "choices": [{"index": 0, "message": message, "finish_reason": finish, **extra}], "usage": usage}


def _key_failure(headers: dict[str, str]) -> tuple[int, dict, dict] | None:
    """Keys that play a quota running out (`sk-limited-<seconds>-…`: 429, retry after that many seconds) or a
    revoked key (`sk-revoked…`: 401)."""
    token = headers.get("authorization", "").removeprefix("Bearer ")
    if limited := re.match(r"sk-limited-(\d+)-", token):
        error = {"message": "Rate limit reached for requests", "type": "requests", "code": "rate_limit_exceeded"}
        return 429, {"error": error}, {"retry-after": limited.group(1), "x-ratelimit-remaining-requests": "0",
                                       "x-ratelimit-reset-requests": f"{limited.group(1)}s"}
    if token.startswith("sk-revoked"):
        error = {"message": f"Incorrect API key provided: {token}", "type": "invalid_request_error",
                 "code": "invalid_api_key"}
        return 401, {"error": error}, {}
    return None


class FakeOpenAI:
    def __init__(self) -> None:
        self.requests: list[dict] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while await self._one(reader, writer):
                pass
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def _one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        method, path, _ = lines[0].split(" ", 2)
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
        raw = await reader.readexactly(int(headers.get("content-length", 0)))
        if path == "/_requests":
            if method == "DELETE":
                self.requests.clear()
            await send_json(writer, 200, self.requests)
            return True
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            body = {"_unparsed": raw.decode("utf-8", "replace")}
        self.requests.append({"method": method, "path": path, "headers": headers, "body": body,
                              "time": time.time()})
        if method == "GET" and (path.startswith("/openai/models?") or
                                (path.split("?")[0] == "/v1/models" and "x-api-key" in headers)):
            await self._keyed_models(writer, path, headers)
            return True
        if method == "GET" and path.split("?")[0] == "/v1/models":
            await self._models(writer, headers)
            return True
        if method == "POST" and path.split("?")[0] == "/v1/messages":
            await self._anthropic(writer, headers, body)
            return True
        for dialect in (fake_responses, fake_gemini):
            if await dialect.handle(writer, method, path, headers, body):
                return True
        if re.fullmatch(r"/openai/deployments/[^/]+/chat/completions\?api-version=[\w.-]+", path) and \
                not headers.get("api-key"):
            await send_json(writer, 401, {"error": {"code": "401", "message": "Access denied: missing api-key"}})
            return True
        if path.split("?")[0] != "/v1/chat/completions" and "api-version=" not in path:
            error = {"error": {"message": f"no route {path}", "type": "invalid_request_error"}}
            await send_json(writer, 404, error)
            return True
        if failure := _key_failure(headers):
            await send_json(writer, *failure)
            return True
        status, error, plan = plan_for(body)
        if error is not None:
            await send_json(writer, status, error, {"retry-after": "7"} if status == 429 else None)
            return True
        if not body.get("stream"):
            for step in plan:
                if step[0] == "sleep":
                    await asyncio.sleep(step[1])
            await send_json(writer, 200, completion_from_plan(plan))
            return True
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
        for step in plan:
            if step[0] == "sleep":
                await writer.drain()
                await asyncio.sleep(step[1])
                continue
            if step[0] == "drop":
                await writer.drain()
                writer.transport.abort()
                return False
            data = step[1] if step[0] == "raw" else f"data: {json.dumps(step[1])}\n\n".encode()
            writer.write(b"%x\r\n%s\r\n" % (len(data), data))
            await writer.drain()
        if plan and plan[-1][0] == "chunk" and plan[-1][1].get("usage"):
            done = b"data: [DONE]\n\n"
            writer.write(b"%x\r\n%s\r\n" % (len(done), done))
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        return True

    async def _models(self, writer: asyncio.StreamWriter, headers: dict[str, str]) -> None:
        """The model list (a provider connection test); like OpenAI, a bad key's 401 message quotes the key."""
        scheme, _, token = headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token or token.startswith("sk-bad"):
            error = {"message": f"Incorrect API key provided: {token or '(none)'}", "type": "invalid_request_error",
                     "code": "invalid_api_key"}
            await send_json(writer, 401, {"error": error})
            return
        models = [{"id": name, "object": "model", "created": CREATED, "owned_by": "fake"}
                  for name in ("gpt-4.1", "gpt-4.1-mini", "o3")]
        await send_json(writer, 200, {"object": "list", "data": models})

    async def _keyed_models(self, writer: asyncio.StreamWriter, path: str, headers: dict[str, str]) -> None:
        """The model lists of the kinds whose key is not a Bearer token (the admin page's provider test): Azure's
        `/openai/models?api-version=` with `api-key`, Anthropic's `/v1/models` with `x-api-key` and
        `anthropic-version`."""
        if path.startswith("/openai/"):
            if not headers.get("api-key") or "api-version=" not in path:
                await send_json(writer, 401, {"error": {"code": "401", "message": "Access denied: missing api-key"}})
                return
            models = [{"id": name, "object": "model", "created_at": CREATED, "status": "succeeded"}
                      for name in ("gpt-4.1", "o3")]
            await send_json(writer, 200, {"object": "list", "data": models})
            return
        if "anthropic-version" not in headers:
            error = {"type": "error", "error": {"type": "invalid_request_error",
                                                "message": "anthropic-version: header is required"}}
            await send_json(writer, 400, error)
            return
        models = [{"type": "model", "id": name, "display_name": name, "created_at": "2025-09-29T00:00:00Z"}
                  for name in ("claude-sonnet-4-5", "claude-haiku-4-5")]
        await send_json(writer, 200, {"data": models, "has_more": False, "first_id": models[0]["id"],
                                      "last_id": models[-1]["id"]})

    async def _anthropic(self, writer: asyncio.StreamWriter, headers: dict, body: dict) -> None:
        """The Anthropic Messages API, as the `anthropic` provider kind's upstream: a fixed answer, streamed
        with every event split across two writes."""
        if not headers.get("x-api-key") or "anthropic-version" not in headers:
            error = {"type": "error", "error": {"type": "authentication_error", "message": "x-api-key required"}}
            await send_json(writer, 401, error)
            return
        if body.get("model") == "scenario:overloaded":
            error = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
            await send_json(writer, 529, error)
            return
        text = ["Hello ", "from the ", "Anthropic fake."]
        if body.get("model") == "scenario:bench":  # 51 events, as the chat fake's bench stream has 50 chunks
            text = ["abcdefg"] * 44
        usage = {"input_tokens": 12, "output_tokens": 7, "cache_read_input_tokens": 3,
                 "cache_creation_input_tokens": 0}
        message = {"id": "msg_fake_anthropic", "type": "message", "role": "assistant", "model": body.get("model"),
                   "content": [], "stop_reason": None, "stop_sequence": None, "usage": {**usage, "output_tokens": 1}}
        if not body.get("stream"):
            answer = {**message, "content": [{"type": "text", "text": "".join(text)}], "stop_reason": "end_turn",
                      "usage": usage}
            await send_json(writer, 200, answer)
            return
        events = [{"type": "message_start", "message": message}, {"type": "ping"},
                  {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
                  *({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": piece}}
                    for piece in text),
                  {"type": "content_block_stop", "index": 0},
                  {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                   "usage": {"output_tokens": 7}},
                  {"type": "message_stop"}]
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
        for event in events:
            data = f"event: {event['type']}\ndata: {json.dumps(event)}\n\n".encode()
            for part in (data[: len(data) // 2], data[len(data) // 2 :]):
                writer.write(b"%x\r\n%s\r\n" % (len(part), part))
                await writer.drain()
                if body.get("model") != "scenario:bench":
                    await asyncio.sleep(0.002)
        writer.write(b"0\r\n\r\n")
        await writer.drain()


async def serve(port: int) -> None:
    fake = FakeOpenAI()
    server = await asyncio.start_server(fake.handle, "127.0.0.1", port)
    print(f"listening on {server.sockets[0].getsockname()[1]}", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    asyncio.run(serve(parser.parse_args().port))
