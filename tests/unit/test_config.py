"""The config DB: encrypted keys whatever writes them, the snapshot the proxy uses, access rules, the CLI and
the Claude Code set-up helper, on real files."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime

import pytest
import sqlite_utils
import yaml

from ccany_addon.anthropic_api.errors import GatewayError
from ccany_addon.claude_setup import gateway_env
from ccany_addon.config import store
from ccany_addon.config.access import authenticate, authorize_model, is_loopback, presented_key
from ccany_addon.config.cli import main as config_main
from ccany_addon.config.schema import open_config_db
from ccany_addon.config.secrets import Cipher, load_master_key, verify_password
from ccany_addon.config.snapshot import read_snapshot
from tests.conftest import ROOT, secret

KEY = secret("sk-upstream-PLAIN-0123456789abcdef")


@pytest.fixture
def config(tmp_path, monkeypatch):
    monkeypatch.delenv("CCANY_MASTER_KEY", raising=False)
    path = tmp_path / "config.db"
    cipher = Cipher(load_master_key(path))
    db = open_config_db(path, cipher)
    yield path, db, cipher
    db.close()


def test_master_key_file_is_private_and_keys_are_stored_encrypted(config, tmp_path):
    path, db, cipher = config
    assert oct((tmp_path / "master.key").stat().st_mode & 0o777) == "0o600"
    store.add_provider(db, "tester", "openai", "https://api.openai.com/v1")
    store.set_provider_key(db, "tester", "openai", KEY)
    db.execute("UPDATE provider_keys SET secret = ? WHERE id = 1", ["sk-upstream-OTHER-9999999999"])
    db.conn.commit()
    row = next(db["provider_keys"].rows)
    assert row["secret"].startswith("enc:v1:") and row["hint"] == "…9999"
    assert cipher.decrypt(row["secret"]) == "sk-upstream-OTHER-9999999999"
    db.conn.execute("PRAGMA wal_checkpoint(FULL)")
    for file in tmp_path.glob("config.db*"):
        assert b"PLAIN-0123" not in file.read_bytes() and b"OTHER-9999" not in file.read_bytes()
    # a writer without the master key cannot store plain text
    with sqlite3.connect(path) as plain, pytest.raises(sqlite3.OperationalError, match="ccany_"):
        plain.execute("INSERT INTO provider_keys (provider_id, secret) VALUES (1, 'sk-nope-1234567890')")
    assert [a["action"] for a in db["audit"].rows] == ["add provider", "set provider key"]


def test_snapshot_routes_client_keys_and_settings(config):
    _, db, cipher = config
    store.add_provider(db, "t", "local", "http://127.0.0.1:9/v1", models={"small": "qwen-small"})
    store.set_provider_key(db, "t", "local", KEY)
    store.add_provider(db, "t", "twin", "http://127.0.0.1:10/v1")  # the same key as another provider
    store.set_provider_key(db, "t", "twin", KEY)
    store.add_route(db, "t", "*haiku*", "local", None, priority=10)
    store.add_route(db, "t", "claude-*", "local", "big-one", priority=20)
    key_id, key = store.create_client_key(db, "t", "ci", "2999-01-01", ["claude-*"])
    store.set_setting(db, "t", "ccany_request_timeout", "30")
    snapshot = read_snapshot(db, cipher)
    provider = snapshot.providers["local"]
    assert (provider.scheme, provider.host, provider.port, provider.path_prefix, provider.secrets) == (
        "http", "127.0.0.1", 9, "/v1", (KEY,))
    assert snapshot.route("claude-haiku-4-5").upstream_model is None
    assert snapshot.route("claude-sonnet-4-5").upstream_model == "big-one"
    assert snapshot.route("gpt-4o") is None
    assert snapshot.settings == {"ccany_request_timeout": 30} and snapshot.secrets == (KEY,)
    client = authenticate(snapshot, key, "10.0.0.5")
    assert client.id == key_id and db["client_keys"].get(key_id)["key_hash"] != key
    authorize_model(client, "claude-opus-4-1")
    with pytest.raises(GatewayError, match="may not use model"):
        authorize_model(client, "gpt-4o")


@pytest.mark.parametrize(
    ("change", "message"),
    [(None, "needs a client key"), ("wrong", "Invalid client key"), ("disabled", "disabled"),
     ("expired", "expired")],
)
def test_client_key_refusals(config, change, message):
    _, db, cipher = config
    key_id, key = store.create_client_key(db, "t", "k", "2020-01-01" if change == "expired" else None)
    if change == "disabled":
        db.execute("UPDATE client_keys SET enabled = 0 WHERE id = ?", [key_id])
        db.conn.commit()
    presented = {None: None, "wrong": key + "x"}.get(change, key)
    with pytest.raises(GatewayError, match=message) as caught:
        authenticate(read_snapshot(db, cipher), presented, "127.0.0.1")
    assert caught.value.status == 401


def test_without_client_keys_only_loopback_is_served(config):
    _, db, cipher = config
    snapshot = read_snapshot(db, cipher)
    assert authenticate(snapshot, None, "127.0.0.1") is None
    assert authenticate(snapshot, None, "::1") is None
    with pytest.raises(GatewayError, match="only clients on this machine") as caught:
        authenticate(snapshot, None, "192.168.1.20")
    assert caught.value.status == 403
    assert is_loopback("::ffff:127.0.0.1") and not is_loopback("not-an-ip")


def test_expiry_date_is_valid_through_that_day(config):
    _, db, cipher = config
    _, key = store.create_client_key(db, "t", "k", "2030-06-01")
    snapshot = read_snapshot(db, cipher)
    assert authenticate(snapshot, key, "1.2.3.4", datetime(2030, 6, 1, 23, 0, tzinfo=UTC))
    with pytest.raises(GatewayError):
        authenticate(snapshot, key, "1.2.3.4", datetime(2030, 6, 2, 0, 1, tzinfo=UTC))


def test_presented_key_reads_both_header_styles():
    assert presented_key({"x-api-key": "a"}) == "a"
    assert presented_key({"authorization": "Bearer b"}) == "b"
    assert presented_key({"authorization": "Basic c"}) is None


def test_cli_round_trip_export_without_and_with_secrets(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("CCANY_MASTER_KEY", raising=False)
    db_path = str(tmp_path / "a" / "config.db")
    monkeypatch.setenv("UPSTREAM", KEY)
    monkeypatch.setenv("PASSWORD", "correct horse battery")
    for argv in (["provider-add", "openai", "--base-url", "https://api.openai.com/v1", "--small-model", "gpt-4.1-mini"],
                 ["key-set", "openai", "--from-env", "UPSTREAM"],
                 ["route-add", "*haiku*", "openai", "--model", "gpt-4.1-mini"],
                 ["provider-add", "pool", "--base-url", "https://pool.example/v1", "--key-strategy", "fill-first",
                  "--fallback", "openai"],
                 ["route-add", "*", "pool", "--model", "o3", "--priority", "10", "--scenario", "thinking"],
                 ["user-add", "ada", "--role", "admin", "--from-env", "PASSWORD"],
                 ["setting", "ccany_max_tokens_limit", "8192"]):
        assert config_main(["--db", db_path, *argv]) == 0
    assert config_main(["--db", db_path, "client-key-create", "laptop", "--models", "claude-*"]) == 0
    printed_key = capsys.readouterr().out.strip().splitlines()[-1]
    assert printed_key.startswith("cck_")
    assert config_main(["--db", db_path, "export", str(tmp_path / "plain.yaml")]) == 0
    plain = (tmp_path / "plain.yaml").read_text()
    assert KEY not in plain and "scrypt$" not in plain and "key_hash" not in plain
    assert yaml.safe_load(plain)["routes"][1] == {"pattern": "*haiku*", "provider": "openai",
                                                  "model": "gpt-4.1-mini", "priority": 100, "enabled": True}
    exported = yaml.safe_load(plain)
    assert exported["providers"][1]["key_strategy"] == "fill-first" and exported["providers"][1]["fallback"] == [
        "openai"]
    assert exported["routes"][0]["scenario"] == "thinking"
    db = open_config_db(db_path, None)
    store.set_capabilities(db, "t", "o3*", max_output_tokens=5000, vision=False)
    db.close()
    assert config_main(["--db", db_path, "export", str(tmp_path / "all.yaml"), "--with-secrets"]) == 0
    assert yaml.safe_load((tmp_path / "all.yaml").read_text())["model_capabilities"] == [
        {"pattern": "o3*", "max_output_tokens": 5000, "vision": 0}]
    assert oct((tmp_path / "all.yaml").stat().st_mode & 0o777) == "0o600"
    # a second installation, with its own master key, imports everything and the keys still work
    other = str(tmp_path / "b" / "config.db")
    assert config_main(["--db", other, "import", str(tmp_path / "all.yaml")]) == 0
    db = open_config_db(other, Cipher(load_master_key(other)))
    snapshot = read_snapshot(db, Cipher(load_master_key(other)))
    assert snapshot.providers["openai"].secrets == (KEY,)
    assert authenticate(snapshot, printed_key, "10.1.1.1").name == "laptop"
    assert verify_password("correct horse battery", next(db["users"].rows)["password_hash"])
    assert snapshot.settings == {"ccany_max_tokens_limit": 8192}
    assert snapshot.providers["pool"].fallback == ("openai",) and snapshot.routes[0].scenario == "thinking"
    assert snapshot.capabilities[0].max_output_tokens == 5000 and snapshot.capabilities[0].vision is False
    assert config_main(["--db", other, "import", str(tmp_path / "all.yaml")]) == 0  # idempotent except keys
    assert db["routes"].count == 2 and db["client_keys"].count == 1 and db["model_capabilities"].count == 1


def test_cli_refuses_bad_input_with_a_message(tmp_path, capsys):
    db_path = str(tmp_path / "config.db")
    assert config_main(["--db", db_path, "route-add", "*", "missing"]) == 1
    assert "no provider named 'missing'" in capsys.readouterr().err
    assert config_main(["--db", db_path, "provider-add", "x", "--base-url", "ftp://x"]) == 1


def test_module_entry_point_runs(tmp_path):
    result = subprocess.run([sys.executable, "-m", "ccany_addon.config", "--db", str(tmp_path / "c.db"), "export"],
                            capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert result.returncode == 0 and "providers: []" in result.stdout


def test_claude_setup_writes_env_and_onboarding_with_backups(tmp_path):
    home = tmp_path / "home"
    (home / ".claude").mkdir(parents=True)
    (home / ".claude" / "settings.json").write_text(json.dumps({"env": {"KEEP": "1"}, "model": "opus"}))
    (home / ".claude.json").write_text(json.dumps({"numStartups": 3}))
    env = {**os.environ, "HOME": str(home), "TOKEN": "cck_secret"}
    result = subprocess.run([sys.executable, "-m", "ccany_addon.claude_setup", "--url", "http://127.0.0.1:9999/",
                             "--token-env", "TOKEN"], capture_output=True, text=True, env=env, timeout=60, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    settings = json.loads((home / ".claude" / "settings.json").read_text())
    assert settings == {"env": {"KEEP": "1", "ANTHROPIC_BASE_URL": "http://127.0.0.1:9999",
                                "ANTHROPIC_AUTH_TOKEN": "cck_secret", "CLAUDE_CODE_GATEWAY_HINT_HEADERS": "1",
                                "CLAUDE_CODE_ENABLE_GATEWAY_MODEL_DISCOVERY": "1",
                                "CLAUDE_CODE_AUTO_MODE_SERVER": "0"}, "model": "opus"}
    assert json.loads((home / ".claude.json").read_text()) == {"numStartups": 3, "hasCompletedOnboarding": True}
    backups = sorted(path.name for path in home.rglob("*.bak-*"))
    assert len(backups) == 2 and json.loads(next(home.glob(".claude.json.bak-*")).read_text()) == {"numStartups": 3}


def test_claude_setup_for_an_anthropic_gateway_keeps_auto_mode_on_the_server_and_takes_the_window():
    env = gateway_env("http://gw", "t", converting=False, context_window=128_000, max_output_tokens=16_384)
    assert "CLAUDE_CODE_AUTO_MODE_SERVER" not in env
    assert (env["CLAUDE_CODE_AUTO_COMPACT_WINDOW"], env["CLAUDE_CODE_MAX_OUTPUT_TOKENS"]) == ("128000", "16384")
    assert env["CLAUDE_CODE_GATEWAY_HINT_HEADERS"] == env["CLAUDE_CODE_ENABLE_GATEWAY_MODEL_DISCOVERY"] == "1"
    assert "CLAUDE_CODE_AUTO_COMPACT_WINDOW" not in gateway_env("http://gw", "t")


TRICKY_HASHES = ["0123456789", "1234567890", "1e5", "0x1f", "1_000", "12:30", "yes", "null", ".5", "+7"]


def _insert_client_keys(db, hashes: list[str]) -> None:
    for index, key_hash in enumerate(hashes):
        db["client_keys"].insert({"name": f"k{index}", "key_hash": key_hash, "prefix": key_hash[:4]})


def test_hashes_yaml_would_read_as_numbers_round_trip_through_export_and_import(config, tmp_path):
    path, db, _ = config
    _insert_client_keys(db, TRICKY_HASHES)
    db.conn.commit()
    assert config_main(["--db", str(path), "export", str(tmp_path / "all.yaml"), "--with-secrets"]) == 0
    text = (tmp_path / "all.yaml").read_text()
    assert "key_hash: '0123456789'" in text and "key_hash: '1e5'" in text  # quoted for any YAML reader
    assert [key["key_hash"] for key in yaml.safe_load(text)["client_keys"]] == TRICKY_HASHES
    other = tmp_path / "b" / "config.db"
    assert config_main(["--db", str(other), "import", str(tmp_path / "all.yaml")]) == 0
    imported = open_config_db(other, None)
    assert [row["key_hash"] for row in imported["client_keys"].rows_where(order_by="id")] == TRICKY_HASHES
    imported.close()


def test_import_reads_unquoted_digits_as_the_text_written(config, tmp_path):
    path, db, _ = config
    (tmp_path / "hand.yaml").write_text(
        "client_keys:\n- {name: a, key_hash: 0123}\n- {name: b, key_hash: 1e5}\n- {name: c, key_hash: 42}\n"
        "routes: []\nsettings: {ccany_max_tokens_limit: 8192, ccany_fold_system_messages: yes}\n"
        "model_capabilities:\n- {pattern: 'o3*', max_output_tokens: 5000, vision: 0}\n")
    assert config_main(["--db", str(path), "import", str(tmp_path / "hand.yaml")]) == 0
    assert [row["key_hash"] for row in db["client_keys"].rows_where(order_by="id")] == ["0123", "1e5", "42"]
    assert read_snapshot(db, None).settings == {"ccany_max_tokens_limit": 8192, "ccany_fold_system_messages": True}
    assert next(db["model_capabilities"].rows)["vision"] == 0


def _dump(db) -> list[str]:
    return list(db.conn.iterdump())


def _filled(db) -> None:
    store.add_provider(db, "t", "existing", "https://existing.example/v1", models={"big": "e-big"})
    store.set_provider_key(db, "t", "existing", KEY)
    store.add_route(db, "t", "claude-*", "existing", None)
    store.set_setting(db, "t", "ccany_request_timeout", "30")


@pytest.mark.parametrize(("late_entry", "message"), [
    ({"users": [{"username": "ada", "password_hash": "x"}, {"username": "bob", "role": "root"}]},
     "users[1] (username 'bob'): role must be one of admin, viewer"),
    ({"model_capabilities": [{"pattern": "o3*", "max_output_tokens": "lots"}]},
     "model_capabilities[0] (pattern 'o3*'): max_output_tokens must be a whole number"),
    ({"client_keys": [{"name": "laptop", "key_hash": "abc"}, {"name": "ci", "key_hash": ["abc"]}]},
     "client_keys[2] (name 'ci'): key_hash must be text, not a list (quote it)"),
    ({"providers": [{"name": "late", "base_url": "https://late.example/v1", "keys": [{"name": "k", "kee": KEY}]}]},
     "providers[1] (name 'late').keys[0] (name 'k'): unknown fields kee"),
    ({"settings": {"ccany_cache_ttl": "soon"}}, "settings: ccany_cache_ttl must be a whole number"),
    ({"routes": [{"pattern": "gpt-*", "provider": "nowhere"}]},
     "routes[1] (pattern 'gpt-*'): no provider named 'nowhere' in the DB or the file"),
])
def test_an_invalid_entry_late_in_the_file_changes_nothing_and_is_named(config, tmp_path, capsys, late_entry,
                                                                        message):
    path, db, _ = config
    _filled(db)
    before = _dump(db)
    data = {"providers": [{"name": "new", "base_url": "https://new.example/v1", "models": {"small": "n-small"},
                           "keys": [{"name": "main", "key": KEY}]}],
            "routes": [{"pattern": "*haiku*", "provider": "new", "priority": 5}],
            "client_keys": [{"name": "early", "key_hash": "0123"}],
            "settings": {"ccany_max_tokens_limit": 4096}}
    for section, entries in late_entry.items():
        data[section] = entries if section == "settings" else data.get(section, []) + entries
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    assert config_main(["--db", str(path), "import", str(tmp_path / "bad.yaml")]) == 1
    error = capsys.readouterr().err
    assert message in error and KEY not in error
    assert _dump(db) == before


def test_a_failure_while_applying_rolls_the_whole_import_back(config, tmp_path):
    from ccany_addon.config.transfer import import_config
    path, db, _ = config
    _filled(db)
    before = _dump(db)
    without_cipher = open_config_db(path, None)  # storing a key needs ccany_encrypt: the last write fails
    data = {"providers": [{"name": "first", "base_url": "https://first.example/v1"},
                          {"name": "second", "base_url": "https://second.example/v1", "keys": [{"key": KEY}]}],
            "users": [{"username": "ada", "password_hash": "scrypt$x"}]}
    with pytest.raises(store.ConfigError, match="import failed and changed nothing") as caught:
        import_config(without_cipher, data)
    assert KEY not in str(caught.value)
    without_cipher.close()
    assert _dump(db) == before


def test_a_non_mapping_or_broken_file_is_refused(config, tmp_path, capsys):
    path, db, _ = config
    before = _dump(db)
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    (tmp_path / "broken.yaml").write_text(f"providers: [{{name: x, key: {KEY}\n")
    assert config_main(["--db", str(path), "import", str(tmp_path / "list.yaml")]) == 1
    assert config_main(["--db", str(path), "import", str(tmp_path / "broken.yaml")]) == 1
    assert config_main(["--db", str(path), "import", str(tmp_path / "missing.yaml")]) == 1
    error = capsys.readouterr().err
    assert "mapping of sections" in error and "not valid YAML at line" in error and KEY not in error
    assert _dump(db) == before


def test_the_config_db_and_its_wal_are_created_private(tmp_path, monkeypatch):
    monkeypatch.delenv("CCANY_MASTER_KEY", raising=False)
    old_umask = os.umask(0o022)  # the usual umask, which would give SQLite's files 0644
    try:
        path = tmp_path / "private" / "config.db"
        db = open_config_db(path, Cipher(load_master_key(path)))
        store.add_provider(db, "t", "p", "https://p.example/v1")
        files = sorted(tmp_path.glob("private/config.db*"))
        assert [file.name for file in files] == ["config.db", "config.db-shm", "config.db-wal"]
        assert {file.name: oct(file.stat().st_mode & 0o777) for file in files} == {
            file.name: "0o600" for file in files}
        db.close()
        # a file someone else made keeps its mode: ours is not to change silently
        shared = tmp_path / "shared.db"
        shared.touch(mode=0o640)
        open_config_db(shared, None).close()
        assert oct(shared.stat().st_mode & 0o777) == "0o640"
    finally:
        os.umask(old_umask)


def test_import_takes_numbers_where_text_belongs_as_their_digits_and_refuses_other_types(config):
    from ccany_addon.config.transfer import import_config
    _, db, _ = config
    import_config(db, {"client_keys": [{"name": "a", "key_hash": 1234567890}]})  # as yaml.safe_load gives it
    assert next(db["client_keys"].rows)["key_hash"] == "1234567890"
    with pytest.raises(store.ConfigError, match=r"client_keys\[0\] \(name 'b'\): key_hash must be text, not a "
                                                r"number \(quote it\)"):
        import_config(db, {"client_keys": [{"name": "b", "key_hash": 1e5}]})
    assert db["client_keys"].count == 1


def test_import_keeps_disabled_providers_keys_and_routes_disabled(config, tmp_path):
    path, db, _ = config
    (tmp_path / "off.yaml").write_text(
        f"providers:\n- name: off\n  base_url: https://off.example/v1\n  enabled: false\n"
        f"  keys: [{{name: revoked, key: '{KEY}', enabled: false}}]\n"
        "routes:\n- {pattern: 'claude-*', provider: 'off', enabled: no, priority: '7'}\n")
    assert config_main(["--db", str(path), "import", str(tmp_path / "off.yaml")]) == 0
    assert next(db["providers"].rows)["enabled"] == 0 and next(db["provider_keys"].rows)["enabled"] == 0
    route = next(db["routes"].rows)
    assert (route["enabled"], route["priority"]) == (0, 7)


NEW_CAPABILITY_FLAGS = ("prompt_cache_key", "structured_outputs", "xhigh_effort")


def test_new_capability_flags_are_read_into_the_snapshot_and_applied(config):
    from ccany_addon.upstreams.models import capabilities
    _, db, _ = config
    store.set_capabilities(db, "t", "qwen3-*", structured_outputs=True, prompt_cache_key=True, xhigh_effort=True)
    store.set_capabilities(db, "t", "gpt-5*", structured_outputs=False, prompt_cache_key=False)
    store.set_capabilities(db, "t", "gpt-4o*", max_output_tokens=1000)  # the new flags unset: NULL
    assert {row["pattern"]: [row[name] for name in NEW_CAPABILITY_FLAGS] for row in db["model_capabilities"].rows} \
        == {"qwen3-*": [1, 1, 1], "gpt-5*": [0, 0, None], "gpt-4o*": [None, None, None]}
    overrides = read_snapshot(db, None).capabilities
    assert [(o.prompt_cache_key, o.structured_outputs, o.xhigh_effort) for o in overrides] == [
        (True, True, True), (False, False, None), (None, None, None)]
    # built-in: qwen has neither structured outputs nor a cache-key rule nor xhigh; the rows turn them on
    assert (capabilities("qwen3-coder").structured_outputs, capabilities("qwen3-coder").prompt_cache_key) == (
        False, None)
    qwen = capabilities("qwen3-coder", overrides)
    assert (qwen.structured_outputs, qwen.prompt_cache_key, qwen.xhigh_effort, qwen.late_system) == (
        True, True, True, False)
    # and off where the built-in says on; an unset flag keeps the family's value (gpt-5.2 has xhigh)
    gpt = capabilities("gpt-5.2", overrides)
    assert (gpt.structured_outputs, gpt.prompt_cache_key, gpt.xhigh_effort) == (False, False, True)
    assert capabilities("gpt-4o", overrides).structured_outputs is True
    assert capabilities("gpt-4o", overrides).max_output_tokens == 1000
    # setting a flag back to None clears the override: the built-in applies again
    store.set_capabilities(db, "t", "gpt-5*", structured_outputs=None)
    assert capabilities("gpt-5.2", read_snapshot(db, None).capabilities).structured_outputs is True


def test_a_v5_config_db_gains_the_new_capability_columns_unset(tmp_path):
    from ccany_addon.config.schema import MIGRATIONS, VERSION
    from ccany_addon.util.sqlite_migrations import migrate
    path = tmp_path / "old.db"
    old = sqlite_utils.Database(str(path))
    migrate(old, MIGRATIONS[:5], "config DB")
    old["model_capabilities"].insert({"pattern": "qwen3-*", "late_system": 0})
    old.close()
    db = open_config_db(path, None)
    assert db.execute("PRAGMA user_version").fetchone()[0] == VERSION == 9
    row = next(db["model_capabilities"].rows)
    assert row["late_system"] == 0 and all(row[name] is None for name in NEW_CAPABILITY_FLAGS)
    override = read_snapshot(db, None).capabilities[0]
    assert override.late_system is False and override.structured_outputs is None
    db.close()


def test_new_capability_flags_round_trip_through_export_and_import(config, tmp_path):
    path, db, _ = config
    store.set_capabilities(db, "t", "my-vllm-*", structured_outputs=True, prompt_cache_key=False, late_system=False)
    store.set_capabilities(db, "t", "gpt-5*", xhigh_effort=False)
    assert config_main(["--db", str(path), "export", str(tmp_path / "caps.yaml")]) == 0
    assert yaml.safe_load((tmp_path / "caps.yaml").read_text())["model_capabilities"] == [
        {"pattern": "my-vllm-*", "late_system": 0, "prompt_cache_key": 0, "structured_outputs": 1},
        {"pattern": "gpt-5*", "xhigh_effort": 0}]
    other = tmp_path / "b" / "config.db"
    assert config_main(["--db", str(other), "import", str(tmp_path / "caps.yaml")]) == 0
    imported = open_config_db(other, None)
    assert read_snapshot(imported, None).capabilities == read_snapshot(db, None).capabilities
    assert [(o.pattern, o.structured_outputs, o.prompt_cache_key, o.xhigh_effort, o.late_system)
            for o in read_snapshot(imported, None).capabilities] == [
        ("my-vllm-*", True, False, None, False), ("gpt-5*", None, None, False, None)]
    imported.close()
    # a hand-written file may say yes/no; anything else is refused, naming the entry and field
    (tmp_path / "hand.yaml").write_text("model_capabilities:\n- {pattern: 'qwen*', structured_outputs: yes, "
                                        "xhigh_effort: off}\n")
    assert config_main(["--db", str(path), "import", str(tmp_path / "hand.yaml")]) == 0
    row = db.execute("SELECT structured_outputs, xhigh_effort FROM model_capabilities WHERE pattern = 'qwen*'")
    assert row.fetchone() == (1, 0)


@pytest.mark.parametrize("name", NEW_CAPABILITY_FLAGS)
def test_import_refuses_a_new_capability_flag_that_is_not_a_boolean(config, tmp_path, capsys, name):
    path, db, _ = config
    before = _dump(db)
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump({"model_capabilities": [{"pattern": "x*", name: "maybe"}]}))
    assert config_main(["--db", str(path), "import", str(tmp_path / "bad.yaml")]) == 1
    assert f"model_capabilities[0] (pattern 'x*'): {name} must be true or false" in capsys.readouterr().err
    assert _dump(db) == before


def test_cli_sets_and_clears_capabilities(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("CCANY_MASTER_KEY", raising=False)
    db_path = str(tmp_path / "config.db")
    assert config_main(["--db", db_path, "capabilities", "qwen3-*", "--structured-outputs", "true",
                        "--prompt-cache-key", "on", "--xhigh-effort", "false", "--late-system", "no",
                        "--max-output-tokens", "4096", "--max-tokens-field", "max_tokens", "--notes", "vLLM"]) == 0
    assert "capabilities of qwen3-*" in capsys.readouterr().out
    db = open_config_db(db_path, None)
    override = read_snapshot(db, None).capabilities[0]
    assert (override.structured_outputs, override.prompt_cache_key, override.xhigh_effort, override.late_system,
            override.max_output_tokens, override.uses_max_completion_tokens) == (True, True, False, False, 4096, False)
    # options not given keep their value; `default` clears one
    assert config_main(["--db", db_path, "capabilities", "qwen3-*", "--prompt-cache-key", "default",
                        "--max-tokens-field", "default"]) == 0
    row = next(db["model_capabilities"].rows)
    assert (row["prompt_cache_key"], row["max_tokens_field"], row["structured_outputs"], row["notes"]) == (
        None, None, 1, "vLLM")
    assert db["model_capabilities"].count == 1
    assert [r["action"] for r in db["audit"].rows][-2:] == ["set model capabilities"] * 2
    db.close()
    with pytest.raises(SystemExit):
        config_main(["--db", db_path, "capabilities", "qwen3-*", "--structured-outputs", "maybe"])
    assert "expected true, false or default" in capsys.readouterr().err
    assert config_main(["--db", db_path, "capabilities", "qwen3-*"]) == 1
    assert "name at least one capability" in capsys.readouterr().err
