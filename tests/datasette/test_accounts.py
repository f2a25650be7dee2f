"""First-run set-up, login, logout, password change and sessions, through Datasette's in-process client."""

from __future__ import annotations

from pathlib import Path

import pytest

from ccany_addon.config.schema import open_config_db
from ccany_addon.config.secrets import verify_password
from tests.conftest import secret
from tests.datasette.accounts import (
    ADMIN,
    CSRF_ATTACK,
    VIEWER,
    audit_rows,
    datasette_for,
    error_text,
    login,
    make_config,
    session,
)
from tests.datasette.conftest import FlowLog

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def users_of(path: Path) -> dict[str, dict]:
    db = open_config_db(path, None)
    try:
        return {row["username"]: row for row in db["users"].rows}
    finally:
        db.close()


async def test_setup_creates_the_first_admin_once(flow_log: FlowLog, tmp_path: Path) -> None:
    config = make_config(tmp_path / "config.db", users=False)
    ds = datasette_for(flow_log.path, config)
    # Before anyone has an account: the flow log is open, every page points to the set-up, the config DB is hidden.
    home = await ds.client.get("/")
    assert home.status_code == 200
    assert 'class="message-warning ccany-setup-banner"' in home.text and 'href="/-/setup"' in home.text
    assert (await ds.client.get("/ccany/flows.json?_size=1")).status_code == 200
    assert (await ds.client.get("/config/providers.json")).status_code == 403
    assert (await ds.client.get("/-/login")).headers["location"] == "/-/setup"
    page = await ds.client.get("/-/setup")
    assert page.status_code == 200 and 'name="password2"' in page.text

    short = await ds.client.post("/-/setup", data={"username": "root", "password": "short", "password2": "short"})
    assert short.status_code == 400 and "at least 8 characters" in error_text(short.text)
    differ = await ds.client.post("/-/setup", data={"username": "root", "password": "long-enough-1",
                                                    "password2": "long-enough-2"})
    assert differ.status_code == 400 and "differ" in error_text(differ.text)
    assert users_of(config.path) == {}

    attack = await ds.client.post("/-/setup", headers=CSRF_ATTACK,
                                  data={"username": "mallory", "password": "x" * 12, "password2": "x" * 12})
    assert attack.status_code == 403  # Datasette's cross-origin (CSRF) protection
    assert users_of(config.path) == {}

    password = secret("first-admin-pw")
    created = await ds.client.post("/-/setup", data={"username": "root", "password": password,
                                                     "password2": password})
    assert created.status_code == 302 and created.headers["location"] == "/-/admin"
    set_cookie = created.headers["set-cookie"]
    assert set_cookie.startswith("ds_actor=") and "HttpOnly" in set_cookie and "Max-Age=" in set_cookie
    users = users_of(config.path)
    assert set(users) == {"root"} and users["root"]["role"] == "admin" and users["root"]["enabled"] == 1
    assert verify_password(password, users["root"]["password_hash"])
    assert [(row["actor"], row["action"], row["target"]) for row in audit_rows(config)][-2:] == [
        ("root", "add user", f"users/{users['root']['id']}"), ("root", "login", "users/root")]

    cookies = {"ds_actor": created.cookies["ds_actor"]}
    admin = await ds.client.get("/-/admin", cookies=cookies)
    assert admin.status_code == 200 and "Gateway admin" in admin.text
    # The set-up is gone for good, for everyone; anonymous visitors are sent to the login page.
    assert (await ds.client.get("/-/setup")).status_code == 404
    assert (await ds.client.get("/-/setup", cookies=cookies)).status_code == 404
    again = await ds.client.post("/-/setup", data={"username": "evil", "password": "x" * 12, "password2": "x" * 12})
    assert again.status_code == 404 and set(users_of(config.path)) == {"root"}
    home = await ds.client.get("/")
    assert (home.status_code, home.headers["location"]) == (302, "/-/login?next=%2F")
    assert (await ds.client.get("/ccany/flows.json")).status_code == 403
    assert "ccany-setup-banner" not in (await ds.client.get("/", cookies=cookies)).text


