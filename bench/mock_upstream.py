"""A fast, deterministic OpenAI chat-completions upstream for benchmarks.

Plain asyncio streams and hand-built HTTP/1.1 (keep-alive, chunked bodies), so a
streamed answer costs the mock a few tens of microseconds and the mock is never
what a benchmark measures. Run it in its own process::

    python -m bench.mock_upstream --port 0 [--tokens 20] [--ttft-ms 0] [--token-delay-ms 0]

It prints ``mock upstream listening on http://127.0.0.1:PORT/v1`` once bound.

Routes: ``POST …/chat/completions`` (any prefix), streamed or not; ``GET /healthz``
and ``GET …/models``. A streamed answer is OpenAI's shape: the role chunk, one chunk
per token, the finish chunk, the usage chunk (always sent, as with
``stream_options.include_usage``) and ``data: [DONE]``. Each token is its own write:
after ``--ttft-ms`` for the first, then ``--token-delay-ms`` apart; with no delay the
mock still yields to the event loop between tokens, so tokens leave as separate
writes as a real model's do (``--burst`` writes the whole answer at once instead).

The text depends only on the request: :func:`answer_tokens` of the last message's
text and the token count (``max_tokens`` caps it, then the finish reason is
``length``). Clients check every answer against it, so a mixed-up stream is an error.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import zlib
from dataclasses import dataclass
from typing import Any, Final

import orjson

__all__ = ["MockOptions", "answer_text", "answer_tokens", "main"]

_HEAD_LIMIT: Final = 64 * 1024
_SSE_HEAD: Final = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n"
    b"transfer-encoding: chunked\r\n"
)
_DONE: Final = b"data: [DONE]\n\n"
_END: Final = b"0\r\n\r\n"


@dataclass(frozen=True, slots=True)
class MockOptions:
    tokens: int = 20
    ttft_s: float = 0.0
    token_delay_s: float = 0.0
    burst: bool = False


def answer_tokens(prompt: str, n: int) -> list[str]:
    """The ``n`` tokens the mock answers ``prompt`` with (a tag of the prompt in each)."""
    tag = f"{zlib.crc32(prompt.encode()) & 0xFFFF:04x}"
    return [f"w{i}{tag} " for i in range(n)]


def answer_text(prompt: str, n: int) -> str:
    return "".join(answer_tokens(prompt, n))


def _chunked(data: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(data), data)


def _event(payload: dict[str, Any]) -> bytes:
    return _chunked(b"data: " + orjson.dumps(payload) + b"\n\n")


def _prompt(body: dict[str, Any]) -> str:
    messages = body.get("messages") or [{}]
    content = messages[-1].get("content") or ""
    if isinstance(content, list):
        return "\n".join(p.get("text", "") for p in content if isinstance(p, dict))
    return str(content)


class _Answer:
    """One request's answer: its chunks, prebuilt from the request body."""

    def __init__(self, body: dict[str, Any], options: MockOptions) -> None:
        self.model = str(body.get("model") or "mock")
        prompt = _prompt(body)
        limit = body.get("max_tokens") or body.get("max_completion_tokens")
        n = options.tokens if not isinstance(limit, int) else min(options.tokens, limit)
        self.tokens = answer_tokens(prompt, n)
        self.finish = "length" if n < options.tokens else "stop"
        self.prompt_tokens = len(prompt.split()) + 4
        self._base = {
            "id": "chatcmpl-mock",
            "object": "chat.completion.chunk",
            "created": 0,
            "model": self.model,
        }

    def _choice(self, delta: dict[str, str], finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return _event({**self._base, "choices": [choice]})

    def role(self) -> bytes:
        return self._choice({"role": "assistant", "content": ""})

    def token(self, text: str) -> bytes:
        return self._choice({"content": text})

    def tail(self) -> bytes:
        usage = self.usage()
        return (
            self._choice({}, self.finish)
            + _event({**self._base, "choices": [], "usage": usage})
            + _chunked(_DONE)
            + _END
        )

    def usage(self) -> dict[str, int]:
        n = len(self.tokens)
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": n,
            "total_tokens": self.prompt_tokens + n,
        }

    def whole(self) -> bytes:
        message = {"role": "assistant", "content": "".join(self.tokens)}
        choice = {"index": 0, "message": message, "finish_reason": self.finish}
        body = {
            **self._base,
            "object": "chat.completion",
            "choices": [choice],
            "usage": self.usage(),
        }
        return orjson.dumps(body)


