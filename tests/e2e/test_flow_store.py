"""Bodies stored as parts, end to end: a multi-turn session through the real proxy with the Anthropic SDK, read back
from the flow DB, through Datasette (flow page, its JSON download, row JSON, SQL functions, full-text search), and
a Claude Code CLI session's flows in a headless browser over a real Datasette server."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import uuid
from pathlib import Path
from urllib.parse import quote

import anthropic
import httpx
import pytest

from ccany_addon.flowlog.part_store import with_bodies
from tests.conftest import Proxy, start_proxy, stop
from tests.datasette.app import make_datasette
from tests.datasette.conftest import start_server, stop_server
from tests.datasette.test_browser import chromium
from tests.e2e.test_claude_code import CLAUDE, run_claude

SYSTEM_TEXT = "You are a careful assistant working in a large repository. " * 40
TOOLS = [{"name": f"Tool{i}", "description": "Reads and writes files of the project. " * 10,
          "input_schema": {"type": "object", "properties": {"path": {"type": "string"}}}} for i in range(8)]
WORDS = ["lighthouse", "marmalade", "quarantine", "zeppelin", "obsidian"]


def rows(db: Path, count: int) -> list[dict]:
    """The flows of /v1/messages with their bodies whole, oldest first, once `count` are written."""
    for _ in range(200):
        with sqlite3.connect(db) as conn:
            conn.row_factory = sqlite3.Row
            found = [with_bodies(conn, dict(row)) for row in conn.execute(
                "select * from flows where path like '/v1/messages%' order by started_at")]
        if len(found) >= count:
            return found
        asyncio.run(asyncio.sleep(0.05))
    raise AssertionError(f"{len(found)} of {count} flows written")


@pytest.fixture(scope="module")
def session(fake_upstream, tmp_path_factory) -> tuple[Proxy, list[dict], list[str], str]:
    """Six turns of one Claude Code-like session: each turn adds a user message to the same system and tools, and
    the billing-header system block changes on every request, as Claude Code's does."""
    proxy = start_proxy(fake_upstream.url, tmp_path_factory.mktemp("flow-store"))
    session_id = str(uuid.uuid4())
    client = anthropic.Anthropic(base_url=proxy.url, api_key="sk-ant-flow-store", max_retries=0)
    messages: list[dict] = []
    sent: list[dict] = []
    ids: list[str] = []
    try:
        for turn in range(6):
            messages.append({"role": "user", "content": [
                {"type": "text", "text": f"Turn {turn}: look at {WORDS[turn % len(WORDS)]}{turn}.py " * 20}]})
            body = {"model": "claude-sonnet-4-5", "max_tokens": 200, "tools": TOOLS,
                    "system": [{"type": "text", "text": f"x-anthropic-billing-header: cc_version=2.1.332.{100 + turn}; "
                                "cc_entrypoint=cli;"}, {"type": "text", "text": SYSTEM_TEXT}],
                    "messages": json.loads(json.dumps(messages))}
            raw = client.messages.with_raw_response.create(
                **body, extra_headers={"x-claude-code-session-id": session_id})
            answer = raw.parse()
            ids.append(raw.headers["request-id"])
            sent.append(body)
            messages.append({"role": "assistant", "content": [{"type": "text", "text": answer.content[0].text}]})
        yield proxy, sent, ids, session_id
    finally:
        stop(proxy.process)


def test_each_turn_reads_back_whole_and_the_session_is_stored_once(session) -> None:
    proxy, sent, ids, _ = session
    flows = {row["id"]: row for row in rows(proxy.db, len(ids))}
    for request_id, body in zip(ids, sent, strict=True):
        flow = flows[request_id]
        assert flow["client_request_parts"] is not None
        assert {key: value for key, value in json.loads(flow["client_request"]).items() if key in body} == body
        upstream = json.loads(flow["upstream_request"])
        assert upstream["messages"][-1]["content"] == body["messages"][-1]["content"][0]["text"]
        assert json.loads(flow["client_response"])["id"].startswith("msg_")
    with sqlite3.connect(proxy.db) as conn:
        stored = conn.execute("select sum(length(body)) from parts").fetchone()[0]
    whole = sum(len(flows[request_id][name]) for request_id in ids for name in ("client_request", "upstream_request"))
    # tools and the long system block are stored once for the six turns, and compressed
    assert stored < whole / 4, (stored, whole)


