"""The reliability policy table: what a caller does after each kind of failure."""

from __future__ import annotations

import random

import pytest

from omnillm.actors.caller.policy import POLICY, Action, Decision, RetryPolicy, backoff, decide

POLICY_DEFAULTS = RetryPolicy()


def after(
    code: str,
    *,
    tries: int = 1,
    since: float = 0.0,
    retry_after: float | None = None,
    streamed: bool = False,
    policy: RetryPolicy = POLICY_DEFAULTS,
    seed: int = 1,
) -> Decision:
    return decide(
        code,
        tries=tries,
        since_first_s=since,
        retry_after=retry_after,
        streamed=streamed,
        policy=policy,
        rng=random.Random(seed),
    )


@pytest.mark.parametrize(
    ("code", "action"),
    [
        ("rate_limited", Action.RETRY),
        ("provider_unavailable", Action.RETRY),
        ("overloaded", Action.RETRY),
        ("provider_timeout", Action.FALLBACK),
        ("malformed_response", Action.FALLBACK),
        ("context_length_exceeded", Action.LARGER_CONTEXT),
        ("content_policy", Action.TO_CLIENT),
        ("authentication_failed", Action.FALLBACK),
        ("free_tier_refused", Action.FALLBACK),
        ("model_not_found", Action.FALLBACK),
        ("bad_upstream_request", Action.FALLBACK),
        ("something_new", Action.FALLBACK),
    ],
)
def test_each_failure_gets_the_action_in_the_table(code: str, action: Action) -> None:
    assert after(code).action is action


def test_rejected_keys_and_unknown_models_are_marked() -> None:
    assert after("authentication_failed").mark == "provider"
    assert after("model_not_found").mark == "model"
    assert after("provider_unavailable").mark is None


def test_only_health_signals_count_against_the_breaker() -> None:
    assert {code for code, rule in POLICY.items() if rule.breaker} == {
        "rate_limited",
        "provider_unavailable",
        "overloaded",
        "provider_timeout",
        "malformed_response",
    }


def test_retry_after_is_honoured_up_to_the_cap() -> None:
    assert after("rate_limited", retry_after=1.5).delay_s == 1.5
    over = after("rate_limited", retry_after=30.0)
    assert over.action is Action.FALLBACK
    assert "Retry-After 30s is over 10s" in over.reason


def test_backoff_is_full_jitter_under_an_exponential_ceiling() -> None:
    rng = random.Random(7)
    draws = [backoff(3, POLICY_DEFAULTS, rng) for _ in range(2000)]
    assert 0.0 <= min(draws) < 0.1 and 1.9 < max(draws) <= 2.0  # ceiling 0.5 * 2**2
    assert max(backoff(10, POLICY_DEFAULTS, rng) for _ in range(200)) <= 8.0


def test_never_more_than_two_calls_in_the_first_second() -> None:
    for seed in range(200):
        second = after("provider_unavailable", tries=1, since=0.0, seed=seed)
        third = after("provider_unavailable", tries=2, since=second.delay_s, seed=seed)
        assert third.action is Action.RETRY
        assert second.delay_s + third.delay_s >= 1.0


def test_tries_are_bounded_then_the_request_falls_back() -> None:
    last = after("provider_unavailable", tries=3)
    assert last.action is Action.FALLBACK
    assert last.reason == "provider_unavailable after 3 tries"


def test_nothing_is_retried_once_tokens_reached_the_client() -> None:
    assert after("provider_unavailable", streamed=True).action is Action.FALLBACK
