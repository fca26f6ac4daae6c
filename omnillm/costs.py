"""``omni cost`` and ``omni stats``: what the ledger recorded, as tables or JSON.

The running ledger answers on ``omni.v1.admin.cost``, ``stats`` and ``estimates``
(:mod:`omnillm.bus.admin`). Unlike ``omni providers``, there is no local fallback: spend
lives only in the ledger, so with none answering the command says so (``NoLedger``).
"""

from __future__ import annotations

import contextlib
import datetime
import math
import re
import time
from typing import Final, TypeVar

from omnillm.bus import subjects
from omnillm.bus._login import redact
from omnillm.bus.admin import (
    CostQuery,
    CostRow,
    Estimates,
    Grouping,
    Query,
    SpendQuery,
    Stats,
    StatsQuery,
    ask,
)
from omnillm.bus.connection import Bus
from omnillm.errors import InvalidRequest, NoAnswer, NoRouter, RoutingError
from omnillm.listings import table

__all__ = [
    "InvalidSince",
    "NoLedger",
    "fetch_cost",
    "fetch_stats",
    "parse_since",
    "render_cost",
    "render_stats",
]

T = TypeVar("T")
_ASK_WAIT_S: Final = 5.0
"""Longer than an admin ask's default: the ledger answers from SQLite one call at a time,
so a query can wait behind a batch being written, and stats over a long history read
every row."""
_DURATION: Final = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])")
_UNIT_S: Final = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_COUNT_FIELDS: Final = (
    "attempts",
    "errors",
    "input_tokens",
    "cached_input_tokens",
    "cache_write_tokens",
    "output_tokens",
    "reasoning_tokens",
)


class NoLedger(RoutingError):
    """Nothing answers on ``omni.v1.admin.cost|stats``: no ledger runs."""

    code = "no_ledger"


class InvalidSince(InvalidRequest, ValueError):
    """A ``--since`` that is not a date, a duration or a unix time."""


def parse_since(text: str, *, now: float | None = None) -> float:
    """A unix time from ``2026-11-01`` (UTC midnight), ``2026-11-01T12:00`` (UTC unless
    it says), a duration back from now (``90s``, ``30m``, ``24h``, ``7d``, ``2w``), or a
    unix time (``1793491200``). Raises ``InvalidSince`` otherwise."""
    text = text.strip()
    now = time.time() if now is None else now
    if match := _DURATION.fullmatch(text):
        return now - float(match.group(1)) * _UNIT_S[match.group(2)]
    with contextlib.suppress(ValueError):
        if math.isfinite(unix := float(text)):
            return unix
    try:
        when = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise InvalidSince(
            f"--since {text!r}: expected a date (2026-11-01), a date and time "
            "(2026-11-01T12:00), a duration back from now (24h, 7d, 30m) or a unix time"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    return when.timestamp()


async def fetch_cost(
    url: str, by: Grouping = "provider", since: float | None = None
) -> list[CostRow]:
    """Spend per ``by`` since ``since`` (unix time; None: all time), from the ledger."""
    return await _ask(url, "cost", CostQuery(by=by, since=since), list[CostRow])


async def fetch_stats(url: str, since: float | None = None, reference: str | None = None) -> Stats:
    """The ledger's stats; ``reference`` (a catalog id) overrides its savings baseline."""
    return await _ask(url, "stats", StatsQuery(since=since, reference=reference), Stats)


async def _ask(url: str, what: str, query: Query, answer: type[T]) -> T:
    subject = subjects.admin(what)
    bus = await Bus.connect(url, name="omnillm-cli", connect_wait_s=1.0)  # NatsUnreachable
    try:
        return await ask(bus, subject, query, answer, wait_s=_ASK_WAIT_S)
    except (NoRouter, NoAnswer) as exc:
        raise NoLedger(
            f"no ledger answered on {subject} at {redact(url)}: is `omni up` running?"
        ) from exc
    finally:
        await bus.close()


def _usd(value: float | None) -> str | None:
    if value is None:
        return None
    return f"-${-value:,.4f}" if value < 0 else f"${value:,.4f}"


def _count(value: int) -> str:
    return f"{value:,}"


def render_cost(rows: list[CostRow], by: str = "provider") -> str:
    """One line per group, then the totals; ``by`` names the first column.

    The total line leaves requests out: a request that fell back to another provider
    or model counts in both groups.
    """
    if not rows:
        return "no usage recorded in this period"
    headers = (by, "requests", "attempts", "errors", "input", "cached", "cache write")
    lines = [_cost_line(row) for row in rows]
    sums = [sum(int(getattr(row, f)) for row in rows) for f in _COUNT_FIELDS]
    lines.append(("total", None, *map(_count, sums), _usd(sum(row.cost_usd for row in rows))))
    return table((*headers, "output", "reasoning", "cost"), lines)


def _cost_line(row: CostRow) -> tuple[str | None, ...]:
    counts = (int(getattr(row, f)) for f in _COUNT_FIELDS)
    return (row.group or "(none)", _count(row.requests), *map(_count, counts), _usd(row.cost_usd))


def _ms(value: float | None) -> str | None:
    return None if value is None else f"{value:,.0f} ms"


def _share(part: int, whole: int) -> str:
    return f"{part:,} ({part / whole:.1%})" if whole else f"{part:,}"


def _when(since: float | None) -> str:
    if since is None:
        return "all time"
    return datetime.datetime.fromtimestamp(since, datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")


def render_stats(stats: Stats) -> str:
    """A two-column table: what was asked, what it cost, what routing saved."""
    lines: list[tuple[str, str | None]] = [
        ("since", _when(stats.since)),
        ("requests", _count(stats.requests)),
        ("failed requests", _share(stats.errors, stats.requests)),
        ("fell back", _share(stats.fallbacks, stats.requests)),
        ("attempts", _count(stats.attempts)),
        ("failed attempts", _share(stats.failed_attempts, stats.attempts)),
        ("retries", _count(stats.retries)),
        ("ttft p50", _ms(stats.ttft_p50_ms)),
        ("ttft p95", _ms(stats.ttft_p95_ms)),
        ("input tokens", _count(stats.input_tokens)),
        ("cached input tokens", _count(stats.cached_input_tokens)),
        ("cache write tokens", _count(stats.cache_write_tokens)),
        ("output tokens", _count(stats.output_tokens)),
        ("reasoning tokens", _count(stats.reasoning_tokens)),
        ("cost", _usd(stats.cost_usd)),
    ]
    if stats.reference_model is not None:
        lines.append((f"cost on {stats.reference_model}", _usd(stats.reference_cost_usd)))
        lines.append(("saved", _usd(stats.savings_usd)))
    return table(("", ""), lines).split("\n", 1)[1]


async def fetch_estimates(url: str, since: float | None = None) -> Estimates:
    """How far the router's token estimates were from the providers' counts."""
    return await _ask(url, "estimates", SpendQuery(since=since), Estimates)


def render_estimates(estimates: Estimates) -> str:
    rows = [
        (provider, f"x{e.factor:.2f}", f"{e.error:.1%}", e.samples)
        for provider, e in sorted(estimates.providers.items())
    ]
    return table(("input estimate", "real/estimated", "mean error", "answers"), rows)
