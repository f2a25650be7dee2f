"""A restarted gateway that counts in its own memory starts with what its client keys (and their owners) spent this
UTC month, read back from its flow DB; otherwise a restart would hand every key a fresh budget. (Redis keeps the
counts itself.)"""

from __future__ import annotations

import logging
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

from ccany_addon.config.snapshot import ConfigSnapshot
from ccany_addon.limits.admission import budgets
from ccany_addon.limits.shared_state import LocalState

logger = logging.getLogger("ccany")

_SPENT = """SELECT client_key_id, substr(started_at, 1, 10) AS day, sum(cost_usd)
FROM flows WHERE started_at >= ? AND client_key_id IS NOT NULL AND cost_usd > 0
GROUP BY client_key_id, day"""


def seed_spend(state: LocalState, flow_db: str, snapshot: ConfigSnapshot, now: float) -> int:
    """Add this month's spend of every key with a budget (or an owner with one) to `state`; how many keys."""
    keys = {str(key.id): key for key in snapshot.client_keys.values()
            if any(budgets(payer.scope, payer.limits, now) for payer in key.payers)}
    if not keys or not flow_db or not Path(flow_db).exists():
        return 0
    month_start = datetime.fromtimestamp(now, UTC).strftime("%Y-%m-01")
    try:
        with sqlite3.connect(f"file:{flow_db}?mode=ro", uri=True) as conn:
            rows = conn.execute(_SPENT, [month_start]).fetchall()
    except sqlite3.Error as error:  # no flows table yet, locked, damaged: start from nothing, and say so
        logger.warning(f"ccany: this month's spend could not be read back from {flow_db}: {error}")
        return 0
    seeded = set()
    for key_id, day, spent in rows:
        if (key := keys.get(key_id)) is None:
            continue
        at = datetime.fromisoformat(day).replace(hour=12, tzinfo=UTC).timestamp()
        state.count_now([(budget.counter, spent, budget.ttl) for payer in key.payers
                         for budget in budgets(payer.scope, payer.limits, at)], None)
        seeded.add(key_id)
    return len(seeded)
