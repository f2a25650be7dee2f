"""UTC time as the config DB stores it: `YYYY-MM-DD HH:MM:SS`, the text SQLite's `datetime()` writes, so stored
times compare and sort as text. (The flow log keeps milliseconds: flowlog/record.py.)"""

from __future__ import annotations

import time


def utc_text(seconds: float | None = None) -> str:
    """`seconds` since the epoch (default: now) as UTC text."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(seconds))
