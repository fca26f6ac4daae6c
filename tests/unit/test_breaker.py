"""The circuit breaker state machine: time is an argument, so every case is exact."""

from __future__ import annotations

import msgspec
import pytest

from omnillm.bus.breaker import WINDOW_CAP, BreakerPolicy, BreakerState, CircuitBreaker
from omnillm.bus.breakers import breaker_key, from_key_token, key_token, parse_breaker_key

POLICY = BreakerPolicy(
    failures=5, window_s=30, failure_rate=0.5, min_requests=10, cooldown_s=15, probe_timeout_s=30
)


def tripped(at: float = 100.0) -> CircuitBreaker:
    """A breaker opened at ``at`` by five failures in a row."""
    breaker = CircuitBreaker(POLICY)
    for i in range(5):
        breaker.record(False, at - 4 + i)
    assert breaker.phase(at) == "open"
    return breaker


def test_five_failures_in_a_row_open_the_breaker() -> None:
    breaker = CircuitBreaker(POLICY)
    for i in range(4):
        breaker.record(False, float(i))
    assert breaker.allows(4.0)
    breaker.record(False, 4.0)
    assert breaker.state.state == "open"
    assert breaker.state.opened_at == 4.0
    assert not breaker.allows(5.0)


def test_a_success_breaks_the_run_of_failures() -> None:
    breaker = CircuitBreaker(POLICY)
    for outcome in [False] * 4 + [True] + [False] * 4:
        breaker.record(outcome, 1.0)
    assert breaker.phase(1.0) == "closed"
    assert breaker.state.consecutive_failures == 4


def test_failure_rate_opens_once_min_requests_are_in() -> None:
    breaker = CircuitBreaker(POLICY)
    for i in range(10):  # F S F S ...: never two failures in a row, half of them failed
        breaker.record(i % 2 == 1, float(i))
    assert breaker.state.state == "open"
    assert breaker.state.consecutive_failures == 0


def test_failure_rate_below_min_requests_keeps_it_closed() -> None:
    breaker = CircuitBreaker(POLICY)
    for i in range(9):  # 5 of 9 failed, but 9 < min_requests
        breaker.record(i % 2 == 1, float(i))
    assert breaker.phase(9.0) == "closed"
    assert breaker.allows(9.0)


def test_failure_rate_under_the_threshold_keeps_it_closed() -> None:
    breaker = CircuitBreaker(POLICY)
    for i in range(20):  # 4 failures in 20
        breaker.record(i % 5 != 0, float(i))
    assert breaker.phase(20.0) == "closed"


def test_failures_spread_beyond_the_window_do_not_add_up() -> None:
    breaker = CircuitBreaker(POLICY)
    for i in range(10):
        breaker.record(False, i * 31.0)  # each older than window_s by the next one
    assert breaker.phase(400.0) == "closed"
    assert breaker.state.consecutive_failures == 1
    assert len(breaker.state.window) == 1


def test_the_window_slides_out_old_failures() -> None:
    breaker = CircuitBreaker(POLICY)
    for _ in range(4):
        breaker.record(False, 0.0)
    breaker.record(False, 31.0)  # the first four slid out
    assert breaker.phase(31.0) == "closed"
    assert breaker.state.window == [(31.0, False)]


def test_the_window_keeps_at_most_the_cap() -> None:
    breaker = CircuitBreaker(POLICY)
    for i in range(WINDOW_CAP + 50):
        breaker.record(True, i * 0.01)
    assert len(breaker.state.window) == WINDOW_CAP
    assert breaker.state.successes == WINDOW_CAP + 50


def test_open_refuses_until_the_cooldown_then_is_half_open() -> None:
    breaker = tripped(at=100.0)
    assert not breaker.allows(114.9)
    assert breaker.phase(114.9) == "open"
    assert breaker.phase(115.0) == "half_open"


def test_half_open_lets_exactly_one_probe_through() -> None:
    breaker = tripped(at=100.0)
    assert breaker.try_acquire_probe(115.0)
    assert not breaker.try_acquire_probe(115.0)
    assert not breaker.allows(120.0)
    assert breaker.state.probe_started_at == 115.0


def test_allows_in_half_open_is_the_probe_claim() -> None:
    breaker = tripped(at=100.0)
    assert breaker.allows(116.0)
    assert not breaker.allows(116.0)


