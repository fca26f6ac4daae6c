"""A deterministic mock LLM provider speaking every wire family over real HTTP.

Tests point a real HTTP client (and so the whole provider stack) at the mock. Answers
depend only on the request, never on time or on Python's randomised ``hash``: the text
is ``"".join(answer_tokens(prompt, n))`` where ``prompt`` is the last user message's
text and ``n`` is ``settings.tokens`` capped by the request's max-tokens field (the
answer then ends as the family says "length"). When tools are offered, the tool choice
is not "none" and the user spoke last, the answer is instead one call to the first (or
the named) function with arguments ``{"input": prompt}``. ``prompt_tokens`` is
:func:`count_prompt_tokens` over the system text and the messages.

Base URL per provider row, from ``MockProvider.url(family)`` (``P`` is the port), and
the header the key goes in:

- ``openai`` (chat completions): ``http://127.0.0.1:P/v1``, Bearer;
- ``openai-responses``: ``http://127.0.0.1:P/v1``, Bearer;
- ``anthropic``: ``http://127.0.0.1:P/v1``, ``x-api-key`` or Bearer;
- ``gemini``: ``http://127.0.0.1:P/v1beta`` (``/v1`` works too), ``x-goog-api-key``;
- ``cohere``: ``http://127.0.0.1:P/v2``, Bearer;
- ``opencode`` (Zen): ``http://127.0.0.1:P/zen/v1``, the header each route reads.

Routes: ``POST /v1/chat/completions`` (and ``/chat/completions``), ``/v1/messages``,
``/v1beta/models/{model}:generateContent`` and ``…:streamGenerateContent?alt=sse``
(also under ``/v1``), ``/v2/chat``, ``/v1/responses``; the four Zen routes
``/zen/v1/chat/completions`` (Bearer), ``/zen/v1/messages`` (x-api-key),
``/zen/v1/responses`` (Bearer), ``/zen/v1/models/{model}:…`` (x-goog-api-key);
``GET /v1/models``, ``GET /zen/v1/models``, ``GET /healthz``. Each family answers,
streams and errs in its own shapes (see ``_mock_<family>.py``); Zen adds ``cost``.
A wrong key is a 401 and an unknown model a 404 except where upstream says otherwise,
which the mock copies: Gemini (400 ``API_KEY_INVALID``, 403 without a key) and Zen's
own checks (401 ``AuthError`` / ``ModelError``, 403 ``FreeTierError``).
Fault modes for the reliability tests (``429-retry-after``, ``reset``, ``cut``, …, see
``_mock_faults``) are picked by a ``fault-<name>`` model name, ``settings.faults[model]``
or ``settings.fault``; ``attempts`` and ``answered`` record what each model got.
``python -m omnillm.testing.mock_provider --port 0`` runs it standalone (``--fault``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any, Final

from aiohttp import web

from omnillm.testing import (
    _mock_anthropic,
    _mock_cohere,
    _mock_faults,
    _mock_gemini,
    _mock_openai,
    _mock_responses,
    _mock_zen,
)
from omnillm.testing._mock_common import (
    FAULT_PREFIX,
    FAULTS,
    VOCABULARY,
    Ask,
    Family,
    MockError,
    MockSettings,
    Plan,
    answer_tokens,
    count_prompt_tokens,
    make_plan,
    parse_body,
    presented_key,
)
from omnillm.testing._mock_faults import Delivery, delivery

__all__ = [
    "BASE_PATHS",
    "FAULTS",
    "VOCABULARY",
    "MockProvider",
    "MockSettings",
    "answer_tokens",
    "count_prompt_tokens",
    "main",
    "serve_until_signal",
]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

BASE_PATHS: Final[dict[str, str]] = {
    "openai": "/v1",
    "openai-responses": "/v1",
    "openai_responses": "/v1",
    "anthropic": "/v1",
    "gemini": "/v1beta",
    "google": "/v1beta",
    "cohere": "/v2",
    "opencode": "/zen/v1",
}
"""The path each provider row's base URL ends with, by family (or provider) name."""

