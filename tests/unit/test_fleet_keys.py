"""Provider keys across gateway processes sharing state: a key disabled by an upstream in one process is disabled
in the others (and written to their config DBs); re-enabled by an admin in any one, it comes back in all of them;
a switch never touches a key added after it, nor one an admin disabled by hand."""

from __future__ import annotations

import asyncio
from pathlib import Path

from ccany_addon.config import store
from ccany_addon.config.snapshot import ConfigSnapshot, Provider, ProviderKey
from ccany_addon.limits.fleet_keys import FleetKeys
from ccany_addon.limits.shared_state import KeySwitch, LocalState
from ccany_addon.upstreams.key_pool import KeyFailure, KeyPools
from ccany_addon.util.utc import utc_text
from tests.conftest import config_db

NOW = 1_800_000_000.0
BAD, GOOD = ProviderKey(1, "first", "sk-first", created_at=NOW - 3600), ProviderKey(2, "second", "sk-second")


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


class ConfigWrites:
    """What a process asked its config DB to write (the ConfigWatcher's two write methods)."""

    def __init__(self) -> None:
        self.failures: list[KeyFailure] = []
        self.enabled: list[tuple[str, float]] = []

    def record_key_failure(self, failure: KeyFailure) -> None:
        self.failures.append(failure)

    def enable_switched_key(self, name: str, at: float) -> None:
        self.enabled.append((name, at))


class Process:
    """One gateway process: its key pools, its config DB's snapshot, the writes it asked for."""

    def __init__(self, shared: LocalState, clock: Clock, keys: tuple[ProviderKey, ...] = (BAD, GOOD)) -> None:
        self.pools = KeyPools(clock)
        self.config = ConfigWrites()
        self.listed(*keys)
        self.fleet = FleetKeys(lambda: shared, self.pools, lambda: self.snapshot, self.config, clock)  # type: ignore

    def listed(self, *keys: ProviderKey) -> None:
        """The config DB now lists these keys as enabled."""
        provider = Provider(7, "pool", "openai", "http", "127.0.0.1", 1, "/v1", None, {}, keys)
        self.snapshot = ConfigSnapshot(providers={"pool": provider})
        self.provider = provider

    def refused(self, key: ProviderKey, status: int = 401) -> None:
        failure = self.pools.failed(key, status, {}, b"", "Incorrect API key provided")
        asyncio.run(self.fleet.failed(self.provider, failure))

    def refresh(self) -> None:
        asyncio.run(self.fleet.refresh())


def test_a_key_disabled_in_one_process_is_disabled_in_the_others_and_in_their_config_db():
    shared, clock = LocalState(), Clock()
    east, west = Process(shared, clock), Process(shared, clock)
    east.refused(BAD)
    west.refresh()
    assert west.pools.is_disabled(BAD) and west.pools.pick(west.provider) == GOOD
    [written] = west.config.failures
    assert written.key == BAD and written.status == 401
    assert written.disabled == "upstream answered 401: Incorrect API key provided (seen by another gateway process)"
    west.refresh()  # a switch is acted on once
    assert len(west.config.failures) == 1
    east.refresh()  # its own switch: nothing more to do
    assert east.config.failures == [] and east.config.enabled == []


def test_a_key_re_enabled_in_one_process_comes_back_in_the_others():
    shared, clock = LocalState(), Clock()
    east, west = Process(shared, clock), Process(shared, clock)
    east.refused(BAD)
    west.refresh()
    east.listed(GOOD)  # each config DB now lists the key as disabled
    west.listed(GOOD)
    east.refresh()
    west.refresh()
    clock.now += 60
    west.listed(BAD, GOOD)  # an admin re-enabled it in west's config DB
    west.refresh()
    assert west.pools.pick(west.provider) == BAD
    assert shared.switches_now()["pool/first"] == KeySwitch(True, NOW + 60)
    east.refresh()
    assert east.config.enabled == [("pool/first", NOW + 60)]  # east's config DB is told to re-enable it...
    east.listed(BAD, GOOD)  # ...which it then lists
    clock.now += 1
    east.refresh()
    assert east.pools.pick(east.provider) == BAD
    assert shared.switches_now()["pool/first"] == KeySwitch(True, NOW + 60)  # and east does not echo it back


def test_a_switch_leaves_alone_a_key_added_after_it():
    shared, clock = LocalState(), Clock()
    east = Process(shared, clock)
    east.refused(BAD)
    replaced = ProviderKey(3, "first", "sk-new", created_at=NOW + 10)  # an admin replaced the key under its name
    later = Process(shared, clock, (replaced, GOOD))  # a process started afterwards reads every switch
    later.refresh()
    assert not later.pools.is_disabled(replaced) and later.config.failures == []


def test_a_cooldown_is_shared_and_a_failure_that_is_neither_tells_nothing():
    shared, clock = LocalState(), Clock()
    east, west = Process(shared, clock), Process(shared, clock)
    east.refused(BAD, 429)
    west.refresh()
    assert west.pools.pick(west.provider) == GOOD and not west.pools.is_disabled(BAD)
    assert east.fleet.failed(east.provider, KeyFailure(BAD, 400)) is None


def test_the_config_db_re_enables_only_a_key_a_gateway_disabled_before_the_switch(tmp_path: Path):
    db = config_db(tmp_path / "config.db")
    store.add_provider(db, "test", "pool", "http://127.0.0.1:1/v1")
    first = store.set_provider_key(db, "test", "pool", "sk-first-0123456789", name="first")
    by_hand = store.set_provider_key(db, "test", "pool", "sk-hand-0123456789", name="by hand")
    store.record_key_failure(db, first, 401, "bad key", None, "upstream answered 401: bad key")
    store.set_key_enabled(db, "admin", by_hand, False)
    failed_at = NOW  # what record_key_failure wrote, as the switch's clock reads it
    db["provider_keys"].update(first, {"last_failure_at": utc_text(failed_at)})
    store.enable_switched_key(db, "pool/first", failed_at - 60)  # a switch older than the failure: ignored
    store.enable_switched_key(db, "pool/by hand", failed_at + 60)  # disabled by hand: ignored
    assert [row["enabled"] for row in db["provider_keys"].rows_where(order_by="id")] == [0, 0]
    store.enable_switched_key(db, "pool/first", failed_at + 60)
    row = db["provider_keys"].get(first)
    assert row["enabled"] == 1 and row["disabled_reason"] is None
    enabled_by_gateway = "SELECT target FROM audit WHERE actor = 'gateway' AND action = 'enable provider key'"
    assert db.execute(enabled_by_gateway).fetchall() == [(f"provider_keys/{first}",)]
