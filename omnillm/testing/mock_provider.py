"""A deterministic mock LLM provider speaking OpenAI chat completions over real HTTP.

Tests point a real HTTP client (and so the whole provider stack) at
``MockProvider.base_url``. Answers depend only on the request, never on time or on
Python's randomised ``hash``: the text is ``"".join(answer_tokens(prompt, n))`` where
``prompt`` is the last user message, so a test can compute the expected answer itself.

Routes: ``POST /v1/chat/completions`` (and ``/chat/completions``), ``GET /v1/models``,
``GET /healthz``. Errors use OpenAI's JSON error body. ``python -m
omnillm.testing.mock_provider --port 0`` runs it standalone.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import random
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Final

from aiohttp import web

__all__ = [
    "VOCABULARY",
    "MockProvider",
    "MockSettings",
    "answer_tokens",
    "count_prompt_tokens",
    "main",
]

VOCABULARY: Final[tuple[str, ...]] = (
    "the", "of", "and", "to", "in", "is", "you", "that", "it", "he",
    "was", "for", "on", "are", "as", "with", "his", "they", "at", "be",
    "this", "have", "from", "or", "one", "had", "by", "word", "but", "not",
    "what", "all", "were", "we", "when", "your", "can", "said", "there", "use",
    "each", "which", "she", "do", "how", "their", "if", "will", "up", "other",
)  # fmt: skip
DEFAULT_MODELS: Final[tuple[str, ...]] = ("mock-small", "mock-medium", "mock-large")
_DONE: Final[bytes] = b"data: [DONE]\n\n"


def answer_tokens(prompt: str, n: int) -> list[str]:
    """Return the ``n`` answer tokens for ``prompt``: the same prompt always gives the
    same tokens, on any machine. The first token has no leading space, later ones do."""
    seed = int.from_bytes(hashlib.sha256(prompt.encode()).digest(), "big")
    rng = random.Random(seed)
    words = [rng.choice(VOCABULARY) for _ in range(n)]
    return [word if i == 0 else f" {word}" for i, word in enumerate(words)]


def _text_of(content: object) -> str:
    """Text of a message's ``content``: a string, or the text parts of a list joined with
    newlines. Non-text parts (images, audio) and ``None`` contribute nothing."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return ""
    texts = [p["text"] for p in content if isinstance(p, dict) and p.get("type") == "text"]
    return "\n".join(t for t in texts if isinstance(t, str))


def count_prompt_tokens(messages: list[dict[str, Any]]) -> int:
    """Usage's ``prompt_tokens``: per message, ``len(text) // 4 + 4``."""
    return sum(len(_text_of(m.get("content"))) // 4 + 4 for m in messages)


def _last_user_prompt(messages: list[dict[str, Any]]) -> str:
    users = [m for m in messages if m.get("role") == "user"]
    return _text_of(users[-1].get("content")) if users else ""


@dataclass
class MockSettings:
    """How the mock answers; read per request, so tests may change it between requests."""

    tokens: int = 20
    first_token_delay_s: float = 0.0
    token_delay_s: float = 0.0
    models: list[str] = field(default_factory=lambda: list(DEFAULT_MODELS))
    api_key: str | None = None


class _RequestError(Exception):
    """An OpenAI-shaped error response: raised while validating, rendered by the handler."""

    def __init__(self, status: int, message: str, *, param: str | None, code: str | None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code

    def response(self) -> web.Response:
        error = {
            "message": self.message,
            "type": "invalid_request_error",
            "param": self.param,
            "code": self.code,
        }
        return web.json_response({"error": error}, status=self.status)


@dataclass(frozen=True)
class _ToolCall:
    id: str
    name: str
    arguments: str


@dataclass(frozen=True)
class _Plan:
    """Everything a response needs, decided before the first byte is sent."""

    model: str
    tokens: list[str]
    tool_call: _ToolCall | None
    finish_reason: str
    usage: dict[str, Any]
    stream: bool
    include_usage: bool


def _parse_body(raw: bytes) -> dict[str, Any]:
    try:
        body = json.loads(raw)
    except ValueError as exc:
        raise _RequestError(400, f"Invalid JSON body: {exc}", param=None, code=None) from exc
    if not isinstance(body, dict):
        raise _RequestError(400, "The request body must be a JSON object", param=None, code=None)
    return body


def _messages(body: dict[str, Any]) -> list[dict[str, Any]]:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _bad_param("messages", "'messages' must be a non-empty array")
    if not all(isinstance(m, dict) for m in messages):
        raise _bad_param("messages", "every message must be an object")
    return messages


def _bad_param(param: str, message: str) -> _RequestError:
    return _RequestError(400, message, param=param, code="invalid_value")


def _model(body: dict[str, Any], served: list[str]) -> str:
    model = body.get("model")
    if not isinstance(model, str):
        raise _bad_param("model", "you must provide a model parameter")
    if model not in served:
        message = f"The model `{model}` does not exist"
        raise _RequestError(404, message, param="model", code="model_not_found")
    return model


def _token_cap(body: dict[str, Any]) -> int | None:
    """``max_completion_tokens`` (preferred) or ``max_tokens``; ``None`` when neither."""
    for key in ("max_completion_tokens", "max_tokens"):
        cap = body.get(key)
        if cap is None:
            continue
        if isinstance(cap, bool) or not isinstance(cap, int) or cap < 1:
            raise _bad_param(key, f"'{key}' must be a positive integer")
        return cap
    return None


def _tool_name(body: dict[str, Any], messages: list[dict[str, Any]]) -> str | None:
    """The function to call, or ``None`` when the answer should be text: tools are
    offered, ``tool_choice`` is not ``"none"``, and the user spoke last."""
    tools, choice = body.get("tools"), body.get("tool_choice")
    if not tools or choice == "none" or messages[-1].get("role") != "user":
        return None
    try:
        if isinstance(choice, dict) and choice.get("type") == "function":
            return str(choice["function"]["name"])
        return str(tools[0]["function"]["name"])
    except (KeyError, TypeError, IndexError) as exc:
        raise _bad_param("tools", "malformed tool definition") from exc


def _tool_call(name: str, prompt: str) -> _ToolCall:
    call_id = "call_" + hashlib.sha256(prompt.encode()).hexdigest()[:8]
    return _ToolCall(id=call_id, name=name, arguments=json.dumps({"input": prompt}))


def _include_usage(body: dict[str, Any]) -> bool:
    options = body.get("stream_options")
    return isinstance(options, dict) and bool(options.get("include_usage"))


def _usage(prompt_tokens: int, completion_tokens: int) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0},
    }


