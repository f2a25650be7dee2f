"""ccany's Datasette plugin over the flow log: stored queries, a dashboard and a flow page.

Loaded with `datasette serve --plugins-dir datasette/plugins` (see scripts/datasette); Datasette executes this file
as a top-level module, so it holds only the hooks: the work is in the ccany_addon.web package (the installed
ccany_addon, which imports no mitmproxy there):
- flow_queries: the stored queries and charts, registered for every attached database holding `flows`;
- pages: `/-/dashboard`, `/-/flow/{id}` and `/-/flow/{id}.json` (the flow with its bodies whole);
- cells: request ids link to their flow page, session ids to their turns, JSON columns are pretty-printed;
- fleet: with several flow DBs (one per gateway instance), a `fleet` database whose queries read them all.
The SQL functions and the bodies in the table's JSON and CSV come with the package itself, through its
`datasette` entry point (ccany_addon/web/datasette_plugin.py), so that any Datasette has them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import markupsafe
from datasette import hookimpl

from ccany_addon.web import cells, fleet, flow_queries, pages


@hookimpl
def startup(datasette: Any) -> Callable[[], Awaitable[None]]:
    async def inner() -> None:
        await flow_queries.ensure_setup(datasette)

    return inner


@hookimpl
def prepare_connection(conn: Any, database: str, datasette: Any) -> None:
    fleet.attach(conn, database, datasette)  # the fleet database reads every instance's flow DB


@hookimpl
def render_cell(value: Any, column: str, table: str | None, database: str, datasette: Any,
                request: Any) -> markupsafe.Markup | None:
    return cells.flow_cell(value, column, table, database, datasette, request)


@hookimpl
def prepare_jinja2_environment(env: Any, datasette: Any) -> None:
    env.filters["ccany_link_flow_rows"] = lambda rows, table: cells.link_flow_rows(datasette, rows, table)


@hookimpl
def extra_css_urls(datasette: Any) -> list[str]:
    return [pages.static_url(datasette, "ccany.css")]


@hookimpl
def menu_links(datasette: Any) -> list[dict[str, str]]:
    return [{"href": datasette.urls.path("/-/dashboard"), "label": "Flow dashboard"}]


@hookimpl
def register_routes() -> list[tuple[str, Callable]]:
    return [
        (r"^/-/dashboard$", pages.dashboard),
        (r"^/-/flow/(?P<flow_id>[^/]+)\.json$", pages.flow_json),
        (r"^/-/flow/(?P<flow_id>[^/]+)$", pages.flow_page),
    ]
