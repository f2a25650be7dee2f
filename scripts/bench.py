"""CPU milliseconds per request: mitmdump with the ccany addon (logging every flow with full bodies) vs bare
mitmdump with a streaming pass-through, both in front of the same fake OpenAI server, measured in the same
run; then the addon's resident memory over many flows.

The client sends a ~20 KB Claude-Code-like body (system blocks, 16 tools with schemas, a tool round trip) to
the addon, and the OpenAI body it converts to straight to the bare proxy. CPU is the proxy process's
user + system time (/proc/PID/stat) over the measured requests; the client and the fake upstream run in
other processes and are not counted. The addon's log writer thread is in the proxy process and is counted:
each round waits until the log queue is empty.

    scripts/bench [--requests N] [--rounds R] [--rss-flows N] [--set ccany_option=value ...]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.conftest import free_port, start_fake_upstream, stop, wait_for  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")


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


def openai_body(stream: bool) -> dict:
    from ccany_addon.converters.common import UpstreamTarget
    from ccany_addon.converters.openai_chat import to_chat_request
    from ccany_addon.schema import MessagesRequest

    request = MessagesRequest.model_validate(claude_code_body(stream))
    body, _ = to_chat_request(request, UpstreamTarget("scenario:bench"))
    return body


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


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


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def send(client: httpx.Client, url: str, body: bytes, stream: bool) -> None:
    if stream:
        with client.stream("POST", url, content=body) as response:
            for _ in response.iter_raw():
                pass
            assert response.status_code == 200, response.status_code
    else:
        response = client.post(url, content=body)
        assert response.status_code == 200, response.text


def wait_for_log(client: httpx.Client, url: str | None) -> None:
    """Until the addon's log queue is empty, so its writer's work is inside the measurement."""
    while url is not None:
        time.sleep(0.1)
        if "\nccany_log_queue_depth 0\n" in client.get(url).text:
            return


def measure(client: httpx.Client, pid: int, url: str, body: bytes, stream: bool, requests: int,
            metrics_url: str | None) -> float:
    for _ in range(20):  # warm-up: imports, connection, caches
        send(client, url, body, stream)
    wait_for_log(client, metrics_url)
    before = cpu_seconds(pid)
    for _ in range(requests):
        send(client, url, body, stream)
    wait_for_log(client, metrics_url)
    return (cpu_seconds(pid) - before) * 1000 / requests


def memory_over_flows(client: httpx.Client, pid: int, port: int, flows: int) -> list[tuple[int, float]]:
    """RSS after every tenth of `flows` requests (streamed and not, alternating) once the log has caught up."""
    url, metrics_url = f"http://127.0.0.1:{port}/v1/messages", f"http://127.0.0.1:{port}/metrics"
    bodies = {stream: json.dumps(claude_code_body(stream)).encode() for stream in (False, True)}
    samples = []
    for number in range(1, flows + 1):
        stream = number % 2 == 0
        send(client, url, bodies[stream], stream)
        if number % max(1, flows // 10) == 0:
            wait_for_log(client, metrics_url)
            samples.append((number, rss_mib(pid)))
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--set", dest="options", action="append", default=[], metavar="OPTION=VALUE",
                        help="an option for the addon's mitmdump, e.g. --set ccany_log_bodies=none")
    parser.add_argument("--rss-flows", type=int, default=20_000, help="flows for the memory check (0: skip it)")
    args = parser.parse_args()

    import tempfile

    tmp = Path(tempfile.mkdtemp(prefix="ccany-bench-"))
    upstream = start_fake_upstream()
    bare, bare_port = start_mitmdump(upstream.url, ROOT / "scripts" / "passthrough.py", tmp / "bare.log")
    addon, addon_port = start_mitmdump(upstream.url, ROOT / "ccany_addon" / "addon.py", tmp / "addon.log",
                                       args.options)
    sizes = {True: len(json.dumps(claude_code_body(True))), False: len(json.dumps(claude_code_body(False)))}
    rounds: dict[tuple[str, bool], list[float]] = {}
    try:
        with httpx.Client(timeout=30, headers={"content-type": "application/json"}) as client:
            for stream in (False, True):
                # alternate the two proxies, round by round, so drift on the machine hits both alike
                for _round in range(args.rounds):
                    for name, process, url, body, metrics_url in (
                        ("bare", bare, f"http://127.0.0.1:{bare_port}/v1/chat/completions",
                         json.dumps(openai_body(stream)).encode(), None),
                        ("addon", addon, f"http://127.0.0.1:{addon_port}/v1/messages",
                         json.dumps(claude_code_body(stream)).encode(), f"http://127.0.0.1:{addon_port}/metrics"),
                    ):
                        ms = measure(client, process.pid, url, body, stream, args.requests // args.rounds,
                                     metrics_url)
                        rounds.setdefault((name, stream), []).append(ms)
            memory = memory_over_flows(client, addon.pid, addon_port, args.rss_flows) if args.rss_flows else []
    finally:
        for process in (bare, addon, upstream.process):
            stop(process)

    print(f"CPU ms per request, {args.requests} requests each in {args.rounds} alternating rounds, "
          f"client body ≈ {sizes[False] // 1024} KB")
    print(f"{'kind':<20}{'bare mitmdump':>15}{'ccany addon':>13}{'ratio (median)':>16}{'ratio range':>14}")
    for stream, label in ((False, "non-streaming"), (True, "stream, 50 chunks")):
        bare_ms, addon_ms = rounds[("bare", stream)], rounds[("addon", stream)]
        ratios = sorted(a / b for a, b in zip(addon_ms, bare_ms, strict=True))
        print(f"{label:<20}{statistics.median(bare_ms):>15.3f}{statistics.median(addon_ms):>13.3f}"
              f"{statistics.median(ratios):>16.2f}{f'{ratios[0]:.2f}–{ratios[-1]:.2f}':>14}")
    if memory:
        print(f"\naddon RSS (MiB) after N more flows, every flow logged with its bodies to {tmp / 'bench.db'}:")
        print("  " + "  ".join(f"{number}: {mib:.1f}" for number, mib in memory))
        settled = [mib for _, mib in memory[1:]] or [memory[0][1]]
        change = (memory[-1][1] - memory[0][1]) / memory[0][1] * 100
        print(f"  first → last: {change:+.1f}%; after the first sample, max/min = {max(settled) / min(settled):.3f}")


if __name__ == "__main__":
    main()
