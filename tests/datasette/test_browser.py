"""The dashboard and a flow page in a real headless Chromium: the charts are drawn, with data."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path

import pytest

from tests.datasette.app import ROOT
from tests.datasette.conftest import FlowLog, Server, start_server, stop_server, write_flow_log

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = ROOT / "test-artifacts"
DASHBOARD_CHARTS = 8


def chromium(url: str, *args: str) -> str:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} is missing: run scripts/setup (it installs Debian's chromium when run as root)")
    with tempfile.TemporaryDirectory(prefix="ccany-chromium-") as profile:
        result = subprocess.run(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={profile}", "--virtual-time-budget=10000", *args, url],
            capture_output=True, text=True, timeout=60,
        )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def screenshot(url: str, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    path.unlink(missing_ok=True)
    chromium(url, f"--screenshot={path}", "--window-size=1400,1000")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert path.stat().st_size > 20_000, "a screenshot this small is blank"
    return path


class Charts(HTMLParser):
    """Per chart <figure>: its attributes, its data marks by tag, and its text."""

    def __init__(self) -> None:
        super().__init__()
        self.figures: dict[str, dict] = {}
        self.attributes: dict[str, dict[str, str]] = {}  # by element id
        self.body: dict[str, str] = {}
        self._current: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = {key: value or "" for key, value in attrs}
        if "id" in attributes:
            self.attributes[attributes["id"]] = attributes
        if tag == "body":
            self.body = attributes
        if tag == "figure" and "ccany-chart" in attributes.get("class", ""):
            self._current = attributes["id"]
            self.figures[self._current] = {"attributes": attributes, "marks": Counter(), "svgs": 0, "text": ""}
        elif self._current:
            figure = self.figures[self._current]
            if tag == "svg":
                figure["svgs"] += 1
            if "ccany-mark" in attributes.get("class", "").split():
                figure["marks"][tag] += 1

    def handle_endtag(self, tag: str) -> None:
        if tag == "figure":
            self._current = None

    def handle_data(self, data: str) -> None:
        if self._current:
            self.figures[self._current]["text"] += data


def parse(dom: str) -> Charts:
    charts = Charts()
    charts.feed(dom)
    return charts


def test_dashboard_draws_every_chart(server: Server, flow_log: FlowLog) -> None:
    dom = parse(chromium(server.url + "/-/dashboard", "--dump-dom"))
    container = dom.attributes["ccany-dashboard"]
    assert container.get("data-charts-done") == "true", "the chart script never finished"
    assert container["data-charts-drawn"] == str(DASHBOARD_CHARTS)
    assert (container["data-charts-empty"], container["data-charts-failed"]) == ("0", "0")
    assert dom.body["data-charts-drawn"] == str(DASHBOARD_CHARTS)
    assert len(dom.figures) == DASHBOARD_CHARTS
    for name, figure in dom.figures.items():
        assert figure["attributes"]["data-state"] == "drawn", name
        assert figure["svgs"] == 1, name
        assert sum(figure["marks"].values()) == int(figure["attributes"]["data-marks"]) > 0, name
    marks = {name: figure["marks"] for name, figure in dom.figures.items()}
    assert marks["chart-requests"]["rect"] >= 3  # three hours of requests, plus their errors
    assert marks["chart-tokens"]["path"] == 4 and marks["chart-tokens"]["circle"] >= 4  # a line per model
    assert marks["chart-latency"]["rect"] == 3 * 3  # three models with successful flows, three percentiles each
    assert marks["chart-ttft"]["rect"] == 3 * 3
    assert marks["chart-errors"]["rect"] == 5  # five error types
    # two bars (shared prefix, reported cache reads) per model whose session turns followed an earlier one
    followed = {(row["upstream_model"], row["provider"]) for row in flow_log.stored
                if row.get("upstream_prefix_bytes") is not None}
    assert marks["chart-prompt-cache"]["rect"] == 2 * len(followed) > 0
    assert "rate_limit_error" in dom.figures["chart-errors"]["text"]
    assert "gpt-4.1" in dom.figures["chart-tokens"]["text"]
    # spend: a line per model (the unpriced gemini one at 0), a bar per provider (a refused flow has none)
    assert marks["chart-spend"]["path"] == 4
    assert marks["chart-spend-by-provider"]["rect"] == 3 and "openai" in dom.figures["chart-spend-by-provider"]["text"]
    screenshot(server.url + "/-/dashboard", "datasette-dashboard.png")


def test_flow_page_draws_the_stream_timeline(server: Server, flow_log: FlowLog) -> None:
    row = next(row for row in flow_log.rows if row["events"] and row["error_type"] is None)
    url = f"{server.url}/-/flow/{row['id']}"
    dom = parse(chromium(url, "--dump-dom"))
    figure = dom.figures["ccany-events"]
    assert figure["attributes"]["data-charts-drawn"] == "1"
    assert dom.body["data-charts-drawn"] == "1"
    assert figure["attributes"]["data-state"] == "drawn"
    assert figure["marks"]["circle"] == len(json.loads(row["events"]))  # one dot per event
    assert "content_block_delta" in figure["text"]
    for pane in ["pane-client-request", "pane-upstream-request", "pane-upstream-response", "pane-client-response"]:
        assert pane in dom.attributes
    screenshot(url, "datasette-flow.png")


def test_empty_log_shows_no_flows_yet_instead_of_charts(tmp_path: Path) -> None:
    log = write_flow_log(tmp_path / "ccany.db", [])
    running = start_server(log.path, tmp_path)
    try:
        dom = parse(chromium(running.url + "/-/dashboard", "--dump-dom"))
    finally:
        stop_server(running)
    container = dom.attributes["ccany-dashboard"]
    assert (container["data-charts-done"], container["data-charts-drawn"]) == ("true", "0")
    assert container["data-charts-empty"] == str(DASHBOARD_CHARTS)
    for name, figure in dom.figures.items():
        assert figure["svgs"] == 0, name
        assert figure["text"].count("No ") == 1, name
    assert "No flows yet" in dom.figures["chart-requests"]["text"]



def test_the_fleet_dashboard_draws_two_instances(tmp_path: Path) -> None:
    """scripts/datasette over two instances' flow DBs (CCANY_FLEET), in a real browser: one dashboard, every chart
    drawn from both, a bar per instance."""
    from tests.datasette.test_fleet import two_instances

    one, two = two_instances(tmp_path)
    running = start_server(one.path, tmp_path, env={"CCANY_FLEET": str(two.path)})
    try:
        dom = parse(chromium(running.url + "/-/dashboard?days=365", "--dump-dom"))
        container = dom.attributes["ccany-dashboard"]
        assert container.get("data-charts-done") == "true", "the chart script never finished"
        assert container["data-charts-drawn"] == str(DASHBOARD_CHARTS + 1)
        assert (container["data-charts-empty"], container["data-charts-failed"]) == ("0", "0")
        instances = dom.figures["chart-instances"]
        assert instances["marks"]["rect"] == 2
        assert "ccany-1" in instances["text"] and "ccany-2" in instances["text"]
        assert "spend" in " ".join(dom.figures) and dom.figures["chart-spend"]["marks"]["path"] >= 1
        screenshot(running.url + "/-/dashboard?days=365", "datasette-fleet-dashboard.png")
    finally:
        stop_server(running)