def test_each_turn_knows_what_it_shares_with_the_one_before(session) -> None:
    proxy, _, ids, _ = session
    flows = {row["id"]: row for row in rows(proxy.db, len(ids))}
    first, *later = [flows[request_id] for request_id in ids]
    assert first["prefix_parts"] is None and first["upstream_prefix_parts"] is None
    for flow in later:
        # Claude Code's billing header is system[0], after the tools: the client request shares the tools only
        assert (flow["prefix_parts"], flow["prefix_break"]) == (1, "system[0] changed")
        # the gateway keeps the header out of the upstream prompt: everything before this turn is shared
        assert flow["upstream_prefix_break"] is None
        assert 0.5 < flow["upstream_prefix_bytes"] / flow["upstream_prompt_bytes"] < 1


def test_datasette_shows_the_same_bodies(session) -> None:
    proxy, sent, ids, _ = session
    last = ids[-1]
    flows = {row["id"]: row for row in rows(proxy.db, len(ids))}
    database = proxy.db.stem
    sql = f"select ccany_body(client_request, client_request_parts) as body from flows where id = '{last}'"

    async def fetch() -> dict:
        ds = make_datasette(proxy.db)
        paths = {"page": f"/-/flow/{last}", "download": f"/-/flow/{last}.json",
                 "row": f"/{database}/flows/{last}.json?_shape=array",
                 "sql": f"/{database}/-/query.json?sql={quote(sql)}&_shape=array",
                 "view": f"/{database}/flow_bodies.json?id={last}&_shape=array",
                 "search": f"/{database}/flows.json?_search=zeppelin3&_shape=array&_col=id"}
        return {name: await ds.client.get(path) for name, path in paths.items()}

    answers = asyncio.run(fetch())
    assert all(answer.status_code == 200 for answer in answers.values()), \
        {name: answer.text[:300] for name, answer in answers.items() if answer.status_code != 200}
    assert "x-anthropic-billing-header: cc_version=2.1.332.105" in answers["page"].text
    assert "Prompt-cache prefix" in answers["page"].text and "system[0] changed" in answers["page"].text
    download = answers["download"].json()
    assert "attachment" in answers["download"].headers["content-disposition"]
    assert {key: download["client_request"][key] for key in sent[-1]} == sent[-1]
    assert download["upstream_request"] == json.loads(flows[last]["upstream_request"])
    assert json.loads(answers["sql"].json()[0]["body"]) == json.loads(flows[last]["client_request"])
    assert json.loads(answers["view"].json()[0]["client_response"]) == json.loads(flows[last]["client_response"])
    assert json.loads(answers["row"].json()[0]["client_request_parts"])["json"]["messages"]["$parts"]
    assert json.loads(answers["row"].json()[0]["client_request"]) == json.loads(flows[last]["client_request"])
    assert [row["id"] for row in answers["search"].json()] == [ids[3]]  # the turn that said it, not every later one


def test_a_claude_code_session_is_browsable_in_a_headless_browser(fake_upstream, tmp_path) -> None:
    assert CLAUDE.exists()
    (tmp_path / "proxy").mkdir()
    proxy = start_proxy(fake_upstream.url, tmp_path / "proxy")
    try:
        target = tmp_path / "hello.txt"
        result = run_claude(proxy, tmp_path, f"Create the file {target} containing exactly: browsable",
                            "--allowedTools", "Write")
        assert result.returncode == 0, result.stderr
    finally:
        stop(proxy.process)
    turns = [row for row in rows(proxy.db, 2) if row["client_request"] and '"tools"' in row["client_request"]]
    assert len(turns) >= 2, "the Write turn and its follow-up"
    follow_up = turns[-1]
    assert follow_up["prefix_parts"] is not None and follow_up["upstream_prefix_parts"] is not None
    server = start_server(proxy.db, tmp_path)
    try:
        dom = chromium(f"{server.url}/-/flow/{follow_up['id']}", "--dump-dom")
        row_json = httpx.get(f"{server.url}/{proxy.db.stem}/flows/{follow_up['id']}.json?_shape=array").json()
    finally:
        stop_server(server)
    assert json.loads(row_json[0]["client_request"]) == json.loads(follow_up["client_request"])
    # the client request's system blocks and messages, put together from their parts
    system = json.loads(follow_up["client_request"])["system"]
    assert "x-anthropic-billing-header" in dom and system[1]["text"][:40] in dom
    assert "tool_result" in dom and "Prompt-cache prefix" in dom
    assert follow_up["prefix_break"] is None or follow_up["prefix_break"] in dom
    for pane in ["pane-client-request", "pane-upstream-request", "pane-upstream-response", "pane-client-response"]:
        assert pane in dom
