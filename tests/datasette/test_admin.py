"""Admins change the configuration: plugin pages for what needs logic, Datasette's own row editor and JSON write API
for the rest. Keys reach the file only encrypted; every change is audited with who made it."""

from __future__ import annotations

import asyncio
import json
import re
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from ccany_addon.config import store
from ccany_addon.config.schema import open_config_db
from ccany_addon.config.secrets import client_key_hash, is_encrypted
from tests.conftest import secret
from tests.datasette.accounts import (
    ADMIN,
    CSRF_ATTACK,
    PROVIDER_KEY,
    VIEWER,
    Config,
    audit_rows,
    datasette_for,
    error_text,
    leaks,
    make_config,
    session,
)
from tests.datasette.conftest import FlowLog
from tests.fake_openai import FakeOpenAI

pytestmark = pytest.mark.anyio

NEW_KEY = secret("sk-live-PLAINTEXT-typed-in-the-browser-91c4e2")
EDITED_KEY = secret("sk-live-PLAINTEXT-edited-in-the-row-editor-3b7f")
API_KEY = secret("sk-live-PLAINTEXT-sent-to-the-json-api-5d8a")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def fake_upstream() -> AsyncIterator[str]:
    """The fake OpenAI server, in this test's event loop: its base URL."""
    fake = FakeOpenAI()
    server = await asyncio.start_server(fake.handle, "127.0.0.1", 0)
    yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1"
    server.close()


def stored_keys(config: Config) -> list[dict]:
    db = open_config_db(config.path, None)
    try:
        return list(db.query("SELECT k.id, p.name AS provider, k.name, k.secret, k.hint FROM provider_keys k "
                             "JOIN providers p ON p.id = k.provider_id ORDER BY k.id"))
    finally:
        db.close()


def assert_only_ciphertext(config: Config, *plaintexts: str) -> None:
    data = config.file_bytes()
    for plaintext in plaintexts:
        assert plaintext.encode() not in data
        assert plaintext[-12:].encode() not in data  # not even a tail of it
    for row in stored_keys(config):
        assert is_encrypted(row["secret"])


async def test_admin_adds_a_provider_and_key_in_the_ui(flow_log: FlowLog, tmp_path: Path) -> None:
    config = make_config(tmp_path / "config.db")
    ds = datasette_for(flow_log.path, config)
    admin = await session(ds, *ADMIN)
    page = await ds.client.get("/-/admin/providers", cookies=admin)
    assert page.status_code == 200 and "Add a provider" in page.text

    bad = await ds.client.post("/-/admin/providers", cookies=admin, data={
        "action": "add-provider", "name": "azure", "base_url": "ftp://nope", "kind": "openai"})
    assert bad.status_code == 400 and "http://" in error_text(bad.text)
    added = await ds.client.post("/-/admin/providers", cookies=admin, data={
        "action": "add-provider", "name": "deepseek", "kind": "openai", "base_url": "https://api.deepseek.com/v1/",
        "big_model": "deepseek-reasoner", "middle_model": "", "small_model": "deepseek-chat"})
    assert added.status_code == 200 and "Added provider deepseek" in added.text
    key = await ds.client.post("/-/admin/providers", cookies=admin, data={
        "action": "set-key", "provider": "deepseek", "key_name": "default", "key": NEW_KEY, "replace": "1"})
    assert key.status_code == 200, key.text
    assert "Replaced key “default” of provider deepseek" in key.text
    assert "default …c4e2" in key.text  # the hint, never the key
    assert not leaks(key.text, Config(config.path, config.client_key, [NEW_KEY]))
    viewer_try = await ds.client.post("/-/admin/providers", cookies=await session(ds, *VIEWER), data={
        "action": "set-key", "provider": "deepseek", "key": "sk-viewer-key-1234567890"})
    assert viewer_try.status_code == 403

    rows = [row for row in stored_keys(config) if row["provider"] == "deepseek"]
    assert len(rows) == 1 and rows[0]["hint"] == "…c4e2"
    first_id = rows[0]["id"]
    assert config.cipher.decrypt(rows[0]["secret"]) == NEW_KEY
    assert_only_ciphertext(config, NEW_KEY, PROVIDER_KEY)
    # Replacing it leaves one key, the new one; the old row is gone from the file too.
    await ds.client.post("/-/admin/providers", cookies=admin, data={
        "action": "set-key", "provider": "deepseek", "key_name": "default", "key": secret(NEW_KEY + "-v2"),
        "replace": "1"})
    rows = [row for row in stored_keys(config) if row["provider"] == "deepseek"]
    assert [config.cipher.decrypt(row["secret"]) for row in rows] == [NEW_KEY + "-v2"]
    provider = open_config_db(config.path, None)["providers"].get(2)
    assert (provider["base_url"], provider["big_model"], provider["middle_model"]) == (
        "https://api.deepseek.com/v1", "deepseek-reasoner", None)

    audit = [(row["actor"], row["action"], row["target"]) for row in audit_rows(config) if row["actor"] == ADMIN[0]]
    assert audit[1:] == [
        ("alice", "add provider", "providers/2"),
        ("alice", "set provider key", f"provider_keys/{first_id}"),
        ("alice", "delete provider key", f"provider_keys/{first_id}"),
        ("alice", "set provider key", f"provider_keys/{rows[0]['id']}"),
    ]
    assert all(NEW_KEY not in json.dumps(row) for row in audit_rows(config))


