"""Sessions end when they should (logout, password change), `next=` stays on this site, failed logins are
throttled, and API tokens expire: through Datasette's in-process client, as a browser or a script would."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
import sqlite_utils

from ccany_addon.config import sessions, store
from ccany_addon.config.schema import MIGRATIONS, open_config_db
from ccany_addon.util.sqlite_migrations import migrate
from tests.conftest import secret
from tests.datasette.accounts import ADMIN, VIEWER, datasette_for, error_text, login, make_config, session
from tests.datasette.conftest import FlowLog

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def sent_to_login(response) -> bool:
    return response.status_code == 302 and response.headers["location"].startswith("/-/login")


async def test_logout_ends_every_session_of_the_user(flow_log: FlowLog, tmp_path: Path) -> None:
    config = make_config(tmp_path / "config.db")
    ds = datasette_for(flow_log.path, config)
    laptop, phone = await session(ds, *VIEWER), await session(ds, *VIEWER)
    admin = await session(ds, *ADMIN)
    assert (await ds.client.get("/-/dashboard", cookies=laptop)).status_code == 200
    assert (await ds.client.get("/-/actor.json", cookies=laptop)).json()["actor"] == {"id": VIEWER[0],
                                                                                      "role": "viewer"}

    assert (await ds.client.post("/-/logout", cookies=laptop)).status_code == 302
    # The cookie the browser was told to drop, replayed (a copy, a thief), and the other device's: login page.
    assert sent_to_login(await ds.client.get("/-/dashboard", cookies=laptop))
    assert sent_to_login(await ds.client.get("/-/dashboard", cookies=phone))
    assert (await ds.client.get("/-/actor.json", cookies=laptop)).json()["actor"] is None
    assert (await ds.client.get("/ccany/flows.json?_size=1", cookies=phone)).status_code == 403
    # Another user is untouched; logging in again gives a working session.
    assert (await ds.client.get("/-/admin", cookies=admin)).status_code == 200
    again = await session(ds, *VIEWER)
    assert (await ds.client.get("/-/dashboard", cookies=again)).status_code == 200
    assert sent_to_login(await ds.client.get("/-/dashboard", cookies=laptop))


async def test_a_password_change_ends_the_other_sessions(flow_log: FlowLog, tmp_path: Path) -> None:
    config = make_config(tmp_path / "config.db")
    ds = datasette_for(flow_log.path, config)
    here, elsewhere = await session(ds, *VIEWER), await session(ds, *VIEWER)
    new = secret("viewer-new-password-9")
    changed = await ds.client.post("/-/password", cookies=here,
                                   data={"current": VIEWER[1], "password": new, "password2": new})
    assert changed.status_code == 302
    # The browser that changed it gets a fresh cookie and stays in; the old cookies get the login page.
    fresh = {"ds_actor": changed.cookies["ds_actor"]}
    assert (await ds.client.get("/-/dashboard", cookies=fresh)).status_code == 200
    assert sent_to_login(await ds.client.get("/-/dashboard", cookies=here))
    assert sent_to_login(await ds.client.get("/-/dashboard", cookies=elsewhere))

    # An admin resetting the password ends the user's sessions too, the admin's own stays.
    admin = await session(ds, *ADMIN)
    newer = secret("viewer-reset-by-admin-3")
    reset = await ds.client.post("/-/admin/users", cookies=admin,
                                 data={"action": "password", "username": VIEWER[0], "password": newer})
    assert reset.status_code == 200, error_text(reset.text)
    assert sent_to_login(await ds.client.get("/-/dashboard", cookies=fresh))
    assert (await ds.client.get("/-/admin", cookies=admin)).status_code == 200

    # So does a change made outside Datasette (the CLI writes with store.set_password): a trigger bumps the version.
    viewer = await session(ds, VIEWER[0], newer)
    admin_own = await ds.client.post("/-/admin/users", cookies=admin,
                                     data={"action": "password", "username": ADMIN[0], "password": ADMIN[1]})
    assert admin_own.status_code == 200 and "ds_actor" in admin_own.cookies  # an admin resetting their own: stays in
    admin = {"ds_actor": admin_own.cookies["ds_actor"]}
    assert (await ds.client.get("/-/admin", cookies=admin)).status_code == 200
    db = open_config_db(config.path, None)
    try:
        store.set_password(db, "cli", VIEWER[0], secret("viewer-set-by-cli-4"))
    finally:
        db.close()
    assert sent_to_login(await ds.client.get("/-/dashboard", cookies=viewer))
    assert (await ds.client.get("/-/admin", cookies=admin)).status_code == 200


async def test_cookies_from_before_session_versions_last_until_the_first_logout(flow_log: FlowLog,
                                                                                 tmp_path: Path) -> None:
    config = make_config(tmp_path / "config.db")
    ds = datasette_for(flow_log.path, config)
    # A cookie signed the old way (no version): the user's version is still 0, so it is valid...
    old = {"ds_actor": ds.client.actor_cookie({"id": VIEWER[0]})}
    assert (await ds.client.get("/-/dashboard", cookies=old)).status_code == 200
    # ...and a version that is not an int, or not the current one, is anonymous.
    for version in ("0", 1, None, 0.0):
        odd = {"ds_actor": ds.client.actor_cookie({"id": VIEWER[0], sessions.VERSION_KEY: version})}
        assert sent_to_login(await ds.client.get("/-/dashboard", cookies=odd)), version
    assert (await ds.client.post("/-/logout", cookies=await session(ds, *VIEWER))).status_code == 302
    assert sent_to_login(await ds.client.get("/-/dashboard", cookies=old))


def test_the_migration_gives_existing_users_version_0(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    old = sqlite_utils.Database(str(path))
    migrate(old, MIGRATIONS[:4], "config DB")
    old["users"].insert({"username": "ada", "password_hash": "scrypt$x", "role": "admin"})
    old.close()
    db = open_config_db(path, None)
    try:
        assert sessions.session_version(db, "ada") == 0
        db.execute("UPDATE users SET role = 'viewer' WHERE username = 'ada'")  # not a password change
        assert sessions.session_version(db, "ada") == 0
        db.execute("UPDATE users SET password_hash = 'scrypt$y' WHERE username = 'ada'")
        assert sessions.session_version(db, "ada") == 1
        sessions.end_sessions(db, "ada")
        assert sessions.session_version(db, "ada") == 2
        assert sessions.session_version(db, "nobody") is None
    finally:
        db.close()


# --- next= ----------------------------------------------------------------------------------------------------

OFF_SITE = ["/\t/evil.example/", "/\r\n/evil.example/", "/\n/evil.example", "\t//evil.example/", "/\x00/evil.example",
            "/\x7f/evil.example", "/\x85/evil.example", "/\\evil.example", "/\t\\evil.example", "//evil.example",
            "https://evil.example/", " /x", "\\\\evil.example", "javascript:alert(1)", "", "x/y"]


@pytest.mark.parametrize("value", OFF_SITE)
def test_safe_next_refuses_other_sites(value: str) -> None:
    assert sessions.safe_next(value, "/") == "/"


def test_safe_next_keeps_paths_and_drops_control_characters() -> None:
    assert sessions.safe_next("/-/dashboard?days=3", "/") == "/-/dashboard?days=3"
    assert sessions.safe_next("/-/dash\tboard\r\n", "/") == "/-/dashboard"
    assert sessions.safe_next("/%09/evil.example/", "/") == "/%09/evil.example/"  # a path here: not decoded
    assert sessions.safe_next(None, "/home") == "/home"


async def test_login_redirects_only_within_the_site(flow_log: FlowLog, tmp_path: Path) -> None:
    config = make_config(tmp_path / "config.db")
    ds = datasette_for(flow_log.path, config)
    for evil in ["/\t/evil.example/", "/\r\n/evil.example/", "\t//evil.example/", "/\t\\evil.example/"]:
        response = await ds.client.post("/-/login", data={"username": VIEWER[0], "password": VIEWER[1],
                                                          "next": evil})
        assert (response.status_code, response.headers["location"]) == (302, "/"), repr(evil)
    # The form never carries it either (GET /-/login?next=/%09/evil.example/ is the link an attacker would send).
    page = await ds.client.get("/-/login?next=/%09/evil.example/")
    assert page.status_code == 200 and 'name="next" value="/"' in page.text
    assert "evil.example" not in page.text
    kept = await ds.client.post("/-/login", data={"username": VIEWER[0], "password": VIEWER[1],
                                                  "next": "/-/dash\tboard"})
    assert kept.headers["location"] == "/-/dashboard"


# --- throttling -----------------------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_failed_logins_are_throttled_per_user(flow_log: FlowLog, tmp_path: Path) -> None:
    config = make_config(tmp_path / "config.db")
    ds = datasette_for(flow_log.path, config)
    clock = Clock()
    sessions.throttle_for(ds).clock = clock
    for _ in range(sessions.USER_FAILURES):
        assert (await login(ds, VIEWER[0], "wrong-password")).status_code == 401
        clock.now += 1
    # Refused now, even with the right password, with a clear answer and Retry-After.
    refused = await login(ds, *VIEWER)
    assert refused.status_code == 429 and "ds_actor" not in refused.cookies
    assert "Too many failed logins" in error_text(refused.text)
    wait = int(refused.headers["retry-after"])
    assert sessions.WINDOW - sessions.USER_FAILURES <= wait <= sessions.WINDOW
    assert f"try again in {wait} seconds" in error_text(refused.text)
    # Another user (same address, below its own limit) is not affected.
    assert (await login(ds, *ADMIN)).status_code == 302
    # Attempts while refused do not count; once the oldest failure ages out, the right password works.
    clock.now += wait - 1
    assert (await login(ds, *VIEWER)).status_code == 429
    clock.now += 1
    assert (await login(ds, *VIEWER)).status_code == 302
    # A success forgets the user's failures: a new typo is just a 401.
    assert (await login(ds, VIEWER[0], "wrong-again")).status_code == 401
    assert (await login(ds, *VIEWER)).status_code == 302


async def test_failed_logins_are_throttled_per_address(flow_log: FlowLog, tmp_path: Path) -> None:
    config = make_config(tmp_path / "config.db")
    ds = datasette_for(flow_log.path, config)
    clock = Clock()
    sessions.throttle_for(ds).clock = clock
    # Spread over many usernames, so that no per-user limit is reached: the address's limit is.
    for n in range(sessions.ADDRESS_FAILURES):
        assert (await login(ds, f"guess-{n}", "password")).status_code == 401
    refused = await login(ds, *ADMIN)
    assert refused.status_code == 429 and int(refused.headers["retry-after"]) > 0
    clock.now += sessions.WINDOW
    assert (await login(ds, *ADMIN)).status_code == 302


def test_the_throttle_table_is_bounded() -> None:
    clock = Clock()
    throttle = sessions.LoginThrottle(max_keys=50, clock=clock)
    for n in range(1000):
        throttle.failed(f"user-{n}", f"10.0.{n // 256}.{n % 256}")
        clock.now += 0.01
    assert len(throttle) <= 50
    # The most recent keys are the ones kept, and still throttle.
    for _ in range(sessions.USER_FAILURES):
        throttle.failed("target", None)
    assert throttle.retry_after("target", None) > 0
    assert throttle.retry_after("someone-else", None) == 0


# --- API tokens -----------------------------------------------------------------------------------------------


async def test_a_viewer_cannot_mint_a_never_expiring_token(flow_log: FlowLog, tmp_path: Path) -> None:
    config = make_config(tmp_path / "config.db")
    ds = datasette_for(flow_log.path, config)
    ttl = ds.setting("max_signed_tokens_ttl")
    assert ttl and ttl <= 90 * 24 * 3600
    viewer = await session(ds, *VIEWER)
    # Asked for "Token never expires" (no expire_type) on Datasette's own page.
    minted = await ds.client.post("/-/create-token", cookies=viewer, data={"expire_type": "", "expire_duration": ""})
    assert minted.status_code == 200
    token = re.search(r"dstok_[A-Za-z0-9._-]+", minted.text).group(0)
    now = time.time()
    actor = (await ds.client.get("/-/actor.json", headers={"authorization": f"Bearer {token}"})).json()["actor"]
    assert actor["id"] == VIEWER[0] and actor["role"] == "viewer"
    assert now < actor["token_expires"] <= now + ttl + 5
    # The same token once that time has passed (signed as Datasette signs it, with an older creation time): refused.
    for payload in ({"a": VIEWER[0], "t": int(now) - ttl - 60},
                    {"a": VIEWER[0], "t": int(now) - ttl - 60, "d": 10 * 365 * 24 * 3600}):
        stale = "dstok_" + ds.sign(payload, namespace="token")
        response = await ds.client.get("/-/actor.json", headers={"authorization": f"Bearer {stale}"})
        assert response.status_code == 401, payload
