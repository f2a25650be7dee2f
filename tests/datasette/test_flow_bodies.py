"""Bodies stored as parts (flow DB schema 7) in Datasette: the flow page and its JSON download show them whole, SQL
puts them together (`ccany_body()`, the `flow_bodies` view), a table shows a manifest as its number of parts, rows
written inline by the previous version read the same, and the prompt-cache forensics reach the flow page and the
stored queries."""

from __future__ import annotations

import csv
import html
import io
import json
import random
import re
import sqlite3
import subprocess
import time
import zlib
from datetime import datetime
from pathlib import Path
from unittest import mock
from urllib.parse import quote, urlencode

import httpx
import pytest

from ccany_addon.flowlog import part_store
from ccany_addon.flowlog.part_compression import DICTIONARY
from ccany_addon.flowlog.parts import WHOLE_PART_MIN
from ccany_addon.flowlog.schema import BODY_MANIFESTS
from tests.datasette.conftest import (
    ROOT,
    ROUTES,
    FlowLog,
    Server,
    _flow,
    build_flows,
    fetch,
    fetch_one,
    flow,
    free_port,
    rows_of,
    section,
    stop_server,
    write_flow_log,
)

# What a row keeps as parts since schema 7: the four bodies (a pane each on the flow page), the stream timeline and
# the searchable text.
PANES = ("client_request", "upstream_request", "upstream_response", "client_response")
BODIES = tuple(BODY_MANIFESTS)
MANIFESTS = BODY_MANIFESTS
FORENSICS = ("prefix_parts", "prefix_break", "upstream_prefix_parts", "upstream_prefix_break",
             "upstream_prefix_bytes", "upstream_prompt_bytes")


def value(text: str | None) -> object:
    """What a body stands for: a JSON body comes back re-serialized (the same value, other whitespace), any other
    body byte for byte."""
    if text is None:
        return None
    try:
        parsed = json.loads(text)
    except ValueError:
        return text
    return parsed if isinstance(parsed, dict | list) else text


def pane_body(page: str, name: str) -> tuple[str, str | None]:
    """A flow page's body of `name`: (its kind, its text), ("empty", None) when none was recorded."""
    found = re.search(r'<pre class="ccany-body ccany-body-(\w+)">(.*?)</pre>', section(page, pane_id(name)), re.S)
    return (found.group(1), html.unescape(found.group(2))) if found else ("empty", None)


def pane_id(name: str) -> str:
    return "pane-" + name.replace("_", "-")


def sql_json(log: FlowLog, sql: str, **params: str) -> list[dict]:
    return rows_of(log.path, f"/{log.name}/-/query.json?" + urlencode({"sql": sql, **params, "_shape": "array"}))


def test_the_fixture_is_stored_as_parts_and_the_inline_one_is_not(flow_log: FlowLog, inline_flow_log: FlowLog) -> None:
    columns = ", ".join([*BODIES, *MANIFESTS.values()])
    with sqlite3.connect(flow_log.path) as conn:
        packed = {row[0]: row[1:] for row in conn.execute(f"SELECT id, {columns} FROM flows")}
        assert conn.execute("SELECT count(*) FROM parts").fetchone()[0] > len(flow_log.rows)
    with sqlite3.connect(inline_flow_log.path) as conn:
        inline = {row[0]: row[1:] for row in conn.execute(f"SELECT id, {columns} FROM flows")}
        assert conn.execute("SELECT count(*) FROM parts").fetchone()[0] == 0
    count = len(BODIES)
    for row in flow_log.rows:
        assert packed[row["id"]][:count] == (None,) * count
        assert [manifest is None for manifest in packed[row["id"]][count:]] == [row[name] is None for name in BODIES]
        assert inline[row["id"]] == (*(row[name] for name in BODIES), *(None,) * count)


