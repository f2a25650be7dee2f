"""The SQL pieces every flow-log query is built from (the stored queries, the spend queries, the fleet's).

Times are UTC text `YYYY-MM-DD HH:MM:SS.mmm`, so `substr(started_at, 1, 13)` is the hour. Aggregates cover the last
:days days (blank = 7) before the newest flow, not before now: an idle gateway still shows its last week of traffic.
"""

DEFAULT_DAYS = 7
WINDOW = (
    "started_at >= (SELECT datetime(max(started_at), "
    f"'-' || CAST(coalesce(nullif(:days, ''), {DEFAULT_DAYS}) AS REAL) || ' days') FROM flows)"
)
IS_ERROR = "(error_type IS NOT NULL OR status_code >= 400)"
MODEL = "coalesce(upstream_model, client_model, '(unknown)')"
HOUR = "substr(started_at, 1, 13) || ':00'"
