"""The dashboard, the flow page, links from request ids, pretty JSON cells and search, in-process."""

from __future__ import annotations

import html
import json
import re
from pathlib import Path

import markupsafe

from tests.datasette.app import STATIC_DIR
from tests.datasette.conftest import (
    EVIL,
    SEARCH_WORD,
    FlowLog,
    fetch,
    fetch_one,
    flow,
    section,
    write_flow_log,
)

REQUEST_ID = re.compile(r"req_[0-9a-f]{32}")


def assert_escaped(page: str) -> None:
    assert "<script>alert" not in page
    assert "<img src=x" not in page
    assert "&lt;script&gt;alert(" in page


def test_dashboard(flow_log: FlowLog) -> None:
    page = fetch_one(flow_log.path, "/-/dashboard")
    assert page.status_code == 200
    text = page.text
    assert re.search(r'<script src="/-/ccany-static/ccany\.js\?_hash=\w+" defer></script>', text)
    charts = re.findall(r'<figure class="ccany-chart" id="chart-([\w-]+)"', text)
    assert charts == ["requests", "tokens", "spend", "spend-by-provider", "latency", "ttft", "prompt-cache", "errors"]
    assert 'data-charts-total="8"' in text
    for name in ["requests_per_hour", "tokens_per_hour_by_model", "spend_per_hour", "spend_by_provider",
                 "latency_by_model", "prompt_cache_by_model", "errors_by_type"]:
        assert f'data-url="/ccany/{name}.json?_shape=array"' in text
    for name in ["usage_by_model", "latency_by_provider", "slowest_flows", "sessions", "session_turns",
                 "spend_by_model", "spend_by_client_key", "spend_by_session"]:
        assert f'<a href="/ccany/{name}">' in text
    assert '<a href="/ccany/flows">All flows</a>' in text
    # The search box leads to the flows table's full-text search.
    assert '<input id="ccany-search-input" type="search" name="_search"' in text
    assert '<form class="ccany-search" action="/ccany/flows" method="get"' in text
    recent = [row for row in flow_log.rows if row["started_at"] >= "2025-05-25"]
    assert f"<strong>{len(recent)}</strong> flows" in text
    spent = sum(row.get("cost_usd") or 0 for row in recent)
    assert 0.01 < spent < 1 and f"<strong>${spent:.4f}</strong> spent" in text
    assert "No flows yet" not in text.replace('data-empty="No flows yet"', "")


def test_dashboard_days_reach_the_queries(flow_log: FlowLog) -> None:
    text = fetch_one(flow_log.path, "/-/dashboard?days=30").text
    assert 'data-url="/ccany/requests_per_hour.json?_shape=array&amp;days=30.0"' in text
    assert f"<strong>{len(flow_log.rows)}</strong> flows" in text


def test_dashboard_of_an_empty_log_says_so(tmp_path: Path) -> None:
    log = write_flow_log(tmp_path / "ccany.db", [])
    page = fetch_one(log.path, "/-/dashboard")
    assert page.status_code == 200
    assert '<p class="ccany-empty ccany-no-flows">No flows yet.' in page.text


def test_dashboard_without_a_flow_log(tmp_path: Path) -> None:
    from sqlite_utils import Database

    Database(tmp_path / "other.db")["t"].insert({"a": 1})
    page = fetch_one(tmp_path / "other.db", "/-/dashboard")
    assert page.status_code == 200
    assert "none of the attached databases has a <code>flows</code> table" in page.text


def test_static_files_are_served_locally(flow_log: FlowLog) -> None:
    js, css, table = fetch(
        flow_log.path, paths=["/-/ccany-static/ccany.js", "/-/ccany-static/ccany.css", "/ccany/flows"]
    )
    assert js.status_code == css.status_code == 200
    assert js.text == (STATIC_DIR / "ccany.js").read_text()
    assert "pre.ccany-json" in css.text
    assert re.search(r'<link rel="stylesheet" href="/-/ccany-static/ccany\.css\?_hash=\w+">', table.text)
    for name in ["ccany.js", "ccany.css"]:  # nothing fetched from elsewhere
        assert not re.search(r"https?://", (STATIC_DIR / name).read_text().replace("http://www.w3.org/2000/svg", ""))


