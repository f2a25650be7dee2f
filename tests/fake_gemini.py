"""The Gemini API for the fake upstream: `POST /v1beta/models/{model}:generateContent` and
`:streamGenerateContent?alt=sse`, as strict as the real one where converters break.

It rejects (400 INVALID_ARGUMENT, with Google's error texts) tool schemas with keywords Gemini's Schema object
does not have, type lists, untyped nodes, `required` names without a property, arrays without `items`; turns
without parts; function responses that do not match the previous turn's calls; and a model turn whose first
functionCall lacks its `thoughtSignature`, or carries another one than the fake issued for that call. Every
functionCall the fake emits gets a signature (only the first of parallel calls, like Gemini 3).

Scenarios by the model in the URL: `scenario-error` (429 RESOURCE_EXHAUSTED with RetryInfo),
`scenario-truncated` (the stream ends without a finishReason); otherwise contents ending in a functionResponse
get "The file is written.", `scenario-tools` gets two parallel calls, and any other model plays Claude Code:
`Create the file X containing exactly: Y` → a `Write` call, anything else → a short text. Thought parts come
when `includeThoughts` is set.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re

PATH = re.compile(r"/v1beta/models/([^/:?]+):(generateContent|streamGenerateContent)(?:\?(.*))?")
DUMMY_SIGNATURE = "skip_thought_signature_validator"
SCHEMA_FIELDS = {"type", "format", "title", "description", "nullable", "enum", "maxItems", "minItems", "properties",
                 "required", "minProperties", "maxProperties", "minLength", "maxLength", "pattern", "example",
                 "anyOf", "propertyOrdering", "default", "items", "minimum", "maximum"}
TYPES = {"STRING", "NUMBER", "INTEGER", "BOOLEAN", "ARRAY", "OBJECT", "NULL"}
STRING_FORMATS = {"enum", "date-time"}
REQUEST_FIELDS = {"contents", "systemInstruction", "generationConfig", "tools", "toolConfig", "safetySettings",
                  "cachedContent"}
USAGE = {"promptTokenCount": 1200, "cachedContentTokenCount": 1000}

# (function name, canonical args) → the signature the fake issued with that call
issued: dict[tuple[str, str], str] = {}


async def handle(writer: asyncio.StreamWriter, method: str, path: str, headers: dict[str, str], body: dict) -> bool:
    """Answers the request and returns True when the path is this dialect's; False otherwise."""
    if method == "GET" and path.split("?")[0] == "/v1beta/models":
        await _models(writer, headers)
        return True
    match = PATH.fullmatch(path)
    if method != "POST" or match is None:
        return False
    model, action, query = match.group(1), match.group(2), match.group(3) or ""
    key = headers.get("x-goog-api-key", "")
    if not key:
        await _error(writer, 403, "PERMISSION_DENIED", "Method doesn't allow unregistered callers (callers without "
                                                       "established identity). Please use API Key or other form of "
                                                       "API consumer identity to call this API.")
        return True
    if key.startswith("bad"):
        await _error(writer, 400, "INVALID_ARGUMENT", "API key not valid. Please pass a valid API key.")
        return True
    if problems := request_problems(body):
        await _error(writer, 400, "INVALID_ARGUMENT", "\n".join(problems))
        return True
    if model == "scenario-error":
        details = [{"@type": "type.googleapis.com/google.rpc.QuotaFailure",
                    "violations": [{"quotaMetric": "generativelanguage.googleapis.com/generate_content_requests",
                                    "quotaId": "GenerateRequestsPerMinutePerProjectPerModel"}]},
                   {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "3s"}]
        await _error(writer, 429, "RESOURCE_EXHAUSTED", "You exceeded your current quota, please check your plan and "
                                                        "billing details.", details)
        return True
    chunks = plan(model, body)
    if action == "generateContent":
        await _send(writer, 200, json.dumps(merged(chunks)).encode(), "application/json")
    elif "alt=sse" not in query:  # without SSE, Gemini streams one JSON array
        await _send(writer, 200, json.dumps(chunks).encode(), "application/json")
    else:
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
        for chunk in chunks:
            data = b"data: " + json.dumps(chunk).encode() + b"\r\n\r\n"
            writer.write(b"%x\r\n%s\r\n" % (len(data), data))
            await writer.drain()
            await asyncio.sleep(0.002)
        writer.write(b"0\r\n\r\n")
        await writer.drain()
    return True


MODELS = ("gemini-2.5-pro", "gemini-2.5-flash")


async def _models(writer: asyncio.StreamWriter, headers: dict[str, str]) -> None:
    """The model list (the admin page's provider test): the key in x-goog-api-key, each name `models/<id>`."""
    if not headers.get("x-goog-api-key"):
        await _error(writer, 403, "PERMISSION_DENIED", "Method doesn't allow unregistered callers.")
        return
    models = [{"name": f"models/{model}", "displayName": model, "supportedGenerationMethods": ["generateContent"]}
              for model in MODELS]
    await _send(writer, 200, json.dumps({"models": models}).encode(), "application/json")


