"""Usage events into JetStream: the stream ``OMNI_USAGE`` and the publisher callers use.

One ``Usage`` per attempt goes to ``omni.v1.usage.<provider>`` with the header
``Nats-Msg-Id: <rid>.<attempt>.<run>`` (``<run>`` tells apart two executions of one
attempt; events without one have ``<rid>.<attempt>``). The stream keeps events for
90 days and drops a repeat of an id within its 30-second duplicate window, so a
publish retried after a lost PubAck (retries stop after ``PUBLISH_BUDGET_S``, 15 s) is
stored once; the ledger's ``INSERT OR IGNORE`` on the same id covers redeliveries and
anything older than the window. The window is short on purpose: nats-server keeps each
id of the window in memory and frees expired ones only in bulk, holding up to about
three windows' worth, so its memory follows the event rate times the window. At 500
events a second, a 2-minute window kept the embedded server growing through a
100,000-request soak (48 to 90 MB); with 30 s it levels off within about 90 s.

Publishing never fails the request it describes. Transient errors (a timeout, no
responders while a clustered stream elects a leader: nats-py does not retry those)
are retried with the same id and a backoff, bounded by ``PUBLISH_BUDGET_S``, which
outlasts an election (a stream deleted meanwhile is created again); after that, one
warning names the lost event. Without JetStream the publisher warns
once and every publish is a no-op (it tries to open the stream again every
``REOPEN_AFTER_S``, in case JetStream was only briefly away).

The ledger reads the stream through a ``UsageReader`` (below), not nats-py's ``fetch``.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import time
from typing import Final

import anyio
import msgspec
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import NoStreamResponseError, ServiceUnavailableError

from omnillm.bus import subjects
from omnillm.bus.connection import RID_HEADER, Bus, put_stream
from omnillm.bus.messages import Usage, encode
from omnillm.errors import OmniLLMError

__all__ = [
    "DUPLICATE_WINDOW_S",
    "MAX_AGE_S",
    "MSG_ID_HEADER",
    "STREAM",
    "SUBJECTS",
    "UsagePublisher",
    "UsageReadFailed",
    "UsageReader",
    "decode_usage",
    "ensure_stream",
    "event_id",
]

log = logging.getLogger("omnillm.usage")

STREAM: Final = "OMNI_USAGE"
SUBJECTS: Final = f"{subjects.ROOT}.usage.>"
MSG_ID_HEADER: Final = "Nats-Msg-Id"
MAX_AGE_S: Final = 90 * 24 * 3600.0
DUPLICATE_WINDOW_S: Final = 30.0
"""Twice ``PUBLISH_BUDGET_S``: every retry of a publish falls in it."""
PUBLISH_BUDGET_S: Final = 15.0
"""The longest one publish may take, retries included. A clustered stream that lost its
leader has none for up to about 9 s (the servers' raft election timeouts are 4 to 9 s,
measured 4.5 s and more on a three-node loopback cluster), plus the time to notice."""
REOPEN_AFTER_S: Final = 30.0
_TRY_TIMEOUT_S: Final = 0.5
_BACKOFF_S: Final = (0.05, 0.1, 0.2, 0.4, 0.8)
"""Waits between the first tries; then one a second until the budget is spent."""
_BACKOFF_MAX_S: Final = 1.0
_TRANSIENT: Final = (NoStreamResponseError, NatsTimeoutError, ServiceUnavailableError)

_decoder: Final = msgspec.json.Decoder(Usage)


def event_id(rid: str, attempt: int, run: str = "") -> str:
    """``<rid>.<attempt>.<run>`` (``<rid>.<attempt>`` without a run): the event's
    ``Nats-Msg-Id`` and the ledger's primary key."""
    return f"{rid}.{attempt}.{run}" if run else f"{rid}.{attempt}"


def decode_usage(data: bytes) -> Usage:
    """A usage event; ``msgspec.DecodeError`` (or its ``ValidationError``) for anything else."""
    return _decoder.decode(data)


def stream_config(replicas: int = 1) -> StreamConfig:
    return StreamConfig(
        name=STREAM,
        subjects=[SUBJECTS],
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        discard=DiscardPolicy.OLD,
        max_age=MAX_AGE_S,
        duplicate_window=DUPLICATE_WINDOW_S,
        num_replicas=replicas,
    )


async def ensure_stream(js: JetStreamContext, *, replicas: int = 1) -> None:
    """Create ``OMNI_USAGE``, or bring an existing one to this config (never fewer
    replicas). Idempotent.

    Raises what nats-py raises when there is no JetStream (``ServiceUnavailableError``).
    """
    await put_stream(js, stream_config(replicas))


