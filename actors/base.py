"""What every actor is (:class:`Actor`), and the pool most of them run (:class:`PoolActor`).

Every actor, whether it serves a subscription, HTTP or a JetStream consumer, satisfies
:class:`Actor`: ``run(*, task_status)`` reports started only once it is live, and
``stop()`` makes ``run`` finish what it holds and return. The supervisor runs nothing
else.

:class:`PoolActor` is what the classifier, the planner and the callers share: a
subscription feeding a bounded pool of ``concurrency`` tasks, and a clean stop.

nats-py runs a subscription's callbacks one after another, so a callback must only
admit work and return. With no ``backlog`` the pool has no hidden queue: an item is
admitted only when a task is idle and waiting, so "accepted" means "being worked on
now". With a ``backlog`` (the classifier and planner, whose work takes a millisecond,
and each caller, ``providers.<name>.backlog``) up to that many wait their turn, so a
burst waits a moment rather than being refused; past it the sender hears Busy and
sends the request elsewhere.

Stopping is an event, not a cancellation: ``stop()`` unsubscribes (draining what
was already delivered), lets the pool finish what it holds, and returns.
Cancelling ``run`` instead abandons in-flight work at once.
"""

from __future__ import annotations

import abc
import logging
from collections import OrderedDict
from typing import Any, Final, Protocol

import anyio
from anyio.abc import TaskStatus
from nats.aio.msg import Msg

from omnillm.bus.connection import RID_HEADER, Bus
from omnillm.bus.handoff import accept, refuse_busy
from omnillm.logs import log_context

__all__ = ["Actor", "HandoffActor", "PoolActor"]

log = logging.getLogger("omnillm.actors")

DEFAULT_CONCURRENCY: Final = 64


class Actor(Protocol):
    """What the supervisor runs: started once live, stopped gracefully."""

    name: str

    async def run(self, *, task_status: TaskStatus[Any] = ...) -> None: ...

    def stop(self) -> None: ...


class PoolActor(abc.ABC):
    name: str = "actor"

    def __init__(
        self,
        bus: Bus,
        *,
        subject: str,
        queue: str,
        concurrency: int = DEFAULT_CONCURRENCY,
        backlog: int = 0,
        also: tuple[str, ...] = (),
    ):
        self.bus = bus
        self.subject = subject
        self.also = also
        """More subjects served by the same queue group and pool."""
        self.queue = queue
        self.concurrency = concurrency
        self._send, self._receive = anyio.create_memory_object_stream[Msg](backlog)
        self._stopping = anyio.Event()

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Serve until ``stop()``; reports started once the subscription is live."""
        async with anyio.create_task_group() as tg:
            for _ in range(self.concurrency):
                tg.start_soon(self._worker, self._receive.clone())
            self._receive.close()
            subs = [
                await self.bus.subscribe(subject, self._on_message, queue=self.queue)
                for subject in (self.subject, *self.also)
            ]
            await self.bus.flush()
            task_status.started()
            await self._stopping.wait()
            for sub in subs:
                await sub.drain()  # type: ignore[no-untyped-call]
            self._send.close()

    def stop(self) -> None:
        self._stopping.set()

    async def _on_message(self, msg: Msg) -> None:
        if await self.repeated(msg):
            return
        try:
            self._send.send_nowait(msg)
        except anyio.WouldBlock:
            await self.refuse(msg)
        except anyio.ClosedResourceError:
            await self.refuse(msg)
        else:
            await self.admitted(msg)

    async def _worker(self, receive: anyio.abc.ObjectReceiveStream[Msg]) -> None:
        async with receive:
            async for msg in receive:
                with log_context(rid=(msg.headers or {}).get(RID_HEADER, "")):
                    await self._handle(msg)

    async def _handle(self, msg: Msg) -> None:
        """``handle``, and on a bug ``crashed``: a worker never dies of one message."""
        try:
            await self.handle(msg)
        except Exception as exc:
            log.exception("%s: unhandled error", self.name)
            try:
                await self.crashed(msg, exc)
            except Exception:
                log.exception("%s: the error could not be reported", self.name)

    async def crashed(self, msg: Msg, exc: Exception) -> None:  # noqa: B027 - a hook
        """``handle`` raised: answer the sender if this actor can (the classifier can)."""

    async def admitted(self, msg: Msg) -> None:  # noqa: B027 - a hook; most actors say nothing
        """Called when ``msg`` was handed to a worker (handoff actors answer Accepted)."""

    async def repeated(self, msg: Msg) -> bool:
        """True if ``msg`` is a repeat this actor has already dealt with (then dropped)."""
        return False

    @abc.abstractmethod
    async def refuse(self, msg: Msg) -> None:
        """Every worker is busy: tell the sender, so the request is not lost."""

    @abc.abstractmethod
    async def handle(self, msg: Msg) -> None:
        """Do the work; must end the client's stream on every failure path."""


REMEMBERED_OFFERS: Final = 4096
"""Offers a handoff actor remembers having taken, to run a repeated one only once."""


class HandoffActor(PoolActor):
    """An actor reached by handoff: it answers Accepted or Busy at once.

    A sender that hears nothing within its wait offers the same bytes again, and the
    queue group may pick this instance again: in a loaded process the first Accepted
    was only late. Running the repeat would stream a second copy of the same attempt
    into the client's inbox (a gap the client fails on), so a repeat of an offer taken
    here is accepted again and dropped.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._taken: OrderedDict[tuple[str, int], None] = OrderedDict()

    async def repeated(self, msg: Msg) -> bool:
        if (msg.subject, hash(msg.data)) not in self._taken:
            return False
        log.info("%s: an offer taken here came again (its Accepted was late)", self.name)
        await accept(self.bus, msg)
        return True

    async def admitted(self, msg: Msg) -> None:
        self._taken[(msg.subject, hash(msg.data))] = None
        if len(self._taken) > REMEMBERED_OFFERS:
            self._taken.popitem(last=False)
        await accept(self.bus, msg)

    async def refuse(self, msg: Msg) -> None:
        await refuse_busy(self.bus, msg, f"{self.name}: all {self.concurrency} workers busy")
