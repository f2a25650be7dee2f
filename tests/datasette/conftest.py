"""A realistic flow log (streamed and plain turns, several models and providers, errors, Claude Code sessions,
stream timelines, hostile text) and the helpers the Datasette tests share."""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import httpx
import pytest

from ccany_addon.flowlog.bodies import BodyPacker
from ccany_addon.flowlog.schema import insert_flows, open_db
from ccany_addon.flowlog.store import Stored, store_batch
from tests.datasette.app import ROOT, make_datasette

# Hostile text: it must come out escaped everywhere.
EVIL = '</pre><script>alert("pwned")</script><img src=x onerror=alert(1)>'
SEARCH_WORD = "flamingo"  # in exactly one flow's conversation
BASE = datetime(2025, 6, 1, 9, 0, 0)
ROUTES = [  # client model, upstream model, provider
    ("claude-sonnet-4-20250514", "gpt-4.1", "openai"),
    ("claude-3-5-haiku-20241022", "gpt-4.1-mini", "openai"),
    ("claude-opus-4-1-20250805", "gemini-2.5-pro", "gemini"),
]
FIXTURE_PRICES = {"gpt-4.1": (2.0, 8.0), "gpt-4.1-mini": (0.4, 1.6)}  # USD per million input, output tokens
SESSIONS = ["5f0c2a1e-8d7b-4c39-9a51-0e2f6b7c1d01", "9a3b7c55-1f2e-4d6a-8b0c-2e4f6a8b0c12"]


def stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S.") + f"{moment.microsecond // 1000:03d}"


def _stream_events(rng: random.Random, ttft: float, duration: float, deltas: int) -> list[list]:
    events: list[list] = [[round(ttft * 0.6, 1), "message_start", None, 412], [round(ttft * 0.8, 1), "ping", None, 40]]
    events.append([round(ttft * 0.9, 1), "content_block_start", 0, 96])
    span = duration - ttft - 5
    for n in range(deltas):
        events.append([round(ttft + span * n / max(1, deltas - 1), 1), "content_block_delta", 0, rng.randint(90, 160)])
    events += [
        [round(duration - 4, 1), "content_block_stop", 0, 55],
        [round(duration - 3, 1), "message_delta", None, 140],
        [round(duration - 1, 1), "message_stop", None, 50],
    ]
    return events


def _flow(rng: random.Random, n: int, started: datetime, route: tuple[str, str, str], *, stream: bool,
          session: str | None, prompt: str, answer: str) -> dict:
    client_model, upstream_model, provider = route
    ttft = round(rng.uniform(150, 900), 1)
    duration = round(ttft + rng.uniform(200, 6000), 1)
    input_tokens, output_tokens = rng.randint(500, 30000), rng.randint(20, 2000)
    flow_id = f"req_{rng.getrandbits(128):032x}"
    client_request = {
        "model": client_model,
        "max_tokens": 32000,
        "stream": stream,
        "system": [{"type": "text", "text": "You are Claude Code.", "cache_control": {"type": "ephemeral"}}],
        "messages": [{"role": "user", "content": [{"type": "text", "text": prompt}]}],
        "metadata": {"user_id": "user_0f3a_account__session_" + (session or "none")},
    }
    upstream_request = {
        "model": upstream_model,
        "stream": stream,
        "max_completion_tokens": 32000,
        "messages": [{"role": "system", "content": "You are Claude Code."}, {"role": "user", "content": prompt}],
    }
    message = {
        "id": f"msg_{n:04d}",
        "type": "message",
        "role": "assistant",
        "model": client_model,
        "content": [{"type": "text", "text": answer}],
        "stop_reason": "end_turn",
        "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens},
    }
    if stream:
        chunks = [{"choices": [{"delta": {"content": word + " "}}]} for word in answer.split()[:3]]
        chunks.append({"choices": [], "usage": {"prompt_tokens": input_tokens, "completion_tokens": output_tokens}})
        upstream_response = "".join(f"data: {json.dumps(chunk)}\n\n" for chunk in chunks) + "data: [DONE]\n\n"
        events = _stream_events(rng, ttft, duration, rng.randint(3, 12))
    else:
        upstream_response = json.dumps(
            {"id": f"chatcmpl-{n}", "object": "chat.completion", "model": upstream_model,
             "choices": [{"message": {"role": "assistant", "content": answer}, "finish_reason": "stop"}],
             "usage": {"prompt_tokens": input_tokens, "completion_tokens": output_tokens}}
        )
        events = None
    headers = {"content-type": "application/json", "anthropic-version": "2023-06-01", "x-api-key": "[redacted]"}
    if session:
        headers["x-claude-code-session-id"] = session
    return {
        "id": flow_id,
        "started_at": stamp(started),
        "method": "POST",
        "path": "/v1/messages?beta=true",
        "status_code": 200,
        "upstream_status": 200,
        "is_stream": int(stream),
        "client_model": client_model,
        "upstream_model": upstream_model,
        "provider": provider,
        "upstream_url": f"https://{provider}.example/v1/chat/completions",
        "client_addr": "127.0.0.1:50312",
        "user_agent": "claude-cli/2.1.197 (external, cli)",
        "session_id": session,
        # Claude Code's hint headers, from the id so the generator's random sequence stays as it was
        "request_class": ("main", "subagent", "compaction")[sum(map(ord, flow_id)) % 3] if session else None,
        "agent_id": f"agent-{sum(map(ord, flow_id)) % 5}" if session and sum(map(ord, flow_id)) % 3 == 1 else None,
        "client_key_id": "key-dev",
        "stop_reason": "end_turn",
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "cache_read_input_tokens": rng.choice([0, 0, 1024, 4096]),
        "cache_creation_input_tokens": 0,
        "upstream_ttfb_ms": round(ttft * 0.7, 1),
        "ttft_ms": ttft,
        "duration_ms": duration,
        "chunk_count": len(events) if events else 1,
        "max_chunk_gap_ms": round(rng.uniform(5, 400), 1),
        "error_type": None,
        "error_message": None,
        "client_request": json.dumps(client_request),
        "client_request_headers": json.dumps(headers),
        "upstream_request": json.dumps(upstream_request),
        "upstream_request_headers": json.dumps({"content-type": "application/json", "authorization": "[redacted]"}),
        "upstream_response": upstream_response,
        "upstream_response_headers": json.dumps(
            {"content-type": "text/event-stream" if stream else "application/json", "x-request-id": f"up-{n}"}
        ),
        "client_response": json.dumps(message),
        "client_response_headers": json.dumps(
            {"content-type": "text/event-stream" if stream else "application/json", "request-id": flow_id}
        ),
        "events": json.dumps(events) if events else None,
        "notes": json.dumps(["dropped cache_control"]) if n % 5 == 0 else None,
        "truncated": None,
        "conversation": f"{prompt}\n\n{answer}",
    }


def _fail(flow: dict, status: int, error_type: str, message: str, *, upstream_status: int | None) -> dict:
    flow.update(
        status_code=status,
        upstream_status=upstream_status,
        error_type=error_type,
        error_message=message,
        stop_reason=None,
        output_tokens=None,
        events=None,
        client_response=json.dumps({"type": "error", "error": {"type": error_type, "message": message}}),
        upstream_response=json.dumps({"error": {"message": message}}) if upstream_status else None,
    )
    flow["duration_ms"] = round(flow["ttft_ms"] / 3, 1)
    flow["ttft_ms"] = None
    return flow


def build_flows() -> list[dict]:
    rng = random.Random(20250601)
    words = ["refactor the parser", "write tests for the cache", "explain this stack trace", "rename the module",
             "fix the flaky test", "add type hints", "summarise the README", "speed up the query"]
    flows = []
    for n in range(36):
        started = BASE + timedelta(minutes=5 * n, seconds=rng.randint(0, 59), milliseconds=rng.randint(0, 999))
        route = ROUTES[n % 3] if n % 7 else ROUTES[0]
        session = SESSIONS[n % 2] if n < 30 else None
        prompt = f"Please {words[n % len(words)]} (turn {n})"
        answer = f"Done: I will {words[(n + 3) % len(words)]} next."
        if n == 11:
            prompt += f" and tell me about the {SEARCH_WORD} in the garden"
        if n == 13:
            prompt += " " + EVIL
        flows.append(_flow(rng, n, started, route, stream=n % 4 != 0, session=session, prompt=prompt, answer=answer))
    # Errors: the upstream rate-limited us twice, failed once, timed out once; one request was invalid.
    _fail(flows[5], 429, "rate_limit_error", "Rate limit reached for gpt-4.1", upstream_status=429)
    _fail(flows[17], 429, "rate_limit_error", "Rate limit reached for gpt-4.1-mini", upstream_status=429)
    _fail(flows[22], 500, "api_error", "upstream 500: internal error", upstream_status=500)
    _fail(flows[26], 504, "timeout_error", "upstream timed out after 600 s", upstream_status=None)
    _fail(flows[31], 400, "invalid_request_error", "messages: Field required " + EVIL, upstream_status=None)
    flows[31].update(upstream_model=None, provider=None, upstream_url=None, upstream_request=None)
    flows[13]["client_request_headers"] = json.dumps({"content-type": "application/json", "x-evil": EVIL})
    flows[13]["upstream_response"] = "not json at all " + EVIL
    # A status-only failure (no error_type): counted as "http_502".
    flows[33].update(status_code=502, stop_reason=None, client_response="Bad Gateway")
    # A flow twelve days older than the rest: outside the default 7-day window.
    old = _flow(rng, 99, BASE - timedelta(days=12), ROUTES[2], stream=True, session=None,
                prompt="an old question", answer="an old answer")
    old["duration_ms"] = 99999.0
    flows.append(old)
    for row in flows:  # as the proxy prices them; gemini-2.5-pro has no price here: its flows are unpriced
        price = FIXTURE_PRICES.get(row["upstream_model"])
        if price and (row["input_tokens"] or row["output_tokens"]):
            row["cost_usd"] = ((row["input_tokens"] or 0) * price[0] + (row["output_tokens"] or 0) * price[1]) / 1e6
            row["price_source"] = f"fixture {row['upstream_model']}"
    return flows


@dataclass
class FlowLog:
    path: Path
    rows: list[dict]  # as built: the four bodies as text
    # as written: packed rows hold manifests instead of the bodies, and the cache forensics `BodyPacker` found
    stored: list[dict] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.path.stem

    def stored_row(self, flow_id: str) -> dict:
        return next(row for row in self.stored if row["id"] == flow_id)


def write_flow_log(path: Path, rows: list[dict], *, inline: bool = False) -> FlowLog:
    """Write `rows` as the proxy does since schema version 7: each body cut into parts (`BodyPacker`, in the
    rows' order, so a session's later turns get cache forensics) and stored with its parts (`store_batch`).
    `inline`: as the previous version did, the bodies in their columns (what an upgraded DB still holds)."""
    db = open_db(str(path))
    stored = [dict(row) for row in rows]
    if inline:
        with db.conn:
            insert_flows(db, stored)
    else:
        packer, parts = BodyPacker(), {}
        for row in stored:
            packer.pack_row(row, parts)
        outcome = store_batch(db, stored, parts=parts)
        assert outcome == Stored(written=len(stored)), outcome  # none degraded: the fixture is what tests expect
    db.close()
    return FlowLog(path, rows, stored)


@pytest.fixture(scope="session")
def flow_log(tmp_path_factory: pytest.TempPathFactory) -> FlowLog:
    """The fixture log in a file named like the default one (data/ccany.db → database `ccany`), bodies in parts."""
    return write_flow_log(tmp_path_factory.mktemp("flowlog") / "ccany.db", build_flows())


@pytest.fixture(scope="session")
def inline_flow_log(tmp_path_factory: pytest.TempPathFactory) -> FlowLog:
    """The same flows written the way the previous version wrote them: bodies inline, no parts."""
    return write_flow_log(tmp_path_factory.mktemp("flowlog-inline") / "ccany.db", build_flows(), inline=True)


def flow(log: FlowLog, **match: object) -> dict:
    """The first of the log's rows (as built, bodies as text) with these values."""
    return next(row for row in log.rows if all(row[key] == value for key, value in match.items()))


def section(page: str, element_id: str) -> str:
    """The HTML of the element with this id, up to its tag's matching close (no nesting of the same tag)."""
    start = page.index(f'id="{element_id}"')
    tag = page.rfind("<", 0, start)
    name = re.match(r"<(\w+)", page[tag:]).group(1)
    return page[tag : page.index(f"</{name}>", start) + len(name) + 3]


def fetch(*db_paths: Path, paths: list[str]) -> list[httpx.Response]:
    """GET each path, in order, from one in-process Datasette (built by make_datasette) in one event loop."""

    async def run() -> list[httpx.Response]:
        ds = make_datasette(db_paths[0], *db_paths[1:])
        return [await ds.client.get(path) for path in paths]

    return asyncio.run(run())


def fetch_one(db_path: Path, path: str) -> httpx.Response:
    return fetch(db_path, paths=[path])[0]


def rows_of(db_path: Path, path: str) -> list[dict]:
    response = fetch_one(db_path, path)
    assert response.status_code == 200, response.text[:2000]
    return response.json()


# --- a real `scripts/datasette` process ------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Server:
    url: str
    process: subprocess.Popen
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def start_server(db_path: Path, log_dir: Path, config_db: Path | None = None, env: dict | None = None,
                 args: tuple[str, ...] = ()) -> Server:
    """scripts/datasette over `db_path` and a config DB (by default a new one in `log_dir`, never the repo's), with
    extra `datasette serve` flags."""
    port = free_port()
    log_path = log_dir / f"datasette-{port}.log"
    config_db = config_db or log_dir / f"config-{port}.db"
    env = {**os.environ, "CCANY_DATASETTE_HOST": "127.0.0.1", "CCANY_DATASETTE_PORT": str(port), **(env or {})}
    env = {name: value for name, value in env.items() if value is not None}  # None: unset it
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [str(ROOT / "scripts" / "datasette"), str(db_path), str(config_db), *args], stdout=log,
            stderr=subprocess.STDOUT, env=env, cwd=log_dir,
        )
    server = Server(f"http://127.0.0.1:{port}", process, log_path)
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(server.url + "/-/versions.json", timeout=1):
                return server
        except urllib.error.HTTPError:  # it answers (403 once accounts exist: anonymous may see nothing)
            return server
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                stop_server(server)
                raise RuntimeError(f"scripts/datasette did not come up:\n{server.log()}") from None
            time.sleep(0.1)


def stop_server(server: Server) -> None:
    if server.process.poll() is None:
        server.process.terminate()
        try:
            server.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait()


@pytest.fixture(scope="session")
def server(flow_log: FlowLog, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    running = start_server(flow_log.path, tmp_path_factory.mktemp("datasette-server"))
    yield running
    stop_server(running)
