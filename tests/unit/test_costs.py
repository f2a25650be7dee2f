"""Pricing flows: hand-computed costs from the maintained table (text, cached input, cache writes, reasoning, a
long-prompt tier), config overrides winning over it, and the fast path agreeing with the table's own arithmetic."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ccany_addon.converters.shared_answer import usage_from_gemini, usage_from_openai
from ccany_addon.costs.prices import PRICE_TABLE, PriceOverride, PriceTable, Tokens

AT = datetime(2026, 6, 1, tzinfo=UTC).timestamp()  # prices change over time: a fixed day
OPENAI = "https://api.openai.com/v1/chat/completions"
ANTHROPIC = "https://api.anthropic.com/v1/messages"
GEMINI = "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-pro:generateContent"


def usd(*terms: tuple[int, float]) -> float:
    """Tokens × USD per million tokens, summed."""
    return sum(tokens * price for tokens, price in terms) / 1_000_000


def usage(input_tokens: int = 0, output: int = 0, cache_read: int = 0, cache_write: int = 0) -> dict:
    return {"input_tokens": input_tokens, "output_tokens": output, "cache_read_input_tokens": cache_read,
            "cache_creation_input_tokens": cache_write}


def test_a_text_turn_is_priced_per_input_and_output_token():
    cost = PriceTable().cost(usage(1000, 200), "gpt-4o", "openai", OPENAI, AT)
    assert cost is not None
    assert cost.usd == pytest.approx(usd((1000, 2.5), (200, 10)))
    assert cost.source == f"{PRICE_TABLE}: openai gpt-4o"


def test_cached_input_is_priced_at_the_cache_read_price():
    # an OpenAI answer: 1200 prompt tokens of which 1000 cached, as the converter reports it to the client
    reported = usage_from_openai({"prompt_tokens": 1200, "completion_tokens": 42,
                                  "prompt_tokens_details": {"cached_tokens": 1000}})
    cost = PriceTable().cost(reported, "gpt-4o", "openai", OPENAI, AT)
    assert cost is not None and cost.usd == pytest.approx(usd((200, 2.5), (1000, 1.25), (42, 10)))


def test_reasoning_tokens_are_output_tokens():
    # completion_tokens holds the reasoning ones; an o-series/gpt-5 answer bills all of them as output
    reported = usage_from_openai({"prompt_tokens": 100, "completion_tokens": 900,
                                  "completion_tokens_details": {"reasoning_tokens": 800}})
    cost = PriceTable().cost(reported, "gpt-5", "openai", OPENAI, AT)
    assert cost is not None and cost.usd == pytest.approx(usd((100, 1.25), (900, 10)))
    # Gemini reports thoughts apart from the answer: both are output
    reported = usage_from_gemini({"promptTokenCount": 100, "candidatesTokenCount": 100, "thoughtsTokenCount": 800})
    cost = PriceTable().cost(reported, "gemini-2.5-flash", "gemini", GEMINI, AT)
    assert cost is not None and cost.usd == pytest.approx(usd((100, 0.3), (900, 2.5)))


def test_cache_writes_and_reads_of_an_anthropic_turn():
    cost = PriceTable().cost(usage(100, 300, cache_read=5000, cache_write=2000), "claude-sonnet-4-5", "anthropic",
                             ANTHROPIC, AT)
    assert cost is not None
    assert cost.usd == pytest.approx(usd((100, 3), (2000, 3.75), (5000, 0.3), (300, 15)))


def test_a_long_prompt_moves_into_the_higher_tier():
    # Gemini 2.5 Pro: prompts over 200k tokens cost $2.50 in and $15 out per million, the whole request
    cost = PriceTable().cost(usage(250_000, 1000), "gemini-2.5-pro", "gemini", GEMINI, AT)
    assert cost is not None and cost.usd == pytest.approx(usd((250_000, 2.5), (1000, 15)))
    short = PriceTable().cost(usage(1000, 1000), "gemini-2.5-pro", "gemini", GEMINI, AT)
    assert short is not None and short.usd == pytest.approx(usd((1000, 1.25), (1000, 10)))


def test_an_unknown_host_is_priced_by_the_model_name_and_says_so():
    cost = PriceTable().cost(usage(1000, 200), "gpt-4o", "local", "http://127.0.0.1:8000/v1/chat/completions", AT)
    assert cost is not None and cost.usd == pytest.approx(usd((1000, 2.5), (200, 10)))
    assert cost.source == f"{PRICE_TABLE}: openai gpt-4o, by model name"


def test_no_tokens_or_no_known_price_leaves_the_flow_unpriced():
    table = PriceTable()
    assert table.cost({}, "gpt-4o", "openai", OPENAI, AT) is None
    assert table.cost(usage(), "gpt-4o", "openai", OPENAI, AT) is None
    assert table.cost(usage(10, 10), None, "openai", OPENAI, AT) is None
    assert table.cost(usage(10, 10), "my-own-finetune-7b", "local", "http://127.0.0.1:1/v1", AT) is None
    # a token count of the wrong type counts nothing rather than failing
    assert Tokens.from_usage({"input_tokens": "many", "output_tokens": 5}) == Tokens(0, 5, 0, 0)


def test_overrides_win_over_the_table_and_a_providers_own_comes_first():
    overrides = (
        PriceOverride("gpt-4o", "azure-eu", 2.0, 8.0),  # a negotiated rate at one provider
        PriceOverride("llama*", None, 0.0, 0.0),  # own hardware
        PriceOverride("gpt-4o*", None, 1.0, 4.0, cache_read=0.1),
    )
    table = PriceTable(overrides)
    at_azure = table.cost(usage(1000, 100, cache_read=1000), "gpt-4o", "azure-eu", OPENAI, AT)
    assert at_azure is not None and at_azure.source == "override gpt-4o (azure-eu)"
    # a cache price left out costs as much as input
    assert at_azure.usd == pytest.approx(usd((1000, 2.0), (1000, 2.0), (100, 8.0)))
    elsewhere = table.cost(usage(1000, 100, cache_read=1000), "gpt-4o", "openai", OPENAI, AT)
    assert elsewhere is not None and elsewhere.source == "override gpt-4o*"
    assert elsewhere.usd == pytest.approx(usd((1000, 1.0), (1000, 0.1), (100, 4.0)))
    local = table.cost(usage(50_000, 5000), "meta/Llama-3.3-70B", "ollama", "http://127.0.0.1:11434/v1", AT)
    assert local is not None and local.usd == 0.0 and local.source == "override llama*"
    # a model no override matches still gets the table's price
    other = table.cost(usage(1000, 200), "gpt-4.1", "openai", OPENAI, AT)
    assert other is not None and other.source.startswith(PRICE_TABLE)


def _listed_models() -> list[tuple[str, str]]:
    from genai_prices import data_snapshot

    return [(provider.id, model.id) for provider in data_snapshot.get_snapshot().providers
            for model in provider.models][::7]


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(_listed_models()), st.integers(0, 400_000), st.integers(0, 50_000),
       st.integers(0, 400_000), st.integers(0, 50_000))
def test_the_fast_path_agrees_with_the_tables_own_calculation(listed, uncached, output, cache_read, cache_write):
    """Flat prices are applied without the table's general (and 20× slower) calculation: the sums must agree."""
    from genai_prices import Usage, calc_price

    provider_id, model_id = listed
    tokens = usage(uncached, output, cache_read, cache_write)
    if Tokens.from_usage(tokens) is None:
        return
    try:
        expected = calc_price(Usage(input_tokens=uncached + cache_read + cache_write, output_tokens=output,
                                    cache_read_tokens=cache_read, cache_write_tokens=cache_write),
                              model_id, provider_id=provider_id,
                              genai_request_timestamp=datetime.fromtimestamp(AT, UTC))
    except (LookupError, ValueError):  # a model whose price needs units a text flow does not report
        return
    table = PriceTable()
    table._found[("p", None, model_id)] = _lookup_by_id(provider_id, model_id)  # noqa: SLF001 - this very model
    cost = table.cost(tokens, model_id, "p", None, AT)
    assert cost is not None
    CHECKED.append(model_id)
    assert Decimal(str(cost.usd)) == pytest.approx(expected.total_price, rel=Decimal("1e-9"), abs=Decimal("1e-12"))


CHECKED: list[str] = []


def test_the_fast_path_check_compared_many_models():
    """The property above returns early for models a text flow cannot be priced by; it must still compare."""
    test_the_fast_path_agrees_with_the_tables_own_calculation()
    assert len(set(CHECKED)) >= 50


def _lookup_by_id(provider_id: str, model_id: str):
    from genai_prices import data_snapshot

    from ccany_addon.costs.prices import _Listed

    provider, model = data_snapshot.get_snapshot().find_provider_model(model_id, None, provider_id, None)
    return _Listed(provider, model, "test")
