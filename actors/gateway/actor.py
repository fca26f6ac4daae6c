"""The OpenAI-compatible HTTP gateway: ``POST /v1/chat/completions`` onto the bus.

Any OpenAI client (OpenClaw, the OpenAI SDKs, curl) points its base URL at
``http://HOST:PORT/v1``. Each request becomes one ``ChatRequest`` published through
one shared :class:`~omnillm.client.Client`; its frames come back as OpenAI SSE chunks
or one ``chat.completion``. Routes:

- ``POST /v1/chat/completions``: parsed by :mod:`.openai_in`, answered by :mod:`.answers`
  (streamed or not) in the chunks :mod:`.openai_out` renders;
- ``GET /v1/models``: the aliases and the live catalog models, in OpenAI's list format;
- ``GET|POST /v1/admin/<what>``: the ``omni.v1.admin.<what>`` answer (see
  :mod:`omnillm.bus.admin`) as the bus gave it, a ``Failure`` too; 503 when none answers;
- ``GET /healthz``: 200 while the NATS connection is up, else 503.

**Status first, then tokens.** A stream's ``200`` goes out with its first frame (the
``Start`` that comes with the first token), so an error before any token is a real
HTTP error status with OpenAI's error JSON, which clients retry or report as such. A
``Reset`` before any token is invisible (see :mod:`.answers`).

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
refuses a connection (see :mod:`.sockets`). Each response names its process in
``x-omnillm-worker``. Only number 0 counts metrics; the others relay ``/metrics`` to it
over ``metrics_subject`` (a tap in every worker would decode every event once more per
worker, about 0.2 ms of CPU a request each).
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager, suppress
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
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from omnillm.actors.gateway.answers import (
    JSON,
    Exchange,
    error_response,
    rid_header,
    streamed,
    whole,
)
from omnillm.actors.gateway.keys import KeyRing
from omnillm.actors.gateway.openai_in import error_body, models_body
from omnillm.actors.gateway.openai_in import parse_chat as parse_openai_chat
from omnillm.actors.gateway.sockets import check_free, listen, steer_to_others
from omnillm.actors.planner.actor import ALIAS_NAMES
from omnillm.bus import subjects
from omnillm.bus.admin import ask
from omnillm.bus.connection import Bus
from omnillm.bus.messages import ChatRequest
from omnillm.client import Client
from omnillm.config import GatewayKey, Settings
from omnillm.errors import (
    InvalidRequest,
    KeyRefused,
    NoAnswer,
    NoRouter,
    OmniLLMError,
    RequestTooLarge,
)

__all__ = ["GatewayActor"]

log = logging.getLogger("omnillm.gateway")

_encode: Final = msgspec.json.Encoder().encode


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
        ``sockets.steer_to_others``)."""
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
            check_free(self.host, self.port)
        sock = listen(self.host, self.port, reuse_port=self.worker is not None)
        if self.steer:
            steer_to_others(sock, self.steer)
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
        except OmniLLMError as exc:  # a refused key, or a body that is too large or wrong
            return error_response(exc.code, exc.message)
        assert self._client is not None
        exchange = Exchange(self._client.stream(chat), received)
        try:
            first = await exchange.first()
        except OmniLLMError as exc:
            await exchange.frames.aclose()
            return error_response(exc.code, exc.message, rid_header(exchange.rid))
        if stream:
            return streamed(exchange, first, include_usage)
        return await whole(exchange, first)

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
        (``limits.max_request_bytes`` by default)."""
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
        rows = [(alias, "omnillm") for alias in ALIAS_NAMES]
        rows += [(alias, "omnillm") for alias in self.settings.config.routing.aliases]
        rows += [(model.id, model.provider) for model in self.settings.live_models()]
        rows = [row for row in rows if _visible(key, row[0])]
        return Response(_encode(models_body(rows)), media_type=JSON)

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
        try:  # Raw: a Failure goes back as it came, for the tool to read
            answer = await ask(self.bus, subjects.admin(what), body or b"{}", msgspec.Raw)
        except (NoRouter, NoAnswer):
            return error_response("no_router", f"nothing answers {subjects.admin(what)}")
        except OmniLLMError as exc:
            return error_response(exc.code, exc.message)
        return Response(bytes(answer), media_type=JSON)

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
        return Response(_encode(body), 200 if up else 503, media_type=JSON)


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


async def _internal_error(request: Request, exc: Exception) -> Response:
    """A bug is a 500 in OpenAI's error JSON (Starlette still logs it); the server goes on."""
    body = _encode(error_body("internal", f"the gateway failed: {type(exc).__name__}"))
    return Response(body, 500, media_type=JSON)


async def _http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own 404/405 as OpenAI error JSON."""
    assert isinstance(exc, HTTPException)
    code = "not_found" if exc.status_code == 404 else "invalid_request"
    body = _encode(error_body(code, f"{request.method} {request.url.path}: {exc.detail}"))
    return Response(body, exc.status_code, media_type=JSON)


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