def _plan(body: dict[str, Any], settings: MockSettings) -> _Plan:
    """Validate ``body`` and decide the answer; raises ``_RequestError`` on a bad request.

    A tool call ignores the token cap and counts ``len(arguments) // 4`` (at least 1)
    completion tokens. A text answer ends with ``"length"`` only when the cap truncated it.
    """
    messages = _messages(body)
    model, cap, name = _model(body, settings.models), _token_cap(body), _tool_name(body, messages)
    prompt, prompt_tokens = _last_user_prompt(messages), count_prompt_tokens(messages)
    stream, include = bool(body.get("stream")), _include_usage(body)
    if name is not None:
        call = _tool_call(name, prompt)
        usage = _usage(prompt_tokens, max(1, len(call.arguments) // 4))
        return _Plan(model, [], call, "tool_calls", usage, stream, include)
    n = settings.tokens if cap is None else min(settings.tokens, cap)
    finish = "length" if n < settings.tokens else "stop"
    tokens = answer_tokens(prompt, n)
    return _Plan(model, tokens, None, finish, _usage(prompt_tokens, n), stream, include)


def _completion(plan: _Plan, completion_id: str) -> dict[str, Any]:
    """The non-streaming ``chat.completion`` body."""
    message: dict[str, Any] = {"role": "assistant", "content": "".join(plan.tokens) or None}
    if plan.tool_call is not None:
        call = plan.tool_call
        function = {"name": call.name, "arguments": call.arguments}
        message["tool_calls"] = [{"id": call.id, "type": "function", "function": function}]
    message["refusal"] = None
    choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": plan.finish_reason}
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": plan.model,
        "choices": [choice],
        "usage": plan.usage,
    }


def _deltas(plan: _Plan) -> Iterator[dict[str, Any]]:
    """Content deltas after the role delta: one per token, or a tool call in three parts
    (header with empty arguments, then each half of the arguments), as OpenAI sends it."""
    if plan.tool_call is None:
        yield from ({"content": token} for token in plan.tokens)
        return
    call, half = plan.tool_call, len(plan.tool_call.arguments) // 2
    header = {"index": 0, "id": call.id, "type": "function"}
    yield {"tool_calls": [{**header, "function": {"name": call.name, "arguments": ""}}]}
    for part in (call.arguments[:half], call.arguments[half:]):
        yield {"tool_calls": [{"index": 0, "function": {"arguments": part}}]}


class _ChunkWriter:
    """Renders ``chat.completion.chunk`` events for one stream and writes each at once."""

    def __init__(self, response: web.StreamResponse, plan: _Plan, completion_id: str):
        self._response, self._plan = response, plan
        self._head = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": plan.model,
        }

    async def choice(self, delta: dict[str, Any], finish_reason: str | None = None) -> None:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        usage = {"usage": None} if self._plan.include_usage else {}
        await self._send({**self._head, "choices": [choice], **usage})

    async def usage(self) -> None:
        await self._send({**self._head, "choices": [], "usage": self._plan.usage})

    async def _send(self, chunk: dict[str, Any]) -> None:
        data = json.dumps(chunk, separators=(",", ":"))
        await self._response.write(f"data: {data}\n\n".encode())


