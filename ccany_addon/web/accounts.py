"""Accounts: who is asking (the users table decides), login sessions, and the pages /-/setup (only while no user
exists), /-/login and /-/password. (/-/logout is Datasette's own; audit.py ends the sessions it logs out.)

The actor: whoever a cookie or token names, the users table decides: the `actor_from_request` wrapper hands every
other plugin's answer to `resolve_actor`, which keeps an actor only if it names an enabled user, with that user's
role. A deleted or disabled user's session ends at the next request; a changed role applies at once.
"""

from __future__ import annotations

import asyncio
import functools
import json
import time
from typing import TYPE_CHECKING, Any

import sqlite_utils
from datasette.events import LoginEvent
from datasette.utils import await_me_maybe, baseconv
from datasette.utils.asgi import Forbidden, NotFound, Response

from ccany_addon.config import sessions, store
from ccany_addon.config.schema import ROLES
from ccany_addon.config.secrets import hash_password, verify_password
from ccany_addon.web.config_db import config_name, has_users, read_secrets, state, write_config
from ccany_addon.web.forms import form_field, form_page
from ccany_addon.web.guard import role_of

if TYPE_CHECKING:
    from datasette.app import Datasette
    from datasette.utils.asgi import Request

SESSION_SECONDS = 14 * 24 * 3600
PASSWORD_NOTE = f"at least {store.MIN_PASSWORD_LENGTH} characters"


@functools.cache
def dummy_hash() -> str:
    """Checked when a login names no user, so that a wrong name takes as long as a wrong password."""
    return hash_password("ccany: no such user")


async def resolve_actor(datasette: Datasette, results: list) -> dict | None:
    """The actor other plugins named (their results, maybe awaitables), if the users table still knows them."""
    actor, failure = None, None
    for result in results:  # await them all (a rejected token raises TokenInvalid: Datasette answers 401)
        try:
            value = await await_me_maybe(result)
        except Exception as error:  # noqa: BLE001 - re-raised below, once every coroutine was awaited
            failure = failure or error
            continue
        if value and actor is None:
            actor = value
    if failure is not None:
        raise failure
    name = await config_name(datasette)
    if name is None:
        return actor  # no config DB: no users to check against, nothing of ours to protect
    username = actor.get("id") if isinstance(actor, dict) else None
    row = (
        await datasette.get_database(name).execute(
            "SELECT EXISTS (SELECT 1 FROM users) AS has_users, "
            "(SELECT json_object('role', role, 'enabled', enabled, 'session_version', session_version) "
            "FROM users WHERE username = :username) AS user",
            {"username": username if isinstance(username, str) else None},
        )
    ).first()
    state(datasette).has_users = bool(row["has_users"])
    if actor is None:
        return None
    user = json.loads(row["user"]) if row["user"] else None
    if user is None and username == "root" and datasette.root_enabled:  # `datasette --root`: the console's operator
        return {**actor, "role": "admin"}
    if not user or not user["enabled"] or user["role"] not in ROLES:
        return None
    # A login cookie from before the user's last logout or password change is anonymous. API tokens carry no
    # version (Datasette signs them itself): they end with their expiry (max_signed_tokens_ttl) or a disabled user.
    if "token" not in actor and not sessions.cookie_is_current(actor, user["session_version"]):
        return None
    return {**sessions.without_version(actor), "id": username, "role": user["role"]}


def set_session(datasette: Datasette, request: Request, response: Response, username: str, version: int) -> None:
    """Datasette's signed `ds_actor` cookie, in the format `datasette.set_actor_cookie` writes, but HttpOnly (page
    scripts never need it), kept by the browser for as long as it is valid, and holding the user's session
    version (sessions.py: a logout or a password change ends it)."""
    expires = baseconv.base62.encode(int(time.time()) + SESSION_SECONDS)
    value = datasette.sign({"a": {"id": username, sessions.VERSION_KEY: version}, "e": expires}, "actor")
    response.set_cookie("ds_actor", value, max_age=SESSION_SECONDS, httponly=True, samesite="lax",
                        secure=request.scheme == "https")


def safe_next(datasette: Datasette, value: str | None) -> str:
    """Only a path on this site: never `//elsewhere`, `/<TAB>/elsewhere` or an absolute URL."""
    return sessions.safe_next(value, datasette.urls.instance())


def require_actor(request: Request) -> dict:
    if role_of(request.actor) is None:
        raise Forbidden("Log in first")
    return request.actor


def require_admin(request: Request) -> dict:
    actor = require_actor(request)
    if actor["role"] != "admin":
        raise Forbidden("Admins only")
    return actor


def menu_links(datasette: Datasette, actor: dict | None) -> list[dict[str, str]]:
    links = []
    st = state(datasette)
    if st.config is not None and not st.has_users:
        links.append({"href": datasette.urls.path("/-/setup"), "label": "Set up: create the first admin"})
    role = role_of(actor)
    if role == "admin":
        links.append({"href": datasette.urls.path("/-/admin"), "label": "Gateway admin"})
    if role is not None and isinstance(actor, dict) and "token" not in actor:
        links.append({"href": datasette.urls.path("/-/my-keys"), "label": "Your keys and budgets"})
        links.append({"href": datasette.urls.path("/-/password"), "label": "Change password"})
    return links


async def template_vars(datasette: Datasette, request: Request | None) -> dict[str, Any]:
    name = await config_name(datasette)
    actor = request.actor if request is not None else None
    return {
        "ccany_needs_setup": name is not None and not state(datasette).has_users,
        "ccany_setup_url": datasette.urls.path("/-/setup"),
        "ccany_role": role_of(actor),
    }


