"""The fleet view: Datasette over the flow DBs of two gateway instances shows one dashboard over both; the
config DB served beside them is never attached to the fleet database."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx

from tests.datasette.accounts import make_config
from tests.datasette.app import make_datasette
from tests.datasette.conftest import FlowLog, build_flows, write_flow_log


def two_instances(tmp_path: Path) -> tuple[FlowLog, FlowLog]:
    flows = build_flows()
    first, second = flows[:20], flows[20:]
    for row in second:  # the second instance served other requests
        row["id"] = row["id"].replace("req_", "req_b")
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    return (write_flow_log(tmp_path / "one" / "ccany-1.db", first),
            write_flow_log(tmp_path / "two" / "ccany-2.db", second))


def get_all(*paths: Path, urls: list[str], config: Path | None = None) -> list[httpx.Response]:
    async def run() -> list[httpx.Response]:
        ds = make_datasette(*paths, config_db=config)
        return [await ds.client.get(url) for url in urls]

    return asyncio.run(run())


def test_the_dashboard_draws_every_instances_flows(tmp_path):
    one, two = two_instances(tmp_path)
    window = "?_shape=array&days=365"
    dashboard, by_instance, hourly, spend = get_all(one.path, two.path, urls=[
        "/-/dashboard?days=365", f"/fleet/requests_by_instance.json{window}", f"/fleet/requests_per_hour.json{window}",
        f"/fleet/spend_by_model.json{window}"])
    assert dashboard.status_code == 200, dashboard.text[:500]
    text = dashboard.text
    assert f"<strong>{len(one.rows) + len(two.rows)}</strong> flows" in text
    assert 'id="chart-instances"' in text and 'data-url="/fleet/requests_by_instance.json' in text
    assert 'data-url="/fleet/requests_per_hour.json' in text
    assert [(row["instance"], row["requests"]) for row in by_instance.json()] == [
        ("ccany-1", len(one.rows)), ("ccany-2", len(two.rows))]
    assert sum(row["requests"] for row in hourly.json()) == len(one.rows) + len(two.rows)
    spent = sum(row.get("cost_usd") or 0 for row in one.rows + two.rows)
    assert round(sum(row["cost_usd"] for row in spend.json()), 6) == round(spent, 6)
    # each instance's own queries and flows are still there
    one_only = get_all(one.path, two.path, urls=["/ccany-1/requests_per_hour.json?_shape=array&days=365"])[0]
    assert sum(row["requests"] for row in one_only.json()) == len(one.rows)


def test_the_config_db_is_not_part_of_the_fleet(tmp_path):
    one, two = two_instances(tmp_path)
    config = make_config(tmp_path / "config.db", users=False)
    attached, users = get_all(one.path, two.path, config=config.path, urls=[
        "/fleet/-/query.json?sql=select+name+from+pragma_database_list&_shape=array",
        "/fleet/-/query.json?sql=select+*+from+[config].users"])
    assert sorted(row["name"] for row in attached.json()) == ["ccany-1", "ccany-2", "main"]
    assert users.status_code == 400 and "no such table: config.users" in users.text


def test_one_flow_db_makes_no_fleet(tmp_path):
    one, _ = two_instances(tmp_path)
    dashboard, fleet = get_all(one.path, urls=["/-/dashboard", "/fleet.json"])
    assert 'id="chart-instances"' not in dashboard.text and fleet.status_code == 404
