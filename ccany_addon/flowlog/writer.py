"""The flow DB's only write connection: one thread, fed by a bounded queue, writing in batches.

Hooks call `submit`, which never blocks nor wakes the writer: when the queue is full the record is dropped,
counted and logged.
`close` writes everything still queued (mitmproxy's `done` runs on SIGTERM and Ctrl-C).
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from ccany_addon.flowlog.schema import FLOWS, insert_flows, open_db

logger = logging.getLogger("ccany")

BATCH_SIZE = 100
# The writer wakes this often; hooks never wake it, so a flow costs them one append. Under load a longer wait
# makes larger batches, which touch each index and full-text page once per batch (25 Claude Code flows per
# batch instead of 9: 0.165 → 0.140 ms of SQLite CPU per flow); a new flow still shows in Datasette well
# within a second.
POLL_INTERVAL = 0.25
BUSY_RETRIES = 6
PRUNE_EVERY = 3600.0


class FlowWriter[R]:
    def __init__(
        self,
        path: str,
        to_row: Callable[[R], dict],
        queue_size: int = 10_000,
        retention_days: int = 0,
    ) -> None:
        self.path = path
        self.to_row = to_row
        self.retention_days = retention_days
        self.queue_size = queue_size
        self._queue: deque[R] = deque()  # append and popleft are atomic: no lock between hooks and writer
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self.written = 0
        self.dropped = 0
        self.failed = 0  # rows that could not be built or written

    # -- the hooks' side

    def start(self) -> None:
        open_db(self.path).close()  # schema errors surface at start-up, in the caller's thread
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name="ccany-flow-writer", daemon=True)
        self._thread.start()

    def submit(self, record: R) -> bool:
        if len(self._queue) >= self.queue_size:
            self.dropped += 1
            if self.dropped in (1, 10) or self.dropped % 100 == 0:
                logger.warning(
                    f"ccany: flow log queue full ({self.queue_size}); {self.dropped} flows not logged so far"
                )
            return False
        self._queue.append(record)
        return True

    @property
    def depth(self) -> int:
        return len(self._queue)

    def close(self, timeout: float = 60.0) -> None:
        """Write every queued record, then stop."""
        if self._thread is None:
            return
        self._stopping.set()
        self._thread.join(timeout)
        if self._thread.is_alive():
            logger.error(f"ccany: flow log writer did not finish within {timeout} s; {self.depth} flows unwritten")
        self._thread = None

    # -- the writer thread

    def _run(self) -> None:
        db = open_db(self.path)
        next_prune = time.monotonic()
        try:
            while True:
                stopping = self._stopping.is_set()
                while self._queue:
                    batch = [self._queue.popleft() for _ in range(min(BATCH_SIZE, len(self._queue)))]
                    self._write(db, self._rows(batch))
                if self.retention_days > 0 and time.monotonic() >= next_prune:
                    self._prune(db)
                    next_prune = time.monotonic() + PRUNE_EVERY
                if stopping:
                    return
                self._stopping.wait(POLL_INTERVAL)
        finally:
            db.close()

    def _rows(self, batch: list[R]) -> list[dict]:
        rows = []
        for record in batch:
            try:
                rows.append(self.to_row(record))
            except Exception:  # a bad record must not stop the log
                self.failed += 1
                logger.exception("ccany: could not build a flow log row")
        return rows

    def _write(self, db, rows: list[dict]) -> None:
        for attempt in range(BUSY_RETRIES):
            try:
                db.execute("BEGIN IMMEDIATE")
                insert_flows(db, rows)
                if db.conn.in_transaction:
                    db.conn.commit()
                self.written += len(rows)
                return
            except sqlite3.OperationalError as error:
                if db.conn.in_transaction:
                    db.conn.rollback()
                if "locked" not in str(error) and "busy" not in str(error):
                    break
                time.sleep(0.05 * 2**attempt)
            except sqlite3.Error:
                if db.conn.in_transaction:
                    db.conn.rollback()
                logger.exception("ccany: flow log write failed")
                break
        self.failed += len(rows)
        logger.error(f"ccany: {len(rows)} flows could not be written to {self.path}")

    def _prune(self, db) -> None:
        cutoff = (datetime.now(UTC) - timedelta(days=self.retention_days)).strftime("%Y-%m-%d %H:%M:%S")
        try:
            with db.conn:
                deleted = db.execute(f"DELETE FROM {FLOWS} WHERE started_at < ?", [cutoff]).rowcount
        except sqlite3.Error as error:
            logger.warning(f"ccany: pruning the flow log failed: {error}")
            return
        if deleted:
            logger.info(f"ccany: pruned {deleted} flows older than {self.retention_days} days")