def test_flow_page_shows_the_four_bodies_of_a_parts_row_pretty_printed(flow_log: FlowLog) -> None:
    plain = flow(flow_log, is_stream=0, status_code=200, error_type=None)
    text = fetch_one(flow_log.path, f"/-/flow/{plain['id']}").text
    for name in PANES:
        kind, body = pane_body(text, name)
        assert kind == "json", name
        assert body.startswith('{\n  "') and '\n  "' in body, name  # indented, one field a line
        assert json.loads(body) == json.loads(plain[name]), name
    assert f'\n  "model": "{plain["client_model"]}",\n  "max_tokens": 32000,' in pane_body(text, "client_request")[1]
    streamed = flow(flow_log, is_stream=1, status_code=200, error_type=None)
    assert pane_body(fetch_one(flow_log.path, f"/-/flow/{streamed['id']}").text, "upstream_response") == (
        "sse", streamed["upstream_response"])  # a text body comes back byte for byte


def test_rows_written_inline_by_the_previous_version_read_the_same(flow_log: FlowLog,
                                                                   inline_flow_log: FlowLog) -> None:
    """Every flow's page shows the same four panes (headers and bodies) from the parts and from the inline DB, and
    its download has the same bodies."""
    ids = [row["id"] for row in flow_log.rows]
    paths = [f"/-/flow/{flow_id}" for flow_id in ids] + [f"/-/flow/{flow_id}.json" for flow_id in ids]
    from_parts, from_inline = fetch(flow_log.path, paths=paths), fetch(inline_flow_log.path, paths=paths)
    for path, packed, inline in zip(paths, from_parts, from_inline, strict=True):
        assert packed.status_code == inline.status_code == 200, path
        if path.endswith(".json"):
            assert {key: item for key, item in packed.json().items() if key not in FORENSICS} == {
                key: item for key, item in inline.json().items() if key not in FORENSICS}, path
            continue
        for name in PANES:
            assert section(packed.text, pane_id(name)) == section(inline.text, pane_id(name)), (path, name)
    row = flow(flow_log, status_code=502)  # a body that is not JSON
    assert pane_body(from_inline[ids.index(row["id"])].text, "client_response") == ("text", "Bad Gateway")


def _zlib_as_stored_before(data: bytes) -> bytes:
    """A part as the versions before zstd compressed it: zlib level 6, memLevel 5, primed with the dictionary."""
    compressor = zlib.compressobj(6, zlib.DEFLATED, zlib.MAX_WBITS, 5, zdict=DICTIONARY)
    return compressor.compress(data) + compressor.flush()


def test_parts_compressed_with_zlib_by_the_previous_version_read_the_same(flow_log: FlowLog, tmp_path: Path) -> None:
    """A DB whose parts the previous version wrote (zlib) shows every flow's page, download and SQL body as one
    written now (zstd) does."""
    with mock.patch.object(part_store, "compress", _zlib_as_stored_before):
        old = write_flow_log(tmp_path / "ccany.db", build_flows())
    with sqlite3.connect(old.path) as conn:
        assert all(body[:1] == b"\x78" for (body,) in conn.execute("SELECT body FROM parts"))  # zlib, each
    ids = [row["id"] for row in flow_log.rows]
    paths = [f"/-/flow/{flow_id}" for flow_id in ids] + [f"/-/flow/{flow_id}.json" for flow_id in ids]
    for path, now, before in zip(paths, fetch(flow_log.path, paths=paths), fetch(old.path, paths=paths), strict=True):
        assert now.status_code == before.status_code == 200, path
        assert now.text == before.text, path
    sql = "select id, ccany_body(client_request, client_request_parts) as body from flows order by id"
    assert sql_json(old, sql) == sql_json(flow_log, sql)


