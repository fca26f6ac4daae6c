"""The model catalog: shipped rows, lookups, and what a request cost."""

from __future__ import annotations

import datetime

import pytest

from omnillm.bus.messages import TIERS, Tier, TokenUsage
from omnillm.providers.catalog import (
    CAPABILITIES,
    Catalog,
    ModelSpec,
    Price,
    PriceTier,
    cost_usd,
    load_builtin_catalog,
)
from omnillm.providers.registry import BUILTIN_PROVIDERS

ONE_TWO = Price(input=1.0, output=2.0)


def _spec(
    model_id: str,
    *,
    provider: str = "",
    price: Price = ONE_TWO,
    tier: Tier = "medium",
    price_above: PriceTier | None = None,
    as_of: str = "",
) -> ModelSpec:
    return ModelSpec(
        id=model_id,
        provider=provider,
        context_window=128000,
        max_output=4096,
        price=price,
        tier=tier,
        price_above=price_above,
        as_of=as_of,
    )


def _builtin(model_id: str) -> ModelSpec:
    spec = load_builtin_catalog().get(model_id)
    assert spec is not None, model_id
    return spec


def test_builtin_catalog_loads_and_every_provider_is_a_builtin_row() -> None:
    catalog = load_builtin_catalog()
    assert len(catalog) >= 20
    for spec in catalog:
        assert spec.provider in BUILTIN_PROVIDERS, spec.id
        assert spec.id.startswith(f"{spec.provider}/")
        assert spec.tier in TIERS
        assert spec.capabilities <= set(CAPABILITIES)
        assert spec.price.input >= 0 and spec.price.output >= 0
        assert 0 < spec.max_output <= spec.context_window
        assert all(catalog.get(f) is not None for f in spec.fallbacks)


def test_every_builtin_provider_has_at_least_three_models() -> None:
    catalog = load_builtin_catalog()
    counts = {name: len(catalog.for_provider(name)) for name in BUILTIN_PROVIDERS}
    assert {name: n for name, n in counts.items() if n < 3} == {}


def test_every_row_is_dated_sourced_and_sane() -> None:
    for spec in load_builtin_catalog():
        assert datetime.date.fromisoformat(spec.as_of).isoformat() == spec.as_of, spec.id
        assert spec.source.strip(), spec.id
        assert spec.context_window > 0 and spec.max_output > 0, spec.id
        assert spec.tier in TIERS, spec.id
        assert spec.capabilities <= set(CAPABILITIES), spec.id
        rates = [
            spec.price.input,
            spec.price.output,
            spec.price.cached_input,
            spec.price.cache_write,
        ]
        if spec.price_above is not None:
            tier = spec.price_above
            assert tier.threshold_tokens > 0, spec.id
            rates += [tier.input, tier.output, tier.cached_input, tier.cache_write]
        assert all(r >= 0 for r in rates if r is not None), spec.id


def test_perplexity_sonar_models_offer_no_tools() -> None:
    sonar = load_builtin_catalog().for_provider("perplexity")
    assert {s.id for s in sonar} >= {"perplexity/sonar", "perplexity/sonar-pro"}
    assert [s.id for s in sonar if "tools" in s.capabilities] == []


@pytest.mark.parametrize(
    "model_id",
    ["opencode/big-pickle", "opencode/nemotron-3-ultra-free", "opencode/mimo-v2.5-free"],
)
def test_opencode_free_models_cost_nothing(model_id: str) -> None:
    usage = TokenUsage(
        input_tokens=50_000,
        cached_input_tokens=20_000,
        cache_write_tokens=5_000,
        output_tokens=4_000,
    )
    assert cost_usd(_builtin(model_id), usage) == 0.0


def test_opencode_lists_its_free_models_before_the_paid_ones() -> None:
    zen = load_builtin_catalog().for_provider("opencode")
    free = [s.price.input == 0 and s.price.output == 0 for s in zen]
    assert free[:3] == [True, True, True]
    assert free == sorted(free, reverse=True)


def test_opencode_paid_models_carry_the_zen_prices() -> None:
    prices = {
        m: (_builtin(f"opencode/{m}").price.input, _builtin(f"opencode/{m}").price.output)
        for m in ("kimi-k2.6", "glm-5.1", "claude-sonnet-4-6", "gemini-3-flash", "gpt-5.4-mini")
    }
    assert prices == {
        "kimi-k2.6": (0.95, 4.0),
        "glm-5.1": (1.4, 4.4),
        "claude-sonnet-4-6": (3.0, 15.0),
        "gemini-3-flash": (0.5, 3.0),
        "gpt-5.4-mini": (0.75, 4.5),
    }


def test_openrouter_offers_a_free_model_under_its_vendor_name() -> None:
    spec = _builtin("openrouter/deepseek/deepseek-v4-flash:free")
    assert spec.model == "deepseek/deepseek-v4-flash:free"
    assert (spec.price.input, spec.price.output) == (0.0, 0.0)


