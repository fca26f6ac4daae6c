"""The caller: one pool per provider, calling the upstream API and streaming tokens back.

A caller takes an envelope addressed to its provider, calls the upstream over httpx
(aiohttp transport, one client per provider), turns each network read into at most
one ``Delta`` frame, and ends with ``Done`` carrying the provider's usage and its
cost. Tokens go straight to the client's reply subject.

A failure before any token reached the client is a failed attempt: the envelope
goes to the next candidate (fallback is a republish). After tokens went out the
client gets an ``Error`` naming the failure: a truncated answer is never a success.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from typing import Final

import anyio
import httpx
from anyio.abc import TaskStatus
from httpx_aiohttp import AiohttpTransport
from nats.aio.msg import Msg

from omnillm.actors._base import HandoffActor
from omnillm.actors._dispatch import dispatch, exhausted
from omnillm.bus import subjects
from omnillm.bus.connection import Bus
from omnillm.bus.health import HealthBoard
from omnillm.bus.messages import (
    CallEnvelope,
    Failure,
    HealthState,
    ProviderHealth,
    TokenUsage,
    decode_envelope,
)
from omnillm.bus.stream import StreamSender
from omnillm.config import LiveProvider, Settings
from omnillm.errors import (
    AuthenticationFailed,
    FreeTierRefused,
    MalformedResponse,
    OmniLLMError,
    ProviderError,
    ProviderTimeout,
    ProviderUnavailable,
    RequestError,
)
from omnillm.providers.base import StreamUpdate, WireFamily
from omnillm.providers.catalog import ModelSpec, cost_usd
from omnillm.providers.families import family_for

__all__ = ["CallerActor", "new_http_client"]

log = logging.getLogger("omnillm.caller")

MAX_ERROR_BODY: Final = 64 * 1024


def new_http_client(*, max_connections: int, connect_timeout_s: float) -> httpx.AsyncClient:
    """One client per provider, on the aiohttp transport (a third of httpx's default CPU)."""
    limits = httpx.Limits(
        max_connections=max_connections, max_keepalive_connections=max_connections
    )
    timeout = httpx.Timeout(
        connect=connect_timeout_s, read=None, write=30.0, pool=connect_timeout_s
    )
    return httpx.AsyncClient(
        transport=AiohttpTransport(limits=limits), timeout=timeout, trust_env=False
    )


class _Attempt:
    """One call's progress: what reached the client, and how it ended."""

    def __init__(self, sender: StreamSender, provider: str, spec: ModelSpec) -> None:
        self.sender = sender
        self.provider = provider
        self.spec = spec
        self.started = time.perf_counter()
        self.ttft_ms: float | None = None
        self.finish_reason: str | None = None
        self.usage: TokenUsage | None = None
        self.done = False

    @property
    def streamed(self) -> bool:
        return self.ttft_ms is not None

    async def take(self, update: StreamUpdate) -> None:
        if update.text or update.tool_calls:
            if self.ttft_ms is None:
                self.ttft_ms = round((time.perf_counter() - self.started) * 1000, 3)
                await self.sender.start(self.provider, self.spec.model)
            await self.sender.delta(update.text, update.tool_calls)
        if update.finish_reason is not None:
            self.finish_reason = update.finish_reason
        if update.usage is not None:
            self.usage = update.usage
        self.done = self.done or update.done


class CallerActor(HandoffActor):
    """Subscribes to ``omni.v1.call.<provider>`` in queue group ``caller.<provider>``."""

    def __init__(
        self,
        bus: Bus,
        settings: Settings,
        provider: str,
        *,
        http: httpx.AsyncClient | None = None,
        workers: int | None = None,
        health: HealthBoard | None = None,
    ) -> None:
        live = settings.providers[provider]
        size = workers or live.config.max_concurrency
        super().__init__(
            bus,
            subject=subjects.call(provider),
            queue=subjects.caller_queue(provider),
            workers=size,
        )
        self.name = f"caller.{provider}"
        self.settings = settings
        self.provider = provider
        self.live: LiveProvider = live
        self.family: WireFamily = family_for(live.spec.family)
        self.reliability = settings.config.reliability
        self._http = http
        self._headers = live.headers()
        self.health = health or HealthBoard(bus)
        self._health_state: HealthState = "ok"
        self._base_url = live.spec.base_url.rstrip("/")

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        owned = self._http is None
        if self._http is None:
            self._http = new_http_client(
                max_connections=self.workers, connect_timeout_s=self.reliability.connect_timeout_s
            )
        try:
            await super().run(task_status=task_status)
        finally:
            if owned:
                with anyio.CancelScope(shield=True):
                    await self._http.aclose()

    async def handle(self, msg: Msg) -> None:
        envelope = decode_envelope(msg.data)
        sender = StreamSender(self.bus, envelope.reply, envelope.rid, envelope.attempt)
        try:
            failure = await self._attempt(envelope, sender)
        except Exception as exc:  # a bug must still end the client's stream
            log.exception("%s: caller crashed", envelope.rid)
            failure = Failure(code="internal", message=f"{self.name} failed: {exc!r}")
        if failure is None:
            return
        log.info("%s: attempt %d failed: %s", envelope.rid, envelope.attempt, failure.message)
        envelope.failures.append(failure)
        if sender.seq == 0:
            await dispatch(
                self.bus,
                envelope,
                start=envelope.index + 1,
                handoff_timeout_s=self.reliability.handoff_timeout_s,
            )
        elif not sender.closed:
            await sender.error(exhausted(envelope.failures))

    async def _attempt(self, envelope: CallEnvelope, sender: StreamSender) -> Failure | None:
        spec = self.settings.catalog.get(envelope.candidate.model)
        if spec is None:
            return Failure(
                code="unknown_model",
                message=f"{envelope.candidate.model}: not in this caller's catalog",
                provider=self.provider,
            )
        if self.live.missing_key:
            where = (
                self.live.config.api_key_env
                or self.live.spec.key_env
                or f"providers.{self.provider}.api_key"
            )
            missing = AuthenticationFailed(f"{self.provider}: no API key (set {where})")
            return _failure(missing, spec)
        log.debug("%s: attempt %d on %s", envelope.rid, envelope.attempt, spec.id)
        attempt = _Attempt(sender, self.provider, spec)
        error: ProviderError | RequestError | None = None
        with anyio.move_on_after(max(0.0, envelope.deadline - time.time())) as deadline:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._heartbeats, attempt)
                try:
                    await self._stream(envelope, attempt)
                except (ProviderError, RequestError) as exc:  # a request this family cannot send
                    error = exc
                finally:
                    tg.cancel_scope.cancel()
        if deadline.cancelled_caught:
            error = ProviderTimeout("the request's deadline passed")
        if error is not None:
            await self._observe(error)
            return _failure(error, spec)
        if attempt.finish_reason is None:
            cut = MalformedResponse("the stream ended without a finish reason (truncated)")
            return _failure(cut, spec)
        usage = attempt.usage or TokenUsage()
        await sender.done(
            finish_reason=attempt.finish_reason,
            provider=self.provider,
            model=spec.model,
            usage=usage,
            cost_usd=round(cost_usd(spec, usage), 10),
            attempts=envelope.attempt,
            ttft_ms=attempt.ttft_ms,
        )
        await self._observe(None)
        return None

    async def _observe(self, error: OmniLLMError | None) -> None:
        """Share a change in what this provider does with us (``omni providers`` shows it)."""
        state: HealthState = "ok"
        if isinstance(error, FreeTierRefused):
            state = "free_tier_refused"
        elif isinstance(error, AuthenticationFailed):
            state = "auth_failed"
        elif error is not None:
            return  # transient failures belong to the circuit breaker, not here
        if state == self._health_state:
            return
        self._health_state = state
        reason = error.message if error is not None else ""
        await self.health.put(ProviderHealth(self.provider, state, reason, time.time()))

    async def _heartbeats(self, attempt: _Attempt) -> None:
        """Until the first token: a heartbeat every ``heartbeat_s``, so the client's
        first-frame timer measures the router, not a slow model thinking."""
        while True:
            await anyio.sleep(self.reliability.heartbeat_s)
            if attempt.streamed:
                return
            await attempt.sender.heartbeat()

    async def _stream(self, envelope: CallEnvelope, attempt: _Attempt) -> None:
        wire = self.family.build_request(
            envelope.request, model=attempt.spec.model, stream=True, options=self.live.spec.options
        )
        headers = {**self._headers, **wire.headers}
        if wire.auth is not None and wire.auth != self.live.spec.auth:
            headers = {**self.live.headers(auth=wire.auth), **wire.headers}
        url = self._base_url + wire.path
        assert self._http is not None
        try:
            async with self._http.stream(
                wire.method, url, content=wire.body, headers=headers
            ) as response:
                if response.status_code != 200:
                    body = await _read_capped(response.aiter_raw())
                    raise self.family.parse_error(
                        response.status_code, body, dict(response.headers), provider=self.provider
                    )
                await self._pump(response.aiter_raw(), attempt)
        except httpx.TransportError as exc:
            raise _transport_error(exc, self.provider) from exc

    async def _pump(self, chunks: AsyncIterator[bytes], attempt: _Attempt) -> None:
        parser = self.family.stream_parser(attempt.spec.model)
        while not attempt.done:
            limit = self.reliability.stall_timeout_s
            if not attempt.streamed:
                limit = self.reliability.ttft_timeout_s
            with anyio.move_on_after(limit) as scope:
                chunk = await anext(chunks, None)
            if scope.cancelled_caught:
                what = "no first token" if not attempt.streamed else "the stream stalled: nothing"
                raise ProviderTimeout(f"{self.provider}: {what} for {limit:g}s")
            if chunk is None:
                break
            await attempt.take(parser.feed(chunk))
        await attempt.take(parser.close())


async def _read_capped(chunks: AsyncIterator[bytes]) -> bytes:
    body = bytearray()
    async for chunk in chunks:
        body += chunk
        if len(body) > MAX_ERROR_BODY:
            break
    return bytes(body[:MAX_ERROR_BODY])


def _transport_error(exc: httpx.TransportError, provider: str) -> ProviderError:
    if isinstance(exc, httpx.TimeoutException):
        return ProviderTimeout(f"{provider}: {type(exc).__name__} while calling the API")
    detail = str(exc) or type(exc).__name__
    return ProviderUnavailable(f"{provider}: connection failed: {detail}", provider=provider)


def _failure(exc: OmniLLMError, spec: ModelSpec) -> Failure:
    retry_after = exc.retry_after if isinstance(exc, ProviderError) else None
    message = exc.message.removeprefix(f"{spec.provider}: ")
    return Failure(
        code=exc.code,
        message=f"{spec.id}: {message}",
        retryable=exc.retryable,
        retry_after=retry_after,
        provider=spec.provider,
    )
