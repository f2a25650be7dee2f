"""No key material, ciphertext, hash or password comes out of Datasette, whoever asks and however: table and row
pages, JSON, CSV, facets, filters, sorting, SQL on either database, cross-database tricks, downloads."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

import pytest
from datasette.app import Datasette

from tests.datasette.accounts import ADMIN, VIEWER, Config, datasette_for, leaks, make_config, session
from tests.datasette.app import CONFIG, PLUGINS_DIR, TEMPLATES_DIR, make_datasette
from tests.datasette.conftest import FlowLog

pytestmark = pytest.mark.anyio

SECRET_TABLES = {"provider_keys": "secret", "client_keys": "key_hash", "users": "password_hash"}
OPEN_TABLES = ["providers", "routes", "model_capabilities", "model_prices", "settings", "audit"]
ROWS = {"providers": "1", "provider_keys": "1", "routes": "1", "model_capabilities": "1", "model_prices": "1",
        "client_keys": "1",
        "users": "1", "settings": "ccany_big_model", "audit": "1"}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def sql(database: str, query: str, suffix: str = ".json") -> str:
    return f"/{database}/-/query{suffix}?sql={quote(query)}"


def probe_paths(config: Config) -> list[str]:
    paths = ["/", "/.json", "/config", "/config.json", "/config/-/schema", "/config/-/schema.json", "/-/databases.json",
             "/config.db", "/ccany.db", "/-/dashboard", "/-/admin", "/-/admin/providers", "/-/admin/client-keys",
             "/-/admin/users", "/-/password", "/-/my-keys", "/-/jump?q=secret", "/-/actor.json"]
    for table, pk in ROWS.items():
        base = f"/config/{table}"
        paths += [base, base + ".json", base + ".json?_shape=array", base + ".csv", base + ".json?_extra=columns",
                  f"{base}/{pk}", f"{base}/{pk}.json", f"{base}/{pk}.json?_extra=columns,column_types,column_details"]
    for table, column in SECRET_TABLES.items():
        base = f"/config/{table}"
        paths += [f"{base}.json?_facet={column}", f"{base}.json?_sort={column}", f"{base}.json?_sort_desc={column}",
                  f"{base}.json?{column}__startswith=enc", f"{base}.json?{column}__contains=%24",
                  f"{base}.csv?_col={column}", f"{base}.json?_col={column}&_shape=array"]
    queries = [f"select * from {table}" for table in SECRET_TABLES] + [
        "select secret, hex(secret), length(secret) from provider_keys",
        "select * from provider_keys where secret like 'enc:v1:g%'",
        "select group_concat(password_hash) from users",
        "with t as (select key_hash from client_keys) select * from t",
        "select * from sqlite_dbpage",
        "select * from pragma_table_info('provider_keys')",
    ]
    for query in queries:
        paths += [sql("config", query), sql("config", query, ""), sql("config", query, ".csv"),
                  f"/config.json?sql={quote(query)}"]
    # From the flow DB (which everyone may query): the config DB is not attached, and ATTACH is refused.
    attach = [f"attach database '{config.path}' as c", "select * from pragma_database_list",
              "select * from config.provider_keys", "select * from ccany.flows, config.users",
              f"select * from (select 1) join (attach '{config.path}' as c)"]
    for query in attach:
        paths += [sql("ccany", query), f"/ccany.json?sql={quote(query)}"]
    paths += [sql("_memory", "select * from config.provider_keys")]
    return paths


async def probe(ds: Datasette, config: Config, cookies: dict | None) -> dict[str, int]:
    statuses = {}
    for path in probe_paths(config):
        response = await ds.client.get(path, cookies=cookies, follow_redirects=True)
        found = leaks(response.text, config)
        assert not found, f"{path} ({response.status_code}) shows {found}"
        statuses[path] = response.status_code
    return statuses


async def test_nothing_secret_for_anonymous_viewer_or_admin(flow_log: FlowLog, tmp_path: Path) -> None:
    config = make_config(tmp_path / "config.db")
    # The needles are real: the file itself holds the ciphertext and the hashes (never the plain key).
    stored = config.file_bytes().decode("latin-1")
    assert set(leaks(stored, config)) == set(config.secrets()[2:5])
    ds = datasette_for(flow_log.path, config)
    anonymous = await probe(ds, config, None)
    viewer = await probe(ds, config, await session(ds, *VIEWER))
    admin = await probe(ds, config, await session(ds, *ADMIN))

    # Anonymous: nothing but the login page.
    assert anonymous["/"] == 200 and anonymous["/-/dashboard"] == 200  # after the redirect: the login form
    assert all(status in (403, 404) for path, status in anonymous.items() if path.endswith((".json", ".csv"))
               and path != "/-/actor.json"), anonymous
    # Viewers: the flow log and the open config tables, never the secret tables, never SQL on the config DB.
    assert viewer["/-/dashboard"] == 200 and viewer["/config"] == 200
    for table in OPEN_TABLES:
        assert viewer[f"/config/{table}.json"] == 200 and viewer[f"/config/{table}/{ROWS[table]}.json"] == 200
    for table in SECRET_TABLES:
        assert viewer[f"/config/{table}"] == viewer[f"/config/{table}.json"] == viewer[f"/config/{table}.csv"] == 403
        assert viewer[f"/config/{table}/1"] == viewer[f"/config/{table}/1.json"] == 403
    assert viewer["/-/admin"] == viewer["/-/admin/providers"] == viewer["/-/admin/users"] == 403
    # Admins see every table (secrets masked), but no SQL on the config DB either.
    for table in ROWS:
        assert admin[f"/config/{table}.json"] == 200 and admin[f"/config/{table}.csv"] == 200
    assert admin["/-/admin"] == admin["/-/admin/providers"] == admin["/-/admin/client-keys"] == 200
    for statuses in (viewer, admin):
        assert statuses[sql("config", "select * from provider_keys")] == 403
        assert statuses["/config.json?sql=" + quote("select * from users")] == 403
        assert statuses["/config.db"] == 403
        assert statuses[sql("ccany", "select * from config.provider_keys")] == 400  # no such table
        assert statuses[sql("ccany", f"attach database '{config.path}' as c")] == 400


async def test_admin_sees_secrets_masked(flow_log: FlowLog, tmp_path: Path) -> None:
    config = make_config(tmp_path / "config.db")
    ds = datasette_for(flow_log.path, config)
    cookies = await session(ds, *ADMIN)
    keys = (await ds.client.get("/config/provider_keys.json?_shape=array", cookies=cookies)).json()
    assert [(row["secret"], row["hint"]) for row in keys] == [(None, "…5b2d")]
    # Filters and sorting see NULL too: no oracle on the hidden value.
    assert (await ds.client.get("/config/provider_keys.json?_shape=array&secret__startswith=enc",
                                cookies=cookies)).json() == []
    assert (await ds.client.get("/config/users.json?_shape=array&password_hash__notblank=1",
                                cookies=cookies)).json() == []
    page = (await ds.client.get("/config/provider_keys", cookies=cookies)).text
    assert "encrypted, ends …5b2d" in page
    assert f"hashed, {config.client_key[:10]}…" in (await ds.client.get("/config/client_keys", cookies=cookies)).text
    assert 'class="ccany-secret"' in (await ds.client.get("/config/users/1", cookies=cookies)).text
    # The secret tables are hidden from viewers' database page, listed for admins.
    viewer_db = (await ds.client.get("/config.json", cookies=await session(ds, *VIEWER))).json()
    admin_db = (await ds.client.get("/config.json", cookies=cookies)).json()
    assert {t["name"] for t in viewer_db["tables"]} == set(OPEN_TABLES)
    assert {t["name"] for t in admin_db["tables"]} >= set(OPEN_TABLES) | set(SECRET_TABLES)


async def test_cross_database_sql_reads_no_secret_either(flow_log: FlowLog, tmp_path: Path) -> None:
    """With --crossdb (not how scripts/datasette runs), _memory attaches every DB: the mask still holds."""
    config = make_config(tmp_path / "config.db", users=False)
    ds = Datasette([str(flow_log.path), str(config.path)], crossdb=True, plugins_dir=str(PLUGINS_DIR),
                   template_dir=str(TEMPLATES_DIR), config={"settings": {"sql_time_limit_ms": 5000}})
    assert CONFIG.exists()
    for query in ["select * from config.provider_keys", "select * from config.client_keys",
                  "select secret is null as hidden from config.provider_keys"]:
        response = await ds.client.get(sql("_memory", query, ".json") + "&_shape=array")
        assert response.status_code == 200, response.text
        assert not leaks(response.text, config)
    rows = (await ds.client.get(sql("_memory", "select secret is null as hidden, hint from config.provider_keys")
                                + "&_shape=array")).json()
    assert rows == [{"hidden": 1, "hint": "…5b2d"}]


async def test_a_permissive_datasette_yaml_does_not_open_the_config_db(flow_log: FlowLog, tmp_path: Path) -> None:
    """`allow` blocks granting everything to everyone lose to the plugin's denials, which sit at the same or a more
    specific level (deny beats allow)."""
    config = make_config(tmp_path / "config.db")
    settings = make_datasette(flow_log.path).config
    everything = {"permissions": {action: True for action in ("execute-sql", "insert-row", "update-row",
                                                              "view-database-download", "execute-write-sql")},
                  "allow_sql": True, "allow": True,
                  "tables": {table: {"allow": True, "permissions": {"insert-row": True, "update-row": True}}
                             for table in ROWS}}
    ds = Datasette([str(flow_log.path), str(config.path)], plugins_dir=str(PLUGINS_DIR),
                   template_dir=str(TEMPLATES_DIR), config={**settings, "allow_sql": True,
                                                            "databases": {"config": everything}})
    viewer, admin = await session(ds, *VIEWER), await session(ds, *ADMIN)
    for cookies in (viewer, admin):
        assert (await ds.client.get(sql("config", "select * from users"), cookies=cookies)).status_code == 403
        response = await ds.client.post("/config/users/-/insert", cookies=cookies, json={
            "row": {"username": "eve", "password_hash": "x", "role": "admin"}})
        assert response.status_code == 403
    assert (await ds.client.get("/config/provider_keys.json", cookies=viewer)).status_code == 403
    assert (await ds.client.get("/config/users.json")).status_code == 403
    assert (await ds.client.post("/config/-/execute-write", cookies=admin, data={"sql": "delete from audit"})
            ).status_code == 403
    await probe(ds, config, viewer)
    await probe(ds, config, admin)
