"""UTC time as our SQLite files store it: `YYYY-MM-DD HH:MM:SS` (the text SQLite's `datetime()` writes), and in the
flow log with milliseconds, `YYYY-MM-DD HH:MM:SS.mmm`. Stored times compare and sort as text, and SQLite's date
functions read both."""

from __future__ import annotations

import time
from datetime import UTC, datetime


def utc_text(seconds: float | None = None) -> str:
    """`seconds` since the epoch (default: now) as UTC text."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(seconds))


def utc_day(seconds: float | None = None) -> str:
    """The UTC day of `seconds` (default: now), `YYYY-MM-DD`: the start of its `utc_text`, so days compare with it."""
    return utc_text(seconds)[:10]


def utc_text_ms(seconds: float) -> str:
    """`seconds` since the epoch as UTC text with milliseconds (a flow's start)."""
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