async def test_row_editor_and_json_api_store_ciphertext_and_are_audited(flow_log: FlowLog, tmp_path: Path) -> None:
    config = make_config(tmp_path / "config.db")
    ds = datasette_for(flow_log.path, config)
    admin = await session(ds, *ADMIN)
    # Insert (what the row editor's "Insert row" sends), with the inserted row returned: masked.
    inserted = await ds.client.post("/config/provider_keys/-/insert", cookies=admin, json={
        "row": {"provider_id": 1, "name": "backup", "secret": API_KEY}, "return": True})
    assert inserted.status_code == 201, inserted.text
    row = inserted.json()["rows"][0]
    assert (row["secret"], row["hint"]) == (None, "…5d8a")
    # Edit (what the row editor's "Edit" sends): a new key typed over the old one.
    updated = await ds.client.post(f"/config/provider_keys/{row['id']}/-/update", cookies=admin, json={
        "update": {"secret": EDITED_KEY, "name": "backup-2"}, "return": True})
    assert updated.status_code == 200, updated.text
    assert updated.json()["rows"][0]["secret"] is None and updated.json()["rows"][0]["hint"] == "…3b7f"
    # Editing other columns keeps the key.
    await ds.client.post(f"/config/provider_keys/{row['id']}/-/update", cookies=admin, json={
        "update": {"enabled": 0}})
    # Upserts too.
    upserted = await ds.client.post("/config/provider_keys/-/upsert", cookies=admin, json={
        "rows": [{"id": 1, "provider_id": 1, "secret": secret(API_KEY + "-up")}]})
    assert upserted.status_code == 200, upserted.text
    settings = await ds.client.post("/config/settings/-/insert", cookies=admin, json={
        "row": {"name": "ccany_request_timeout", "value": "90"}})
    assert settings.status_code == 201
    deleted = await ds.client.post("/config/routes/1/-/delete", cookies=admin)
    assert deleted.status_code == 200, deleted.text

    keys = {row["id"]: row for row in stored_keys(config)}
    assert config.cipher.decrypt(keys[row["id"]]["secret"]) == EDITED_KEY
    assert config.cipher.decrypt(keys[1]["secret"]) == API_KEY + "-up"
    assert_only_ciphertext(config, API_KEY, EDITED_KEY, PROVIDER_KEY)
    datasette_audit = [(r["actor"], r["action"], r["target"], json.loads(r["details"])) for r in audit_rows(config)
                       if r["details"] and json.loads(r["details"]).get("via") == "datasette"]
    assert [(actor, action, target) for actor, action, target, _ in datasette_audit] == [
        ("alice", "insert-rows", "provider_keys"),
        ("alice", "update-row", f"provider_keys/{row['id']}"),
        ("alice", "update-row", f"provider_keys/{row['id']}"),
        ("alice", "upsert-rows", "provider_keys"),
        ("alice", "insert-rows", "settings"),
        ("alice", "delete-row", "routes/1"),
    ]
    assert datasette_audit[0][3]["num_rows"] == 1
    assert all(API_KEY not in json.dumps(r) and EDITED_KEY not in json.dumps(r) for r in audit_rows(config))
    # The table page shows the masked key, never the ciphertext.
    page = (await ds.client.get("/config/provider_keys", cookies=admin)).text
    assert "encrypted, ends …3b7f" in page and "enc:v1:g" not in page
    # Datasette offers its row editor where admins may use it, and nowhere else.
    insert_button = 'data-table-action="insert-row"'
    assert insert_button in page
    assert insert_button not in (await ds.client.get("/config/users", cookies=admin)).text
    assert insert_button not in (await ds.client.get("/config/providers", cookies=await session(ds, *VIEWER))).text
    assert 'data-row-action="edit"' in (await ds.client.get("/config/provider_keys/1", cookies=admin)).text


