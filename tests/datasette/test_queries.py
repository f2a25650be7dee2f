"""The stored queries return the right numbers: every expected value is computed here, in Python, from the
fixture rows."""

from __future__ import annotations

import math
from collections import defaultdict
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from tests.datasette.conftest import SESSIONS, FlowLog, fetch, rows_of, write_flow_log

QUERY_NAMES = [
    "requests_per_hour",
    "tokens_per_hour_by_model",
    "usage_by_model",
    "latency_by_model",
    "latency_by_provider",
    "errors_by_type",
    "slowest_flows",
    "sessions",
    "session_turns",
    "prompt_cache_by_model",
    "prompt_cache_breaks",
]


def when(row: dict) -> datetime:
    return datetime.strptime(row["started_at"], "%Y-%m-%d %H:%M:%S.%f")


def window(rows: list[dict], days: float = 7) -> list[dict]:
    """Flows of the `days` days before the newest flow (to the second, as SQLite's datetime() gives it)."""
    cutoff = max(map(when, rows)).replace(microsecond=0) - timedelta(days=days)
    return [row for row in rows if when(row) >= cutoff]


def is_error(row: dict) -> bool:
    return row["error_type"] is not None or (row["status_code"] or 0) >= 400


def model(row: dict) -> str:
    return row["upstream_model"] or row["client_model"] or "(unknown)"


def nearest_rank(values: list[float], p: int) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[math.ceil(p * len(ordered) / 100) - 1]


def total(rows: list[dict], column: str) -> int:
    return sum(row[column] or 0 for row in rows)


def query(log: FlowLog, name: str, **params: str) -> list[dict]:
    extra = "".join(f"&{key}={value}" for key, value in params.items())
    return rows_of(log.path, f"/{log.name}/{name}.json?_shape=array{extra}")


def test_fixture_spans_hours_models_errors_and_an_old_flow(flow_log: FlowLog) -> None:
    recent = window(flow_log.rows)
    assert len(recent) == len(flow_log.rows) - 1, "the twelve-day-old flow is outside the default window"
    assert len({row["started_at"][:13] for row in recent}) == 3
    assert len({model(row) for row in recent}) == 4  # three upstream models and one failure before routing
    assert sum(map(is_error, recent)) == 6


def test_requests_per_hour(flow_log: FlowLog) -> None:
    hours: dict[str, list[dict]] = defaultdict(list)
    for row in window(flow_log.rows):
        hours[row["started_at"][:13] + ":00"].append(row)
    expected = [
        {
            "hour": hour,
            "requests": len(rows),
            "streamed": sum(row["is_stream"] for row in rows),
            "errors": sum(map(is_error, rows)),
            "input_tokens": total(rows, "input_tokens"),
            "output_tokens": total(rows, "output_tokens"),
            "cache_read_input_tokens": total(rows, "cache_read_input_tokens"),
        }
        for hour, rows in sorted(hours.items())
    ]
    assert query(flow_log, "requests_per_hour") == expected
    assert [row["hour"] for row in expected] == ["2025-06-01 09:00", "2025-06-01 10:00", "2025-06-01 11:00"]


def test_days_parameter_widens_the_window(flow_log: FlowLog) -> None:
    hours = [row["hour"] for row in query(flow_log, "requests_per_hour", days="30")]
    assert hours == ["2025-05-20 09:00", "2025-06-01 09:00", "2025-06-01 10:00", "2025-06-01 11:00"]
    assert query(flow_log, "slowest_flows", days="30")[0]["duration_ms"] == 99999.0
    assert all(row["duration_ms"] != 99999.0 for row in query(flow_log, "slowest_flows"))


def test_tokens_per_hour_by_model(flow_log: FlowLog) -> None:
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for row in window(flow_log.rows):
        groups[(row["started_at"][:13] + ":00", model(row))].append(row)
    expected = [
        {
            "hour": hour,
            "model": name,
            "requests": len(rows),
            "input_tokens": total(rows, "input_tokens"),
            "output_tokens": total(rows, "output_tokens"),
            "cache_read_input_tokens": total(rows, "cache_read_input_tokens"),
            "total_tokens": total(rows, "input_tokens") + total(rows, "output_tokens"),
        }
        for (hour, name), rows in sorted(groups.items())
    ]
    assert query(flow_log, "tokens_per_hour_by_model") == expected


def test_usage_by_model(flow_log: FlowLog) -> None:
    groups: dict[str, list[dict]] = defaultdict(list)
    for row in window(flow_log.rows):
        groups[model(row)].append(row)
    got = {row["model"]: row for row in query(flow_log, "usage_by_model")}
    assert set(got) == set(groups)
    for name, rows in groups.items():
        assert got[name]["requests"] == len(rows)
        assert got[name]["errors"] == sum(map(is_error, rows))
        assert got[name]["input_tokens"] == total(rows, "input_tokens")
        assert got[name]["output_tokens"] == total(rows, "output_tokens")
        assert got[name]["last_seen"] == max(row["started_at"] for row in rows)
    assert [row["model"] for row in query(flow_log, "usage_by_model")][0] == "gpt-4.1"  # busiest first


