"""Answers the proxy gives itself: health, readiness, the model list, and 404 for everything else."""

from __future__ import annotations

from ccany_addon.errors import GatewayError
from ccany_addon.models import ModelTiers

MESSAGES = "/v1/messages"
COUNT_TOKENS = "/v1/messages/count_tokens"

# created_at of the listed aliases: fixed, so the list is stable across restarts
_CREATED = "2025-01-01T00:00:00Z"
_ALIASES = (
    ("claude-opus-4-1", "Claude Opus 4.1", "big"),
    ("claude-sonnet-4-5", "Claude Sonnet 4.5", "middle"),
    ("claude-haiku-4-5", "Claude Haiku 4.5", "small"),
)


def models_list(tiers: ModelTiers) -> dict:
    """Claude names clients may ask for, each saying in its display name which upstream model serves it."""
    data = [
        {
            "type": "model",
            "id": alias,
            "display_name": f"{label} → {tiers.map(alias)}",
            "created_at": _CREATED,
        }
        for alias, label, _tier in _ALIASES
    ]
    return {"data": data, "has_more": False, "first_id": data[0]["id"], "last_id": data[-1]["id"]}


def model_info(tiers: ModelTiers, model_id: str) -> dict:
    for entry in models_list(tiers)["data"]:
        if entry["id"] == model_id:
            return entry
    return {"type": "model", "id": model_id, "display_name": f"{model_id} → {tiers.map(model_id)}",
            "created_at": _CREATED}


def route(method: str, path: str) -> str:
    """Which handler answers `method path`; raises the 404 every unknown path gets."""
    if path in ("/health", "/ready") and method in ("GET", "HEAD"):
        return path[1:]
    if path == "/metrics" and method == "GET":
        return "metrics"
    if path == "/" and method in ("GET", "HEAD"):
        return "root"
    if path == MESSAGES and method == "POST":
        return "messages"
    if path == COUNT_TOKENS and method == "POST":
        return "count_tokens"
    if path == "/v1/models" and method == "GET":
        return "models"
    if path.startswith("/v1/models/") and method == "GET":
        return "model"
    raise GatewayError(404, f"Not found: {method} {path}")