_ROUTES: Final[tuple[tuple[str, Family], ...]] = (
    ("/v1/chat/completions", _mock_openai.FAMILY),
    ("/chat/completions", _mock_openai.FAMILY),
    ("/v1/messages", _mock_anthropic.FAMILY),
    ("/v1beta/models/{target}", _mock_gemini.FAMILY),
    ("/v1/models/{target}", _mock_gemini.FAMILY),
    ("/v2/chat", _mock_cohere.FAMILY),
    ("/v1/responses", _mock_responses.FAMILY),
)
_ZEN_ROUTES: Final[tuple[tuple[str, Family], ...]] = (
    ("/zen/v1/chat/completions", _mock_openai.FAMILY),
    ("/zen/v1/messages", _mock_anthropic.FAMILY),
    ("/zen/v1/responses", _mock_responses.FAMILY),
    ("/zen/v1/models/{target}", _mock_gemini.FAMILY),
)


class MockProvider:
    """A server speaking every wire family with deterministic answers.

    ``requests_served`` counts generation requests (every family, Zen's routes too),
    counted on arrival (before any byte of the response), including rejected ones;
    ``in_flight`` counts responses that are still sending (streams, and non-stream
    answers a fault delays or cuts), and drops before the stream's terminator
    (``[DONE]``, ``message_stop``, ``response.completed``, Gemini's finishing chunk) is
    written, so a client that has read the end sees it already decremented.

    ``attempts`` maps each model to the ``time.monotonic()`` arrival times of its
    requests (faulted or not; a request whose body names no model, or whose key is
    wrong, is not there); ``answered`` counts per model the whole answers sent (a
    stream counts before its terminator, like ``in_flight``; cut, stalled and
    malformed ones do not count). Faults: see ``_mock_faults`` and :class:`MockSettings`.
    """

    def __init__(self, settings: MockSettings | None = None) -> None:
        self.settings = settings if settings is not None else MockSettings()
        self.requests_served = 0
        self.in_flight = 0
        self.attempts: dict[str, list[float]] = {}
        self.answered: dict[str, int] = {}
        self._under_fault: dict[tuple[str, str], int] = {}
        self._stopping = asyncio.Event()
        self._arrival = asyncio.Event()
        """Set (and replaced) whenever ``attempts`` grows."""
        self._runner: web.AppRunner | None = None
        self._host = "127.0.0.1"
        self._port: int | None = None

    def app(self) -> web.Application:
        app = web.Application()
        for path, family in _ROUTES:
            app.router.add_post(path, self._handler(family, zen=False))
        for path, family in _ZEN_ROUTES:
            app.router.add_post(path, self._handler(family, zen=True))
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/zen/v1/models", self._zen_models)
        app.router.add_get("/healthz", self._healthz)
        return app

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        """Listen on ``host:port`` (0 picks a free port); returns once accepting."""
        # handler_cancellation: a client that hangs up ends its stream (and in_flight) at
        # once, as a real provider stops generating; a router's cancel tests rely on it.
        runner = web.AppRunner(
            self.app(), access_log=None, shutdown_timeout=0.5, handler_cancellation=True
        )
        await runner.setup()
        await web.TCPSite(runner, host, port).start()
        self._stopping, self._arrival = asyncio.Event(), asyncio.Event()
        self._runner, self._host = runner, host
        self._port = int(runner.addresses[0][1])

    async def stop(self) -> None:
        """Stop listening; hung and stalled responses drop their connections at once,
        streams still running are cancelled after a short grace."""
        self._stopping.set()
        if self._runner is not None:
            runner, self._runner, self._port = self._runner, None, None
            await runner.cleanup()

    async def wait_attempts(self, model: str, count: int = 1) -> None:
        """Return once ``attempts[model]`` holds ``count`` requests: how a test knows a
        request it cannot see answered (``hang``, a router's retry) reached the mock.
        Bound it with the caller's timeout."""
        while len(self.attempts.get(model, ())) < count:
            await self._arrival.wait()

    async def __aenter__(self) -> MockProvider:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the mock provider is not running")
        return self._port

    @property
    def base_url(self) -> str:
        """The OpenAI chat-completions base URL (``…/v1``)."""
        return self.url("openai")

    def url(self, family: str) -> str:
        """The base URL a provider row of ``family`` should use (see :data:`BASE_PATHS`)."""
        if family not in BASE_PATHS:
            raise ValueError(f"unknown family {family!r}; known: {', '.join(BASE_PATHS)}")
        return f"http://{self._host}:{self.port}{BASE_PATHS[family]}"

    def _check_key(self, request: web.Request, family: Family, *, zen: bool) -> None:
        """Raise ``auth`` unless the configured key came in a header the route reads
        (Zen's routes read only the first of the family's); ``detail`` says whether a
        key was sent at all (Gemini answers the two differently)."""
        key = self.settings.api_key
        if key is None:
            return
        presented = [presented_key(request, style) for style in family.auth[: 1 if zen else None]]
        if key not in presented:
            sent = any(p is not None for p in presented)
            raise MockError("auth", "wrong" if sent else "missing")

    def _handler(self, family: Family, *, zen: bool) -> Handler:
        async def handle(request: web.Request) -> web.StreamResponse:
            return await self._generate(request, family, zen=zen)

        return handle

    async def _generate(
        self, request: web.Request, family: Family, *, zen: bool
    ) -> web.StreamResponse:
        arrived = time.monotonic()
        self.requests_served += 1
        serial = self.requests_served
        if zen and self.settings.free_tier_refused:
            return _mock_zen.free_tier_refused()
        try:
            self._check_key(request, family, zen=zen)
            ask = family.parse(parse_body(await request.read()), request)
            self._record(ask.model, arrived)
            return await self._answer(request, family, ask, serial, zen=zen)
        except MockError as error:
            zen_answer = _mock_zen.error(error) if zen else None
            response = zen_answer if zen_answer is not None else family.error(error)
            response.headers.update(error.headers)
            return response

    async def _answer(
        self, request: web.Request, family: Family, ask: Ask, serial: int, *, zen: bool
    ) -> web.StreamResponse:
        """The answer to a valid request: its fault acts first (a refusal even for a
        model the mock does not serve), then the plan goes out as the fault says."""
        fault = _mock_faults.fault_for(ask.model, self.settings)
        if fault is not None:
            key = (ask.model, fault)
            self._under_fault[key] = self._under_fault.get(key, 0) + 1
            _mock_faults.refuse(fault, self._under_fault[key], self.settings, time.monotonic())
            if fault in _mock_faults.DROPS:
                return await self._drop(request, hang=fault == "hang")
        if ask.model not in self.settings.models and not ask.model.startswith(FAULT_PREFIX):
            raise MockError("model", ask.model)
        plan = make_plan(ask, self.settings, serial, zen=zen)
        if plan.ask.stream:
            script = family.script(plan)
            return await self._deliver(request, plan.model, delivery(script, fault, self.settings))
        return await self._reply(request, plan, family.response(plan), fault)

    async def _reply(
        self, request: web.Request, plan: Plan, body: dict[str, Any], fault: str | None
    ) -> web.StreamResponse:
        faulted = _mock_faults.json_delivery(json.dumps(body).encode(), fault, self.settings)
        if faulted is not None:
            return await self._deliver(request, plan.model, faulted)
        delay = self.settings.first_token_delay_s
        delay += self.settings.token_delay_s * max(0, len(plan.tokens) - 1)
        await asyncio.sleep(delay)
        self._count_answer(plan.model)
        return web.json_response(body)

    async def _drop(self, request: web.Request, *, hang: bool) -> web.StreamResponse:
        """Close the connection before any response header: at once (``reset``) or
        once the server stops (``hang``)."""
        if hang:
            await self._stopping.wait()
        if request.transport is not None:
            request.transport.close()
        return web.Response()  # never sent: aiohttp finds the connection closed

    async def _deliver(
        self, request: web.Request, model: str, delivery: Delivery
    ) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Cache-Control": "no-cache"})
        response.content_type = delivery.content_type
        if delivery.length is not None:
            response.content_length = delivery.length
        await response.prepare(request)
        self.in_flight += 1
        try:
            await self._send(response, delivery)
            if delivery.end == "stall":
                return await self._linger(request, response)
        finally:
            self.in_flight -= 1
        if delivery.answered:
            self._count_answer(model)
        for data in delivery.tail:
            await response.write(data)
        if delivery.end == "linger":
            return await self._linger(request, response)
        if delivery.end == "abort" and request.transport is not None:
            request.transport.close()
            return response
        await response.write_eof()
        return response

    async def _linger(
        self, request: web.Request, response: web.StreamResponse
    ) -> web.StreamResponse:
        """Keep the connection open, sending nothing, until the server stops; then drop it."""
        await self._stopping.wait()
        if request.transport is not None:
            request.transport.close()
        return response

    async def _send(self, response: web.StreamResponse, delivery: Delivery) -> None:
        """Write each frame at once; a content frame waits the first-token delay (the
        first one; the delivery's own when a fault sets one) or the per-token delay
        (later ones) before it goes."""
        settings, paced = self.settings, 0
        first = delivery.first_delay_s
        for frame in delivery.body:
            if frame.paced:
                if paced == 0:
                    await asyncio.sleep(settings.first_token_delay_s if first is None else first)
                else:
                    await asyncio.sleep(settings.token_delay_s)
                paced += 1
            await response.write(frame.data)

    def _record(self, model: str, arrived: float) -> None:
        self.attempts.setdefault(model, []).append(arrived)
        arrival, self._arrival = self._arrival, asyncio.Event()
        arrival.set()

    def _count_answer(self, model: str) -> None:
        self.answered[model] = self.answered.get(model, 0) + 1

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def _models(self, request: web.Request) -> web.Response:
        try:
            self._check_key(request, _mock_openai.FAMILY, zen=False)
        except MockError as error:
            return _mock_openai.FAMILY.error(error)
        return self._model_list()

    async def _zen_models(self, request: web.Request) -> web.Response:
        if self.settings.free_tier_refused:
            return _mock_zen.free_tier_refused()
        return self._model_list()

    def _model_list(self) -> web.Response:
        data = [
            {"id": m, "object": "model", "created": 0, "owned_by": "omnillm-mock"}
            for m in self.settings.models
        ]
        return web.json_response({"object": "list", "data": data})


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m omnillm.testing.mock_provider")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True, help="0 picks a free port")
    parser.add_argument("--tokens", type=int, default=MockSettings.tokens)
    parser.add_argument("--first-token-delay-ms", type=float, default=0.0)
    parser.add_argument("--token-delay-ms", type=float, default=0.0)
    parser.add_argument("--api-key", default=None)
    parser.add_argument("--free-tier-refused", action="store_true")
    parser.add_argument("--fault", choices=FAULTS, default=None, help="for every request")
    return parser.parse_args(argv)


async def _serve(args: argparse.Namespace) -> None:
    """Serve until SIGINT or SIGTERM; the listening line is printed only once bound."""
    settings = MockSettings(
        tokens=args.tokens,
        first_token_delay_s=args.first_token_delay_ms / 1000,
        token_delay_s=args.token_delay_ms / 1000,
        api_key=args.api_key,
        free_tier_refused=args.free_tier_refused,
        fault=args.fault,
    )
    await serve_until_signal(MockProvider(settings), args.host, args.port)


async def serve_until_signal(provider: MockProvider, host: str, port: int) -> None:
    """Serve ``provider`` until SIGINT or SIGTERM; the listening line is printed once bound."""
    stopped = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stopped.set)
    await provider.start(host, port)
    try:
        print(f"mock provider listening on {provider.base_url}", flush=True)
        await stopped.wait()
    finally:
        await provider.stop()


def main(argv: list[str] | None = None) -> int:
    asyncio.run(_serve(_parse_args(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