async def test_login_logout_and_wrong_passwords(flow_log: FlowLog, tmp_path: Path) -> None:
    config = make_config(tmp_path / "config.db")
    ds = datasette_for(flow_log.path, config)
    page = await ds.client.get("/-/login?next=/-/dashboard")
    assert page.status_code == 200 and 'value="/-/dashboard"' in page.text
    wrong_pairs = [(ADMIN[0], VIEWER[1]), (ADMIN[0], ""), ("nobody", ADMIN[1]), (ADMIN[0].upper(), ADMIN[1])]
    for username, password in wrong_pairs:
        wrong = await login(ds, username, password)
        assert wrong.status_code == 401 and "Wrong username or password" in error_text(wrong.text)
        assert "ds_actor" not in wrong.cookies
    # A next URL elsewhere is never followed.
    for evil in ["https://evil.example/", "//evil.example/x", "/\\evil.example"]:
        response = await ds.client.post("/-/login", data={"username": VIEWER[0], "password": VIEWER[1], "next": evil})
        assert (response.status_code, response.headers["location"]) == (302, "/")
    response = await ds.client.post("/-/login", data={"username": VIEWER[0], "password": VIEWER[1],
                                                      "next": "/-/dashboard?days=3"})
    assert (response.status_code, response.headers["location"]) == (302, "/-/dashboard?days=3")
    cookies = {"ds_actor": response.cookies["ds_actor"]}
    actor = (await ds.client.get("/-/actor.json", cookies=cookies)).json()["actor"]
    assert actor == {"id": VIEWER[0], "role": "viewer"}
    assert (await ds.client.get("/-/dashboard", cookies=cookies)).status_code == 200
    home = (await ds.client.get("/", cookies=cookies)).text
    assert 'href="/-/password"' in home and 'href="/-/admin"' not in home
    admin_home = (await ds.client.get("/", cookies=await session(ds, *ADMIN))).text
    assert 'href="/-/admin"' in admin_home

    # Datasette's /-/logout clears the cookie; it is audited.
    logout = await ds.client.post("/-/logout", cookies=cookies)
    assert logout.status_code == 302 and 'ds_actor=""' in logout.headers["set-cookie"]
    assert [row["action"] for row in audit_rows(config) if row["actor"] == VIEWER[0]] == ["login"] * 4 + ["logout"]
    assert (await ds.client.get("/-/dashboard")).status_code == 302


async def test_a_forged_or_stale_cookie_gets_nothing(flow_log: FlowLog, tmp_path: Path) -> None:
    config = make_config(tmp_path / "config.db")
    ds = datasette_for(flow_log.path, config)
    # A signed cookie naming a role the users table does not give: the table wins.
    assert (await ds.client.get("/-/actor.json", actor={"id": VIEWER[0], "role": "admin"})).json()["actor"] == {
        "id": VIEWER[0], "role": "viewer"}
    assert (await ds.client.get("/-/admin", actor={"id": VIEWER[0], "role": "admin"})).status_code == 403
    # No such user: anonymous, so only the login page.
    ghost = await ds.client.get("/-/dashboard", actor={"id": "ghost", "role": "admin"})
    assert ghost.status_code == 302 and ghost.headers["location"].startswith("/-/login")
    # A cookie signed with another secret is ignored.
    forged = {"ds_actor": datasette_for(flow_log.path, config).client.actor_cookie({"id": ADMIN[0]})}
    assert (await ds.client.get("/-/admin", cookies=forged)).status_code == 302

    # Disabling a user ends their session at once; a role change applies at once.
    admin = await session(ds, *ADMIN)
    viewer = await session(ds, *VIEWER)
    assert (await ds.client.get("/-/dashboard", cookies=viewer)).status_code == 200
    changed = await ds.client.post("/-/admin/users", cookies=admin, data={"action": "role", "username": VIEWER[0],
                                                                          "role": "admin"})
    assert changed.status_code == 200, changed.text
    assert (await ds.client.get("/-/admin", cookies=viewer)).status_code == 200
    await ds.client.post("/-/admin/users", cookies=admin, data={"action": "disable", "username": VIEWER[0]})
    assert (await ds.client.get("/-/dashboard", cookies=viewer)).status_code == 302
    assert (await login(ds, *VIEWER)).status_code == 401


async def test_password_change_needs_the_current_password(flow_log: FlowLog, tmp_path: Path) -> None:
    config = make_config(tmp_path / "config.db")
    ds = datasette_for(flow_log.path, config)
    assert (await ds.client.get("/-/password")).status_code == 302  # anonymous: log in first
    cookies = await session(ds, *VIEWER)
    assert (await ds.client.get("/-/password", cookies=cookies)).status_code == 200
    new = secret("a-brand-new-password")
    wrong = await ds.client.post("/-/password", cookies=cookies,
                                 data={"current": ADMIN[1], "password": new, "password2": new})
    assert wrong.status_code == 400 and "current password is wrong" in error_text(wrong.text)
    differ = await ds.client.post("/-/password", cookies=cookies,
                                  data={"current": VIEWER[1], "password": new, "password2": new + "x"})
    assert differ.status_code == 400 and "differ" in error_text(differ.text)
    attack = await ds.client.post("/-/password", cookies=cookies, headers=CSRF_ATTACK,
                                  data={"current": VIEWER[1], "password": new, "password2": new})
    assert attack.status_code == 403
    assert (await login(ds, *VIEWER)).status_code == 302  # unchanged so far

    done = await ds.client.post("/-/password", cookies=cookies,
                                data={"current": VIEWER[1], "password": new, "password2": new})
    assert done.status_code == 302
    assert (await login(ds, *VIEWER)).status_code == 401
    assert (await login(ds, VIEWER[0], new)).status_code == 302
    assert verify_password(new, users_of(config.path)[VIEWER[0]]["password_hash"])
    assert audit_rows(config)[-2]["actor"] == VIEWER[0] and audit_rows(config)[-2]["action"] == "set password"
