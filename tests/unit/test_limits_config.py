"""Limits and budgets in the config: the CLI's `client-key-limits` and `user-budget`, what the snapshot makes of
them (whose limits a key's request is held to), export and import with owners, and refusals."""

from __future__ import annotations

import pytest
import yaml

from ccany_addon.config import store
from ccany_addon.config.cli import main as config_main
from ccany_addon.config.schema import open_config_db
from ccany_addon.config.snapshot import read_snapshot
from ccany_addon.config.transfer import export_config, import_config
from ccany_addon.limits.key_limits import KeyLimits, key_scope


@pytest.fixture
def db_path(tmp_path, monkeypatch):
    monkeypatch.setenv("PASSWORD", "correct horse battery")
    path = str(tmp_path / "config.db")
    assert config_main(["--db", path, "user-add", "ada", "--from-env", "PASSWORD"]) == 0
    for name in ("laptop", "desktop"):
        assert config_main(["--db", path, "client-key-create", name]) == 0
    return path


def payers(path: str) -> dict[str, tuple[tuple[str, KeyLimits], ...]]:
    """Each client key's payers: (who, their limits)."""
    db = open_config_db(path, None)
    try:
        return {key.name: tuple((payer.name, payer.limits) for payer in key.payers)
                for key in read_snapshot(db, None).client_keys.values()}
    finally:
        db.close()


def test_cli_sets_a_keys_limits_and_its_owners_budgets(db_path, capsys):
    assert config_main(["--db", db_path, "client-key-limits", "laptop", "--rpm", "60", "--tpm", "400000",
                        "--streams", "4", "--daily-usd", "5", "--monthly-usd", "100.5", "--user", "ada"]) == 0
    assert capsys.readouterr().out == ("limits of client key laptop (id 1): rpm_limit=60, tpm_limit=400000, "
                                       "max_streams=4, daily_budget_usd=5, monthly_budget_usd=100.5, owner=ada\n")
    assert config_main(["--db", db_path, "client-key-limits", "desktop", "--user", "ada"]) == 0
    assert config_main(["--db", db_path, "user-budget", "ada", "--monthly-usd", "250"]) == 0
    ada = ("user 'ada'", KeyLimits(monthly_usd=250))
    assert payers(db_path) == {
        "laptop": (("client key 'laptop'", KeyLimits(60, 400000, 4, 5, 100.5)), ada),
        "desktop": (("client key 'desktop'", KeyLimits()), ada)}
    # 'default' takes a limit or the owner away; options not given stay
    assert config_main(["--db", db_path, "client-key-limits", "laptop", "--daily-usd", "default", "--user",
                        "default"]) == 0
    assert payers(db_path)["laptop"] == (("client key 'laptop'", KeyLimits(60, 400000, 4, None, 100.5)),)
    db = open_config_db(db_path, None)
    assert [row["action"] for row in db["audit"].rows].count("set client key limits") == 3
    db.close()


def test_cli_refuses_what_cannot_be_a_limit(db_path, capsys):
    assert config_main(["--db", db_path, "client-key-limits", "nobody", "--rpm", "5"]) == 1
    assert "no client key named 'nobody'" in capsys.readouterr().err
    assert config_main(["--db", db_path, "client-key-limits", "laptop", "--user", "bob"]) == 1
    assert "no user named 'bob'" in capsys.readouterr().err
    assert config_main(["--db", db_path, "client-key-limits", "laptop", "--rpm", "2.5"]) == 1
    assert "rpm_limit must be a whole number >= 0" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        config_main(["--db", db_path, "client-key-limits", "laptop", "--rpm", "-1"])
    assert config_main(["--db", db_path, "client-key-limits", "laptop", "--over-budget-model", " "]) == 1
    assert "over_budget_model must be a model name" in capsys.readouterr().err
    assert config_main(["--db", db_path, "client-key-limits", "laptop"]) == 1
    assert config_main(["--db", db_path, "user-budget", "ada"]) == 1
    assert payers(db_path)["laptop"] == (("client key 'laptop'", KeyLimits()),)


