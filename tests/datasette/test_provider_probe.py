"""The admin page's "test provider" button asks each provider kind the way that kind's API wants to be asked:
its own key header and models URL (ccany_addon/upstreams/kinds.py), against the fake upstreams on 127.0.0.1."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from ccany_addon.config import store
from ccany_addon.config.schema import open_config_db
from tests.conftest import secret
from tests.datasette.accounts import ADMIN, datasette_for, make_config, session
from tests.datasette.conftest import FlowLog
from tests.fake_openai import FakeOpenAI

pytestmark = pytest.mark.anyio

# kind → (base URL path on the fake, the request path the probe must use, key header, key value as sent, model ids)
KINDS = {
    "openai": ("/v1", "/v1/models", "authorization", "Bearer {}", ["gpt-4.1", "gpt-4.1-mini", "o3"]),
    "responses": ("/v1", "/v1/models", "authorization", "Bearer {}", ["gpt-4.1", "gpt-4.1-mini", "o3"]),
    "azure": ("", "/openai/models?api-version=2024-10-21", "api-key", "{}", ["gpt-4.1", "o3"]),
    "gemini": ("/v1beta", "/v1beta/models", "x-goog-api-key", "{}",
               ["models/gemini-2.5-pro", "models/gemini-2.5-flash"]),
    "anthropic": ("/v1", "/v1/models", "x-api-key", "{}", ["claude-sonnet-4-5", "claude-haiku-4-5"]),
}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def fake() -> AsyncIterator[tuple[FakeOpenAI, str]]:
    """The fake upstream (OpenAI, Azure, Gemini and Anthropic paths), in this test's event loop: it and its origin."""
    upstream = FakeOpenAI()
    server = await asyncio.start_server(upstream.handle, "127.0.0.1", 0)
    yield upstream, f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    server.close()


@pytest.mark.parametrize("kind", list(KINDS))
async def test_the_provider_test_sends_each_kinds_own_key_header(
        flow_log: FlowLog, tmp_path: Path, fake: tuple[FakeOpenAI, str], kind: str) -> None:
    upstream, origin = fake
    base_path, request_path, header, template, models = KINDS[kind]
    key = secret(f"{kind}-PLAINTEXT-probe-key-5e1d9a")
    config = make_config(tmp_path / "config.db")
    db = open_config_db(config.path, config.cipher)
    provider_id = store.add_provider(db, "cli", f"the-{kind}", origin + base_path, kind)
    store.set_provider_key(db, "cli", f"the-{kind}", key)
    db.close()
    ds = datasette_for(flow_log.path, config)
    admin = await session(ds, *ADMIN)

    page = await ds.client.post("/-/admin/providers", cookies=admin,
                                data={"action": "test", "provider_id": str(provider_id)})

    assert page.status_code == 200
    assert len(upstream.requests) == 1
    sent = upstream.requests[0]
    assert (sent["method"], sent["path"]) == ("GET", request_path)
    assert sent["headers"].get(header) == template.format(key)
    if header != "authorization":
        assert "authorization" not in sent["headers"]  # never a Bearer token for a kind that does not take one
    if kind == "anthropic":
        assert sent["headers"].get("anthropic-version") == "2023-06-01"
    result = re.search(r'<div class="ccany-test ccany-test-ok" id="ccany-test-result">(.*?)</div>', page.text, re.S)
    assert result, page.text
    assert "HTTP 200" in result.group(1) and f"{len(models)} models" in result.group(1)
    assert all(f"<code>{model}</code>" in result.group(1) for model in models)
    assert f"<code>{origin}{request_path}</code>" in result.group(1)
    assert key not in page.text
