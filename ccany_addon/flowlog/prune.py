"""Retention: flows older than the retention period go, then the parts no kept flow can name, a small batch at a
time so that the writer goes on writing new flows in between.

A part's `last_used` is the last UTC day a flow naming it was written. A kept flow started on or after the cutoff
and was written no earlier, so every part it names was used on or after the cutoff's day: a part last used
before that day is named by no kept flow (a part may outlive its last flow by up to a day).
"""

from __future__ import annotations

import logging
import sqlite3
import time
from dataclasses import dataclass

import sqlite_utils

from ccany_addon.flowlog.schema import FLOWS, PARTS
from ccany_addon.util.utc import utc_day, utc_text

logger = logging.getLogger("ccany")

PRUNE_BATCH = 500  # rows per transaction: a few milliseconds of the writer's time


@dataclass(slots=True)
class Pruning:
    """One pass of pruning in progress: `step` does one batch and says whether there is more."""

    retention_days: int
    cutoff: str = ""  # flows started before it go
    cutoff_day: str = ""  # parts last used before it go
    flows: int = 0
    parts: int = 0

    def __post_init__(self) -> None:
        at = time.time() - self.retention_days * 86400
        self.cutoff, self.cutoff_day = utc_text(at), utc_day(at)

    def step(self, db: sqlite_utils.Database) -> bool:
        """Delete one batch (old flows first, then unnamed parts); False once the pass is over or failed."""
        try:
            with db.conn:
                deleted = db.execute(
                    f"DELETE FROM [{FLOWS}] WHERE rowid IN "
                    f"(SELECT rowid FROM [{FLOWS}] WHERE started_at < ? LIMIT {PRUNE_BATCH})", [self.cutoff]).rowcount
                self.flows += deleted
                if not deleted:
                    deleted = db.execute(
                        f"DELETE FROM [{PARTS}] WHERE rowid IN (SELECT rowid FROM [{PARTS}] WHERE last_used < ? "
                        f"LIMIT {PRUNE_BATCH})", [self.cutoff_day]).rowcount
                    self.parts += deleted
        except sqlite3.Error as error:
            logger.warning(f"ccany: pruning the flow log failed: {error}")
            return False
        if deleted:
            return True
        if self.flows or self.parts:
            logger.info(f"ccany: pruned {self.flows} flows older than {self.retention_days} days "
                        f"and {self.parts} body parts no kept flow names")
        return False
