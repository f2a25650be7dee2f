"""The `azure` provider kind: Chat Completions at a deployment URL with `api-version`, keyed by `api-key`."""

from __future__ import annotations

import json

import anthropic
import httpx
import pytest

from ccany_addon.anthropic_api.conformance import check_stream
from ccany_addon.config import store
from tests.conftest import config_db, secret, start_proxy, stop

AZURE_KEY = secret("azure-key-0123456789abcdef0123456789abcdef")


@pytest.fixture(scope="module")
def proxy(fake_upstream, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("azure-kind")
    path = tmp / "config.db"
    db = config_db(path)
    store.add_provider(db, "test", "azure-east", fake_upstream.url, kind="azure", api_version="2025-01-01-preview",
                       models={"big": "gpt-4o-prod", "small": "mini-deployment"})
    store.set_provider_key(db, "test", "azure-east", AZURE_KEY)
    store.add_route(db, "test", "claude-*", "azure-east", None)
    db.close()
    running = start_proxy(fake_upstream.url, tmp, f"ccany_config_db={path}")
    yield running
    stop(running.process)


def test_requests_go_to_the_deployment_with_the_api_key_header(proxy, fake_upstream):
    fake_upstream.clear()
    client = anthropic.Anthropic(base_url=proxy.url, api_key="x", max_retries=0, timeout=20)
    raw = client.messages.with_raw_response.create(model="claude-haiku-4-5", max_tokens=20,
                                                   messages=[{"role": "user", "content": "hi"}])
    message = raw.parse()
    assert message.content[0].text and message.model == "claude-haiku-4-5"
    sent = fake_upstream.requests()[-1]
    assert sent["path"] == "/openai/deployments/mini-deployment/chat/completions?api-version=2025-01-01-preview"
    assert sent["headers"]["api-key"] == AZURE_KEY and "authorization" not in sent["headers"]
    row = proxy.flow(raw.headers["request-id"])
    assert row["upstream_url"].endswith("/openai/deployments/mini-deployment/chat/completions"
                                        "?api-version=2025-01-01-preview")


def test_streams_convert_as_for_openai(proxy, fake_upstream):
    body = {"model": "claude-opus-4-1", "max_tokens": 20, "stream": True,
            "messages": [{"role": "user", "content": "hi"}]}
    with httpx.stream("POST", f"{proxy.url}/v1/messages", json=body, timeout=20) as response:
        data = response.read()
    assert check_stream(data).complete
    assert fake_upstream.requests()[-1]["path"].startswith("/openai/deployments/gpt-4o-prod/chat/completions?")
    row = proxy.flow(response.headers["request-id"])
    assert row["provider"] == "azure-east" and row["upstream_model"] == "gpt-4o-prod"
    assert json.loads(row["upstream_request_headers"])["api-key"] == "[redacted]"
