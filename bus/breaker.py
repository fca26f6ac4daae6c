"""A circuit breaker as a pure state machine: no clock, no I/O, state that fits in a KV value.

Every method takes ``now`` (Unix seconds) from the caller, so the same state gives the
same answer in any process and in tests. ``BreakerState`` is the whole state; a breaker
can be rebuilt from it anywhere (``CircuitBreaker(policy, state)``).

Phases::

    closed --(failures in a row, or failure rate over min_requests)--> open
    open --(cooldown_s passed)--> half_open: exactly one probe request may go
    half_open --(probe succeeds)--> closed, window cleared
    half_open --(probe fails)--> open, a fresh cooldown
    half_open --(probe silent for probe_timeout_s)--> another probe may go

What to record is the caller's decision, and the contract is: record only outcomes
that say something about the provider's health. Failures are 5xx (and 529), 429,
timeouts (connect, first byte, stall), connection errors and malformed or cut
streams. Successes are completed answers. Say nothing for what the caller got
wrong (400 context length or content policy, a cancelled request), and nothing for
401/403/404 either: a bad key or unknown model is marked in ``omni_health``, not
tripped here, since a probe would not heal it.
"""

from __future__ import annotations

from typing import Final, Literal

import msgspec
from msgspec import Struct

__all__ = ["WINDOW_CAP", "BreakerPolicy", "BreakerState", "CircuitBreaker", "Phase"]

Phase = Literal["closed", "open", "half_open"]

WINDOW_CAP: Final = 100
"""Most recent outcomes kept; the failure rate is over at most this many."""


class BreakerPolicy(Struct, frozen=True):
    failures: int = 5
    """Failures in a row (within ``window_s``) that open the breaker."""
    window_s: float = 30.0
    failure_rate: float = 0.5
    """Share of failures (within ``window_s``, at least ``min_requests`` outcomes) that opens."""
    min_requests: int = 10
    cooldown_s: float = 15.0
    """How long an open breaker refuses everything before it lets one probe through."""
    probe_timeout_s: float = 30.0
    """A probe with no outcome after this long is presumed lost; another may go."""

    def __post_init__(self) -> None:
        if not 1 <= self.failures <= WINDOW_CAP or not 1 <= self.min_requests <= WINDOW_CAP:
            raise ValueError(f"failures and min_requests must be within 1..{WINDOW_CAP}")
        if not 0 < self.failure_rate <= 1:
            raise ValueError("failure_rate must be within (0, 1]")
        if min(self.window_s, self.cooldown_s, self.probe_timeout_s) <= 0:
            raise ValueError("window_s, cooldown_s and probe_timeout_s must be positive")


class BreakerState(Struct, frozen=True, kw_only=True):
    """One breaker's whole state, as stored in KV; a fresh breaker is ``BreakerState()``."""

    state: Phase = "closed"
    """The stored phase; an ``open`` whose cooldown has passed is half-open in effect."""
    opened_at: float | None = None
    failures: int = 0
    """Every failure ever recorded here (a counter, never reset)."""
    successes: int = 0
    consecutive_failures: int = 0
    """Failures in a row within the window, as of the last record."""
    probe_started_at: float | None = None
    window: list[tuple[float, bool]] = msgspec.field(default_factory=list)
    """``(at, success)`` of recent outcomes while closed, oldest first, at most ``WINDOW_CAP``."""


def _trailing_failures(window: list[tuple[float, bool]]) -> int:
    count = 0
    for _, success in reversed(window):
        if success:
            break
        count += 1
    return count


class CircuitBreaker:
    """One breaker: a policy and the current ``BreakerState``, replaced on every change."""

    def __init__(self, policy: BreakerPolicy, state: BreakerState | None = None) -> None:
        self.policy = policy
        self.state = state or BreakerState()

    def phase(self, now: float) -> Phase:
        """The effective phase: an open breaker past its cooldown is ``half_open``."""
        s = self.state
        if s.state == "open" and now >= (s.opened_at or 0.0) + self.policy.cooldown_s:
            return "half_open"
        return s.state

    def probe_in_flight(self, now: float) -> bool:
        s = self.state
        return (
            s.state == "half_open"
            and s.probe_started_at is not None
            and now < s.probe_started_at + self.policy.probe_timeout_s
        )

    def blocked(self, now: float) -> bool:
        """No request may go now: open in cooldown, or half-open with its probe out."""
        phase = self.phase(now)
        return phase == "open" or (phase == "half_open" and self.probe_in_flight(now))

    def allows(self, now: float) -> bool:
        """May a request go now? In half-open this claims the probe (see ``try_acquire_probe``)."""
        return self.phase(now) == "closed" or self.try_acquire_probe(now)

    def try_acquire_probe(self, now: float) -> bool:
        """Claim the one half-open probe; False when closed, cooling down, or already claimed."""
        if self.phase(now) != "half_open" or self.probe_in_flight(now):
            return False
        self.state = msgspec.structs.replace(self.state, state="half_open", probe_started_at=now)
        return True

    def release_probe(self, started_at: float) -> None:
        """Give back a probe claimed at ``started_at`` that was never sent."""
        if self.state.state == "half_open" and self.state.probe_started_at == started_at:
            self.state = msgspec.structs.replace(self.state, probe_started_at=None)

    def record(self, success: bool, now: float) -> None:
        """Count one outcome (see the module docstring for which outcomes count).

        In half-open with a probe out, any outcome settles the probe: states carry no
        request ids, so a late answer to an older request can stand in for it.
        """
        s = self.state
        counted = msgspec.structs.replace(
            s, failures=s.failures + (not success), successes=s.successes + success
        )
        if s.state == "closed":
            self.state = self._closed_outcome(counted, success, now)
        elif s.state == "half_open" and s.probe_started_at is not None:
            self.state = self._probe_outcome(counted, success, now)
        else:  # a late answer to a request sent before the breaker opened
            self.state = counted

    def _closed_outcome(self, s: BreakerState, success: bool, now: float) -> BreakerState:
        since = now - self.policy.window_s
        window = [o for o in s.window if o[0] > since]
        window = [*window, (now, success)][-WINDOW_CAP:]
        trailing = _trailing_failures(window)
        if self._trips(window, trailing):
            return msgspec.structs.replace(
                s, state="open", opened_at=now, consecutive_failures=trailing, window=window
            )
        return msgspec.structs.replace(s, consecutive_failures=trailing, window=window)

    def _trips(self, window: list[tuple[float, bool]], trailing: int) -> bool:
        if trailing >= self.policy.failures:
            return True
        if len(window) < self.policy.min_requests:
            return False
        failed = sum(1 for _, success in window if not success)
        return failed / len(window) >= self.policy.failure_rate

    def _probe_outcome(self, s: BreakerState, success: bool, now: float) -> BreakerState:
        if success:
            return msgspec.structs.replace(
                s,
                state="closed",
                opened_at=None,
                probe_started_at=None,
                consecutive_failures=0,
                window=[],
            )
        return msgspec.structs.replace(
            s,
            state="open",
            opened_at=now,
            probe_started_at=None,
            consecutive_failures=s.consecutive_failures + 1,
        )
