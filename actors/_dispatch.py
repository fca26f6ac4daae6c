"""Handing an envelope down its fallback chain.

Fallback is a republish: the envelope goes to ``omni.v1.call.<provider>`` of the
next candidate with ``attempt + 1``. A candidate whose caller does not answer
(no responders, busy, silent) is a failed attempt like any other. When the chain is
exhausted the client gets one ``Error`` frame that names the first failure, the
one that started the fallback, and then the rest.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Final

from msgspec.structs import replace

from omnillm.bus import subjects
from omnillm.bus.connection import Bus
from omnillm.bus.dedup import DedupBoard, Recorder
from omnillm.bus.events import Event, emit
from omnillm.bus.handoff import Outcome, hand_off
from omnillm.bus.messages import CallEnvelope, Candidate, Failure, encode
from omnillm.bus.stream import send_failure

__all__ = ["dispatch", "exhausted", "fail_request", "recorder_for", "release_key"]

log = logging.getLogger("omnillm.dispatch")


def exhausted(failures: list[Failure]) -> Failure:
    """One failure for the client: the original one first, the rest after it."""
    if not failures:
        return Failure(code="no_candidates", message="no candidate was left to try")
    first, rest = failures[0], failures[1:]
    message = first.message
    if rest:
        message += "; then " + "; ".join(f.message for f in rest)
    return Failure(
        code=first.code, message=message, retryable=first.retryable, provider=first.provider
    )


async def dispatch(
    bus: Bus,
    envelope: CallEnvelope,
    *,
    start: int,
    handoff_timeout_s: float,
    skip: Callable[[Candidate], str | None] | None = None,
    dedup: DedupBoard | None = None,
) -> None:
    """Hand ``envelope`` to the candidates from ``start`` on, until one accepts.

    ``skip`` names why a candidate cannot take over (no prefill for a continuation,
    too small a context window); such candidates are passed over. Each offer is a copy
    addressed to its candidate, with the next attempt number: ``envelope`` is not changed.
    """
    failures, attempt = envelope.failures, envelope.attempt
    for index in range(start, len(envelope.candidates)):
        candidate = envelope.candidates[index]
        if skip is not None and (why := skip(candidate)):
            log.debug("%s: passing over %s: %s", envelope.rid, candidate.model, why)
            continue
        if time.time() >= envelope.deadline:
            deadline = Failure(code="deadline_exceeded", message="the request's deadline passed")
            failures = [*failures, deadline]
            break
        attempt += 1
        offer = replace(envelope, index=index, attempt=attempt, failures=failures)
        outcome = await _offer(bus, offer, handoff_timeout_s)
        if outcome is Outcome.ACCEPTED:
            return
        reason = f"no caller for provider {candidate.provider} ({outcome.value})"
        event = Event(
            kind="fallback",
            rid=envelope.rid,
            provider=candidate.provider,
            model=candidate.model,
            reason=reason,
            attempt=attempt,
        )
        await emit(bus, event)
        failures = [
            *failures,
            Failure(
                code="no_caller",
                message=f"{candidate.model}: no caller for provider {candidate.provider} "
                f"({outcome.value})",
                retryable=True,
                provider=candidate.provider,
            ),
        ]
    # A new attempt number: the last caller's frames (if any) stay in sequence before it.
    ended = replace(envelope, attempt=attempt + 1, failures=failures)
    await fail_request(bus, ended, exhausted(failures), dedup=dedup)


BUSY_RETRIES: Final = 2
"""Offers to the same candidate after a Busy or no answer: the queue group may pick
another instance (a busy one, or one that died with the offer in hand)."""


async def _offer(bus: Bus, envelope: CallEnvelope, wait_s: float) -> Outcome:
    subject = subjects.call(envelope.candidate.provider)
    payload = encode(envelope)
    outcome = Outcome.BUSY
    for _ in range(1 + BUSY_RETRIES):
        outcome = await hand_off(bus, subject, payload, rid=envelope.rid, wait_s=wait_s)
        if outcome not in (Outcome.BUSY, Outcome.TIMEOUT):
            break
    return outcome


def recorder_for(envelope: CallEnvelope, dedup: DedupBoard | None) -> Recorder | None:
    """Where a keyed request's frames are recorded for its duplicates; None otherwise."""
    if dedup is None or not isinstance(envelope.request.idempotency_key, str):
        return None
    return dedup.recorder


async def release_key(envelope: CallEnvelope, dedup: DedupBoard | None) -> None:
    """After a keyed request ended in ``Error``: a retry with its key runs afresh."""
    key = envelope.request.idempotency_key
    if dedup is not None and isinstance(key, str):
        await dedup.release(key, envelope.rid)


async def fail_request(
    bus: Bus, envelope: CallEnvelope, failure: Failure, *, dedup: DedupBoard | None
) -> None:
    """End the client's stream with ``failure`` (recorded, for a keyed request)."""
    await send_failure(
        bus,
        envelope.reply,
        envelope.rid,
        envelope.attempt,
        failure,
        recorder=recorder_for(envelope, dedup),
    )
    await release_key(envelope, dedup)
