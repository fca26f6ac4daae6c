"""Budgets against the real ledger: over a limit, requests are downgraded or refused."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import anyio
import pytest

from omnillm.actors.planner._budget import window_start
from omnillm.bus.messages import Start
from omnillm.costs import fetch_stats
from omnillm.embedded import EmbeddedNats
from omnillm.errors import BudgetExceeded
from omnillm.testing.mock_provider import MockProvider
from tests.conftest import SERVING, client_for, mock_settings, running

pytestmark = pytest.mark.anyio

HARD = "Prove that there are infinitely many primes, step by step, rigorously."


def budgeted(mock: MockProvider, tmp_path: Path, over: str) -> Any:
    return mock_settings(
        mock,
        ledger={"path": str(tmp_path / "ledger.sqlite")},
        routing={
            "strategy": "cost",
            "budget": {"daily_usd": 1e-9, "over": over, "refresh_s": 0.01},
        },
    )


async def spent_once(url: str) -> None:
    for _ in range(100):
        if (await fetch_stats(url)).requests >= 1:
            return
        await anyio.sleep(0.05)  # the ledger consumes on its own schedule; poll, bounded
    raise AssertionError("the ledger did not record the first request")


async def test_over_a_refusing_budget_the_next_request_is_refused_with_the_reason(
    nats_server: EmbeddedNats, mock_provider: MockProvider, tmp_path: Path
) -> None:
    settings = budgeted(mock_provider, tmp_path, "refuse")
    ask = {"messages": [{"role": "user", "content": "hello"}]}
    async with running(settings, nats_server.url, kinds=(*SERVING, "ledger")):
        async with client_for(nats_server.url) as client:
            first = await client.complete(ask)
            await spent_once(nats_server.url)
            await anyio.sleep(0.02)  # past the guard's refresh_s
            with pytest.raises(BudgetExceeded, match=r"the daily budget of \$1e-09 is spent"):
                await client.complete(ask)
    assert first.cost_usd > 0


async def test_over_a_downgrading_budget_a_hard_request_goes_to_the_cheapest_model(
    nats_server: EmbeddedNats, mock_provider: MockProvider, tmp_path: Path
) -> None:
    settings = budgeted(mock_provider, tmp_path, "downgrade")
    hard = {"messages": [{"role": "user", "content": HARD}]}
    async with running(settings, nats_server.url, kinds=(*SERVING, "ledger")):
        async with client_for(nats_server.url) as client:
            before = [f async for f in client.stream(hard)]
            await spent_once(nats_server.url)
            await anyio.sleep(0.02)
            after = [f async for f in client.stream(hard)]
    assert isinstance(before[0], Start) and before[0].model == "mock-large"
    assert isinstance(after[0], Start) and after[0].model == "mock-small"
    assert any("downgraded" in reason for reason in after[0].reasons)


def test_windows_start_at_utc_midnight_and_the_first_of_the_month() -> None:
    moment = 1_764_079_200.0  # 2025-11-25 14:00 UTC
    assert window_start("day", moment) == 1_764_028_800.0  # 2025-11-25 00:00 UTC
    assert window_start("month", moment) == 1_761_955_200.0  # 2025-11-01 00:00 UTC
    assert window_start("day", time.time()) <= time.time()