def test_flow_page_shows_the_four_panes(flow_log: FlowLog) -> None:
    row = flow(flow_log, client_model="claude-sonnet-4-20250514", is_stream=1, status_code=200)
    page = fetch_one(flow_log.path, f"/-/flow/{row['id']}")
    assert page.status_code == 200
    text = page.text
    panes = re.findall(r'<article class="ccany-pane" id="pane-([\w-]+)">', text)
    assert panes == ["client-request", "upstream-request", "upstream-response", "client-response"]
    # JSON bodies pretty-printed (2-space indent), SSE shown as text.
    client_request = section(text, "pane-client-request")
    assert 'class="ccany-body ccany-body-json"' in client_request
    assert f'\n  &#34;model&#34;: &#34;{row["client_model"]}&#34;,\n  &#34;max_tokens&#34;: 32000,' in client_request
    assert 'class="ccany-body ccany-body-json"' in section(text, "pane-upstream-request")
    upstream_response = section(text, "pane-upstream-response")
    assert 'class="ccany-body ccany-body-sse"' in upstream_response
    assert "data: [DONE]" in upstream_response
    client_response = section(text, "pane-client-response")
    assert "&#34;stop_reason&#34;: &#34;end_turn&#34;" in client_response
    # Headers as name/value rows.
    assert '<th scope="row">anthropic-version</th><td>2023-06-01</td>' in client_request
    assert f'<th scope="row">request-id</th><td>{row["id"]}</td>' in client_response
    # The summary fields.
    summary = text[text.index('<section class="ccany-flow-summary">') : text.index('<section class="ccany-timeline">')]
    for label, value in [("status", 200), ("client model", row["client_model"]), ("upstream model", "gpt-4.1"),
                         ("provider", "openai"), ("input tokens", row["input_tokens"]),
                         ("output tokens", row["output_tokens"]), ("time to first token", f"{row['ttft_ms']} ms"),
                         ("duration", f"{row['duration_ms']} ms")]:
        assert f"<dt>{label}</dt><dd>{value}</dd>" in summary, label
    assert f'<dt>cost</dt><dd title="fixture gpt-4.1">${row["cost_usd"]:.6f} <small>(fixture gpt-4.1)</small></dd>' \
        in summary
    # The stream's events, for the timeline chart.
    timeline = section(text, "ccany-events")
    events = json.loads(html.unescape(re.search(r'data-events="([^"]*)"', timeline).group(1)))
    assert events == json.loads(row["events"])
    assert f"{len(events)} events sent to the client" in timeline
    # Session navigation.
    assert f'href="/ccany/session_turns?session_id={row["session_id"]}"' in text


def test_flow_page_of_a_failed_flow(flow_log: FlowLog) -> None:
    row = flow(flow_log, error_type="timeout_error")
    text = fetch_one(flow_log.path, f"/-/flow/{row['id']}").text
    assert '<div class="ccany-flow-error">' in text
    assert "<strong>timeout_error</strong>: upstream timed out after 600 s" in text
    assert "Not a stream: no events" in text or "No stream events recorded" in text
    assert "&#34;type&#34;: &#34;error&#34;" in section(text, "pane-client-response")


def test_flow_page_escapes_everything(flow_log: FlowLog) -> None:
    hostile = flow(flow_log, upstream_response="not json at all " + EVIL)
    text = fetch_one(flow_log.path, f"/-/flow/{hostile['id']}").text
    assert_escaped(text)
    assert str(markupsafe.escape(EVIL)) in section(text, "pane-upstream-response")  # plain text shown as text
    assert f'<th scope="row">x-evil</th><td>{str(markupsafe.escape(EVIL))}</td>' in text
    # In JSON the quotes are backslash-escaped first, then HTML-escaped.
    assert str(markupsafe.escape(json.dumps(EVIL)[1:-1])) in section(text, "pane-client-request")
    failed = flow(flow_log, error_type="invalid_request_error")
    assert_escaped(fetch_one(flow_log.path, f"/-/flow/{failed['id']}").text)


def test_unknown_flow_is_404(flow_log: FlowLog) -> None:
    missing, redirect, odd = fetch(
        flow_log.path, paths=["/-/flow/req_" + "0" * 32, "/-/flow/%3Cscript%3E", "/-/flow/~3Cscript~3E"]
    )
    assert missing.status_code == 404
    assert "No flow with id req_00000000000000000000000000000000" in missing.text
    assert (redirect.status_code, redirect.headers["location"]) == (302, "/-/flow/~3Cscript~3E")  # Datasette's own
    assert odd.status_code == 404
    assert "No flow with id &lt;script&gt;" in odd.text


def test_request_ids_link_to_flow_pages_in_the_table(flow_log: FlowLog) -> None:
    page = fetch_one(flow_log.path, "/ccany/flows?_size=100")
    assert page.status_code == 200
    linked = set(re.findall(r'<a class="ccany-flow-link ccany-flow-open" href="/-/flow/(req_[0-9a-f]{32})"', page.text))
    assert linked == {row["id"] for row in flow_log.rows}
    # Newest first by default.
    ids = re.findall(r'href="/ccany/flows/(req_[0-9a-f]{32})"', page.text)
    assert ids[0] == max(flow_log.rows, key=lambda row: row["started_at"])["id"]


