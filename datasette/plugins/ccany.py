"""ccany's Datasette plugin: stored queries, a dashboard and a flow page over the flow log.

Loaded with `datasette serve --plugins-dir datasette/plugins` (see scripts/datasette); Datasette imports this file
as a top-level module, so it stays one self-contained file with no imports from the ccany_addon package.

- The flow log is whichever attached database has a `flows` table: its name is the file's stem, which users choose.
- Stored queries (Datasette 1.0a41 has no `canned_queries` hook any more: plugins add them with
  `datasette.add_query`) are registered at start-up for every database holding `flows`.
- `/-/dashboard`: charts drawn by datasette/static/ccany.js from the stored queries' JSON.
- `/-/flow/{id}`: one turn, client request → upstream request → upstream response → client response.
- `render_cell`: request ids link to their flow page, session ids to their turns, JSON bodies are pretty-printed.
"""

from __future__ import annotations

import json
import re
import weakref
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import markupsafe
from datasette import hookimpl
from datasette.resources import TableResource
from datasette.utils import tilde_decode, tilde_encode
from datasette.utils.asgi import Forbidden, NotFound, Response

FLOWS = "flows"
STATIC_MOUNT = "-/ccany-static"  # `--static -/ccany-static:datasette/static`; a bare `ccany` would hide the ccany DB
REQUEST_ID = re.compile(r"req_[0-9a-f]{32}")
DEFAULT_DAYS = 7
JSON_COLUMNS = frozenset(
    {
        "client_request",
        "client_request_headers",
        "upstream_request",
        "upstream_request_headers",
        "upstream_response",
        "upstream_response_headers",
        "client_response",
        "client_response_headers",
        "events",
        "notes",
    }
)
# Defaults for the flows table page; a `databases.<db>.tables.flows` block in datasette.yaml wins.
FLOWS_TABLE_CONFIG = {
    "sort_desc": "started_at",
    "size": 50,
    "facets": ["upstream_model", "status_code", "error_type"],
}

# ---------------------------------------------------------------------------------------------------------------
# Stored queries. Times are UTC text `YYYY-MM-DD HH:MM:SS.mmm`, so `substr(started_at, 1, 13)` is the hour.
# Aggregates cover the last :days days (blank = 7) before the newest flow, not before now: an idle gateway still
# shows its last week of traffic.

WINDOW = (
    "started_at >= (SELECT datetime(max(started_at), "
    f"'-' || CAST(coalesce(nullif(:days, ''), {DEFAULT_DAYS}) AS REAL) || ' days') FROM flows)"
)
IS_ERROR = "(error_type IS NOT NULL OR status_code >= 400)"
MODEL = "coalesce(upstream_model, client_model, '(unknown)')"
HOUR = "substr(started_at, 1, 13) || ':00'"


def _percentiles_sql(group: str, label: str) -> str:
    """Nearest-rank p50/p90/p99 of duration_ms and ttft_ms per group, over successful flows.

    The p-th percentile of n sorted values is the one at rank ceil(p * n / 100): the smallest value whose rank r
    has r * 100 >= p * n (integers, so no rounding trouble). NULLs get their own window partition.
    """

    def pct(value: str, rank: str, count: str, p: int, name: str) -> str:
        chosen = f"CASE WHEN {value} IS NOT NULL AND {rank} * 100 >= {p} * {count} THEN {value} END"
        return f"round(min({chosen}), 1) AS {name}"

    columns = ",\n  ".join(
        [
            f"{label}",
            "max(n) AS flows",
            pct("d", "d_rank", "d_n", 50, "p50_ms"),
            pct("d", "d_rank", "d_n", 90, "p90_ms"),
            pct("d", "d_rank", "d_n", 99, "p99_ms"),
            "round(max(d), 1) AS max_ms",
            "max(t_n) AS ttft_flows",
            pct("t", "t_rank", "t_n", 50, "ttft_p50_ms"),
            pct("t", "t_rank", "t_n", 90, "ttft_p90_ms"),
            pct("t", "t_rank", "t_n", 99, "ttft_p99_ms"),
            "round(max(t), 1) AS ttft_max_ms",
        ]
    )
    return f"""WITH base AS (
  SELECT {group} AS {label}, duration_ms AS d, ttft_ms AS t
  FROM flows
  WHERE {WINDOW} AND NOT {IS_ERROR}
), ranked AS (
  SELECT {label}, d, t,
    row_number() OVER (PARTITION BY {label}, d IS NULL ORDER BY d) AS d_rank,
    count(d) OVER (PARTITION BY {label}) AS d_n,
    row_number() OVER (PARTITION BY {label}, t IS NULL ORDER BY t) AS t_rank,
    count(t) OVER (PARTITION BY {label}) AS t_n,
    count(*) OVER (PARTITION BY {label}) AS n
  FROM base
)
SELECT
  {columns}
FROM ranked
GROUP BY {label}
ORDER BY flows DESC, {label}"""


