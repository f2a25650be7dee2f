"""The session-growth case of scripts/bench: one Claude Code session of N turns (default 150) sent, turn by turn,
to two ccany addon proxies side by side in front of the same fake OpenAI upstream: one logging every flow with
its bodies (its own flow DB), one with `ccany_db=` (no flow log). Reports each proxy's CPU over the session
and their ratio, the flow DB's size after the session against the final request body's (with a per-table
breakdown from SQLite's dbstat when it is compiled in), and both proxies' RSS at the end.

The session: turn 0 is bench.py's ~20 KB Claude Code body with Claude Code's billing header as system[0] (its
three digits change on every request); each turn adds an assistant message (a short text and one tool_use) and a
user message with a ≈ 2.3 KB tool result (source-like lines built from a seeded vocabulary of a few hundred
words); `cache_control` sits on one system block and on the last block of the last user message only, so it
moves every turn. After 150 turns the body is ≈ 424 KB. Requests are streamed, compact JSON, with Claude Code's
headers and one session id.
"""

from __future__ import annotations

import random
import sqlite3
import string
import subprocess
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from bench import (
    ROOT,
    WRITER_THREAD,
    claude_code_body,
    compact,
    cpu_seconds,
    rss_mib,
    send,
    start_mitmdump,
    stop,
    thread_cpu_seconds,
    wait_for_rows,
)

from ccany_addon.flowlog.schema import open_db

SEED = 21_332
# each turn's tool result, at least this many bytes (whole lines): ≈ 2.35 KB as JSON, ≈ 2.7 KB a turn with its
# tool call, which makes the 150th turn's body the ≈ 424 KB the issue measured (turn 0 is ≈ 24 KB)
TOOL_RESULT_BYTES = 2_270
LAST_TURNS = 10  # the turns whose mean CPU is shown next to the total: the cost once the body is large
HEADERS = {"content-type": "application/json", "anthropic-version": "2023-06-01",
           "user-agent": "claude-cli/2.1.332 (external, cli)"}

_STEMS = (
    "account", "adapter", "address", "agent", "archive", "batch", "buffer", "cache", "channel", "chunk", "client",
    "column", "config", "context", "cursor", "delta", "digest", "document", "encoder", "entry", "event", "field",
    "filter", "frame", "handler", "header", "index", "item", "job", "key", "layer", "limit", "listener", "loader",
    "message", "metric", "model", "node", "offset", "option", "packet", "page", "parser", "path", "payload",
    "policy", "pool", "prefix", "provider", "query", "queue", "record", "registry", "request", "response", "result",
    "retry", "route", "row", "schema", "scope", "secret", "session", "signal", "snapshot", "socket", "source",
    "state", "status", "store", "stream", "summary", "table", "target", "task", "timeout", "token", "tool",
    "trace", "usage", "user", "value", "version", "window", "worker", "writer",
)
_VERBS = ("build", "check", "close", "decode", "emit", "fetch", "flush", "load", "merge", "open", "parse", "read",
          "resolve", "send", "split", "update", "validate", "write")


def _vocabulary() -> tuple[list[str], list[str]]:
    """A few hundred identifiers (snake_case, verb_noun, noun_noun) and the CamelCase class names."""
    rng = random.Random(0)
    names = set(_STEMS) | {f"{verb}_{stem}" for verb in _VERBS for stem in rng.sample(_STEMS, 8)}
    names |= {f"{a}_{b}" for a, b in (rng.sample(_STEMS, 2) for _ in range(120))}
    classes = [a.title() + b.title() for a, b in (rng.sample(_STEMS, 2) for _ in range(60))]
    return sorted(names), classes


NAMES, CLASSES = _vocabulary()


