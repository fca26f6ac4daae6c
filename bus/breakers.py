"""Circuit breakers shared by every process, in the ``omni_health`` bucket beside provider health.

Two breakers guard each call: one per provider (``breaker.<provider>``) and one per
catalog model (``breaker.<provider>.<model>``), each name passed through ``key_token``
so any id is one key token. ``bus/breaker.py`` holds the state machine; this board
only stores its ``BreakerState`` and keeps processes in step:

- every change is a compare-and-set (``kv.update(..., last=revision)``) retried on
  conflict, so outcomes from many processes add up and only one of them wins the
  half-open probe;
- a watcher keeps a local copy of every breaker, so ``open_circuits()`` and the
  common case of ``allows()`` (everything closed) cost no I/O, and a change made by
  one process shows in the others within a watcher round trip;
- the process whose write makes a transition, and only that one, calls
  ``on_transition(key, old, new)``.

A server without JetStream has no bucket: breakers then live in this process only,
with one warning. A KV error later (a timeout during a reconnect) loses that one
outcome, or refuses that one probe, with a warning; it never fails the request.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Final, Self, TypeVar

import anyio
import msgspec
import nats.errors
from anyio.abc import TaskGroup, TaskStatus
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from omnillm.bus.breaker import BreakerPolicy, BreakerState, CircuitBreaker, Phase
from omnillm.bus.connection import Bus
from omnillm.bus.health import BUCKET
from omnillm.bus.subjects import from_key_token, key_token

__all__ = [
    "PREFIX",
    "BreakerBoard",
    "OnTransition",
    "breaker_key",
    "from_key_token",
    "key_token",
    "parse_breaker_key",
]

log = logging.getLogger("omnillm.breakers")

PREFIX: Final = "breaker"
MAX_CAS_ATTEMPTS: Final = 64
"""Conflicting writes before one change is given up (each conflict means another write won)."""

_decoder: Final = msgspec.json.Decoder(BreakerState)

OnTransition = Callable[[str, Phase, Phase], Awaitable[None]]
"""``(key, old, new)``: awaited after the write that made the transition succeeded."""

T = TypeVar("T")


def breaker_key(provider: str, model: str | None = None) -> str:
    """The KV key of a provider's breaker, or of one of its models (a catalog id)."""
    head = f"{PREFIX}.{key_token(provider)}"
    return f"{head}.{key_token(model)}" if model else head


def parse_breaker_key(key: str) -> tuple[str, str | None]:
    """``(provider, model or None)`` from a breaker key."""
    prefix, provider, *model = key.split(".")
    if prefix != PREFIX or len(model) > 1:
        raise ValueError(f"not a breaker key: {key!r}")
    return from_key_token(provider), from_key_token(model[0]) if model else None


def _decode(key: str, value: bytes | None) -> BreakerState:
    try:
        return _decoder.decode(value or b"")
    except msgspec.DecodeError as exc:  # an unreadable value must not jam the breaker
        log.warning("breaker %s: unreadable state, starting closed: %s", key, exc)
        return BreakerState()


