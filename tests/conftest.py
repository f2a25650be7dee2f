"""Fixtures that start real processes: the fake OpenAI upstream and mitmdump with the addon."""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from ccany_addon.flowlog.part_store import with_bodies

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
UPSTREAM_KEY = "sk-upstream-SECRET-0123456789abcdef"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(url: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError as error:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{url} did not come up: {error}") from None
            time.sleep(0.1)


@dataclass
class FakeUpstream:
    port: int
    process: subprocess.Popen

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def requests(self) -> list[dict]:
        with urllib.request.urlopen(f"{self.url}/_requests") as response:
            return json.loads(response.read())

    def clear(self) -> None:
        urllib.request.urlopen(urllib.request.Request(f"{self.url}/_requests", method="DELETE")).read()


@dataclass
class Proxy:
    port: int
    process: subprocess.Popen
    log_path: Path
    db: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def flow(self, request_id: str, timeout: float = 10.0) -> dict:
        """The flow log's row for `request_id`, once the writer has written it."""
        deadline = time.monotonic() + timeout
        while True:
            if self.db.exists():
                with sqlite3.connect(self.db) as conn:
                    conn.row_factory = sqlite3.Row
                    row = conn.execute("select * from flows where id = ?", [request_id]).fetchone()
                    if row is not None:
                        return with_bodies(conn, dict(row))
            if time.monotonic() > deadline:
                raise AssertionError(f"no flow {request_id} in {self.db}")
            time.sleep(0.05)


def start_fake_upstream() -> FakeUpstream:
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "tests" / "fake_openai.py")],
        stdout=subprocess.PIPE,
        text=True,
    )
    line = process.stdout.readline()
    return FakeUpstream(int(line.split()[-1]), process)


def start_proxy(
    upstream: str, tmp: Path, *options: str, env: dict[str, str] | None = None, program: str = "mitmdump",
    scripts: tuple[Path, ...] = (), port: int | None = None,
) -> Proxy:
    port = port or free_port()
    log_path = tmp / f"{program}-{port}.log"
    environment = {**os.environ, "OPENAI_API_KEY": UPSTREAM_KEY, **(env or {})}
    environment = {k: v for k, v in environment.items() if v is not None}
    command = [str(VENV_BIN / program)]
    if program != "ccany":
        command += ["-s", str(ROOT / "ccany_addon" / "addon.py")]
    for script in scripts:
        command += ["-s", str(script)]
    command += ["--mode", f"reverse:{upstream}", "--listen-host", "127.0.0.1", "-p", str(port)]
    if not any(option.startswith("ccany_db=") for option in options):  # mitmproxy refuses an option set twice
        command += ["--set", f"ccany_db={tmp / 'flows.db'}"]
    for option in options:
        command += ["--set", option]
    if program == "mitmweb":
        command += ["--set", "web_open_browser=false"]
        if not any(option.startswith("web_port=") for option in options):
            command += ["--set", f"web_port={free_port()}"]
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=environment, cwd=tmp)
    try:
        wait_for(f"http://127.0.0.1:{port}/health")
    except RuntimeError:
        process.kill()
        raise RuntimeError(log_path.read_text()) from None
    return Proxy(port, process, log_path, tmp / "flows.db")


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()


@pytest.fixture(scope="session")
def fake_upstream() -> Iterator[FakeUpstream]:
    upstream = start_fake_upstream()
    yield upstream
    stop(upstream.process)


@pytest.fixture(scope="session")
def proxy(fake_upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    running = start_proxy(fake_upstream.url, tmp_path_factory.mktemp("proxy"))
    yield running
    stop(running.process)
    assert UPSTREAM_KEY not in running.log(), "the upstream key reached the proxy's log"


# Every secret a test hands to the gateway; no DB file or log under the test run's temporary folder may hold one.
SECRETS: set[str] = {UPSTREAM_KEY}


def secret(value: str) -> str:
    SECRETS.add(value)
    return value


@pytest.fixture(scope="session", autouse=True)
def no_secret_on_disk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    yield
    base = tmp_path_factory.getbasetemp()
    leaks = []
    for path in base.rglob("*"):
        if path.is_file() and (".db" in path.name or path.suffix == ".log"):
            data = path.read_bytes()
            leaks += [f"{path.relative_to(base)} holds {value[:12]}…" for value in SECRETS if value.encode() in data]
    assert not leaks, leaks


@dataclass
class RedisServer:
    port: int
    process: subprocess.Popen

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"


def start_redis(tmp: Path, port: int | None = None) -> RedisServer:
    """A real redis-server (Debian's, installed by scripts/setup) on 127.0.0.1, keeping nothing on disk."""
    port = port or free_port()
    process = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                "--appendonly", "no", "--dir", str(tmp)], stdout=subprocess.DEVNULL,
                               stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 10
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                if sock.recv(64).startswith(b"+PONG"):
                    return RedisServer(port, process)
        except OSError:
            pass
        if time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"redis-server did not start on port {port}")
        time.sleep(0.05)


def config_db(path: Path):
    """A config DB with its master key beside it; tests fill it through ccany_addon.config.store."""
    from ccany_addon.config.schema import open_config_db
    from ccany_addon.config.secrets import Cipher, load_master_key

    return open_config_db(path, Cipher(load_master_key(path)))


def start_kind_proxy(upstream_url: str, tmp: Path, provider: str, kind: str, api_url: str, models: dict[str, str],
                     key: str, limited_key: str) -> Proxy:
    """A proxy whose config DB routes `claude-*` to `provider` (of `kind`, at the fake's `api_url`), plus a
    `<provider>-limited` provider with its own key: a 429 scenario may put that key on cool-down without touching
    the other tests."""
    from ccany_addon.config import store

    path = tmp / "config.db"
    db = config_db(path)
    store.add_provider(db, "test", provider, api_url, kind=kind, models=models)
    store.set_provider_key(db, "test", provider, key)
    store.add_route(db, "test", "claude-*", provider, None)
    store.add_provider(db, "test", f"{provider}-limited", api_url, kind=kind)
    store.set_provider_key(db, "test", f"{provider}-limited", limited_key)
    db.close()
    return start_proxy(upstream_url, tmp, f"ccany_config_db={path}")