def _source_line(rng: random.Random) -> str:
    def n() -> str:
        return rng.choice(NAMES)

    def c() -> str:
        return rng.choice(CLASSES)

    number = rng.choice((0, 1, 2, 8, 16, 30, 64, 100, 256, 1024, rng.randrange(10_000)))
    return rng.choice((
        f"def {n()}({n()}: {c()}, {n()}: int = {number}) -> {c()} | None:",
        f"    {n()} = {n()}.{n()}({n()}, {n()}={number})",
        f"    if {n()} is None or len({n()}) > {number}:",
        f"        return {n()}[{number}:]",
        f"    # {' '.join(rng.choice(NAMES).replace('_', ' ') for _ in range(rng.randrange(3, 9)))}",
        f"class {c()}({c()}):",
        f"    for {n()} in {n()}.{n()}():",
        f"        {n()}.append({c()}({n()}, {number}))",
        f'        raise {c()}Error(f"cannot {n().replace("_", " ")}: {{{n()}!r}}")',
        f"from ccany.{n()} import {c()}, {n()}",
        f"    self.{n()}: dict[str, {c()}] = {{}}",
        "",
    ))


def tool_result_text(turn: int) -> str:
    """≈ 2.3 KB of a source file as Claude Code's Read tool shows it (numbered lines), different every turn."""
    rng = random.Random(turn)
    first = rng.randrange(1, 400)
    lines: list[str] = []
    size = 0
    while size < TOOL_RESULT_BYTES:
        line = f"{first + len(lines):>6}→{_source_line(rng)}"
        lines.append(line)
        size += len(line.encode()) + 1
    return "\n".join(lines)


def _mark(block: dict[str, Any] | None, on: bool) -> None:
    if block is not None:
        if on:
            block["cache_control"] = {"type": "ephemeral"}
        else:
            block.pop("cache_control", None)


class Session:
    """The growing body of one Claude Code session; `add_turn` appends a tool round trip and moves the
    last-message cache marker, `request` is the next request's bytes with a fresh billing header."""

    def __init__(self) -> None:
        self.rng = random.Random(SEED)
        self.body = claude_code_body(True)
        self.body["system"].insert(0, {"type": "text", "text": ""})
        for message in self.body["messages"]:
            for block in message["content"]:
                _mark(block, False)
        self.marked: dict[str, Any] | None = self.body["messages"][-1]["content"][-1]
        _mark(self.marked, True)
        self.session_id = str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def add_turn(self, turn: int) -> None:
        rng = random.Random(-turn)
        tool_id = "toolu_01" + "".join(rng.choices(string.ascii_letters + string.digits, k=22))
        path = f"/src/ccany/{rng.choice(NAMES)}/{rng.choice(NAMES)}.py"
        result = {"type": "tool_result", "tool_use_id": tool_id, "content": tool_result_text(turn)}
        self.body["messages"] += [
            {"role": "assistant", "content": [
                {"type": "text", "text": f"Let me read {path} to see how {rng.choice(NAMES)} is handled."},
                {"type": "tool_use", "id": tool_id, "name": f"Tool{rng.randrange(16)}", "input": {"param_0": path}}]},
            {"role": "user", "content": [result]},
        ]
        _mark(self.marked, False)
        _mark(result, True)
        self.marked = result

    def request(self) -> bytes:
        digits = f"{self.rng.randrange(1000):03d}"
        self.body["system"][0]["text"] = \
            f"x-anthropic-billing-header: cc_version=2.1.332.{digits}; cc_entrypoint=cli;"
        return compact(self.body)

    def headers(self) -> dict[str, str]:
        return {**HEADERS, "x-claude-code-session-id": self.session_id}


@dataclass
class SessionResult:
    turns: int
    final_body: int  # bytes
    cpu_ms: dict[str, list[float]] = field(default_factory=dict)  # proxy: CPU ms of each turn
    rss: dict[str, float] = field(default_factory=dict)  # proxy: MiB at the end
    db_files: dict[str, int] = field(default_factory=dict)  # file name: bytes
    tables: list[tuple[str, int]] = field(default_factory=list)  # (table or index, bytes), largest first
    empty_db: int = 0  # bytes of a new flow DB with no flow
    writer_ms: float = 0.0  # the logging proxy's flow writer thread over the session


def db_size(path: Path, result: SessionResult) -> None:
    """Checkpoint the stopped proxy's flow DB, then its files' sizes and, if dbstat is there, per table."""
    db = sqlite3.connect(path)
    try:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        try:
            result.tables = db.execute("SELECT name, sum(pgsize) FROM dbstat GROUP BY name ORDER BY 2 DESC").fetchall()
        except sqlite3.Error:
            result.tables = []  # SQLite built without SQLITE_ENABLE_DBSTAT_VTAB
    finally:
        db.close()
    for file in (path, path.with_name(path.name + "-wal")):
        if file.exists():
            result.db_files[file.name] = file.stat().st_size


