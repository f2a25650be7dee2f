"""The flow DB's only write connection: one thread, fed by a bounded queue, writing in batches.

Hooks call `submit`, which never blocks nor wakes the writer: when the queue is full the record is dropped,
counted and logged.
A batch the database refuses (locked, disk full) is kept and tried again with backoff while new flows queue; a
row whose values cannot be written is stored as text with a note (`store.py`) instead of failing its batch.
`close` writes everything still queued (mitmproxy's `done` runs on SIGTERM and Ctrl-C) and truncates the WAL.
Every flow that never becomes a row is counted: `dropped` (queue full, or submitted after `close`) or `failed`.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import sqlite_utils

from ccany_addon.flowlog.bodies import BodyPacker
from ccany_addon.flowlog.part_store import PartStore, previous_body
from ccany_addon.flowlog.prune import Pruning
from ccany_addon.flowlog.schema import BUSY_TIMEOUT_MS, open_db
from ccany_addon.flowlog.store import StoreUnavailable, store_batch
from ccany_addon.util.os_thread_name import name_os_thread

logger = logging.getLogger("ccany")

OS_THREAD_NAME = "ccany-writer"  # what `top -H` shows (scripts/bench finds the thread by it)
BATCH_SIZE = 100
# The writer wakes this often; hooks never wake it, so a flow costs them one append. Under load a longer wait
# makes larger batches, which touch each index and full-text page once per batch (25 Claude Code flows per
# batch instead of 9: 0.165 → 0.140 ms of SQLite CPU per flow); a new flow still shows in Datasette well
# within a second.
POLL_INTERVAL = 0.25
PRUNE_EVERY = 3600.0
# A truncating checkpoint waits for readers through the busy handler: a reader mid-query makes it try again at
# the next period rather than stall the writer for the usual busy timeout.
CHECKPOINT_BUSY_MS = 200


@dataclass(frozen=True, slots=True)
class Backoff:
    """When a batch the database refused is tried again: after `first` seconds, doubling up to `longest`, until
    `give_up_after` seconds have passed since it first failed; its flows are then counted as failed. While it
    waits, new flows queue (beyond the queue size they are dropped and counted). A stop waits `on_stop` seconds
    at most for a refusing database."""

    first: float = 0.05
    longest: float = 30.0
    give_up_after: float = 300.0
    on_stop: float = 5.0

    def delay(self, failures: int) -> float:
        return min(self.first * 2 ** (failures - 1), self.longest)


@dataclass(frozen=True, slots=True)
class Checkpoints:
    """A reader holding an old snapshot keeps the WAL from restarting, so every write makes it longer; once the
    reader is gone a truncating checkpoint gives the space back. Tried every `every` seconds or `rows` rows
    written, and on close (`journal_size_limit` in `open_db` bounds what a restart leaves behind)."""

    every: float = 30.0
    rows: int = 5000


@dataclass(slots=True)
class _Pending:
    """A batch of built rows, kept until the database takes it."""

    rows: list[dict]
    parts: dict[str, bytes]  # what the rows' manifests name
    failures: int = 0
    first_failure: float = 0.0
    retry_at: float = 0.0


def describe_failure(error: BaseException) -> str:
    """An exception's type and where it was raised, for a log line: its message may quote a body, a header or
    an upstream answer, and with them a key."""
    frames = traceback.extract_tb(error.__traceback__)
    where = f" at {os.path.basename(frames[-1].filename)}:{frames[-1].lineno} ({frames[-1].name})" if frames else ""
    return f"{type(error).__name__}{where}"


class FlowWriter[R]:
    def __init__(
        self,
        path: str,
        to_row: Callable[[R], dict],
        queue_size: int = 10_000,
        retention_days: int = 0,
        *,
        salvage: Callable[[R, Exception], dict] | None = None,
        scrub: Callable[[str], str] = str,
        size: Callable[[R], int] = lambda record: 0,
        queue_bytes: int = 0,
        backoff: Backoff = Backoff(),
        checkpoints: Checkpoints = Checkpoints(),
    ) -> None:
        """`salvage` makes a smaller row for a record `to_row` failed on; `scrub` masks secrets in a value that
        has to be stored as text; `size` says how many bytes a record holds, and the queue takes no more than
        `queue_bytes` of them (0: no limit) besides `queue_size` records."""
        self.path = path
        self.to_row = to_row
        self.salvage = salvage
        self.scrub = scrub
        self.retention_days = retention_days
        self.queue_size = queue_size
        self.size = size
        self.queue_bytes = queue_bytes
        # Bytes queued = in - out; each counter has one writer (the hooks' thread, the writer thread): no lock.
        self._bytes_in = 0
        self._bytes_out = 0
        self.backoff = backoff
        self.checkpoints = checkpoints
        self._queue: deque[R] = deque()  # append and popleft are atomic: no lock between hooks and writer
        self._stopping = threading.Event()
        self._stop_began = 0.0
        self._closed = False
        self._thread: threading.Thread | None = None
        self._pending: _Pending | None = None
        self._packer = BodyPacker()
        self._part_store = PartStore()
        self._unchecked_rows = 0  # written since the last complete checkpoint
        self._next_checkpoint = 0.0
        self.written = 0
        self.degraded = 0  # written with values as text, without bodies, or as a salvaged minimal row
        self.dropped = 0  # never queued: the queue was full or the writer closed
        self.failed = 0  # queued but never written: not buildable, refused by every attempt, or left at a stop

    # -- the hooks' side

    def start(self) -> None:
        open_db(self.path).close()  # schema errors surface at start-up, in the caller's thread
        if self.path != ":memory:" and os.stat(self.path).st_mode & 0o077:
            logger.warning(f"ccany: {self.path} is readable by other users; it holds every conversation "
                           "(chmod 600 it and its -wal and -shm files)")
        self._stopping.clear()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="ccany-flow-writer", daemon=True)
        self._thread.start()

    def submit(self, record: R) -> bool:
        if self._closed:
            self.dropped += 1
            logger.warning(f"ccany: a flow ended after the flow log closed; {self.dropped} flows not logged so far")
            return False
        size = self._safe_size(record)
        full = len(self._queue) >= self.queue_size or \
            (self.queue_bytes and self._bytes_in - self._bytes_out + size > self.queue_bytes and self._queue)
        if full:
            self.dropped += 1
            if self.dropped in (1, 10) or self.dropped % 100 == 0:
                logger.warning(
                    f"ccany: flow log queue full ({len(self._queue)} flows, {self.queued_bytes // 1024} KB); "
                    f"{self.dropped} flows not logged so far"
                )
            return False
        self._bytes_in += size
        self._queue.append(record)
        return True

    @property
    def queued_bytes(self) -> int:
        return self._bytes_in - self._bytes_out

    @property
    def depth(self) -> int:
        """Flows waiting to be written, a refused batch included."""
        pending = self._pending  # read once: the writer thread may clear it meanwhile
        return len(self._queue) + (len(pending.rows) if pending else 0)

    def close(self, timeout: float = 60.0) -> None:
        """Write every queued record, then stop."""
        self._closed = True
        if self._thread is None:
            return
        self._stop_began = time.monotonic()
        self._stopping.set()
        self._thread.join(timeout)
        if self._thread.is_alive():
            left = self.depth
            self.failed += left
            logger.error(f"ccany: flow log writer did not finish within {timeout} s; {left} flows unwritten")
        self._thread = None

    # -- the writer thread

    def _run(self) -> None:
        name_os_thread(OS_THREAD_NAME)
        db = open_db(self.path)
        next_prune = time.monotonic()
        pruning: Pruning | None = None
        self._next_checkpoint = time.monotonic() + self.checkpoints.every
        try:
            while True:
                stopping = self._stopping.is_set()
                self._drain(db, stopping)
                if self.retention_days > 0 and time.monotonic() >= next_prune and pruning is None:
                    pruning = Pruning(self.retention_days)
                    next_prune = time.monotonic() + PRUNE_EVERY
                # one batch per turn of the loop, and none while the database refuses flows: new flows go first
                while pruning is not None and self._pending is None:
                    if not pruning.step(db):
                        pruning = None
                    elif self._queue and not stopping:
                        break
                if stopping:
                    break
                now = time.monotonic()
                if self._unchecked_rows and (
                    self._unchecked_rows >= self.checkpoints.rows or now >= self._next_checkpoint
                ):
                    self._checkpoint(db)
                wait = POLL_INTERVAL if self._pending is None else max(0.0, self._pending.retry_at - now)
                self._stopping.wait(min(wait, POLL_INTERVAL))
            self._checkpoint(db)
        finally:
            db.close()

    def _drain(self, db: sqlite_utils.Database, stopping: bool) -> None:
        """Write queued flows until the queue is empty or the database refuses a batch that must wait."""
        while True:
            if self._pending is None:
                if not self._queue:
                    return
                batch = [self._queue.popleft() for _ in range(min(BATCH_SIZE, len(self._queue)))]
                rows = self._rows(batch)
                self._bytes_out += sum(map(self._safe_size, batch))
                self._pending = _Pending(rows, self._packed(rows, db))
            pending = self._pending
            wait = pending.retry_at - time.monotonic()
            if wait > 0:
                if not stopping:
                    return
                time.sleep(min(wait, max(0.0, self._stop_began + self.backoff.on_stop - time.monotonic())))
            try:
                stored = store_batch(db, pending.rows, self.scrub, pending.parts, self._part_store)
            except StoreUnavailable as error:
                self._refused(pending, error, stopping)
                continue
            except Exception as error:  # not the database's fault nor one row's: lose this batch, not the thread
                self._pending = None
                self.failed += len(pending.rows)
                logger.error(f"ccany: flow log: a batch of {len(pending.rows)} flows could not be written: "
                             f"{describe_failure(error)}")
                continue
            self._pending = None
            self.written += stored.written
            self.degraded += stored.degraded
            self.failed += stored.failed
            self._unchecked_rows += stored.written
            if stored.degraded or stored.failed:
                logger.warning(f"ccany: flow log: {stored.degraded} rows stored with values as text or without "
                               f"bodies, {stored.failed} could not be stored ({self.failed} flows lost so far)")
            if pending.failures:
                logger.info(f"ccany: flow log: a refused batch was written after {pending.failures} retries")

    def _refused(self, pending: _Pending, error: StoreUnavailable, stopping: bool) -> None:
        """Schedule the refused batch again, or give it up (and at a stop everything still queued)."""
        now = time.monotonic()
        if pending.failures == 0:
            pending.first_failure = now
            logger.warning(f"ccany: flow log: {self.path} refused a batch of {len(pending.rows)} flows ({error}); "
                           "retrying with backoff")
        pending.failures += 1
        limit = self._stop_began + self.backoff.on_stop if stopping else \
            pending.first_failure + self.backoff.give_up_after
        if now < limit:
            pending.retry_at = now + self.backoff.delay(pending.failures)
            return
        lost = len(pending.rows)
        self._pending = None
        if stopping:
            lost += len(self._queue)
            self._bytes_out += sum(map(self._safe_size, self._queue))
            self._queue.clear()
        self.failed += lost
        logger.error(f"ccany: flow log: {lost} flows could not be written to {self.path} after "
                     f"{pending.failures} attempts ({error}); {self.failed} flows lost so far")

    def _rows(self, batch: list[R]) -> list[dict]:
        rows = []
        for record in batch:
            try:
                rows.append(self.to_row(record))
                continue
            except Exception as error:  # a bad record must not stop the log
                failure = error
            logger.error(f"ccany: could not build a flow log row: {describe_failure(failure)}")
            try:
                if self.salvage is not None:
                    rows.append(self.salvage(record, failure))
                    self.degraded += 1
                    continue
            except Exception as error:
                logger.error(f"ccany: could not salvage a flow log row: {describe_failure(error)}")
            self.failed += 1
        return rows

    def _safe_size(self, record: R) -> int:
        try:
            return self.size(record)
        except Exception:  # counted on the way in: a record is not changed after it is queued
            return 0

    def _packed(self, rows: list[dict], db: sqlite_utils.Database) -> dict[str, bytes]:
        """Turn the rows' bodies into manifests; the parts they name. A row that cannot be packed keeps its bodies
        inline, as rows did before the parts store."""
        parts: dict[str, bytes] = {}
        for row in rows:
            before = dict(row)
            try:
                self._packer.pack_row(row, parts, lambda row, name: self._previous_body(db, row, name))
            except Exception as error:
                logger.error(f"ccany: flow log: a flow's bodies are kept whole: {describe_failure(error)}")
                row.clear()
                row.update({column: value.decode("utf-8", "replace") if isinstance(value, bytes) else value
                            for column, value in before.items()})
        return parts

    @staticmethod
    def _previous_body(db: sqlite_utils.Database, row: dict, name: str) -> bytes | None:
        """A session's previous request, read back for a session the packer does not remember (after a restart);
        None when the database cannot give it: the row is packed without it."""
        try:
            return previous_body(db.conn, row, name)
        except sqlite3.Error as error:
            logger.warning(f"ccany: flow log: a session's previous request could not be read: {error}")
            return None

    def _checkpoint(self, db: sqlite_utils.Database) -> None:
        """Copy the WAL into the DB and truncate it, unless a reader still needs it (then: at the next period)."""
        self._next_checkpoint = time.monotonic() + self.checkpoints.every
        try:
            db.execute(f"PRAGMA busy_timeout = {CHECKPOINT_BUSY_MS}")
            try:
                blocked = db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
            finally:
                db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        except sqlite3.Error as error:
            logger.warning(f"ccany: flow log checkpoint failed: {error}")
            return
        if not blocked:
            self._unchecked_rows = 0
