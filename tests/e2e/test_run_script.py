"""`scripts/run` as a user runs it: the proxy and a real Datasette server over the live flow log.
Datasette reads while the proxy writes under load; Ctrl-C stops both and every flow is on disk."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import threading
import time

import httpx

from tests.conftest import ROOT, UPSTREAM_KEY, free_port, wait_for

HELLO = {"model": "claude-haiku-4-5", "max_tokens": 32, "messages": [{"role": "user", "content": "load test"}]}


def test_run_serves_proxy_and_datasette_over_the_live_log(fake_upstream, tmp_path):
    proxy_port, datasette_port = free_port(), free_port()
    db = tmp_path / "ccany.db"
    env = {**os.environ, "OPENAI_API_KEY": UPSTREAM_KEY, "CCANY_UPSTREAM": fake_upstream.url,
           "CCANY_PORT": str(proxy_port), "CCANY_DATASETTE_PORT": str(datasette_port), "CCANY_DB": str(db)}
    log = (tmp_path / "run.log").open("w+")
    run = subprocess.Popen([str(ROOT / "scripts" / "run")], env=env, stdout=log, stderr=subprocess.STDOUT,
                           start_new_session=True)
    proxy, datasette = f"http://127.0.0.1:{proxy_port}", f"http://127.0.0.1:{datasette_port}"
    try:
        wait_for(f"{proxy}/health", timeout=60)
        wait_for(f"{datasette}/-/versions.json", timeout=60)
        printed = (tmp_path / "run.log").read_text()
        assert f"http://127.0.0.1:{proxy_port}" in printed and f"{datasette}/-/dashboard" in printed

        # load: 4 client threads for ~3 s while Datasette is polled for the newest row
        sent: list[tuple[str, float]] = []
        failures: list[str] = []
        stop_load = threading.Event()

        def client() -> None:
            with httpx.Client(timeout=20) as http:
                while not stop_load.is_set():
                    response = http.post(f"{proxy}/v1/messages", json={**HELLO, "stream": len(sent) % 2 == 0})
                    if response.status_code != 200:
                        failures.append(response.text)
                    sent.append((response.headers["request-id"], time.monotonic()))

        threads = [threading.Thread(target=client) for _ in range(4)]
        for thread in threads:
            thread.start()
        lags: list[float] = []
        with httpx.Client(timeout=20) as http:
            deadline = time.monotonic() + 3
            while time.monotonic() < deadline:
                if not sent:
                    continue
                request_id, answered = sent[-1]
                while True:
                    found = http.get(f"{datasette}/ccany/flows.json", params={"id": request_id, "_shape": "array"})
                    assert found.status_code == 200, found.text
                    if found.json():
                        lags.append(time.monotonic() - answered)
                        break
                    assert time.monotonic() - answered < 5, f"{request_id} not visible in Datasette after 5 s"
                    time.sleep(0.02)
            stop_load.set()
            for thread in threads:
                thread.join()
            assert not failures, failures[:3]
            assert len(sent) > 50 and len(lags) > 5
            assert max(lags) < 1.0, f"slowest row took {max(lags):.2f} s to appear"
            for page in ("/-/dashboard", "/ccany/flows", f"/-/flow/{sent[-1][0]}"):
                assert http.get(f"{datasette}{page}").status_code == 200, page
    finally:
        os.killpg(run.pid, signal.SIGINT)  # what Ctrl-C in the terminal does
        run.wait(timeout=30)
    time.sleep(0.5)
    for port in (proxy_port, datasette_port):
        try:
            httpx.get(f"http://127.0.0.1:{port}/", timeout=1)
            raise AssertionError(f"port {port} still answers after Ctrl-C")
        except httpx.TransportError:
            pass
    with sqlite3.connect(db) as conn:
        logged = {row[0] for row in conn.execute("select id from flows")}
    assert {request_id for request_id, _ in sent} <= logged
    assert "Traceback" not in (tmp_path / "run.log").read_text()
