"""CPU milliseconds per request: mitmdump with the ccany addon (logging every flow with full bodies) vs bare
mitmdump with a streaming pass-through, both in front of the same fake OpenAI server, measured in the same
run, next to the same addon with no flow log (what the gateway costs without it); then the addon's resident memory
over many flows.

The client sends a ~20 KB Claude-Code-like body (system blocks, 16 tools with schemas, a tool round trip), in
compact JSON as Claude Code writes it, to the addon, and the OpenAI body it converts to straight to the bare
proxy. CPU is the proxy process's CPU clock (clock_getcpuclockid) over the measured requests; the client and the
fake upstream run in other processes and are not counted. The addon's log writer thread is in the proxy process
and is counted: each round waits until its flows are rows in the flow DB.

Then, per provider kind (openai, azure, responses, gemini, anthropic), one 50-event stream through the addon
(routed by the config DB to a provider of that kind) against the bare proxy sent the same upstream request;
and streams of a long conversation (150 tool round trips, ≈ 115 KB), the size a working session sends.

Last, the session-growth case (scripts/bench_session.py): one Claude Code session of --session-turns turns (its
150th body ≈ 424 KB) sent turn by turn to two addon proxies, one logging flows and one with `ccany_db=`: their CPU,
the flow DB's size against the final body's, and their RSS. Then saturation (scripts/bench_saturation.py):
--saturation-clients send that body for --saturation-seconds to a logging proxy, then to one without the log: their
peak RSS. Any count set to 0 skips its case, e.g. only the session:

    scripts/bench [--requests N] [--rounds R] [--clients N] [--kind-requests N] [--long-requests N] [--rss-flows N]
                  [--session-turns N] [--saturation-seconds S] [--saturation-clients N] [--keep]
                  [--set ccany_option=value ...]
    scripts/bench --requests 0 --kind-requests 0 --long-requests 0 --rss-flows 0 --saturation-seconds 0
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import shutil
import sqlite3
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ccany_addon.flowlog.writer import OS_THREAD_NAME as WRITER_THREAD  # noqa: E402
from tests.conftest import free_port, start_fake_upstream, stop, wait_for  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")
LIBC = ctypes.CDLL(None)


def claude_code_body(stream: bool) -> dict:
    schema = {"$schema": "http://json-schema.org/draft-07/schema#", "type": "object", "additionalProperties": False,
              "properties": {f"param_{i}": {"type": "string", "description": "An argument " * 6} for i in range(6)},
              "required": ["param_0"]}
    tools = [{"name": f"Tool{i}", "description": "Does a useful thing with files and shells. " * 8,
              "input_schema": schema} for i in range(16)]
    system = [{"type": "text", "text": "You are Claude Code, Anthropic's official CLI for Claude."},
              {"type": "text", "text": "Follow the user's instructions carefully. " * 60,
               "cache_control": {"type": "ephemeral"}}]
    messages = [
        {"role": "user", "content": [{"type": "text", "text": "Please read the configuration file and explain it."}]},
        {"role": "assistant", "content": [
            {"type": "text", "text": "I'll read it."},
            {"type": "tool_use", "id": "toolu_01", "name": "Tool1", "input": {"param_0": "/etc/app/config.yaml"}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_01", "content": "key: value\n" * 120,
             "cache_control": {"type": "ephemeral"}},
            {"type": "text", "text": "What does it do?"}]},
    ]
    return {"model": "scenario:bench", "max_tokens": 32000, "stream": stream, "system": system,
            "messages": messages, "tools": tools, "metadata": {"user_id": "user_" + "a" * 140},
            "thinking": {"type": "adaptive"}}


def compact(body: dict) -> bytes:
    """A body as Claude Code writes it (JSON.stringify: no spaces, UTF-8 as is)."""
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


def long_conversation_body(stream: bool) -> dict:
    """The Claude Code body after 150 tool round trips (≈ 115 KB, 600 content blocks): what a working session
    sends on every turn."""
    body = claude_code_body(stream)
    messages = body["messages"][:1]
    output = [{"type": "text", "text": "line\n" * 30}]
    for turn in range(150):
        messages += [
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "Let me check that file. " * 4, "signature": "sig"},
                {"type": "text", "text": "Reading it."},
                {"type": "tool_use", "id": f"toolu_{turn}", "name": "Tool1", "input": {"param_0": f"/src/{turn}.py"}}]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": f"toolu_{turn}", "content": output}]},
        ]
    messages.append({"role": "user", "content": [{"type": "text", "text": "Go on."}]})
    return {**body, "messages": messages}


def openai_body(stream: bool, client_body: dict | None = None) -> dict:
    from ccany_addon.anthropic_api.schema import MessagesRequest
    from ccany_addon.converters.common import UpstreamTarget
    from ccany_addon.converters.openai_chat import to_chat_request

    request = MessagesRequest.model_validate(client_body or claude_code_body(stream))
    body, _ = to_chat_request(request, UpstreamTarget("scenario:bench"))
    return body


KINDS = ("openai", "azure", "responses", "gemini", "anthropic")
BENCH_MODEL = {"gemini": "gemini-2.5-scenario-bench"}  # in the URL; a model that signs its function calls


def bench_config(path: Path, upstream: str) -> None:
    """A config DB routing `bench-<kind>` to a provider of each kind, all served by the fake upstream."""
    from ccany_addon.config import store
    from ccany_addon.config.schema import open_config_db
    from ccany_addon.config.secrets import Cipher, load_master_key

    db = open_config_db(path, Cipher(load_master_key(path)))
    prefixes = {"azure": "", "gemini": "/v1beta"}
    for kind in KINDS:
        store.add_provider(db, "bench", kind, upstream + prefixes.get(kind, "/v1"), kind=kind)
        store.set_provider_key(db, "bench", kind, "sk-bench-key")
        store.add_route(db, "bench", f"bench-{kind}", kind, BENCH_MODEL.get(kind, "scenario:bench"))
    db.close()


def bare_request(kind: str) -> tuple[str, bytes, dict[str, str]]:
    """The path, body and key header the addon sends upstream for a `bench-<kind>` stream."""
    from ccany_addon.anthropic_api.schema import MessagesRequest
    from ccany_addon.converters.common import UpstreamTarget
    from ccany_addon.upstreams.dialects import CONVERTING

    model = BENCH_MODEL.get(kind, "scenario:bench")
    client_body = claude_code_body(True)
    if kind == "anthropic":
        return "/v1/messages", compact(client_body), {"x-api-key": "k", "anthropic-version": "2023-06-01"}
    dialect = CONVERTING[kind]
    prefixes = {"azure": "", "gemini": "/v1beta"}
    path = dialect.path(prefixes.get(kind, "/v1"), model, None, True)
    body, _ = dialect.to_request(MessagesRequest.model_validate(client_body), UpstreamTarget(model))
    key = {"azure": {"api-key": "k"}, "gemini": {"x-goog-api-key": "k"}}.get(kind, {"authorization": "Bearer k"})
    return path, compact(body), key


def cpu_seconds(pid: int) -> float:
    """The process's CPU time, all its threads (ended ones too), to the nanosecond: /proc/PID/stat counts in
    10 ms ticks, a tenth of a millisecond per request over a round of 100."""
    clock = ctypes.c_int()
    if LIBC.clock_getcpuclockid(pid, ctypes.byref(clock)) != 0:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICKS
    return time.clock_gettime(clock.value)


def thread_cpu_seconds(pid: int, name: str) -> float:
    """CPU time of the process's threads the OS knows as `name` (`/proc`, in 10 ms ticks: sum it over many
    requests). The flow writer names its thread (ccany_addon/flowlog/writer.py), so its share is told apart."""
    ticks = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            if (task / "comm").read_text().strip() == name:
                fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
                ticks += int(fields[11]) + int(fields[12])
        except OSError:  # the thread ended meanwhile
            continue
    return ticks / TICKS


def start_mitmdump(upstream: str, script: Path, log: Path, options: list[str] = ()):
    import subprocess

    port = free_port()
    env = {**os.environ, "OPENAI_API_KEY": "sk-bench-key"}
    command = [str(Path(sys.executable).parent / "mitmdump"), "-q", "-s", str(script),
               "--mode", f"reverse:{upstream}", "--listen-host", "127.0.0.1", "-p", str(port),
               "--set", "connection_strategy=lazy", "--set", f"ccany_db={log.parent / 'bench.db'}"]
    # mitmproxy disables an -s addon when one option is set twice: an explicit ccany_db replaces the default
    if script.name == "passthrough.py" or any(option.startswith("ccany_db=") for option in options):
        command = command[:-2]
    for option in options:
        command += ["--set", option]
    process = subprocess.Popen(command, stdout=log.open("wb"), stderr=subprocess.STDOUT, env=env)
    wait_for(f"http://127.0.0.1:{port}/health" if script.name == "addon.py" else f"{upstream}/_requests")
    return process, port


def addon_flow_count(tmp: Path, options: list[str]) -> FlowCount | None:
    """The bench addon's flow DB (start_mitmdump's default, or a `--set ccany_db=`), None when it logs nothing."""
    db = next((option.split("=", 1)[1] for option in options if option.startswith("ccany_db=")), str(tmp / "bench.db"))
    return FlowCount(Path(db)) if db else None


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def send(client: httpx.Client, url: str, body: bytes, stream: bool, headers: dict | None = None) -> None:
    if stream:
        with client.stream("POST", url, content=body, headers=headers) as response:
            for _ in response.iter_raw():
                pass
            assert response.status_code == 200, response.status_code
    else:
        response = client.post(url, content=body)
        assert response.status_code == 200, response.text


class Clients:
    """`count` HTTP clients, each its own connection, sending a round's requests concurrently (the issue's
    interleaved bench ran 8); with one, requests go one after another."""

    def __init__(self, count: int) -> None:
        self.clients = [httpx.Client(timeout=60, headers={"content-type": "application/json"})
                        for _ in range(count)]
        self.pool = ThreadPoolExecutor(count) if count > 1 else None

    def send(self, url: str, body: bytes, stream: bool, requests: int, headers: dict | None = None) -> None:
        def share(number: int) -> None:
            for _ in range(requests // len(self.clients) + (number < requests % len(self.clients))):
                send(self.clients[number], url, body, stream, headers)

        if self.pool is None:
            share(0)
        else:
            list(self.pool.map(share, range(len(self.clients))))

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown()
        for client in self.clients:
            client.close()


class FlowCount:
    """The addon's flow DB and how many flows it was sent: its writer's work for them is inside a measurement once
    they are all rows. The bench reads the DB itself: asking the proxy's /metrics whether its queue is empty would
    count the proxy's answers to that polling (7.8 ms of CPU each) as the log's cost."""

    def __init__(self, db: Path) -> None:
        self.db = db
        self.sent = 0

    def wait(self) -> None:
        wait_for_rows(self.db, self.sent)


def wait_for_rows(db: Path, rows: int) -> None:
    """Until the flow DB holds `rows` flows."""
    while True:
        time.sleep(0.02)
        try:
            with closing(sqlite3.connect(db)) as conn:
                if conn.execute("SELECT count(*) FROM flows").fetchone()[0] >= rows:
                    return
        except sqlite3.Error:  # not created yet, or busy
            continue


WARM_UP = 20  # requests before a proxy's first round of each kind


def measure(clients: Clients, pid: int, url: str, body: bytes, stream: bool, requests: int,
            log: FlowCount | None, headers: dict | None = None, warm_up: int = 0) -> tuple[float, float]:
    """CPU ms per request of the proxy, and the seconds of it its flow writer thread took (0 with no log)."""
    clients.send(url, body, stream, warm_up, headers)  # imports, connections, caches
    if log:
        log.sent += warm_up
        log.wait()
    before, writer_before = cpu_seconds(pid), thread_cpu_seconds(pid, WRITER_THREAD)
    clients.send(url, body, stream, requests, headers)
    if log:
        log.sent += requests
        log.wait()
    return (cpu_seconds(pid) - before) * 1000 / requests, thread_cpu_seconds(pid, WRITER_THREAD) - writer_before


def memory_over_flows(client: httpx.Client, pid: int, port: int, flows: int, log: FlowCount | None
                      ) -> list[tuple[int, float]]:
    """RSS after every tenth of `flows` requests (streamed and not, alternating) once the log has caught up."""
    url = f"http://127.0.0.1:{port}/v1/messages"
    bodies = {stream: compact(claude_code_body(stream)) for stream in (False, True)}
    samples = []
    for number in range(1, flows + 1):
        stream = number % 2 == 0
        send(client, url, bodies[stream], stream)
        if log:
            log.sent += 1
        if number % max(1, flows // 10) == 0:
            if log:
                log.wait()
            samples.append((number, rss_mib(pid)))
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=20,
                        help="alternating rounds of each proxy: short ones, so drift on the machine hits both alike")
    parser.add_argument("--set", dest="options", action="append", default=[], metavar="OPTION=VALUE",
                        help="an option for the addon's mitmdump, e.g. --set ccany_log_bodies=none")
    parser.add_argument("--keep", action="store_true", help="keep the flow DB and logs (default: deleted)")
    parser.add_argument("--rss-flows", type=int, default=20_000, help="flows for the memory check (0: skip it)")
    parser.add_argument("--kind-requests", type=int, default=500,
                        help="streams per provider kind, over the same rounds (0: skip the kinds)")
    parser.add_argument("--long-requests", type=int, default=250,
                        help="streams of a long conversation (≈ 115 KB), over the same rounds (0: skip them)")
    parser.add_argument("--session-turns", type=int, default=150,
                        help="turns of the session-growth case, flow log on and off (0: skip it)")
    parser.add_argument("--saturation-seconds", type=float, default=20,
                        help="seconds of more load than the log keeps up with, flow log on and off (0: skip it)")
    parser.add_argument("--saturation-clients", type=int, default=8)
    parser.add_argument("--clients", type=int, default=1,
                        help="concurrent clients in the per-request cases (the issue's interleaved bench ran 8)")
    args = parser.parse_args()

    import tempfile

    from bench_saturation import SaturationResult, print_saturation, saturation
    from bench_session import SessionResult, print_session, session_growth

    tmp = Path(tempfile.mkdtemp(prefix="ccany-bench-"))
    upstream = start_fake_upstream()
    bench_config(tmp / "config.db", upstream.url)
    bare, bare_port = start_mitmdump(upstream.url, ROOT / "scripts" / "passthrough.py", tmp / "bare.log")
    addon, addon_port = start_mitmdump(upstream.url, ROOT / "ccany_addon" / "addon.py", tmp / "addon.log",
                                       [f"ccany_config_db={tmp / 'config.db'}", *args.options])
    log = addon_flow_count(tmp, args.options)
    # the same gateway with no flow log: what the log itself costs, in the same run
    quiet_options = [option for option in args.options if not option.startswith("ccany_db=")] + ["ccany_db="]
    quiet, quiet_port = start_mitmdump(upstream.url, ROOT / "ccany_addon" / "addon.py", tmp / "quiet.log",
                                       [f"ccany_config_db={tmp / 'config.db'}", *quiet_options])
    proxies = [("bare", bare, bare_port, None), ("quiet", quiet, quiet_port, None), ("addon", addon, addon_port, log)]
    sizes = {stream: len(compact(claude_code_body(stream))) for stream in (False, True)}
    rounds: dict[tuple[str, bool], list[float]] = {}
    memory: list[tuple[int, float]] = []
    writer_ms: dict[tuple[str, bool], float] = {}  # the logging addon's writer thread, over all rounds of a case
    session: SessionResult | None = None
    saturated: SaturationResult | None = None
    try:
        clients = Clients(args.clients)
        try:
            def interleave(label: str, stream: bool, requests: int, bare_path: str, bare_body: bytes,
                           addon_body: bytes, bare_headers: dict | None = None) -> None:
                """Rounds of each proxy in turn, so drift on the machine hits them alike."""
                for _round in range(args.rounds):
                    for name, process, port, flow_count in proxies:
                        bare_side = name == "bare"
                        url = f"http://127.0.0.1:{port}{bare_path if bare_side else '/v1/messages'}"
                        ms, writer_seconds = measure(
                            clients, process.pid, url, bare_body if bare_side else addon_body, stream,
                            requests // args.rounds, flow_count, bare_headers if bare_side else None,
                            WARM_UP if _round == 0 else 0)
                        rounds.setdefault((f"{name}{label}", stream), []).append(ms)
                        writer_ms[(label, stream)] = writer_ms.get((label, stream), 0.0) + writer_seconds * 1000

            for stream in (False, True) if args.requests else ():
                interleave("", stream, args.requests, "/v1/chat/completions", compact(openai_body(stream)),
                           compact(claude_code_body(stream)))
            for kind in KINDS if args.kind_requests else ():
                path, bare_body, key = bare_request(kind)
                interleave(f" {kind}", True, args.kind_requests, path, bare_body,
                           compact({**claude_code_body(True), "model": f"bench-{kind}"}), key)
            if args.long_requests:
                long_body = long_conversation_body(True)
                interleave(" long", True, args.long_requests, "/v1/chat/completions",
                           compact(openai_body(True, long_body)), compact(long_body))
            if args.rss_flows:
                memory = memory_over_flows(clients.clients[0], addon.pid, addon_port, args.rss_flows, log)
        finally:
            clients.close()
        if args.session_turns:
            session = session_growth(upstream.url, tmp, args.session_turns, args.options)
        if args.saturation_seconds:
            saturated = saturation(upstream.url, tmp, args.saturation_seconds, args.saturation_clients, args.options)
    finally:
        for process in (bare, quiet, addon, upstream.process):
            stop(process)
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)  # tens of thousands of flows with their bodies: hundreds of MB

    requests_of = {"": args.requests, " long": args.long_requests} | {f" {kind}": args.kind_requests for kind in KINDS}
    rows = [("", False, "non-streaming"), ("", True, "stream, 50 chunks")] if args.requests else []
    rows += [(f" {kind}", True, f"{kind} stream") for kind in KINDS if args.kind_requests]
    rows += [(" long", True, "long conversation")] if args.long_requests else []
    if rows:
        print(f"CPU ms per request, {args.requests} requests each in {args.rounds} alternating rounds, "
              f"{args.clients} client{'s' * (args.clients > 1)}, client body ≈ {sizes[False] // 1024} KB")
        print(f"{'kind':<20}{'bare mitmdump':>15}{'addon, no log':>15}{'addon':>9}{'of it writer':>14}"
              f"{'ratio (median)':>16}{'ratio range':>14}{'no log ratio':>14}")
    for kind, stream, label in rows:
        bare_ms, quiet_ms, addon_ms = (rounds[(name + kind, stream)] for name in ("bare", "quiet", "addon"))
        ratios = sorted(a / b for a, b in zip(addon_ms, bare_ms, strict=True))
        quiet_ratio = statistics.median(q / b for q, b in zip(quiet_ms, bare_ms, strict=True))
        writer = writer_ms.get((kind, stream), 0.0) / (len(addon_ms) * (requests_of[kind] // args.rounds))
        print(f"{label:<20}{statistics.median(bare_ms):>15.3f}{statistics.median(quiet_ms):>15.3f}"
              f"{statistics.median(addon_ms):>9.3f}{writer:>14.3f}{statistics.median(ratios):>16.2f}"
              f"{f'{ratios[0]:.2f}–{ratios[-1]:.2f}':>14}{quiet_ratio:>14.2f}")
    if memory:
        print("\naddon RSS (MiB) after N more flows, every flow logged with its bodies:")
        print("  " + "  ".join(f"{number}: {mib:.1f}" for number, mib in memory))
        settled = [mib for _, mib in memory[1:]] or [memory[0][1]]
        change = (memory[-1][1] - memory[0][1]) / memory[0][1] * 100
        print(f"  first → last: {change:+.1f}%; after the first sample, max/min = {max(settled) / min(settled):.3f}")
    if session is not None:
        print_session(session)
    if saturated is not None:
        print_saturation(saturated)


if __name__ == "__main__":
    main()