@pytest.mark.parametrize(("name", "key"), [("latency_by_model", "model"), ("latency_by_provider", "provider")])
def test_latency_percentiles(flow_log: FlowLog, name: str, key: str) -> None:
    groups: dict[str, list[dict]] = defaultdict(list)
    for row in window(flow_log.rows):
        if not is_error(row):
            label = model(row) if key == "model" else (row["provider"] or "(none)")
            groups[label].append(row)
    got = {row[key]: row for row in query(flow_log, name)}
    assert set(got) == set(groups)
    assert len(got) >= 2
    for label, rows in groups.items():
        durations = [row["duration_ms"] for row in rows if row["duration_ms"] is not None]
        ttfts = [row["ttft_ms"] for row in rows if row["ttft_ms"] is not None]
        assert got[label]["flows"] == len(rows)
        assert got[label]["ttft_flows"] == len(ttfts)
        for p in (50, 90, 99):
            assert got[label][f"p{p}_ms"] == pytest.approx(nearest_rank(durations, p), abs=0.05), (label, p)
            assert got[label][f"ttft_p{p}_ms"] == pytest.approx(nearest_rank(ttfts, p), abs=0.05), (label, p)
        assert got[label]["max_ms"] == pytest.approx(max(durations), abs=0.05)
        assert got[label]["p50_ms"] <= got[label]["p90_ms"] <= got[label]["p99_ms"] <= got[label]["max_ms"]


def test_percentiles_of_a_known_series(tmp_path: Path, flow_log: FlowLog) -> None:
    """Ten flows of 100..1000 ms: nearest rank gives p50 = 500, p90 = 900, p99 = 1000; NULL ttfts are skipped."""
    rows = []
    for n, template in enumerate(flow_log.rows[1:11]):
        rows.append({**template, "upstream_model": "m", "provider": "p", "status_code": 200, "error_type": None,
                     "duration_ms": 100.0 * (n + 1), "ttft_ms": None if n % 2 else 10.0 * (n + 1)})
    log = write_flow_log(tmp_path / "series.db", rows)
    (got,) = query(log, "latency_by_model")
    assert (got["p50_ms"], got["p90_ms"], got["p99_ms"], got["max_ms"]) == (500.0, 900.0, 1000.0, 1000.0)
    # ttft 10, 30, 50, 70, 90: ranks ceil(2.5) = 3, ceil(4.5) = 5, ceil(4.95) = 5
    assert (got["ttft_flows"], got["ttft_p50_ms"], got["ttft_p90_ms"], got["ttft_p99_ms"]) == (5, 50.0, 90.0, 90.0)


def test_errors_by_type(flow_log: FlowLog) -> None:
    groups: dict[str, list[dict]] = defaultdict(list)
    for row in window(flow_log.rows):
        if is_error(row):
            groups[row["error_type"] or f"http_{row['status_code']}"].append(row)
    got = query(flow_log, "errors_by_type")
    assert [row["error_type"] for row in got][0] == "rate_limit_error"  # the most frequent first
    got_by_type = {row["error_type"]: row for row in got}
    assert set(got_by_type) == {"rate_limit_error", "api_error", "timeout_error", "invalid_request_error", "http_502"}
    assert set(got_by_type) == set(groups)
    for error_type, rows in groups.items():
        latest = max(rows, key=lambda row: row["started_at"])
        assert got_by_type[error_type]["flows"] == len(rows)
        assert got_by_type[error_type]["latest_id"] == latest["id"]
        assert got_by_type[error_type]["last_seen"] == latest["started_at"]
        assert {int(code) for code in str(got_by_type[error_type]["status_codes"]).split(",")} == {
            row["status_code"] for row in rows
        }


def test_slowest_flows(flow_log: FlowLog) -> None:
    recent = [row for row in window(flow_log.rows) if row["duration_ms"] is not None]
    expected = sorted(recent, key=lambda row: row["duration_ms"], reverse=True)[:50]
    got = query(flow_log, "slowest_flows")
    assert [row["id"] for row in got] == [row["id"] for row in expected]
    assert [row["duration_ms"] for row in got] == [row["duration_ms"] for row in expected]


def test_session_turns_in_order(flow_log: FlowLog) -> None:
    for session in SESSIONS:
        expected = sorted((row for row in flow_log.rows if row["session_id"] == session), key=when)
        got = query(flow_log, "session_turns", session_id=session)
        assert [row["id"] for row in got] == [row["id"] for row in expected]
        assert [row["turn"] for row in got] == list(range(1, len(expected) + 1))
        assert [row["input_tokens"] for row in got] == [row["input_tokens"] for row in expected]
        assert [(row["request_class"], row["agent_id"]) for row in got] == [
            (row.get("request_class"), row.get("agent_id")) for row in expected]
    assert query(flow_log, "session_turns", session_id="no-such-session") == []