# ---------------------------------------------------------------------------------------------------------------
# /-/setup, /-/login, /-/password


def _account_fields(username: str = "") -> list[dict]:
    return [
        form_field("username", "Username", value=username, autocomplete="username"),
        form_field("password", f"Password ({PASSWORD_NOTE})", "password", "new-password"),
        form_field("password2", "Password again", "password", "new-password"),
    ]


def check_new_password(password: str, again: str) -> str | None:
    if problem := store.password_problem(password):
        return problem[0].upper() + problem[1:]
    if password != again:
        return "The two passwords differ"
    return None


async def setup_page(datasette: Datasette, request: Request) -> Response:
    if await has_users(datasette):
        raise NotFound("Set-up is done: log in at /-/login")
    title = "Set up ccany: the first admin"
    intro = ("Nobody has an account yet, so anyone who can reach this address can read the flow log. Create the "
             "first admin: from then on every page needs a login.")
    if request.method != "POST":
        return await form_page(datasette, request, title=title, intro=intro, fields=_account_fields(),
                               submit="Create the admin account")
    form = await request.post_vars()
    username = form.get("username", "").strip()
    error = check_new_password(form.get("password", ""), form.get("password2", ""))
    if not username:
        error = "Choose a username"
    if error is None:
        try:
            await write_config(datasette, request, lambda db: store.add_first_admin(db, username, form["password"]))
        except store.ConfigError as failure:
            error = str(failure)
    if error is not None:
        return await form_page(datasette, request, title=title, intro=intro, fields=_account_fields(username),
                               submit="Create the admin account", error=error, status=400)
    state(datasette).has_users = True
    response = Response.redirect(datasette.urls.path("/-/admin"))
    set_session(datasette, request, response, username, 0)
    await datasette.track_event(LoginEvent(actor={"id": username, "role": "admin"}))
    return response


async def login_page(datasette: Datasette, request: Request) -> Response:
    if not await has_users(datasette):
        return Response.redirect(datasette.urls.path("/-/setup"))
    next_url = safe_next(datasette, request.args.get("next"))
    fields = [form_field("username", "Username", autocomplete="username"),
              form_field("password", "Password", "password", "current-password")]
    title, intro = "Log in", "Log in to read the gateway's flow log and, as an admin, to configure it."
    if request.method != "POST":
        if role_of(request.actor):
            return Response.redirect(next_url)
        return await form_page(datasette, request, title=title, intro=intro, fields=fields, submit="Log in",
                               hidden={"next": next_url})
    form = await request.post_vars()
    username = form.get("username", "").strip()
    next_url = safe_next(datasette, form.get("next"))
    fields[0]["value"] = username
    throttle = sessions.throttle_for(datasette)
    client = request.scope.get("client")
    address = client[0] if client else None
    wait = throttle.retry_after(username, address)
    if wait:  # checked before the password, which is then not even hashed
        response = await form_page(
            datasette, request, title=title, intro=intro, fields=fields, submit="Log in", hidden={"next": next_url},
            error=f"Too many failed logins for this user or from this address: try again in {wait} seconds",
            status=429)
        response.headers["retry-after"] = str(wait)
        return response
    rows = await read_secrets(datasette, "SELECT username, password_hash, role, enabled, session_version FROM users "
                                         "WHERE username = ?", [username])
    user = rows[0] if rows else None
    ok = await asyncio.to_thread(verify_password, form.get("password", ""),
                                 user["password_hash"] if user else dummy_hash())
    if not (ok and user and user["enabled"]):
        throttle.failed(username, address)
        return await form_page(datasette, request, title=title, intro=intro, fields=fields, submit="Log in",
                               hidden={"next": next_url}, error="Wrong username or password", status=401)
    throttle.succeeded(username)
    response = Response.redirect(next_url)
    set_session(datasette, request, response, user["username"], user["session_version"])
    await datasette.track_event(LoginEvent(actor={"id": user["username"], "role": user["role"]}))
    return response


async def password_page(datasette: Datasette, request: Request) -> Response:
    actor = require_actor(request)
    fields = [form_field("current", "Current password", "password", "current-password"),
              form_field("password", f"New password ({PASSWORD_NOTE})", "password", "new-password"),
              form_field("password2", "New password again", "password", "new-password")]
    title, intro = "Change your password", f"Logged in as {actor['id']}."
    if request.method != "POST":
        return await form_page(datasette, request, title=title, intro=intro, fields=fields, submit="Change password")
    form = await request.post_vars()
    rows = await read_secrets(datasette, "SELECT password_hash FROM users WHERE username = ?", [actor["id"]])
    current_ok = bool(rows) and await asyncio.to_thread(verify_password, form.get("current", ""),
                                                        rows[0]["password_hash"])
    error = None if current_ok else "The current password is wrong"
    error = error or check_new_password(form.get("password", ""), form.get("password2", ""))
    version = None
    if error is None:

        def change(db: sqlite_utils.Database) -> int | None:
            store.set_password(db, actor["id"], actor["id"], form["password"])
            return sessions.session_version(db, actor["id"])  # bumped by the change: every other session ends

        try:
            version = await write_config(datasette, request, change)
        except store.ConfigError as failure:
            error = str(failure)
    if error is not None:
        return await form_page(datasette, request, title=title, intro=intro, fields=fields,
                               submit="Change password", error=error, status=400)
    datasette.add_message(request, "Your password was changed; your other sessions are logged out", datasette.INFO)
    response = Response.redirect(datasette.urls.instance())
    if version is not None and "token" not in actor:  # this browser stays logged in
        set_session(datasette, request, response, actor["id"], version)
    return response