def session_growth(upstream: str, tmp: Path, turns: int, options: list[str]) -> SessionResult:
    """Both proxies get every turn, alternately (which one goes first alternates too), each measured from its
    request until the logging proxy's flow is a row in its DB. The bench reads the DB itself: asking the proxy's
    /metrics whether its queue is empty would count the proxy's answers to that polling as the log's cost."""
    directory = tmp / "session"
    directory.mkdir()
    db = directory / "bench.db"
    shared = [f"ccany_config_db={tmp / 'config.db'}", *(o for o in options if not o.startswith("ccany_db="))]
    addon = ROOT / "ccany_addon" / "addon.py"
    proxies: dict[str, tuple[subprocess.Popen[bytes], int]] = {}
    try:
        proxies["with log"] = start_mitmdump(upstream, addon, directory / "with-log.log", [f"ccany_db={db}", *shared])
        proxies["without log"] = start_mitmdump(upstream, addon, directory / "without-log.log", ["ccany_db=", *shared])
        session = Session()
        result = SessionResult(turns, 0, {name: [] for name in proxies})
        logging_pid = proxies["with log"][0].pid
        writer_before = thread_cpu_seconds(logging_pid, WRITER_THREAD)
        with httpx.Client(timeout=60) as client:
            for turn in range(1, turns + 1):
                session.add_turn(turn)
                order = list(proxies.items()) if turn % 2 else list(reversed(proxies.items()))
                for name, (process, port) in order:
                    body = session.request()
                    before = cpu_seconds(process.pid)
                    send(client, f"http://127.0.0.1:{port}/v1/messages", body, True, session.headers())
                    if name == "with log":
                        wait_for_rows(db, turn)
                    result.cpu_ms[name].append((cpu_seconds(process.pid) - before) * 1000)
                    result.final_body = len(body)
        result.writer_ms = (thread_cpu_seconds(logging_pid, WRITER_THREAD) - writer_before) * 1000
        result.rss = {name: rss_mib(process.pid) for name, (process, _) in proxies.items()}
    finally:
        for process, _ in proxies.values():
            stop(process)  # the logging proxy checkpoints its DB on close
    db_size(db, result)
    open_db(str(directory / "empty.db")).close()
    result.empty_db = (directory / "empty.db").stat().st_size
    return result


def print_session(result: SessionResult) -> None:
    with_log, without = result.cpu_ms["with log"], result.cpu_ms["without log"]
    last = min(LAST_TURNS, result.turns)
    print(f"\nsession growth: one Claude Code session of {result.turns} turns, streamed, final request body "
          f"{result.final_body / 1024:.1f} KB; two ccany addon proxies, alternating turn by turn")
    print(f"{'':<28}{'with log':>12}{'without log':>14}{'ratio':>8}")
    for label, a, b in (
        ("proxy CPU ms, whole session", sum(with_log), sum(without)),
        (f"CPU ms per turn, last {last}", sum(with_log[-last:]) / last, sum(without[-last:]) / last),
        ("RSS at the end (MiB)", result.rss["with log"], result.rss["without log"]),
    ):
        print(f"{label:<28}{a:>12.1f}{b:>14.1f}{a / b:>8.2f}")
    print(f"  of the logging proxy's CPU, its flow writer thread took {result.writer_ms:.0f} ms "
          f"({result.writer_ms / result.turns:.2f} ms a turn)")
    size = sum(result.db_files.values())
    files = " + ".join(f"{name} {bytes_ / 1024:.0f} KB" for name, bytes_ in result.db_files.items())
    print(f"flow DB after the session: {size / 1024:.0f} KB ({files}) = {size / result.final_body:.1f}× the final "
          f"request body (target ≤ 3×)")
    grown = size - result.empty_db
    print(f"  of which a new, empty flow DB is {result.empty_db / 1024:.0f} KB (a page for each table and index); "
          f"the session added {grown / 1024:.0f} KB = {grown / result.final_body:.1f}× the final body")
    if result.tables:
        print("  by table/index: " + ", ".join(f"{name} {bytes_ / 1024:.0f} KB" for name, bytes_ in result.tables))