def test_flow_download_has_the_bodies_whole_and_no_manifests(flow_log: FlowLog) -> None:
    rows = [flow(flow_log, is_stream=1, status_code=200, error_type=None), flow(flow_log, status_code=502),
            flow(flow_log, error_type="invalid_request_error")]  # streamed; a text body; no upstream request
    responses = fetch(flow_log.path, paths=[f"/-/flow/{row['id']}.json" for row in rows])
    for row, response in zip(rows, responses, strict=True):
        assert response.status_code == 200, response.text[:500]
        assert response.headers["content-type"].startswith("application/json")
        assert response.headers["content-disposition"] == f'attachment; filename="flow-{row["id"]}.json"'
        data = response.json()
        assert not set(MANIFESTS.values()) & set(data)
        assert {key for key in data if key.endswith("_parts")} <= {"prefix_parts", "upstream_prefix_parts"}
        assert data["id"] == row["id"] and data["started_at"] == row["started_at"]
        for name in BODIES:
            assert data[name] == value(row[name]), name
        assert data["client_request_headers"] == json.loads(row["client_request_headers"])
        assert data["conversation"] == row["conversation"]
    streamed = responses[0].json()
    assert isinstance(streamed["client_request"], dict) and streamed["upstream_response"].startswith("data: {")
    assert streamed["events"] == json.loads(rows[0]["events"])
    assert responses[1].json()["client_response"] == "Bad Gateway"
    assert responses[2].json()["upstream_request"] is None


def test_ccany_body_puts_a_body_together_in_sql(flow_log: FlowLog, inline_flow_log: FlowLog) -> None:
    columns = ", ".join(f"ccany_body({name}, {manifest}) AS {name}" for name, manifest in MANIFESTS.items())
    for log in (flow_log, inline_flow_log):
        for row in (flow(log, is_stream=1, status_code=200), flow(log, status_code=502)):
            (got,) = sql_json(log, f"SELECT id, {columns} FROM flows WHERE id = :id", id=row["id"])
            assert got["id"] == row["id"]
            for name in BODIES:
                assert value(got[name]) == value(row[name]), (log.path, name)
    streamed = flow(flow_log, is_stream=1, status_code=200)
    (only,) = sql_json(flow_log, "SELECT ccany_body(client_request, client_request_parts) AS body FROM flows "
                                 "WHERE id = :id", id=streamed["id"])
    assert json.loads(only["body"]) == json.loads(streamed["client_request"])
    assert sql_json(flow_log, "SELECT ccany_body(NULL, NULL) AS body") == [{"body": None}]


def test_the_flow_bodies_view(flow_log: FlowLog, inline_flow_log: FlowLog) -> None:
    for log in (flow_log, inline_flow_log):
        for row in (flow(log, is_stream=1, status_code=200), flow(log, error_type="invalid_request_error")):
            (got,) = rows_of(log.path, f"/{log.name}/flow_bodies.json?id={row['id']}&_shape=array")
            assert set(got) == {"id", "started_at", "session_id", *BODIES}
            assert (got["id"], got["started_at"], got["session_id"]) == (
                row["id"], row["started_at"], row["session_id"])
            for name in BODIES:
                assert value(got[name]) == value(row[name]), (log.path, name)


def test_the_table_shows_a_manifest_as_its_number_of_parts(flow_log: FlowLog) -> None:
    row = flow(flow_log, is_stream=1, status_code=200, error_type=None, provider="openai")
    table, row_page = fetch(flow_log.path, paths=[f"/ccany/flows?id={row['id']}", f"/ccany/flows/{row['id']}"])
    assert table.status_code == row_page.status_code == 200

    def cell(page: str, column: str) -> str:
        return re.search(rf'<td class="col-{column} [^"]*">(.*?)</td>', page, re.S).group(1)

    # the client's system block and message (and its metadata, when that is long enough to be a part of its own);
    # the upstream's system and user messages; each response whole
    metadata = json.loads(row["client_request"])["metadata"]
    client_parts = 2 + (len(json.dumps(metadata, separators=(",", ":"))) >= WHOLE_PART_MIN)
    expected = {"client_request": f"{client_parts} parts", "upstream_request": "2 parts", "upstream_response": "1 part",
                "client_response": "1 part"}
    for name, parts in expected.items():
        shown = cell(table.text, MANIFESTS[name])
        assert re.fullmatch(rf'<span class="ccany-parts" title="[^"]*">{parts}</span>', shown), (name, shown)
    # the row page shows the manifest itself
    manifest = cell(row_page.text, MANIFESTS["client_request"])
    assert manifest.startswith('<pre class="ccany-json">{\n  &#34;json&#34;: {')
    assert "ccany-parts" not in row_page.text


