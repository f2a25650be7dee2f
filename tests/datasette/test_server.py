"""A real Datasette process, started by scripts/datasette exactly as users start it."""

from __future__ import annotations

import json
import sqlite3
import urllib.error
import urllib.request
from pathlib import Path

from tests.datasette.conftest import FlowLog, Server, start_server, stop_server


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

