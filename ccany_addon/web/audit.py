"""The audit of what happens outside our own pages: Datasette's row edits of the config DB, logins and logouts.
(Our pages audit their changes in config/store.py, where they make them.)"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ccany_addon.config import store
from ccany_addon.web.config_db import state, write_config

if TYPE_CHECKING:
    from datasette.app import Datasette
    from datasette.events import Event


async def record(datasette: Datasette, event: Event) -> None:
    """Audit `event` if it is a login, a logout or a change to the config DB; a logout ends the user's sessions."""
    name = state(datasette).config
    if name is None or name not in datasette.databases:
        return
    actor = event.actor.get("id") if isinstance(event.actor, dict) else None
    properties = event.properties()
    if event.name in ("login", "logout"):
        if actor is None:
            return
        target, details = f"users/{actor}", None
    elif properties.pop("database", None) == name:
        table = properties.pop("table", None) or properties.get("new_table")
        pks = properties.pop("pks", None)
        target = f"{table}/{','.join(map(str, pks))}" if pks else table
        for bulky in ("schema", "before_schema", "after_schema"):
            properties.pop(bulky, None)
        details = {"via": "datasette", **properties}
    else:
        return
    # The browser drops its cookie; copies of it (other devices, a thief) die in the store.
    ends_sessions = event.name == "logout" and isinstance(actor, str) and "token" not in event.actor
    await write_config(datasette, None, lambda db: store.record_event(
        db, str(actor or "(anonymous)"), event.name, target, details, end_sessions_of=actor if ends_sessions else None))
