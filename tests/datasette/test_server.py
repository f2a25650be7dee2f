"""A real Datasette process, started by scripts/datasette exactly as users start it."""

from __future__ import annotations

import json
import sqlite3
import stat
import urllib.error
import urllib.request
from pathlib import Path

import httpx

from ccany_addon.config.schema import open_config_db
from tests.conftest import secret
from tests.datasette.accounts import ADMIN, CSRF_ATTACK, audit_rows, make_config
from tests.datasette.conftest import FlowLog, Server, start_server, stop_server

NEW_KEY = secret("sk-live-PLAINTEXT-saved-over-http-77a0b1c")


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def test_scripts_datasette_serves_the_dashboard_and_queries(server: Server, flow_log: FlowLog) -> None:
    status, page = get(server.url + "/-/dashboard")
    assert status == 200
    assert "/-/ccany-static/ccany.js" in page
    assert 'data-url="/ccany/requests_per_hour.json?_shape=array"' in page
    status, body = get(server.url + "/ccany/requests_per_hour.json?_shape=array")
    assert status == 200
    rows = json.loads(body)
    assert sum(row["requests"] for row in rows) == len(flow_log.rows) - 1  # all but the old flow
    status, script = get(server.url + "/-/ccany-static/ccany.js")
    assert (status, "data-charts-drawn" in script) == (200, True)
    flow_id = flow_log.rows[0]["id"]
    status, page = get(f"{server.url}/-/flow/{flow_id}")
    assert (status, flow_id in page) == (200, True)
    assert get(server.url + "/-/flow/req_" + "f" * 32)[0] == 404
    # Settings from datasette/datasette.yaml, and a mutable (never immutable) database.
    status, body = get(server.url + "/-/settings.json")
    assert json.loads(body)["sql_time_limit_ms"] == 5000
    status, body = get(server.url + "/-/databases.json")
    databases = {database["name"]: database for database in json.loads(body)["databases"]}
    assert databases["ccany"]["is_mutable"] is True


def test_scripts_datasette_creates_a_missing_db(tmp_path: Path) -> None:
    db_path = tmp_path / "fresh" / "gateway.db"
    running = start_server(Path("fresh/gateway.db"), tmp_path)  # relative to the caller's directory (tmp_path)
    try:
        assert db_path.exists()
        status, page = get(running.url + "/-/dashboard")
        assert status == 200
        assert "No flows yet." in page
        status, body = get(running.url + "/gateway/latency_by_model.json?_shape=array")
        assert (status, json.loads(body)) == (200, [])
        # New rows written while Datasette runs show up at once (WAL, not immutable).
        with sqlite3.connect(db_path) as connection:
            connection.execute(
                "INSERT INTO flows (id, started_at, status_code, duration_ms, ttft_ms, upstream_model) "
                "VALUES ('req_" + "1" * 32 + "', '2025-06-01 12:00:00.000', 200, 10, 5, 'm')"
            )
        status, body = get(running.url + "/gateway/latency_by_model.json?_shape=array")
        assert [row["model"] for row in json.loads(body)] == ["m"]
    finally:
        stop_server(running)
    assert running.process.returncode is not None



def test_scripts_datasette_login_and_an_admin_change_over_http(flow_log: FlowLog, tmp_path: Path) -> None:
    """The real server: sessions signed with the kept secret (they survive a restart), a login through the form, a
    key saved through the admin page and encrypted in the file, then read by the next server process."""
    config = make_config(tmp_path / "config.db")
    env = {"DATASETTE_SECRET": None, "CCANY_MASTER_KEY": None}
    running = start_server(flow_log.path, tmp_path, config.path, env, args=("--setting", "default_page_size", "7"))
    try:
        assert httpx.get(running.url + "/-/settings.json").status_code == 403  # anonymous: nothing
        home = httpx.get(running.url + "/")
        assert (home.status_code, home.headers["location"]) == (302, "/-/login?next=%2F")
        with httpx.Client(base_url=running.url) as client:
            wrong = client.post("/-/login", data={"username": ADMIN[0], "password": "not-it-at-all"})
            assert wrong.status_code == 401 and "ds_actor" not in client.cookies
            logged_in = client.post("/-/login", data={"username": ADMIN[0], "password": ADMIN[1],
                                                      "next": "/-/admin/providers"})
            assert (logged_in.status_code, logged_in.headers["location"]) == (302, "/-/admin/providers")
            assert "HttpOnly" in logged_in.headers["set-cookie"]
            cookie = client.cookies["ds_actor"]
            assert client.get("/-/settings.json").json()["default_page_size"] == 7  # a serve flag passed through
            saved = client.post("/-/admin/providers", data={"action": "set-key", "provider": "openai",
                                                            "key_name": "second", "key": NEW_KEY})
            assert saved.status_code == 200 and "…0b1c" in saved.text and NEW_KEY not in saved.text
            cross_site = client.post("/-/admin/providers", headers=CSRF_ATTACK,
                                     data={"action": "set-key", "provider": "openai", "key": "sk-csrf-attack-0000"})
            assert cross_site.status_code == 403
            assert client.get("/config/-/query.json", params={"sql": "select * from provider_keys"}
                              ).status_code == 403
    finally:
        stop_server(running)
    assert NEW_KEY.encode() not in config.file_bytes()
    keys = {row["name"]: row["secret"] for row in open_config_db(config.path, None)["provider_keys"].rows}
    assert config.cipher.decrypt(keys["second"]) == NEW_KEY
    assert any(row["actor"] == ADMIN[0] and row["action"] == "set provider key" for row in audit_rows(config))
    secret_file = tmp_path / "datasette-secret"
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600 and len(secret_file.read_text().strip()) == 64

    # A new process over the same files: the same secret, so the session is still good.
    again = start_server(flow_log.path, tmp_path, config.path, env)
    try:
        response = httpx.get(again.url + "/-/actor.json", cookies={"ds_actor": cookie})
        assert response.json()["actor"] == {"id": ADMIN[0], "role": "admin"}
        assert "…0b1c" in httpx.get(again.url + "/-/admin/providers", cookies={"ds_actor": cookie}).text
    finally:
        stop_server(again)
    assert "Traceback" not in running.log() + again.log()


def test_scripts_datasette_creates_the_config_db_and_its_keys(flow_log: FlowLog, tmp_path: Path) -> None:
    config_path = tmp_path / "fresh" / "config.db"
    running = start_server(flow_log.path, tmp_path, config_path, {"DATASETTE_SECRET": None, "CCANY_MASTER_KEY": None})
    try:
        status, page = get(running.url + "/-/dashboard")  # no account yet: the flow log is open...
        assert status == 200 and 'href="/-/setup"' in page
        assert get(running.url + "/-/setup")[0] == 200
        assert get(running.url + "/config/provider_keys.json")[0] == 403  # ...the config DB is not
    finally:
        stop_server(running)
    for name in ("config.db", "master.key", "datasette-secret"):
        assert (config_path.parent / name).exists(), name
    assert stat.S_IMODE((config_path.parent / "master.key").stat().st_mode) == 0o600
    assert "BACK IT UP" in running.log()