@pytest.mark.parametrize("deployment", ["gpt-4.1-mini", "gpt-5.4-mini", "gpt-5.4"])
def test_azure_deployments_bill_like_the_openai_model_of_the_same_name(deployment: str) -> None:
    azure, openai = _builtin(f"azure/{deployment}"), _builtin(f"openai/{deployment}")
    assert azure.model == deployment
    assert (azure.price, azure.price_above) == (openai.price, openai.price_above)


def test_anyscale_rows_are_open_models_for_a_self_deployed_endpoint() -> None:
    rows = load_builtin_catalog().for_provider("anyscale")
    assert "anyscale/meta-llama/Meta-Llama-3-70B-Instruct" in {s.id for s in rows}
    assert all("2024-08-01" in s.source for s in rows)


@pytest.mark.parametrize(
    ("model_id", "tier"),
    [
        ("openai/gpt-4.1-mini", "medium"),
        ("openai/gpt-5.4-mini", "complex"),
        ("openai/gpt-5.4", "reasoning"),
        ("openai/gpt-5.5", "reasoning"),
    ],
)
def test_openai_models_have_their_tiers(model_id: str, tier: str) -> None:
    spec = load_builtin_catalog().get(model_id)
    assert spec is not None and spec.tier == tier


def test_gpt_4_1_mini_row_carries_the_published_prices() -> None:
    spec = load_builtin_catalog().get("openai/gpt-4.1-mini")
    assert spec is not None
    assert spec.price == Price(input=0.40, output=1.60, cached_input=0.10)
    assert (spec.context_window, spec.max_output) == (1047576, 32768)
    assert spec.model == "gpt-4.1-mini"


def test_upstream_name_defaults_to_the_ids_tail_even_with_slashes() -> None:
    catalog = load_builtin_catalog()
    spec = catalog.get("openrouter/openai/gpt-5.2")
    assert spec is not None
    assert (spec.provider, spec.model) == ("openrouter", "openai/gpt-5.2")


def test_upstream_name_may_differ_from_the_id() -> None:
    spec = load_builtin_catalog().get("fireworks/kimi-k2p6")
    assert spec is not None
    assert spec.model == "accounts/fireworks/models/kimi-k2p6"


def test_a_model_id_must_be_provider_slash_model() -> None:
    with pytest.raises(ValueError, match="expected 'provider/model', got 'gpt-4'"):
        _spec("gpt-4")


def test_a_given_provider_must_match_the_id() -> None:
    with pytest.raises(ValueError, match="does not match"):
        _spec("openai/gpt-4", provider="azure")


def test_catalog_lookup_and_a_later_row_replaces_an_earlier_one() -> None:
    old = _spec("local/a")
    new = _spec("local/a", tier="simple")
    other = _spec("remote/b")
    catalog = Catalog([old, other, new])
    assert len(catalog) == 2
    assert catalog.get("local/a") is new
    assert catalog.get("local/zzz") is None
    assert catalog.for_provider("local") == [new]
    assert [m.id for m in catalog] == ["local/a", "remote/b"]


def test_cost_with_cached_input_to_the_cent() -> None:
    spec = load_builtin_catalog().get("openai/gpt-4.1-mini")
    assert spec is not None
    usage = TokenUsage(input_tokens=1_000_000, cached_input_tokens=400_000, output_tokens=10_000)
    # 0.6M * $0.40 + 0.4M * $0.10 + 0.01M * $1.60
    assert cost_usd(spec, usage) == pytest.approx(0.296)
    assert round(cost_usd(spec, usage), 2) == 0.30


def test_cost_with_cache_writes_uses_the_write_price() -> None:
    spec = load_builtin_catalog().get("anthropic/claude-haiku-4-5")
    assert spec is not None
    usage = TokenUsage(
        input_tokens=1_000_000, cached_input_tokens=300_000, cache_write_tokens=200_000
    )
    # 0.5M * $1.00 + 0.3M * $0.10 + 0.2M * $1.25
    assert cost_usd(spec, usage) == pytest.approx(0.78)


def test_reasoning_tokens_are_not_billed_twice() -> None:
    spec = load_builtin_catalog().get("openai/gpt-5.4")
    assert spec is not None
    usage = TokenUsage(input_tokens=2_000, output_tokens=10_000, reasoning_tokens=8_000)
    # 2k * $2.50 + 10k * $15 (reasoning is inside the 10k)
    assert cost_usd(spec, usage) == pytest.approx(0.155)


def test_without_cache_prices_cached_tokens_bill_as_input() -> None:
    spec = _spec("local/a", price=Price(input=2.0, output=8.0))
    usage = TokenUsage(
        input_tokens=100_000, cached_input_tokens=50_000, cache_write_tokens=10_000, output_tokens=0
    )
    assert cost_usd(spec, usage) == pytest.approx(0.2)


