"""One call to an upstream provider: HTTP over httpx, bytes through a wire parser, frames out.

The caller decides whether to call again; this module only makes one call and says
how it ended. Every wait is bounded: connect (httpx), the first token, the gap between
chunks, and whatever is left of the request's deadline (the caller's cancel scope).

A stream is a success only when the provider said it finished (a finish reason).
Once the finish reason and the usage have arrived the call ends at once, whether or
not a ``[DONE]`` line or the end of the connection follows; with a finish reason but
no usage yet, it waits at most ``finish_grace_s`` for the usage.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Final, Protocol

import anyio
import httpx

from omnillm import __version__
from omnillm.actors.caller._http1 import Http1Transport
from omnillm.bus.messages import ChatRequest, TokenUsage, ToolCallDelta
from omnillm.config import Settings
from omnillm.errors import ProviderError, ProviderTimeout, ProviderUnavailable
from omnillm.providers.base import StreamUpdate, WireFamily, WireOptions
from omnillm.providers.catalog import ModelSpec
from omnillm.providers.families import family_for

__all__ = [
    "Call",
    "Discard",
    "FrameSink",
    "Limits",
    "Upstream",
    "new_transport",
    "upstream_for",
]

log = logging.getLogger("omnillm.caller")

MAX_ERROR_BODY: Final = 64 * 1024
WRITE_TIMEOUT_S: Final = 30.0
MAX_URLS: Final = 1024
FIXED_HEADERS: Final = {"accept-encoding": "identity", "user-agent": f"omnillm/{__version__}"}


def new_transport(*, max_connections: int) -> httpx.AsyncBaseTransport:
    """One connection pool per provider (see :mod:`._http1`)."""
    return Http1Transport(max_connections=max_connections)


@dataclass(frozen=True, slots=True)
class Limits:
    ttft_s: float
    stall_s: float
    finish_grace_s: float
    heartbeat_s: float


class FrameSink(Protocol):
    """Where a call's frames go: the client's stream (``StreamSender``), or nowhere (a probe)."""

    async def start(self, provider: str, model: str) -> None: ...

    async def delta(self, text: str, tool_calls: list[ToolCallDelta] | None = None) -> None: ...

    async def heartbeat(self) -> None: ...


class Discard:
    """A sink for calls nobody reads: the prober's."""

    async def start(self, provider: str, model: str) -> None:
        pass

    async def delta(self, text: str, tool_calls: list[ToolCallDelta] | None = None) -> None:
        pass

    async def heartbeat(self) -> None:
        pass


class Call:
    """One call's progress: what reached the client, and how it ended."""

    def __init__(self, sender: FrameSink, provider: str, spec: ModelSpec) -> None:
        self.sender = sender
        self.provider = provider
        self.spec = spec
        self.started = self.last_frame = time.perf_counter()
        self.ttft_ms: float | None = None
        self.text: list[str] = []
        self.sent_tool_calls = False
        self.finish_reason: str | None = None
        self.usage: TokenUsage | None = None
        self.done = False

    @property
    def streamed(self) -> bool:
        """Text or tool calls from this call reached the client."""
        return self.ttft_ms is not None

    @property
    def complete(self) -> bool:
        """Finished with usage known: nothing more worth waiting for."""
        return self.done or (self.finish_reason is not None and self.usage is not None)

    async def take(self, update: StreamUpdate) -> None:
        if update.text or update.tool_calls:
            if self.ttft_ms is None:
                self.ttft_ms = round((time.perf_counter() - self.started) * 1000, 3)
                await self.sender.start(self.provider, self.spec.model)
            await self.sender.delta(update.text, update.tool_calls)
            self.text.append(update.text)
            self.sent_tool_calls = self.sent_tool_calls or bool(update.tool_calls)
        if update.finish_reason is not None:
            self.finish_reason = update.finish_reason
        if update.usage is not None:
            self.usage = update.usage
        self.done = self.done or update.done


