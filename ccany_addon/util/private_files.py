"""Files only their owner may read: the DBs hold every conversation and every (encrypted) upstream key."""

from __future__ import annotations

import os
from pathlib import Path


def create_private(path: str | Path) -> bool:
    """Create `path` empty with mode 0600 unless it exists; True when this call created it.

    SQLite opens an empty file as a new database and gives the -wal, -shm and -journal files it creates later
    the main file's mode, so making the file before SQLite does is enough. An existing file keeps its mode: it
    may belong to someone else, and changing it silently is not ours to do."""
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    try:
        os.fchmod(descriptor, 0o600)  # our own new file: an unusual umask may not take 0600 away
    finally:
        os.close(descriptor)
    return True
