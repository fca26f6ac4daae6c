"""The OpenAI-compatible HTTP gateway: ``POST /v1/chat/completions`` onto the bus.

Any OpenAI client (OpenClaw, the OpenAI SDKs, curl) points its base URL at
``http://HOST:PORT/v1``. Each request becomes one ``ChatRequest`` published through
one shared :class:`~omnillm.client.Client`; its frames come back as OpenAI SSE chunks
or one ``chat.completion``. Routes:

- ``POST /v1/chat/completions``: streamed or not, see :mod:`._openai_render`;
- ``GET /v1/models``: the aliases and the live catalog models, in OpenAI's list format;
- ``GET /healthz``: 200 while the NATS connection is up, else 503.

**Status first, then tokens.** A stream's ``200`` goes out with its first frame (the
``Start`` that comes with the first token), so an error before any token is a real
HTTP error status with OpenAI's error JSON, which clients retry or report as such. A
``Reset`` before any token is invisible. An error after the first token is one SSE
``{"error": ...}`` event and the end of the body, with no finish chunk and no
``[DONE]``: a client never takes a cut answer for a whole one.

**Headers.** ``x-omnillm-request-id``, ``-provider``, ``-model`` (``provider/model``),
``-tier`` and ``-overhead-ms``: the milliseconds from the gateway receiving the
request to the first frame arriving, so routing plus the upstream's own time to first
token. Non-streamed answers add ``-attempts``, ``-cost-usd`` and ``-ttft-ms`` (the
upstream's time to first token, as the caller measured it: overhead minus this is the
router's own share).

**Workers.** With ``omni up --workers N`` a gateway runs in each of N processes on one
port (``worker``): number 0, in the main process, binds it first and the others join
with ``SO_REUSEPORT``. Number 0 steers new connections to the others (``steer``): the
main process runs the router's actors, which were the busiest event loop, and answers
HTTP only while no other worker listens (one restarting, say), so the port never
refuses a connection. Each response names its process in ``x-omnillm-worker``. Only
number 0 counts metrics; the others relay ``/metrics`` to it over ``metrics_subject``
(a tap in every worker would decode every event once more per worker, about 0.2 ms of
CPU a request each).
"""

from __future__ import annotations

import ctypes
import logging
import socket
import struct
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping
from contextlib import aclosing, asynccontextmanager, suppress
from typing import Final

import anyio
import msgspec
import uvicorn
from anyio.abc import TaskStatus
from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from omnillm.actors._gateway_keys import KeyRefused, KeyRing
from omnillm.actors._openai_http import BUILTIN_ALIASES, error_body, error_status, models_body
from omnillm.actors._openai_http import parse_chat as parse_openai_chat
from omnillm.actors._openai_render import ChunkStream, Folded, completion_body, routed_model
from omnillm.bus import subjects
from omnillm.bus.connection import Bus
from omnillm.bus.messages import ChatRequest, Delta, Done, Error, Frame, Reset, Start
from omnillm.client import Client
from omnillm.config import GatewayKey, Settings
from omnillm.errors import (
    InvalidRequest,
    OmniLLMError,
    RequestTooLarge,
    StreamError,
    from_code,
)

__all__ = ["GatewayActor"]

log = logging.getLogger("omnillm.gateway")

_JSON: Final = "application/json"
_SSE_HEADERS: Final = {"cache-control": "no-cache", "x-accel-buffering": "no"}
_encode: Final = msgspec.json.Encoder().encode


def error_response(code: str, message: str, headers: Mapping[str, str] | None = None) -> Response:
    body = _encode(error_body(code, message))
    return Response(body, error_status(code), headers=headers, media_type=_JSON)


