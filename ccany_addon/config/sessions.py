"""Datasette login sessions (ccany_addon/web/accounts.py uses these): revocable session versions, same-site
`next=` targets and login throttling.

- Each user has a `session_version` (config schema v5). The signed `ds_actor` cookie carries the version it was
  issued with; a cookie whose version is not the current one is anonymous. Logging out bumps the version, and so
  does any password change (a trigger), so both end every session of that user, on every device.
- `safe_next` keeps a post-login redirect on this site.
- `LoginThrottle` refuses attempts for a while after repeated failures for one username or from one address.
"""

from __future__ import annotations

import math
import re
import time
import weakref
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Any

import sqlite_utils

VERSION_KEY = "sv"  # the session version inside the cookie's actor; never shown (stripped when the actor resolves)


def session_version(db: sqlite_utils.Database, username: str) -> int | None:
    row = db.execute("SELECT session_version FROM users WHERE username = ?", [username]).fetchone()
    return None if row is None else int(row[0])


def end_sessions(db: sqlite_utils.Database, username: str) -> None:
    """Every cookie issued to `username` so far stops working (logout: a copied or stolen cookie dies too)."""
    db.execute("UPDATE users SET session_version = session_version + 1 WHERE username = ?", [username])


def cookie_is_current(actor: dict, current: int) -> bool:
    """Whether a cookie's actor carries the user's current session version. Cookies signed before versions existed
    carry none: they count as version 0, valid until the user's first logout or password change."""
    version = actor.get(VERSION_KEY, 0)
    return type(version) is int and version == current


def without_version(actor: dict) -> dict:
    return {name: value for name, value in actor.items() if name != VERSION_KEY}


# ---------------------------------------------------------------------------------------------------------------
# next= after login

# C0 controls, DEL and C1 controls: browsers drop tab, CR and LF inside URLs, so `/\t/evil.example/` would be
# followed as `//evil.example/`, another site.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def safe_next(value: str | None, default: str) -> str:
    """`value` without control characters if it is a path on this site, else `default`. Browsers read a leading
    `//` or `/\\` as another host, so those are refused."""
    cleaned = _CONTROL.sub("", value or "")
    if cleaned.startswith("/") and not cleaned.startswith(("//", "/\\")):
        return cleaned
    return default


# ---------------------------------------------------------------------------------------------------------------
# Login throttling, in process memory

USER_FAILURES = 5  # failed logins for one username within WINDOW before its attempts are refused
ADDRESS_FAILURES = 20  # the same from one client address (higher: a NAT or proxy may hide several people)
WINDOW = 300.0  # seconds
MAX_KEYS = 10_000  # usernames and addresses remembered at most; the least recently failed are forgotten first


class LoginThrottle:
    """Failure times per key ("user:<name>", "addr:<address>"), the last `limit` of each within `window`. A key is
    blocked while it has `limit` failures younger than `window`; it is free again once the oldest of them ages out.
    Refused attempts are not counted, so a locked-out user gets in right after the window however often an
    attacker keeps trying."""

    def __init__(self, *, user_limit: int = USER_FAILURES, address_limit: int = ADDRESS_FAILURES,
                 window: float = WINDOW, max_keys: int = MAX_KEYS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.user_limit, self.address_limit = user_limit, address_limit
        self.window, self.max_keys, self.clock = window, max_keys, clock
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def _keys(self, username: str, address: str | None) -> list[tuple[str, int]]:
        keys = [(f"user:{username}", self.user_limit)]
        if address:
            keys.append((f"addr:{address}", self.address_limit))
        return keys

    def retry_after(self, username: str, address: str | None) -> int:
        """Whole seconds to wait before an attempt for `username` from `address` is accepted; 0: go ahead."""
        now, wait = self.clock(), 0.0
        for key, limit in self._keys(username, address):
            times = self._failures.get(key)
            if times is not None and len(times) >= limit:
                wait = max(wait, times[-limit] + self.window - now)
        return math.ceil(wait) if wait > 0 else 0

    def failed(self, username: str, address: str | None) -> None:
        now = self.clock()
        for key, _limit in self._keys(username, address):
            times = self._failures.pop(key, None)
            if times is None:
                self._make_room()
                times = deque(maxlen=max(self.user_limit, self.address_limit))
            times.append(now)
            self._failures[key] = times  # at the end: the most recently failed key

    def succeeded(self, username: str) -> None:
        """A correct password clears the username's failures; the address keeps its own (one valid account must not
        buy an address more guesses at other accounts)."""
        self._failures.pop(f"user:{username}", None)

    def _make_room(self) -> None:
        if len(self._failures) < self.max_keys:
            return
        horizon = self.clock() - self.window
        for key in [key for key, times in self._failures.items() if times[-1] <= horizon]:
            del self._failures[key]
        while len(self._failures) >= self.max_keys:
            self._failures.popitem(last=False)

    def __len__(self) -> int:
        return len(self._failures)


_throttles: weakref.WeakKeyDictionary[Any, LoginThrottle] = weakref.WeakKeyDictionary()


def throttle_for(datasette: Any) -> LoginThrottle:
    """The throttle of one Datasette instance (tests build many in one process)."""
    return _throttles.setdefault(datasette, LoginThrottle())
