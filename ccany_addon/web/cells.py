"""How cells look on Datasette's own pages: request ids link to their flow page, session ids to their turns, the
flow log's JSON columns are pretty-printed, and the config DB's secret columns say what they hold (their values
read as NULL: guard.py)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import markupsafe

from ccany_addon.config.schema import SECRET_COLUMNS
from ccany_addon.flowlog.parts import part_count
from ccany_addon.flowlog.schema import BODY_MANIFESTS, FLOWS, JSON_COLUMNS
from ccany_addon.web.flow_queries import registered

if TYPE_CHECKING:
    from datasette.app import Datasette
    from datasette.utils.asgi import Request

REQUEST_ID = re.compile(r"req_[0-9a-f]{32}")


def pretty_json(value: Any, limit: int = 0) -> str:
    """Indented JSON, with short arrays of scalars (event tuples, stop sequences...) kept on one line; with a
    `limit`, only about that many characters are produced (table cells show no more)."""
    out: list[str] = []
    size = 0
    for chunk in _pretty_chunks(value, 0):
        out.append(chunk)
        size += len(chunk)
        if limit and size > limit:
            break
    return "".join(out)


def _pretty_chunks(value: Any, indent: int) -> Iterator[str]:
    if isinstance(value, dict) and value:
        inner = " " * (indent + 2)
        for n, (key, item) in enumerate(value.items()):
            yield ("{\n" if n == 0 else ",\n") + inner + json.dumps(key, ensure_ascii=False) + ": "
            yield from _pretty_chunks(item, indent + 2)
        yield "\n" + " " * indent + "}"
    elif isinstance(value, list) and value:
        if all(not isinstance(item, dict | list) for item in value):
            flat = json.dumps(value, ensure_ascii=False)
            if len(flat) + indent <= 100:
                yield flat
                return
        inner = " " * (indent + 2)
        for n, item in enumerate(value):
            yield ("[\n" if n == 0 else ",\n") + inner
            yield from _pretty_chunks(item, indent + 2)
        yield "\n" + " " * indent + "]"
    else:
        yield json.dumps(value, ensure_ascii=False)


def parse_json(text: Any) -> tuple[bool, Any]:
    """(True, value) when `text` is a JSON object or array."""
    if not isinstance(text, str) or not text.lstrip().startswith(("{", "[")):
        return False, None
    try:
        return True, json.loads(text)
    except (ValueError, RecursionError):
        return False, None


def pretty_or_none(text: Any, limit: int = 0) -> str | None:
    ok, value = parse_json(text)
    if not ok:
        return None
    try:
        return pretty_json(value, limit)
    except RecursionError:
        return None


def flow_cell(value: Any, column: str, table: str | None, database: str, datasette: Datasette,
              request: Request | None) -> markupsafe.Markup | None:
    """A flow log cell, or a request id anywhere; None leaves the cell to Datasette."""
    if not isinstance(value, str):
        return None
    if REQUEST_ID.fullmatch(value):  # in any table or query result
        return flow_link(datasette, value)
    if table not in (None, FLOWS):  # the rest only in the flows table and query results
        return None
    if column == "session_id" and value and database in registered(datasette):
        href = datasette.urls.query(database, "session_turns") + "?" + urlencode({"session_id": value})
        return markupsafe.Markup('<a href="{}" title="this session\'s turns">{}</a>').format(href, value)
    if column in _MANIFESTS and not _is_row_page(request):
        return manifest_cell(value)
    if column in JSON_COLUMNS:
        limit = 0 if _is_row_page(request) else (datasette.setting("truncate_cells_html") or 0)
        pretty = pretty_or_none(value, limit)
        if pretty is None:
            return None
        if limit and len(pretty) > limit:
            pretty = pretty[:limit] + "\u2026"
        return markupsafe.Markup('<pre class="ccany-json">{}</pre>').format(pretty)
    return None


_MANIFESTS = frozenset(BODY_MANIFESTS.values())


def manifest_cell(value: str) -> markupsafe.Markup | None:
    """A body's manifest in a table: how many parts it has (the row page shows the manifest, the flow page the
    body, and `ccany_body()` gives it in SQL)."""
    try:
        count = part_count(value)
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
    return markupsafe.Markup('<span class="ccany-parts" title="the whole body: flow page, or ccany_body() in SQL">'
                             '{} part{}</span>').format(count, "" if count == 1 else "s")


def _is_row_page(request: Request | None) -> bool:
    return bool(request is not None and "pks" in (request.url_vars or {}))


def flow_link(datasette: Datasette, request_id: str) -> markupsafe.Markup:
    return markupsafe.Markup('<a class="ccany-flow-link" href="{}">{}</a>').format(
        datasette.urls.path(f"/-/flow/{request_id}"), request_id
    )


def link_flow_rows(datasette: Datasette, rows: Any, table: str | None) -> Any:
    """The flows table page links each row's id (its primary key, never passed to render_cell) to its flow."""
    if table != FLOWS or not rows:
        return rows
    for row in rows:
        for cell in getattr(row, "cells", []):
            if cell.get("value_type") == "pk" and REQUEST_ID.fullmatch(str(cell.get("raw") or "")):
                link = markupsafe.Markup(
                    '<a class="ccany-flow-link ccany-flow-open" href="{}" title="open the flow page">flow</a>'
                ).format(datasette.urls.path(f"/-/flow/{cell['raw']}"))
                cell["value"] = markupsafe.Markup("{} {}").format(cell["value"], link)
    return rows


def secret_cell(row: Any, table: str | None, column: str) -> markupsafe.Markup | None:
    """A secret column of the config DB (the caller checks the database): what it holds, never its value."""
    if column not in SECRET_COLUMNS.get(table or "", ()):
        return None
    try:
        if table == "provider_keys":
            text = f"encrypted, ends {row['hint']}" if row["hint"] else "encrypted"
        elif table == "client_keys":
            text = f"hashed, {row['prefix']}…"
        else:
            text = "hashed"
    except (IndexError, KeyError):
        text = "hidden"
    return markupsafe.Markup('<span class="ccany-secret" title="never shown">{}</span>').format(text)