QUERIES: dict[str, dict[str, Any]] = {
    "requests_per_hour": {
        "title": "Requests per hour",
        "description": "Flows, streamed flows, errors and tokens per UTC hour, over the last :days days of "
        "traffic (blank = 7).",
        "sql": f"""SELECT
  {HOUR} AS hour,
  count(*) AS requests,
  coalesce(sum(is_stream), 0) AS streamed,
  sum({IS_ERROR}) AS errors,
  coalesce(sum(input_tokens), 0) AS input_tokens,
  coalesce(sum(output_tokens), 0) AS output_tokens,
  coalesce(sum(cache_read_input_tokens), 0) AS cache_read_input_tokens
FROM flows
WHERE {WINDOW}
GROUP BY hour
ORDER BY hour""",
    },
    "tokens_per_hour_by_model": {
        "title": "Tokens per hour by model",
        "description": "Requests and tokens per UTC hour and model (the upstream model, else the requested one), "
        "over the last :days days of traffic (blank = 7).",
        "sql": f"""SELECT
  {HOUR} AS hour,
  {MODEL} AS model,
  count(*) AS requests,
  coalesce(sum(input_tokens), 0) AS input_tokens,
  coalesce(sum(output_tokens), 0) AS output_tokens,
  coalesce(sum(cache_read_input_tokens), 0) AS cache_read_input_tokens,
  coalesce(sum(input_tokens), 0) + coalesce(sum(output_tokens), 0) AS total_tokens
FROM flows
WHERE {WINDOW}
GROUP BY hour, model
ORDER BY hour, model""",
    },
    "usage_by_model": {
        "title": "Usage by model",
        "description": "Requests, errors and tokens per model over the last :days days of traffic (blank = 7).",
        "sql": f"""SELECT
  {MODEL} AS model,
  group_concat(DISTINCT client_model) AS client_models,
  group_concat(DISTINCT provider) AS providers,
  count(*) AS requests,
  sum({IS_ERROR}) AS errors,
  coalesce(sum(input_tokens), 0) AS input_tokens,
  coalesce(sum(output_tokens), 0) AS output_tokens,
  coalesce(sum(cache_read_input_tokens), 0) AS cache_read_input_tokens,
  round(avg(duration_ms), 1) AS avg_duration_ms,
  min(started_at) AS first_seen,
  max(started_at) AS last_seen
FROM flows
WHERE {WINDOW}
GROUP BY model
ORDER BY requests DESC, model""",
    },
    "latency_by_model": {
        "title": "Latency and time to first token by model",
        "description": "p50/p90/p99 of duration_ms and ttft_ms (nearest rank) per model, over successful flows "
        "of the last :days days of traffic (blank = 7).",
        "sql": _percentiles_sql(MODEL, "model"),
    },
    "latency_by_provider": {
        "title": "Latency and time to first token by provider",
        "description": "p50/p90/p99 of duration_ms and ttft_ms (nearest rank) per provider, over successful "
        "flows of the last :days days of traffic (blank = 7).",
        "sql": _percentiles_sql("coalesce(provider, '(none)')", "provider"),
    },
    "errors_by_type": {
        "title": "Errors by type",
        "description": "Failed flows (an error_type, or a status >= 400) per error type, with the latest one, "
        "over the last :days days of traffic (blank = 7).",
        "sql": f"""WITH errors AS (
  SELECT coalesce(error_type, 'http_' || status_code) AS error_type, status_code, started_at, id, error_message
  FROM flows
  WHERE {WINDOW} AND {IS_ERROR}
), latest AS (
  SELECT error_type, id, error_message,
    row_number() OVER (PARTITION BY error_type ORDER BY started_at DESC, id DESC) AS rn
  FROM errors
)
SELECT
  errors.error_type,
  count(*) AS flows,
  group_concat(DISTINCT errors.status_code) AS status_codes,
  min(errors.started_at) AS first_seen,
  max(errors.started_at) AS last_seen,
  latest.id AS latest_id,
  latest.error_message AS latest_message
FROM errors
JOIN latest ON latest.error_type = errors.error_type AND latest.rn = 1
GROUP BY errors.error_type
ORDER BY flows DESC, errors.error_type""",
    },
    "slowest_flows": {
        "title": "Slowest flows",
        "description": "The 50 longest flows of the last :days days of traffic (blank = 7).",
        "sql": f"""SELECT
  id, started_at, client_model, upstream_model, provider, status_code, is_stream,
  duration_ms, ttft_ms, upstream_ttfb_ms, max_chunk_gap_ms, output_tokens, error_type
FROM flows
WHERE {WINDOW} AND duration_ms IS NOT NULL
ORDER BY duration_ms DESC
LIMIT 50""",
    },
    "sessions": {
        "title": "Claude Code sessions",
        "description": "Sessions (X-Claude-Code-Session-Id) of the last :days days of traffic (blank = 7), "
        "newest first.",
        "sql": f"""SELECT
  session_id,
  count(*) AS turns,
  min(started_at) AS first_seen,
  max(started_at) AS last_seen,
  group_concat(DISTINCT client_model) AS client_models,
  sum({IS_ERROR}) AS errors,
  coalesce(sum(input_tokens), 0) AS input_tokens,
  coalesce(sum(output_tokens), 0) AS output_tokens
FROM flows
WHERE {WINDOW} AND session_id IS NOT NULL
GROUP BY session_id
ORDER BY last_seen DESC
LIMIT 200""",
    },
    "session_turns": {
        "title": "A session's turns",
        "description": "Every flow of one Claude Code session (:session_id), in order.",
        "sql": """SELECT
  row_number() OVER (ORDER BY started_at, id) AS turn,
  id, started_at, request_class, agent_id, client_model, upstream_model, status_code, stop_reason,
  input_tokens, output_tokens, cache_read_input_tokens, ttft_ms, duration_ms, error_type,
  substr(conversation, 1, 300) AS conversation
FROM flows
WHERE session_id = :session_id
ORDER BY started_at, id""",
        "params": ["session_id"],
    },
}
for _query in QUERIES.values():
    _query.setdefault("params", ["days"])

