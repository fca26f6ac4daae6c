"""The ledger's store: one SQLite row per attempt, queries that count a request once.

The schema is plain SQL, so a server database can take SQLite's place when one
machine is outgrown (``INSERT OR IGNORE`` is ``INSERT ... ON CONFLICT DO NOTHING``
there)::

    CREATE TABLE usage (
        event_id            TEXT PRIMARY KEY,   -- '<rid>.<attempt>.<run>', the Nats-Msg-Id
        rid                 TEXT NOT NULL,      -- the request
        attempt             INTEGER NOT NULL,   -- 1, then +1 per fallback or continuation
        at                  REAL NOT NULL,      -- unix time the stream stored the event
        day                 TEXT NOT NULL,      -- 'YYYY-MM-DD' of at, in UTC
        provider            TEXT NOT NULL,
        model               TEXT NOT NULL,
        tier                TEXT NOT NULL,      -- '' when the request was not classified
        key                 TEXT NOT NULL,      -- the gateway key's name, '' for none
        outcome             TEXT NOT NULL,      -- 'ok' or 'error'
        tries               INTEGER NOT NULL,   -- upstream calls within the attempt (>= 1)
        input_tokens        INTEGER NOT NULL,   -- cached and cache-write tokens included
        cached_input_tokens INTEGER NOT NULL,
        cache_write_tokens  INTEGER NOT NULL,
        output_tokens       INTEGER NOT NULL,   -- reasoning tokens included
        reasoning_tokens    INTEGER NOT NULL,
        cost_usd            REAL NOT NULL,
        latency_ms          REAL NOT NULL,
        ttft_ms             REAL,               -- NULL when no token arrived
        fallback            INTEGER NOT NULL,   -- 1 when attempt > 1
        est_input_tokens    INTEGER NOT NULL    -- the router's estimate of input_tokens
    );
    CREATE INDEX usage_at ON usage (at);
    CREATE INDEX usage_rid ON usage (rid);
    CREATE VIEW requests AS ...                 -- one row per rid (see REQUESTS_VIEW)

Counting:

- an *attempt* is a row; a *request* is a distinct ``rid``. A request failed when
  none of its attempts succeeded, and fell back when it has more than one attempt;
- ``cost`` sums every attempt: a failed attempt's tokens were billed too;
- retries are upstream calls beyond the first within an attempt (``tries - 1``);
- time to first token is over successful attempts (the provider's, not the client's);
- savings are what the same token counts would have cost on a reference model,
  minus what they cost.

One writer transaction per batch, ``INSERT OR IGNORE`` on ``event_id``: a redelivered
event is never counted twice. WAL mode, so queries never wait for a batch, and two
ledger processes sharing the file take turns (``busy_timeout``). Connections are
thread-safe here (one lock), so the actor runs every call in a worker thread.

Queries answer in the admin wire types (``CostRow``, ``Stats``, ``Estimates``, in
:mod:`omnillm.bus.admin`), which the ledger sends as they are.
"""

from __future__ import annotations

import datetime
import functools
import itertools
import math
import sqlite3
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Final

import msgspec

from omnillm.bus.admin import (
    GROUPINGS,
    CostRow,
    Estimates,
    Grouping,
    InputEstimate,
    OutputExpectation,
    Stats,
)
from omnillm.bus.messages import TokenUsage, Usage
from omnillm.bus.usage import event_id
from omnillm.providers.catalog import ModelSpec, cost_usd, rates_for

__all__ = ["LedgerStore", "nearest_rank"]

BUSY_TIMEOUT_S: Final = 10.0
_ALL_TIME: Final = float("-inf")
_NO_THRESHOLD: Final = 2**62

SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS usage (
    event_id            TEXT PRIMARY KEY,
    rid                 TEXT NOT NULL,
    attempt             INTEGER NOT NULL,
    at                  REAL NOT NULL,
    day                 TEXT NOT NULL,
    provider            TEXT NOT NULL,
    model               TEXT NOT NULL,
    tier                TEXT NOT NULL,
    key                 TEXT NOT NULL,
    outcome             TEXT NOT NULL,
    tries               INTEGER NOT NULL DEFAULT 1,
    input_tokens        INTEGER NOT NULL,
    cached_input_tokens INTEGER NOT NULL,
    cache_write_tokens  INTEGER NOT NULL,
    output_tokens       INTEGER NOT NULL,
    reasoning_tokens    INTEGER NOT NULL,
    cost_usd            REAL NOT NULL,
    latency_ms          REAL NOT NULL,
    ttft_ms             REAL,
    fallback            INTEGER NOT NULL,
    est_input_tokens    INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS usage_at ON usage (at);
CREATE INDEX IF NOT EXISTS usage_rid ON usage (rid);
"""

REQUESTS_VIEW: Final = """
CREATE VIEW IF NOT EXISTS requests AS
SELECT rid,
       MIN(at)                  AS at,
       COUNT(*)                 AS attempts,
       MAX(outcome = 'ok')      AS ok,
       MAX(fallback)            AS fell_back,
       SUM(tries - 1)           AS retries,
       SUM(input_tokens)        AS input_tokens,
       SUM(output_tokens)       AS output_tokens,
       SUM(cost_usd)            AS cost_usd
FROM usage GROUP BY rid
"""

_COLUMNS: Final = (
    "event_id", "rid", "attempt", "at", "day", "provider", "model", "tier", "key", "outcome",
    "tries", "input_tokens", "cached_input_tokens", "cache_write_tokens", "output_tokens",
    "reasoning_tokens", "cost_usd", "latency_ms", "ttft_ms", "fallback", "est_input_tokens",
)  # fmt: skip
ROWS_PER_INSERT: Final = 50
"""Rows per ``INSERT`` statement. ``executemany`` steps once per row, releasing Python's
lock for the step and taking it back after; in the ledger's worker thread, beside an
event loop that always wants the lock, every handoff is a pair of context switches.
Measured at 32 streams through the gateway, that made ``omni up`` spend 10% more CPU
than writing on the event loop itself; one statement per 50 rows (1050 parameters, far
under SQLite's 32766) hands the lock over twice per 50 rows, and the difference is
within the benchmark's noise."""


@functools.cache
def _insert(rows: int) -> str:
    """``INSERT OR IGNORE`` of ``rows`` rows, positional parameters in ``_COLUMNS`` order."""
    row = f"({', '.join('?' * len(_COLUMNS))})"
    return f"INSERT OR IGNORE INTO usage ({', '.join(_COLUMNS)}) VALUES {', '.join([row] * rows)}"


_SUMS: Final = """
    COALESCE(SUM(input_tokens), 0), COALESCE(SUM(cached_input_tokens), 0),
    COALESCE(SUM(cache_write_tokens), 0), COALESCE(SUM(output_tokens), 0),
    COALESCE(SUM(reasoning_tokens), 0), TOTAL(cost_usd)
"""

_GROUP_COLUMNS: Final[dict[str, str]] = {
    "provider": "provider",
    "model": "provider, model",
    "day": "day",
    "key": "key",
    "tier": "tier",
}


def nearest_rank(count: int, fraction: float) -> int:
    """The 0-based index of the ``fraction`` percentile among ``count`` sorted values."""
    return max(math.ceil(fraction * count) - 1, 0)


def _day(at: float) -> str:
    return datetime.datetime.fromtimestamp(at, datetime.UTC).date().isoformat()


def _row(usage: Usage, at: float) -> tuple[Any, ...]:
    """The row of ``usage``, in the order of ``_COLUMNS``."""
    tokens = usage.tokens
    return (
        event_id(usage.rid, usage.attempt, usage.run),
        usage.rid,
        usage.attempt,
        at,
        _day(at),
        usage.provider,
        usage.model,
        usage.tier,
        usage.key,
        usage.outcome,
        # ``Usage.tries`` is a proposed field; events without it count as one call.
        max(usage.tries, 1),
        tokens.input_tokens,
        tokens.cached_input_tokens,
        tokens.cache_write_tokens,
        tokens.output_tokens,
        tokens.reasoning_tokens,
        usage.cost_usd,
        usage.latency_ms,
        usage.ttft_ms,
        usage.attempt > 1,
        usage.est_input_tokens,
    )


def _label(by: str, values: tuple[Any, ...]) -> str:
    """The group's name; a model is ``provider/model`` unless it already says so."""
    if by == "model":
        provider, model = values
        return str(model) if str(model).startswith(f"{provider}/") else f"{provider}/{model}"
    return str(values[0])


class LedgerStore:
    """The SQLite file holding every attempt; safe to share between threads."""

    def __init__(self, path: str | Path) -> None:
        """Open (creating as needed) the store at ``path``, or in memory for ``:memory:``."""
        if str(path) != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.path = str(path)
        self._db = sqlite3.connect(
            self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
        )
        self._lock = threading.Lock()
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA + REQUESTS_VIEW + ";")
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(usage)")}
        if "est_input_tokens" not in columns:  # a ledger file from before the column
            self._db.execute(
                "ALTER TABLE usage ADD COLUMN est_input_tokens INTEGER NOT NULL DEFAULT 0"
            )

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def record(self, events: Iterable[tuple[Usage, float]]) -> int:
        """Write ``(usage, stored_at)`` pairs in one transaction; returns the new rows.

        An event already recorded (same ``<rid>.<attempt>``) is skipped, so writing a
        batch twice changes nothing.
        """
        rows = [_row(usage, at) for usage, at in events]
        with self._lock:
            before = self._db.total_changes
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for start in range(0, len(rows), ROWS_PER_INSERT):
                    chunk = rows[start : start + ROWS_PER_INSERT]
                    self._db.execute(_insert(len(chunk)), tuple(itertools.chain(*chunk)))
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
            return self._db.total_changes - before

    def _query(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._db.execute(sql, params).fetchall()

    def cost(self, by: Grouping = "provider", since: float | None = None) -> list[CostRow]:
        """Spend per group since ``since`` (unix time; None: all time), biggest first.

        By day the rows come in date order. Raises ``ValueError`` for an unknown grouping.
        """
        if by not in _GROUP_COLUMNS:
            raise ValueError(f"cannot group by {by!r}: use one of {', '.join(GROUPINGS)}")
        columns = _GROUP_COLUMNS[by]
        order = "day" if by == "day" else "TOTAL(cost_usd) DESC, " + columns
        rows = self._query(
            f"SELECT {columns}, COUNT(DISTINCT rid), COUNT(*), SUM(outcome != 'ok'), {_SUMS} "
            f"FROM usage WHERE at >= ? GROUP BY {columns} ORDER BY {order}",
            _since(since),
        )
        width = columns.count(",") + 1
        return [CostRow(_label(by, row[:width]), *row[width:]) for row in rows]

    def totals_since(self, since: float | None, key: str | None = None) -> float:
        """USD spent since ``since`` (None: all time), by one gateway key or by all."""
        sql = "SELECT TOTAL(cost_usd) FROM usage WHERE at >= ?"
        if key is None:
            return float(self._query(sql, _since(since))[0][0])
        return float(self._query(sql + " AND key = ?", _since(since), key)[0][0])

    def estimates(self, since: float | None = None) -> Estimates:
        """How good the router's guesses were, from successful attempts since ``since``:
        per provider, actual over estimated input tokens (the calibration factor) and the
        mean absolute error of the estimate; per tier, the average output tokens."""
        start = _since(since)
        providers = {
            provider: InputEstimate(
                factor=round(actual / estimated, 4) if estimated else 1.0,
                error=round(error, 4),
                samples=samples,
            )
            for provider, actual, estimated, error, samples in self._query(
                "SELECT provider, TOTAL(input_tokens), TOTAL(est_input_tokens),"
                " AVG(ABS(input_tokens - est_input_tokens) * 1.0 / input_tokens), COUNT(*)"
                " FROM usage WHERE outcome = 'ok' AND est_input_tokens > 0 AND input_tokens > 0"
                " AND at >= ? GROUP BY provider",
                start,
            )
        }
        tiers = {
            tier: OutputExpectation(output_tokens=round(average), samples=samples)
            for tier, average, samples in self._query(
                "SELECT tier, AVG(output_tokens), COUNT(*) FROM usage"
                " WHERE outcome = 'ok' AND tier != '' AND at >= ? GROUP BY tier",
                start,
            )
        }
        return Estimates(providers=providers, tiers=tiers)

    def stats(self, since: float | None = None, reference: ModelSpec | None = None) -> Stats:
        """The record since ``since``; with ``reference``, what it would have cost there."""
        start = _since(since)
        requests, errors, fallbacks = self._query(
            "SELECT COUNT(*), COALESCE(SUM(ok = 0), 0), COALESCE(SUM(fell_back), 0) FROM ("
            " SELECT MAX(outcome = 'ok') AS ok, MAX(fallback) AS fell_back"
            " FROM usage WHERE at >= ? GROUP BY rid)",
            start,
        )[0]
        attempts, failed, retries, *sums = self._query(
            "SELECT COUNT(*), COALESCE(SUM(outcome != 'ok'), 0), COALESCE(SUM(tries - 1), 0), "
            f"{_SUMS} FROM usage WHERE at >= ?",
            start,
        )[0]
        stats = Stats(
            since,
            requests,
            errors,
            fallbacks,
            attempts,
            failed,
            retries,
            self._ttft(start, 0.5),
            self._ttft(start, 0.95),
            *sums,
        )
        if reference is not None:
            stats.reference_model = reference.id
            stats.reference_cost_usd = self._reference_cost(start, reference)
            stats.savings_usd = stats.reference_cost_usd - stats.cost_usd
        return stats

    def _ttft(self, start: float, fraction: float) -> float | None:
        where = "FROM usage WHERE at >= ? AND outcome = 'ok' AND ttft_ms IS NOT NULL"
        (count,) = self._query(f"SELECT COUNT(*) {where}", start)[0]
        if not count:
            return None
        offset = nearest_rank(count, fraction)
        sql = f"SELECT ttft_ms {where} ORDER BY ttft_ms LIMIT 1 OFFSET ?"
        rows = self._query(sql, start, offset)
        return float(rows[0][0])

    def _reference_cost(self, start: float, spec: ModelSpec) -> float:
        """The rows' tokens priced on ``spec``: sums per price band, since cost is linear."""
        threshold = spec.price_above.threshold_tokens if spec.price_above else _NO_THRESHOLD
        bands = self._query(
            "SELECT input_tokens > ?, SUM(input_tokens), SUM(cached_input_tokens), "
            "SUM(cache_write_tokens), SUM(output_tokens) FROM usage WHERE at >= ? "
            "GROUP BY input_tokens > ?",
            threshold,
            start,
            threshold,
        )
        total = 0.0
        for above, *tokens in bands:
            flat = msgspec.structs.replace(
                spec, price=rates_for(spec, threshold + 1 if above else 0), price_above=None
            )
            total += cost_usd(flat, TokenUsage(*tokens))
        return total


def _since(since: float | None) -> float:
    return _ALL_TIME if since is None else since
