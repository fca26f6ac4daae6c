"""The ledger: every usage event into the store, once; cost and stats for whoever asks.

It reads stream ``OMNI_USAGE`` through the durable pull consumer ``ledger`` (explicit
acks) in batches of up to ``batch``. A batch is written in one transaction and only
then acked (the last ack confirmed by the server), so a crash between the two
redelivers the batch and ``INSERT OR IGNORE`` on ``<rid>.<attempt>`` drops what was
already written. An event that does not decode
is logged and terminated, so it cannot hold up the stream. Events published while no
ledger ran wait in the stream (90 days) and are consumed on the next start.

The ledger shares its process and event loop with the actors serving requests, so it
works in few, large batches. When idle it waits on the stream for the next event and
records it at once; after any batch smaller than ``batch`` it lingers
(``ledger.linger_s``, 50 ms) before taking everything that came meanwhile. Under a
steady flow that is one pull, one thread hop, one transaction and one confirmed ack per
linger instead of per event, and an event is recorded within about ``linger_s`` plus
the write. A full batch (a backlog) is followed by the next at once.

Acks stay explicit, one per event: ``AckPolicy.ALL`` would ack with one message, but
a second ledger bound to the same consumer would then ack events the first has not
written yet, and a crash of the first would lose them.

Two ledger processes bind the same durable consumer and share its events; both write
the same SQLite file (WAL, each batch one short transaction), which is fine on one
machine. Ledgers on different machines would each hold only part of the events in
their own file: run one per deployment, or point them all at one server database.

It also answers ``omni.v1.admin.cost``, ``stats``, ``spend`` and ``estimates`` in queue
group ``ledger``, from the store; the queries and answers are in :mod:`omnillm.bus.admin`.

Without JetStream nothing is consumed (one warning); the admin answers still come
from whatever the store holds. The ledger tries again every ``REOPEN_S``, so one that
started before JetStream could hold its stream (a cluster still forming) catches up.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Final, TypeVar

import anyio
import msgspec
from anyio.abc import TaskStatus
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from omnillm.actors.ledger.store import LedgerStore
from omnillm.bus import subjects
from omnillm.bus.admin import CostQuery, Spend, SpendQuery, StatsQuery
from omnillm.bus.connection import Bus
from omnillm.bus.messages import Failure, Usage
from omnillm.bus.usage import STREAM, SUBJECTS, UsageReader, decode_usage, ensure_stream
from omnillm.config import Settings
from omnillm.providers.catalog import ModelSpec

__all__ = ["CONSUMER", "LEDGER_QUEUE", "LedgerActor", "LedgerStore"]

log = logging.getLogger("omnillm.ledger")

CONSUMER: Final = "ledger"
LEDGER_QUEUE: Final = "ledger"
ACK_WAIT_S: Final = 30.0
MAX_ACK_PENDING: Final = 1000
BATCH: Final = 500
"""Events per pull at most. Behind (after a downtime, or when the loop is saturated) a
batch costs about ten turns of the event loop whatever its size, and a turn of a busy
loop takes milliseconds: 100 a batch kept up with 400 events a second, fewer than
``omni up`` serves on two cores. Under ``MAX_ACK_PENDING``, which caps a pull too."""
ACK_CONFIRM_S: Final = 5.0
RETRY_S: Final = 1.0
"""The wait after a failed fetch before reopening the consumer."""
REOPEN_S: Final = 5.0
"""The wait between tries while the consumer was never opened (no JetStream, or not yet)."""

T = TypeVar("T")


class LedgerActor:
    """Consumes ``OMNI_USAGE`` into a ``LedgerStore`` and answers cost and stats."""

    name = "ledger"

    def __init__(
        self,
        bus: Bus,
        settings: Settings,
        *,
        store: LedgerStore | None = None,
        reference_model: str | None = None,
        batch: int = BATCH,
        fetch_timeout_s: float = 1.0,
        linger_s: float | None = None,
        replicas: int = 1,
    ) -> None:
        """``store`` defaults to ``ledger.path`` (relative to the working directory),
        owned and closed by ``run``; a store passed in stays the caller's. ``linger_s``
        defaults to ``ledger.linger_s``."""
        self.bus = bus
        self.settings = settings
        self._owns_store = store is None
        self.store = store or LedgerStore(Path(settings.config.ledger.path))
        self.reference_model = reference_model
        self.batch = batch
        self.fetch_timeout_s = fetch_timeout_s
        self.linger_s = settings.config.ledger.linger_s if linger_s is None else linger_s
        self.replicas = replicas
        self._js: JetStreamContext | None = None
        self._reader: UsageReader | None = None
        self._db_turn = anyio.CapacityLimiter(1)
        self._started = anyio.Event()
        self._stopping = anyio.Event()
        self._progress = anyio.Event()
        self._acked_seq = 0
        self._warned = False

    def stop(self) -> None:
        self._stopping.set()

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Serve until ``stop()``; reports started once the admin subscriptions and the
        consumer are live. A batch being written when ``stop()`` comes is finished and acked."""
        try:
            subs = [
                await self.bus.subscribe(subjects.admin(what), self._on_admin, queue=LEDGER_QUEUE)
                for what in ("cost", "stats", "spend", "estimates")
            ]
            async with anyio.create_task_group() as tg:
                self._reader = await self._open_consumer()
                await self.bus.flush()
                task_status.started()
                self._started.set()
                tg.start_soon(self._consume)
                await self._stopping.wait()
                tg.cancel_scope.cancel()
            for sub in subs:
                await sub.drain()  # type: ignore[no-untyped-call]
            await self._close_reader()  # the durable consumer stays, for the next start
        finally:
            if self._owns_store:
                self.store.close()

    async def caught_up(self) -> None:
        """Return once every event in the stream when called has been recorded and acked.

        Returns at once without JetStream. With several ledgers on the durable consumer,
        events another one acked count too.
        """
        await self._started.wait()
        if self._js is None:
            return
        target = (await self._js.stream_info(STREAM)).state.last_seq
        while True:
            progress = self._progress
            if self._acked_seq >= target or await self._drained(target):
                return
            await progress.wait()

    async def _drained(self, target: int) -> bool:
        assert self._js is not None
        try:
            info = await self._js.consumer_info(STREAM, CONSUMER)
        except NotFoundError:  # being opened again
            return False
        return bool(info.ack_floor is not None and (info.ack_floor.stream_seq or 0) >= target)

    # --- consuming ----------------------------------------------------------------------

    async def _open_consumer(self) -> UsageReader | None:
        js = self.bus.nc.jetstream()
        try:
            await ensure_stream(js, replicas=self.replicas)
            await self._ensure_consumer(js)
            reader = UsageReader(self.bus, CONSUMER)
            await reader.open()
        except Exception as exc:  # no JetStream on this server, or it cannot place the stream yet
            if not self._warned:
                self._warned = True
                log.warning("usage is not consumed: %s", exc or type(exc).__name__)
            return None
        self._js = js
        return reader

    @staticmethod
    async def _ensure_consumer(js: JetStreamContext) -> None:
        """Create the durable consumer unless it exists (with whatever config it has)."""
        try:
            await js.consumer_info(STREAM, CONSUMER)
        except NotFoundError:
            config = ConsumerConfig(
                name=CONSUMER,
                durable_name=CONSUMER,
                filter_subject=SUBJECTS,
                ack_policy=AckPolicy.EXPLICIT,
                deliver_policy=DeliverPolicy.ALL,
                ack_wait=ACK_WAIT_S,
                max_ack_pending=MAX_ACK_PENDING,
            )
            await js.add_consumer(STREAM, config=config)

    async def _consume(self) -> None:
        idle = False
        while True:
            if self._reader is None:  # lost, or never opened: reopen after a pause
                await anyio.sleep(RETRY_S if self._js is not None else REOPEN_S)
                self._reader = await self._open_consumer()
                continue
            try:
                msgs = await self._take(self._reader, idle)
            except Exception as exc:  # the consumer went away, or its leader changed
                log.warning("ledger fetch failed: %r", exc)
                await self._close_reader()
                continue
            idle = not msgs
            if idle:
                self._advance(0)
                continue
            with anyio.CancelScope(shield=True):
                await self._record(msgs)
            if len(msgs) < self.batch:
                await anyio.sleep(self.linger_s)

    async def _take(self, reader: UsageReader, idle: bool) -> list[Msg]:
        """What is there, up to a batch; when there was nothing, wait for the next event."""
        if idle:
            return await reader.next(self.fetch_timeout_s)
        return await reader.pending(self.batch)

    async def _close_reader(self) -> None:
        reader, self._reader = self._reader, None
        if reader is not None:
            await reader.close()

    async def _record(self, msgs: list[Msg]) -> None:
        """Write the batch, then ack it; a malformed event is terminated."""
        events: list[tuple[Usage, float]] = []
        good: list[Msg] = []
        bad: list[Msg] = []
        for msg in msgs:
            try:
                events.append((decode_usage(msg.data), msg.metadata.timestamp.timestamp()))
                good.append(msg)
            except msgspec.DecodeError as exc:
                log.warning("dropping a malformed usage event on %s: %s", msg.subject, exc)
                bad.append(msg)
        try:
            added = await self._in_thread(lambda: self.store.record(events)) if events else 0
        except Exception:  # left unacked: redelivered after ACK_WAIT_S
            log.exception("ledger: %d usage events not written", len(events))
            return
        if added < len(events):
            log.debug("ledger: %d redelivered events already recorded", len(events) - added)
        await self._settle(good, bad)
        self._advance(max((m.metadata.sequence.stream for m in msgs), default=0))

    async def _settle(self, good: list[Msg], bad: list[Msg]) -> None:
        """Term the bad, ack the good; the last ack waits for the server, so once this
        returns every ack before it has been processed too (one consumer, in order)."""
        for msg in bad:
            await msg.term()
        for msg in good[:-1]:
            await msg.ack()
        if good:
            try:
                await good[-1].ack_sync(timeout=ACK_CONFIRM_S)
            except Exception as exc:  # the batch is written: a redelivery is ignored
                log.warning("ledger: ack not confirmed: %r", exc)

    def _advance(self, seq: int) -> None:
        """Record progress and wake ``caught_up`` waiters (also after an idle fetch)."""
        self._acked_seq = max(self._acked_seq, seq)
        self._progress.set()
        self._progress = anyio.Event()

    async def _in_thread(self, work: Callable[[], T]) -> T:
        """One store call at a time, off the event loop."""
        return await anyio.to_thread.run_sync(work, limiter=self._db_turn)

    # --- admin --------------------------------------------------------------------------

    async def _on_admin(self, msg: Msg) -> None:
        if not msg.reply:
            return
        what = msg.subject.rsplit(".", 1)[-1]
        try:
            payload = await self._answer(what, msg.data or b"{}")
        except (msgspec.DecodeError, ValueError) as exc:
            payload = msgspec.json.encode(Failure(code="invalid_request", message=str(exc)))
        except Exception as exc:
            log.exception("admin request %s failed", msg.subject)
            payload = msgspec.json.encode(Failure(code="internal", message=repr(exc)))
        await self.bus.publish(msg.reply, payload)

    async def _answer(self, what: str, data: bytes) -> bytes:
        if what == "estimates":
            asked = msgspec.json.decode(data or b"{}", type=SpendQuery)
            found = await self._in_thread(lambda: self.store.estimates(asked.since))
            return msgspec.json.encode(found)
        if what == "spend":
            spend = msgspec.json.decode(data, type=SpendQuery)
            total = await self._in_thread(lambda: self.store.totals_since(spend.since, spend.key))
            return msgspec.json.encode(Spend(cost_usd=total))
        if what == "cost":
            query = msgspec.json.decode(data, type=CostQuery)
            rows = await self._in_thread(lambda: self.store.cost(query.by, query.since))
            return msgspec.json.encode(rows)
        stats_query = msgspec.json.decode(data, type=StatsQuery)
        reference = self._reference(stats_query.reference)
        stats = await self._in_thread(lambda: self.store.stats(stats_query.since, reference))
        return msgspec.json.encode(stats)

    def _reference(self, model: str | None) -> ModelSpec | None:
        model = model or self.reference_model
        if model is None:
            return None
        spec = self.settings.catalog.get(model)
        if spec is None:
            raise ValueError(f"reference model {model!r} is not in the catalog")
        return spec
