"""The handoff: how a hop between actors never loses a request.

Core NATS drops a message nobody listens to, and only a publisher awaiting a reply
learns of it (503, no responders). So every hop is a request from the sender's own
inbox; the receiver answers ``Accepted`` (or ``Busy`` when its worker pool is full)
at once, before doing the work. Anything else is a failed hop the sender acts on.
"""

from __future__ import annotations

import enum

import msgspec
from nats.aio.msg import Msg
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError

from omnillm.bus.connection import RID_HEADER, Bus
from omnillm.bus.messages import Accepted, Busy, decode_handoff_reply, encode

__all__ = ["Outcome", "accept", "hand_off", "refuse_busy"]

_ACCEPTED = encode(Accepted())


class Outcome(enum.Enum):
    ACCEPTED = "accepted"
    BUSY = "busy"
    NO_RESPONDERS = "no responders"
    TIMEOUT = "no answer"
    INVALID = "invalid answer"


async def hand_off(bus: Bus, subject: str, payload: bytes, *, rid: str, wait_s: float) -> Outcome:
    """Offer ``payload`` on ``subject`` and report what the receiver said."""
    headers = {RID_HEADER: rid}
    bus.check_size(payload, headers)
    try:
        reply = await bus.nc.request(subject, payload, timeout=wait_s, headers=headers)
    except NoRespondersError:
        return Outcome.NO_RESPONDERS
    except NatsTimeoutError:
        return Outcome.TIMEOUT
    try:
        answer = decode_handoff_reply(reply.data)
    except msgspec.DecodeError:
        return Outcome.INVALID
    return Outcome.ACCEPTED if isinstance(answer, Accepted) else Outcome.BUSY


async def accept(bus: Bus, msg: Msg) -> None:
    if msg.reply:
        await bus.nc.publish(msg.reply, _ACCEPTED)


async def refuse_busy(bus: Bus, msg: Msg, reason: str) -> None:
    if msg.reply:
        await bus.nc.publish(msg.reply, encode(Busy(reason=reason)))