def test_probe_success_closes_and_clears_the_window() -> None:
    breaker = tripped(at=100.0)
    assert breaker.try_acquire_probe(115.0)
    breaker.record(True, 116.0)
    assert breaker.state.state == "closed"
    assert breaker.state.window == []
    assert breaker.state.opened_at is None
    assert breaker.allows(116.0)
    for _ in range(4):  # a fresh start: four failures do not reopen it
        breaker.record(False, 117.0)
    assert breaker.phase(117.0) == "closed"


def test_probe_failure_reopens_with_a_fresh_cooldown() -> None:
    breaker = tripped(at=100.0)
    assert breaker.try_acquire_probe(115.0)
    breaker.record(False, 117.0)
    assert breaker.state.state == "open"
    assert breaker.state.opened_at == 117.0
    assert not breaker.allows(131.0)
    assert breaker.try_acquire_probe(132.0)


def test_a_lost_probe_lets_another_go_after_the_probe_timeout() -> None:
    breaker = tripped(at=100.0)
    assert breaker.try_acquire_probe(115.0)
    assert not breaker.try_acquire_probe(144.9)
    assert breaker.try_acquire_probe(145.0)
    assert not breaker.try_acquire_probe(145.0)


def test_a_released_probe_can_be_claimed_again() -> None:
    breaker = tripped(at=100.0)
    assert breaker.try_acquire_probe(115.0)
    breaker.release_probe(115.0)
    assert breaker.try_acquire_probe(115.5)


def test_late_outcomes_while_open_are_counted_but_change_nothing() -> None:
    breaker = tripped(at=100.0)
    breaker.record(True, 101.0)
    breaker.record(False, 102.0)
    assert breaker.state.state == "open"
    assert breaker.state.opened_at == 100.0
    assert (breaker.state.failures, breaker.state.successes) == (6, 1)


def test_no_probe_while_closed() -> None:
    breaker = CircuitBreaker(POLICY)
    assert not breaker.try_acquire_probe(0.0)
    assert breaker.allows(0.0)


def test_state_round_trips_through_json_and_rebuilds_the_breaker() -> None:
    breaker = tripped(at=100.0)
    assert breaker.try_acquire_probe(115.0)
    wire = msgspec.json.encode(breaker.state)
    again = CircuitBreaker(POLICY, msgspec.json.decode(wire, type=BreakerState))
    assert again.state == breaker.state
    assert not again.try_acquire_probe(116.0)
    again.record(True, 117.0)
    assert again.phase(117.0) == "closed"


def test_a_fresh_state_is_small() -> None:
    assert len(msgspec.json.encode(BreakerState())) < 200


@pytest.mark.parametrize(
    "bad",
    [
        {"failures": 0},
        {"failures": WINDOW_CAP + 1},
        {"min_requests": WINDOW_CAP + 1},
        {"failure_rate": 0},
        {"failure_rate": 1.5},
        {"cooldown_s": 0},
    ],
)
def test_policy_rejects_impossible_settings(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        BreakerPolicy(**bad)  # type: ignore[arg-type]


# --- key tokens (pure; they live in bus/breakers.py) --------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "openrouter/openai/gpt-5.2:free",
        "anthropic/claude-sonnet-4.5",
        "a_b",
        "gemini/models/gemini-2.5-pro@latest",
        "odd id/with spaces+plus=eq",
        "ünïcode/模型",
    ],
)
def test_key_token_round_trips_and_is_one_kv_token(text: str) -> None:
    token = key_token(text)
    assert from_key_token(token) == text
    assert all(c.isascii() and (c.isalnum() or c in "-_") for c in token)


def test_key_token_keeps_plain_names_readable() -> None:
    assert key_token("openai") == "openai"
    assert key_token("openrouter/openai/gpt-5.2:free") == "openrouter_2Fopenai_2Fgpt-5_2E2_3Afree"


@pytest.mark.parametrize("token", ["", "a.b", "_2", "_2f", "_41", "_C3", "a b"])
def test_from_key_token_rejects_what_key_token_never_makes(token: str) -> None:
    with pytest.raises(ValueError):
        from_key_token(token)


def test_breaker_keys_parse_back() -> None:
    model = "openrouter/openai/gpt-5.2:free"
    assert breaker_key("openrouter") == "breaker.openrouter"
    assert parse_breaker_key(breaker_key("openrouter", model)) == ("openrouter", model)
    assert parse_breaker_key("breaker.openrouter") == ("openrouter", None)
    with pytest.raises(ValueError):
        parse_breaker_key("provider.openrouter")
