"""The project's Datasette, built in-process exactly as scripts/datasette serves it (same config, plugins,
templates and static files)."""

from __future__ import annotations

from pathlib import Path

from datasette.app import Datasette
from datasette.utils import parse_metadata

ROOT = Path(__file__).resolve().parents[2]
DATASETTE_DIR = ROOT / "datasette"
CONFIG = DATASETTE_DIR / "datasette.yaml"
PLUGINS_DIR = DATASETTE_DIR / "plugins"
TEMPLATES_DIR = DATASETTE_DIR / "templates"
STATIC_DIR = DATASETTE_DIR / "static"
STATIC_MOUNT = "-/ccany-static"  # as in scripts/datasette: `--static -/ccany-static:datasette/static`


def make_datasette(db_path: str | Path, *other_db_paths: str | Path, config_db: str | Path | None = None) -> Datasette:
    """A Datasette over the flow DB at `db_path` (named after the file's stem), plus any other databases, then the
    config DB (scripts/datasette's second argument; its master key must exist already, see tests/datasette/
    accounts.py). Await `invoke_startup()` before using it directly; `.client` runs start-up on its first request."""
    paths = [db_path, *other_db_paths, *([config_db] if config_db is not None else [])]
    return Datasette(
        [str(path) for path in paths],
        config=parse_metadata(CONFIG.read_text()),
        plugins_dir=str(PLUGINS_DIR),
        template_dir=str(TEMPLATES_DIR),
        static_mounts=[(STATIC_MOUNT, str(STATIC_DIR))],
    )
