"""The fleet view: one dashboard over the flow DBs of several gateway instances (each instance writes its own).

When Datasette serves two flow DBs or more, an in-memory database `fleet` is added whose connections attach every
flow DB read-only under its own name (never the config DB: its secrets stay behind its own rules). The stored
queries that add flows up over a window are registered on it too, each reading `flows` as the union of every
instance's, with an `instance` column naming where a flow was served. The dashboard then draws the fleet.
"""

from __future__ import annotations

import re
import sqlite3
import weakref
from typing import TYPE_CHECKING, Any

from ccany_addon.flowlog.schema import FLOW_COLUMNS, FLOWS
from ccany_addon.web.query_parts import IS_ERROR, WINDOW

if TYPE_CHECKING:
    from datasette.app import Datasette

FLEET = "fleet"
_SAFE_NAME = re.compile(r"[^\]\x00]+")  # a name that can be quoted [like this]

# What only the fleet has: flows per instance, drawn on the dashboard.
FLEET_QUERIES: dict[str, dict[str, Any]] = {
    "requests_by_instance": {
        "title": "Requests by gateway instance",
        "description": "Flows, errors, tokens and spend per gateway instance (flow DB) over the last :days days of "
        "traffic (blank = 7).",
        "sql": f"""SELECT
  instance,
  count(*) AS requests,
  sum({IS_ERROR}) AS errors,
  coalesce(sum(input_tokens), 0) + coalesce(sum(output_tokens), 0) AS tokens,
  round(coalesce(sum(cost_usd), 0), 6) AS cost_usd,
  max(started_at) AS last_seen
FROM flows
WHERE {WINDOW}
GROUP BY instance
ORDER BY instance""",
        "params": ["days"],
    },
}
FLEET_CHART = {"id": "instances", "title": "Requests by gateway instance", "query": "requests_by_instance",
               "kind": "hbars", "label": "instance", "y": ["requests"], "unit": "", "empty": "No flows yet"}

_fleets: weakref.WeakKeyDictionary[Datasette, tuple[dict[str, str], list[str]]] = weakref.WeakKeyDictionary()


def members(datasette: Datasette) -> dict[str, str]:
    """The instances of the fleet: flow DB name → file (empty: no fleet, one flow DB or none)."""
    return _fleets.get(datasette, ({}, []))[0]


def over_fleet(datasette: Datasette, sql: str) -> str:
    """`sql` over every instance's flows, as the fleet's stored queries are."""
    files, columns = _fleets[datasette]
    return fleet_sql(sql, list(files), columns)


async def ensure_fleet(datasette: Datasette, flow_dbs: list[str], queries: dict[str, dict[str, Any]]) -> bool:
    """With two flow DBs or more, the `fleet` database and its queries (`queries`: those over a window of days);
    True when there is a fleet."""
    files = {name: datasette.databases[name].path for name in flow_dbs
             if datasette.databases[name].path and _SAFE_NAME.fullmatch(name)}
    if len(files) < 2:
        return False
    if FLEET in datasette.databases:
        return members(datasette) == files
    _fleets[datasette] = files, await _shared_columns(datasette, list(files))
    datasette.add_memory_database("ccany_fleet", name=FLEET)
    for name, query in {**queries, **FLEET_QUERIES}.items():
        await datasette.add_query(FLEET, name, over_fleet(datasette, query["sql"]),
                                  title=f"{query['title']} (fleet)", description=query["description"],
                                  parameters=["days"], is_trusted=True, source="plugin")
    return True


def attach(conn: sqlite3.Connection, database: str, datasette: Datasette) -> None:
    """A connection of the `fleet` database: every instance's flow DB, read-only, under its own name."""
    if database != FLEET:
        return
    for name, path in members(datasette).items():
        conn.execute(f"ATTACH DATABASE ? AS [{name}]", [f"file:{path}?mode=ro"])


def fleet_sql(sql: str, instances: list[str], columns: list[str]) -> str:
    """`sql` reading `flows` as the union of every instance's flows, with an `instance` column."""
    chosen = ", ".join(f"[{column}]" for column in columns)
    union = "\n  UNION ALL ".join(f"SELECT '{name}' AS instance, {chosen} FROM [{name}].{FLOWS}" for name in instances)
    flows = f"{FLOWS} AS (\n  {union}\n)"
    if sql.lstrip().upper().startswith("WITH "):
        return re.sub(r"^\s*WITH\s+", f"WITH {flows}, ", sql, count=1, flags=re.IGNORECASE)
    return f"WITH {flows}\n{sql}"


async def _shared_columns(datasette: Datasette, names: list[str]) -> list[str]:
    """The flows columns every instance has, in schema order (an instance not yet upgraded lacks the newest)."""
    present = None
    for name in names:
        rows = await datasette.get_database(name).execute(f"PRAGMA table_info({FLOWS})")
        found = {row["name"] for row in rows}
        present = found if present is None else present & found
    return [column for column in FLOW_COLUMNS if column in (present or set())]