async def test_who_may_write_what(flow_log: FlowLog, tmp_path: Path) -> None:
    config = make_config(tmp_path / "config.db")
    ds = datasette_for(flow_log.path, config)
    admin, viewer = await session(ds, *ADMIN), await session(ds, *VIEWER)
    row = {"provider_id": 1, "secret": "sk-nope-0123456789abc"}
    for cookies in (None, viewer):
        assert (await ds.client.post("/config/provider_keys/-/insert", cookies=cookies,
                                     json={"row": row})).status_code in (302, 403)
        assert (await ds.client.post("/config/providers/1/-/delete", cookies=cookies)).status_code in (302, 403)
        assert (await ds.client.post("/config/settings/-/insert", cookies=cookies,
                                     json={"row": {"name": "x", "value": "y"}})).status_code in (302, 403)
    # Admins: not the users (passwords must be hashed), not new client keys (generated), not the audit log,
    # no schema changes, no writes to the flow log, no write SQL.
    denied = [
        ("/config/users/-/insert", {"row": {"username": "eve", "password_hash": "plain", "role": "admin"}}),
        ("/config/users/1/-/update", {"update": {"role": "viewer"}}),
        ("/config/client_keys/-/insert", {"row": {"name": "x", "key_hash": "abc", "prefix": "cck_"}}),
        ("/config/audit/1/-/update", {"update": {"actor": "someone else"}}),
        ("/config/audit/1/-/delete", {}),
        ("/config/provider_keys/-/drop", {"confirm": True}),
        ("/config/provider_keys/-/insert", {"row": {"provider_id": 1, "secret": "sk-x", "extra": 1}, "alter": True}),
        ("/ccany/flows/-/insert", {"row": {"id": "x"}}),
        ("/config/-/create", {"table": "t", "columns": [{"name": "id"}]}),
    ]
    for path, body in denied:
        response = await ds.client.post(path, cookies=admin, json=body)
        assert response.status_code == 403, (path, response.status_code, response.text[:300])
    write_sql = await ds.client.post("/config/-/execute-write", cookies=admin,
                                     data={"sql": "update users set role = 'viewer'"})
    assert write_sql.status_code == 403
    stored = await ds.client.post("/config/-/queries/store", cookies=admin,
                                  json={"name": "hashes", "sql": "select password_hash from users"})
    assert stored.status_code == 403, stored.text
    # Allowed: client keys' name/expiry/enabled in place.
    edited = await ds.client.post("/config/client_keys/1/-/update", cookies=admin, json={"update": {"enabled": 0}})
    assert edited.status_code == 200
    db = open_config_db(config.path, None)
    assert [row["role"] for row in db["users"].rows] == ["admin", "viewer"] and db["client_keys"].get(1)["enabled"] == 0


