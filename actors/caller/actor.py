"""The caller: one pool per provider, calling the upstream API and streaming tokens back.

A caller takes an envelope addressed to its provider and calls the upstream (see
:mod:`.upstream`), retrying as :mod:`.policy` says while nothing has reached
the client. Tokens go straight to the client's reply subject; ``Done`` carries the
provider's usage and its cost.

When a candidate gives up, the envelope goes on (fallback is a republish):

- nothing reached the client: the next candidate starts afresh. If frames such as
  heartbeats went out, its first frame is ``Reset`` so the client knows why;
- text reached the client: the next candidate that accepts an assistant prefill
  continues from the partial text, seamlessly; with none, the client gets an ``Error``
  naming the original failure. A truncated answer is never a success;
- a content-policy refusal goes straight back to the client with the provider's reason.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

import anyio
import httpx
import msgspec
from aiolimiter import AsyncLimiter
from anyio.abc import TaskStatus
from nats.aio.msg import Msg

from omnillm.actors._dispatch import dispatch, exhausted, recorder_for, release_key
from omnillm.actors.base import HandoffActor
from omnillm.actors.boards import Boards
from omnillm.actors.caller.policy import (
    Action,
    Decision,
    RetryPolicy,
    decide,
    health_state,
    rule_for,
)
from omnillm.actors.caller.upstream import Call, new_transport, upstream_for
from omnillm.bus import subjects
from omnillm.bus.connection import Bus
from omnillm.bus.dedup import DedupBoard
from omnillm.bus.events import Event, EventKind, emit
from omnillm.bus.messages import (
    CallEnvelope,
    Candidate,
    ChatRequest,
    Failure,
    HealthState,
    Message,
    ProviderHealth,
    Start,
    TokenUsage,
    Usage,
    decode_envelope,
)
from omnillm.bus.stream import StreamSender
from omnillm.config import LiveProvider, Settings
from omnillm.errors import (
    AuthenticationFailed,
    CircuitOpen,
    MalformedResponse,
    ModelNotFound,
    OmniLLMError,
    ProviderError,
    ProviderTimeout,
    RateLimited,
    RequestError,
)
from omnillm.providers.catalog import ModelSpec, cost_usd

__all__ = ["CallerActor"]

log = logging.getLogger("omnillm.caller")


class _Spent:
    """What one attempt's calls cost, for its ``Usage`` event."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.run = os.urandom(8).hex()
        """This execution of the attempt: another caller may run it too (see ``Usage.run``)."""
        self.spec: ModelSpec | None = None
        self.tries = 0
        self.cost = 0.0
        self.tokens = TokenUsage()
        self.ttft_ms: float | None = None

    def add(self, call: Call) -> None:
        self.tries += 1
        self.ttft_ms = call.ttft_ms if call.ttft_ms is not None else self.ttft_ms
        if call.usage is not None and self.spec is not None:
            self.cost += cost_usd(self.spec, call.usage)
            self.tokens = _plus(self.tokens, call.usage)

    def usage(self, envelope: CallEnvelope, provider: str, *, ok: bool) -> Usage:
        classified = envelope.classified
        return Usage(
            rid=envelope.rid,
            attempt=envelope.attempt,
            provider=provider,
            model=self.spec.id if self.spec else envelope.candidate.model,
            outcome="ok" if ok else "error",
            tier=classified.tier if classified else "",
            key=envelope.key,
            tokens=self.tokens,
            cost_usd=round(self.cost, 10),
            latency_ms=round((time.monotonic() - self.started) * 1000, 3),
            ttft_ms=self.ttft_ms,
            tries=max(self.tries, 1),
            est_input_tokens=classified.input_tokens if classified else 0,
            run=self.run,
        )


def _plus(a: TokenUsage, b: TokenUsage) -> TokenUsage:
    return TokenUsage(
        input_tokens=a.input_tokens + b.input_tokens,
        cached_input_tokens=a.cached_input_tokens + b.cached_input_tokens,
        cache_write_tokens=a.cache_write_tokens + b.cache_write_tokens,
        output_tokens=a.output_tokens + b.output_tokens,
        reasoning_tokens=a.reasoning_tokens + b.reasoning_tokens,
    )


@dataclass(slots=True)
class _GaveUp:
    failure: Failure
    decision: Decision
    call: Call | None


