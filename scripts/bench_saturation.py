"""The saturation case of scripts/bench: more flows than the log writer can keep up with, for a while, and the
proxy's resident memory with the flow log against the same proxy without it.

Concurrent clients send the 150th turn of bench_session's session (≈ 424 KB, streamed), each request a session of
its own, to an addon proxy logging every flow, then to one with `ccany_db=` (no log), for the same time each. The
log's queue is bounded by count (`ccany_log_queue_size`) and by bytes (`ccany_log_queue_mb`): what does not fit is
dropped and counted. Reports each proxy's peak RSS, their ratio (the target: ≤ 1.5×), and the log's written and
dropped flows.
"""

from __future__ import annotations

import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from bench import ROOT, rss_mib, send, start_mitmdump, stop
from bench_session import HEADERS, Session

SAMPLE_EVERY = 0.25  # seconds between RSS samples


@dataclass
class SaturationResult:
    seconds: float
    clients: int
    body: int  # bytes of each request
    peak_rss: dict[str, float] = field(default_factory=dict)  # MiB
    requests: dict[str, int] = field(default_factory=dict)
    log: dict[str, int] = field(default_factory=dict)  # the logging proxy's ccany_log_* counters at the end


def saturation(upstream: str, tmp: Path, seconds: float, clients: int, options: list[str]) -> SaturationResult:
    session = Session()
    for turn in range(1, 151):
        session.add_turn(turn)
    body = session.request()
    directory = tmp / "saturation"
    directory.mkdir()
    shared = [f"ccany_config_db={tmp / 'config.db'}", *(o for o in options if not o.startswith("ccany_db="))]
    result = SaturationResult(seconds, clients, len(body))
    for name, db_option in (("with log", f"ccany_db={directory / 'bench.db'}"), ("without log", "ccany_db=")):
        process, port = start_mitmdump(upstream, ROOT / "ccany_addon" / "addon.py", directory / f"{name}.log",
                                       [db_option, *shared])
        try:
            result.peak_rss[name], result.requests[name] = _load(process.pid, port, body, seconds, clients)
            if name == "with log":
                metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=30).text
                result.log = {key: int(float(value)) for key, value in
                              re.findall(r"^ccany_log_(\w+) ([0-9.e+]+)$", metrics, re.MULTILINE)}
        finally:
            stop(process)
    return result


def _load(pid: int, port: int, body: bytes, seconds: float, clients: int) -> tuple[float, int]:
    """Peak RSS (MiB) while `clients` threads send `body` for `seconds`, and how many requests they sent."""
    deadline = time.monotonic() + seconds
    sent = [0] * clients

    def client(number: int) -> None:
        with httpx.Client(timeout=60) as http:
            while time.monotonic() < deadline:
                headers = {**HEADERS, "x-claude-code-session-id": str(uuid.uuid4())}
                send(http, f"http://127.0.0.1:{port}/v1/messages", body, True, headers)
                sent[number] += 1

    threads = [threading.Thread(target=client, args=(number,), daemon=True) for number in range(clients)]
    for thread in threads:
        thread.start()
    peak = 0.0
    while any(thread.is_alive() for thread in threads):
        peak = max(peak, rss_mib(pid))
        time.sleep(SAMPLE_EVERY)
    return peak, sum(sent)


def print_saturation(result: SaturationResult) -> None:
    with_log, without = result.peak_rss["with log"], result.peak_rss["without log"]
    print(f"\nsaturation: {result.clients} clients for {result.seconds:.0f} s each, streams of a "
          f"{result.body // 1024} KB body, flow log on, then off")
    print(f"  peak RSS (MiB): with log {with_log:.1f}, without {without:.1f}: {with_log / without:.2f}× "
          "(target ≤ 1.5×)")
    print(f"  requests: with log {result.requests['with log']}, without {result.requests['without log']}; "
          f"the log wrote {result.log.get('written_total', 0)}, dropped {result.log.get('dropped_total', 0)}, "
          f"{result.log.get('queue_depth', 0)} still queued")