async def test_client_key_is_shown_once_and_stored_hashed(flow_log: FlowLog, tmp_path: Path) -> None:
    config = make_config(tmp_path / "config.db")
    ds = datasette_for(flow_log.path, config)
    admin = await session(ds, *ADMIN)
    for bad_expiry in ["tomorrow", "2025-13-01", "2025-1-1"]:
        response = await ds.client.post("/-/admin/client-keys", cookies=admin,
                                        data={"name": "ci", "expires_at": bad_expiry})
        assert response.status_code == 400 and "date" in error_text(response.text), bad_expiry
    created = await ds.client.post("/-/admin/client-keys", cookies=admin, data={
        "name": "ci runner", "expires_at": "2030-01-31", "allowed_models": "claude-sonnet-*, claude-3-5-haiku-*"})
    assert created.status_code == 200 and "no-store" in created.headers["cache-control"]
    key = secret(re.search(r'<code class="ccany-key">(cck_[A-Za-z0-9_-]+)</code>', created.text).group(1))
    assert "shown this once" in created.text
    db = open_config_db(config.path, None)
    row = db["client_keys"].get(2)
    assert (row["name"], row["expires_at"], json.loads(row["allowed_models"])) == (
        "ci runner", "2030-01-31", ["claude-sonnet-*", "claude-3-5-haiku-*"])
    assert row["key_hash"] == client_key_hash(key) and row["prefix"] == key[:10]
    assert key.encode() not in config.file_bytes()
    # Never again: not on the page, not in the table, not in the audit log.
    later = await ds.client.get("/-/admin/client-keys", cookies=admin)
    assert key not in later.text and key[:10] in later.text
    table = await ds.client.get("/config/client_keys.json", cookies=admin)
    assert key not in table.text and client_key_hash(key) not in table.text
    assert audit_rows(config)[-1]["actor"] == ADMIN[0] and audit_rows(config)[-1]["action"] == "create client key"
    assert all(key not in json.dumps(r) for r in audit_rows(config))
    attack = await ds.client.post("/-/admin/client-keys", cookies=admin, headers=CSRF_ATTACK, data={"name": "evil"})
    assert attack.status_code == 403 and db["client_keys"].count == 2


async def test_connection_test_reports_models_or_the_error_never_the_key(
        flow_log: FlowLog, tmp_path: Path, fake_upstream: str) -> None:
    config = make_config(tmp_path / "config.db")
    db = open_config_db(config.path, config.cipher)
    db["providers"].update(1, {"base_url": fake_upstream})
    db.close()
    ds = datasette_for(flow_log.path, config)
    admin = await session(ds, *ADMIN)
    ok = await ds.client.post("/-/admin/providers", cookies=admin, data={"action": "test", "provider_id": "1"})
    assert ok.status_code == 200
    result = re.search(r'<div class="ccany-test ccany-test-ok" id="ccany-test-result">(.*?)</div>', ok.text, re.S)
    assert result, ok.text
    assert "HTTP 200" in result.group(1) and "3 models" in result.group(1) and "<code>gpt-4.1</code>" in result.group(1)
    assert PROVIDER_KEY not in ok.text

    # A key the upstream rejects: its 401 message quotes the key; the page does not.
    bad_key = secret("sk-bad-PLAINTEXT-rejected-key-00ff")
    await ds.client.post("/-/admin/providers", cookies=admin, data={
        "action": "set-key", "provider": "openai", "key_name": "default", "key": bad_key, "replace": "1"})
    failed = await ds.client.post("/-/admin/providers", cookies=admin, data={"action": "test", "provider_id": "1"})
    assert 'class="ccany-test ccany-test-failed"' in failed.text and "HTTP 401" in failed.text
    assert "Incorrect API key provided: [key]" in failed.text and bad_key not in failed.text

    # An upstream that is not there.
    with sqlite3.connect(config.path) as conn:
        conn.execute("UPDATE providers SET base_url = 'http://127.0.0.1:9/v1' WHERE id = 1")
    down = await ds.client.post("/-/admin/providers", cookies=admin, data={"action": "test", "provider_id": "1"})
    assert 'ccany-test-failed' in down.text and "ConnectError" in down.text and bad_key not in down.text
    viewer = await ds.client.post("/-/admin/providers", cookies=await session(ds, *VIEWER),
                                  data={"action": "test", "provider_id": "1"})
    assert viewer.status_code == 403