class Upstream:
    """Makes calls to one provider: its base URL, fixed headers, family and limits.

    Requests go straight to an httpx transport (tests hand it ``httpx.MockTransport``):
    the client's layers (auth, redirects, cookies, hooks, default headers) are nothing a
    call needs and cost a sixth of its CPU. So the fixed headers are set here, including
    ``Accept-Encoding: identity``: the stream is parsed as it arrives, never decompressed.
    """

    def __init__(
        self,
        transport: httpx.AsyncBaseTransport,
        *,
        provider: str,
        base_url: str,
        headers: dict[str, str],
        family: WireFamily,
        options: WireOptions,
        limits: Limits,
        auth_headers: dict[str, dict[str, str]] | None = None,
        connect_timeout_s: float = 5.0,
    ) -> None:
        self.transport = transport
        self.provider = provider
        self.base_url = base_url.rstrip("/")
        self.headers = {**FIXED_HEADERS, **headers}
        self.family = family
        self.options = options
        self.limits = limits
        self.auth_headers = {
            style: {**FIXED_HEADERS, **auth} for style, auth in (auth_headers or {}).items()
        }
        """Headers for a route that reads another auth header, by auth style."""
        self._timeouts = {
            "connect": connect_timeout_s,
            "pool": connect_timeout_s,
            "read": None,
            "write": WRITE_TIMEOUT_S,
        }
        self._urls: dict[str, httpx.URL] = {}
        self._waiting: dict[Call, None] = {}
        """Calls in progress, for ``heartbeats`` (a dict: ordered, unlike a set)."""

    async def call(self, request: ChatRequest, call: Call) -> None:
        """Stream one answer into ``call``; raise ``ProviderError`` when it fails
        (``RequestError`` when this family cannot express the request)."""
        self._waiting[call] = None
        try:
            await self._stream(request, call)
        finally:
            self._waiting.pop(call, None)

    async def heartbeats(self) -> None:
        """Until its first token, a heartbeat to every call at least every ``heartbeat_s``,
        so the client's first-frame timer measures the router, not a slow model thinking.

        Run by the owner (the caller actor) while it serves: one task for every call, where
        a task per call cost about 40 microseconds a request. It ticks every half period and
        beats a call whose last frame is half a period old or more."""
        period = self.limits.heartbeat_s / 2
        while True:
            await anyio.sleep(period)
            now = time.perf_counter()
            for call in list(self._waiting):
                if call.streamed or now - call.last_frame < period:
                    continue
                call.last_frame = now
                try:
                    await call.sender.heartbeat()
                except Exception as exc:  # one client's stream must not stop the others'
                    log.warning("%s: heartbeat not sent: %r", self.provider, exc)

    async def _stream(self, request: ChatRequest, call: Call) -> None:
        wire = self.family.build_request(
            request, model=call.spec.model, stream=True, options=self.options
        )
        headers = {**self.headers, **wire.headers}
        if wire.auth is not None and wire.auth in self.auth_headers:
            headers = {**self.auth_headers[wire.auth], **wire.headers}
        outgoing = httpx.Request(
            wire.method,
            self._url(wire.path),
            content=wire.body,
            headers=headers,
            extensions={"timeout": self._timeouts},
        )
        try:
            response = await self._headers(outgoing, call)
            try:
                if response.status_code != 200:
                    body = await _read_capped(_chunks(response))
                    raise self.family.parse_error(
                        response.status_code, body, dict(response.headers), provider=self.provider
                    )
                await self._pump(_chunks(response), call)
            finally:
                await response.aclose()
        except httpx.TransportError as exc:
            raise _transport_error(exc, self.provider) from exc

    def _url(self, path: str) -> httpx.URL:
        """``base_url + path``, parsed once per path (a path per model at most)."""
        url = self._urls.get(path)
        if url is None:
            if len(self._urls) >= MAX_URLS:
                self._urls.clear()
            url = self._urls[path] = httpx.URL(self.base_url + path)
        return url

    async def _headers(self, outgoing: httpx.Request, call: Call) -> httpx.Response:
        """The response head, within the first-token limit: a provider that accepts the
        connection and says nothing is as silent as one that never answers."""
        with anyio.move_on_after(self.limits.ttft_s):
            return await self.transport.handle_async_request(outgoing)
        raise ProviderTimeout(f"{self.provider}: no response for {self.limits.ttft_s:g}s")

    async def _pump(self, chunks: AsyncIterator[bytes], call: Call) -> None:
        parser = self.family.stream_parser(call.spec.model)
        while not call.complete:
            limit, waiting_for = self._wait(call)
            with anyio.move_on_after(limit) as scope:
                chunk = await anext(chunks, None)
            if scope.cancelled_caught:
                if call.finish_reason is not None:
                    break  # finished; the usage did not follow within the grace
                raise ProviderTimeout(f"{self.provider}: {waiting_for} for {limit:g}s")
            if chunk is None:
                break
            await call.take(parser.feed(chunk))
        await call.take(parser.close())

    def _wait(self, call: Call) -> tuple[float, str]:
        if call.finish_reason is not None:
            return self.limits.finish_grace_s, "usage"
        if not call.streamed:  # the first-token limit counts from the request, headers included
            left = self.limits.ttft_s - (time.perf_counter() - call.started)
            return max(left, 0.0), "no first token"
        return self.limits.stall_s, "the stream stalled: nothing"


def _chunks(response: httpx.Response) -> AsyncIterator[bytes]:
    """The body's bytes as they arrive (a transport's response is always a stream)."""
    assert isinstance(response.stream, httpx.AsyncByteStream)
    return aiter(response.stream)


async def _read_capped(chunks: AsyncIterator[bytes]) -> bytes:
    body = bytearray()
    async for chunk in chunks:
        body += chunk
        if len(body) > MAX_ERROR_BODY:
            break
    return bytes(body[:MAX_ERROR_BODY])


def _transport_error(exc: httpx.TransportError, provider: str) -> ProviderError:
    """A timeout, or a connection that failed or was reset (retryable)."""
    if isinstance(exc, httpx.TimeoutException):
        return ProviderTimeout(f"{provider}: {type(exc).__name__} while calling the API")
    detail = str(exc) or type(exc.__cause__ or exc).__name__
    return ProviderUnavailable(f"{provider}: connection failed: {detail}", provider=provider)


def upstream_for(
    settings: Settings, provider: str, transport: httpx.AsyncBaseTransport
) -> Upstream:
    """The upstream of a configured provider, as its callers and the prober reach it."""
    live, r = settings.providers[provider], settings.config.reliability
    return Upstream(
        transport,
        provider=provider,
        base_url=live.spec.base_url,
        headers=live.headers(),
        family=family_for(live.spec.family),
        options=live.spec.options,
        limits=Limits(r.ttft_timeout_s, r.stall_timeout_s, r.finish_grace_s, r.heartbeat_s),
        auth_headers={s: live.headers(auth=s) for s in ("bearer", "x-api-key", "x-goog-api-key")},
        connect_timeout_s=r.connect_timeout_s,
    )
