"""SIGTERM with ~200 requests in flight: every request whose client got a `request-id` has its row."""

from __future__ import annotations

import asyncio
import signal
import time
from dataclasses import dataclass

import httpx

from tests.conftest import start_proxy, stop
from tests.e2e.flow_db import flow_rows

GRACE = 4  # seconds; the slow streams below take ~1.6 s, the hanging ones 30 s
BODY = {"model": "claude-sonnet-4-5", "max_tokens": 64, "messages": [{"role": "user", "content": "hello"}]}


@dataclass
class Outcome:
    kind: str
    request_id: str | None = None
    complete: bool = False  # the client received the whole answer
    error: str | None = None
    connection_close: bool = False


async def _send(client: httpx.AsyncClient, url: str, kind: str, model: str, stream: bool,
                headers_seen: asyncio.Queue | None = None) -> Outcome:
    outcome = Outcome(kind)
    try:
        async with client.stream("POST", f"{url}/v1/messages", json={**BODY, "model": model, "stream": stream}) \
                as response:
            outcome.request_id = response.headers.get("request-id")
            outcome.connection_close = response.headers.get("connection") == "close"
            if headers_seen is not None:
                headers_seen.put_nowait(kind)
            body = await response.aread()
            outcome.complete = response.status_code == 200 and (b"message_stop" in body or not stream)
    except httpx.HTTPError as error:
        outcome.error = type(error).__name__
    return outcome


async def _load_and_stop(proxy_url: str, process) -> tuple[list[Outcome], float]:
    limits = httpx.Limits(max_connections=400, max_keepalive_connections=400)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        hanging_headers: asyncio.Queue = asyncio.Queue()
        plan = ([("fast", "claude-sonnet-4-5", False)] * 60 + [("fast_stream", "scenario:text", True)] * 40
                + [("slow_stream", "scenario:trickle_200", True)] * 50 + [("hanging", "scenario:hang", True)] * 40)
        tasks = [asyncio.create_task(_send(client, proxy_url, kind, model, stream,
                                           hanging_headers if kind in ("hanging", "slow_stream") else None))
                 for kind, model, stream in plan]
        # every hanging and slow stream has its request-id: now they are mid-flight (on a loaded machine some were
        # still connecting when the stop came, and a connection the stop refused is not a flow mid-flight)
        for _ in range(40 + 50):
            await asyncio.wait_for(hanging_headers.get(), 20)
        process.send_signal(signal.SIGTERM)
        stopped_at = time.monotonic()
        await asyncio.sleep(0.3)
        # After the stop: kept-alive connections still carry requests (answered, then closed); new ones are refused.
        late = [asyncio.create_task(_send(client, proxy_url, "late", "claude-sonnet-4-5", False)) for _ in range(10)]
        async with httpx.AsyncClient(timeout=10) as fresh:
            refused = [asyncio.create_task(_send(fresh, proxy_url, "new_connection", "claude-sonnet-4-5", False))
                       for _ in range(10)]
            outcomes = await asyncio.gather(*tasks, *late, *refused)
    return list(outcomes), stopped_at


def test_sigterm_mid_flight_leaves_a_row_for_every_request_id_a_client_got(fake_upstream, tmp_path):
    proxy = start_proxy(fake_upstream.url, tmp_path, f"ccany_shutdown_grace={GRACE}")
    try:
        outcomes, stopped_at = asyncio.run(_load_and_stop(proxy.url, proxy.process))
        proxy.process.wait(timeout=GRACE + 15)
        exited_after = time.monotonic() - stopped_at
    finally:
        stop(proxy.process)
    rows = {row["id"]: row for row in flow_rows(proxy.db)}
    by_kind: dict[str, list[Outcome]] = {}
    for outcome in outcomes:
        by_kind.setdefault(outcome.kind, []).append(outcome)
    with_id = [outcome for outcome in outcomes if outcome.request_id]
    missing = [outcome for outcome in with_id if outcome.request_id not in rows]
    print(f"{len(outcomes)} requests, {len(with_id)} got a request-id, {len(with_id) - len(missing)} have a row; "
          f"proxy exited {exited_after:.1f} s after SIGTERM")
    assert not missing, missing[:5]

    # Finished within the grace period: the whole answer reached the client and the row says so.
    for outcome in by_kind["fast"] + by_kind["fast_stream"] + by_kind["slow_stream"]:
        assert outcome.complete, outcome
        assert rows[outcome.request_id]["error_type"] is None and rows[outcome.request_id]["status_code"] == 200
    # Still going when the grace period ended: cut, and logged as interrupted with what was sent so far.
    for outcome in by_kind["hanging"]:
        assert not outcome.complete and outcome.error, outcome
        row = rows[outcome.request_id]
        assert (row["error_type"], row["status_code"], row["is_stream"]) == ("interrupted", 200, 1), row
        assert "Wait" in row["client_response"]
    # After SIGTERM no new connection is accepted; a kept-alive one is answered and told it closes.
    assert all(outcome.error == "ConnectError" for outcome in by_kind["new_connection"]), by_kind["new_connection"]
    for outcome in by_kind["late"]:
        assert outcome.error or (outcome.complete and outcome.connection_close), outcome
    assert GRACE - 0.5 < exited_after < GRACE + 8
    log = proxy.log()
    assert "40 flows were unfinished at the stop" in log and "flows lost" not in log