async def test_admin_manages_users(flow_log: FlowLog, tmp_path: Path) -> None:
    config = make_config(tmp_path / "config.db")
    ds = datasette_for(flow_log.path, config)
    admin = await session(ds, *ADMIN)
    page = await ds.client.get("/-/admin/users", cookies=admin)
    assert page.status_code == 200 and "victor" in page.text and "scrypt$" not in page.text
    olga_password, olga_new = secret("olga-password-9"), secret("olga-new-password")
    added = await ds.client.post("/-/admin/users", cookies=admin, data={
        "action": "add", "username": "olga", "password": olga_password, "role": "viewer"})
    assert added.status_code == 200 and "Added user olga" in added.text
    dup = await ds.client.post("/-/admin/users", cookies=admin, data={
        "action": "add", "username": "olga", "password": olga_password, "role": "viewer"})
    assert dup.status_code == 400 and "already a user named olga" in error_text(dup.text)
    short = await ds.client.post("/-/admin/users", cookies=admin, data={
        "action": "add", "username": "pat", "password": "short", "role": "viewer"})
    assert short.status_code == 400
    olga = await session(ds, "olga", olga_password)
    assert (await ds.client.get("/-/admin", cookies=olga)).status_code == 403
    await ds.client.post("/-/admin/users", cookies=admin, data={"action": "role", "username": "olga",
                                                                "role": "admin"})
    assert (await ds.client.get("/-/admin", cookies=olga)).status_code == 200
    await ds.client.post("/-/admin/users", cookies=admin, data={"action": "password", "username": "olga",
                                                                "password": olga_new})
    assert (await ds.client.get("/-/admin", cookies=olga)).status_code == 302  # a new password ends her sessions
    olga = await session(ds, "olga", olga_new)
    await ds.client.post("/-/admin/users", cookies=admin, data={"action": "disable", "username": "olga"})
    assert (await ds.client.get("/-/admin", cookies=olga)).status_code == 302
    await ds.client.post("/-/admin/users", cookies=admin, data={"action": "enable", "username": "olga"})
    assert (await ds.client.get("/-/admin", cookies=olga)).status_code == 200
    # Never without an enabled admin.
    await ds.client.post("/-/admin/users", cookies=admin, data={"action": "disable", "username": "olga"})
    last = await ds.client.post("/-/admin/users", cookies=admin, data={"action": "role", "username": ADMIN[0],
                                                                       "role": "viewer"})
    assert last.status_code == 400 and "no enabled admin" in error_text(last.text)
    last = await ds.client.post("/-/admin/users", cookies=admin, data={"action": "disable", "username": ADMIN[0]})
    assert last.status_code == 400
    assert [(r["actor"], r["action"], r["target"]) for r in audit_rows(config)
            if r["target"] == "users/olga" and r["actor"] == ADMIN[0]] == [
        ("alice", "set role", "users/olga"), ("alice", "set password", "users/olga"),
        ("alice", "disable user", "users/olga"), ("alice", "enable user", "users/olga"),
        ("alice", "disable user", "users/olga"),
    ]
    # The overview lists the tables and the latest changes.
    overview = await ds.client.get("/-/admin", cookies=admin)
    assert 'href="/config/provider_keys"' in overview.text and "disable user" in overview.text


async def test_api_tokens_act_with_their_users_current_role(flow_log: FlowLog, tmp_path: Path) -> None:
    """Datasette's signed API tokens (for scripts using the JSON write API) are checked against the users table
    like cookies: the user's role now, nothing for an unknown user, a 401 for a bad token."""
    config = make_config(tmp_path / "config.db")
    ds = datasette_for(flow_log.path, config)
    body = {"row": {"provider_id": 1, "name": "from-a-script", "secret": API_KEY}}
    admin_token = await ds.create_token(ADMIN[0])
    viewer_token = await ds.create_token(VIEWER[0])
    ghost_token = await ds.create_token("ghost")

    def bearer(token: str) -> dict:
        return {"authorization": f"Bearer {token}"}

    assert (await ds.client.post("/config/provider_keys/-/insert", headers=bearer(viewer_token), json=body)
            ).status_code == 403
    assert (await ds.client.get("/config/providers.json", headers=bearer(ghost_token))).status_code == 403
    assert (await ds.client.get("/config/providers.json", headers=bearer(admin_token + "x"))).status_code == 401
    inserted = await ds.client.post("/config/provider_keys/-/insert", headers=bearer(admin_token), json=body)
    assert inserted.status_code == 201, inserted.text
    assert_only_ciphertext(config, API_KEY, PROVIDER_KEY)
    assert audit_rows(config)[-1]["actor"] == ADMIN[0] and audit_rows(config)[-1]["action"] == "insert-rows"