class CallerActor(HandoffActor):
    """Subscribes to ``omni.v1.call.<provider>`` in queue group ``caller.<provider>``."""

    def __init__(
        self,
        bus: Bus,
        settings: Settings,
        provider: str,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        concurrency: int | None = None,
        boards: Boards | None = None,
    ) -> None:
        live = settings.providers[provider]
        size = concurrency or live.config.max_concurrency
        super().__init__(
            bus,
            subject=subjects.call(provider),
            queue=subjects.caller_queue(provider),
            concurrency=size,
            backlog=live.config.backlog,
        )
        self.name = f"caller.{provider}"
        self.settings = settings
        self.provider = provider
        self.live: LiveProvider = live
        self.reliability = settings.config.reliability
        self.retry = RetryPolicy(
            max_tries=self.reliability.max_attempts,
            base_delay_s=self.reliability.retry_base_delay_s,
            max_delay_s=self.reliability.retry_max_delay_s,
            retry_after_cap_s=self.reliability.retry_after_cap_s,
        )
        boards = boards or Boards.for_bus(bus, settings)
        self.usage = boards.usage
        self.health = boards.health
        self.breakers = boards.breakers
        self.dedup: DedupBoard | None = boards.dedup
        self._health_state: dict[str, HealthState] = {}
        self._transport = transport
        self._rpm = AsyncLimiter(live.config.rpm, 60) if live.config.rpm else None
        self._tpm = AsyncLimiter(live.config.tpm, 60) if live.config.tpm else None

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        owned = self._transport is None
        transport = self._transport or new_transport(max_connections=self.concurrency)
        self.upstream = upstream_for(self.settings, self.provider, transport)
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self.upstream.heartbeats)
                await super().run(task_status=task_status)
                tg.cancel_scope.cancel()
        finally:
            if owned:
                with anyio.CancelScope(shield=True):
                    await transport.aclose()

    # --- one envelope -------------------------------------------------------------------

    async def handle(self, msg: Msg) -> None:
        envelope = decode_envelope(msg.data)
        sender = StreamSender(
            self.bus,
            envelope.reply,
            envelope.rid,
            envelope.attempt,
            recorder=recorder_for(envelope, self.dedup),
            about=_about(envelope),
        )
        if envelope.reset_reason:
            await sender.reset(envelope.reset_reason)
        usage: Usage | None = None
        try:
            gave_up, usage = await self._serve(envelope, sender)
        except Exception as exc:  # a bug must still end the client's stream
            log.exception("%s: caller crashed", envelope.rid)
            failure = Failure(code="internal", message=f"{self.name} failed: {exc!r}")
            gave_up = _GaveUp(failure, Decision(Action.FALLBACK, reason="internal"), None)
        try:
            if gave_up is not None:
                await self._move_on(envelope, sender, gave_up)
        finally:
            # Last: while a clustered stream elects a leader, a publish waits for it (seconds),
            # and the client's fallback must not wait with it.
            if usage is not None:
                await self.usage.publish(usage)

    async def _serve(
        self, envelope: CallEnvelope, sender: StreamSender
    ) -> tuple[_GaveUp | None, Usage]:
        """Call the upstream, retrying per the policy; None once the client has its answer.

        Either way the attempt goes to the ledger: one ``Usage`` event, returned here, with
        the tokens every call of it reported (a failed call is billed only if the provider
        said so).
        """
        spent = _Spent()
        gave_up = await self._calls(envelope, sender, spent)
        return gave_up, spent.usage(envelope, self.provider, ok=gave_up is None)

    async def _calls(
        self, envelope: CallEnvelope, sender: StreamSender, spent: _Spent
    ) -> _GaveUp | None:
        spec = self.settings.catalog.get(envelope.candidate.model)
        if spec is None:
            unknown = ModelNotFound(f"{envelope.candidate.model}: not in this caller's catalog")
            return self._gave_up(unknown, spec_id=envelope.candidate.model, call=None)
        if self.live.missing_key:
            return self._gave_up(self._missing_key(), spec_id=spec.id, call=None)
        request = _with_prefill(envelope.request, envelope.partial)
        first, tries = time.monotonic(), 0
        spent.spec = spec
        while True:
            tries += 1
            if not await self.breakers.allows(self.provider, spec.id):
                circuit = f"{spec.id}: the circuit is open (the provider failed recently)"
                return self._gave_up(CircuitOpen(circuit), spec_id=spec.id, call=None)
            probing = not self.breakers.is_closed(self.provider, spec.id)
            call = Call(sender, self.provider, spec)
            error = await self._call(envelope, request, call)
            spent.add(call)
            if error is None:
                if probing:  # close the circuit before the client can send its next request
                    await self.breakers.record(self.provider, spec.id, True)
                await self._finish(envelope, sender, spec, call)
                await self._outcome(envelope, spec, call, None)
                return None
            await self._outcome(envelope, spec, call, error)
            decision = decide(
                error.code,
                tries=tries,
                since_first_s=time.monotonic() - first,
                retry_after=error.retry_after if isinstance(error, ProviderError) else None,
                streamed=call.streamed,
                policy=self.retry,
            )
            if decision.action is not Action.RETRY or not self._time_for(envelope, decision):
                return _GaveUp(_failure(error, spec), decision, call)
            await self._event("retry", envelope, spec, decision.reason, delay_s=decision.delay_s)
            await anyio.sleep(decision.delay_s)

    async def _call(
        self, envelope: CallEnvelope, request: ChatRequest, call: Call
    ) -> OmniLLMError | None:
        """One call within the request's deadline; the error, or None on success."""
        log.debug("%s: attempt %d on %s", envelope.rid, envelope.attempt, call.spec.id)
        with anyio.move_on_after(max(0.0, envelope.deadline - time.time())) as deadline:
            try:
                await self._admit(envelope)
                await self.upstream.call(request, call)
            except (ProviderError, RequestError) as exc:
                return exc
        if deadline.cancelled_caught:
            return ProviderTimeout("the request's deadline passed")
        if call.finish_reason is None:
            return MalformedResponse("the stream ended without a finish reason (truncated)")
        return None

    async def _admit(self, envelope: CallEnvelope) -> None:
        """This process's share of the provider's rate limits (requests and tokens a minute).

        Over a limit the call is refused as ``rate_limited`` with the time until there is
        room as ``retry_after``; the policy then waits (a short wait) or falls back, as it
        would for the provider's own 429. Nothing queues without bound.
        """
        if self._rpm is not None:
            await _take(self._rpm, 1, "requests", self.provider)
        if self._tpm is not None and envelope.classified is not None:
            tokens = envelope.classified.input_tokens + envelope.classified.output_tokens
            await _take(self._tpm, min(tokens, self._tpm.max_rate), "tokens", self.provider)

    def _time_for(self, envelope: CallEnvelope, decision: Decision) -> bool:
        return time.time() + decision.delay_s < envelope.deadline

    async def _finish(
        self, envelope: CallEnvelope, sender: StreamSender, spec: ModelSpec, call: Call
    ) -> None:
        usage = call.usage or TokenUsage()
        await sender.done(
            finish_reason=call.finish_reason or "stop",
            provider=self.provider,
            model=spec.model,
            usage=usage,
            cost_usd=round(cost_usd(spec, usage), 10),
            attempts=envelope.attempt,
            ttft_ms=call.ttft_ms,
            model_id=spec.id,
        )

    # --- after giving up ----------------------------------------------------------------

    async def _move_on(
        self, envelope: CallEnvelope, sender: StreamSender, gave_up: _GaveUp
    ) -> None:
        failure, decision, call = gave_up.failure, gave_up.decision, gave_up.call
        log.info("%s: attempt %d failed: %s", envelope.rid, envelope.attempt, failure.message)
        failures = [*envelope.failures, failure]
        if decision.action is Action.TO_CLIENT:
            await sender.error(failure)
            await release_key(envelope, self.dedup)
            return
        if call is not None and call.sent_tool_calls:
            await sender.error(exhausted(failures))  # tool calls cannot be continued
            await release_key(envelope, self.dedup)
            return
        partial = envelope.partial + ("".join(call.text) if call is not None else "")
        reset_reason = failure.message if not partial and sender.seq > 0 else envelope.reset_reason
        onward = msgspec.structs.replace(
            envelope, failures=failures, partial=partial, reset_reason=reset_reason
        )
        skip = self._skip_rule(onward, decision)
        kind: EventKind = "continue" if partial else "fallback"
        await self._event(kind, onward, None, failure.message)
        await dispatch(
            self.bus,
            onward,
            start=envelope.index + 1,
            handoff_timeout_s=self.reliability.handoff_timeout_s,
            skip=skip,
            dedup=self.dedup,
        )

    def _skip_rule(
        self, envelope: CallEnvelope, decision: Decision
    ) -> Callable[[Candidate], str | None]:
        """Which later candidates cannot take over, and why."""
        catalog = self.settings.catalog
        current = catalog.get(envelope.candidate.model)
        window = current.context_window if current is not None else 0
        continuing = bool(envelope.partial)

        def skip(candidate: Candidate) -> str | None:
            spec = catalog.get(candidate.model)
            if spec is None:
                return "not in the catalog"
            if continuing and "prefill" not in spec.capabilities:
                return "cannot continue a partial answer (no prefill)"
            if decision.action is Action.LARGER_CONTEXT and spec.context_window <= window:
                return f"context window {spec.context_window} is not larger than {window}"
            return None

        return skip

    # --- what others should know -------------------------------------------------------

    async def _outcome(
        self, envelope: CallEnvelope, spec: ModelSpec, call: Call, error: OmniLLMError | None
    ) -> None:
        """After the client has what it needs: breakers, health, and for a failed call the
        outcome event the prober and the metrics learn from (a successful call's is the
        request's ``end`` event, see ``StreamSender.done``)."""
        if error is None or rule_for(error.code).breaker:
            await self.breakers.record(self.provider, spec.id, error is None)
        await self._observe(spec, error)
        if error is None:
            return
        detail: dict[str, float] = {"ok": 0.0}
        if call.ttft_ms is not None:
            detail["ttft_ms"] = call.ttft_ms
        await self._event("outcome", envelope, spec, error.code, **detail)

    async def _observe(self, spec: ModelSpec, error: OmniLLMError | None) -> None:
        """Share a change in what this provider or model does with us."""
        subject, state = self.provider, health_state(error)
        if isinstance(error, ModelNotFound):
            subject = spec.id
        if state is None:
            return  # transient failures belong to the circuit breaker, not here
        if self._health_state.get(subject, "ok") == state:
            return
        self._health_state[subject] = state
        reason = error.message if error is not None else ""
        await self.health.put(ProviderHealth(subject, state, reason, time.time()))

    def _missing_key(self) -> AuthenticationFailed:
        where = (
            self.live.config.api_key_env
            or self.live.spec.key_env
            or f"providers.{self.provider}.api_key"
        )
        return AuthenticationFailed(f"{self.provider}: no API key (set {where})")

    def _gave_up(self, error: OmniLLMError, *, spec_id: str, call: Call | None) -> _GaveUp:
        message = error.message.removeprefix(f"{self.provider}: ")
        failure = Failure(code=error.code, message=f"{spec_id}: {message}", provider=self.provider)
        return _GaveUp(failure, Decision(Action.FALLBACK, reason=error.code), call)

    async def _event(
        self,
        kind: EventKind,
        envelope: CallEnvelope,
        spec: ModelSpec | None,
        reason: str,
        **detail: float,
    ) -> None:
        model = spec.id if spec is not None else envelope.candidate.model
        event = Event(
            kind=kind,
            rid=envelope.rid,
            provider=self.provider,
            model=model,
            reason=reason,
            attempt=envelope.attempt,
            detail=dict(detail),
        )
        await emit(self.bus, event)