def test_sessions(flow_log: FlowLog) -> None:
    got = {row["session_id"]: row for row in query(flow_log, "sessions")}
    assert set(got) == set(SESSIONS)
    for session in SESSIONS:
        rows = [row for row in window(flow_log.rows) if row["session_id"] == session]
        assert got[session]["turns"] == len(rows)
        assert got[session]["errors"] == sum(map(is_error, rows))
        assert got[session]["output_tokens"] == total(rows, "output_tokens")


def test_prompt_cache_by_model(flow_log: FlowLog) -> None:
    """Over the turns that followed an earlier one of their session (cache forensics, from writing the fixture
    through BodyPacker): the share of upstream prompt bytes shared with the previous request, per model."""
    groups: dict[str, list[dict]] = defaultdict(list)
    for row in window(flow_log.stored):
        if row.get("upstream_prefix_bytes") is not None:
            groups[f"{model(row)} · {row['provider'] or '(none)'}"].append(row)
    assert groups, "the fixture has session turns that followed an earlier one"
    expected = sorted(
        ({"model": name, "requests": len(rows),
          "prefix_share_pct": pytest.approx(
              100 * total(rows, "upstream_prefix_bytes") / total(rows, "upstream_prompt_bytes"), abs=0.051),
          "cached_share_pct": pytest.approx(100 * total(rows, "cache_read_input_tokens") / (
              total(rows, "input_tokens") + total(rows, "cache_read_input_tokens")
              + total(rows, "cache_creation_input_tokens")), abs=0.051)}
         for name, rows in groups.items()), key=lambda row: row["model"])
    got = query(flow_log, "prompt_cache_by_model")
    assert [row["requests"] for row in got] == sorted((row["requests"] for row in got), reverse=True)
    assert sorted(got, key=lambda row: row["model"]) == expected


def average_share(rows: list[dict]) -> object:
    """SQL's avg(): over the rows that have a share (a turn may have client-side forensics only)."""
    shares = [100 * row["upstream_prefix_bytes"] / row["upstream_prompt_bytes"] for row in rows
              if row.get("upstream_prefix_bytes") is not None and row.get("upstream_prompt_bytes")]
    return pytest.approx(sum(shares) / len(shares), abs=0.051) if shares else None


def test_prompt_cache_breaks(flow_log: FlowLog) -> None:
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for row in window(flow_log.stored):
        if row.get("prefix_parts") is not None or row.get("upstream_prefix_parts") is not None:
            groups[(model(row), row.get("prefix_break") or "(only added)",
                    row.get("upstream_prefix_break") or "(only added)")].append(row)
    assert any(key[1] != "(only added)" for key in groups), "some turn changed an earlier message"

    def order(row: dict) -> tuple:
        return row["model"], row["client_break"], row["upstream_break"]

    expected = sorted(({"model": key[0], "client_break": key[1], "upstream_break": key[2], "requests": len(rows),
                        "avg_prefix_share_pct": average_share(rows)} for key, rows in groups.items()), key=order)
    got = query(flow_log, "prompt_cache_breaks")
    assert sorted(got, key=order) == expected


def test_queries_belong_to_whichever_database_holds_flows(tmp_path: Path, flow_log: FlowLog) -> None:
    """The flow DB is found by its `flows` table, whatever the file is called; other databases get nothing."""
    from sqlite_utils import Database

    other = Database(tmp_path / "notes.db")
    other["notes"].insert({"text": "not a flow log"})
    other.close()
    log = write_flow_log(tmp_path / "gateway-log.db", flow_log.rows)
    paths = [f"/gateway-log/{name}.json?_shape=array&session_id=x" for name in QUERY_NAMES]
    responses = fetch(tmp_path / "notes.db", log.path, paths=[*paths, "/notes/requests_per_hour.json", "/-/dashboard"])
    for name, response in zip(QUERY_NAMES, responses, strict=False):
        assert response.status_code == 200, (name, response.text[:500])
        assert isinstance(response.json(), list)
    assert responses[len(QUERY_NAMES)].status_code == 404
    assert "/gateway-log/requests_per_hour.json" in responses[-1].text


def test_empty_log_gives_empty_results(tmp_path: Path) -> None:
    log = write_flow_log(tmp_path / "empty.db", [])
    responses = fetch(log.path, paths=[f"/empty/{name}.json?_shape=array" for name in QUERY_NAMES])
    assert [response.status_code for response in responses] == [200] * len(QUERY_NAMES)
    assert [response.json() for response in responses] == [[]] * len(QUERY_NAMES)
