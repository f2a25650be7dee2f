"""`ccany-claude-setup` (or `scripts/claude-setup`): point the local Claude Code at this gateway.

Writes `ANTHROPIC_BASE_URL` and `ANTHROPIC_AUTH_TOKEN` into the `env` block of `~/.claude/settings.json` and
marks onboarding done in `~/.claude.json`, keeping a timestamped backup of each file it changes.
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


def configure(home: Path, base_url: str, token: str) -> list[str]:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    settings_path, state_path = home / ".claude" / "settings.json", home / ".claude.json"
    settings = _load(settings_path)
    env = settings.get("env") if isinstance(settings.get("env"), dict) else {}
    settings["env"] = {**env, "ANTHROPIC_BASE_URL": base_url, "ANTHROPIC_AUTH_TOKEN": token}
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
    args = parser.parse_args(argv)
    if args.token_env:
        token = os.environ.get(args.token_env, "")
    elif sys.stdin.isatty():
        token = input("client key (empty when the gateway has none): ")
    else:
        token = sys.stdin.readline().strip()
    for line in configure(Path.home(), args.url.rstrip("/"), token.strip() or "none"):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