async def _take(limiter: AsyncLimiter, amount: float, what: str, provider: str) -> None:
    if not limiter.has_capacity(amount):
        wait = amount * limiter.time_period / limiter.max_rate
        raise RateLimited(
            f"{provider}: this process's limit of {limiter.max_rate:g} {what} a minute is reached",
            provider=provider,
            retry_after=wait,
        )
    await limiter.acquire(amount)  # there is room: this does not wait


def _about(envelope: CallEnvelope) -> Start:
    """The routing decision, for the client's ``Start`` frame."""
    classified = envelope.classified
    return Start(
        rid=envelope.rid,
        attempt=envelope.attempt,
        seq=0,
        provider=envelope.candidate.provider,
        model=envelope.candidate.model,
        tier=classified.tier if classified else "",
        confidence=classified.confidence if classified else 0.0,
        reasons=classified.reasons if classified else [],
        est_cost_usd=envelope.candidate.est_cost_usd,
        skipped=envelope.skipped,
    )


def _with_prefill(request: ChatRequest, partial: str) -> ChatRequest:
    """The request with the answer so far as an assistant prefill, to be continued."""
    if not partial:
        return request
    prefill = Message(role="assistant", content=partial)
    return msgspec.structs.replace(request, messages=[*request.messages, prefill])


def _failure(error: OmniLLMError, spec: ModelSpec) -> Failure:
    retry_after = error.retry_after if isinstance(error, ProviderError) else None
    message = error.message.removeprefix(f"{spec.provider}: ")
    return Failure(
        code=error.code,
        message=f"{spec.id}: {message}",
        retryable=error.retryable,
        retry_after=retry_after,
        provider=spec.provider,
    )