class UsagePublisher:
    """Publishes ``Usage`` events to JetStream for the ledger; one per process."""

    def __init__(self, bus: Bus, *, replicas: int = 1) -> None:
        self._bus = bus
        self._replicas = replicas
        self._js: JetStreamContext | None = None
        self._retry_open_at = 0.0
        self._warned = False
        self._lock = anyio.Lock()

    @property
    def available(self) -> bool:
        """True once the stream is open."""
        return self._js is not None

    async def open(self) -> bool:
        """Create or bind the stream; False without JetStream (one warning per process)."""
        if self._js is not None:
            return True
        async with self._lock:
            if self._js is None and time.monotonic() >= self._retry_open_at:
                js = self._bus.nc.jetstream()
                try:
                    await ensure_stream(js, replicas=self._replicas)
                except Exception as exc:  # no JetStream on this server (or not yet)
                    self._retry_open_at = time.monotonic() + REOPEN_AFTER_S
                    if not self._warned:
                        self._warned = True
                        log.warning("usage is not recorded: %s", exc or type(exc).__name__)
                else:
                    self._js = js
        return self._js is not None

    async def publish(self, usage: Usage) -> None:
        """Store ``usage`` in the stream; never raises (a lost event is logged)."""
        try:
            subject = subjects.usage(usage.provider)
        except ValueError as exc:
            log.warning("%s: usage not recorded: %s", usage.rid, exc)
            return
        if not await self.open():
            return
        msg_id = event_id(usage.rid, usage.attempt, usage.run)
        headers = {MSG_ID_HEADER: msg_id, RID_HEADER: usage.rid}
        error = await self._publish(subject, encode(usage), headers)
        if error is not None:
            log.warning("usage event %s not recorded: %r", msg_id, error)

    async def _publish(
        self, subject: str, payload: bytes, headers: dict[str, str]
    ) -> Exception | None:
        """None once stored (or dropped as a duplicate); else the last error."""
        assert self._js is not None
        error: Exception | None = None
        with anyio.move_on_after(PUBLISH_BUDGET_S):
            for delay in itertools.chain(_BACKOFF_S, itertools.repeat(_BACKOFF_MAX_S)):
                try:
                    await self._js.publish(
                        subject, payload, timeout=_TRY_TIMEOUT_S, headers=headers
                    )
                except NoStreamResponseError as exc:  # a leader election, or the stream is gone
                    error = exc
                    await self._recreate()
                except _TRANSIENT as exc:
                    error = exc
                except Exception as exc:  # not worth a retry (the server refused it)
                    return exc
                else:
                    return None
                await anyio.sleep(delay)
        return error or TimeoutError(f"no PubAck within {PUBLISH_BUDGET_S:g}s")

    async def _recreate(self) -> None:
        """Put back a deleted stream; during an election this fails, and the retry waits."""
        assert self._js is not None
        with contextlib.suppress(Exception):
            await ensure_stream(self._js, replicas=self._replicas)


# --- reading: the ledger's side ---------------------------------------------------------

PULL_API: Final = "$JS.API.CONSUMER.MSG.NEXT"
STATUS_HEADER: Final = "Status"
_ENDS_PULL: Final = frozenset({"404", "408"})
"""No messages (a pull that does not wait), request expired (one that does)."""
_HEARTBEAT: Final = "100"
ANSWER_GRACE_S: Final = 5.0
"""How long past its own expiry a pull may go unanswered before it counts as lost."""


class UsageReadFailed(OmniLLMError):
    """The consumer refused a pull (deleted, a new leader, no responders): open it again."""

    code = "usage_read_failed"


class UsageReader:
    """Batches from a durable pull consumer on ``OMNI_USAGE``, for the ledger.

    nats-py's ``fetch`` reads each message with ``next_msg``, which starts a task per
    message: on an event loop busy serving requests every message then waits a turn of
    the loop, and 100 took a second (measured under 32 streams), so the ledger fell
    behind the traffic. Here one subscription callback collects a whole batch as it
    arrives. Every pull has its own reply subject, so the end of an older pull (a 404 or
    408 arriving late) never ends the current one; a message delivered for an older pull
    is still a delivery to this consumer and joins the current batch.
    """

    def __init__(self, bus: Bus, consumer: str, *, stream: str = STREAM) -> None:
        self._bus = bus
        self._api = f"{PULL_API}.{stream}.{consumer}"
        self._prefix = bus.new_inbox()
        self._sub: Subscription | None = None
        self._pulls = itertools.count(1)
        self._reply = ""
        self._want = 0
        self._got: list[Msg] = []
        self._failure: str | None = None
        self._answered = anyio.Event()

    async def open(self) -> None:
        self._sub = await self._bus.subscribe(f"{self._prefix}.*", self._on_msg)

    async def close(self) -> None:
        sub, self._sub = self._sub, None
        if sub is not None:
            with contextlib.suppress(Exception):  # already gone with its connection
                await sub.unsubscribe()

    async def pending(self, batch: int) -> list[Msg]:
        """Up to ``batch`` events the consumer has for us now, without waiting for more."""
        return await self._pull({"batch": batch, "no_wait": True}, batch, 0.0)

    async def next(self, wait_s: float) -> list[Msg]:
        """The next event, waiting up to ``wait_s`` for it; ``[]`` if none came."""
        return await self._pull({"batch": 1, "expires": int(wait_s * 1e9)}, 1, wait_s)

    async def _pull(self, request: dict[str, object], want: int, wait_s: float) -> list[Msg]:
        """Raises ``UsageReadFailed`` for an error status; a pull nobody answers (the
        connection is down) returns what came, like an idle one."""
        if len(self._got) >= want:  # delivered for older pulls meanwhile
            got, self._got = self._got, []
            return got
        self._reply = f"{self._prefix}.{next(self._pulls)}"
        self._want, self._failure, self._answered = want, None, anyio.Event()
        await self._bus.publish(self._api, msgspec.json.encode(request), reply=self._reply)
        with anyio.move_on_after(wait_s + ANSWER_GRACE_S):
            await self._answered.wait()
        got, self._got, self._reply = self._got, [], ""
        if self._failure is not None:
            raise UsageReadFailed(f"{self._api}: {self._failure} ({len(got)} events came)")
        return got

    async def _on_msg(self, msg: Msg) -> None:
        status = msg.headers.get(STATUS_HEADER) if msg.headers else None
        if status is None:  # an event: kept even between pulls, for the next batch
            self._got.append(msg)
            if len(self._got) >= self._want:
                self._answered.set()
            return
        if msg.subject != self._reply or status == _HEARTBEAT:  # an older pull's end
            return
        if status not in _ENDS_PULL:
            assert msg.headers is not None
            self._failure = f"{status} {msg.headers.get('Description', '')}".rstrip()
        self._answered.set()
