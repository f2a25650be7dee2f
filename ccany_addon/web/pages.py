"""The flow log's own pages: `/-/dashboard` (charts that datasette/static/ccany.js draws from the stored queries'
JSON) and `/-/flow/{id}` (one turn: client request → upstream request → upstream response → client response)."""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from datasette.resources import TableResource
from datasette.utils import tilde_decode, tilde_encode
from datasette.utils.asgi import Forbidden, NotFound, Response

from ccany_addon.flowlog.part_store import with_bodies
from ccany_addon.flowlog.schema import BODY_MANIFESTS, FLOWS
from ccany_addon.web import fleet
from ccany_addon.web.cells import parse_json, pretty_or_none
from ccany_addon.web.flow_queries import CHARTS, QUERIES, ensure_setup
from ccany_addon.web.query_parts import DEFAULT_DAYS, IS_ERROR, WINDOW

if TYPE_CHECKING:
    from datasette.app import Datasette
    from datasette.utils.asgi import Request

STATIC_MOUNT = "-/ccany-static"  # `--static -/ccany-static:datasette/static`; a bare `ccany` would hide the ccany DB


def static_url(datasette: Datasette, path: str) -> str:
    """URL of one of our static files (with a cache-busting hash when the mount is configured)."""
    try:
        return datasette.static(path, mount=STATIC_MOUNT)
    except (FileNotFoundError, ValueError):
        return datasette.urls.path(f"/{STATIC_MOUNT}/{path}")


def looks_like_sse(text: str) -> bool:
    head = text.lstrip()[:200]
    return head.startswith(("event:", "data:", ":", "id:", "retry:"))


def body_view(text: Any) -> dict[str, Any]:
    """How the flow page shows one body: pretty JSON, SSE text, other text, or nothing."""
    if text is None or text == "":
        return {"kind": "empty", "text": ""}
    pretty = pretty_or_none(text)
    if pretty is not None:
        return {"kind": "json", "text": pretty}
    text = str(text)
    return {"kind": "sse" if looks_like_sse(text) else "text", "text": text}


def headers_view(text: Any) -> dict[str, Any]:
    """Headers as (name, value) rows when stored as a JSON object or list of pairs, else as text."""
    if text is None or text == "":
        return {"rows": [], "text": ""}
    ok, value = parse_json(text)
    rows: list[tuple[str, str]] = []
    if ok and isinstance(value, dict):
        for name, item in value.items():
            for one in item if isinstance(item, list) else [item]:
                rows.append((str(name), one if isinstance(one, str) else json.dumps(one, ensure_ascii=False)))
        return {"rows": rows, "text": ""}
    if ok and isinstance(value, list) and all(isinstance(pair, list | tuple) and len(pair) == 2 for pair in value):
        return {"rows": [(str(name), str(item)) for name, item in value], "text": ""}
    return {"rows": [], "text": pretty_or_none(text) or str(text)}


def events_view(text: Any) -> list[list[Any]]:
    """The stream timeline `[[offset_ms, event_type, block_index, bytes], ...]`, well-formed entries only."""
    ok, value = parse_json(text)
    if not ok or not isinstance(value, list):
        return []
    events = []
    for item in value:
        if isinstance(item, list) and len(item) >= 2 and isinstance(item[0], int | float):
            block = item[2] if len(item) > 2 and isinstance(item[2], int) else None
            size = item[3] if len(item) > 3 and isinstance(item[3], int | float) else None
            events.append([item[0], str(item[1]), block, size])
    return events


async def _check_can_view_flows(datasette: Datasette, request: Request, database: str) -> None:
    if not await datasette.allowed(
        action="view-table", resource=TableResource(database=database, table=FLOWS), actor=request.actor
    ):
        raise Forbidden("You may not view the flow log")


def _days(request: Request) -> float | None:
    raw = request.args.get("days")
    if not raw:
        return None
    try:
        days = float(raw)
    except ValueError:
        return None
    return days if 0 < days < 100000 else None


