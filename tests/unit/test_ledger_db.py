"""The ledger's SQLite store: every attempt once, a request counted once, money to the cent."""

from __future__ import annotations

import datetime
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from omnillm.actors.ledger.store import LedgerStore, nearest_rank
from omnillm.bus.admin import GROUPINGS
from omnillm.bus.messages import TokenUsage, Usage
from omnillm.costs import InvalidSince, parse_since, render_cost, render_stats
from omnillm.providers.catalog import ModelSpec, cost_usd, load_builtin_catalog

DAY_1 = datetime.datetime(2026, 11, 1, 9, 30, tzinfo=datetime.UTC).timestamp()
DAY_2 = datetime.datetime(2026, 11, 2, 23, 59, tzinfo=datetime.UTC).timestamp()


def spec(model_id: str) -> ModelSpec:
    found = load_builtin_catalog().get(model_id)
    assert found is not None, model_id
    return found


def priced(
    rid: str,
    model_id: str,
    tokens: TokenUsage,
    *,
    attempt: int = 1,
    outcome: str = "ok",
    ttft_ms: float | None = 100.0,
    **fields: str,
) -> Usage:
    """A usage event as a caller sends it: the cost comes from the catalog."""
    model = spec(model_id)
    return Usage(
        rid=rid,
        attempt=attempt,
        provider=model.provider,
        model=model.id,
        outcome=outcome,  # type: ignore[arg-type]
        tokens=tokens,
        cost_usd=round(cost_usd(model, tokens), 10),
        latency_ms=900.0,
        ttft_ms=ttft_ms,
        tier=fields.get("tier", "medium"),
        key=fields.get("key", ""),
    )


# OpenAI: 12,000 prompt tokens of which 8,000 were read from the cache; 3,000 output
# tokens of which 2,000 were reasoning (inside output_tokens, billed as output).
# gpt-5.4-mini: 4,000 x $0.75/M + 8,000 x $0.075/M + 3,000 x $4.50/M
#             = $0.0030 + $0.0006 + $0.0135 = $0.0171
OPENAI = TokenUsage(
    input_tokens=12_000, cached_input_tokens=8_000, output_tokens=3_000, reasoning_tokens=2_000
)
OPENAI_USD = 0.0171
# Anthropic: 10,000 prompt tokens: 2,000 cache reads, 6,000 cache writes, 2,000 plain; 500 out.
# claude-sonnet-4-6: 2,000 x $3 + 2,000 x $0.30 + 6,000 x $3.75 + 500 x $15 (per M)
#                  = $0.006 + $0.0006 + $0.0225 + $0.0075 = $0.0366
ANTHROPIC = TokenUsage(
    input_tokens=10_000, cached_input_tokens=2_000, cache_write_tokens=6_000, output_tokens=500
)
ANTHROPIC_USD = 0.0366
# Google, a long prompt: gemini-2.5-flash 300,000 x $0.30 + 1,000 x $2.50 (per M) = $0.0925
LONG = TokenUsage(input_tokens=300_000, output_tokens=1_000)
LONG_USD = 0.0925


@pytest.fixture
def store(tmp_path: Path) -> Iterator[LedgerStore]:
    opened = LedgerStore(tmp_path / "ledger" / "ledger.sqlite")
    yield opened
    opened.close()


def three_requests() -> list[tuple[Usage, float]]:
    """A: openai fails, anthropic answers (a fallback). B: openai answers. C: google fails."""
    return [
        (priced("A", "openai/gpt-5.4-mini", TokenUsage(), outcome="error", ttft_ms=None), DAY_1),
        (priced("A", "anthropic/claude-sonnet-4-6", ANTHROPIC, attempt=2, key="team-a"), DAY_1),
        (priced("B", "openai/gpt-5.4-mini", OPENAI, key="team-b", tier="complex"), DAY_2),
        (priced("C", "google/gemini-2.5-flash", LONG, outcome="error", ttft_ms=None), DAY_2),
    ]


def test_the_catalog_prices_real_shaped_usage_to_the_cent() -> None:
    assert cost_usd(spec("openai/gpt-5.4-mini"), OPENAI) == pytest.approx(OPENAI_USD, abs=1e-12)
    claude = spec("anthropic/claude-sonnet-4-6")
    assert cost_usd(claude, ANTHROPIC) == pytest.approx(ANTHROPIC_USD, abs=1e-12)
    assert cost_usd(spec("google/gemini-2.5-flash"), LONG) == pytest.approx(LONG_USD, abs=1e-12)


