"""Which upstream answers a requested model, and why (the rule is kept in the flow log).

In order: `provider,model` named in the request; the config DB's routes (lowest priority first); then the
reverse-mode upstream with the big/middle/small tier mapping.
"""

from __future__ import annotations

from dataclasses import dataclass

from ccany_addon.config.snapshot import ConfigSnapshot, Provider
from ccany_addon.errors import GatewayError
from ccany_addon.models import ModelTiers

REDACTED = "[redacted]"
# Where each provider kind takes its key; these headers are redacted once a request has been sent.
_KEY_HEADERS = {
    "openai": ("authorization", "Bearer {}"),
    "azure": ("api-key", "{}"),
    "responses": ("authorization", "Bearer {}"),
    "gemini": ("x-goog-api-key", "{}"),
    "anthropic": ("x-api-key", "{}"),
}
KEY_HEADERS = frozenset(name for name, _ in _KEY_HEADERS.values())


@dataclass(frozen=True, slots=True)
class Upstream:
    scheme: str
    host: str
    port: int
    path_prefix: str
    key: str
    missing_key: str  # what to tell a client when `key` is empty
    provider: str = "openai"
    kind: str = "openai"
    api_version: str | None = None

    @property
    def name(self) -> str:
        return f"{self.host}:{self.port}"

    def key_header(self) -> tuple[str, str]:
        name, template = _KEY_HEADERS[self.kind]
        return name, template.format(self.key)


@dataclass(frozen=True, slots=True)
class Choice:
    upstream: Upstream
    model: str
    rule: str  # e.g. "route *haiku*", "provider,model", "tier"


def choose(model: str, snapshot: ConfigSnapshot, default: Upstream | None, tiers: ModelTiers) -> Choice:
    name, comma, named_model = model.partition(",")
    if comma and name in snapshot.providers:
        return Choice(_upstream(snapshot.providers[name]), named_model, "provider,model")
    if comma and snapshot.providers:
        raise GatewayError(400, f"model {model!r} names no known provider (known: {', '.join(snapshot.providers)})")
    route = snapshot.route(model)
    if route is not None:
        provider = route.provider
        rule = f"route {route.pattern}"
        if route.upstream_model:
            return Choice(_upstream(provider), route.upstream_model, rule)
        if provider.kind == "anthropic" and not provider.models:
            return Choice(_upstream(provider), model, rule)  # Claude names are the Anthropic API's own
        own = ModelTiers(provider.models.get("big", tiers.big), provider.models.get("middle", ""),
                         provider.models.get("small", tiers.small))
        return Choice(_upstream(provider), own.map(model), rule)
    if default is None:
        raise GatewayError(500, "ccany has no upstream: start mitmproxy with --mode reverse:<upstream URL> "
                                "or add a provider and a route to the config DB")
    mapped = tiers.map(model)
    return Choice(default, mapped, "tier" if mapped != model else "default")


def _upstream(provider: Provider) -> Upstream:
    return Upstream(
        provider.scheme, provider.host, provider.port, provider.path_prefix,
        provider.keys[0] if provider.keys else "",
        f"provider {provider.name} has no usable key: add one to the config DB",
        provider.name, provider.kind, provider.api_version,
    )