async def dashboard(datasette: Datasette, request: Request) -> Response:
    """The charts over the flow log; over every instance's when Datasette serves several flow DBs (`fleet.py`)."""
    first = await ensure_setup(datasette)
    instances = list(fleet.members(datasette))
    database = fleet.FLEET if instances else first
    context: dict[str, Any] = {"flows_database": first, "instances": instances, "charts": [], "summary": None,
                               "links": []}
    days = _days(request)
    if first is not None:
        for name in instances or [first]:
            await _check_can_view_flows(datasette, request, name)
        db = datasette.get_database(database)
        summary_sql = f"""SELECT count(*) AS flows, coalesce(sum({IS_ERROR}), 0) AS errors,
                  coalesce(sum(input_tokens), 0) AS input_tokens, coalesce(sum(output_tokens), 0) AS output_tokens,
                  coalesce(sum(cost_usd), 0) AS cost_usd, min(started_at) AS first, max(started_at) AS last
                FROM flows WHERE {WINDOW}"""
        summary = (
            await db.execute(fleet.over_fleet(datasette, summary_sql) if instances else summary_sql,
                             {"days": "" if days is None else str(days)})
        ).first()
        context["summary"] = dict(summary) if summary else None
        charts = [*CHARTS, fleet.FLEET_CHART] if instances else CHARTS
        queries = {**QUERIES, **fleet.FLEET_QUERIES} if instances else QUERIES
        suffix = "?_shape=array" + ("" if days is None else "&" + urlencode({"days": days}))
        context["charts"] = [
            {**chart, "data_url": datasette.urls.query(database, chart["query"], format="json") + suffix,
             "page_url": datasette.urls.query(database, chart["query"])
             + ("" if days is None else "?" + urlencode({"days": days}))}
            for chart in charts
        ]
        context["links"] = [
            {"name": name, "title": query["title"], "description": query["description"],
             # the fleet has the queries over a window of days; the others read one flow DB
             "href": datasette.urls.query(database if query["params"] == ["days"] else first, name)}
            for name, query in queries.items()
        ]
        context["flows_url"] = datasette.urls.table(first, FLOWS)
        context["database_url"] = datasette.urls.database(database)
    context["days"] = days if days is not None else DEFAULT_DAYS
    context["script_url"] = static_url(datasette, "ccany.js")
    return Response.html(
        await datasette.render_template("ccany_dashboard.html", context, request=request, view_name="ccany-dashboard")
    )


def prefix_view(flow: dict[str, Any]) -> dict[str, Any] | None:
    """What the flow's requests share with the previous request of its session (cache forensics)."""
    if flow.get("prefix_parts") is None and flow.get("upstream_prefix_parts") is None:
        return None
    prompt, shared = flow.get("upstream_prompt_bytes"), flow.get("upstream_prefix_bytes")
    share = round(100 * shared / prompt, 1) if isinstance(prompt, int) and prompt and isinstance(shared, int) else None
    return {"client_parts": flow.get("prefix_parts"), "client_break": flow.get("prefix_break"),
            "upstream_parts": flow.get("upstream_prefix_parts"), "upstream_break": flow.get("upstream_prefix_break"),
            "upstream_bytes": shared, "prompt_bytes": prompt, "share": share}


PANES = [
    ("client_request", "Client request", "client_request_headers", "what the client sent"),
    ("upstream_request", "Upstream request", "upstream_request_headers", "what the gateway sent upstream"),
    ("upstream_response", "Upstream response", "upstream_response_headers", "what the upstream answered"),
    ("client_response", "Client response", "client_response_headers", "what the client received"),
]