def test_request_ids_link_to_flow_pages_in_query_results(flow_log: FlowLog) -> None:
    slowest, errors, sql = fetch(
        flow_log.path,
        paths=[
            "/ccany/slowest_flows",
            "/ccany/errors_by_type",
            "/ccany/-/query?sql=select+id,+'req_'+||+'" + "ab" * 16 + "'+as+other+from+flows+limit+3",
        ],
    )
    for page in (slowest, errors, sql):
        assert page.status_code == 200, page.text[:500]
    assert len(re.findall(r'<a class="ccany-flow-link" href="/-/flow/req_[0-9a-f]{32}">', slowest.text)) == len(
        [row for row in flow_log.rows if row["started_at"] >= "2025-05-25"]
    )
    latest_timeout = flow(flow_log, error_type="timeout_error")["id"]
    assert f'<a class="ccany-flow-link" href="/-/flow/{latest_timeout}">{latest_timeout}</a>' in errors.text
    assert sql.text.count('href="/-/flow/req_' + "ab" * 16 + '"') == 3
    assert_escaped(errors.text)  # the invalid request's message


def test_session_ids_link_to_their_turns(flow_log: FlowLog) -> None:
    page = fetch_one(flow_log.path, "/ccany/sessions")
    session = flow_log.rows[0]["session_id"]
    assert f'<a href="/ccany/session_turns?session_id={session}"' in page.text


def test_json_columns_are_pretty_printed(inline_flow_log: FlowLog) -> None:
    """Bodies kept inline (rows written before the parts store) are JSON cells like the headers."""
    log = inline_flow_log
    row = flow(log, client_model="claude-sonnet-4-20250514", is_stream=1, status_code=200)
    table, row_page = fetch(log.path, paths=[f"/ccany/flows?id={row['id']}", f"/ccany/flows/{row['id']}"])
    for page in (table, row_page):
        assert page.status_code == 200
        assert '<td class="col-client_request type-str"><pre class="ccany-json">{\n  &#34;model&#34;' in page.text
        assert '<pre class="ccany-json">{\n  &#34;content-type&#34;: &#34;application/json&#34;' in page.text
        assert "<pre class=\"ccany-json\">[\n  [" in page.text  # events, one per line
        assert "<script>alert" not in page.text
    # Cut in the table view, whole on the row page.
    table_cell = re.search(r'<td class="col-client_request type-str">(.*?)</td>', table.text, re.S).group(1)
    row_cell = re.search(r'<td class="col-client_request type-str">(.*?)</td>', row_page.text, re.S).group(1)
    assert table_cell.endswith("\u2026</pre>") or len(html.unescape(table_cell)) <= 1100
    assert json.loads(html.unescape(row_cell.removeprefix('<pre class="ccany-json">').removesuffix("</pre>"))) == (
        json.loads(row["client_request"])
    )


def test_table_view_escapes_bodies(flow_log: FlowLog, inline_flow_log: FlowLog) -> None:
    for log in (flow_log, inline_flow_log):
        hostile = flow(log, upstream_response="not json at all " + EVIL)
        text = fetch_one(log.path, f"/ccany/flows?id={hostile['id']}").text
        assert_escaped(text)


def test_search_finds_a_flow_by_a_word_of_its_conversation(flow_log: FlowLog) -> None:
    (expected,) = [row for row in flow_log.rows if SEARCH_WORD in row["conversation"]]
    page, data = fetch(
        flow_log.path,
        paths=[f"/ccany/flows?_search={SEARCH_WORD}", f"/ccany/flows.json?_search={SEARCH_WORD}&_shape=array"],
    )
    assert page.status_code == 200
    assert [row["id"] for row in data.json()] == [expected["id"]]
    assert 'name="_search"' in page.text  # Datasette found flows_fts and offers the search box
    assert f'href="/-/flow/{expected["id"]}"' in page.text
    # Porter stemming: "flamingos" finds it too; a word nobody wrote finds nothing.
    (plural, nothing) = fetch(
        flow_log.path,
        paths=["/ccany/flows.json?_search=flamingos&_shape=array", "/ccany/flows.json?_search=zebra&_shape=array"],
    )
    assert [row["id"] for row in plural.json()] == [expected["id"]]
    assert nothing.json() == []


def test_menu_links_to_the_dashboard(flow_log: FlowLog) -> None:
    assert '<li><a href="/-/dashboard">Flow dashboard</a></li>' in fetch_one(flow_log.path, "/").text
