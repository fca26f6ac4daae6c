"""Budgets: daily and monthly spending limits, globally and per gateway key.

The spend comes from the ledger (``omni.v1.admin.spend``), read at most every
``max_age_s`` per window and key, so a busy planner asks the ledger a few times a
minute, not once a request. Over a limit the planner either downgrades the request
to the cheapest capable models or refuses it, as ``routing.budget.over`` says. With
no ledger answering, budgets cannot be checked: requests go through, with a warning.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import dataclass
from typing import Final, Literal

from omnillm.bus import subjects
from omnillm.bus.admin import Spend, SpendQuery, ask
from omnillm.bus.connection import Bus
from omnillm.config import Settings
from omnillm.errors import OmniLLMError

__all__ = ["BudgetGuard", "Verdict", "window_start"]

log = logging.getLogger("omnillm.budget")

ASK_WAIT_S: Final = 1.0
"""Shorter than an admin ask's default: a client's request waits on this answer."""

Window = Literal["day", "month"]


@dataclass(frozen=True, slots=True)
class Verdict:
    action: Literal["ok", "downgrade", "refuse"]
    reason: str = ""


def window_start(window: Window, now: float) -> float:
    """The start (UTC) of the day or month ``now`` falls in."""
    moment = dt.datetime.fromtimestamp(now, dt.UTC)
    start = moment.replace(hour=0, minute=0, second=0, microsecond=0)
    if window == "month":
        start = start.replace(day=1)
    return start.timestamp()


class BudgetGuard:
    def __init__(self, bus: Bus, settings: Settings) -> None:
        self.bus = bus
        self.settings = settings
        self.max_age_s = settings.config.routing.budget.refresh_s
        self._cache: dict[tuple[float, str | None], tuple[float, float]] = {}
        self._warned = False

    def _limits(self, key: str) -> list[tuple[Window, float, str | None]]:
        """(window, USD limit, key or None for everyone) for every limit that applies."""
        budget = self.settings.config.routing.budget
        limits: list[tuple[Window, float, str | None]] = []
        if budget.daily_usd is not None:
            limits.append(("day", budget.daily_usd, None))
        if budget.monthly_usd is not None:
            limits.append(("month", budget.monthly_usd, None))
        for gateway_key in self.settings.config.gateway.keys:
            if key and gateway_key.name == key:
                if gateway_key.daily_budget_usd is not None:
                    limits.append(("day", gateway_key.daily_budget_usd, key))
                if gateway_key.monthly_budget_usd is not None:
                    limits.append(("month", gateway_key.monthly_budget_usd, key))
        return limits

    async def check(self, key: str = "", now: float | None = None) -> Verdict:
        """Whether a request (from gateway key ``key``) is within every budget."""
        limits = self._limits(key)
        if not limits:
            return Verdict("ok")
        now = time.time() if now is None else now
        for window, limit, who in limits:
            spent = await self._spent(window_start(window, now), who)
            if spent is not None and spent >= limit:
                whose = f"key {who!r}'s" if who else "the"
                every = "daily" if window == "day" else "monthly"
                reason = f"{whose} {every} budget of ${limit:g} is spent (${spent:.4f})"
                return Verdict(self.settings.config.routing.budget.over, reason)
        return Verdict("ok")

    async def _spent(self, since: float, key: str | None) -> float | None:
        cached = self._cache.get((since, key))
        if cached is not None and time.monotonic() - cached[0] < self.max_age_s:
            return cached[1]
        query = SpendQuery(since=since, key=key)
        try:
            answer = await ask(self.bus, subjects.admin("spend"), query, Spend, wait_s=ASK_WAIT_S)
        except OmniLLMError as exc:  # none answers, too late, a Failure, a wrong answer
            if not self._warned:
                log.warning("budgets are not enforced: no ledger answered (%r)", exc)
                self._warned = True
            return None
        self._cache[(since, key)] = (time.monotonic(), answer.cost_usd)
        return answer.cost_usd