class MockProvider:
    """An OpenAI-compatible chat-completions server with deterministic answers.

    ``requests_served`` counts chat-completion requests, counted on arrival (before any
    byte of the response), including rejected ones; ``in_flight`` counts streams that
    are still sending, and drops before ``[DONE]`` is written, so a client that has
    read ``[DONE]`` sees it already decremented.
    """

    def __init__(self, settings: MockSettings | None = None) -> None:
        self.settings = settings if settings is not None else MockSettings()
        self.requests_served = 0
        self.in_flight = 0
        self._runner: web.AppRunner | None = None
        self._host = "127.0.0.1"
        self._port: int | None = None

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat_completions)
        app.router.add_post("/chat/completions", self._chat_completions)
        app.router.add_get("/v1/models", self._models)
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
        self._runner, self._host = runner, host
        self._port = int(runner.addresses[0][1])

    async def stop(self) -> None:
        """Stop listening; streams still running are cancelled after a short grace."""
        if self._runner is not None:
            runner, self._runner, self._port = self._runner, None, None
            await runner.cleanup()

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
        return f"http://{self._host}:{self.port}/v1"

    def _check_auth(self, request: web.Request) -> None:
        key = self.settings.api_key
        if key is not None and request.headers.get("Authorization") != f"Bearer {key}":
            message = "Incorrect API key provided. You can find your API key in the mock."
            raise _RequestError(401, message, param=None, code="invalid_api_key")

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def _models(self, request: web.Request) -> web.Response:
        try:
            self._check_auth(request)
        except _RequestError as error:
            return error.response()
        data = [
            {"id": m, "object": "model", "created": 0, "owned_by": "omnillm-mock"}
            for m in self.settings.models
        ]
        return web.json_response({"object": "list", "data": data})

    async def _chat_completions(self, request: web.Request) -> web.StreamResponse:
        self.requests_served += 1
        completion_id = f"chatcmpl-mock-{self.requests_served}"
        try:
            self._check_auth(request)
            plan = _plan(_parse_body(await request.read()), self.settings)
        except _RequestError as error:
            return error.response()
        if plan.stream:
            return await self._stream(request, plan, completion_id)
        delays = self.settings.first_token_delay_s
        delays += self.settings.token_delay_s * max(0, len(plan.tokens) - 1)
        await asyncio.sleep(delays)
        return web.json_response(_completion(plan, completion_id))

    async def _stream(
        self, request: web.Request, plan: _Plan, completion_id: str
    ) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Cache-Control": "no-cache"})
        response.content_type = "text/event-stream"
        await response.prepare(request)
        self.in_flight += 1
        try:
            await self._send_events(_ChunkWriter(response, plan, completion_id), plan)
        finally:
            self.in_flight -= 1
        await response.write(_DONE)
        await response.write_eof()
        return response

    async def _send_events(self, writer: _ChunkWriter, plan: _Plan) -> None:
        """Role delta, paced content deltas, finish chunk, then usage if asked for."""
        await writer.choice({"role": "assistant", "content": ""})
        for i, delta in enumerate(_deltas(plan)):
            settings = self.settings
            await asyncio.sleep(settings.first_token_delay_s if i == 0 else settings.token_delay_s)
            await writer.choice(delta)
        await writer.choice({}, plan.finish_reason)
        if plan.include_usage:
            await writer.usage()


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m omnillm.testing.mock_provider")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True, help="0 picks a free port")
    parser.add_argument("--tokens", type=int, default=MockSettings.tokens)
    parser.add_argument("--first-token-delay-ms", type=float, default=0.0)
    parser.add_argument("--token-delay-ms", type=float, default=0.0)
    parser.add_argument("--api-key", default=None)
    return parser.parse_args(argv)


async def _serve(args: argparse.Namespace) -> None:
    """Serve until SIGINT or SIGTERM; the listening line is printed only once bound."""
    settings = MockSettings(
        tokens=args.tokens,
        first_token_delay_s=args.first_token_delay_ms / 1000,
        token_delay_s=args.token_delay_ms / 1000,
        api_key=args.api_key,
    )
    stopped = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stopped.set)
    provider = MockProvider(settings)
    await provider.start(args.host, args.port)
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