def test_limits_owners_and_budgets_travel_through_export_and_import(db_path, tmp_path):
    db = open_config_db(db_path, None)
    store.set_client_key_limits(db, "t", "laptop", "ada", rpm_limit=30, daily_budget_usd=2.5,
                                over_budget_model="claude-haiku-4-5")
    store.set_user_budgets(db, "t", "ada", daily_budget_usd=10.0, over_budget_model="claude-3-5-haiku")
    exported = export_config(db, None, with_secrets=True)
    db.close()
    assert exported["client_keys"][0] | {"key_hash": "…", "prefix": "…"} == {
        "name": "laptop", "prefix": "…", "expires_at": None, "allowed_models": None, "enabled": True,
        "key_hash": "…", "rpm_limit": 30, "daily_budget_usd": 2.5, "owner": "ada",
        "over_budget_model": "claude-haiku-4-5"}
    assert {k: v for k, v in exported["users"][0].items() if k != "password_hash"} == {
        "username": "ada", "role": "viewer", "daily_budget_usd": 10.0, "over_budget_model": "claude-3-5-haiku"}
    other = open_config_db(tmp_path / "other.db", None)
    done = import_config(other, yaml.safe_load(yaml.safe_dump(exported)))
    assert "user ada imported" in done and "budgets of user ada set" in done
    snapshot = read_snapshot(other, None)
    laptop = next(key for key in snapshot.client_keys.values() if key.name == "laptop")
    assert tuple((payer.name, payer.limits) for payer in laptop.payers) == (
        ("client key 'laptop'", KeyLimits(rpm=30, daily_usd=2.5, over_budget_model="claude-haiku-4-5")),
        ("user 'ada'", KeyLimits(daily_usd=10.0, over_budget_model="claude-3-5-haiku")))
    # a key naming an owner neither side has is refused before anything is written
    bad = {"client_keys": [{"name": "x", "key_hash": "abc", "owner": "zed"}]}
    with pytest.raises(store.ConfigError, match="client_keys\\[0\\] \\(name 'x'\\): no user named 'zed'"):
        import_config(other, bad)
    other.close()


def test_cli_sets_and_clears_the_model_a_key_or_user_gets_over_budget(db_path, capsys):
    assert config_main(["--db", db_path, "client-key-limits", "laptop", "--daily-usd", "1", "--over-budget-model",
                        "claude-haiku-4-5"]) == 0
    assert config_main(["--db", db_path, "user-budget", "ada", "--monthly-usd", "20", "--over-budget-model",
                        "claude-3-5-haiku"]) == 0
    assert config_main(["--db", db_path, "client-key-limits", "desktop", "--user", "ada"]) == 0
    assert "over_budget_model=claude-3-5-haiku" in capsys.readouterr().out
    found = payers(db_path)
    assert found["laptop"][0][1] == KeyLimits(daily_usd=1, over_budget_model="claude-haiku-4-5")
    assert found["desktop"][1][1] == KeyLimits(monthly_usd=20, over_budget_model="claude-3-5-haiku")
    assert config_main(["--db", db_path, "client-key-limits", "laptop", "--over-budget-model", "default"]) == 0
    assert payers(db_path)["laptop"][0][1] == KeyLimits(daily_usd=1)  # over budget: refused again


def test_a_keys_and_a_users_counters_are_named_alike_on_every_machine(db_path, tmp_path):
    """Two config DBs made from one file, one of which had another key first (so row ids differ), name the same
    key's and user's shared counters alike: the limits hold jointly across machines; the name tells nothing of
    the key."""
    db = open_config_db(db_path, None)
    store.set_client_key_limits(db, "t", "laptop", "ada", rpm_limit=30)
    store.set_user_budgets(db, "t", "ada", daily_budget_usd=10.0)
    exported = export_config(db, None, with_secrets=True)
    key_hash = db.execute("SELECT key_hash FROM client_keys WHERE name = 'laptop'").fetchone()[0]
    db.close()
    other = open_config_db(tmp_path / "other.db", None)
    store.create_client_key(other, "t", "made here first")
    import_config(other, yaml.safe_load(yaml.safe_dump(exported)))
    db = open_config_db(db_path, None)
    here = {key.name: key for key in read_snapshot(db, None).client_keys.values()}
    db.close()
    there = {key.name: key for key in read_snapshot(other, None).client_keys.values()}
    other.close()
    assert here["laptop"].id != there["laptop"].id
    assert [payer.scope for payer in here["laptop"].payers] == [payer.scope for payer in there["laptop"].payers] == [
        key_scope(key_hash), "user:ada"]
    assert key_hash not in key_scope(key_hash) and len(key_scope(key_hash)) == len("key:") + 16