# ---------------------------------------------------------------- validation


def request_problems(body: dict) -> list[str]:
    problems = [f'Invalid JSON payload received. Unknown name "{name}": Cannot find field.'
                for name in body if name not in REQUEST_FIELDS]
    contents = body.get("contents")
    if not contents:
        return [*problems, "* GenerateContentRequest.contents: contents is not specified"]
    for t, tool in enumerate(body.get("tools") or ()):
        for d, declaration in enumerate(tool.get("functionDeclarations") or ()):
            where = f"tools[{t}].function_declarations[{d}].parameters"
            if "parameters" in declaration:
                parameters = declaration["parameters"]
                if parameters.get("type", "").upper() == "OBJECT" and not parameters.get("properties"):
                    problems.append(f"* GenerateContentRequest.{where}.properties: should be non-empty for OBJECT type")
                problems += schema_problems(parameters, where)
    previous_calls: list[dict] = []
    for i, content in enumerate(contents):
        parts = content.get("parts") or []
        if content.get("role") not in ("user", "model"):
            problems.append(f"* GenerateContentRequest.contents[{i}].role: must be user or model")
        if not parts:
            problems.append(f"* GenerateContentRequest.contents[{i}].parts: contents.parts must not be empty.")
        calls = [p["functionCall"] for p in parts if "functionCall" in p]
        responses = [p["functionResponse"] for p in parts if "functionResponse" in p]
        if content.get("role") == "model" and calls:
            problems += signature_problems(i, parts)
        if responses and (len(responses) != len(previous_calls)
                          or sorted(r["name"] for r in responses) != sorted(c["name"] for c in previous_calls)):
            problems.append("* Please ensure that the number of function response parts is equal to the number of "
                            "function call parts of the function call turn.")
        previous_calls = calls
    return problems


def signature_problems(index: int, parts: list[dict]) -> list[str]:
    first = next(p for p in parts if "functionCall" in p)
    call = first["functionCall"]
    signature = first.get("thoughtSignature")
    expected = issued.get(_call_key(call["name"], call.get("args") or {}))
    if signature is None:
        return [f"Function call is missing a thought_signature in functionCall parts. This is required for tools to "
                f"work correctly, and missing thought_signature may lead to degraded model performance. Additional "
                f"data, function call `default_api:{call['name']}` , position {index + 1}. Please refer to "
                "https://ai.google.dev/gemini-api/docs/thought-signatures for more details."]
    if expected is not None and signature != expected:  # stricter than Gemini: proves the round trip
        return [f"Corrupted thought signature for function call `{call['name']}` (expected the one issued)."]
    return []


def schema_problems(schema: object, where: str) -> list[str]:
    if not isinstance(schema, dict):
        return [f"Invalid value at '{where}': a Schema must be an object"]
    problems = [f"Invalid JSON payload received. Unknown name \"{name}\" at '{where}': Cannot find field."
                for name in schema if name not in SCHEMA_FIELDS]
    kind = schema.get("type")
    if isinstance(kind, list):
        problems.append(f"Invalid JSON payload received. Unknown name \"type\" at '{where}': Proto field is not "
                        "repeating, cannot start list.")
        return problems
    if kind is None and "anyOf" not in schema:
        problems.append(f"* GenerateContentRequest.{where}.type: must be specified when not using one_of, any_of or "
                        "all_of fields")
    elif kind is not None and str(kind).upper() not in TYPES:
        problems.append(f"Invalid value at '{where}.type' (type.googleapis.com/google.ai.generativelanguage.v1beta."
                        f"Type), \"{kind}\"")
    kind = str(kind or "").upper()
    if "format" in schema and kind == "STRING" and schema["format"] not in STRING_FORMATS:
        problems.append(f"* GenerateContentRequest.{where}.format: only 'enum' and 'date-time' are supported for "
                        "STRING type")
    if any(not isinstance(value, str) for value in schema.get("enum") or ()):
        problems.append(f"Invalid value at '{where}.enum': enum values must be strings")
    properties = schema.get("properties") or {}
    for name in schema.get("required") or ():
        if name not in properties:
            problems.append(f"* GenerateContentRequest.{where}.required: property is not defined")
    if kind == "ARRAY" and "items" not in schema:
        problems.append(f"* GenerateContentRequest.{where}.items: missing field.")
    for name, sub in properties.items():
        problems += schema_problems(sub, f"{where}.properties[{name}].value")
    if "items" in schema:
        problems += schema_problems(schema["items"], f"{where}.items")
    for n, sub in enumerate(schema.get("anyOf") or ()):
        problems += schema_problems(sub, f"{where}.any_of[{n}]")
    return problems


