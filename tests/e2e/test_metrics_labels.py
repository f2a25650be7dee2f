"""/metrics through a real mitmdump stays small however many model names clients make up."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx

from tests.conftest import start_proxy, stop


def test_three_hundred_made_up_model_names_leave_metrics_small(fake_upstream, tmp_path):
    proxy = start_proxy(fake_upstream.url, tmp_path, "ccany_db=")
    try:
        with httpx.Client(base_url=proxy.url, timeout=20) as client:
            def ask(model: str) -> int:
                body = {"model": model, "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]}
                return client.post("/v1/messages", json=body).status_code

            with ThreadPoolExecutor(4) as pool:  # names without haiku/sonnet/opus pass through unmapped
                statuses = list(pool.map(ask, [f"made-up-model-{i:03}" for i in range(300)]))
            assert statuses == [200] * 300
            assert ask("claude-sonnet-4-5") == 200  # mapped to the big tier model, gpt-4o
            text = client.get("/metrics").text
    finally:
        stop(proxy.process)
    samples = {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line and not line.startswith("#")}
    assert len(text.encode()) < 20_000, len(text.encode())
    assert "made-up-model" not in text
    assert samples['ccany_requests_total{model="other",status="200"}'] == 300
    assert samples['ccany_request_duration_seconds_count{model="other"}'] == 300
    assert samples['ccany_requests_total{model="gpt-4o",status="200"}'] == 1
