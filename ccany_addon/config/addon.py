"""The config addon: reads the config DB into a snapshot at start-up and again whenever it changes (checked
every second), and applies its settings to the `ccany_*` options that the command line left at their defaults.

Hooks never touch SQLite (DESIGN.md §2): `ConfigReader` owns the config DB's one connection on a thread of its
own, in the flow writer's style. It reads each new snapshot and hands it to the event loop, which swaps it in
whole and applies its settings (options belong to the loop); the gateway's key failures are queued to it and
written there."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from typing import Any

import sqlite_utils
from mitmproxy import ctx

from ccany_addon.config import store
from ccany_addon.config.options import declare
from ccany_addon.config.schema import SETTINGS, open_config_db
from ccany_addon.config.secrets import Cipher, SecretError, load_master_key
from ccany_addon.config.snapshot import ConfigSnapshot, read_snapshot
from ccany_addon.upstreams.key_pool import KeyFailure
from ccany_addon.util.os_thread_name import name_os_thread

logger = logging.getLogger("ccany")

POLL_INTERVAL = 1.0
CLOSE_TIMEOUT = 10.0

type Write = Callable[[sqlite_utils.Database], None]


class ConfigReader:
    """The config DB's only connection in the proxy: one thread, fed by a queue of writes, that also checks every
    `POLL_INTERVAL` seconds whether another connection changed the file and, if so, reads a new snapshot and
    passes it to `publish` (called on this thread)."""

    def __init__(self, path: str, publish: Callable[[ConfigSnapshot], None]) -> None:
        self.path = path
        self._publish = publish
        self._queue: queue.SimpleQueue[Write | None] = queue.SimpleQueue()  # None: stop
        self._cipher: Cipher | None = None
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._first: ConfigSnapshot | Exception | None = None

    def start(self) -> ConfigSnapshot:
        """Starts the thread and waits for its first snapshot. A config DB that cannot be opened or read raises
        here, in the caller, and leaves no thread behind."""
        self._thread = threading.Thread(target=self._run, name="ccany-config-reader", daemon=True)
        self._thread.start()
        self._started.wait()
        first = self._first
        if not isinstance(first, ConfigSnapshot):
            self._thread.join()
            self._thread = None
            assert first is not None
            raise first
        return first

    def submit(self, write: Write) -> None:
        """Queues a write for the thread; returns at once."""
        self._queue.put(write)

    def close(self, timeout: float = CLOSE_TIMEOUT) -> None:
        """Runs the writes still queued, then stops the thread."""
        if self._thread is None:
            return
        self._queue.put(None)
        self._thread.join(timeout)
        if self._thread.is_alive():
            logger.warning(f"ccany: the config reader of {self.path} did not stop within {timeout} s")
        self._thread = None

    # -- the reader thread

    def _run(self) -> None:
        name_os_thread("ccany-config")
        try:
            self._cipher = Cipher(load_master_key(self.path))
        except SecretError as error:
            logger.error(f"ccany: {error}; upstream keys in {self.path} cannot be used")
        try:
            db = open_config_db(self.path, self._cipher)
        except Exception as error:  # handed to `start`, which raises it in the hook as before
            self._first = error
            self._started.set()
            return
        try:
            self._serve(db)
        finally:
            db.close()

    def _serve(self, db: sqlite_utils.Database) -> None:
        try:
            # taken before the first read: a change made meanwhile is read again at the first poll
            version = db.execute("PRAGMA data_version").fetchone()[0]
            self._first = read_snapshot(db, self._cipher)
        except Exception as error:
            self._first = error
            return
        finally:
            self._started.set()
        # Our own writes leave this connection's data_version alone; a snapshot that lists them is read at the
        # next poll all the same (the key pools keep a disabled key out until a snapshot lists it disabled).
        wrote = False
        next_poll = time.monotonic() + POLL_INTERVAL
        while True:
            try:
                write = self._queue.get(timeout=max(0.0, next_poll - time.monotonic()))
            except queue.Empty:
                version = self._poll(db, version, wrote)
                wrote = False
                next_poll = time.monotonic() + POLL_INTERVAL
                continue
            if write is None:
                return
            wrote = self._write(db, write) or wrote

    def _poll(self, db: sqlite_utils.Database, version: int, wrote: bool) -> int:
        """Reads and publishes a new snapshot if the file changed; returns the data version now seen."""
        try:
            now = db.execute("PRAGMA data_version").fetchone()[0]
        except sqlite3.Error as error:
            logger.warning(f"ccany: could not re-read {self.path}: {error}")
            return version
        if now == version and not wrote:
            return version
        try:
            snapshot = read_snapshot(db, self._cipher)
        except Exception as error:  # the thread lives on: the next change is read again
            logger.warning(f"ccany: could not re-read {self.path}: {error}")
            return now
        self._publish(snapshot)
        return now

    def _write(self, db: sqlite_utils.Database, write: Write) -> bool:
        try:
            write(db)
        except Exception as error:  # the thread lives on for the next write and the polls
            logger.warning(f"ccany: could not record a key's health in {self.path}: {error}")
            return False
        return True


class ConfigWatcher:
    def __init__(self) -> None:
        self.snapshot = ConfigSnapshot()
        self._path = ""
        self._reader: ConfigReader | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._from_command_line: set[str] = set()
        self._applied: dict[str, object] = {}

    def load(self, loader: Any) -> None:
        declare(loader, "config")

    def running(self) -> None:
        options = ctx.options
        # Whatever is not at its default now was given on the command line (or mitmproxy's config.yaml): it wins.
        self._from_command_line = {
            name for name in SETTINGS if name in options and options.default(name) != getattr(options, name)
        }
        self._path = options.ccany_config_db
        self.done()  # a second start (tests) must not leave the first reader running
        if not self._path:
            return
        self._loop = asyncio.get_running_loop()
        reader = ConfigReader(self._path, self._publish)
        # Start-up only: the loop waits here for the first snapshot (read on the reader's thread), so the proxy
        # serves no request on an empty config. From now on the loop never waits for the config DB.
        self._reload(reader.start())
        self._reader = reader
        if not self.snapshot.client_keys:
            logger.warning("ccany: no client keys in the config DB: serving clients on this machine (loopback) only")

    def done(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    def record_key_failure(self, failure: KeyFailure) -> None:
        """Queues a key's cooldown or disabling for the config DB; the reader thread writes it."""
        if self._reader is None:
            return
        cooling_until = time.time() + failure.cooldown if failure.cooldown else None
        self._reader.submit(functools.partial(store.record_key_failure, key_id=failure.key.id,
                                              status=failure.status, message=failure.message,
                                              cooling_until=cooling_until, disabled_reason=failure.disabled))

    def enable_switched_key(self, name: str, at: float) -> None:
        """Queues the re-enabling of a key another gateway process saw re-enabled (`store.enable_switched_key`)."""
        if self._reader is not None:
            self._reader.submit(functools.partial(store.enable_switched_key, name=name, at=at))

    def _publish(self, snapshot: ConfigSnapshot) -> None:
        """On the reader thread: the loop swaps the snapshot in and applies its settings."""
        assert self._loop is not None
        with contextlib.suppress(RuntimeError):  # the loop has closed: nothing left to configure
            self._loop.call_soon_threadsafe(self._reload, snapshot)

    def _reload(self, snapshot: ConfigSnapshot) -> None:
        for problem in snapshot.problems:
            logger.warning(f"ccany: config: {problem}")
        self.snapshot = snapshot
        changes: dict[str, object] = {}
        options = ctx.options
        for name in SETTINGS:
            if name in self._from_command_line or name not in options:
                continue
            if name in snapshot.settings:
                changes[name] = snapshot.settings[name]
            elif name in self._applied:  # the setting was removed: back to the default
                changes[name] = options.default(name)
        changes = {name: value for name, value in changes.items() if getattr(options, name) != value}
        if changes:
            try:
                options.update(**changes)
            except Exception as error:  # a bad value in the DB must not stop the proxy
                logger.warning(f"ccany: config settings not applied: {error}")
                return
            logger.info(f"ccany: config settings applied: {', '.join(sorted(changes))}")
        self._applied = dict(snapshot.settings)
        logger.info(
            f"ccany: config loaded: {len(snapshot.providers)} providers, {len(snapshot.routes)} routes, "
            f"{len(snapshot.client_keys)} client keys"
        )