def test_search_finds_flows_of_both_kinds_of_rows(flow_log: FlowLog, inline_flow_log: FlowLog) -> None:
    expected = [row["id"] for row in flow_log.rows if "flamingo" in row["conversation"]]
    for log in (flow_log, inline_flow_log):
        assert [row["id"] for row in rows_of(log.path, "/ccany/flows.json?_search=flamingo&_shape=array")] == expected


# --- cache forensics: three turns of one Claude Code session --------------------------------------------------

SESSION = "c0ffee00-1111-4222-8333-444455556666"
BILLING = "x-anthropic-billing-header: cc_version=2.1.332.{}; cc_entrypoint=cli;"
SYSTEM = "You are Claude Code, Anthropic's official CLI for Claude."
TOOL = {"name": "Bash", "description": "Runs a shell command and returns what it printed. " * 6,
        "input_schema": {"type": "object", "properties": {"command": {"type": "string"}}, "required": ["command"]}}
CONVERSATION = [("user", "list the files"), ("assistant", "a.py and b.py"), ("user", "now read a.py"),
                ("assistant", "It prints hello."), ("user", "thanks")]
BILLING_HASHES = ["a1f", "a1f", "9c3"]  # the third turn's billing header differs: its system[0] changes


def size(element: object) -> int:
    return len(json.dumps(element, separators=(",", ":")).encode())


def client_body(turn: int) -> dict:
    said = CONVERSATION[:2 * turn + 1]
    messages = [{"role": role, "content": [{"type": "text", "text": text}]} for role, text in said]
    messages[-1]["content"][0]["cache_control"] = {"type": "ephemeral"}  # Claude Code moves it every turn
    return {"model": ROUTES[0][0], "max_tokens": 32000, "stream": True, "tools": [TOOL],
            "system": [{"type": "text", "text": BILLING.format(BILLING_HASHES[turn])},
                       {"type": "text", "text": SYSTEM, "cache_control": {"type": "ephemeral"}}],
            "messages": messages}


def upstream_body(turn: int) -> dict:
    tools = [{"type": "function", "function": {"name": TOOL["name"], "description": TOOL["description"],
                                               "parameters": TOOL["input_schema"]}}]
    messages = [{"role": "system", "content": SYSTEM}] + [
        {"role": role, "content": text} for role, text in CONVERSATION[:2 * turn + 1]]
    return {"model": ROUTES[0][1], "stream": True, "tools": tools, "messages": messages}


def shared_bytes(turn: int, elements: int) -> int:
    """Bytes of the upstream request's tools and its first `elements` messages."""
    body = upstream_body(turn)
    return size(body["tools"]) + sum(map(size, body["messages"][:elements]))


@pytest.fixture(scope="module")
def session_log(tmp_path_factory: pytest.TempPathFactory) -> FlowLog:
    rows = []
    for turn in range(3):
        row = _flow(random.Random(turn), turn, datetime(2025, 7, 1, 10, turn), ROUTES[0], stream=True,
                    session=SESSION, prompt=CONVERSATION[2 * turn][1], answer=CONVERSATION[2 * turn + 1][1]
                    if turn < 2 else "You're welcome.")
        row.update(client_request=json.dumps(client_body(turn)), upstream_request=json.dumps(upstream_body(turn)),
                   agent_id=None, request_class="main")
        rows.append(row)
    return write_flow_log(tmp_path_factory.mktemp("session") / "ccany.db", rows)