async def _flow(datasette: Datasette, request: Request) -> tuple[str, str, dict[str, Any]]:
    """The flow a page is about, its bodies whole: (its id, the database, its row)."""
    flow_id = tilde_decode(request.url_vars["flow_id"])  # Datasette redirects %-escapes to ~-escapes
    database = await ensure_setup(datasette)
    if database is None:
        raise NotFound("No flow log: no attached database has a flows table")
    await _check_can_view_flows(datasette, request, database)

    def read(conn: Any) -> dict[str, Any] | None:
        cursor = conn.execute(f"SELECT * FROM [{FLOWS}] WHERE id = ?", [flow_id])
        row = cursor.fetchone()
        return None if row is None else with_bodies(conn, dict(zip([c[0] for c in cursor.description], row,
                                                                   strict=True)))

    flow = await datasette.get_database(database).execute_fn(read)
    if flow is None:
        raise NotFound(f"No flow with id {flow_id}")
    return flow_id, database, flow


async def flow_json(datasette: Datasette, request: Request) -> Response:
    """`/-/flow/{id}.json`: the flow's row with its four bodies whole (parsed when they are JSON), as a download."""
    flow_id, _, flow = await _flow(datasette, request)
    for column in list(BODY_MANIFESTS) + [c for c in flow if c.endswith("_headers") or c in ("events", "notes")]:
        ok, value = parse_json(flow.get(column))
        if ok:
            flow[column] = value
    for manifest in BODY_MANIFESTS.values():
        flow.pop(manifest, None)
    return Response(
        json.dumps(flow, ensure_ascii=False, indent=2), content_type="application/json; charset=utf-8",
        headers={"content-disposition": f'attachment; filename="flow-{re.sub(r"[^A-Za-z0-9_.-]", "_", flow_id)}.json"'},
    )


async def flow_page(datasette: Datasette, request: Request) -> Response:
    flow_id, database, flow = await _flow(datasette, request)
    db = datasette.get_database(database)
    truncated = str(flow.get("truncated") or "")
    panes = []
    for column, title, headers_column, help_text in PANES:
        panes.append(
            {
                "id": column.replace("_", "-"),
                "title": title,
                "help": help_text,
                "headers": headers_view(flow.get(headers_column)),
                "body": body_view(flow.get(column)),
                "truncated": column in re.split(r"[\s,;]+", truncated) if truncated else False,
            }
        )
    session = None
    if flow.get("session_id"):
        position = (
            await db.execute(
                """SELECT
                  (SELECT count(*) FROM flows WHERE session_id = :s
                    AND (started_at < :t OR (started_at = :t AND id <= :id))) AS turn,
                  (SELECT count(*) FROM flows WHERE session_id = :s) AS turns,
                  (SELECT id FROM flows WHERE session_id = :s
                    AND (started_at < :t OR (started_at = :t AND id < :id))
                    ORDER BY started_at DESC, id DESC LIMIT 1) AS previous,
                  (SELECT id FROM flows WHERE session_id = :s
                    AND (started_at > :t OR (started_at = :t AND id > :id))
                    ORDER BY started_at, id LIMIT 1) AS next""",
                {"s": flow["session_id"], "t": flow.get("started_at") or "", "id": flow_id},
            )
        ).first()
        session = dict(position)
        session["url"] = datasette.urls.query(database, "session_turns") + "?" + urlencode(
            {"session_id": flow["session_id"]}
        )
    ok, notes = parse_json(flow.get("notes"))
    context = {
        "flow": flow,
        "flow_id": flow_id,
        "panes": panes,
        "events": events_view(flow.get("events")),
        "notes": notes if ok and isinstance(notes, list) else ([flow["notes"]] if flow.get("notes") else []),
        "session": session,
        "flows_database": database,
        "row_url": datasette.urls.row(database, FLOWS, tilde_encode(flow_id)),
        "row_json_url": datasette.urls.row(database, FLOWS, tilde_encode(flow_id), format="json"),
        "download_url": datasette.urls.path(f"/-/flow/{tilde_encode(flow_id)}.json"),
        "prefix": prefix_view(flow),
        "flows_url": datasette.urls.table(database, FLOWS),
        "script_url": static_url(datasette, "ccany.js"),
    }
    return Response.html(
        await datasette.render_template("ccany_flow.html", context, request=request, view_name="ccany-flow")
    )
