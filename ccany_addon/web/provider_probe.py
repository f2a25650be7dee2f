"""The admin page's "test provider" button: ask the provider which models it serves, the way its kind asks
(upstreams/kinds.py: the key's header, the models URL, any header the listing needs, where the ids are in the
answer), with its first enabled key. The page shows the status and the first model ids, never the key."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import httpx

from ccany_addon.config import store
from ccany_addon.config.secrets import Cipher, SecretError, load_master_key
from ccany_addon.upstreams.kinds import PROVIDER_KINDS
from ccany_addon.web.config_db import config_db, read_secrets

if TYPE_CHECKING:
    from datasette.app import Datasette

TEST_TIMEOUT = 10.0
SHOWN_MODELS = 10


async def probe_provider(datasette: Datasette, provider_id: str) -> dict[str, Any]:
    """The result the providers page shows: ok, status, ms, key (its name and hint), count and models, or error."""
    rows = await read_secrets(datasette, """SELECT p.name, p.kind, p.base_url, p.api_version, k.name AS key_name,
        k.hint, k.secret
        FROM providers p LEFT JOIN provider_keys k ON k.provider_id = p.id AND k.enabled
        WHERE p.id = ? ORDER BY k.id LIMIT 1""", [provider_id])
    if not rows:
        raise store.ConfigError("no such provider")
    row = rows[0]
    kind = PROVIDER_KINDS.get(row["kind"])
    if kind is None:  # the schema's CHECK allows only known kinds; an older file might hold another
        raise store.ConfigError(f"provider kind {row['kind']!r} is not one of {', '.join(PROVIDER_KINDS)}")
    result: dict[str, Any] = {"provider": row["name"], "url": kind.models_url(row["base_url"], row["api_version"]),
                              "key": f"{row['key_name']} ({row['hint']})" if row["secret"] else "none"}
    headers = {"accept": "application/json", **dict(kind.extra_headers)}
    key = None
    if row["secret"]:
        try:
            db = await config_db(datasette)
            key = Cipher(load_master_key(db.path, create=False)).decrypt(row["secret"])
        except SecretError as failure:
            return {**result, "ok": False, "error": f"cannot decrypt the key: {failure}"}
        headers.update(kind.key_headers(key))
    started = time.monotonic()
    try:
        async with httpx.AsyncClient(timeout=TEST_TIMEOUT, follow_redirects=False, trust_env=False) as client:
            response = await client.get(result["url"], headers=headers)
    except httpx.HTTPError as failure:
        return {**result, "ok": False, "error": _scrub(f"{type(failure).__name__}: {failure}", key)}
    result.update(status=response.status_code, ms=round((time.monotonic() - started) * 1000))
    try:
        body = response.json()
    except ValueError:
        body = None
    models = body.get(kind.models_field) if isinstance(body, dict) else None
    if response.is_success and isinstance(models, list):
        ids = [str(item.get(kind.id_field)) for item in models if isinstance(item, dict)]
        return {**result, "ok": True, "count": len(ids), "models": ids[:SHOWN_MODELS]}
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):  # OpenAI, Azure, Gemini and Anthropic all put the words in error.message
        error = error.get("message")
    return {**result, "ok": False, "error": _scrub(str(error or response.text[:500] or response.reason_phrase), key)}


def _scrub(text: str, key: str | None) -> str:
    return text.replace(key, "[key]") if key else text