def test_a_session_turn_is_compared_with_the_one_before(session_log: FlowLog) -> None:
    first, second, third = (session_log.stored_row(row["id"]) for row in session_log.rows)
    assert [first.get(column) for column in FORENSICS[:5]] == [None] * 5  # nothing before it
    assert first["upstream_prompt_bytes"] == shared_bytes(0, 2)
    # tools, both system blocks and the first message are the same (cache_control moved on): only added to
    assert (second["prefix_parts"], second["prefix_break"]) == (4, None)
    assert (second["upstream_prefix_parts"], second["upstream_prefix_break"]) == (3, None)  # tools, system, user
    assert (second["upstream_prefix_bytes"], second["upstream_prompt_bytes"]) == (shared_bytes(1, 2),
                                                                                  shared_bytes(1, 4))
    # the billing header changed: the client's prefix ends after the tools; upstream it is not sent at all
    assert (third["prefix_parts"], third["prefix_break"]) == (1, "system[0] changed")
    assert (third["upstream_prefix_parts"], third["upstream_prefix_break"]) == (5, None)
    assert (third["upstream_prefix_bytes"], third["upstream_prompt_bytes"]) == (shared_bytes(2, 4),
                                                                                shared_bytes(2, 6))


def test_flow_page_shows_the_prompt_cache_prefix(session_log: FlowLog) -> None:
    pages = fetch(session_log.path, paths=[f"/-/flow/{row['id']}" for row in session_log.rows])
    assert all(page.status_code == 200 for page in pages)
    first, second, third = (page.text for page in pages)
    assert "ccany-flow-prefix" not in first
    stored = [session_log.stored_row(row["id"]) for row in session_log.rows]
    for text, row, client, upstream in [
        (second, stored[1], "4 parts shared; it only added to the previous one", "3 parts shared"),
        (third, stored[2], "1 part shared; first difference: <code>system[0] changed</code>", "5 parts shared"),
    ]:
        prefix = text[text.index('<div class="ccany-flow-prefix">'):]
        prefix = prefix[:prefix.index("</div>")]
        assert "Prompt-cache prefix" in prefix
        assert f"<li>client request: {client}</li>" in prefix
        share = round(100 * row["upstream_prefix_bytes"] / row["upstream_prompt_bytes"], 1)
        assert (f"<li>upstream request: {upstream}, {row['upstream_prefix_bytes']} of {row['upstream_prompt_bytes']}"
                f" bytes ({share}%) a prefix cache could serve; it only added to the previous one</li>") in prefix
    # the bodies of a flow with forensics are whole too
    assert json.loads(pane_body(third, "client_request")[1]) == client_body(2)


def test_only_packed_rows_have_a_prefix_section(flow_log: FlowLog, inline_flow_log: FlowLog) -> None:
    """Rows written before the parts store have no forensics: their page has no prefix section."""
    row = next(row for row in flow_log.stored if row.get("prefix_parts") is not None)
    packed, inline = (fetch_one(log.path, f"/-/flow/{row['id']}").text for log in (flow_log, inline_flow_log))
    shared = f"{row['prefix_parts']} part{'' if row['prefix_parts'] == 1 else 's'} shared"
    assert '<div class="ccany-flow-prefix">' in packed and f"client request: {shared}" in packed
    assert "ccany-flow-prefix" not in inline


def test_prompt_cache_queries_of_the_session(session_log: FlowLog) -> None:
    followed = [session_log.stored_row(row["id"]) for row in session_log.rows[1:]]
    by_model, breaks = (rows_of(session_log.path, f"/ccany/{name}.json?_shape=array")
                        for name in ("prompt_cache_by_model", "prompt_cache_breaks"))
    prefix = sum(row["upstream_prefix_bytes"] for row in followed)
    prompt = sum(row["upstream_prompt_bytes"] for row in followed)
    cached = sum(row["cache_read_input_tokens"] for row in followed)
    tokens = sum(row["input_tokens"] + row["cache_read_input_tokens"] + row["cache_creation_input_tokens"]
                 for row in followed)
    assert by_model == [{"model": "gpt-4.1 · openai", "requests": 2,
                         "prefix_share_pct": pytest.approx(100 * prefix / prompt, abs=0.051),
                         "cached_share_pct": pytest.approx(100 * cached / tokens, abs=0.051)}]
    expected = [{"model": "gpt-4.1", "client_break": client_break, "upstream_break": "(only added)", "requests": 1,
                 "avg_prefix_share_pct": pytest.approx(
                     100 * row["upstream_prefix_bytes"] / row["upstream_prompt_bytes"], abs=0.051)}
                for row, client_break in zip(followed, ["(only added)", "system[0] changed"], strict=True)]
    assert sorted(breaks, key=lambda row: row["client_break"]) == expected