def test_gpt_5_4_bills_a_prompt_over_272k_at_the_long_context_rates() -> None:
    spec = _builtin("openai/gpt-5.4")
    # 200k uncached * $5 + 100k cached * $0.50 + 20k output * $22.50
    usage = TokenUsage(input_tokens=300_000, cached_input_tokens=100_000, output_tokens=20_000)
    assert cost_usd(spec, usage) == pytest.approx(1.50)


def test_the_long_context_rates_start_just_past_the_threshold() -> None:
    spec = _builtin("openai/gpt-5.4")
    assert round(cost_usd(spec, TokenUsage(input_tokens=272_000)), 2) == 0.68
    assert round(cost_usd(spec, TokenUsage(input_tokens=272_001)), 2) == 1.36


def test_gemini_pro_over_200k_bills_thoughts_at_the_long_context_output_rate() -> None:
    spec = _builtin("google/gemini-3.1-pro-preview")
    # promptTokenCount 250k (cachedContentTokenCount 0), candidates 1k + thoughts 4k
    usage = TokenUsage(input_tokens=250_000, output_tokens=5_000, reasoning_tokens=4_000)
    # 250k * $4 + 5k * $18
    assert cost_usd(spec, usage) == pytest.approx(1.09)


def test_a_tier_without_cache_prices_keeps_the_base_cache_prices() -> None:
    tier = PriceTier(threshold_tokens=1_000, input=4.0, output=8.0)
    spec = _spec("local/a", price=Price(input=2.0, output=4.0, cached_input=0.5), price_above=tier)
    usage = TokenUsage(input_tokens=3_000, cached_input_tokens=2_000)
    # 1k * $4 + 2k * $0.50
    assert cost_usd(spec, usage) == pytest.approx(0.005)


def test_openai_usage_with_cached_prompt_tokens_to_the_cent() -> None:
    # prompt_tokens 180000 (prompt_tokens_details.cached_tokens 150000),
    # completion_tokens 12000 (reasoning_tokens 8000)
    usage = TokenUsage(
        input_tokens=180_000,
        cached_input_tokens=150_000,
        output_tokens=12_000,
        reasoning_tokens=8_000,
    )
    # 30k * $0.75 + 150k * $0.075 + 12k * $4.50 = $0.08775
    assert round(cost_usd(_builtin("openai/gpt-5.4-mini"), usage), 2) == 0.09
    assert cost_usd(_builtin("openai/gpt-5.4-mini"), usage) == pytest.approx(0.08775)


def test_anthropic_usage_with_cache_write_and_read_to_the_cent() -> None:
    # input_tokens 2000, cache_creation_input_tokens 40000, cache_read_input_tokens
    # 160000, output_tokens 3000; normalised input counts all three
    usage = TokenUsage(
        input_tokens=202_000,
        cached_input_tokens=160_000,
        cache_write_tokens=40_000,
        output_tokens=3_000,
    )
    # 2k * $3 + 160k * $0.30 + 40k * $3.75 + 3k * $15 = $0.249
    assert round(cost_usd(_builtin("anthropic/claude-sonnet-4-6"), usage), 2) == 0.25
    assert cost_usd(_builtin("anthropic/claude-sonnet-4-6"), usage) == pytest.approx(0.249)


def test_gemini_usage_with_thoughts_in_the_output_to_the_cent() -> None:
    # promptTokenCount 120000 (cachedContentTokenCount 100000), candidatesTokenCount
    # 2000, thoughtsTokenCount 6000: thoughts bill as output
    usage = TokenUsage(
        input_tokens=120_000,
        cached_input_tokens=100_000,
        output_tokens=8_000,
        reasoning_tokens=6_000,
    )
    # 20k * $2 + 100k * $0.20 + 8k * $12 = $0.156
    assert round(cost_usd(_builtin("google/gemini-3.1-pro-preview"), usage), 2) == 0.16
    assert cost_usd(_builtin("google/gemini-3.1-pro-preview"), usage) == pytest.approx(0.156)


def test_a_malformed_as_of_date_is_refused() -> None:
    with pytest.raises(ValueError, match="as_of '24/07/2026' is not a YYYY-MM-DD date"):
        _spec("local/a", as_of="24/07/2026")


def test_a_config_row_needs_no_date_or_source() -> None:
    spec = _spec("local/a")
    assert (spec.as_of, spec.source, spec.price_above) == ("", "", None)


def test_free_model_costs_nothing() -> None:
    spec = _spec("local/a", price=Price(input=0, output=0))
    assert cost_usd(spec, TokenUsage(input_tokens=10_000, output_tokens=5_000)) == 0.0
