"""Metrics labels stay bounded whatever clients and upstreams send: only configured models, known statuses
and known error types get a label value of their own."""

from __future__ import annotations

from ccany_addon.config.snapshot import ConfigSnapshot, Provider, Route
from ccany_addon.proxy.metrics import Metrics, configured_models
from ccany_addon.upstreams.models import ModelTiers

USAGE = {"input_tokens": 10, "output_tokens": 5, "cache_read_input_tokens": 3}
TIERS = ModelTiers("gpt-4o", "", "gpt-4o-mini")


def samples(metrics: Metrics) -> dict[str, float]:
    lines = (line for line in metrics.render().splitlines() if line and not line.startswith("#"))
    return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in lines}


def provider(name: str, models: dict[str, str]) -> Provider:
    return Provider(id=1, name=name, kind="gemini", scheme="https", host="example.invalid", port=443,
                    path_prefix="", api_version=None, models=models, keys=())


def test_three_hundred_unknown_models_are_one_other_series():
    metrics = Metrics()
    metrics.set_known_models(["gpt-4o"])
    metrics.observe_flow("gpt-4o", 200, None, USAGE, 0.2, 0.1)
    small = len(metrics.render())
    for i in range(300):
        metrics.observe_flow(f"client-chosen-{i}", 200, None, USAGE, 0.2, 0.1)
    text = metrics.render()
    assert "client-chosen" not in text
    counts = samples(metrics)
    assert counts['ccany_requests_total{model="other",status="200"}'] == 300
    assert counts['ccany_tokens_total{model="other",kind="output"}'] == 1500
    assert counts['ccany_request_duration_seconds_count{model="other"}'] == 300
    assert counts['ccany_requests_total{model="gpt-4o",status="200"}'] == 1
    assert len(text) < 2 * small  # the `other` series once, not 300 times


def test_configured_models_keep_their_label_from_tiers_providers_and_routes():
    gemini = provider("gemini", {"big": "gemini-2.5-pro", "small": "gemini-2.5-flash"})
    snapshot = ConfigSnapshot(
        providers={"gemini": gemini},
        routes=(Route("claude-*", gemini, "gemini-2.5-flash-lite"), Route("qwen3-coder", gemini, None)),
    )
    assert configured_models(TIERS, snapshot) == {
        "gpt-4o", "gpt-4o-mini", "gemini-2.5-pro", "gemini-2.5-flash", "gemini-2.5-flash-lite", "qwen3-coder",
    }
    metrics = Metrics(lambda: (TIERS, snapshot))
    for model in ("gpt-4o-mini", "gemini-2.5-pro", "gemini-2.5-flash-lite", "qwen3-coder", "none", "claude-*"):
        metrics.observe_flow(model, 200, None, {}, 0.1, None)
    counts = samples(metrics)
    for model in ("gpt-4o-mini", "gemini-2.5-pro", "gemini-2.5-flash-lite", "qwen3-coder", "none", "other"):
        assert counts[f'ccany_requests_total{{model="{model}",status="200"}}'] == 1, model


def test_a_new_config_snapshot_or_tiers_changes_the_known_models():
    current = [TIERS, ConfigSnapshot()]
    metrics = Metrics(lambda: (current[0], current[1]))
    metrics.observe_flow("deepseek-chat", 200, None, {}, 0.1, None)
    current[1] = ConfigSnapshot(providers={"ds": provider("ds", {"big": "deepseek-chat"})})
    metrics.observe_flow("deepseek-chat", 200, None, {}, 0.1, None)
    current[0] = ModelTiers("o3", "", "")
    metrics.observe_flow("o3", 200, None, {}, 0.1, None)
    metrics.observe_flow("gpt-4o", 200, None, {}, 0.1, None)  # no longer a tier
    counts = samples(metrics)
    assert counts['ccany_requests_total{model="other",status="200"}'] == 2
    assert counts['ccany_requests_total{model="deepseek-chat",status="200"}'] == 1
    assert counts['ccany_requests_total{model="o3",status="200"}'] == 1


def test_statuses_and_error_types_outside_the_known_ones_are_other():
    metrics = Metrics()
    metrics.observe_flow("none", 429, "rate_limit_error", {}, 0.1, None)
    metrics.observe_flow("none", 499, "client_disconnected", {}, 0.1, None)
    metrics.observe_flow("none", 502, "upstream_disconnected", {}, 0.1, None)
    metrics.observe_flow("none", 500, "interrupted", {}, 0.1, None)
    for i in range(200):  # statuses and error types an upstream may invent
        metrics.observe_flow("none", 600 + i, f"upstream_made_up_{i}", {}, 0.1, None)
    metrics.observe_flow("none", 0, None, {}, 0.1, None)
    counts = samples(metrics)
    assert counts['ccany_requests_total{model="none",status="other"}'] == 201
    assert counts['ccany_requests_total{model="none",status="499"}'] == 1
    assert counts['ccany_errors_total{type="other"}'] == 200
    for kind in ("rate_limit_error", "client_disconnected", "upstream_disconnected", "interrupted"):
        assert counts[f'ccany_errors_total{{type="{kind}"}}'] == 1
    assert "upstream_made_up" not in metrics.render()


def test_label_values_are_escaped():
    odd = 'model "quoted" \\ back\nslash'
    metrics = Metrics()
    metrics.set_known_models([odd])
    metrics.observe_flow(odd, 200, None, {}, 0.1, None)
    assert 'ccany_requests_total{model="model \\"quoted\\" \\\\ back\\nslash",status="200"} 1' in metrics.render()


def test_help_types_and_scrape_time_gauges_are_kept():
    metrics = Metrics()
    depth = [3]
    metrics.gauges["ccany_log_queue_depth"] = lambda: depth[0]
    metrics.observe_flow("none", 200, None, {}, 0.3, 0.1)
    depth[0] = 7
    text = metrics.render()
    assert "# HELP ccany_requests_total Client requests answered, by upstream model and status." in text
    assert "# TYPE ccany_request_duration_seconds histogram" in text
    assert "# TYPE ccany_log_dropped_total counter" in text
    assert "\nccany_log_queue_depth 7\n" in text
    assert 'ccany_time_to_first_token_seconds_bucket{model="none",le="0.25"} 1' in text
