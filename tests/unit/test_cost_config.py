"""Prices in the config: the CLI's `price`, export and import, the snapshot's order, refusals; and the flow DB's
version 8 (cost columns), migrated in place from version 7 with every row kept."""

from __future__ import annotations

import sqlite_utils
import yaml

from ccany_addon.config import store
from ccany_addon.config.cli import main as config_main
from ccany_addon.config.schema import open_config_db
from ccany_addon.config.snapshot import read_snapshot
from ccany_addon.config.transfer import import_config
from ccany_addon.costs.prices import PriceOverride
from ccany_addon.flowlog import schema
from ccany_addon.util.sqlite_migrations import migrate


def test_cli_sets_changes_and_removes_a_price(tmp_path, capsys):
    db_path = str(tmp_path / "config.db")
    assert config_main(["--db", db_path, "price", "llama*", "--input", "0", "--output", "0", "--notes", "own GPU"]) == 0
    assert "price of llama*: input $0.0, output $0.0" in capsys.readouterr().out
    assert config_main(["--db", db_path, "price", "gpt-4o", "--provider", "azure-eu", "--input", "2", "--output",
                        "8", "--cache-read", "0.5"]) == 0
    # the same pattern and provider again changes the row, not adds one
    assert config_main(["--db", db_path, "price", "llama*", "--input", "0.01", "--output", "0.02"]) == 0
    db = open_config_db(db_path, None)
    prices = read_snapshot(db, None).prices
    # a provider's own price is tried before the any-provider ones
    assert prices == (PriceOverride("gpt-4o", "azure-eu", 2.0, 8.0, 0.5, None),
                      PriceOverride("llama*", None, 0.01, 0.02, None, None))
    actions = [row["action"] for row in db["audit"].rows]
    assert actions.count("set model price") == 3
    db.close()
    assert config_main(["--db", db_path, "price", "llama*", "--remove"]) == 0
    assert config_main(["--db", db_path, "price", "llama*", "--remove"]) == 1
    assert "no price for llama*" in capsys.readouterr().err
    db = open_config_db(db_path, None)
    assert [p.pattern for p in read_snapshot(db, None).prices] == ["gpt-4o"]
    db.close()


def test_cli_refuses_a_price_without_input_and_output_or_below_zero(tmp_path, capsys):
    db_path = str(tmp_path / "config.db")
    assert config_main(["--db", db_path, "price", "x*", "--input", "1"]) == 1
    assert "a price needs output" in capsys.readouterr().err
    try:
        config_main(["--db", db_path, "price", "x*", "--input", "-1", "--output", "1"])
    except SystemExit as exit_:  # argparse's refusal
        assert exit_.code == 2
    assert "a number >= 0" in capsys.readouterr().err
    db = open_config_db(db_path, None)
    assert db["model_prices"].count == 0
    db.close()


def test_prices_travel_through_export_and_import(tmp_path):
    first = open_config_db(tmp_path / "a.db", None)
    store.set_price(first, "t", "qwen3-*", "vllm", "rented GPUs", input_per_mtok=0.2, output_per_mtok=0.6)
    store.set_price(first, "t", "llama*", input_per_mtok=0, output_per_mtok=0)
    assert config_main(["--db", str(tmp_path / "a.db"), "export", str(tmp_path / "config.yaml")]) == 0
    exported = yaml.safe_load((tmp_path / "config.yaml").read_text())["model_prices"]
    assert exported == [
        {"pattern": "qwen3-*", "provider": "vllm", "input_per_mtok": 0.2, "output_per_mtok": 0.6,
         "notes": "rented GPUs"},
        {"pattern": "llama*", "input_per_mtok": 0.0, "output_per_mtok": 0.0}]
    second = open_config_db(tmp_path / "b.db", None)
    done = import_config(second, {"model_prices": exported})
    assert done == ["price of qwen3-* set", "price of llama* set"]
    assert read_snapshot(second, None).prices == read_snapshot(first, None).prices
    import_config(second, {"model_prices": exported})  # again: the same rows, not new ones
    assert second["model_prices"].count == 2
    # a wrong value anywhere changes nothing and names the entry
    bad = [{"pattern": "ok-*", "input_per_mtok": 1, "output_per_mtok": 1},
           {"pattern": "bad-*", "input_per_mtok": "cheap", "output_per_mtok": 1}]
    try:
        import_config(second, {"model_prices": bad})
        raise AssertionError("imported a price that is not a number")
    except store.ConfigError as error:
        assert "model_prices[1] (pattern 'bad-*'): input_per_mtok must be a number >= 0" in str(error)
    assert second["model_prices"].count == 2


def test_a_version_7_flow_db_gains_the_cost_columns_with_its_rows_kept(tmp_path):
    path = tmp_path / "flows.db"
    old = sqlite_utils.Database(str(path))
    from ccany_addon.flowlog.part_store import register_functions

    register_functions(old.conn)
    migrate(old, schema.MIGRATIONS[:7], "flow DB")
    old.execute("INSERT INTO flows (id, started_at, upstream_model, input_tokens, client_key_id, conversation) "
                "VALUES ('req_1', '2026-12-01 10:00:00.000', 'gpt-4o', 1000, '3', 'the old words')")
    old.execute("INSERT INTO flows_fts (rowid, conversation) SELECT rowid, conversation FROM flows")
    old.conn.commit()
    old.close()
    db = schema.open_db(str(path))
    assert db.execute("PRAGMA user_version").fetchone()[0] == schema.VERSION == 8
    row = db.execute("SELECT id, input_tokens, cost_usd, price_source FROM flows").fetchall()
    assert row == [("req_1", 1000, None, None)]
    assert ["client_key_id", "started_at"] in [index.columns for index in db["flows"].indexes]
    assert db.execute("SELECT rowid FROM flows_fts WHERE flows_fts MATCH 'words'").fetchall() == [(1,)]
    db.close()
