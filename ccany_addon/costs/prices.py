"""What a flow cost in USD: the config DB's price overrides first, then the `genai-prices` table (maintained by
Pydantic, shipped with the package, never fetched at run time).

A flow's usage is in Anthropic's terms (`input_tokens` without the cached input, cache reads and writes apart,
reasoning inside `output_tokens`), as every converter reports it; `genai-prices` counts input as the total, cache
reads and writes included, and prices each kind on its own.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from importlib.metadata import version
from typing import Any

PRICE_TABLE = f"genai-prices {version('genai-prices')}"
MTOK = 1_000_000


@dataclass(frozen=True, slots=True)
class Tokens:
    input: int = 0  # not read from a cache
    output: int = 0
    cache_read: int = 0
    cache_write: int = 0

    @classmethod
    def from_usage(cls, usage: dict) -> Tokens | None:
        """A flow's Anthropic usage; None when it reports no tokens at all (nothing to price)."""
        counts = [usage.get(name) for name in
                  ("input_tokens", "output_tokens", "cache_read_input_tokens", "cache_creation_input_tokens")]
        if not any(isinstance(count, int) and count > 0 for count in counts):
            return None
        return cls(*(count if isinstance(count, int) and count > 0 else 0 for count in counts))


@dataclass(frozen=True, slots=True)
class PriceOverride:
    """A `model_prices` row of the config DB: USD per million tokens for upstream models matching `pattern` (a
    glob), at one provider (its config name; None: any). Cache prices left None cost as much as input."""

    pattern: str
    provider: str | None
    input: float
    output: float
    cache_read: float | None = None
    cache_write: float | None = None

    @classmethod
    def from_row(cls, row: dict) -> PriceOverride:
        return cls(row["pattern"], row["provider"] or None, row["input_per_mtok"], row["output_per_mtok"],
                   row["cache_read_per_mtok"], row["cache_write_per_mtok"])

    def matches(self, provider: str | None, model: str) -> bool:
        if self.provider is not None and self.provider != provider:
            return False
        name = model.lower()
        pattern = self.pattern.lower()
        return fnmatch.fnmatchcase(name, pattern) or fnmatch.fnmatchcase(name.rsplit("/", 1)[-1], pattern)

    def usd(self, tokens: Tokens) -> float:
        cache_read = self.input if self.cache_read is None else self.cache_read
        cache_write = self.input if self.cache_write is None else self.cache_write
        return (tokens.input * self.input + tokens.output * self.output + tokens.cache_read * cache_read
                + tokens.cache_write * cache_write) / MTOK


@dataclass(frozen=True, slots=True)
class Cost:
    usd: float
    source: str  # which price: `genai-prices 0.2.5: openai gpt-4o`, `override gpt-4o* (openai)`


class PriceTable:
    """Prices flows: the first override matching the provider and upstream model wins; else `genai-prices`, by
    the upstream URL's host, else by the model name alone (a gateway or local server serving a known model: add an
    override to price it otherwise, 0 for your own hardware). Each (provider, URL, model) is looked up once."""

    def __init__(self, overrides: tuple[PriceOverride, ...] = ()) -> None:
        self.overrides = overrides
        self._found: dict[tuple[str | None, str | None, str], PriceOverride | _Listed | None] = {}

    def cost(self, usage: dict, model: str | None, provider: str | None, upstream_url: str | None,
             at: float) -> Cost | None:
        """The flow's cost, or None when it reports no tokens or no price is known for its model."""
        tokens = Tokens.from_usage(usage)
        if tokens is None or not model:
            return None
        key = (provider, upstream_url, model)
        if key not in self._found:
            if len(self._found) > 4096:  # models come from upstream answers too: keep the memory bounded
                self._found.clear()
            self._found[key] = self._lookup(provider, upstream_url, model)
        price = self._found[key]
        if price is None:
            return None
        if isinstance(price, PriceOverride):
            where = f" ({price.provider})" if price.provider else ""
            return Cost(price.usd(tokens), f"override {price.pattern}{where}")
        return Cost(price.usd(tokens, at), price.source)

    def _lookup(self, provider: str | None, upstream_url: str | None, model: str) -> PriceOverride | _Listed | None:
        for override in self.overrides:
            if override.matches(provider, model):
                return override
        return _listed(upstream_url, model)


class _Listed:
    """A model of the `genai-prices` table; its price may change with the date, and with the prompt's length."""

    __slots__ = ("provider", "model", "source", "_rates")

    def __init__(self, provider: Any, model: Any, source: str) -> None:
        self.provider, self.model, self.source = provider, model, source
        self._rates: dict[int, PriceOverride | None] = {}  # by UTC day

    def usd(self, tokens: Tokens, at: float) -> float:
        day = int(at // 86400)
        if day not in self._rates:
            self._rates = {day: _flat_rates(self.model.get_prices(datetime.fromtimestamp(at, UTC)))}
        rates = self._rates[day]
        if rates is not None:  # 1 µs instead of the 80 of the table's general calculation
            return rates.usd(tokens)
        import genai_prices

        usage = genai_prices.Usage(
            input_tokens=tokens.input + tokens.cache_read + tokens.cache_write, output_tokens=tokens.output,
            cache_read_tokens=tokens.cache_read, cache_write_tokens=tokens.cache_write)
        when = datetime.fromtimestamp(at, UTC)
        calculation = self.model.calc_price(usage, self.provider, genai_request_timestamp=when)
        return float(calculation.total_price)


_TOKEN_PRICES = frozenset({"input_mtok", "output_mtok", "cache_read_mtok", "cache_write_mtok", "cache_write_1h_mtok"})


def _flat_rates(price: Any) -> PriceOverride | None:
    """The price as four flat rates when that is all it charges for a text flow; None when the prompt's length
    moves it into another tier, or it charges per request: the table's own calculation then."""
    charged = {name: value for name, value in vars(price).items() if value is not None}
    flat = {name: float(value) for name, value in charged.items() if isinstance(value, Decimal)}
    if any(name in _TOKEN_PRICES and name not in flat for name in charged) or "requests_kcount" in charged:
        return None
    input_price = flat.get("input_mtok", 0.0)
    return PriceOverride("", None, input_price, flat.get("output_mtok", 0.0), flat.get("cache_read_mtok"),
                         flat.get("cache_write_mtok"))


def load_price_table() -> None:
    """Read the maintained table (150 ms, once) at start-up, not in the first flow's hook."""
    from genai_prices import data_snapshot

    data_snapshot.get_snapshot()


def _listed(upstream_url: str | None, model: str) -> _Listed | None:
    from genai_prices import data_snapshot  # 150 ms and 6 MB: only where flows are priced, not in the CLI

    snapshot = data_snapshot.get_snapshot()
    for url, how in ([(upstream_url, "")] if upstream_url else []) + [(None, ", by model name")]:
        try:
            found_provider, found_model = snapshot.find_provider_model(model, None, None, url)
        except LookupError:
            continue
        return _Listed(found_provider, found_model, f"{PRICE_TABLE}: {found_provider.id} {found_model.id}{how}")
    return None
