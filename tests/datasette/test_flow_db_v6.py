"""A flow DB written by the previous version (schema 6, tests/fixtures/flow_db_v6, made by that version's proxy)
migrates in place: no row lost, the same bodies, search still finds them, Datasette shows them, and new rows go in
as parts beside the old ones."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

from ccany_addon.flowlog.bodies import BodyPacker
from ccany_addon.flowlog.part_store import with_bodies
from ccany_addon.flowlog.schema import BODY_MANIFESTS, VERSION, open_db
from ccany_addon.flowlog.store import store_batch
from tests.datasette.conftest import fetch, section

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "flow_db_v6" / "flows.db"


def test_the_previous_versions_db_migrates_with_its_rows_bodies_and_search(tmp_path: Path) -> None:
    path = tmp_path / "flows.db"
    shutil.copy(FIXTURE, path)
    with sqlite3.connect(path) as conn:
        conn.row_factory = sqlite3.Row
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 6
        before = {row["id"]: dict(row) for row in conn.execute("SELECT * FROM flows")}
    assert len(before) == 4

    db = open_db(str(path))
    assert db.execute("PRAGMA user_version").fetchone()[0] == VERSION
    after = {row["id"]: with_bodies(db.conn, row) for row in db["flows"].rows}
    assert set(after) == set(before)
    for request_id, old in before.items():
        assert {name: after[request_id][name] for name in BODY_MANIFESTS} == \
            {name: old[name] for name in BODY_MANIFESTS}
        assert all(after[request_id][column] == value for column, value in old.items())  # every old column as it was
    okapi = db.execute("SELECT id FROM flows WHERE rowid IN "
                       "(SELECT rowid FROM flows_fts WHERE flows_fts MATCH 'okapi')")
    assert {request_id for (request_id,) in okapi} == {request_id for request_id, old in before.items()
                                                        if "okapi" in (old["conversation"] or "")}
    db.execute("INSERT INTO flows_fts (flows_fts, rank) VALUES ('integrity-check', 1)")

    # a new turn of the same session goes in as parts, beside the old rows
    last = max(before.values(), key=lambda row: row["started_at"])
    new = {"id": "req_after_the_migration", "started_at": "2026-12-05 09:00:00.000", "session_id": last["session_id"],
           "client_model": last["client_model"], "client_request": last["client_request"],
           "conversation": "the okapi again, now as a part"}
    parts: dict[str, bytes] = {}
    BodyPacker().pack_row(new, parts)
    store_batch(db, [new], parts=parts)
    stored = db.execute("SELECT client_request, client_request_parts FROM flows WHERE id = ?", [new["id"]]).fetchone()
    assert stored[0] is None and stored[1] is not None
    assert json.loads(db.execute("SELECT client_request FROM flow_bodies WHERE id = ?", [new["id"]]).fetchone()[0]) \
        == json.loads(last["client_request"])
    okapi = db.execute("SELECT count(*) FROM flows_fts WHERE flows_fts MATCH 'okapi'").fetchone()[0]
    assert okapi == 4
    db.close()

    stream = next(row for row in before.values() if row["is_stream"])
    database = path.stem
    page, download, search = fetch(path, paths=[
        f"/-/flow/{stream['id']}", f"/-/flow/{stream['id']}.json",
        f"/{database}/flows.json?_search=okapi&_shape=array&_col=id"])
    assert page.status_code == download.status_code == search.status_code == 200
    assert "okapi number 2" in section(page.text, "pane-client-request")
    assert "chat.completion.chunk" in section(page.text, "pane-upstream-response")  # the old row's SSE text
    assert download.json()["client_request"] == json.loads(stream["client_request"])
    assert len(search.json()) == 4  # three old turns and the new one
