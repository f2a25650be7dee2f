"""The config addon under mitmproxy's own test helpers: its hooks never touch SQLite on the event loop (the
reader thread owns the config DB), changes are read within a poll, key failures are written there, and the
settings a snapshot carries are applied on the loop."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from mitmproxy.test import taddons

from ccany_addon.config import addon as config_addon
from ccany_addon.config import store
from ccany_addon.config.addon import ConfigWatcher
from ccany_addon.config.snapshot import ProviderKey
from ccany_addon.upstreams.key_pool import KeyFailure
from tests.conftest import config_db, secret

KEY = secret("sk-watched-0123456789abcdef")


class _Recorded(sqlite3.Connection):
    """A connection that notes the thread of every statement it runs."""

    threads: list[tuple[str, str]]

    def _note(self, what: str) -> None:
        self.threads.append((threading.current_thread().name, what))

    def execute(self, *args: Any, **kwargs: Any) -> sqlite3.Cursor:
        self._note("execute")
        return super().execute(*args, **kwargs)

    def executemany(self, *args: Any, **kwargs: Any) -> sqlite3.Cursor:
        self._note("executemany")
        return super().executemany(*args, **kwargs)

    def executescript(self, *args: Any, **kwargs: Any) -> sqlite3.Cursor:
        self._note("executescript")
        return super().executescript(*args, **kwargs)

    def cursor(self, *args: Any, **kwargs: Any) -> sqlite3.Cursor:
        self._note("cursor")
        return super().cursor(*args, **kwargs)


@pytest.fixture
def sqlite_threads(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """The thread of every SQLite connect and statement made from now on (sqlite_utils connects through
    `sqlite3.connect` too)."""
    threads: list[tuple[str, str]] = []
    connect = sqlite3.connect

    def recording_connect(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        threads.append((threading.current_thread().name, "connect"))
        kwargs.setdefault("factory", _Recorded)
        conn = connect(*args, **kwargs)
        conn.threads = threads  # type: ignore[attr-defined]
        return conn

    monkeypatch.setattr(sqlite3, "connect", recording_connect)
    return threads


class _Settings:
    """Declares one option the config DB may set, and notes the thread each change is applied on."""

    def __init__(self) -> None:
        self.configured_on: list[str] = []

    def load(self, loader: Any) -> None:
        loader.add_option("ccany_max_tokens_limit", int, 0, "A setting the config DB may set.")

    def configure(self, updated: set[str]) -> None:
        if "ccany_max_tokens_limit" in updated:
            self.configured_on.append(threading.current_thread().name)


async def _until(condition: Callable[[], Any], what: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"not within {timeout} s: {what}"
        await asyncio.sleep(0.05)


def _run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(scenario())  # asyncio.run's loop runs on this (the main) thread


@pytest.fixture
def config_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv("CCANY_MASTER_KEY", raising=False)
    path = tmp_path / "config.db"
    db = config_db(path)
    store.add_provider(db, "test", "up", "http://127.0.0.1:9/v1")
    store.set_provider_key(db, "test", "up", KEY)
    store.set_setting(db, "test", "ccany_max_tokens_limit", "77")
    db.close()
    return path


def test_hooks_never_touch_sqlite_on_the_event_loop(config_path: Path, sqlite_threads: list[tuple[str, str]]):
    watcher, settings = ConfigWatcher(), _Settings()
    loop_thread = threading.current_thread().name

    def in_thread(action: Callable[[], None]) -> None:
        """The test's own writes run on a thread of their own, so they show apart from the loop's."""
        worker = threading.Thread(target=action, name="test-writer")
        worker.start()
        worker.join()

    async def scenario() -> None:
        with taddons.context(watcher, settings) as tctx:
            tctx.configure(watcher, ccany_config_db=str(config_path))
            watcher.running()
            assert [key.secret for key in watcher.snapshot.providers["up"].keys] == [KEY]
            assert tctx.options.ccany_max_tokens_limit == 77 and settings.configured_on == [loop_thread]

            def change() -> None:
                db = config_db(config_path)
                store.set_setting(db, "test", "ccany_max_tokens_limit", "88")
                db.close()

            in_thread(change)
            await _until(lambda: tctx.options.ccany_max_tokens_limit == 88, "the change is applied")
            assert settings.configured_on == [loop_thread, loop_thread]  # options change on the loop only

            key: ProviderKey = watcher.snapshot.providers["up"].keys[0]
            started = time.perf_counter()
            watcher.record_key_failure(KeyFailure(key, 401, disabled="upstream answered 401", message="no"))
            assert time.perf_counter() - started < 0.05  # queued, not written, on the loop
            # the pools keep the key out until a snapshot lists it disabled: the write is read back
            await _until(lambda: "up" in watcher.snapshot.providers and not watcher.snapshot.providers["up"].keys,
                         "the disabled key leaves the snapshot")
            watcher.done()
            assert not [thread for thread in threading.enumerate() if thread.name == "ccany-config-reader"]

    _run(scenario)
    on_loop = [what for thread, what in sqlite_threads if thread == loop_thread]
    assert on_loop == [], f"SQLite used on the event loop's thread: {on_loop}"
    threads = {thread for thread, _ in sqlite_threads}
    assert threads == {"ccany-config-reader", "test-writer"}, threads

    db = config_db(config_path)
    row = db.execute("SELECT enabled, last_status, disabled_reason FROM provider_keys").fetchone()
    db.close()
    assert row == (0, 401, "upstream answered 401")


def test_done_writes_the_key_failures_still_queued(config_path: Path):
    watcher = ConfigWatcher()

    async def scenario() -> None:
        with taddons.context(watcher) as tctx:
            tctx.configure(watcher, ccany_config_db=str(config_path))
            watcher.running()
            key = watcher.snapshot.providers["up"].keys[0]
            watcher.record_key_failure(KeyFailure(key, 429, cooldown=600, message="slow down"))
            watcher.done()
            watcher.record_key_failure(KeyFailure(key, 500, cooldown=5, message="after the stop"))  # dropped

    _run(scenario)
    db = config_db(config_path)
    row = db.execute("SELECT enabled, last_status, last_error, cooling_until FROM provider_keys").fetchone()
    db.close()
    assert row[:3] == (1, 429, "slow down") and row[3] is not None


def test_a_config_db_that_cannot_be_opened_fails_the_hook_as_before_and_leaves_no_thread(tmp_path: Path,
                                                                                        monkeypatch):
    monkeypatch.delenv("CCANY_MASTER_KEY", raising=False)
    path = tmp_path / "config.db"
    path.write_bytes(b"this is not a SQLite database, not even its header" * 100)
    watcher = ConfigWatcher()

    async def scenario() -> None:
        with taddons.context(watcher) as tctx:
            tctx.configure(watcher, ccany_config_db=str(path))
            with pytest.raises(sqlite3.DatabaseError):
                watcher.running()  # mitmproxy logs it as an addon error; the proxy serves on the empty config
            assert not watcher.snapshot.client_keys and not watcher.snapshot.providers
            assert not [thread for thread in threading.enumerate() if thread.name == "ccany-config-reader"]
            watcher.record_key_failure(KeyFailure(ProviderKey(1, "k", "sk"), 429, cooldown=1))  # nothing to do
            watcher.done()

    _run(scenario)


def test_a_change_that_cannot_be_read_is_logged_and_the_next_one_is_read(config_path: Path, monkeypatch,
                                                                         caplog: pytest.LogCaptureFixture):
    watcher = ConfigWatcher()
    real = config_addon.read_snapshot
    failing = {"left": 0}

    def read_snapshot(*args: Any) -> Any:
        if failing["left"]:
            failing["left"] -= 1
            raise sqlite3.OperationalError("disk I/O error")
        return real(*args)

    monkeypatch.setattr(config_addon, "read_snapshot", read_snapshot)

    def set_limit(value: str) -> None:
        db = config_db(config_path)
        store.set_setting(db, "test", "ccany_max_tokens_limit", value)
        db.close()

    async def scenario() -> None:
        with taddons.context(watcher, _Settings()) as tctx:
            tctx.configure(watcher, ccany_config_db=str(config_path))
            watcher.running()
            failing["left"] = 1
            await asyncio.to_thread(set_limit, "90")
            await _until(lambda: f"could not re-read {config_path}: disk I/O error" in caplog.text, "the warning")
            assert tctx.options.ccany_max_tokens_limit == 77
            await asyncio.to_thread(set_limit, "91")
            await _until(lambda: tctx.options.ccany_max_tokens_limit == 91, "the next change is read")
            watcher.done()

    with caplog.at_level("INFO", logger="ccany"):
        _run(scenario)
