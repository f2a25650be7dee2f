"""The real Claude Code CLI (installed by scripts/setup with npm) working through the gateway."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from ccany_addon.anthropic_api.conformance import check_stream
from tests.conftest import ROOT, Proxy, stop
from tests.e2e.test_gemini_kind import GEMINI_KEY, start_gemini_proxy
from tests.e2e.test_responses_kind import start_responses_proxy

CLAUDE = ROOT / "tests" / "clients" / "node_modules" / ".bin" / "claude"


def run_claude(proxy, tmp_path: Path, prompt: str, *flags: str,
               api_key: str = "sk-ant-claude-code-client") -> subprocess.CompletedProcess:
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(home),
        "ANTHROPIC_BASE_URL": proxy.url,
        "ANTHROPIC_API_KEY": api_key,
        "DISABLE_TELEMETRY": "1",
        "DISABLE_ERROR_REPORTING": "1",
        "DISABLE_AUTOUPDATER": "1",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        # without this, a broken stream is silently retried without streaming and bugs hide
        "CLAUDE_CODE_DISABLE_NONSTREAMING_FALLBACK": "1",
    }
    return subprocess.run([str(CLAUDE), "-p", prompt, *flags], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=180, stdin=subprocess.DEVNULL)


@pytest.fixture(scope="module", autouse=True)
def claude_installed() -> None:
    assert CLAUDE.exists(), "scripts/setup installs the Claude Code CLI with npm"


def test_claude_answers_a_prompt(proxy, fake_upstream, tmp_path):
    fake_upstream.clear()
    result = run_claude(proxy, tmp_path, "Say hello")
    assert result.returncode == 0, result.stderr
    assert "Hello from the fake upstream." in result.stdout
    sent = [r["body"] for r in fake_upstream.requests()]
    assert sent and all(body["model"] in ("gpt-4o", "gpt-4o-mini") for body in sent)
    main_turn = next(body for body in sent if body.get("tools"))
    assert main_turn["stream"] is True
    assert main_turn["max_tokens"] <= 16384  # Claude Code asks 32k+; gpt-4o takes 16k
    # its per-conversation billing-header block stays out of the upstream's prompt (issue 17 item 6)
    assert not any("x-anthropic-billing-header" in json.dumps(body) for body in sent)
    assert main_turn["messages"][0]["role"] == "system"
    assert main_turn["messages"][0]["content"].startswith("You are")


def test_claude_writes_a_file_with_the_write_tool(proxy, fake_upstream, tmp_path):
    fake_upstream.clear()
    target = tmp_path / "hello.txt"
    content = 'Hello from ccany: "quotes", \\backslashes\\ and ünïcödé'
    result = run_claude(proxy, tmp_path, f"Create the file {target} containing exactly: {content}",
                        "--allowedTools", "Write")
    assert result.returncode == 0, result.stderr
    assert target.read_text() == content
    assert "The file is written." in result.stdout
    # the tool result went back to the upstream as a `tool` message answering the call
    follow_up = [r["body"] for r in fake_upstream.requests() if r["body"]["messages"][-1]["role"] == "tool"]
    assert len(follow_up) == 1
    messages = follow_up[0]["messages"]
    call = messages[-2]["tool_calls"][0]
    assert messages[-2]["role"] == "assistant" and call["function"]["name"] == "Write"
    assert messages[-1]["tool_call_id"] == call["id"]


def test_write_tool_stream_bytes_conform(proxy):
    """The same Write turn as raw HTTP: the exact bytes Claude Code parsed pass the checker."""
    request = {"model": "claude-sonnet-4-5", "max_tokens": 32000, "stream": True,
               "messages": [{"role": "user", "content": "Create the file /tmp/x containing exactly: y"}],
               "tools": [{"name": "Write", "input_schema": {"type": "object"}}]}
    with httpx.stream("POST", f"{proxy.url}/v1/messages?beta=true", json=request, timeout=20) as response:
        data = response.read()
    report = check_stream(data)
    assert report.complete, report.violations
    assert report.message()["content"][0]["input"] == {"file_path": "/tmp/x", "content": "y"}


def write_through(start: Callable[[str, Path], Proxy], fake_upstream, tmp_path: Path, target: Path,
                  content: str) -> None:
    """The Write turn through a proxy of its own (`start` gives it a config DB routing to one provider kind)."""
    fake_upstream.clear()
    (tmp_path / "proxy").mkdir()
    kind_proxy = start(fake_upstream.url, tmp_path / "proxy")
    try:
        result = run_claude(kind_proxy, tmp_path, f"Create the file {target} containing exactly: {content}",
                            "--allowedTools", "Write")
    finally:
        stop(kind_proxy.process)
    assert result.returncode == 0, result.stderr
    assert target.read_text() == content
    assert "The file is written." in result.stdout


def test_claude_writes_a_file_through_the_responses_kind(fake_upstream, tmp_path):
    """The same Write turn with `claude-*` routed to a provider of kind `responses` (the OpenAI Responses API)."""
    target = tmp_path / "codex.txt"
    content = 'Written via the Responses API: "quotes", \\backslashes\\ and ünïcödé'
    write_through(start_responses_proxy, fake_upstream, tmp_path, target, content)
    sent = [r for r in fake_upstream.requests() if r["path"] == "/v1/responses"]
    assert sent and all(r["body"]["model"] in ("gpt-5-codex", "gpt-5-mini") for r in sent)
    # the tool result went back as a `function_call_output` answering the Write call
    follow_up = [r["body"]["input"] for r in sent if r["body"]["input"][-1]["type"] == "function_call_output"]
    assert len(follow_up) == 1
    call, output = follow_up[0][-2:]
    assert call["type"] == "function_call" and call["name"] == "Write"
    assert json.loads(call["arguments"]) == {"file_path": str(target), "content": content}
    assert output["call_id"] == call["call_id"]


def test_claude_writes_a_file_through_the_gemini_kind(fake_upstream, tmp_path):
    """The same Write turn with `claude-*` routed to a provider of kind `gemini`. The fake Gemini answers 400
    unless Claude Code's tool schemas were cleaned and the Write call comes back with the thought signature it
    issued, so success proves both."""
    target = tmp_path / "gemini.txt"
    content = 'Written via Gemini: "quotes", \\backslashes\\ and ünïcödé'
    write_through(start_gemini_proxy, fake_upstream, tmp_path, target, content)
    sent = [r for r in fake_upstream.requests() if r["path"].startswith("/v1beta/models/gemini-2.5-")]
    assert sent and all(r["headers"]["x-goog-api-key"] == GEMINI_KEY for r in sent)
    # the tool result went back as a functionResponse, after the Write call with its thought signature echoed
    follow_up = [r["body"]["contents"] for r in sent
                 if any("functionResponse" in part for part in r["body"]["contents"][-1]["parts"])]
    assert len(follow_up) == 1
    call = next(part for part in follow_up[0][-2]["parts"] if "functionCall" in part)
    assert call["functionCall"]["name"] == "Write"
    assert call["functionCall"]["args"] == {"file_path": str(target), "content": content}
    assert call.get("thoughtSignature") not in (None, "skip_thought_signature_validator")
    response = next(part["functionResponse"] for part in follow_up[0][-1]["parts"] if "functionResponse" in part)
    assert (response["id"], response["name"]) == (call["functionCall"]["id"], "Write")
