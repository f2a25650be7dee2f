"""`scripts/run` as a user runs it: the proxy and a real Datasette server over the live flow log.
Datasette reads while the proxy writes under load; Ctrl-C stops both and every flow is on disk."""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import threading
import time

import httpx

from tests.conftest import ROOT, UPSTREAM_KEY, free_port, secret, wait_for

HELLO = {"model": "claude-haiku-4-5", "max_tokens": 32, "messages": [{"role": "user", "content": "load test"}]}


def test_run_serves_proxy_and_datasette_over_the_live_log(fake_upstream, tmp_path):
    proxy_port, datasette_port = free_port(), free_port()
    db = tmp_path / "ccany.db"
    env = {**os.environ, "OPENAI_API_KEY": UPSTREAM_KEY, "CCANY_UPSTREAM": fake_upstream.url,
           "CCANY_PORT": str(proxy_port), "CCANY_DATASETTE_PORT": str(datasette_port), "CCANY_DB": str(db),
           "CCANY_CONFIG_DB": str(tmp_path / "config.db")}
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


def test_first_run_admin_configures_the_running_proxy_from_the_browser_pages(fake_upstream, tmp_path):
    """What a new user does: scripts/run, /-/setup, a provider and its key on the admin page, a route in
    Datasette's row editor API, a client key; the running proxy follows each step without a restart."""
    proxy_port, datasette_port = free_port(), free_port()
    password, ui_key = secret("first-admin-password-1"), secret("sk-added-in-the-browser-0000beef")
    env = {**os.environ, "OPENAI_API_KEY": UPSTREAM_KEY, "CCANY_UPSTREAM": fake_upstream.url,
           "CCANY_PORT": str(proxy_port), "CCANY_DATASETTE_PORT": str(datasette_port),
           "CCANY_DB": str(tmp_path / "ccany.db"), "CCANY_CONFIG_DB": str(tmp_path / "config.db")}
    env.pop("CCANY_MASTER_KEY", None)
    env.pop("DATASETTE_SECRET", None)
    log = (tmp_path / "run.log").open("w+")
    run = subprocess.Popen([str(ROOT / "scripts" / "run")], env=env, stdout=log, stderr=subprocess.STDOUT,
                           start_new_session=True)
    proxy = f"http://127.0.0.1:{proxy_port}"
    try:
        wait_for(f"{proxy}/health", timeout=60)
        with httpx.Client(base_url=f"http://127.0.0.1:{datasette_port}", timeout=20) as ui:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if ui.get("/-/setup").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, "Datasette did not come up"
                time.sleep(0.2)
            made = ui.post("/-/setup", data={"username": "root-admin", "password": password, "password2": password})
            assert made.status_code in (200, 302), made.text[:300]
            assert ui.get("/-/setup").status_code == 404
            login = ui.post("/-/login", data={"username": "root-admin", "password": password, "next": "/-/admin"})
            assert login.status_code == 302 and "ds_actor" in ui.cookies
            assert ui.post("/-/admin/providers", data={"action": "add-provider", "name": "browser", "kind": "openai",
                                                       "base_url": f"{fake_upstream.url}/v1"}).status_code == 200
            saved = ui.post("/-/admin/providers", data={"action": "set-key", "provider": "browser", "key": ui_key})
            assert saved.status_code == 200 and ui_key not in saved.text
            providers = ui.get("/config/providers.json", params={"name": "browser", "_shape": "array"}).json()
            provider_id = providers[0]["id"]
            inserted = ui.post("/config/routes/-/insert", json={"row": {
                "pattern": "*opus*", "provider_id": provider_id, "upstream_model": "set-in-datasette"}})
            assert inserted.status_code == 201, inserted.text

            def routed() -> bool:
                fake_upstream.clear()
                response = httpx.post(f"{proxy}/v1/messages", timeout=20, json={
                    "model": "claude-opus-4-1", "max_tokens": 20, "messages": [{"role": "user", "content": "x"}]})
                sent = fake_upstream.requests()
                return response.status_code == 200 and sent[-1]["body"]["model"] == "set-in-datasette" and \
                    sent[-1]["headers"]["authorization"] == f"Bearer {ui_key}"

            _eventually(routed)
            page = ui.post("/-/admin/client-keys", data={"name": "my-laptop"})
            key = secret(re.search(r'<code class="ccany-key">([^<]+)</code>', page.text).group(1))
        hello = {"model": "claude-opus-4-1", "max_tokens": 20, "messages": [{"role": "user", "content": "x"}]}
        _eventually(lambda: httpx.post(f"{proxy}/v1/messages", json=hello, timeout=20).status_code == 401)
        admitted = httpx.post(f"{proxy}/v1/messages", json=hello, headers={"x-api-key": key}, timeout=20)
        assert admitted.status_code == 200
    finally:
        os.killpg(run.pid, signal.SIGINT)
        run.wait(timeout=30)
    assert "Traceback" not in (tmp_path / "run.log").read_text()


def _eventually(check, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "the running proxy did not pick up the change"
        time.sleep(0.2)