# Dashboard charts, drawn by ccany.js. `kind`: timebars (x = hour), timelines (one line per `series` value),
# groupbars (one group of bars per `label`), hbars (one horizontal bar per `label`).
CHARTS: list[dict[str, Any]] = [
    {
        "id": "requests",
        "title": "Requests per hour",
        "query": "requests_per_hour",
        "kind": "timebars",
        "x": "hour",
        "y": ["requests", "errors"],
        "empty": "No flows yet",
    },
    {
        "id": "tokens",
        "title": "Tokens per hour by model (input + output)",
        "query": "tokens_per_hour_by_model",
        "kind": "timelines",
        "x": "hour",
        "y": ["total_tokens"],
        "series": "model",
        "empty": "No flows yet",
    },
    {
        "id": "latency",
        "title": "Latency by model, ms (p50 / p90 / p99)",
        "query": "latency_by_model",
        "kind": "groupbars",
        "label": "model",
        "y": ["p50_ms", "p90_ms", "p99_ms"],
        "empty": "No successful flows yet",
    },
    {
        "id": "ttft",
        "title": "Time to first token by model, ms (p50 / p90 / p99)",
        "query": "latency_by_model",
        "kind": "groupbars",
        "label": "model",
        "y": ["ttft_p50_ms", "ttft_p90_ms", "ttft_p99_ms"],
        "empty": "No successful flows yet",
    },
    {
        "id": "errors",
        "title": "Errors by type",
        "query": "errors_by_type",
        "kind": "hbars",
        "label": "error_type",
        "y": ["flows"],
        "empty": "No errors",
    },
]

# ---------------------------------------------------------------------------------------------------------------
# Finding the flow log

_registered: weakref.WeakKeyDictionary[Any, set[str]] = weakref.WeakKeyDictionary()


async def flow_databases(datasette) -> list[str]:
    """Names of the attached databases that hold a `flows` table, in attachment order."""
    names = []
    for name, db in list(datasette.databases.items()):
        if name == "_internal":
            continue
        try:
            if await db.table_exists(FLOWS):
                names.append(name)
        except Exception:  # noqa: BLE001 - an unreadable file is simply not the flow log
            continue
    return names


