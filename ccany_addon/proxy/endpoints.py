"""Answers the proxy gives itself: health, readiness, the model list, and 404 for everything else."""

from __future__ import annotations

from ccany_addon.anthropic_api.errors import GatewayError
from ccany_addon.config.schema import SCENARIOS
from ccany_addon.config.snapshot import ConfigSnapshot
from ccany_addon.upstreams import routing
from ccany_addon.upstreams.models import ModelTiers
from ccany_addon.upstreams.routing import Upstream

MESSAGES = "/v1/messages"
COUNT_TOKENS = "/v1/messages/count_tokens"

# created_at of the listed models: fixed, so the list is stable across restarts
_CREATED = "2025-01-01T00:00:00Z"
# The ids Claude Code 2.1.332 sends: its newest model of each family (`latest_per_family` in the CLI's model
# catalog), the rows of its /model picker. With CLAUDE_CODE_ENABLE_GATEWAY_MODEL_DISCOVERY=1 it reads `id`,
# `display_name` and `description` of each entry whose id matches /(claude|anthropic)/i, and nothing else.
CLAUDE_CODE_MODELS = (
    ("claude-opus-5-5", "Opus 5.5"),
    ("claude-sonnet-5-5", "Sonnet 5.5"),
    ("claude-haiku-5-5", "Haiku 5.5"),
    ("claude-fable-5-2", "Fable 5.2"),
)
_GLOB = frozenset("*?[")


def models_list(tiers: ModelTiers, snapshot: ConfigSnapshot | None = None, upstream: Upstream | None = None) -> dict:
    """The Claude Code ids, then every config route whose pattern is a plain name, each saying in its display name
    where a request for it really goes (the routing the gateway itself does, so the label cannot drift)."""
    snapshot = snapshot or ConfigSnapshot()
    names = dict(CLAUDE_CODE_MODELS)
    for configured in snapshot.routes:
        if not _GLOB & set(configured.pattern):
            names.setdefault(configured.pattern, configured.pattern)
    data = [_entry(model_id, label, tiers, snapshot, upstream) for model_id, label in names.items()]
    return {"data": data, "has_more": False, "first_id": data[0]["id"], "last_id": data[-1]["id"]}


def model_info(tiers: ModelTiers, model_id: str, snapshot: ConfigSnapshot | None = None,
               upstream: Upstream | None = None) -> dict:
    for entry in models_list(tiers, snapshot, upstream)["data"]:
        if entry["id"] == model_id:
            return entry
    return _entry(model_id, model_id, tiers, snapshot or ConfigSnapshot(), upstream)


def _entry(model_id: str, label: str, tiers: ModelTiers, snapshot: ConfigSnapshot, upstream: Upstream | None) -> dict:
    target = _target(model_id, tiers, snapshot, upstream)
    # Requests of a scenario (background, thinking...) may go elsewhere: the description names each such place.
    other = []
    for scenario in SCENARIOS:
        elsewhere = _target(model_id, tiers, snapshot, upstream, frozenset({scenario}))
        if elsewhere != target:
            other.append(f"{scenario} requests → {elsewhere}")
    description = f"served by {target}" + (f"; {'; '.join(other)}" if other else "") + " (ccany gateway)"
    return {"type": "model", "id": model_id, "display_name": f"{label} → {target}", "description": description,
            "created_at": _CREATED}


def _target(model_id: str, tiers: ModelTiers, snapshot: ConfigSnapshot, upstream: Upstream | None,
            scenarios: frozenset = frozenset()) -> str:
    """`model @ where`: the upstream model and the provider (or host) that answers `model_id`."""
    try:
        choice = routing.choose(model_id, snapshot, upstream, tiers, scenarios)
    except GatewayError:
        return "no upstream"
    where = choice.provider.name if choice.provider is not None else choice.upstream.host
    return f"{choice.model} @ {where}"


def route(method: str, path: str) -> str:
    """Which handler answers `method path`; raises the 404 every unknown path gets."""
    if path in ("/health", "/ready") and method in ("GET", "HEAD"):
        return path[1:]
    if path == "/metrics" and method == "GET":
        return "metrics"
    if path == "/" and method in ("GET", "HEAD"):
        return "root"
    if path == "/api/hello" and method in ("GET", "HEAD"):  # Claude Code's connection warm-up, every few seconds
        return "hello"
    if path == MESSAGES and method == "POST":
        return "messages"
    if path == COUNT_TOKENS and method == "POST":
        return "count_tokens"
    if path == "/v1/models" and method == "GET":
        return "models"
    if path.startswith("/v1/models/") and method == "GET":
        return "model"
    raise GatewayError(404, f"Not found: {method} {path}")