async def test_key_health_is_shown_and_a_disabled_key_can_be_re_enabled(flow_log: FlowLog, tmp_path: Path) -> None:
    config = make_config(tmp_path / "config.db")
    db = open_config_db(config.path, config.cipher)
    cooling_id = store.set_provider_key(db, "cli", "openai", secret("sk-live-second-key-for-the-pool-77a1"), "second")
    disabled_id = store.set_provider_key(db, "cli", "openai", secret("sk-live-third-key-for-the-pool-88b2"), "third")
    # what the gateway writes when an upstream answers 429 for one key and 401 for another
    store.record_key_failure(db, cooling_id, 429, "slow down", time.time() + 600, None)
    store.record_key_failure(db, disabled_id, 401, "invalid api key", None, "upstream answered 401: invalid api key")
    db.close()
    ds = datasette_for(flow_log.path, config)
    admin = await session(ds, *ADMIN)
    page = await ds.client.get("/-/admin/providers", cookies=admin)
    rows = re.findall(r'<tr class="ccany-key-(\w+)">(.*?)</tr>', page.text, re.S)
    health = {re.search(r"ccany-secret\">(\w+)", cells).group(1): state for state, cells in rows}
    assert health == {"default": "healthy", "second": "cooling", "third": "disabled"}
    assert "upstream answered 401: invalid api key" in page.text and "(HTTP 429)" in page.text
    assert not leaks(page.text, config)
    enabled = await ds.client.post("/-/admin/providers", cookies=admin,
                                   data={"action": "enable-key", "key_id": str(disabled_id)})
    assert enabled.status_code == 200 and "Re-enabled the key" in enabled.text
    row = open_config_db(config.path, None)["provider_keys"].get(disabled_id)
    assert (row["enabled"], row["disabled_reason"]) == (1, None)
    assert ("alice", "enable provider key", f"provider_keys/{disabled_id}") in [
        (r["actor"], r["action"], r["target"]) for r in audit_rows(config)]
    assert ("gateway", "disable provider key") in [(r["actor"], r["action"]) for r in audit_rows(config)]


async def test_admin_sets_the_new_capability_flags_in_the_row_editor(flow_log: FlowLog, tmp_path: Path) -> None:
    """structured_outputs, prompt_cache_key and xhigh_effort are columns of model_capabilities like late_system:
    shown on the table and row pages, written by Datasette's row editor, read by the proxy's snapshot."""
    from ccany_addon.config.snapshot import read_snapshot
    from ccany_addon.upstreams.models import capabilities

    config = make_config(tmp_path / "config.db")
    ds = datasette_for(flow_log.path, config)
    admin, viewer = await session(ds, *ADMIN), await session(ds, *VIEWER)
    flags = ("late_system", "prompt_cache_key", "structured_outputs", "xhigh_effort")
    inserted = await ds.client.post("/config/model_capabilities/-/insert", cookies=admin, json={
        "row": {"pattern": "qwen3-*", "late_system": 0, "structured_outputs": 1, "prompt_cache_key": 1},
        "return": True})
    assert inserted.status_code == 201, inserted.text
    row = inserted.json()["rows"][0]
    assert [row[name] for name in flags] == [0, 1, 1, None]
    updated = await ds.client.post(f"/config/model_capabilities/{row['id']}/-/update", cookies=admin, json={
        "update": {"xhigh_effort": 1, "prompt_cache_key": None}, "return": True})
    assert updated.status_code == 200, updated.text
    assert [updated.json()["rows"][0][name] for name in flags] == [0, None, 1, 1]
    # a viewer reads them but may not change them
    denied = await ds.client.post(f"/config/model_capabilities/{row['id']}/-/update", cookies=viewer,
                                  json={"update": {"structured_outputs": 0}})
    assert denied.status_code == 403
    # the table and row pages show every flag, with the row editor for admins
    table = (await ds.client.get("/config/model_capabilities", cookies=admin)).text
    assert all(f'data-column="{name}"' in table for name in flags) and 'data-table-action="insert-row"' in table
    page = await ds.client.get(f"/config/model_capabilities/{row['id']}", cookies=viewer)
    assert page.status_code == 200 and all(f'data-column="{name}"' in page.text for name in flags)
    assert 'data-row-action="edit"' in (await ds.client.get(f"/config/model_capabilities/{row['id']}",
                                                            cookies=admin)).text
    as_json = (await ds.client.get(f"/config/model_capabilities/{row['id']}.json?_shape=objects",
                                   cookies=viewer)).json()["rows"][0]
    assert [as_json[name] for name in flags] == [0, None, 1, 1]
    # what the proxy then does with qwen3 models
    db = open_config_db(config.path, None)
    try:
        caps = capabilities("qwen3-coder", read_snapshot(db, None).capabilities)
    finally:
        db.close()
    assert (caps.late_system, caps.prompt_cache_key, caps.structured_outputs, caps.xhigh_effort) == (
        False, None, True, True)
    assert [(r["actor"], r["action"], r["target"]) for r in audit_rows(config)
            if r["details"] and json.loads(r["details"]).get("via") == "datasette"] == [
        ("alice", "insert-rows", "model_capabilities"),
        ("alice", "update-row", f"model_capabilities/{row['id']}")]


