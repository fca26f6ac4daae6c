"""The model catalog: shipped rows, lookups, and what a request cost."""

from __future__ import annotations

import pytest

from omnillm.bus.messages import TIERS, Tier, TokenUsage
from omnillm.providers.catalog import (
    CAPABILITIES,
    Catalog,
    ModelSpec,
    Price,
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
) -> ModelSpec:
    return ModelSpec(
        id=model_id,
        provider=provider,
        context_window=128000,
        max_output=4096,
        price=price,
        tier=tier,
    )


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


def test_every_provider_but_the_closed_anyscale_has_models() -> None:
    catalog = load_builtin_catalog()
    without = {name for name in BUILTIN_PROVIDERS if not catalog.for_provider(name)}
    assert without == {"anyscale"}


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


def test_free_model_costs_nothing() -> None:
    spec = _spec("local/a", price=Price(input=0, output=0))
    assert cost_usd(spec, TokenUsage(input_tokens=10_000, output_tokens=5_000)) == 0.0
