"""Keep-alive: while a streamed answer's upstream is silent after its headers (a reasoning model thinking, a local
model prefilling), the client gets message_start and then a ping at least every interval, and the stream is still
exactly the Anthropic grammar."""

from __future__ import annotations

import os
import subprocess
import time

import httpx
import pytest

from ccany_addon.anthropic_api.conformance import check_stream
from tests.conftest import start_proxy, stop
from tests.e2e.test_claude_code import CLAUDE

SILENT = {"model": "scenario:slow", "max_tokens": 50, "stream": True,  # the fake waits 5 s after its headers
          "messages": [{"role": "user", "content": "think hard"}]}


def timed_stream(url: str) -> list[tuple[float, bytes]]:
    started, reads = time.monotonic(), []
    with httpx.stream("POST", f"{url}/v1/messages", json=SILENT, timeout=30) as response:
        assert response.status_code == 200
        for chunk in response.iter_raw():
            reads.append((time.monotonic() - started, chunk))
    return reads


@pytest.fixture(scope="module")
def proxy(fake_upstream, tmp_path_factory):
    running = start_proxy(fake_upstream.url, tmp_path_factory.mktemp("keepalive"), "ccany_keepalive_interval=2")
    yield running
    stop(running.process)


def test_a_silent_upstream_gets_the_client_pings_within_the_interval(proxy):
    reads = timed_stream(proxy.url)
    data = b"".join(chunk for _, chunk in reads)
    report = check_stream(data)
    assert report.complete, report.violations
    first_text = next(at for at, chunk in reads if b"text_delta" in chunk)
    assert first_text > 4.5  # the upstream really was silent
    silent = [at for at, _ in reads if at < first_text]
    assert silent and silent[0] < 2.5, reads  # message_start and a ping before the upstream said anything
    gaps = [later - earlier for earlier, later in zip([0.0, *silent], [*silent, first_text], strict=True)]
    assert max(gaps) < 2.5, gaps  # never silent longer than the interval (and a little scheduling)
    assert data.count(b"event: ping") >= 3 and data.count(b"event: message_start") == 1


def test_without_keep_alive_the_same_stream_is_silent(fake_upstream, tmp_path):
    quiet = start_proxy(fake_upstream.url, tmp_path, "ccany_keepalive_interval=0")
    try:
        reads = timed_stream(quiet.url)
    finally:
        stop(quiet.process)
    assert reads[0][0] > 4.5  # the first byte waited for the upstream


def test_claude_code_waits_through_a_silent_upstream_instead_of_sending_again(fake_upstream, tmp_path):
    """Claude Code aborts a byte-idle stream (10 s at the least, 300 s by default) and sends the whole request
    again; the pings keep a 15 s silence from looking idle, so one upstream request does the turn."""
    proxy = start_proxy(fake_upstream.url, tmp_path, "ccany_big_model=scenario:silent",
                        "ccany_small_model=scenario:silent")
    home = tmp_path / "home"
    home.mkdir()
    env = {"PATH": os.environ["PATH"], "HOME": str(home), "ANTHROPIC_BASE_URL": proxy.url,
           "ANTHROPIC_API_KEY": "sk-ant-claude-code-client", "DISABLE_TELEMETRY": "1", "DISABLE_ERROR_REPORTING": "1",
           "DISABLE_AUTOUPDATER": "1", "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
           "CLAUDE_CODE_DISABLE_NONSTREAMING_FALLBACK": "1",
           "CLAUDE_BYTE_STREAM_IDLE_TIMEOUT_MS": "10000", "CLAUDE_ENABLE_BYTE_WATCHDOG": "1"}
    fake_upstream.clear()
    try:
        result = subprocess.run([str(CLAUDE), "-p", "Say hello"], cwd=tmp_path, env=env, capture_output=True,
                                text=True, timeout=120, stdin=subprocess.DEVNULL)
    finally:
        stop(proxy.process)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Thought it over." in result.stdout
    sent = [r for r in fake_upstream.requests() if r["body"].get("model") == "scenario:silent"]
    assert len(sent) == 1, [r["body"].get("model") for r in fake_upstream.requests()]
