"""What client key limits cost: CPU per request of a key with every limit and budget set (none ever reached) against
a key with none, in one proxy counting in its own memory and one counting in Redis; the price lookup each flow
makes; and time to first byte at 32 concurrent streams with the counts in memory and in Redis.

    .venv/bin/python scripts/bench_limits.py [--requests N] [--rounds R] [--streams N] [--concurrency N] [--burst]

Every proxy runs without a flow log (`ccany_db=`), so what differs between them is only the limits. Needs
redis-server (scripts/setup installs it).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from bench import ROOT, Clients, claude_code_body, compact, measure, start_mitmdump

sys.path.insert(0, str(ROOT))

from tests.conftest import start_fake_upstream, start_redis, stop  # noqa: E402

TRICKLE_MS = 40  # time-to-first-byte streams: 9 chunks this far apart, as a model writes (the proxy is not saturated)
UNREACHABLE = {"rpm_limit": 10**9, "tpm_limit": 10**12, "max_streams": 10**6, "daily_budget_usd": 10.0**9,
               "monthly_budget_usd": 10.0**9}


def config(path: Path, upstream: str) -> dict[str, str]:
    """A config DB routing claude-* to the fake upstream, with a client key without limits and one with all."""
    from ccany_addon.config import store
    from ccany_addon.config.schema import open_config_db
    from ccany_addon.config.secrets import Cipher, load_master_key

    db = open_config_db(path, Cipher(load_master_key(path)))
    store.add_provider(db, "bench", "openai", upstream + "/v1", models={"big": "gpt-4o"})
    store.set_provider_key(db, "bench", "openai", "sk-bench-key")
    store.add_route(db, "bench", "claude-*", "openai", None)
    store.add_route(db, "bench", "trickle", "openai", f"scenario:trickle_{TRICKLE_MS}")
    keys = {name: store.create_client_key(db, "bench", name)[1] for name in ("free", "limited")}
    store.set_client_key_limits(db, "bench", "limited", **UNREACHABLE)
    db.close()
    return keys


def ttfb_ms(url: str, body: bytes, key: str, streams: int, concurrency: int, burst: bool = False) -> list[float]:
    """Milliseconds from sending each stream to its first byte, `concurrency` streams at a time, their starts
    spread over a stream's length (clients that all start at once would each wait for the others' CPU)."""
    clients = [httpx.Client(timeout=60, headers={"content-type": "application/json", "x-api-key": key})
               for _ in range(concurrency)]

    def run(number: int) -> list[float]:
        times = []
        if not burst:
            time.sleep(number * 9 * TRICKLE_MS / 1000 / concurrency)
        for _ in range(streams // concurrency):
            started = time.perf_counter()
            with clients[number].stream("POST", url, content=body) as response:
                chunks = response.iter_raw()
                first = next(chunks)
                times.append((time.perf_counter() - started) * 1000)
                assert response.status_code == 200 and first
                for _ in chunks:
                    pass
        return times

    with ThreadPoolExecutor(concurrency) as pool:
        results = [t for part in pool.map(run, range(concurrency)) for t in part]
    for client in clients:
        client.close()
    return results


def price_lookup_us() -> float:
    from ccany_addon.costs.prices import PriceTable

    table, usage = PriceTable(), {"input_tokens": 200, "output_tokens": 42, "cache_read_input_tokens": 1000}
    table.cost(usage, "gpt-4o", "openai", "http://127.0.0.1:1/v1/chat/completions", time.time())
    started, runs = time.perf_counter(), 20_000
    for _ in range(runs):
        table.cost(usage, "gpt-4o", "openai", "http://127.0.0.1:1/v1/chat/completions", time.time())
    return (time.perf_counter() - started) / runs * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000, help="streams per proxy and key, over all rounds")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--streams", type=int, default=640, help="streams of the time-to-first-byte case")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--burst", action="store_true",
                        help="start the time-to-first-byte streams all at once, in step (the worst case)")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="ccany-bench-limits-"))
    upstream, redis = start_fake_upstream(), start_redis(tmp)
    keys = config(tmp / "config.db", upstream.url)
    common = [f"ccany_config_db={tmp / 'config.db'}", "ccany_db="]
    script = ROOT / "ccany_addon" / "addon.py"
    local, local_port = start_mitmdump(upstream.url, script, tmp / "local.log", common)
    shared, shared_port = start_mitmdump(upstream.url, script, tmp / "shared.log",
                                         [*common, f"ccany_redis_url={redis.url}"])
    body = compact(claude_code_body(True))
    cases = [("no limits", local, local_port, "free"), ("limits, in memory", local, local_port, "limited"),
             ("limits, in Redis", shared, shared_port, "limited")]
    cpu: dict[str, list[float]] = {}
    try:
        clients = Clients(1)
        for round_number in range(args.rounds):
            for label, process, port, key in cases:
                clients.clients[0].headers["x-api-key"] = keys[key]
                ms, _ = measure(clients, process.pid, f"http://127.0.0.1:{port}/v1/messages", body, True,
                                args.requests // args.rounds, None, None, 20 if round_number == 0 else 0)
                cpu.setdefault(label, []).append(ms)
        clients.close()
        trickle = compact({**claude_code_body(True), "model": "trickle"})
        first_byte: dict[str, list[float]] = {}
        for _round in range(4):  # alternating, as the CPU rounds
            for label, port in (("in memory", local_port), ("in Redis", shared_port)):
                first_byte.setdefault(label, []).extend(ttfb_ms(
                    f"http://127.0.0.1:{port}/v1/messages", trickle, keys["limited"], args.streams // 4,
                    args.concurrency, args.burst))
    finally:
        for process in (local, shared, upstream.process, redis.process):
            stop(process)

    base = cpu["no limits"]
    print(f"CPU ms per 50-chunk stream, {args.requests} each in {args.rounds} alternating rounds, no flow log")
    print(f"{'client key':<22}{'ms (median)':>12}{'vs no limits':>14}{'range':>14}")
    for label, values in cpu.items():
        ratios = sorted(v / b for v, b in zip(values, base, strict=True))
        print(f"{label:<22}{statistics.median(values):>12.3f}{statistics.median(ratios):>14.3f}"
              f"{f'{ratios[0]:.3f}–{ratios[-1]:.3f}':>14}")
    lookup = price_lookup_us()
    print(f"pricing a flow (a cached price lookup): {lookup:.1f} µs = "
          f"{lookup / 10 / statistics.median(base):.2f}% of a stream's CPU")
    print(f"\ntime to first byte, ms, {args.streams} streams {args.concurrency} at a time (each 9 chunks "
          f"{TRICKLE_MS} ms apart, the first after that wait too; "
          f"{'started all at once' if args.burst else 'starts spread over a stream'}), a key with every limit:")
    for label, values in first_byte.items():
        p90 = sorted(values)[int(len(values) * 0.9)]
        print(f"  counts {label:<10} p50 {statistics.median(values):7.2f}   p90 {p90:7.2f}")
    added = statistics.median(first_byte["in Redis"]) - statistics.median(first_byte["in memory"])
    print(f"  Redis adds {added:+.2f} ms at p50")


if __name__ == "__main__":
    main()