def test_the_file_holds_one_usage_row_per_attempt_and_a_requests_view(
    store: LedgerStore,
) -> None:
    assert store.record(three_requests()) == 4
    db = sqlite3.connect(store.path)
    columns = [row[1] for row in db.execute("PRAGMA table_info(usage)")]
    assert columns[:4] == ["event_id", "rid", "attempt", "at"]
    assert {"day", "fallback", "ttft_ms", "reasoning_tokens", "cost_usd"} <= set(columns)
    assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    rows = db.execute("SELECT event_id, day, fallback FROM usage ORDER BY event_id").fetchall()
    assert rows == [
        ("A.1", "2026-11-01", 0),
        ("A.2", "2026-11-01", 1),
        ("B.1", "2026-11-02", 0),
        ("C.1", "2026-11-02", 0),
    ]
    view = db.execute("SELECT rid, attempts, ok, fell_back FROM requests ORDER BY rid").fetchall()
    assert view == [("A", 2, 1, 1), ("B", 1, 1, 0), ("C", 1, 0, 0)]
    db.close()


def test_a_redelivered_batch_is_never_counted_twice(store: LedgerStore) -> None:
    batch = three_requests()
    assert store.record(batch) == 4
    assert store.record(batch) == 0
    assert store.record(batch[1:3]) == 0
    total = ANTHROPIC_USD + OPENAI_USD + LONG_USD
    assert store.totals_since(None) == pytest.approx(total, abs=1e-12)
    assert store.stats().attempts == 4


def test_a_batch_that_fails_writes_nothing(store: LedgerStore) -> None:
    batch = three_requests()
    broken = Usage(rid="D", attempt=1, provider="x", model="x/y", outcome="ok")
    broken.tier = object()  # type: ignore[assignment]  # sqlite cannot bind it
    with pytest.raises(sqlite3.Error):
        store.record([*batch, (broken, DAY_1)])
    assert store.stats().attempts == 0
    assert store.record(batch) == 4


def test_cost_by_provider_counts_requests_attempts_and_failed_attempts(
    store: LedgerStore,
) -> None:
    store.record(three_requests())
    rows = {row.group: row for row in store.cost("provider")}
    assert [row.group for row in store.cost("provider")] == ["google", "anthropic", "openai"]
    openai = rows["openai"]
    assert (openai.requests, openai.attempts, openai.errors) == (2, 2, 1)
    assert (openai.input_tokens, openai.cached_input_tokens) == (12_000, 8_000)
    assert (openai.output_tokens, openai.reasoning_tokens) == (3_000, 2_000)
    assert round(openai.cost_usd, 4) == OPENAI_USD
    assert rows["anthropic"].cache_write_tokens == 6_000
    assert round(rows["anthropic"].cost_usd, 4) == ANTHROPIC_USD
    assert (rows["google"].errors, round(rows["google"].cost_usd, 4)) == (1, LONG_USD)


def test_cost_by_model_day_key_and_tier(store: LedgerStore) -> None:
    store.record(three_requests())
    by_model = {row.group: round(row.cost_usd, 4) for row in store.cost("model")}
    assert by_model == {
        "google/gemini-2.5-flash": LONG_USD,
        "anthropic/claude-sonnet-4-6": ANTHROPIC_USD,
        "openai/gpt-5.4-mini": OPENAI_USD,
    }
    by_day = [(row.group, row.requests, round(row.cost_usd, 4)) for row in store.cost("day")]
    assert by_day == [
        ("2026-11-01", 1, ANTHROPIC_USD),
        ("2026-11-02", 2, round(OPENAI_USD + LONG_USD, 4)),
    ]
    by_key = {row.group: row.requests for row in store.cost("key")}
    assert by_key == {"": 2, "team-a": 1, "team-b": 1}
    by_tier = {row.group: row.attempts for row in store.cost("tier")}
    assert by_tier == {"medium": 3, "complex": 1}
    assert set(GROUPINGS) == {"provider", "model", "day", "key", "tier"}


def test_a_model_without_its_provider_prefix_is_named_provider_slash_model(
    store: LedgerStore,
) -> None:
    event = Usage(rid="R", attempt=1, provider="azure", model="gpt-4.1", outcome="ok")
    store.record([(event, DAY_1)])
    assert [row.group for row in store.cost("model")] == ["azure/gpt-4.1"]


