"""The flow log's spend queries and charts: what flows cost in USD (`cost_usd`, priced by `ccany_addon/costs`), per
hour, model and provider, client key and Claude Code session. `flow_queries.py` registers them with the others.

A flow with tokens but no `cost_usd` had no known price: each query counts those as `unpriced`, so a model the price
table does not know shows up (give it a price with `ccany-config price`)."""

from __future__ import annotations

from typing import Any

from ccany_addon.web.query_parts import HOUR, MODEL, WINDOW

COST = "round(coalesce(sum(cost_usd), 0), 6) AS cost_usd"
UNPRICED = ("sum(cost_usd IS NULL AND (coalesce(input_tokens, 0) + coalesce(output_tokens, 0) "
            "+ coalesce(cache_read_input_tokens, 0)) > 0) AS unpriced")


def _spend_by(label: str, expression: str, where: str = "") -> str:
    return f"""SELECT
  {expression} AS {label},
  count(*) AS requests,
  {COST},
  round(coalesce(avg(cost_usd), 0), 6) AS avg_cost_usd,
  coalesce(sum(input_tokens), 0) AS input_tokens,
  coalesce(sum(output_tokens), 0) AS output_tokens,
  coalesce(sum(cache_read_input_tokens), 0) AS cache_read_input_tokens,
  {UNPRICED},
  min(started_at) AS first_seen,
  max(started_at) AS last_seen
FROM flows
WHERE {WINDOW}{where}
GROUP BY {label}
ORDER BY cost_usd DESC, requests DESC
LIMIT 200"""


SPEND_QUERIES: dict[str, dict[str, Any]] = {
    "spend_per_hour": {
        "title": "Spend per hour",
        "description": "USD per UTC hour and model (the upstream model, else the requested one), over the last "
        ":days days of traffic (blank = 7); `unpriced`: flows with tokens but no known price.",
        "sql": f"""SELECT
  {HOUR} AS hour,
  {MODEL} AS model,
  count(*) AS requests,
  {COST},
  {UNPRICED}
FROM flows
WHERE {WINDOW}
GROUP BY hour, model
ORDER BY hour, model""",
    },
    "spend_by_model": {
        "title": "Spend by model and provider",
        "description": "USD and tokens per upstream model and provider over the last :days days of traffic "
        "(blank = 7), with the prices used (`price_source`).",
        "sql": _spend_by("model", f"{MODEL} || ' · ' || coalesce(provider, '(none)')").replace(
            "  min(started_at) AS first_seen,", "  group_concat(DISTINCT price_source) AS price_sources,\n"
            "  min(started_at) AS first_seen,"),
    },
    "spend_by_provider": {
        "title": "Spend by provider",
        "description": "USD per provider over the last :days days of traffic (blank = 7).",
        "sql": _spend_by("provider", "coalesce(provider, '(none)')"),
    },
    "spend_by_client_key": {
        "title": "Spend by client key",
        "description": "USD per client access key (its id in the config DB's client_keys) over the last :days days "
        "of traffic (blank = 7); `(none)`: flows without a key (loopback clients of a gateway with no keys).",
        "sql": _spend_by("client_key_id", "coalesce(client_key_id, '(none)')"),
    },
    "spend_by_user": {
        "title": "Spend by user",
        "description": "USD per user owning the client keys (config DB `client_keys.user_id`) over the last :days "
        "days of traffic (blank = 7); `(none)`: keys without an owner, and flows without a key.",
        "sql": _spend_by("client_user", "coalesce(client_user, '(none)')"),
    },
    "spend_by_session": {
        "title": "Spend by Claude Code session",
        "description": "USD per Claude Code session (X-Claude-Code-Session-Id) over the last :days days of traffic "
        "(blank = 7), the most expensive first.",
        "sql": _spend_by("session_id", "session_id", " AND session_id IS NOT NULL"),
    },
}

SPEND_CHARTS: list[dict[str, Any]] = [
    {
        "id": "spend",
        "title": "Spend per hour by model, USD",
        "query": "spend_per_hour",
        "kind": "timelines",
        "x": "hour",
        "y": ["cost_usd"],
        "series": "model",
        "unit": "$",
        "empty": "No priced flows yet",
    },
    {
        "id": "spend-by-provider",
        "title": "Spend by provider, USD",
        "query": "spend_by_provider",
        "kind": "hbars",
        "label": "provider",
        "y": ["cost_usd"],
        "unit": "$",
        "empty": "No priced flows yet",
    },
]
