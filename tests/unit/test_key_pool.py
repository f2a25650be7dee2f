"""Key pools: choosing keys, cooldowns from what the upstream said, disabling and re-enabling."""

from __future__ import annotations

import json

import pytest

from ccany_addon.config.snapshot import ConfigSnapshot, Provider, ProviderKey
from ccany_addon.upstreams.key_pool import DEFAULT_COOLDOWN, KeyPools, cooldown_from, duration

NOW = 1_800_000_000.0
KEYS = (ProviderKey(1, "a", "sk-a"), ProviderKey(2, "b", "sk-b"), ProviderKey(3, "c", "sk-c"))


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


def provider(strategy: str = "round-robin", keys: tuple[ProviderKey, ...] = KEYS) -> Provider:
    return Provider(7, "p", "openai", "http", "127.0.0.1", 1, "/v1", None, {}, keys, key_strategy=strategy)


def listing(*key_ids: int) -> ConfigSnapshot:
    """A config snapshot whose enabled keys are these."""
    return ConfigSnapshot(providers={"p": provider(keys=tuple(key for key in KEYS if key.id in key_ids))})


def test_round_robin_takes_turns_and_fill_first_sticks_to_the_first_healthy_key():
    pools = KeyPools(Clock())
    assert [pools.pick(provider()).name for _ in range(4)] == ["a", "b", "c", "a"]
    assert [pools.pick(provider("fill-first")).name for _ in range(3)] == ["a", "a", "a"]


def test_a_429_cools_the_key_for_as_long_as_the_upstream_asked():
    clock = Clock()
    pools = KeyPools(clock)
    failure = pools.failed(KEYS[0], 429, {"retry-after": "20"}, b"", "slow down")
    assert failure.cooldown == 20 and failure.disabled is None
    assert {pools.pick(provider("fill-first")).name for _ in range(5)} == {"b"}
    assert pools.ready_in(provider()) == 0
    clock.now += 20
    assert pools.pick(provider("fill-first")).name == "a"


def test_every_key_cooling_means_no_key_and_the_wait_until_the_first_is_back():
    clock = Clock()
    pools = KeyPools(clock)
    for key, wait in zip(KEYS, ("30", "5", "60"), strict=True):
        pools.failed(key, 429, {"retry-after": wait}, b"", "")
    assert pools.pick(provider()) is None and pools.ready_in(provider()) == 5
    clock.now += 5.5
    assert pools.pick(provider()).name == "b"


def test_5xx_without_advice_cools_for_the_default():
    pools = KeyPools(Clock())
    assert pools.failed(KEYS[0], 503, {}, b"", "").cooldown == DEFAULT_COOLDOWN[500]
    assert pools.failed(KEYS[1], 429, {}, b"", "").cooldown == DEFAULT_COOLDOWN[429]


def test_a_cooldown_recorded_in_the_config_db_is_honoured():
    clock = Clock()
    pools = KeyPools(clock)
    cooling = (ProviderKey(1, "a", "sk-a", cooling_until=NOW + 12), KEYS[1])
    assert pools.pick(provider("fill-first", cooling)).name == "b"
    assert pools.ready_in(provider(keys=cooling[:1])) == 12


def test_an_auth_failure_disables_the_key_until_the_config_db_lists_it_disabled_then_enabled_again():
    pools = KeyPools(Clock())
    failure = pools.failed(KEYS[0], 401, {}, b"", "invalid api key")
    assert failure.disabled and "401" in failure.disabled
    assert pools.ready_in(provider(keys=KEYS[:1])) is None
    pools.forget_disabled(listing(1, 2, 3))  # the gateway's own write has not reached the DB yet: still disabled
    assert pools.pick(provider(keys=KEYS[:1])) is None
    pools.forget_disabled(listing(2, 3))  # the DB now lists it as disabled
    assert pools.pick(provider(keys=KEYS[:1])) is None
    pools.forget_disabled(listing(1, 2, 3))  # an admin re-enabled it
    assert pools.pick(provider(keys=KEYS[:1])).name == "a"


@pytest.mark.parametrize(("headers", "body", "expected"), [
    ({"Retry-After": "7"}, b"", 7),
    ({"retry-after-ms": "1500", "retry-after": "9"}, b"", 1.5),
    ({"retry-after": "Wed, 21 Oct 2027 07:28:00 GMT"}, b"", 1824103680.0 - NOW),
    ({"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "6m0s",
      "x-ratelimit-remaining-tokens": "900", "x-ratelimit-reset-tokens": "1h"}, b"", 360),
    ({"x-ratelimit-reset-tokens": "250ms"}, b"", 0.25),
    ({"anthropic-ratelimit-requests-reset": "2027-01-15T08:00:30Z"}, b"", 30),
    ({}, json.dumps([{"error": {"code": 429, "status": "RESOURCE_EXHAUSTED", "details": [
        {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "37s"}]}}]).encode(), 37),
    ({}, b'{"error": {"message": "slow down"}}', None),
    ({"retry-after": "soon"}, b"", None),
])
def test_cooldown_from_what_the_upstream_said(headers, body, expected):
    result = cooldown_from(headers, body, NOW)
    assert result == pytest.approx(expected) if expected is not None else result is None


def test_openai_durations():
    assert duration("1h2m3.5s") == pytest.approx(3723.5)
    assert duration("20ms") == pytest.approx(0.02)
    assert duration("nonsense") is None
