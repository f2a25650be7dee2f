"""Request bodies Claude Code 2.1.332 really sent (tests/fixtures/claude_code_2_1_332, recorded through the proxy's
flow log by record.py there) parse and convert for every upstream dialect."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ccany_addon.anthropic_api.schema import MessagesRequest, parse
from ccany_addon.converters import prompt_cache
from ccany_addon.converters.common import UpstreamTarget
from ccany_addon.upstreams.dialects import CONVERTING
from ccany_addon.upstreams.models import capabilities

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "claude_code_2_1_332"
BODIES = sorted(FIXTURES.glob("*.json"))
MODELS = {"openai": "gpt-4o", "azure": "gpt-4o", "responses": "gpt-5-codex", "gemini": "gemini-2.5-pro"}


def test_the_current_request_kinds_are_recorded():
    assert {path.stem for path in BODIES} >= {"main", "subagent", "compaction", "auto_mode_classifier", "title"}


@pytest.mark.parametrize("path", BODIES, ids=lambda path: path.stem)
def test_a_recorded_body_is_claude_codes_and_keeps_no_key(path):
    text = path.read_text()
    assert "sk-upstream" not in text and "sk-ant-placeholder" not in text
    request = parse(MessagesRequest, text.encode())
    facts = prompt_cache.billing_facts(request)
    assert facts is not None and facts.cc_version is not None and facts.cc_version.startswith("2.1.332.")
    if path.stem == "auto_mode_classifier":  # auto mode's own check (CLAUDE_CODE_AUTO_MODE_SERVER=0): no tools
        assert not request.stream and not request.tools and "security monitor" in path.read_text()
    elif path.stem == "title":  # the session title, asked as structured output
        assert request.output_config is not None and "format" in json.dumps(request.model_dump()["output_config"])
    else:
        assert request.stream and request.tools


@pytest.mark.parametrize("kind", sorted(CONVERTING))
@pytest.mark.parametrize("path", BODIES, ids=lambda path: path.stem)
def test_a_recorded_body_converts_for_every_dialect(path, kind):
    request = prompt_cache.without_billing(parse(MessagesRequest, path.read_bytes()))
    model = MODELS.get(kind, "gpt-4o")
    for fold in (False, True):
        body, _ = CONVERTING[kind].to_request(request, UpstreamTarget(model, capabilities(model), 0, fold))
        text = json.dumps(body)
        assert "x-anthropic-billing-header" not in text
        assert "You are" in text  # the system prompt arrived