# ---------------------------------------------------------------- answers


def _call_key(name: str, args: dict) -> tuple[str, str]:
    return name, json.dumps(args, sort_keys=True)


def _signed_call(name: str, args: dict) -> dict:
    signature = base64.b64encode(f"fake-gemini-signature {len(issued)} {name}".encode()).decode()
    issued[_call_key(name, args)] = signature
    return {"functionCall": {"name": name, "args": args}, "thoughtSignature": signature}


def _chunk(parts: list[dict], finish: str | None = None, output: int = 0, thoughts: int = 0) -> dict:
    candidate: dict = {"content": {"role": "model", "parts": parts}, "index": 0}
    usage = {**USAGE, "totalTokenCount": USAGE["promptTokenCount"] + output + thoughts}
    if finish:
        candidate["finishReason"] = finish
        usage.update(candidatesTokenCount=output, thoughtsTokenCount=thoughts)
    return {"candidates": [candidate], "usageMetadata": usage, "modelVersion": "fake-gemini",
            "responseId": "fake-response-1"}


def _thoughts(body: dict) -> list[dict]:
    config = (body.get("generationConfig") or {}).get("thinkingConfig") or {}
    if not config.get("includeThoughts"):
        return []
    return [_chunk([{"text": "**Planning**\nLet me think ", "thought": True}]),
            _chunk([{"text": "about this.", "thought": True}])]


def _text(body: dict, text: str, finish: str | None = "STOP") -> list[dict]:
    pieces = [text[i:i + 9] for i in range(0, len(text), 9)]
    chunks = [*_thoughts(body), *(_chunk([{"text": piece}]) for piece in pieces[:-1])]
    chunks.append(_chunk([{"text": pieces[-1]}], finish, output=42, thoughts=12 if _thoughts(body) else 0))
    return chunks


def _calls(body: dict, calls: list[tuple[str, dict]]) -> list[dict]:
    parts = [_signed_call(*calls[0]), *({"functionCall": {"name": n, "args": a}} for n, a in calls[1:])]
    return [*_thoughts(body), _chunk(parts, "STOP", output=20, thoughts=12 if _thoughts(body) else 0)]


def _last_user_text(body: dict) -> str:
    for content in reversed(body["contents"]):
        if content["role"] == "user":
            return " ".join(part.get("text", "") for part in content["parts"])
    return ""


def plan(model: str, body: dict) -> list[dict]:
    """The response chunks a request gets."""
    if model.endswith("scenario-bench"):  # 50 text chunks, as the chat fake's bench stream has
        return _text(body, "abcdefghi" * 50)
    if model == "scenario-truncated":
        return _text(body, "This answer never ends properly.", finish=None)
    last = body["contents"][-1]
    if last["role"] == "user" and any("functionResponse" in part for part in last["parts"]):
        return _text(body, "The file is written.")
    if model == "scenario-tools":
        return _calls(body, [("get_weather", {"city": "Paris"}), ("get_weather", {"city": "London"})])
    match = re.search(r"Create the file (\S+) containing exactly: (.+)$", _last_user_text(body), re.S)
    names = {d["name"] for tool in body.get("tools") or () for d in tool.get("functionDeclarations") or ()}
    if match and "Write" in names:
        return _calls(body, [("Write", {"file_path": match.group(1), "content": match.group(2).strip()})])
    return _text(body, "Hello from the fake Gemini upstream.")


def merged(chunks: list[dict]) -> dict:
    """The generateContent answer the same chunks add up to (adjacent text of one kind joined)."""
    parts: list[dict] = []
    for chunk in chunks:
        for part in chunk["candidates"][0]["content"]["parts"]:
            last = parts[-1] if parts else None
            if last and "text" in part and "text" in last and last.get("thought") == part.get("thought"):
                last["text"] += part["text"]
            else:
                parts.append(dict(part))
    final = {**chunks[-1], "candidates": [{**chunks[-1]["candidates"][0], "content": {"role": "model",
                                                                                      "parts": parts}}]}
    return final


async def _error(writer: asyncio.StreamWriter, status: int, rpc_status: str, message: str,
                 details: list[dict] | None = None) -> None:
    error: dict = {"code": status, "message": message, "status": rpc_status}
    if details:
        error["details"] = details
    await _send(writer, status, json.dumps({"error": error}).encode(), "application/json")


async def _send(writer: asyncio.StreamWriter, status: int, data: bytes, content_type: str) -> None:
    head = f"HTTP/1.1 {status} X\r\ncontent-type: {content_type}; charset=UTF-8\r\ncontent-length: {len(data)}\r\n\r\n"
    writer.write(head.encode() + data)
    await writer.drain()
