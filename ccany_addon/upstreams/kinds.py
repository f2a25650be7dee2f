"""The one declaration of provider kinds: for each, the header its key goes in and how to ask it which models it
serves (the admin page's "test provider" button). The router, the key injector, the log's header redaction, the
config checks and the admin page all read this table. Which converter speaks each kind is `upstreams/dialects.py`.

A leaf module: it imports nothing of ours, so config, proxy and Datasette can all read it.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote

AZURE_DEFAULT_API_VERSION = "2024-10-21"
ANTHROPIC_VERSION = "2023-06-01"


@dataclass(frozen=True, slots=True)
class ProviderKind:
    name: str
    key_header: str
    key_template: str  # how the key is written in `key_header`
    models_path: str  # appended to the provider's base URL to list its models
    extra_headers: tuple[tuple[str, str], ...] = ()  # what the models listing needs besides the key
    models_field: str = "data"  # the answer's list of models
    id_field: str = "id"  # each model's name in that list

    def key_headers(self, key: str) -> tuple[tuple[str, str], ...]:
        return ((self.key_header, self.key_template.format(key)),)

    def models_url(self, base_url: str, api_version: str | None = None) -> str:
        url = base_url.rstrip("/") + self.models_path
        if self.name == "azure":
            url += "?api-version=" + quote(api_version or AZURE_DEFAULT_API_VERSION, safe="")
        return url


PROVIDER_KINDS: dict[str, ProviderKind] = {
    kind.name: kind
    for kind in (
        ProviderKind("openai", "authorization", "Bearer {}", "/models"),
        ProviderKind("azure", "api-key", "{}", "/openai/models"),
        ProviderKind("responses", "authorization", "Bearer {}", "/models"),
        ProviderKind("gemini", "x-goog-api-key", "{}", "/models", models_field="models", id_field="name"),
        ProviderKind("anthropic", "x-api-key", "{}", "/models", (("anthropic-version", ANTHROPIC_VERSION),)),
    )
}
KIND_NAMES: tuple[str, ...] = tuple(PROVIDER_KINDS)

# Every header a provider key can travel in: redacted wherever a request is shown or logged.
KEY_HEADERS = frozenset(kind.key_header for kind in PROVIDER_KINDS.values())
REDACTED = "[redacted]"
