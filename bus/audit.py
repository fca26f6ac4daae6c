"""The audit stream: requests and audit events kept in JetStream, for replay.

Opt-in (``audit.stream: true``): stream ``OMNI_AUDIT`` captures ``omni.v1.request``
and ``omni.v1.events.>`` for ``audit.max_age_s``. It is created with ``no_ack``,
because requests carry the client's reply subject and a stream would otherwise answer
the client with a publish acknowledgement.

The cost of keeping requests: the stream itself listens on ``omni.v1.request``, so a
client publishing with no classifier running no longer gets the immediate "no router"
answer (no responders); it waits for its first-frame timeout instead.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Final

from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.api import (
    ConsumerConfig,
    DeliverPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)

from omnillm.bus import subjects
from omnillm.bus.connection import Bus, put_stream

__all__ = ["STREAM", "ensure_audit_stream", "replay_audit"]

log = logging.getLogger("omnillm.audit")

STREAM: Final = "OMNI_AUDIT"


def audit_config(max_age_s: float, replicas: int = 1) -> StreamConfig:
    return StreamConfig(
        name=STREAM,
        subjects=[subjects.REQUEST, subjects.GATEWAY_REQUEST, f"{subjects.ROOT}.events.>"],
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        max_age=max_age_s,
        no_ack=True,
        num_replicas=replicas,
    )


async def ensure_audit_stream(bus: Bus, max_age_s: float, replicas: int = 1) -> bool:
    """Create (or update) the audit stream; False, with a warning, without JetStream."""
    try:
        await put_stream(bus.nc.jetstream(), audit_config(max_age_s, replicas))
    except Exception as exc:
        log.warning("the audit stream is off: %s", exc or type(exc).__name__)
        return False
    return True


async def replay_audit(bus: Bus, since: float | None) -> AsyncIterator[Msg]:
    """The kept messages, oldest first (from ``since`` if given), until caught up."""
    js = bus.nc.jetstream()
    info = await js.stream_info(STREAM)
    last = info.state.last_seq
    if last == 0:
        return
    config = ConsumerConfig(deliver_policy=DeliverPolicy.ALL)
    if since is not None:
        config = ConsumerConfig(
            deliver_policy=DeliverPolicy.BY_START_TIME,
            opt_start_time=datetime.fromtimestamp(since, UTC),
        )
    subscription = await js.subscribe(
        f"{subjects.ROOT}.>", stream=STREAM, ordered_consumer=True, config=config
    )
    try:
        while True:
            try:
                msg = await subscription.next_msg(timeout=5)
            except NatsTimeoutError:
                return  # nothing kept after ``since``
            yield msg
            if msg.metadata.sequence.stream >= last:
                return
    finally:
        await subscription.unsubscribe()
