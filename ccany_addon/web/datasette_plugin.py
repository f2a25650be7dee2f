"""The flow log's data in any Datasette, registered through the package's `datasette` entry point: wherever
ccany-addon is installed, a plain `datasette data/ccany.db` (no `--plugins-dir`) reads the flow log as
scripts/datasette does. The SQL functions put a flow's bodies together from their parts (the views
`flow_bodies` and `flows_text`, and so full-text search, need them), the flows table's `?_search=` is told its
index, and the table's JSON and CSV carry the bodies whole. The pages, dashboard and admin live in
`datasette/plugins/` beside their templates.

Outside a flow log nothing changes: two SQL functions more, and only `/<db>/flows.json`, `/<db>/flows/<id>.json`
and `/<db>/flows.csv` answers of a table holding flow manifests are touched.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from datasette import hookimpl

from ccany_addon.flowlog.part_store import register_functions
from ccany_addon.web import flow_csv, flow_json, flow_queries


@hookimpl
def startup(datasette: Any) -> Callable[[], Awaitable[None]]:
    async def inner() -> None:
        await flow_queries.ensure_search(datasette)  # the table's `?_search=`

    return inner


@hookimpl
def prepare_connection(conn: Any) -> None:
    register_functions(conn)  # ccany_body() and ccany_part(): a flow's bodies in SQL (README: "The flow log")


@hookimpl
def asgi_wrapper(datasette: Any) -> Callable[[Any], Any]:
    return lambda app: flow_csv.wrap(flow_json.wrap(app, datasette), datasette)
