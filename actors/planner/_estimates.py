"""What the ledger has learned about the router's guesses, for the cost estimator.

Every ``Usage`` event carries the router's tokenizer-free estimate of the prompt beside
the provider's own count, so the ledger can say, per provider, how far off the estimate
runs (a calibration factor and its error) and, per tier, how many output tokens answers
really take. The planner reads that every ``refresh_s`` and prices candidates with it
once enough answers back it; until then, and with no ledger, the defaults apply.
"""

from __future__ import annotations

import logging
import time
from typing import Final

from omnillm.bus import subjects
from omnillm.bus.admin import Estimates, SpendQuery, ask
from omnillm.bus.connection import Bus
from omnillm.errors import OmniLLMError

__all__ = ["MIN_SAMPLES", "EstimateSource"]

log = logging.getLogger("omnillm.estimates")

MIN_SAMPLES: Final = 20
"""Answers a figure needs behind it before it replaces the default."""
WINDOW_S: Final = 7 * 86400.0
"""Only the last week counts: models and prompts change."""
ASK_WAIT_S: Final = 1.0
"""Shorter than an admin ask's default: a client's request waits on this answer."""


class EstimateSource:
    def __init__(self, bus: Bus, *, refresh_s: float = 60.0) -> None:
        self.bus = bus
        self.refresh_s = refresh_s
        self._estimates = Estimates()
        self._read_at = -1e9

    async def current(self) -> Estimates:
        """The ledger's figures, at most ``refresh_s`` old (empty when none answers)."""
        if time.monotonic() - self._read_at < self.refresh_s:
            return self._estimates
        self._read_at = time.monotonic()
        query = SpendQuery(since=time.time() - WINDOW_S)
        try:
            self._estimates = await ask(
                self.bus, subjects.admin("estimates"), query, Estimates, wait_s=ASK_WAIT_S
            )
        except OmniLLMError as exc:  # none answers, too late, a Failure, a wrong answer
            log.debug("no estimates from a ledger: %r", exc)
        return self._estimates
