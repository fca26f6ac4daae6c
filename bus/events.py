"""Audit events on ``omni.v1.events.<kind>``: every retry, fallback, breaker transition,
rejection and dedup hit, as JSON anyone may tap (``nats sub 'omni.v1.events.>'``).

Events are core NATS publishes: cheap, and lost if nobody listens, which is what a
tap wants. Publishing one never fails the request it describes.
"""

from __future__ import annotations

import logging
import time
from typing import Literal

import msgspec

from omnillm.bus import subjects
from omnillm.bus.connection import RID_HEADER, Bus

__all__ = ["Event", "EventKind", "emit"]

log = logging.getLogger("omnillm.events")

EventKind = Literal[
    "route", "retry", "fallback", "circuit", "reject", "dedup", "continue", "outcome", "end"
]
"""``end`` closes every request: ``reason`` is ``ok`` or the error code, ``detail.tier``."""


class Event(msgspec.Struct, omit_defaults=True):
    kind: EventKind
    rid: str = ""
    provider: str = ""
    model: str = ""
    reason: str = ""
    attempt: int = 0
    detail: dict[str, str | float | int] = {}
    at: float = 0.0


async def emit(bus: Bus, event: Event) -> None:
    event.at = event.at or time.time()
    headers = {RID_HEADER: event.rid} if event.rid else None
    try:
        await bus.publish(subjects.events(event.kind), msgspec.json.encode(event), headers=headers)
    except Exception as exc:  # an audit event must never break the request it describes
        log.warning("could not publish %s event: %r", event.kind, exc)
