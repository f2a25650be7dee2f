"""The flow log's stored queries and dashboard charts, and registering them for each attached flow DB.

The flow log is whichever attached database has a `flows` table: its name is the file's stem, which users choose.
Datasette 1.0a41 has no `canned_queries` hook any more: the queries are added with `datasette.add_query` at
start-up (and again when a flow DB shows up later), for every database holding `flows`.

Each query's SQL is built from `query_parts.py` (the window of days, the model, the hour).
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Any

from ccany_addon.flowlog.schema import FLOWS
from ccany_addon.web.fleet import ensure_fleet
from ccany_addon.web.query_parts import HOUR, IS_ERROR, MODEL, WINDOW
from ccany_addon.web.spend_queries import SPEND_CHARTS, SPEND_QUERIES

if TYPE_CHECKING:
    from datasette.app import Datasette

# The index reads the text through a view (schema version 7): Datasette would not find it by itself. Set by the
# package's entry point plugin too, so that a plain Datasette's `?_search=` works.
SEARCH_CONFIG = {"fts_table": "flows_fts", "fts_pk": "rowid"}
# Defaults for the flows table page; a `databases.<db>.tables.flows` block in datasette.yaml wins.
FLOWS_TABLE_CONFIG = {
    **SEARCH_CONFIG,
    "sort_desc": "started_at",
    "size": 50,
    "facets": ["upstream_model", "status_code", "error_type"],
}



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
    "prompt_cache_by_model": {
        "title": "Prompt cache: what a prefix cache could serve vs what the upstream cached",
        "description": "Per model and provider, over requests that followed an earlier one of the same Claude Code "
        "session in the last :days days (blank = 7): the share of the upstream request's bytes (tools, system, "
        "messages) it shared with the previous request, next to the share of input tokens the upstream reported "
        "as read from its cache.",
        "sql": f"""SELECT
  {MODEL} || ' · ' || coalesce(provider, '(none)') AS model,
  count(*) AS requests,
  round(100.0 * sum(upstream_prefix_bytes) / nullif(sum(upstream_prompt_bytes), 0), 1) AS prefix_share_pct,
  round(100.0 * sum(coalesce(cache_read_input_tokens, 0)) / nullif(sum(coalesce(input_tokens, 0)
    + coalesce(cache_read_input_tokens, 0) + coalesce(cache_creation_input_tokens, 0)), 0), 1) AS cached_share_pct
FROM flows
WHERE upstream_prefix_bytes IS NOT NULL AND {WINDOW}
GROUP BY model
ORDER BY requests DESC""",
    },
    "prompt_cache_breaks": {
        "title": "Prompt cache: what broke the shared prefix",
        "description": "The first part that differed from the previous request of the same Claude Code session, "
        "client side and upstream side, per model, over the last :days days (blank = 7). `system[0] changed` "
        "on every turn is Claude Code's per-request billing header.",
        "sql": f"""SELECT
  {MODEL} AS model,
  CASE WHEN prefix_parts IS NULL THEN '(no earlier request)' ELSE coalesce(prefix_break, '(only added)') END
    AS client_break,
  CASE WHEN upstream_prefix_parts IS NULL THEN '(no earlier request)'
    ELSE coalesce(upstream_prefix_break, '(only added)') END AS upstream_break,
  count(*) AS requests,
  round(avg(100.0 * upstream_prefix_bytes / nullif(upstream_prompt_bytes, 0)), 1) AS avg_prefix_share_pct
FROM flows
WHERE (prefix_parts IS NOT NULL OR upstream_prefix_parts IS NOT NULL) AND {WINDOW}
GROUP BY model, client_break, upstream_break
ORDER BY requests DESC
LIMIT 100""",
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
  substr(coalesce(conversation, ccany_body(NULL, conversation_parts)), 1, 300) AS conversation
FROM flows
WHERE session_id = :session_id
ORDER BY started_at, id""",
        "params": ["session_id"],
    },
    **SPEND_QUERIES,
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
    *SPEND_CHARTS,
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
        "id": "prompt-cache",
        "title": "Prompt cache by model, % (shared prefix / reported cache reads)",
        "query": "prompt_cache_by_model",
        "kind": "groupbars",
        "label": "model",
        "y": ["prefix_share_pct", "cached_share_pct"],
        "unit": "%",
        "empty": "No follow-up requests of a Claude Code session yet",
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
# Registering them

_registered: weakref.WeakKeyDictionary[Datasette, set[str]] = weakref.WeakKeyDictionary()


def registered(datasette: Datasette) -> set[str]:
    """The flow DBs whose stored queries are registered (render_cell links session ids to one of them)."""
    return _registered.get(datasette, set())


async def flow_databases(datasette: Datasette) -> list[str]:
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


async def ensure_setup(datasette: Datasette) -> str | None:
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
        _table_defaults(datasette, name, FLOWS_TABLE_CONFIG)
        done.add(name)
    await ensure_fleet(datasette, names, {name: q for name, q in QUERIES.items() if q["params"] == ["days"]})
    return names[0] if names else None


async def ensure_search(datasette: Datasette) -> None:
    """The flows table's full-text index, for each flows DB: all a Datasette without the pages needs."""
    for name in await flow_databases(datasette):
        _table_defaults(datasette, name, SEARCH_CONFIG)


def _table_defaults(datasette: Datasette, database: str, defaults: dict) -> None:
    if datasette.config is None:
        datasette.config = {}
    tables = datasette.config.setdefault("databases", {}).setdefault(database, {}).setdefault("tables", {})
    flows_config = tables.setdefault(FLOWS, {})
    for key, value in defaults.items():
        flows_config.setdefault(key, value)