class BreakerBoard:
    """Every breaker, shared through KV; one per process.

    Run it (``run`` under a task group, or ``async with``) to keep the local copy
    current; without the watcher, reads see only this process's own writes.
    """

    def __init__(
        self,
        bus: Bus,
        policy: BreakerPolicy | None = None,
        *,
        replicas: int = 1,
        on_transition: OnTransition | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.policy = policy or BreakerPolicy()
        self._bus = bus
        self._replicas = replicas
        self._on_transition = on_transition
        self._clock = clock
        self._kv: KeyValue | None = None
        self._unavailable = False
        self._entries: dict[str, tuple[int, BreakerState]] = {}
        self._tripped: set[str] = set()
        self._local_revision = 0
        self._watching = False
        self._stopping = anyio.Event()
        self._changed = anyio.Event()
        self._tg: TaskGroup | None = None

    # --- lifecycle ---------------------------------------------------------------

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Follow the bucket until ``stop()``; reports started once the current states are in."""
        kv = await self._bucket()
        if kv is None:
            task_status.started()
            await self._stopping.wait()
            return
        watcher = await kv.watch(f"{PREFIX}.>")
        try:
            async with anyio.create_task_group() as tg:
                await tg.start(self._follow, watcher)
                self._watching = True
                task_status.started()
                await self._stopping.wait()
                tg.cancel_scope.cancel()
        finally:
            self._watching = False
            with anyio.CancelScope(shield=True):
                await _stop_watcher(watcher)

    def stop(self) -> None:
        self._stopping.set()

    async def __aenter__(self) -> Self:
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        try:
            await self._tg.start(self.run)
        except BaseException as exc:
            await self._tg.__aexit__(type(exc), exc, exc.__traceback__)
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
        assert self._tg is not None
        await self._tg.__aexit__(exc_type, exc, tb)

    async def _follow(self, watcher: KeyValue.KeyWatcher, *, task_status: TaskStatus[None]) -> None:
        async for entry in watcher:
            if entry is None:  # the current values are all in (nats.md gotcha 12)
                task_status.started()
            else:
                self._apply(entry)

    def _apply(self, entry: KeyValue.Entry) -> None:
        revision = entry.revision or 0
        if entry.operation in ("DEL", "PURGE"):
            self._forget(entry.key, revision)
        else:
            self._store(entry.key, revision, _decode(entry.key, entry.value))

    # --- reads -----------------------------------------------------------------------

    def open_circuits(self) -> set[str]:
        """Keys of breakers that refuse requests now; no I/O (the planner's hot path)."""
        now = self._clock()
        return {key for key in self._tripped if self._breaker(key).blocked(now)}

    def known(self) -> dict[str, BreakerState]:
        """The local copy by key, no I/O: every breaker the watcher or this process has seen."""
        return {key: state for key, (_, state) in self._entries.items()}

    async def changed(self) -> None:
        """Return at the next change to the local copy (a watcher update or an own write)."""
        await self._changed.wait()

    async def states(self) -> dict[str, BreakerState]:
        """Every breaker's stored state by key, read from the bucket (``known()`` without I/O)."""
        kv = await self._bucket()
        if kv is not None:
            watcher = await kv.watch(f"{PREFIX}.>")
            try:
                async for entry in watcher:
                    if entry is None:
                        break
                    self._apply(entry)
            finally:
                await _stop_watcher(watcher)
        return self.known()

    # --- changes ---------------------------------------------------------------------

    async def record(
        self, provider: str, model: str, success: bool, now: float | None = None
    ) -> None:
        """Count one outcome on the provider's and the model's breaker.

        Record only what speaks to the provider's health (see ``bus/breaker.py``).
        """
        at = self._clock() if now is None else now
        for key in _keys(provider, model):
            if success and self._healthy(key, at):
                continue  # nothing to change: a success on a clean, closed breaker
            await self._change(key, lambda b: b.record(success, at), gave_up=None)

    def is_closed(self, provider: str, model: str) -> bool:
        """Both breakers closed, as far as this process knows (no I/O)."""
        now = self._clock()
        return all(self._breaker(key).phase(now) == "closed" for key in _keys(provider, model))

    def _healthy(self, key: str, now: float) -> bool:
        """Closed with no failure in its window: a success would change nothing that matters.

        Skipping it keeps the common case (every call succeeds) free of KV writes. The
        failure rate is then measured over the outcomes since the first failure in the
        window, which opens a breaker no later than counting every success would.
        """
        state = self._breaker(key).state
        since = now - self.policy.window_s
        return state.state == "closed" and all(ok for at, ok in state.window if at > since)

    async def allows(self, provider: str, model: str) -> bool:
        """May a request go to ``model`` now?

        True with no I/O while both breakers are closed. A breaker past its cooldown
        lets exactly one request through across all processes: the one whose write
        of the probe claim wins; a caller that gets True must ``record`` the outcome.
        """
        now = self._clock()
        keys = _keys(provider, model)[::-1]  # the model first: its probe is the narrower claim
        if any(self._breaker(key).blocked(now) for key in keys):
            return False
        claimed: list[str] = []
        for key in keys:
            if self._breaker(key).phase(now) == "closed":
                continue
            if not await self._change(key, lambda b: b.allows(now), gave_up=False):
                for held in claimed:
                    await self._change(held, lambda b: b.release_probe(now), gave_up=None)
                return False
            claimed.append(key)
        return True

    async def _change(self, key: str, step: Callable[[CircuitBreaker], T], *, gave_up: T) -> T:
        """Apply ``step`` to the breaker and store the result with compare-and-set."""
        try:
            return await self._change_once(key, step, gave_up=gave_up)
        except nats.errors.Error as exc:
            log.warning("breaker %s: not updated: %s", key, exc or type(exc).__name__)
            return gave_up

    async def _change_once(self, key: str, step: Callable[[CircuitBreaker], T], *, gave_up: T) -> T:
        fresh = False
        for _ in range(MAX_CAS_ATTEMPTS):
            revision, before = await self._read(key, fresh=fresh)
            breaker = CircuitBreaker(self.policy, before)
            result = step(breaker)
            if breaker.state == before:
                return result
            written = await self._write(key, revision, breaker.state)
            if written is not None:
                self._store(key, written, breaker.state)
                await self._transition(key, before.state, breaker.state.state)
                return result
            fresh = True
        log.warning("breaker %s: gave up after %d conflicting writes", key, MAX_CAS_ATTEMPTS)
        return gave_up

    async def _transition(self, key: str, old: Phase, new: Phase) -> None:
        if old == new or self._on_transition is None:
            return
        try:
            await self._on_transition(key, old, new)
        except Exception:
            log.exception("breaker %s: on_transition failed", key)

    # --- storage ---------------------------------------------------------------------

    async def _bucket(self) -> KeyValue | None:
        if self._kv is not None or self._unavailable:
            return self._kv
        try:
            self._kv = await self._bus.key_value(BUCKET, replicas=self._replicas)
        except Exception as exc:  # no JetStream on this server
            log.warning("circuit breakers are not shared: %s", exc or type(exc).__name__)
            self._unavailable = True
        return self._kv

    async def _read(self, key: str, *, fresh: bool) -> tuple[int, BreakerState]:
        """``(revision, state)``: the local copy first, the bucket after a conflict."""
        kv = await self._bucket()
        if kv is None or (not fresh and (key in self._entries or self._watching)):
            return self._entries.get(key, (0, BreakerState()))
        try:
            entry = await kv.get(key)
        except KeyNotFoundError as exc:  # never written, or deleted (the tombstone has a revision)
            return (exc.entry.revision if exc.entry else 0), BreakerState()
        revision, state = entry.revision or 0, _decode(key, entry.value)
        self._store(key, revision, state)
        return revision, state

    async def _write(self, key: str, revision: int, state: BreakerState) -> int | None:
        """The new revision, or None when another write came first."""
        kv = await self._bucket()
        if kv is None:
            self._local_revision += 1
            return self._local_revision
        try:
            return int(await kv.update(key, msgspec.json.encode(state), last=revision))
        except KeyWrongLastSequenceError:
            return None

    def _store(self, key: str, revision: int, state: BreakerState) -> None:
        if key in self._entries and self._entries[key][0] >= revision:
            return  # an older write, delivered late
        self._entries[key] = (revision, state)
        if state.state == "closed":
            self._tripped.discard(key)
        else:
            self._tripped.add(key)
        self._notify()

    def _forget(self, key: str, revision: int) -> None:
        if key in self._entries and self._entries[key][0] < revision:
            del self._entries[key]
            self._tripped.discard(key)
            self._notify()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    def _breaker(self, key: str) -> CircuitBreaker:
        return CircuitBreaker(self.policy, self._entries.get(key, (0, BreakerState()))[1])


def _keys(provider: str, model: str) -> list[str]:
    """The provider's key, then the model's (none for an empty model)."""
    keys = [breaker_key(provider)]
    return [*keys, breaker_key(provider, model)] if model else keys


async def _stop_watcher(watcher: KeyValue.KeyWatcher) -> None:
    try:
        await watcher.stop()  # type: ignore[no-untyped-call]
    except Exception as exc:  # a closed connection has no subscription left to remove
        log.debug("breaker watcher stop failed: %r", exc)
