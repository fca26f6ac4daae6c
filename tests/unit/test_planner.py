"""The fallback chain the planner builds: which models, in what order, and why not others."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from omnillm.actors._dispatch import exhausted
from omnillm.actors.classifier.actor import classify
from omnillm.actors.planner.actor import MAX_CHAIN, plan
from omnillm.bus.messages import (
    Candidate,
    ChatRequest,
    Classified,
    Failure,
    Message,
    ProviderHealth,
    RouteConstraints,
    Tier,
)
from omnillm.config import Config, Settings, resolve
from omnillm.errors import NoCandidates, UnknownModel

LOCAL: dict[str, Any] = {"family": "openai", "base_url": "http://127.0.0.1:9/v1", "api_key": "none"}

INPUT_TOKENS = 1_000
OUTPUT_TOKENS = 500


def model(
    model_id: str,
    tier: str,
    price_in: float,
    price_out: float,
    *capabilities: str,
    fallbacks: tuple[str, ...] = (),
) -> dict[str, Any]:
    return {
        "id": model_id,
        "tier": tier,
        "price": {"input": price_in, "output": price_out},
        "capabilities": ["tools", *capabilities],
        "fallbacks": list(fallbacks),
    }


MODELS = [
    model("acme/small", "simple", 0.10, 0.40, fallbacks=("bolt/mid", "acme/big")),
    model("acme/mid", "medium", 0.50, 2.00, "vision"),
    model("acme/big", "complex", 3.00, 15.00),
    model("bolt/mid", "medium", 0.30, 1.20),
    model("bolt/think", "reasoning", 5.00, 25.00, "vision", "reasoning"),
]
"""Costs for 1,000 tokens in and 500 out: small 0.0003, bolt/mid 0.0009, acme/mid 0.0015,
big 0.0105, think 0.0175 (USD)."""


def settings(
    models: list[dict[str, Any]] | None = None,
    *,
    disabled: tuple[str, ...] = (),
    **routing: Any,
) -> Settings:
    providers = {name: {**LOCAL, "enabled": name not in disabled} for name in ("acme", "bolt")}
    raw = {
        "providers": providers,
        "models": MODELS if models is None else models,
        "routing": routing,
    }
    return resolve(msgspec.convert(raw, Config), env={})


def chat(model: str = "auto", **options: Any) -> ChatRequest:
    return ChatRequest(messages=[Message(role="user", content="hello")], model=model, **options)


def classified(tier: Tier = "medium", *needs: Any) -> Classified:
    return Classified(
        tier=tier, needs=list(needs), input_tokens=INPUT_TOKENS, output_tokens=OUTPUT_TOKENS
    )


def ids(chain: list[Candidate]) -> list[str]:
    return [c.model for c in chain]


def chain_for(
    tier: Tier = "medium",
    *needs: Any,
    model: str = "auto",
    config: Settings | None = None,
    **options: Any,
) -> list[str]:
    return ids(plan(chat(model, **options), classified(tier, *needs), config or settings()))


# --- auto ----------------------------------------------------------------------------


def test_auto_tries_the_cheapest_capable_model_first_then_stronger_tiers() -> None:
    assert chain_for("medium") == ["bolt/mid", "acme/mid", "acme/big", "bolt/think"]


def test_a_simple_request_goes_to_the_cheap_simple_model_first() -> None:
    chain = chain_for("simple")

    assert chain[0] == "acme/small"
    assert chain == ["acme/small", "bolt/mid", "acme/mid", "acme/big", "bolt/think"]


def test_a_model_weaker_than_the_tier_is_never_tried_when_a_stronger_one_exists() -> None:
    chain = chain_for("complex")

    assert chain == ["acme/big", "bolt/think"]
    assert "acme/small" not in chain


def test_with_nothing_strong_enough_the_strongest_model_goes_first() -> None:
    weak = settings(
        [
            model("acme/small", "simple", 0.10, 0.40),
            model("acme/mid", "medium", 0.50, 2.00),
            model("bolt/mid", "medium", 0.30, 1.20),
        ]
    )

    assert chain_for("reasoning", config=weak) == ["bolt/mid", "acme/mid", "acme/small"]


def test_the_chain_is_at_most_five_models_long_and_keeps_the_cheapest() -> None:
    many = settings([model(f"acme/m{i}", "simple", 0.1 * (i + 1), 0.1 * (i + 1)) for i in range(8)])

    chain = chain_for("simple", config=many)

    assert len(chain) == MAX_CHAIN == 5
    assert chain == ["acme/m0", "acme/m1", "acme/m2", "acme/m3", "acme/m4"]


def test_a_models_estimated_cost_is_its_token_estimate_times_its_prices() -> None:
    chain = plan(chat(), classified("medium"), settings())

    costs = {c.model: c.est_cost_usd for c in chain}
    assert costs["acme/mid"] == pytest.approx((INPUT_TOKENS * 0.50 + OUTPUT_TOKENS * 2.00) / 1e6)
    assert costs["acme/big"] == pytest.approx((INPUT_TOKENS * 3.00 + OUTPUT_TOKENS * 15.00) / 1e6)
    assert costs["bolt/think"] == pytest.approx(0.0175)


def test_candidates_name_their_provider() -> None:
    chain = plan(chat(), classified("medium"), settings())

    assert [(c.provider, c.model) for c in chain[:2]] == [
        ("bolt", "bolt/mid"),
        ("acme", "acme/mid"),
    ]


def test_auto_uses_only_models_of_providers_that_are_live() -> None:
    chain = chain_for("medium", config=settings(disabled=("bolt",)))

    # Neither the disabled provider nor built-in catalog models without a key appear.
    assert chain == ["acme/mid", "acme/big"]


# --- an explicit model ---------------------------------------------------------------


def test_an_explicit_model_goes_first_then_its_fallbacks() -> None:
    assert chain_for("reasoning", model="acme/small") == ["acme/small", "bolt/mid", "acme/big"]


def test_an_explicit_model_without_fallbacks_is_the_whole_chain() -> None:
    assert chain_for("simple", model="bolt/think") == ["bolt/think"]


def test_a_bare_model_name_finds_the_configured_model() -> None:
    assert chain_for("simple", model="big") == ["acme/big"]


def test_an_unknown_model_lists_the_configured_models() -> None:
    with pytest.raises(UnknownModel) as raised:
        chain_for(model="acme/nope")

    message = str(raised.value)
    assert "'acme/nope'" in message
    assert "acme/big, acme/mid, acme/small, bolt/mid, bolt/think" in message
    assert raised.value.code == "unknown_model"


def test_a_catalog_model_whose_provider_is_not_configured_cannot_be_used() -> None:
    with pytest.raises(NoCandidates, match=r"provider 'openai' is not configured"):
        chain_for(model="openai/gpt-4o-mini")


# --- needs ---------------------------------------------------------------------------


def test_an_image_request_only_goes_to_models_that_see_images() -> None:
    assert chain_for("medium", "vision") == ["acme/mid", "bolt/think"]


def test_an_explicit_model_without_vision_refuses_an_image_request() -> None:
    with pytest.raises(NoCandidates, match="acme/small does not support vision"):
        chain_for("simple", "vision", model="acme/small")


def test_an_explicit_vision_model_drops_fallbacks_that_cannot_see_images() -> None:
    config = settings(
        [
            model("acme/mid", "medium", 0.50, 2.00, "vision", fallbacks=("acme/big", "bolt/think")),
            *(m for m in MODELS if m["id"] != "acme/mid"),
        ]
    )

    assert chain_for("medium", "vision", model="acme/mid", config=config) == [
        "acme/mid",
        "bolt/think",
    ]


def test_a_hard_image_request_falls_back_to_the_strongest_model_that_sees_images() -> None:
    # The only model that can see images is a simple one; the complex one is blind.
    config = settings(
        [
            model("acme/small", "simple", 0.10, 0.40, "vision"),
            model("acme/big", "complex", 3.00, 15.00),
        ]
    )

    assert chain_for("complex", "vision", config=config) == ["acme/small"]


def test_no_model_that_sees_images_raises_no_candidates_saying_why() -> None:
    blind = settings([model("acme/small", "simple", 0.10, 0.40)])

    with pytest.raises(NoCandidates, match="acme/small does not support vision"):
        chain_for("simple", "vision", config=blind)


# --- allow, deny, budget, strategy ---------------------------------------------------


def test_the_config_deny_list_removes_a_provider() -> None:
    assert chain_for("medium", config=settings(deny=["bolt/*"])) == ["acme/mid", "acme/big"]


def test_the_config_deny_list_removes_one_model() -> None:
    assert "acme/mid" not in chain_for("medium", config=settings(deny=["acme/mid"]))


def test_a_request_can_deny_models() -> None:
    chain = chain_for("medium", route=RouteConstraints(deny=["acme/mid", "bolt/think"]))

    assert chain == ["bolt/mid", "acme/big"]


def test_a_request_can_allow_only_some_models() -> None:
    assert chain_for("medium", route=RouteConstraints(allow=["acme/*"])) == ["acme/mid", "acme/big"]


def test_a_request_restricted_to_weak_models_still_gets_the_strongest_of_them() -> None:
    # "Only my cheap models" on a hard question: the best allowed model, not an error.
    chain = chain_for("complex", route=RouteConstraints(allow=["acme/small", "bolt/mid"]))

    assert chain == ["bolt/mid", "acme/small"]


def test_denying_everything_raises_no_candidates_saying_why() -> None:
    with pytest.raises(NoCandidates, match="denied by the routing deny list"):
        chain_for("medium", route=RouteConstraints(deny=["acme", "bolt"]))


def test_max_cost_drops_models_estimated_over_the_budget() -> None:
    chain = chain_for("simple", route=RouteConstraints(max_cost_usd=0.002))

    assert chain == ["acme/small", "bolt/mid", "acme/mid"]


def test_max_cost_below_every_model_raises_no_candidates() -> None:
    with pytest.raises(NoCandidates, match="over max_cost_usd"):
        chain_for("simple", route=RouteConstraints(max_cost_usd=0.0001))


def test_priority_strategy_orders_by_the_configured_provider_priority() -> None:
    config = settings(strategy="priority", priority=["bolt", "acme"])

    assert chain_for("medium", config=config) == ["bolt/mid", "bolt/think", "acme/mid", "acme/big"]


def test_a_request_can_ask_for_the_priority_strategy() -> None:
    config = settings(priority=["acme", "bolt"])

    assert chain_for("medium", config=config, route=RouteConstraints(strategy="priority")) == [
        "acme/mid",
        "acme/big",
        "bolt/mid",
        "bolt/think",
    ]


# --- aliases -------------------------------------------------------------------------


def test_a_list_alias_is_tried_in_the_order_written() -> None:
    config = settings(aliases={"fast": ["bolt/think", "acme/small"]})

    assert chain_for("simple", model="fast", config=config) == ["bolt/think", "acme/small"]


def test_a_tier_alias_plans_for_that_tier_whatever_the_classification() -> None:
    config = settings(aliases={"smart": {"tier": "complex"}})

    assert chain_for("simple", model="smart", config=config) == ["acme/big", "bolt/think"]


def test_an_alias_still_honours_the_deny_list() -> None:
    config = settings(aliases={"fast": ["bolt/think", "acme/small"]}, deny=["bolt/*"])

    assert chain_for("simple", model="fast", config=config) == ["acme/small"]


# --- exhausted -----------------------------------------------------------------------


def test_exhausted_names_the_first_failure_first_and_keeps_its_code() -> None:
    failures = [
        Failure(
            code="rate_limited", message="acme/mid: 429 slow down", retryable=True, provider="acme"
        ),
        Failure(code="provider_unavailable", message="bolt/mid: 503", provider="bolt"),
        Failure(code="no_caller", message="acme/big: no caller for provider acme"),
    ]

    result = exhausted(failures)

    assert result.code == "rate_limited"
    assert result.provider == "acme"
    assert result.retryable is True
    assert result.message == (
        "acme/mid: 429 slow down; then bolt/mid: 503; acme/big: no caller for provider acme"
    )


def test_exhausted_with_one_failure_is_that_failure() -> None:
    only = Failure(code="authentication_failed", message="acme/mid: bad key", provider="acme")

    assert exhausted([only]) == only


def test_exhausted_with_no_failures_says_nothing_was_left_to_try() -> None:
    result = exhausted([])

    assert result.code == "no_candidates"
    assert "no candidate" in result.message


def _zen_settings(env: dict[str, str]) -> Settings:
    return resolve(msgspec.convert({"providers": {"opencode": {}}}, Config), env=env)


def test_opencode_without_a_key_serves_only_its_free_models() -> None:
    settings = _zen_settings({})
    assert settings.providers["opencode"].free_only
    chain = plan(
        ChatRequest(messages=[Message(role="user", content="hi")]),
        classify(ChatRequest(messages=[Message(role="user", content="hi")])),
        settings,
    )
    catalog = settings.catalog
    assert chain and all(
        (spec := catalog.get(c.model)) is not None and spec.price.input == spec.price.output == 0
        for c in chain
    )
    with pytest.raises(NoCandidates, match="needs a paid key"):
        request = ChatRequest(
            model="opencode/kimi-k2.6", messages=[Message(role="user", content="hi")]
        )
        plan(request, classify(request), settings)


def test_a_refused_free_tier_takes_free_models_out_of_the_plan() -> None:
    settings = _zen_settings({"OPENCODE_API_KEY": "paid"})
    request = ChatRequest(messages=[Message(role="user", content="hi")])
    refused = {"opencode": ProviderHealth("opencode", "free_tier_refused", "403", 1.0)}
    before = plan(request, classify(request), settings)
    after = plan(request, classify(request), settings, refused)
    free = {"opencode/big-pickle", "opencode/nemotron-3-ultra-free", "opencode/mimo-v2.5-free"}
    assert free & {c.model for c in before}
    assert not free & {c.model for c in after}
    assert after  # the paid Zen models still serve


def _aliases_settings() -> Settings:
    config = {
        "providers": {
            "opencode": {},
            "acme": {"family": "openai", "base_url": "http://127.0.0.1:9/v1", "api_key": "none"},
        },
        "models": [
            {"id": "acme/tiny", "tier": "simple", "price": {"input": 0.1, "output": 0.2}},
            {
                "id": "acme/eyes",
                "tier": "medium",
                "capabilities": ["vision"],
                "price": {"input": 1, "output": 2},
            },
            {"id": "acme/brain", "tier": "complex", "price": {"input": 3, "output": 9}},
            {"id": "acme/gratis", "tier": "simple", "price": {"input": 0, "output": 0}},
        ],
    }
    return resolve(msgspec.convert(config, Config), env={})


def _ask(model: str) -> ChatRequest:
    return ChatRequest(model=model, messages=[Message(role="user", content="hi")])


def test_builtin_aliases_steer_the_plan() -> None:
    settings = _aliases_settings()

    def first(model: str) -> list[str]:
        request = _ask(model)
        return [c.model for c in plan(request, classify(request), settings)]

    assert first("cheap")[0] == "acme/gratis"
    smart = settings.catalog.get(first("smart")[0])
    assert smart is not None and smart.tier in ("complex", "reasoning")
    vision = first("vision")
    assert "acme/eyes" in vision
    assert all("vision" in settings.catalog.get(m).capabilities for m in vision)  # type: ignore[union-attr]
    free = first("free")
    assert free[0].startswith("opencode/") and "acme/gratis" in free
    assert all(m.startswith("opencode/") or m == "acme/gratis" for m in free)


def test_a_user_alias_replaces_a_builtin_one() -> None:
    settings = _aliases_settings()
    config = msgspec.to_builtins(settings.config)
    config["routing"]["aliases"] = {"smart": ["acme/eyes"]}
    settings = resolve(msgspec.convert(config, Config), env={})
    request = _ask("smart")
    assert [c.model for c in plan(request, classify(request), settings)] == ["acme/eyes"]


def test_the_fast_alias_orders_by_observed_time_to_first_token() -> None:
    from omnillm.bus.messages import LatencyStat

    settings = _aliases_settings()
    latency = {
        "acme/tiny": LatencyStat("acme", "acme/tiny", 900.0),
        "acme/brain": LatencyStat("acme", "acme/brain", 120.0),
    }
    request = _ask("fast")
    chain = [c.model for c in plan(request, classify(request), settings, latency=latency)]
    assert chain.index("acme/brain") < chain.index("acme/tiny")


def test_a_switch_puts_the_preferred_providers_models_first_unless_a_model_is_pinned() -> None:
    settings = _aliases_settings()
    request = _ask("auto")
    chain = plan(request, classify(request), settings, switch="acme")
    assert chain[0].provider == "acme"
    pinned = _ask("opencode/big-pickle")
    assert plan(pinned, classify(pinned), settings, switch="acme")[0].model == "opencode/big-pickle"


def test_the_route_names_what_was_skipped_and_why() -> None:
    from omnillm.actors.planner.actor import make_plan

    settings = _aliases_settings()
    image = {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}
    request = msgspec.convert(
        {"messages": [{"role": "user", "content": [{"type": "text", "text": "what?"}, image]}]},
        ChatRequest,
    )
    decision = make_plan(request, classify(request), settings)
    assert "acme/eyes" in [c.model for c in decision.candidates]
    assert "acme/brain" not in [c.model for c in decision.candidates]
    assert "acme/brain does not support vision" in decision.skipped


def test_estimated_cost_uses_the_ledgers_calibration_once_it_has_enough_answers() -> None:
    from omnillm.actors.planner.actor import make_plan
    from omnillm.bus.admin import Estimates, InputEstimate, OutputExpectation

    settings = _aliases_settings()
    request = _ask("acme/tiny")
    classified = classify(request)
    plain = make_plan(request, classified, settings).candidates[0].est_cost_usd
    learned = Estimates(
        providers={"acme": InputEstimate(factor=2.0, error=0.1, samples=50)},
        tiers={classified.tier: OutputExpectation(output_tokens=1000, samples=50)},
    )
    calibrated = make_plan(request, classified, settings, estimates=learned).candidates[0]
    expected = (classified.input_tokens * 2 * 0.1 + 1000 * 0.2) / 1e6
    assert calibrated.est_cost_usd == pytest.approx(expected, abs=1e-9)
    assert calibrated.est_cost_usd != plain
    thin = Estimates(providers={"acme": InputEstimate(factor=2.0, error=0.1, samples=3)})
    assert make_plan(request, classified, settings, estimates=thin).candidates[0].est_cost_usd == (
        pytest.approx(plain)
    )


def test_auto_routing_on_the_shipped_catalog_does_what_a_user_expects() -> None:
    settings = resolve(
        Config(), env={"OPENAI_API_KEY": "k", "ANTHROPIC_API_KEY": "k", "GEMINI_API_KEY": "k"}
    )

    def chain(request: ChatRequest) -> list[str]:
        return [c.model for c in plan(request, classify(request), settings)]

    def spec(model_id: str) -> Any:
        found = settings.catalog.get(model_id)
        assert found is not None
        return found

    greeting = chain(_say("hi!"))
    live = [m for m in settings.live_models() if m.tier == "simple"]
    cheapest = min(live, key=lambda m: m.price.input + m.price.output)
    assert spec(greeting[0]).price.input + spec(greeting[0]).price.output == (
        cheapest.price.input + cheapest.price.output
    )
    hard = chain(_say("Prove rigorously that there are infinitely many primes, step by step."))
    assert all(spec(m).tier == "reasoning" for m in hard)
    image = {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}
    seeing = msgspec.convert(
        {"messages": [{"role": "user", "content": [{"type": "text", "text": "what?"}, image]}]},
        ChatRequest,
    )
    assert chain(seeing) and all("vision" in spec(m).capabilities for m in chain(seeing))
    long = _say("summarise this: " + "word " * 150_000)  # ~190k estimated tokens
    fits = chain(long)
    assert fits and all(spec(m).context_window >= 150_000 for m in fits)


def _say(text: str) -> ChatRequest:
    return ChatRequest(model="auto", messages=[Message(role="user", content=text)])