def test_an_unknown_grouping_is_refused_with_the_choices(store: LedgerStore) -> None:
    with pytest.raises(ValueError, match="provider, model, day, key, tier"):
        store.cost("user")  # type: ignore[arg-type]


def test_since_keeps_only_later_events(store: LedgerStore) -> None:
    store.record(three_requests())
    later = [row.group for row in store.cost("provider", since=DAY_2)]
    assert sorted(later) == ["google", "openai"]
    assert store.totals_since(DAY_2) == pytest.approx(OPENAI_USD + LONG_USD, abs=1e-12)
    assert store.totals_since(DAY_2 + 1) == 0.0
    assert store.stats(since=DAY_2).requests == 2


def test_totals_since_for_one_key_is_that_keys_spend(store: LedgerStore) -> None:
    store.record(three_requests())
    assert store.totals_since(None, key="team-b") == pytest.approx(OPENAI_USD, abs=1e-12)
    assert store.totals_since(DAY_2, key="team-a") == 0.0
    assert store.totals_since(None, key="nobody") == 0.0


def test_stats_count_each_request_once(store: LedgerStore) -> None:
    store.record(three_requests())
    stats = store.stats()
    assert (stats.requests, stats.errors, stats.fallbacks) == (3, 1, 1)
    assert (stats.attempts, stats.failed_attempts, stats.retries) == (4, 2, 0)
    assert stats.input_tokens == 12_000 + 10_000 + 300_000
    assert stats.reasoning_tokens == 2_000
    assert round(stats.cost_usd, 4) == round(OPENAI_USD + ANTHROPIC_USD + LONG_USD, 4) == 0.1462
    assert stats.reference_model is None and stats.savings_usd is None


def test_ttft_percentiles_are_nearest_rank_over_successful_attempts(store: LedgerStore) -> None:
    answered = [
        (priced(f"r{ms}", "openai/gpt-4o-mini", TokenUsage(), ttft_ms=float(ms)), DAY_1)
        for ms in range(100, 0, -1)
    ]
    failed = priced("x", "openai/gpt-4o-mini", TokenUsage(), outcome="error", ttft_ms=5000.0)
    store.record([*answered, (failed, DAY_1)])
    stats = store.stats()
    assert (stats.ttft_p50_ms, stats.ttft_p95_ms) == (50.0, 95.0)
    assert [nearest_rank(1, 0.95), nearest_rank(20, 0.5), nearest_rank(20, 0.95)] == [0, 9, 18]


def test_an_empty_ledger_has_no_percentiles_and_costs_nothing(store: LedgerStore) -> None:
    stats = store.stats(reference=spec("openai/gpt-5.5"))
    assert (stats.requests, stats.ttft_p50_ms, stats.ttft_p95_ms) == (0, None, None)
    assert (stats.cost_usd, stats.reference_cost_usd, stats.savings_usd) == (0.0, 0.0, 0.0)
    assert store.cost("provider") == []


def test_savings_price_the_same_tokens_on_the_reference_model(store: LedgerStore) -> None:
    store.record(three_requests())
    stats = store.stats(reference=spec("openai/gpt-5.5"))
    # gpt-5.5, per million: $5 in, $0.50 cached, $30 out; no cache-write price, so writes
    # bill as input; prompts over 272,000 tokens: $10 in, $45 out for the whole request.
    # OpenAI row:    4,000 x 5 + 8,000 x 0.5 + 3,000 x 30        = 114,000 -> $0.1140
    # Anthropic row: 2,000 x 5 + 2,000 x 0.5 + 6,000 x 5 + 500 x 30 = 56,000 -> $0.0560
    # Long row:      300,000 x 10 + 1,000 x 45                  = 3,045,000 -> $3.0450
    # Together $3.2150 on gpt-5.5, against $0.1462 paid: $3.0688 saved.
    assert stats.reference_model == "openai/gpt-5.5"
    assert stats.reference_cost_usd == pytest.approx(3.2150, abs=1e-9)
    assert stats.savings_usd == pytest.approx(3.0688, abs=1e-9)


