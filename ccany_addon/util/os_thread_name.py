"""A thread's name as the OS shows it (`top -H`, `ps -L`, `/proc/<pid>/task/<tid>/comm`): Python 3.12 keeps
`threading.Thread.name` to itself, so every thread of the proxy shows as `mitmdump`. Linux only (prctl), at most 15
bytes; elsewhere, or if the call fails, nothing happens."""

from __future__ import annotations

import contextlib
import ctypes
import sys

_PR_SET_NAME = 15
NAME_BYTES = 15


def name_os_thread(name: str) -> None:
    """Name the calling thread."""
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):  # no libc, or no prctl in it: the name stays
        ctypes.CDLL(None).prctl(_PR_SET_NAME, name.encode()[:NAME_BYTES], 0, 0, 0)
