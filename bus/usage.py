"""Usage events into JetStream: the stream ``OMNI_USAGE`` and the publisher callers use.

One ``Usage`` per attempt goes to ``omni.v1.usage.<provider>`` with the header
``Nats-Msg-Id: <rid>.<attempt>.<run>`` (``<run>`` tells apart two executions of one
attempt; events without one have ``<rid>.<attempt>``). The stream keeps events for
90 days and drops a repeat of an id within its 2-minute duplicate window, so a
publish retried after a lost PubAck is stored once; the ledger's ``INSERT OR IGNORE``
on the same id covers redeliveries and anything older than the window.

Publishing never fails the request it describes. Transient errors (a timeout, no
responders while a clustered stream elects a leader: nats-py does not retry those)
are retried with the same id and a backoff, bounded by ``PUBLISH_BUDGET_S``, which
outlasts an election (a stream deleted meanwhile is created again); after that, one
warning names the lost event. Without JetStream the publisher warns
once and every publish is a no-op (it tries to open the stream again every
``REOPEN_AFTER_S``, in case JetStream was only briefly away).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import time
from typing import Final

import anyio
import msgspec
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import NoStreamResponseError, ServiceUnavailableError

from omnillm.bus import subjects
from omnillm.bus.connection import RID_HEADER, Bus, put_stream
from omnillm.bus.messages import Usage, encode

__all__ = [
    "DUPLICATE_WINDOW_S",
    "MAX_AGE_S",
    "MSG_ID_HEADER",
    "STREAM",
    "SUBJECTS",
    "UsagePublisher",
    "decode_usage",
    "ensure_stream",
    "event_id",
]

log = logging.getLogger("omnillm.usage")

STREAM: Final = "OMNI_USAGE"
SUBJECTS: Final = f"{subjects.ROOT}.usage.>"
MSG_ID_HEADER: Final = "Nats-Msg-Id"
MAX_AGE_S: Final = 90 * 24 * 3600.0
DUPLICATE_WINDOW_S: Final = 120.0
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