async def ensure_setup(datasette) -> str | None:
    """Register the stored queries and table defaults for each flows DB not seen yet; the first flows DB's name."""
    names = await flow_databases(datasette)
    done = _registered.setdefault(datasette, set())
    for name in names:
        if name in done:
            continue
        for query_name, query in QUERIES.items():
            await datasette.add_query(
                name,
                query_name,
                query["sql"],
                title=query["title"],
                description=query["description"],
                parameters=query["params"],
                is_trusted=True,
                source="plugin",
            )
        if datasette.config is None:
            datasette.config = {}
        tables = datasette.config.setdefault("databases", {}).setdefault(name, {}).setdefault("tables", {})
        flows_config = tables.setdefault(FLOWS, {})
        for key, value in FLOWS_TABLE_CONFIG.items():
            flows_config.setdefault(key, value)
        done.add(name)
    return names[0] if names else None


@hookimpl
def startup(datasette):
    async def inner():
        await ensure_setup(datasette)

    return inner


# ---------------------------------------------------------------------------------------------------------------
# Rendering helpers


def pretty_json(value: Any, limit: int = 0) -> str:
    """Indented JSON, with short arrays of scalars (event tuples, stop sequences...) kept on one line; with a
    `limit`, only about that many characters are produced (table cells show no more)."""
    out: list[str] = []
    size = 0
    for chunk in _pretty_chunks(value, 0):
        out.append(chunk)
        size += len(chunk)
        if limit and size > limit:
            break
    return "".join(out)


def _pretty_chunks(value: Any, indent: int) -> Iterator[str]:
    if isinstance(value, dict) and value:
        inner = " " * (indent + 2)
        for n, (key, item) in enumerate(value.items()):
            yield ("{\n" if n == 0 else ",\n") + inner + json.dumps(key, ensure_ascii=False) + ": "
            yield from _pretty_chunks(item, indent + 2)
        yield "\n" + " " * indent + "}"
    elif isinstance(value, list) and value:
        if all(not isinstance(item, dict | list) for item in value):
            flat = json.dumps(value, ensure_ascii=False)
            if len(flat) + indent <= 100:
                yield flat
                return
        inner = " " * (indent + 2)
        for n, item in enumerate(value):
            yield ("[\n" if n == 0 else ",\n") + inner
            yield from _pretty_chunks(item, indent + 2)
        yield "\n" + " " * indent + "]"
    else:
        yield json.dumps(value, ensure_ascii=False)


def parse_json(text: Any) -> tuple[bool, Any]:
    """(True, value) when `text` is a JSON object or array."""
    if not isinstance(text, str) or not text.lstrip().startswith(("{", "[")):
        return False, None
    try:
        return True, json.loads(text)
    except (ValueError, RecursionError):
        return False, None


def pretty_or_none(text: Any, limit: int = 0) -> str | None:
    ok, value = parse_json(text)
    if not ok:
        return None
    try:
        return pretty_json(value, limit)
    except RecursionError:
        return None


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


def static_url(datasette, path: str) -> str:
    """URL of one of our static files (with a cache-busting hash when the mount is configured)."""
    try:
        return datasette.static(path, mount=STATIC_MOUNT)
    except (FileNotFoundError, ValueError):
        return datasette.urls.path(f"/{STATIC_MOUNT}/{path}")


def _is_row_page(request) -> bool:
    return bool(request is not None and "pks" in (request.url_vars or {}))


# ---------------------------------------------------------------------------------------------------------------
# Hooks for Datasette's own pages


@hookimpl
def render_cell(value, column, table, database, datasette, request):
    if not isinstance(value, str):
        return None
    if REQUEST_ID.fullmatch(value):  # in any table or query result
        return flow_link(datasette, value)
    if table not in (None, FLOWS):  # the rest only in the flows table and query results
        return None
    if column == "session_id" and value and database in _registered.get(datasette, set()):
        href = datasette.urls.query(database, "session_turns") + "?" + urlencode({"session_id": value})
        return markupsafe.Markup('<a href="{}" title="this session\'s turns">{}</a>').format(href, value)
    if column in JSON_COLUMNS:
        limit = 0 if _is_row_page(request) else (datasette.setting("truncate_cells_html") or 0)
        pretty = pretty_or_none(value, limit)
        if pretty is None:
            return None
        if limit and len(pretty) > limit:
            pretty = pretty[:limit] + "\u2026"
        return markupsafe.Markup('<pre class="ccany-json">{}</pre>').format(pretty)
    return None


def flow_link(datasette, request_id: str) -> markupsafe.Markup:
    return markupsafe.Markup('<a class="ccany-flow-link" href="{}">{}</a>').format(
        datasette.urls.path(f"/-/flow/{request_id}"), request_id
    )


