"""An exact-match cache of non-streamed answers: the same client, upstream, model and request bytes within the
TTL get the same answer without asking the upstream. Bounded by entries and bytes, least recently used out."""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable


def cache_key(client: str, provider: str, upstream_model: str, request_body: bytes) -> bytes:
    digest = hashlib.sha256()
    for part in (client.encode(), provider.encode(), upstream_model.encode()):
        digest.update(len(part).to_bytes(4, "big") + part)
    digest.update(request_body)
    return digest.digest()


class ResponseCache:
    def __init__(self, ttl: float = 0, max_entries: int = 1000, max_bytes: int = 64 * 1024 * 1024,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl, self.max_entries, self.max_bytes = ttl, max_entries, max_bytes
        self.clock = clock
        self._entries: OrderedDict[bytes, tuple[float, bytes]] = OrderedDict()
        self._bytes = 0

    @property
    def enabled(self) -> bool:
        return self.ttl > 0 and self.max_entries > 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: bytes) -> bytes | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        stored_at, body = entry
        if self.clock() - stored_at > self.ttl:
            self._drop(key)
            return None
        self._entries.move_to_end(key)
        return body

    def put(self, key: bytes, body: bytes) -> None:
        if not self.enabled or len(body) > self.max_bytes:
            return
        if key in self._entries:
            self._drop(key)
        self._entries[key] = (self.clock(), body)
        self._bytes += len(body)
        while len(self._entries) > self.max_entries or self._bytes > self.max_bytes:
            self._drop(next(iter(self._entries)))

    def resize(self, ttl: float, max_entries: int, max_bytes: int) -> None:
        self.ttl, self.max_entries, self.max_bytes = ttl, max_entries, max_bytes
        while self._entries and (len(self._entries) > max_entries or self._bytes > max_bytes or not self.enabled):
            self._drop(next(iter(self._entries)))

    def _drop(self, key: bytes) -> None:
        _, body = self._entries.pop(key)
        self._bytes -= len(body)