def _json_rows(response_json: object, columns: list[str]) -> list[dict]:
    """The rows of a table or row JSON answer as objects, whatever its shape (`columns`: the table's, for arrays
    that come without theirs)."""
    if isinstance(response_json, list):
        return response_json
    assert isinstance(response_json, dict)
    if "rows" not in response_json:
        return list(response_json.values())
    names = response_json.get("columns", columns)
    return [row if isinstance(row, dict) else dict(zip(names, row, strict=True)) for row in response_json["rows"]]


@pytest.mark.parametrize("query", ["", "?_shape=objects", "?_shape=array", "?_shape=arrays", "?_shape=object",
                                   "?_shape=array&_nl=on", "?_col=client_request&_col=status_code&_size=5"])
def test_table_and_row_json_show_the_bodies_whole_as_the_inline_log_does(
        flow_log: FlowLog, inline_flow_log: FlowLog, query: str) -> None:
    paths = [f"/{flow_log.name}/flows.json{query}",
             *(f"/{flow_log.name}/flows/{flow(flow_log, **match)['id']}.json{query}"
               for match in ({"is_stream": 1, "status_code": 200}, {"status_code": 502}))]
    with sqlite3.connect(flow_log.path) as conn:
        columns = [column for _, column, *_ in conn.execute("PRAGMA table_info(flows)")]
    for packed, inline in zip(fetch(flow_log.path, paths=paths), fetch(inline_flow_log.path, paths=paths),
                              strict=True):
        assert packed.status_code == inline.status_code == 200, (packed.url, packed.text[:500])
        if "_nl=on" in query:
            packed_rows = [json.loads(line) for line in packed.text.splitlines()]
            inline_rows = [json.loads(line) for line in inline.text.splitlines()]
        else:
            packed_rows, inline_rows = _json_rows(packed.json(), columns), _json_rows(inline.json(), columns)
        assert [row["id"] for row in packed_rows] == [row["id"] for row in inline_rows] and packed_rows
        assert int(packed.headers["content-length"]) == len(packed.content)
        for got, expected in zip(packed_rows, inline_rows, strict=True):
            shown = [name for name in BODIES if name in expected]
            assert shown, got
            for name in shown:
                assert value(got[name]) == value(expected[name]), (packed.url, name)
            assert any(got[name] is not None for name in shown) or "_col" in query


def test_flows_json_other_answers_pass_as_they_came(flow_log: FlowLog) -> None:
    missing, error, other = fetch(flow_log.path, paths=[
        f"/{flow_log.name}/flows/req_{'0' * 32}.json", f"/{flow_log.name}/flows.json?_sort=no_such_column",
        f"/{flow_log.name}/parts.json?_shape=array&_size=1"])
    assert missing.status_code == 404 and error.status_code == 400
    assert other.status_code == 200 and set(other.json()[0]) == {"hash", "size", "body", "last_used", "refs"}


def _csv_rows(text: str) -> tuple[list[str], list[dict]]:
    header, *rows = list(csv.reader(io.StringIO(text, newline="")))
    return header, [dict(zip(header, row, strict=True)) for row in rows]


@pytest.mark.parametrize("query", ["", "?_stream=on", "?_dl=on&_size=3", "?_col=client_request&_col=status_code",
                                   "?_col=upstream_response&_col=events&_sort_desc=started_at"])