def _response(status: str, body: bytes, content_type: str = "application/json") -> bytes:
    head = f"HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {len(body)}\r\n"
    return head.encode() + b"\r\n" + body


class MockServer:
    def __init__(self, options: MockOptions) -> None:
        self.options = options
        self.served = 0

    async def connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Serve requests on one connection, one after another, until it closes."""
        try:
            while await self._one(reader, writer):
                pass
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()

    async def _one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        method, path, _ = lines[0].split(" ", 2)
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length") or 0)
        body = await reader.readexactly(length) if length else b""
        keep = headers.get("connection", "").lower() != "close"
        if method == "POST" and path.endswith("/chat/completions"):
            await self._chat(body, writer, keep)
        elif method == "GET" and path.endswith("/models"):
            data = {"object": "list", "data": [{"id": "bench", "object": "model"}]}
            writer.write(_response("200 OK", orjson.dumps(data)))
        elif method == "GET" and path == "/healthz":
            writer.write(_response("200 OK", b"ok", "text/plain"))
        else:
            writer.write(_response("404 Not Found", b'{"error":{"message":"no route"}}'))
        await writer.drain()
        return keep

    async def _chat(self, raw: bytes, writer: asyncio.StreamWriter, keep: bool) -> None:
        self.served += 1
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            writer.write(_response("400 Bad Request", b'{"error":{"message":"bad JSON"}}'))
            return
        answer = _Answer(body, self.options)
        if not body.get("stream"):
            await asyncio.sleep(self.options.ttft_s)
            writer.write(_response("200 OK", answer.whole()))
            return
        connection = b"" if keep else b"connection: close\r\n"
        writer.write(_SSE_HEAD + connection + b"\r\n")
        await self._stream(answer, writer)

    async def _stream(self, answer: _Answer, writer: asyncio.StreamWriter) -> None:
        options = self.options
        if options.burst:
            await asyncio.sleep(options.ttft_s)
            parts = [answer.role(), *map(answer.token, answer.tokens), answer.tail()]
            writer.write(b"".join(parts))
            return
        role = answer.role()
        for i, text in enumerate(answer.tokens):
            await asyncio.sleep(options.ttft_s if i == 0 else options.token_delay_s)
            writer.write(role + answer.token(text) if i == 0 else answer.token(text))
        if not answer.tokens:
            writer.write(role)
        await asyncio.sleep(0)
        writer.write(answer.tail())


async def serve(host: str, port: int, options: MockOptions) -> None:
    """Serve until SIGINT or SIGTERM; the listening line is printed once bound."""
    mock = MockServer(options)
    server = await asyncio.start_server(mock.connection, host, port, backlog=2048)
    bound = server.sockets[0].getsockname()[1]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    print(f"mock upstream listening on http://{host}:{bound}/v1", flush=True)
    async with server:
        await stop.wait()
    print(f"mock upstream served {mock.served} chat requests", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.mock_upstream", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--tokens", type=int, default=20)
    parser.add_argument("--ttft-ms", type=float, default=0.0, help="delay before the first token")
    parser.add_argument("--token-delay-ms", type=float, default=0.0, help="delay between tokens")
    parser.add_argument("--burst", action="store_true", help="write each answer in one piece")
    args = parser.parse_args(argv)
    options = MockOptions(args.tokens, args.ttft_ms / 1000, args.token_delay_ms / 1000, args.burst)
    asyncio.run(serve(args.host, args.port, options))
    return 0


if __name__ == "__main__":
    sys.exit(main())
