"""A raw fake upstream for the fuzz suite: it records every request byte for byte and answers with whatever the
test queued, however malformed (any status line, headers, body, chunked pieces, a cut connection).

Control endpoints (never reached through the gateway: their paths start with `/_`):
- `POST /_answers` with `{key: answer}` adds answers. A request whose body contains `fzcase-<n>` gets the answer
  keyed `fzcase-<n>`; any other gets the one keyed `default:<dialect>` or `default:<dialect>:stream`
  (dialects: openai, azure, responses, gemini, anthropic), else a 599.
- `GET /_requests` lists what was received (`method`, `path`, `headers` as pairs, `body` in base64);
  `DELETE /_requests` and `DELETE /_answers` forget.

An answer: `{"status": 200, "reason": "OK", "headers": [[name, value], ...], "body": <base64>}`, or with
`"chunks": [<base64>, ...]` a chunked body written piece by piece (`"cut": true`: the connection closes before
the last chunk marker), or `"raw": <base64>`: exactly these bytes, then the connection closes.

    python tests/fake_raw.py [--port N]    # prints "listening on PORT"
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import re

TOKEN = re.compile(rb"fzcase-\d+")
answers: dict[str, dict] = {}
received: list[dict] = []


def dialect(path: str) -> str:
    if "/openai/deployments/" in path:
        return "azure"
    if path.startswith("/v1beta/models/"):
        return "gemini"
    if path.split("?")[0].endswith("/responses"):
        return "responses"
    if path.split("?")[0].endswith("/messages"):
        return "anthropic"
    return "openai"


def is_stream(path: str, body: bytes) -> bool:
    if "streamGenerateContent" in path:
        return True
    try:
        parsed = json.loads(body)
    except ValueError:
        return False
    return isinstance(parsed, dict) and parsed.get("stream") is True


def chosen(path: str, body: bytes) -> dict:
    if (match := TOKEN.search(body)) and match.group().decode() in answers:
        return answers[match.group().decode()]
    key = f"default:{dialect(path)}" + (":stream" if is_stream(path, body) else "")
    return answers.get(key) or {"status": 599, "body": base64.b64encode(f"no answer for {key}".encode()).decode()}


async def read_body(reader: asyncio.StreamReader, headers: dict[str, str]) -> bytes:
    if "content-length" in headers:
        return await reader.readexactly(int(headers["content-length"]))
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = b""
        while True:
            size = int((await reader.readline()).split(b";")[0].strip() or b"0", 16)
            if size == 0:
                await reader.readline()
                return body
            body += await reader.readexactly(size)
            await reader.readline()
    return b""


async def send(writer: asyncio.StreamWriter, answer: dict) -> bool:
    """Writes `answer`; returns whether the connection may be kept."""
    if "raw" in answer:
        writer.write(base64.b64decode(answer["raw"]))
        await writer.drain()
        return False
    status = answer.get("status", 200)
    head = [f"HTTP/1.1 {status} {answer.get('reason', 'Whatever')}".encode()]
    names = set()
    for name, value in answer.get("headers", ()):
        names.add(name.lower())
        head.append(name.encode("latin-1", "replace") + b": " + value.encode("latin-1", "replace"))
    keep = "connection" not in names and "content-length" not in names and "transfer-encoding" not in names
    if "chunks" in answer:
        if "transfer-encoding" not in names:
            head.append(b"transfer-encoding: chunked")
        writer.write(b"\r\n".join(head) + b"\r\n\r\n")
        for piece in answer["chunks"]:
            data = base64.b64decode(piece)
            if data:
                writer.write(b"%x\r\n%s\r\n" % (len(data), data))
                await writer.drain()
        if answer.get("cut"):
            return False
        writer.write(b"0\r\n\r\n")
    else:
        body = base64.b64decode(answer.get("body", ""))
        if "content-length" not in names:
            head.append(b"content-length: %d" % len(body))
        writer.write(b"\r\n".join(head) + b"\r\n\r\n" + body)
    await writer.drain()
    return keep


async def control(writer: asyncio.StreamWriter, method: str, path: str, body: bytes) -> None:
    result: object = {"ok": True}
    if path == "/_answers" and method == "POST":
        answers.update(json.loads(body))
    elif path == "/_answers" and method == "DELETE":
        answers.clear()
    elif path == "/_requests" and method == "GET":
        result = received
    elif path == "/_requests" and method == "DELETE":
        received.clear()
    data = json.dumps(result).encode()
    writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
                 % (len(data), data))
    await writer.drain()


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            line = await reader.readline()
            if not line.strip():
                break
            method, target = line.decode("latin-1").split(" ")[:2]
            pairs = []
            while (header := await reader.readline()) not in (b"\r\n", b"\n", b""):
                name, _, value = header.decode("latin-1").partition(":")
                pairs.append([name.strip().lower(), value.strip()])
            headers = dict(pairs)
            body = await read_body(reader, headers)
            if target.startswith("/_"):
                await control(writer, method, target, body)
                continue
            received.append({"method": method, "path": target, "headers": pairs,
                             "body": base64.b64encode(body).decode()})
            if not await send(writer, chosen(target, body)):
                break
    except (ConnectionError, asyncio.IncompleteReadError, ValueError):
        pass
    finally:
        writer.close()


async def serve(port: int) -> None:
    server = await asyncio.start_server(handle, "127.0.0.1", port, limit=64 * 1024 * 1024)
    print(f"listening on {server.sockets[0].getsockname()[1]}", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    asyncio.run(serve(parser.parse_args().port))
