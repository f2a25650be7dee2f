"""The config addon: reads the config DB into a snapshot at start-up and again whenever it changes (checked
every second, read off the event loop), and applies its settings to the `ccany_*` options that the command
line left at their defaults."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import sqlite3
import time
from typing import Any

from mitmproxy import ctx

from ccany_addon.config import store
from ccany_addon.config.schema import SETTINGS, open_config_db
from ccany_addon.config.secrets import Cipher, SecretError, load_master_key
from ccany_addon.config.snapshot import ConfigSnapshot, read_snapshot
from ccany_addon.upstreams.key_pool import KeyFailure

logger = logging.getLogger("ccany")

POLL_INTERVAL = 1.0


class ConfigWatcher:
    def __init__(self) -> None:
        self.snapshot = ConfigSnapshot()
        self._path = ""
        self._cipher: Cipher | None = None
        self._watch: asyncio.Task | None = None
        self._from_command_line: set[str] = set()
        self._applied: dict[str, object] = {}
        self._writes: set[asyncio.Task] = set()

    def load(self, loader: Any) -> None:
        loader.add_option(
            "ccany_config_db", str, "data/config.db",
            "SQLite file of the configuration: providers, keys, routes, client keys, users (empty: none).",
        )

    def running(self) -> None:
        options = ctx.options
        # Whatever is not at its default now was given on the command line (or mitmproxy's config.yaml): it wins.
        self._from_command_line = {
            name for name in SETTINGS if name in options and options.default(name) != getattr(options, name)
        }
        self._path = options.ccany_config_db
        if not self._path:
            return
        try:
            self._cipher = Cipher(load_master_key(self._path))
        except SecretError as error:
            logger.error(f"ccany: {error}; upstream keys in {self._path} cannot be used")
        self._reload(self._read())
        self._watch = asyncio.get_running_loop().create_task(self._watch_changes())
        if not self.snapshot.client_keys:
            logger.warning("ccany: no client keys in the config DB: serving clients on this machine (loopback) only")

    def done(self) -> None:
        if self._watch is not None:
            self._watch.cancel()

    def record_key_failure(self, failure: KeyFailure) -> None:
        """Writes a key's cooldown or disabling to the config DB, off the event loop."""
        if not self._path:
            return
        cooling_until = time.time() + failure.cooldown if failure.cooldown else None
        write = functools.partial(self._write_key_failure, failure.key.id, failure.status, failure.message,
                                  cooling_until, failure.disabled)
        self._writes.add(task := asyncio.get_running_loop().create_task(asyncio.to_thread(write)))
        task.add_done_callback(self._writes.discard)

    def _write_key_failure(self, *args: Any) -> None:
        try:
            db = open_config_db(self._path, self._cipher)
            try:
                store.record_key_failure(db, *args)
            finally:
                db.close()
        except sqlite3.Error as error:
            logger.warning(f"ccany: could not record a key's health in {self._path}: {error}")

    def _read(self) -> ConfigSnapshot:
        db = open_config_db(self._path, self._cipher)
        try:
            return read_snapshot(db, self._cipher)
        finally:
            db.close()

    async def _watch_changes(self) -> None:
        conn = sqlite3.connect(self._path)
        try:
            version = conn.execute("PRAGMA data_version").fetchone()[0]
            while True:
                await asyncio.sleep(POLL_INTERVAL)
                now = conn.execute("PRAGMA data_version").fetchone()[0]
                if now == version:
                    continue
                version = now
                try:
                    self._reload(await asyncio.to_thread(self._read))
                except (sqlite3.Error, OSError) as error:
                    logger.warning(f"ccany: could not re-read {self._path}: {error}")
        finally:
            with contextlib.suppress(sqlite3.Error):
                conn.close()

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
