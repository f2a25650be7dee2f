"""Which upstream answers a requested model, and why (the rule is kept in the flow log).

In order: `provider,model` named in the request; the config DB's routes (lowest priority first), each a glob
on the client's model name, optionally limited to a scenario of the request (background, thinking, long
context, web search, image); then the reverse-mode upstream with the big/middle/small tier mapping.
A routed provider whose keys are all cooling down hands the request to the first usable provider of its
fallback list, with that provider's own model for the request (see `_fallback_model`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ccany_addon.anthropic_api.errors import GatewayError
from ccany_addon.anthropic_api.schema import ImageBlock, MessagesRequest, ToolResultBlock
from ccany_addon.config.snapshot import ConfigSnapshot, Provider, Route
from ccany_addon.upstreams.kinds import PROVIDER_KINDS
from ccany_addon.upstreams.models import TIERS, ModelTiers


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

    @property
    def is_openrouter(self) -> bool:
        return self.host == "openrouter.ai" or self.host.endswith(".openrouter.ai")

    def key_header(self) -> tuple[str, str]:
        kind = PROVIDER_KINDS[self.kind]
        return kind.key_header, kind.key_template.format(self.key)


@dataclass(frozen=True, slots=True)
class Choice:
    upstream: Upstream
    model: str
    rule: str  # e.g. "route *haiku*", "provider,model", "tier", "route * [thinking] → fallback b"
    provider: Provider | None = None  # a config DB provider, whose key pool gives the key


# Claude Code's `x-claude-code-request-class` (sent with CLAUDE_CODE_GATEWAY_HINT_HEADERS=1) names what a request
# is for: main, subagent, workflow, compaction, auxiliary (titles, classifiers, summaries), side_reply. Compaction
# and auxiliary requests are the work nobody watches token by token: the `background` scenario.
BACKGROUND_REQUEST_CLASSES = frozenset({"compaction", "auxiliary"})


def request_scenarios(request: MessagesRequest, estimated_tokens: int, long_context_threshold: int,
                      request_class: str = "") -> frozenset:
    """The scenarios a route may ask for, as this request meets them."""
    found = set()
    # Without the hint headers, a haiku name is the only sign of background work.
    if "haiku" in request.model.lower() or request_class.lower() in BACKGROUND_REQUEST_CLASSES:
        found.add("background")
    if request.thinking is not None and request.thinking.type != "disabled":
        found.add("thinking")
    if long_context_threshold and estimated_tokens > long_context_threshold:
        found.add("long_context")
    if any((tool.type or "").startswith("web_search") for tool in request.tools or ()):
        found.add("web_search")
    if request.messages and _has_image(request.messages[-1].content):
        found.add("image")
    return frozenset(found)


def _has_image(content: object) -> bool:
    if not isinstance(content, list):
        return False
    return any(isinstance(block, ImageBlock) or (isinstance(block, ToolResultBlock) and _has_image(block.content))
               for block in content)


def choose(model: str, snapshot: ConfigSnapshot, default: Upstream | None, tiers: ModelTiers,
           scenarios: frozenset = frozenset(), usable: Callable[[Provider], bool] = lambda provider: True) -> Choice:
    name, comma, named_model = model.partition(",")
    if comma and name in snapshot.providers:
        provider = snapshot.providers[name]
        return Choice(_upstream(provider), named_model, "provider,model", provider)
    if comma and snapshot.providers:
        raise GatewayError(400, f"model {model!r} names no known provider (known: {', '.join(snapshot.providers)})")
    route = snapshot.route(model, scenarios)
    if route is not None:
        rule = f"route {route.pattern}" + (f" [{route.scenario}]" if route.scenario else "")
        if not usable(route.provider):
            for fallback in route.provider.fallback:
                provider = snapshot.providers.get(fallback)
                if provider is None or not usable(provider):
                    continue
                if (own_model := _fallback_model(provider, route, model, snapshot, scenarios,
                                                 tiers.unknown_claude)) is not None:
                    return Choice(_upstream(provider), own_model, f"{rule} → fallback {provider.name}", provider)
        upstream_model = route.upstream_model or _provider_model(route.provider, model, tiers)
        return Choice(_upstream(route.provider), upstream_model, rule, route.provider)
    if default is None:
        raise GatewayError(500, "ccany has no upstream: start mitmproxy with --mode reverse:<upstream URL> "
                                "or add a provider and a route to the config DB")
    mapped = tiers.map(model)
    return Choice(default, mapped, "tier" if mapped != model else "default")


def _provider_model(provider: Provider, model: str, tiers: ModelTiers) -> str:
    """The provider's own tier mapping of a client model (the command-line tiers fill its gaps)."""
    if provider.kind == "anthropic" and not provider.models:
        return model  # Claude names are the Anthropic API's own
    own = ModelTiers(provider.models.get("big", tiers.big), provider.models.get("middle", ""),
                     provider.models.get("small", tiers.small), tiers.unknown_claude)
    return own.map(model)


def _fallback_model(provider: Provider, route: Route, model: str, snapshot: ConfigSnapshot,
                    scenarios: frozenset, unknown_claude: str) -> str | None:
    """The fallback provider's own model for this request; None: it has none, and is skipped.

    Neither the client's name nor the routed provider's model is sent: another provider would reject it. In order:
    a route of the fallback provider itself that applies to the request and names a model; the provider's model
    for the requested tier (from the Claude name, else from the routed model when it is one of the routed
    provider's tier models); for the `anthropic` kind without models, the client's Claude name; then, when the
    provider has no model for that tier (or no tier is known), its first model of big, middle, small: a degraded
    answer from a model the provider declared beats refusing while the routed provider cools down. A provider
    that declares no model at all is skipped. The command-line tiers are the default upstream's models, never
    a fallback's.
    """
    own_route = next((candidate for candidate in snapshot.matching_routes(model, scenarios)
                      if candidate.provider.name == provider.name and candidate.upstream_model), None)
    if own_route is not None:
        return own_route.upstream_model
    tier = _requested_tier(model, route, unknown_claude)
    own = ModelTiers(provider.models.get("big", ""), provider.models.get("middle", ""),
                     provider.models.get("small", ""))
    if tier is not None and (tier_model := own.tier(tier)):
        return tier_model
    if provider.kind == "anthropic" and not provider.models:
        return model if model.lower().startswith("claude") else None
    return own.big or own.middle or own.small or None


def _requested_tier(model: str, route: Route, unknown_claude: str) -> str | None:
    """big, middle or small: what the client's Claude name asks for, else what the route's model is to its
    provider."""
    # The tier names themselves as the tiers' models: the one mapping answers with the tier a name asks for.
    tier = ModelTiers(*TIERS, unknown_claude).map(model)
    if tier != model:  # the name passed through unchanged: no Claude tier in it
        return tier
    routed = route.upstream_model
    return next((name for name, tier_model in route.provider.models.items() if routed and tier_model == routed), None)


def _upstream(provider: Provider) -> Upstream:
    """The provider's endpoint; its key comes from the key pool when the request is sent."""
    return Upstream(
        provider.scheme, provider.host, provider.port, provider.path_prefix, "",
        f"provider {provider.name} has no usable key: add one to the config DB, or re-enable a disabled one",
        provider.name, provider.kind, provider.api_version,
    )