async def test_admin_prices_a_model_in_the_row_editor(flow_log: FlowLog, tmp_path: Path) -> None:
    """A `model_prices` row written with Datasette's row editor is what the proxy prices that model by; a viewer
    reads prices but cannot change them, and a negative price is refused by the table itself."""
    from ccany_addon.config.snapshot import read_snapshot
    from ccany_addon.costs.prices import PriceTable

    config = make_config(tmp_path / "config.db")
    ds = datasette_for(flow_log.path, config)
    admin, viewer = await session(ds, *ADMIN), await session(ds, *VIEWER)
    inserted = await ds.client.post("/config/model_prices/-/insert", cookies=admin, json={
        "row": {"pattern": "qwen3-*", "provider": "vllm", "input_per_mtok": 0.2, "output_per_mtok": 0.6},
        "return": True})
    assert inserted.status_code == 201, inserted.text
    refused = await ds.client.post("/config/model_prices/-/insert", cookies=admin, json={
        "row": {"pattern": "bad-*", "input_per_mtok": -1, "output_per_mtok": 0}})
    assert refused.status_code == 400 and "CHECK constraint" in refused.text
    denied = await ds.client.post("/config/model_prices/-/insert", cookies=viewer, json={
        "row": {"pattern": "free-*", "input_per_mtok": 0, "output_per_mtok": 0}})
    assert denied.status_code == 403
    assert (await ds.client.get("/config/model_prices.json", cookies=viewer)).status_code == 200
    db = open_config_db(config.path, None)
    try:
        table = PriceTable(read_snapshot(db, None).prices)
    finally:
        db.close()
    usage = {"input_tokens": 1_000_000, "output_tokens": 1_000_000}
    at_vllm = table.cost(usage, "qwen3-coder", "vllm", "http://10.0.0.5:8000/v1/chat/completions", 0)
    assert at_vllm is not None and at_vllm.usd == 0.8 and at_vllm.source == "override qwen3-* (vllm)"
    local = table.cost(usage, "llama3.3", "ollama", "http://127.0.0.1:11434/v1", 0)
    assert local is not None and local.usd == 0 and local.source == "override llama*"


async def test_admin_sets_a_users_budgets(flow_log: FlowLog, tmp_path: Path) -> None:
    """A user's daily and monthly budgets, set on /-/admin/users, are what the proxy holds that user's keys to;
    a viewer cannot set them, and an amount that is not one is refused with a message."""
    from ccany_addon.config.snapshot import read_snapshot

    config = make_config(tmp_path / "config.db")
    db = open_config_db(config.path, None)
    store.set_client_key_limits(db, "t", "laptop", "victor")
    db.close()
    ds = datasette_for(flow_log.path, config)
    admin, viewer = await session(ds, *ADMIN), await session(ds, *VIEWER)
    done = await ds.client.post("/-/admin/users", cookies=admin, data={
        "action": "budgets", "username": "victor", "daily_budget_usd": "$5", "monthly_budget_usd": "",
        "over_budget_model": " claude-haiku-4-5 "})
    assert done.status_code == 200 and "Set the budgets of victor" in done.text
    assert 'value="5.0" aria-label="daily budget of victor"' in done.text
    assert 'value="claude-haiku-4-5" aria-label="model for victor over budget"' in done.text
    bad = await ds.client.post("/-/admin/users", cookies=admin, data={
        "action": "budgets", "username": "victor", "daily_budget_usd": "lots", "monthly_budget_usd": ""})
    assert bad.status_code == 400 and "daily budget usd must be an amount in USD" in error_text(bad.text)
    denied = await ds.client.post("/-/admin/users", cookies=viewer, data={
        "action": "budgets", "username": "victor", "daily_budget_usd": "100"})
    assert denied.status_code == 403
    db = open_config_db(config.path, None)
    try:
        laptop = next(key for key in read_snapshot(db, None).client_keys.values() if key.name == "laptop")
    finally:
        db.close()
    assert laptop.owner == "victor" and laptop.payers[1].limits.daily_usd == 5.0
    assert laptop.payers[1].limits.monthly_usd is None
    assert laptop.payers[1].limits.over_budget_model == "claude-haiku-4-5"
