"""What a client key may use and has used: its limits, budgets and over-budget model (config DB) beside what it
spent this UTC day and month (the flow log: every instance's, in a fleet). `/-/my-keys` shows a person the keys
they own (`client_keys.user_id`) and their own budgets; the admin's client keys page shows every key the same way.
The gateway says what is left on every answer too (`x-ccany-budget-remaining`); this is where a person looks."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from ccany_addon.util.utc import utc_day
from ccany_addon.web import fleet
from ccany_addon.web.accounts import require_actor
from ccany_addon.web.config_db import config_db
from ccany_addon.web.flow_queries import ensure_setup
from ccany_addon.web.forms import render

if TYPE_CHECKING:
    from datasette.app import Datasette
    from datasette.utils.asgi import Request, Response

KEY_SELECT = ("k.id, k.name, k.prefix, k.enabled, k.rpm_limit, k.tpm_limit, k.max_streams, k.daily_budget_usd, "
               "k.monthly_budget_usd, k.over_budget_model, u.username AS owner")


async def spent_by_key(datasette: Datasette, key_ids: list[int], now: float | None = None) -> dict[int, tuple]:
    """Client key id → (USD spent this UTC day, this UTC month), per the flow log."""
    database = await ensure_setup(datasette)
    if database is None or not key_ids:
        return {}
    day = utc_day(now)
    sql = (f"SELECT CAST(client_key_id AS INTEGER) AS key_id, "
           f"coalesce(sum(CASE WHEN started_at >= :day THEN cost_usd END), 0) AS today, "
           f"coalesce(sum(cost_usd), 0) AS month FROM flows WHERE started_at >= :month "
           f"AND CAST(client_key_id AS INTEGER) IN ({', '.join(str(int(key_id)) for key_id in key_ids)}) "
           f"GROUP BY key_id")
    if fleet.members(datasette):
        database, sql = fleet.FLEET, fleet.over_fleet(datasette, sql)
    rows = await datasette.get_database(database).execute(sql, {"day": day, "month": day[:7] + "-01"})
    return {row["key_id"]: (row["today"], row["month"]) for row in rows}


def with_spend(keys: list[dict[str, Any]], spent: dict[int, tuple]) -> list[dict[str, Any]]:
    """Each key with `spent_today`, `spent_month` and, for each budget it has, what is left of it."""
    for key in keys:
        key["spent_today"], key["spent_month"] = spent.get(key["id"], (0.0, 0.0))
        key["left_today"] = _left(key.get("daily_budget_usd"), key["spent_today"])
        key["left_month"] = _left(key.get("monthly_budget_usd"), key["spent_month"])
    return keys


def _left(budget: float | None, spent: float) -> float | None:
    return None if budget is None else max(0.0, budget - spent)


async def my_keys_page(datasette: Datasette, request: Request) -> Response:
    actor = require_actor(request)
    db = await config_db(datasette)
    keys = [dict(row) for row in (await db.execute(
        f"SELECT {KEY_SELECT} FROM client_keys k JOIN users u ON u.id = k.user_id WHERE u.username = ? "
        "ORDER BY k.id", [actor["id"]])).rows]
    me = (await db.execute("SELECT id, daily_budget_usd, monthly_budget_usd, over_budget_model FROM users "
                           "WHERE username = ?", [actor["id"]])).first()
    spent = await spent_by_key(datasette, [key["id"] for key in keys], time.time())
    with_spend(keys, spent)
    mine = dict(me) if me else {}
    total = (sum(key["spent_today"] for key in keys), sum(key["spent_month"] for key in keys))
    mine.update(spent_today=total[0], spent_month=total[1], left_today=_left(mine.get("daily_budget_usd"), total[0]),
                left_month=_left(mine.get("monthly_budget_usd"), total[1]))
    return await render(datasette, request, "ccany_my_keys.html", {"keys": keys, "me": mine, "username": actor["id"]})