def _start_headers(rid: str, frame: Start | Done, received: float) -> dict[str, str]:
    headers = {
        "x-omnillm-request-id": rid,
        "x-omnillm-provider": frame.provider,
        "x-omnillm-model": routed_model(frame.provider, frame.model),
        "x-omnillm-overhead-ms": f"{(time.perf_counter() - received) * 1000:.1f}",
    }
    if isinstance(frame, Start) and frame.tier:
        headers["x-omnillm-tier"] = frame.tier
    return headers


class _Exchange:
    """One request's frames: the frames up to the first ``Start`` (or the end) are read
    before any byte of the response is chosen."""

    def __init__(self, frames: AsyncGenerator[Frame, None], received: float) -> None:
        self.frames = frames
        self.received = received
        self.rid = ""

    async def first(self) -> Start | Done:
        """The first frame that opens the answer; raises the error that came instead."""
        async for frame in self.frames:
            self.rid = frame.rid
            match frame:
                case Start() | Done():
                    return frame
                case Error():
                    raise from_code(frame.code, frame.message, provider=frame.provider)
                case _:  # a Reset before any token; a Delta cannot come before Start
                    continue
        raise StreamError("the stream ended without an answer")


class GatewayActor:
    """Serves the OpenAI HTTP API on ``host:port`` (0: a free port) until ``stop()``."""

    name = "gateway"

    def __init__(
        self,
        bus: Bus,
        settings: Settings,
        *,
        host: str = "127.0.0.1",
        port: int = 4000,
        env: Mapping[str, str] | None = None,
        metrics: CollectorRegistry | None = None,
        worker: int | None = None,
        metrics_subject: str | None = None,
        steer: int = 0,
    ) -> None:
        self.worker = worker
        """This process's number among several serving one port; None: the port is its own."""
        self.steer = steer
        """Processes that join this one's port later: new connections go to them (see
        ``_steer_to_others``)."""
        self.metrics_subject = metrics_subject
        """With ``metrics``: answer the other workers' scrapes here. Without: relay
        ``GET /metrics`` here, to the process that counts."""
        self.metrics = metrics
        """Served on ``GET /metrics`` when given (the process's cluster-wide counts)."""
        self.bus = bus
        self.settings = settings
        self.host = host
        self.port = port
        self.keys = KeyRing(settings.config.gateway.keys, env)
        self.max_request_bytes = settings.config.limits.max_request_bytes
        self._client: Client | None = None
        self._server: uvicorn.Server | None = None
        self._stopping = False

    # --- lifecycle ----------------------------------------------------------------------

    async def run(self, *, task_status: TaskStatus[int] = anyio.TASK_STATUS_IGNORED) -> None:
        """Serve until ``stop()``; reports the bound port once the socket listens.

        ``stop()`` closes the listening socket, lets in-flight answers finish, then
        returns; cancelling ``run`` cuts them instead.
        """
        if self.worker == 0 and self.port:  # the first of a group: nobody else may hold it
            _check_free(self.host, self.port)
        sock = _listen(self.host, self.port, reuse_port=self.worker is not None)
        if self.steer:
            _steer_to_others(sock, self.steer)
        timeout_s = self.settings.config.reliability.request_timeout_s
        async with (
            Client(bus=self.bus, timeout_s=timeout_s, subject=subjects.GATEWAY_REQUEST) as client,
            self._answering_scrapes(),
        ):
            self._client = client
            tag = [("x-omnillm-worker", str(self.worker))] if self.worker is not None else None
            config = uvicorn.Config(
                self.app(),
                log_level="warning",
                lifespan="off",
                log_config=None,
                access_log=False,
                headers=tag,
                proxy_headers=False,  # nothing here reads the client's address
                server_header=False,
            )
            config.load()
            server = self._server = uvicorn.Server(config)
            server.lifespan = config.lifespan_class(config)
            await server.startup(sockets=[sock])
            self.port = int(sock.getsockname()[1])
            server.should_exit = server.should_exit or self._stopping
            task_status.started(self.port)
            try:
                await server.main_loop()
            finally:
                with anyio.CancelScope(shield=True):
                    await server.shutdown(sockets=[sock])

    def stop(self) -> None:
        self._stopping = True
        if self._server is not None:
            self._server.should_exit = True

    @asynccontextmanager
    async def _answering_scrapes(self) -> AsyncIterator[None]:
        """Answer the other workers' relayed scrapes, if this gateway counts for them."""
        if self.metrics is None or self.metrics_subject is None:
            yield
            return
        subscription = await self.bus.subscribe(self.metrics_subject, self._answer_scrape)
        await self.bus.flush()
        try:
            yield
        finally:
            with anyio.CancelScope(shield=True), suppress(NatsError):
                await subscription.unsubscribe()

    async def _answer_scrape(self, msg: Msg) -> None:
        assert self.metrics is not None
        encoder, content_type = choose_encoder(msg.data.decode(errors="replace"))
        headers = {"Content-Type": content_type}
        await self.bus.nc.publish(msg.reply, encoder(self.metrics), headers=headers)

    def app(self) -> ASGIApp:
        """The ASGI app: chat completions straight to ``chat``, the rest through Starlette
        (its routing, middleware and per-chunk ``send`` wrappers cost about 3% of a
        request's CPU on the one route that carries the load)."""
        return _ChatFirst(self.chat, self._starlette())

    def _starlette(self) -> Starlette:
        routes = [
            Route(_CHAT_PATH, self.chat, methods=["POST"]),  # only for its 405 (see app)
            Route("/v1/models", self.models, methods=["GET"]),
            Route("/healthz", self.healthz, methods=["GET"]),
            Route("/v1/admin/{what}", self.admin, methods=["GET", "POST"]),
            Route("/metrics", self.prometheus, methods=["GET"]),
        ]
        handlers = {HTTPException: _http_error, Exception: _internal_error}
        return Starlette(routes=routes, exception_handlers=handlers)

    # --- routes -------------------------------------------------------------------------

    async def chat(self, request: Request) -> Response:
        received = time.perf_counter()
        content_type = request.headers.get("content-type", "")
        if not _is_json(content_type):
            message = f"Content-Type must be application/json, not {content_type[:100]!r}"
            return error_response("unsupported_media_type", message)
        try:
            chat, stream, include_usage = await self._parse(request)
        except KeyRefused as exc:
            return error_response(exc.code, exc.message)
        except OmniLLMError as exc:
            return error_response(exc.code, exc.message)
        assert self._client is not None
        exchange = _Exchange(self._client.stream(chat), received)
        try:
            first = await exchange.first()
        except OmniLLMError as exc:
            await exchange.frames.aclose()
            return error_response(exc.code, exc.message, _rid_header(exchange.rid))
        if stream:
            return _streamed(exchange, first, include_usage)
        return await _whole(exchange, first)

    async def _parse(self, request: Request) -> tuple[ChatRequest, bool, bool]:
        key = self.keys.identify(request.headers.get("authorization"))
        body = await self._body(request)
        parsed = parse_openai_chat(
            body,
            key_name=key.name if key is not None else None,
            idempotency_key=request.headers.get("idempotency-key"),
        )
        chat = self.keys.admit(key, parsed.request)
        return chat, parsed.stream, parsed.include_usage

    async def _body(self, request: Request, limit: int | None = None) -> bytes:
        """The body, refused as soon as its declared or its read size passes ``limit``
        (``reliability.max_request_bytes`` by default)."""
        limit = self.max_request_bytes if limit is None else limit
        if _declared_size(request.headers.get("content-length")) > limit:
            raise RequestTooLarge(f"the request is over {limit} bytes")
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise RequestTooLarge(f"the request is over {limit} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    async def models(self, request: Request) -> Response:
        try:
            key = self.keys.identify(request.headers.get("authorization"))
        except KeyRefused as exc:
            return error_response(exc.code, exc.message)
        rows = [(alias, "omnillm") for alias in BUILTIN_ALIASES]
        rows += [(alias, "omnillm") for alias in self.settings.config.routing.aliases]
        rows += [(model.id, model.provider) for model in self.settings.live_models()]
        rows = [row for row in rows if _visible(key, row[0])]
        return Response(_encode(models_body(rows)), media_type=_JSON)

    async def admin(self, request: Request) -> Response:
        """``/v1/admin/<what>``: the ``omni.v1.admin.<what>`` answer, for tools that speak
        HTTP (the OpenClaw plugin). GET takes the query string (``?by=model&since=...``),
        POST a JSON body; both become the NATS request's JSON."""
        try:
            self.keys.identify(request.headers.get("authorization"))
        except KeyRefused as exc:
            return error_response(exc.code, exc.message)
        what = request.path_params["what"]
        if what not in ADMIN_ROUTES:
            return error_response("not_found", f"no admin route {what!r}")
        try:
            body = await self._admin_body(request)
        except OmniLLMError as exc:
            return error_response(exc.code, exc.message)
        try:
            reply = await self.bus.nc.request(subjects.admin(what), body or b"{}", timeout=2.0)
        except (NoRespondersError, NatsTimeoutError):
            return error_response("no_router", f"nothing answers {subjects.admin(what)}")
        return Response(reply.data, media_type=_JSON)

    async def _admin_body(self, request: Request) -> bytes:
        """The query as JSON, or a POST's body (the admin actor checks it is JSON)."""
        if request.method != "POST":
            return _query_json(request)
        return await self._body(request, ADMIN_MAX_BYTES)

    async def prometheus(self, request: Request) -> Response:
        accept = request.headers.get("accept", "")
        if self.metrics is not None:
            encoder, content_type = choose_encoder(accept)
            return Response(encoder(self.metrics), media_type=content_type)
        if self.metrics_subject is None:
            return error_response("not_found", "this gateway serves no metrics")
        try:
            reply = await self.bus.nc.request(self.metrics_subject, accept.encode(), timeout=2.0)
        except (NoRespondersError, NatsTimeoutError):
            return error_response("no_router", "the omni up process that counts did not answer")
        content_type = (reply.headers or {}).get("Content-Type", "text/plain")
        return Response(reply.data, media_type=content_type)

    async def healthz(self, request: Request) -> Response:
        up = bool(self.bus.nc.is_connected)
        body = {"status": "ok" if up else "nats_disconnected"}
        return Response(_encode(body), 200 if up else 503, media_type=_JSON)


ADMIN_ROUTES: Final = frozenset({"providers", "models", "switch", "cost", "stats"})
ADMIN_MAX_BYTES: Final = 64 * 1024
"""Admin requests are a few fields; this is far more than any needs."""
_MAX_DIGITS: Final = 18
"""A Content-Length with more digits is over any limit (and ``int`` of a long enough
digit string raises)."""


def _is_json(content_type: str) -> bool:
    """No Content-Type (curl without ``-H``), ``application/json`` or ``…+json``."""
    media = content_type.partition(";")[0].strip().lower()
    return not media or media == "application/json" or media.endswith("+json")


def _declared_size(content_length: str | None) -> int:
    value = (content_length or "0").strip()
    if not (value.isascii() and value.isdigit()):
        raise InvalidRequest(f"Content-Length: not a number of bytes: {value[:40]!r}")
    return int(value) if len(value) <= _MAX_DIGITS else 10**_MAX_DIGITS


def _query_json(request: Request) -> bytes:
    """``?by=model&since=1700000000`` as ``{"by": "model", "since": 1700000000.0}``."""
    query: dict[str, object] = {}
    for name, value in request.query_params.items():
        try:
            query[name] = float(value)
        except ValueError:
            query[name] = value
    return _encode(query)


def _visible(key: GatewayKey | None, model: str) -> bool:
    return key is None or KeyRing.allows(key, model)


def _rid_header(rid: str) -> dict[str, str]:
    return {"x-omnillm-request-id": rid} if rid else {}


async def _internal_error(request: Request, exc: Exception) -> Response:
    """A bug is a 500 in OpenAI's error JSON (Starlette still logs it); the server goes on."""
    body = _encode(error_body("internal", f"the gateway failed: {type(exc).__name__}"))
    return Response(body, 500, media_type=_JSON)


async def _http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own 404/405 as OpenAI error JSON."""
    assert isinstance(exc, HTTPException)
    code = "not_found" if exc.status_code == 404 else "invalid_request"
    body = _encode(error_body(code, f"{request.method} {request.url.path}: {exc.detail}"))
    return Response(body, exc.status_code, media_type=_JSON)


class _ChatFirst:
    """``POST /v1/chat/completions`` to ``chat``; everything else to ``rest``.

    A bug in ``chat`` is a JSON 500 as Starlette's handler makes it (and logged); one
    after the response has started ends the connection, as under Starlette."""

    def __init__(self, chat: Callable[[Request], Awaitable[Response]], rest: ASGIApp) -> None:
        self.chat = chat
        self.rest = rest

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != _CHAT_PATH or scope["method"] != "POST":
            await self.rest(scope, receive, send)
            return
        request = Request(scope, receive)
        try:
            response = await self.chat(request)
        except Exception as exc:
            log.exception("gateway: %s %s failed", request.method, _CHAT_PATH)
            response = await _internal_error(request, exc)
        await response(scope, receive, send)


_CHAT_PATH: Final = "/v1/chat/completions"


class _EventStream(StreamingResponse):
    """An SSE body streamed from this task, without Starlette's second task listening for
    a disconnect (about 40 microseconds a request).

    A client that goes away mid-answer loses nothing it would have kept: the server drops
    what is written to a closed connection, the answer runs to its end (so its tokens
    are counted, as the provider bills them) and the frames are read to the last one."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.stream_response(send)


def _streamed(exchange: _Exchange, first: Start | Done, include_usage: bool) -> Response:
    headers = {**_start_headers(exchange.rid, first, exchange.received), **_SSE_HEADERS}
    chunks = ChunkStream(exchange.rid, include_usage=include_usage)
    return _EventStream(
        _sse_body(exchange, chunks, first), media_type="text/event-stream", headers=headers
    )


async def _sse_body(
    exchange: _Exchange, chunks: ChunkStream, first: Start | Done
) -> AsyncIterator[bytes]:
    """The SSE body: chunks until ``[DONE]``, or an error event and nothing after it."""
    async with aclosing(exchange.frames) as frames:
        if isinstance(first, Done):  # an empty answer: no token, so no Start
            opening = chunks.start(Start(first.rid, first.attempt, 0, first.provider, first.model))
            yield opening + chunks.done(first)
            return
        opening = chunks.start(first)  # written with the first token: one write, not two
        try:
            async for frame in frames:
                out, final = _render(chunks, frame)
                if opening and (out or final):
                    out, opening = opening + out, b""
                if out:
                    yield out
                if final:
                    return
        except OmniLLMError as exc:
            yield opening + chunks.error(exc.code, exc.message)
            return
        yield opening + chunks.error("stream_error", "the stream ended without a final frame")


def _render(chunks: ChunkStream, frame: Frame) -> tuple[bytes, bool]:
    """A frame's chunk bytes, and whether the body ends with them."""
    match frame:
        case Start():
            return chunks.start(frame), False
        case Delta():
            return chunks.delta(frame), False
        case Done():
            return chunks.done(frame), True
        case Error():
            return chunks.error(frame.code, frame.message), True
        case Reset():  # text already went out: it cannot be taken back
            return chunks.error("stream_error", f"the answer was reset: {frame.reason}"), True
    return b"", False


async def _whole(exchange: _Exchange, first: Start | Done) -> Response:
    """Every frame folded into one ``chat.completion``; any error is the response."""
    folded = Folded()
    done = first if isinstance(first, Done) else None
    try:
        async with aclosing(exchange.frames) as frames:
            async for frame in frames:
                match frame:
                    case Delta():
                        folded.add(frame)
                    case Reset():
                        folded.clear()
                    case Done():
                        done = frame
                    case Error():
                        raise from_code(frame.code, frame.message, provider=frame.provider)
    except OmniLLMError as exc:
        return error_response(exc.code, exc.message, _rid_header(exchange.rid))
    if done is None:
        return error_response("stream_error", "the stream ended without a final frame")
    headers = {
        **_start_headers(exchange.rid, first, exchange.received),
        "x-omnillm-provider": done.provider,
        "x-omnillm-model": routed_model(done.provider, done.model),
        "x-omnillm-attempts": str(done.attempts),
        "x-omnillm-cost-usd": f"{done.cost_usd:.10f}",
    }
    if done.ttft_ms is not None:
        headers["x-omnillm-ttft-ms"] = f"{done.ttft_ms:.1f}"
    body = completion_body(exchange.rid, folded, done)
    return Response(body, headers=headers, media_type=_JSON)


def _check_free(host: str, port: int) -> None:
    """``OSError`` (address in use) if anything listens on ``port``, even a group of
    ``SO_REUSEPORT`` sockets another ``omni up --workers`` of this user holds, which a
    socket of our own group would silently join."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is no owner
        probe.bind((host, port))


def _listen(host: str, port: int, *, reuse_port: bool = False) -> socket.socket:
    """The listening socket, bound here so a taken port is an ``OSError`` to the caller
    (uvicorn would exit the process). ``reuse_port``: processes of this user may listen
    on the same port (``SO_REUSEPORT``), and the kernel spreads connections over them."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY on accepted connections only when the
    # listening socket says TCP, and with Nagle on, every streamed answer after the first
    # on a keep-alive connection waited about 40 ms for the client's delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except OSError:
        sock.close()
        raise
    return sock


_SO_ATTACH_REUSEPORT_CBPF: Final = getattr(socket, "SO_ATTACH_REUSEPORT_CBPF", 51)
_SKF_AD_RANDOM: Final = 0xFFFFF000 + 56  # SKF_AD_OFF + SKF_AD_RANDOM, as an unsigned k


def _steer_to_others(sock: socket.socket, others: int) -> None:
    """Send the ``SO_REUSEPORT`` group's new connections to the ``others`` sockets that
    join after ``sock``, at random; ``sock`` gets them only when none of those listens.

    A classic BPF program on the group returns a socket's index in it: ``sock``, first
    in, is 0, the others 1..``others`` (a socket that closes is replaced by the last
    one). The program picks ``1 + random % others``; an index past the group's end (a
    worker down) makes the kernel fall back to its hash, which includes ``sock``.
    Linux only; where the kernel refuses it, the hash spreads connections as before.
    """
    program = [
        (0x20, _SKF_AD_RANDOM),  # ld rand        (BPF_LD | BPF_W | BPF_ABS)
        (0x94, others),  # mod #others    (BPF_ALU | BPF_MOD | BPF_K)
        (0x04, 1),  # add #1         (BPF_ALU | BPF_ADD | BPF_K)
        (0x16, 0),  # ret a          (BPF_RET | BPF_A)
    ]
    code = ctypes.create_string_buffer(
        b"".join(struct.pack("HBBI", op, 0, 0, k) for op, k in program)
    )
    try:
        sock.setsockopt(
            socket.SOL_SOCKET,
            _SO_ATTACH_REUSEPORT_CBPF,
            struct.pack("HL", len(program), ctypes.addressof(code)),
        )
    except OSError as exc:
        log.warning("gateway: cannot steer connections to the workers (%s); spreading them", exc)