def test_table_csv_shows_the_bodies_whole_as_the_inline_log_does(
        flow_log: FlowLog, inline_flow_log: FlowLog, query: str) -> None:
    path = f"/{flow_log.name}/flows.csv{query}"
    packed, inline = fetch(flow_log.path, paths=[path])[0], fetch(inline_flow_log.path, paths=[path])[0]
    assert packed.status_code == inline.status_code == 200, packed.text[:500]
    assert packed.headers.get("content-disposition") == inline.headers.get("content-disposition")
    assert "content-length" not in packed.headers or int(packed.headers["content-length"]) == len(packed.content)
    header, packed_rows = _csv_rows(packed.text)
    inline_header, inline_rows = _csv_rows(inline.text)
    assert header == inline_header and [row["id"] for row in packed_rows] == [row["id"] for row in inline_rows]
    shown = [name for name in BODIES if name in header]
    assert shown and packed_rows
    for got, expected in zip(packed_rows, inline_rows, strict=True):
        for name in header:
            if name in BODIES:
                assert value(got[name] or None) == value(expected[name] or None), (path, got["id"], name)
            elif name not in (*MANIFESTS.values(), *FORENSICS):  # only a packed log compares turns
                assert got[name] == expected[name], (path, got["id"], name)
    assert any(row[name] for row in packed_rows for name in shown)


def test_a_plain_datasette_without_the_plugins_folder_reads_the_flow_log(flow_log: FlowLog, tmp_path: Path) -> None:
    """`datasette serve data/ccany.db` in an environment where ccany-addon is installed (its `datasette` entry
    point), as a real process: the views that put bodies together, full-text search (the table's `?_search=` and
    SQL), the table's JSON and CSV with the bodies whole; and none of the pages, which come with scripts/datasette's
    plugins folder."""
    row = flow(flow_log, is_stream=1, status_code=200)
    expected_search = [row["id"] for row in flow_log.rows if "flamingo" in row["conversation"]]
    port = free_port()
    log_path = tmp_path / "datasette.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen([str(ROOT / ".venv" / "bin" / "datasette"), "serve", str(flow_log.path),
                                    "-h", "127.0.0.1", "-p", str(port)], stdout=log, stderr=subprocess.STDOUT)
    server = Server(f"http://127.0.0.1:{port}", process, log_path)
    try:
        with httpx.Client(base_url=server.url, timeout=10) as client:
            for _ in range(300):
                try:
                    client.get("/-/versions.json")
                    break
                except httpx.TransportError:
                    assert process.poll() is None, server.log()
                    time.sleep(0.1)
            plugins, table_search, bodies, search, row_json, row_csv, dashboard = (client.get(path) for path in (
                "/-/plugins.json",
                f"/{flow_log.name}/flows.json?_search=flamingo&_shape=array&_col=id",
                f"/{flow_log.name}/flow_bodies.json?id={row['id']}&_shape=array",
                f"/{flow_log.name}/-/query.json?_shape=array&sql=" + quote(
                    "select flows.id from flows join flows_fts on flows_fts.rowid = flows.rowid "
                    "where flows_fts match 'flamingo' order by flows.started_at desc"),
                f"/{flow_log.name}/flows/{row['id']}.json?_shape=array",
                f"/{flow_log.name}/flows.csv?id={row['id']}&_col=client_request",
                "/-/dashboard"))
            assert [plugin["name"] for plugin in plugins.json()] == ["ccany-addon"], server.log()
            (got,) = bodies.json()
            assert all(value(got[name]) == value(row[name]) for name in BODIES)
            assert [found["id"] for found in search.json()] == expected_search and expected_search
            assert [found["id"] for found in table_search.json()] == expected_search
            (whole,) = row_json.json()
            assert all(value(whole[name]) == value(row[name]) for name in PANES)
            _, (csv_row,) = _csv_rows(row_csv.text)
            assert value(csv_row["client_request"]) == value(row["client_request"])
            assert dashboard.status_code == 404
    finally:
        stop_server(server)
