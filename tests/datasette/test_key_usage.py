"""What a client key may use and has used, in Datasette: a user sees the keys they own at /-/my-keys (limits,
budgets, the over-budget model, this UTC day's and month's spend from the flow log) and nobody else's; the admin's
client keys page shows every key the same way and sets its limits, budgets and owner."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from ccany_addon.config import store
from ccany_addon.config.schema import open_config_db
from tests.datasette.accounts import ADMIN, VIEWER, datasette_for, make_config, session
from tests.datasette.conftest import ROUTES, _flow, stamp, write_flow_log

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def spending(path: Path, key_id: int, other_id: int) -> None:
    """A flow log where key `key_id` spent $0.25 + $0.5 today and $1 earlier this month (or, on the 1st, last
    month), and another key $4 today."""
    rng = random.Random(5)
    now = datetime.now(UTC).replace(microsecond=0)
    earlier = now.replace(day=1, hour=0, minute=1, second=0) if now.day > 1 else now - timedelta(days=40)
    rows = []
    for n, (moment, key, cost) in enumerate([(now, key_id, 0.25), (now, key_id, 0.5), (earlier, key_id, 1.0),
                                              (now, other_id, 4.0)]):
        row = _flow(rng, n, moment - timedelta(seconds=n), ROUTES[0], stream=False, session=None,
                    prompt=f"turn {n}", answer="done")
        row.update(client_key_id=str(key), cost_usd=cost, started_at=stamp(moment - timedelta(seconds=n)))
        rows.append(row)
    write_flow_log(path, rows)


async def test_a_user_sees_the_limits_and_spend_of_their_own_keys_only(tmp_path: Path) -> None:
    config = make_config(tmp_path / "config.db")
    db = open_config_db(config.path, None)
    laptop = store.set_client_key_limits(db, "t", "laptop", "victor", rpm_limit=60, daily_budget_usd=2.0,
                                         monthly_budget_usd=10.0, over_budget_model="claude-haiku-4-5")
    other, _ = store.create_client_key(db, "t", "alice's desktop")
    store.set_client_key_limits(db, "t", "alice's desktop", "alice", daily_budget_usd=1.0)
    store.set_user_budgets(db, "t", "victor", monthly_budget_usd=5.0)
    db.close()
    spending(tmp_path / "ccany.db", laptop, other)
    ds = datasette_for(tmp_path / "ccany.db", config)
    viewer = await session(ds, *VIEWER)
    page = await ds.client.get("/-/my-keys", cookies=viewer)
    assert page.status_code == 200
    text = " ".join(page.text.split())
    month_spend = "$1.7500" if datetime.now(UTC).day > 1 else "$0.7500"
    assert "<td>$2.0000, $0.7500, $1.2500</td>" in text  # the key's day: budget, spent, left
    assert f"<td>$10.0000, {month_spend}," in text
    assert "<code>claude-haiku-4-5</code>" in text and "<td>60 </td>" in text
    assert f"<td>this month (UTC)</td><td>$5.0000</td><td>{month_spend}</td>" in text  # victor's own budget
    assert "desktop" not in text and "$4.0000" not in text  # alice's key is not victor's business
    logged_out = await ds.client.get("/-/my-keys")
    assert logged_out.status_code == 302 and "/-/login" in logged_out.headers["location"]
    menu = await ds.client.get("/", cookies=viewer)
    assert "/-/my-keys" in menu.text


async def test_the_admin_client_keys_page_shows_spend_and_sets_limits(tmp_path: Path) -> None:
    config = make_config(tmp_path / "config.db")
    db = open_config_db(config.path, None)
    laptop = store.set_client_key_limits(db, "t", "laptop", None, daily_budget_usd=2.0)
    other, _ = store.create_client_key(db, "t", "desktop")
    db.close()
    spending(tmp_path / "ccany.db", laptop, other)
    ds = datasette_for(tmp_path / "ccany.db", config)
    admin, viewer = await session(ds, *ADMIN), await session(ds, *VIEWER)
    page = await ds.client.get("/-/admin/client-keys", cookies=admin)
    assert "<td>$0.7500," in " ".join(page.text.split()) and "<td>$4.0000, $4.0000</td>" in page.text
    done = await ds.client.post("/-/admin/client-keys", cookies=admin, data={
        "action": "limits", "name": "desktop", "rpm_limit": "30", "tpm_limit": "", "max_streams": "2",
        "daily_budget_usd": "$5", "monthly_budget_usd": "", "over_budget_model": "claude-haiku-4-5",
        "owner": "victor"})
    assert done.status_code == 200 and "Set the limits of desktop" in done.text
    db = open_config_db(config.path, None)
    row = db["client_keys"].get(other)
    db.close()
    assert (row["rpm_limit"], row["tpm_limit"], row["max_streams"], row["daily_budget_usd"],
            row["over_budget_model"]) == (30, None, 2, 5.0, "claude-haiku-4-5")
    bad = await ds.client.post("/-/admin/client-keys", cookies=admin, data={
        "action": "limits", "name": "desktop", "rpm_limit": "lots"})
    assert bad.status_code == 400 and "rpm limit must be a whole number" in bad.text
    nobody = await ds.client.post("/-/admin/client-keys", cookies=admin, data={
        "action": "limits", "name": "desktop", "owner": "zed"})
    assert nobody.status_code == 400 and "no user named" in nobody.text
    denied = await ds.client.post("/-/admin/client-keys", cookies=viewer, data={
        "action": "limits", "name": "desktop", "rpm_limit": "1000"})
    assert denied.status_code == 403
