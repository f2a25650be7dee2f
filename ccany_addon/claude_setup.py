"""`ccany-claude-setup` (or `scripts/claude-setup`): point the local Claude Code at this gateway.

Writes `ANTHROPIC_BASE_URL`, `ANTHROPIC_AUTH_TOKEN` and the settings that make Claude Code work best through a
converting gateway (`GATEWAY_ENV`, `CONVERTING_ENV`) into the `env` block of `~/.claude/settings.json`, and marks
onboarding done in `~/.claude.json`, keeping a timestamped backup of each file it changes.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

# For any gateway: the hint headers (x-claude-code-request-class, which the flow log records and the `background`
# route scenario reads) and the model list from the gateway's /v1/models, whose names say where each model goes.
GATEWAY_ENV = {
    "CLAUDE_CODE_GATEWAY_HINT_HEADERS": "1",
    "CLAUDE_CODE_ENABLE_GATEWAY_MODEL_DISCOVERY": "1",
}
# For a gateway that converts to another API (every provider kind but `anthropic`): auto mode's safety check runs
# on Anthropic's servers (the request's `safeguards`), which no converted upstream can do. With this the CLI runs
# the check itself, as ordinary requests through the gateway.
CONVERTING_ENV = {"CLAUDE_CODE_AUTO_MODE_SERVER": "0"}


def _load(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text() or "{}")
    except ValueError:
        raise SystemExit(f"ccany-claude-setup: {path} is not valid JSON; fix or move it first") from None
    if not isinstance(data, dict):
        raise SystemExit(f"ccany-claude-setup: {path} does not hold a JSON object")
    return data


def _save(path: Path, data: dict[str, Any], stamp: str) -> Path | None:
    """Write `data` if it differs from the file; returns the backup made, if any."""
    backup = None
    if path.exists():
        if _load(path) == data:
            return None
        backup = path.with_name(f"{path.name}.bak-{stamp}")
        shutil.copy2(path, backup)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(data, indent=2) + "\n")
    os.chmod(temporary, 0o600)
    temporary.replace(path)
    return backup


def gateway_env(base_url: str, token: str, converting: bool = True, context_window: int | None = None,
                max_output_tokens: int | None = None) -> dict[str, str]:
    """The `env` entries written: Claude Code cannot learn an upstream model's window or output limit from the
    gateway, so those are the caller's to give (the smallest of the models it routes to)."""
    env = {"ANTHROPIC_BASE_URL": base_url, "ANTHROPIC_AUTH_TOKEN": token, **GATEWAY_ENV}
    if converting:
        env.update(CONVERTING_ENV)
    if context_window:
        env["CLAUDE_CODE_AUTO_COMPACT_WINDOW"] = str(context_window)
    if max_output_tokens:
        env["CLAUDE_CODE_MAX_OUTPUT_TOKENS"] = str(max_output_tokens)
    return env


def configure(home: Path, base_url: str, token: str, ours: dict[str, str] | None = None) -> list[str]:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    settings_path, state_path = home / ".claude" / "settings.json", home / ".claude.json"
    settings = _load(settings_path)
    env = settings.get("env") if isinstance(settings.get("env"), dict) else {}
    settings["env"] = {**env, **(ours or gateway_env(base_url, token))}
    state = _load(state_path)
    state["hasCompletedOnboarding"] = True
    done = []
    for path, data in ((settings_path, settings), (state_path, state)):
        backup = _save(path, data, stamp)
        done.append(f"{path}: updated" + (f" (backup: {backup})" if backup else ""))
    return done


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ccany-claude-setup", description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8082", help="the gateway (default http://127.0.0.1:8082)")
    parser.add_argument("--token-env", metavar="VAR",
                        help="read the client key from this environment variable (else stdin; 'none' without keys)")
    parser.add_argument("--anthropic", action="store_true",
                        help="the gateway forwards to Anthropic itself (the anthropic kind): keep auto mode's "
                             "server-side check")
    parser.add_argument("--context-window", type=int, metavar="TOKENS",
                        help="CLAUDE_CODE_AUTO_COMPACT_WINDOW: the upstream model's context window")
    parser.add_argument("--max-output-tokens", type=int, metavar="TOKENS",
                        help="CLAUDE_CODE_MAX_OUTPUT_TOKENS: the upstream model's output limit")
    args = parser.parse_args(argv)
    if args.token_env:
        token = os.environ.get(args.token_env, "")
    elif sys.stdin.isatty():
        token = input("client key (empty when the gateway has none): ")
    else:
        token = sys.stdin.readline().strip()
    base_url, token = args.url.rstrip("/"), token.strip() or "none"
    ours = gateway_env(base_url, token, not args.anthropic, args.context_window, args.max_output_tokens)
    for line in configure(Path.home(), base_url, token, ours):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
