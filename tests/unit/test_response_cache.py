"""The response cache: exact keys, TTL, and its bounds."""

from __future__ import annotations

from ccany_addon.proxy.response_cache import ResponseCache, cache_key


class Clock:
    now = 100.0

    def __call__(self) -> float:
        return self.now


def test_keys_separate_clients_upstreams_models_and_bodies():
    base = cache_key("1", "openai", "gpt-4o", b"{}")
    assert base == cache_key("1", "openai", "gpt-4o", b"{}")
    assert len({base, cache_key("2", "openai", "gpt-4o", b"{}"), cache_key("1", "azure", "gpt-4o", b"{}"),
                cache_key("1", "openai", "gpt-4o-mini", b"{}"), cache_key("1", "openai", "gpt-4o", b"{ }"),
                cache_key("1o", "penai", "gpt-4o", b"{}")}) == 6


def test_off_by_default_and_entries_expire():
    assert not ResponseCache().enabled
    clock = Clock()
    cache = ResponseCache(ttl=10, clock=clock)
    cache.put(b"k", b"answer")
    assert cache.get(b"k") == b"answer"
    clock.now += 10.5
    assert cache.get(b"k") is None and len(cache) == 0


def test_bounded_by_entries_and_bytes_least_recently_used_first():
    cache = ResponseCache(ttl=60, max_entries=2, max_bytes=10)
    cache.put(b"a", b"1111")
    cache.put(b"b", b"2222")
    cache.get(b"a")
    cache.put(b"c", b"3333")  # over two entries: b was used least recently
    assert (cache.get(b"a"), cache.get(b"b"), cache.get(b"c")) == (b"1111", None, b"3333")
    cache.put(b"d", b"4444444")  # over ten bytes
    assert len(cache) == 1 and cache.get(b"d") == b"4444444"
    cache.put(b"huge", b"x" * 11)  # never fits
    assert cache.get(b"huge") is None
    cache.resize(0, 2, 10)  # turned off: emptied
    assert len(cache) == 0 and not cache.enabled