@hookimpl
def prepare_jinja2_environment(env, datasette):
    def link_flow_rows(rows, table):
        """The flows table page links each row's id (its primary key, never passed to render_cell) to its flow."""
        if table != FLOWS or not rows:
            return rows
        for row in rows:
            for cell in getattr(row, "cells", []):
                if cell.get("value_type") == "pk" and REQUEST_ID.fullmatch(str(cell.get("raw") or "")):
                    link = markupsafe.Markup(
                        '<a class="ccany-flow-link ccany-flow-open" href="{}" title="open the flow page">flow</a>'
                    ).format(datasette.urls.path(f"/-/flow/{cell['raw']}"))
                    cell["value"] = markupsafe.Markup("{} {}").format(cell["value"], link)
        return rows

    env.filters["ccany_link_flow_rows"] = link_flow_rows


@hookimpl
def extra_css_urls(datasette):
    return [static_url(datasette, "ccany.css")]


@hookimpl
def menu_links(datasette):
    return [{"href": datasette.urls.path("/-/dashboard"), "label": "Flow dashboard"}]


@hookimpl
def register_routes():
    return [
        (r"^/-/dashboard$", dashboard),
        (r"^/-/flow/(?P<flow_id>[^/]+)$", flow_page),
    ]


async def _check_can_view_flows(datasette, request, database: str) -> None:
    if not await datasette.allowed(
        action="view-table", resource=TableResource(database=database, table=FLOWS), actor=request.actor
    ):
        raise Forbidden("You may not view the flow log")


def _days(request) -> float | None:
    raw = request.args.get("days")
    if not raw:
        return None
    try:
        days = float(raw)
    except ValueError:
        return None
    return days if 0 < days < 100000 else None


async def dashboard(datasette, request):
    database = await ensure_setup(datasette)
    context: dict[str, Any] = {"flows_database": database, "charts": [], "summary": None, "links": []}
    days = _days(request)
    if database is not None:
        await _check_can_view_flows(datasette, request, database)
        db = datasette.get_database(database)
        summary = (
            await db.execute(
                f"""SELECT count(*) AS flows, coalesce(sum({IS_ERROR}), 0) AS errors,
                  coalesce(sum(input_tokens), 0) AS input_tokens, coalesce(sum(output_tokens), 0) AS output_tokens,
                  min(started_at) AS first, max(started_at) AS last
                FROM flows WHERE {WINDOW}""",
                {"days": "" if days is None else str(days)},
            )
        ).first()
        context["summary"] = dict(summary) if summary else None
        suffix = "?_shape=array" + ("" if days is None else "&" + urlencode({"days": days}))
        context["charts"] = [
            {**chart, "data_url": datasette.urls.query(database, chart["query"], format="json") + suffix,
             "page_url": datasette.urls.query(database, chart["query"])
             + ("" if days is None else "?" + urlencode({"days": days}))}
            for chart in CHARTS
        ]
        context["links"] = [
            {"name": name, "title": query["title"], "description": query["description"],
             "href": datasette.urls.query(database, name)}
            for name, query in QUERIES.items()
        ]
        context["flows_url"] = datasette.urls.table(database, FLOWS)
        context["database_url"] = datasette.urls.database(database)
    context["days"] = days if days is not None else DEFAULT_DAYS
    context["script_url"] = static_url(datasette, "ccany.js")
    return Response.html(
        await datasette.render_template("ccany_dashboard.html", context, request=request, view_name="ccany-dashboard")
    )


PANES = [
    ("client_request", "Client request", "client_request_headers", "what the client sent"),
    ("upstream_request", "Upstream request", "upstream_request_headers", "what the gateway sent upstream"),
    ("upstream_response", "Upstream response", "upstream_response_headers", "what the upstream answered"),
    ("client_response", "Client response", "client_response_headers", "what the client received"),
]


async def flow_page(datasette, request):
    flow_id = tilde_decode(request.url_vars["flow_id"])  # Datasette redirects %-escapes to ~-escapes
    database = await ensure_setup(datasette)
    if database is None:
        raise NotFound("No flow log: no attached database has a flows table")
    await _check_can_view_flows(datasette, request, database)
    db = datasette.get_database(database)
    row = (await db.execute("SELECT * FROM flows WHERE id = ?", [flow_id])).first()
    if row is None:
        raise NotFound(f"No flow with id {flow_id}")
    flow = dict(row)
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
        "flows_url": datasette.urls.table(database, FLOWS),
        "script_url": static_url(datasette, "ccany.js"),
    }
    return Response.html(
        await datasette.render_template("ccany_flow.html", context, request=request, view_name="ccany-flow")
    )