def test_routing_to_a_dearer_model_shows_negative_savings(store: LedgerStore) -> None:
    store.record([(priced("B", "openai/gpt-5.4-mini", OPENAI), DAY_1)])
    stats = store.stats(reference=spec("openai/gpt-4o-mini"))
    # gpt-4o-mini: 4,000 x 0.15 + 8,000 x 0.075 + 3,000 x 0.6 = 3,000 -> $0.0030
    assert stats.reference_cost_usd == pytest.approx(0.0030, abs=1e-12)
    assert stats.savings_usd == pytest.approx(0.0030 - OPENAI_USD, abs=1e-12)


def test_two_stores_on_one_file_share_it(tmp_path: Path) -> None:
    path = tmp_path / "shared.sqlite"
    one, two = LedgerStore(path), LedgerStore(path)
    batch = three_requests()
    assert one.record(batch[:2]) == 2
    assert two.record(batch) == 2
    assert one.stats().attempts == two.stats().attempts == 4
    one.close()
    two.close()


# --- what `omni cost` and `omni stats` print (omnillm.costs) ---------------------------

NOW = datetime.datetime(2026, 11, 8, tzinfo=datetime.UTC).timestamp()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-01", NOW - 7 * 86400),
        ("2026-11-07T12:00", NOW - 12 * 3600),
        ("2026-11-07T14:00+02:00", NOW - 12 * 3600),
        ("24h", NOW - 86400),
        ("7d", NOW - 7 * 86400),
        ("30m", NOW - 1800),
        ("1.5h", NOW - 5400),
        ("1793491200", 1793491200.0),
    ],
)
def test_since_takes_dates_durations_and_unix_times(text: str, expected: float) -> None:
    assert parse_since(text, now=NOW) == expected


@pytest.mark.parametrize("text", ["yesterday", "7 days", "-3d", "nan", "", "2026-13-01"])
def test_a_bad_since_says_what_is_expected(text: str) -> None:
    with pytest.raises(InvalidSince, match=r"expected a date \(2026-11-01\).*24h, 7d"):
        parse_since(text, now=NOW)


def test_the_cost_table_has_a_line_per_group_and_the_totals(store: LedgerStore) -> None:
    store.record(three_requests())
    lines = render_cost(store.cost("key"), "key").splitlines()
    assert lines[0].split() == [
        "key", "requests", "attempts", "errors", "input", "cached", "cache", "write",
        "output", "reasoning", "cost",
    ]  # fmt: skip
    none = ["(none)", "2", "2", "2", "300,000", "0", "0", "1,000", "0", "$0.0925"]
    totals = ["total", "-", "4", "2", "322,000", "10,000", "6,000", "4,500", "2,000", "$0.1462"]
    assert (lines[1].split(), lines[-1].split()) == (none, totals)
    assert render_cost([], "key") == "no usage recorded in this period"


def test_the_stats_table_shows_shares_percentiles_and_savings(store: LedgerStore) -> None:
    store.record(three_requests())
    text = render_stats(store.stats(since=DAY_1, reference=spec("openai/gpt-5.5")))
    rows = dict(line.split("  ", 1) for line in text.splitlines())
    values = {name: value.strip() for name, value in rows.items()}
    assert values["since"] == "2026-11-01 09:30 UTC"
    assert values["failed requests"] == "1 (33.3%)"
    assert values["ttft p95"] == "100 ms"
    assert values["cost"] == "$0.1462"
    assert values["cost on openai/gpt-5.5"] == "$3.2150"
    assert values["saved"] == "$3.0688"


def test_estimates_calibrate_the_input_guess_per_provider_and_learn_output_per_tier() -> None:
    from omnillm.actors.ledger.store import LedgerStore as Store

    store = Store(":memory:")
    rows = []
    for i in range(4):
        usage = Usage(
            f"e{i}",
            1,
            "openai",
            "openai/gpt-4.1-mini",
            "ok",
            tier="simple",
            tokens=TokenUsage(input_tokens=120, output_tokens=100 + 20 * i),
        )
        usage.est_input_tokens = 100  # the router guessed 100; the provider counted 120
        rows.append((usage, 1000.0 + i))
    failed = Usage("e9", 1, "openai", "openai/gpt-4.1-mini", "error", tier="simple")
    failed.est_input_tokens = 100
    rows.append((failed, 1010.0))
    store.record(rows)
    found = store.estimates()
    assert found.providers["openai"].factor == 1.2
    assert found.providers["openai"].error == pytest.approx(20 / 120, abs=1e-4)
    assert found.providers["openai"].samples == 4  # the failed attempt says nothing
    assert (found.tiers["simple"].output_tokens, found.tiers["simple"].samples) == (130, 4)
