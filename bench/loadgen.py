"""The load generator: a lean streaming HTTP client, the probes, and two load shapes.

- :class:`HttpStreams`: HTTP/1.1 over plain asyncio streams with a keep-alive pool,
  reading chunked (or sized) bodies. It costs the benchmark process little, so the
  client is not what limits a fast system's throughput.
- Probes: one request each, returning a :class:`Sample` (time to the first token,
  time to the whole answer, and an error, if any). Every answer is checked against
  the mock's deterministic text; a wrong or cut answer is an error, not a sample.
- :func:`closed_loop`: ``concurrency`` workers, each starting its next request when
  the last one ends, for a number of requests or a duration.
- :func:`open_loop`: requests started at a fixed rate whatever the answers do (with
  a cap on requests in flight, past which a start is counted as an error).
"""

from __future__ import annotations

import asyncio
import math
import re
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import urlsplit

import anyio
import orjson

from bench.mock_upstream import answer_text
from omnillm.bus.messages import Delta, Done, Error
from omnillm.client import Client

__all__ = [
    "Batch",
    "HttpStreams",
    "Probe",
    "Sample",
    "closed_loop",
    "http_probe",
    "nats_probe",
    "open_loop",
    "percentile",
]

_FIRST_CONTENT: Final = re.compile(rb'"content":\s*"[^"]')
_HEAD_LIMIT: Final = 64 * 1024


@dataclass(slots=True)
class Sample:
    ttft_s: float
    total_s: float
    error: str = ""


Probe = Callable[[int], Awaitable[Sample]]
"""One request, numbered (the number makes its prompt, so its answer, unique)."""


@dataclass(slots=True)
class Batch:
    samples: list[Sample] = field(default_factory=list)
    elapsed_s: float = 0.0

    @property
    def ok(self) -> list[Sample]:
        return [s for s in self.samples if not s.error]

    @property
    def errors(self) -> list[str]:
        return [s.error for s in self.samples if s.error]


def percentile(values: list[float], q: float) -> float:
    """The ``q``-th percentile (nearest rank); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


# --- HTTP -----------------------------------------------------------------------------


@dataclass(slots=True)
class _Response:
    status: int
    body: bytes
    first_token: float
    """``time.perf_counter()`` when the first content token arrived (0: never)."""


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.reused = False

    def close(self) -> None:
        self.writer.close()


class HttpStreams:
    """A keep-alive pool of HTTP/1.1 connections to one ``http://host:port``."""

    def __init__(self, base_url: str) -> None:
        parts = urlsplit(base_url)
        if parts.scheme != "http" or parts.hostname is None:
            raise ValueError(f"expected http://host:port/..., got {base_url!r}")
        self.host = parts.hostname
        self.port = parts.port or 80
        self.prefix = parts.path.rstrip("/")
        self._idle: list[_Connection] = []

    async def _connect(self, *, fresh: bool = False) -> _Connection:
        while self._idle and not fresh:
            conn = self._idle.pop()
            if not conn.reader.at_eof():
                conn.reused = True
                return conn
            conn.close()
        reader, writer = await asyncio.open_connection(self.host, self.port, limit=_HEAD_LIMIT)
        return _Connection(reader, writer)

    async def post(
        self, path: str, body: bytes, headers: dict[str, str] | None = None
    ) -> _Response:
        """POST ``body`` (JSON) and read the whole response; a stale kept-alive connection
        is retried once on a fresh one."""
        conn = await self._connect()
        try:
            return await self._exchange(conn, path, body, headers)
        except (ConnectionError, asyncio.IncompleteReadError) as exc:
            conn.close()
            if not conn.reused or (isinstance(exc, _Partial) and exc.started):
                raise
        return await self._exchange(await self._connect(fresh=True), path, body, headers)

    async def _exchange(
        self, conn: _Connection, path: str, body: bytes, headers: dict[str, str] | None
    ) -> _Response:
        extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        head = (
            f"POST {self.prefix}{path} HTTP/1.1\r\nhost: {self.host}:{self.port}\r\n"
            f"content-type: application/json\r\ncontent-length: {len(body)}\r\n{extra}\r\n"
        )
        conn.writer.write(head.encode() + body)
        try:
            response, keep = await _read_response(conn.reader)
        except BaseException:
            conn.close()
            raise
        if keep:
            self._idle.append(conn)
        else:
            conn.close()
        return response

    def close(self) -> None:
        for conn in self._idle:
            conn.close()
        self._idle.clear()


class _Partial(ConnectionError):
    def __init__(self, started: bool) -> None:
        super().__init__("the connection closed mid-response")
        self.started = started


async def _read_response(reader: asyncio.StreamReader) -> tuple[_Response, bool]:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        raise _Partial(started=bool(exc.partial)) from exc
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip().lower()
    body = _Body()
    try:
        if headers.get("transfer-encoding") == "chunked":
            await _read_chunked(reader, body)
        elif "content-length" in headers:
            body.add(await reader.readexactly(int(headers["content-length"])))
        else:
            body.add(await reader.read())
            return _Response(status, bytes(body.data), body.first_token), False
    except asyncio.IncompleteReadError as exc:
        raise _Partial(started=True) from exc
    keep = headers.get("connection") != "close"
    return _Response(status, bytes(body.data), body.first_token), keep


class _Body:
    """The body so far, and when its first content token arrived."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.first_token = 0.0
        self._scan_from = 0

    def add(self, chunk: bytes) -> None:
        self.data += chunk
        if not self.first_token:
            if _FIRST_CONTENT.search(self.data, self._scan_from):
                self.first_token = time.perf_counter()
            else:
                self._scan_from = max(0, len(self.data) - 32)


async def _read_chunked(reader: asyncio.StreamReader, body: _Body) -> None:
    while True:
        size_line = await reader.readuntil(b"\r\n")
        size = int(size_line.split(b";", 1)[0], 16)
        if size == 0:
            while await reader.readuntil(b"\r\n") != b"\r\n":
                pass  # trailers
            return
        chunk = await reader.readexactly(size + 2)
        body.add(chunk[:-2])


def check_sse(body: bytes, expected: str) -> str:
    """'' if ``body`` is a whole OpenAI stream with exactly the ``expected`` text, else why not."""
    parts: list[str] = []
    done = False
    for line in body.split(b"\n"):
        if not line.startswith(b"data:"):
            continue
        payload = line[5:].strip()
        if payload == b"[DONE]":
            done = True
            continue
        event: Any = orjson.loads(payload)
        if "error" in event:
            return f"error event: {str(event['error'])[:200]}"
        for choice in event.get("choices") or ():
            content = (choice.get("delta") or {}).get("content")
            if content:
                parts.append(content)
    if not done:
        return "no [DONE]"
    if "".join(parts) != expected:
        return "wrong text"
    return ""


def http_probe(
    http: HttpStreams,
    model: str,
    tokens: int,
    *,
    tag: str,
    headers: dict[str, str] | None = None,
    timeout_s: float = 60.0,
) -> Probe:
    """A streamed chat completion over HTTP (``stream_options.include_usage`` on)."""

    async def probe(i: int) -> Sample:
        prompt = f"bench {tag} {i}"
        body = orjson.dumps(
            {
                "model": model,
                "stream": True,
                "stream_options": {"include_usage": True},
                "messages": [{"role": "user", "content": prompt}],
            }
        )
        started = time.perf_counter()
        try:
            with anyio.fail_after(timeout_s):
                response = await http.post("/chat/completions", body, headers)
        except TimeoutError:
            return Sample(math.nan, time.perf_counter() - started, "timeout")
        except Exception as exc:  # a probe reports every failure as a sample, never raises
            return Sample(math.nan, time.perf_counter() - started, f"{type(exc).__name__}: {exc}")
        ended = time.perf_counter()
        if response.status != 200:
            return Sample(math.nan, ended - started, f"HTTP {response.status}")
        error = check_sse(response.body, answer_text(prompt, tokens))
        ttft = response.first_token - started if response.first_token else math.nan
        return Sample(ttft, ended - started, error)

    return probe


def nats_probe(client: Client, model: str, tokens: int, *, tag: str) -> Probe:
    """A request over the NATS client path (``omnillm.Client.stream``)."""

    async def probe(i: int) -> Sample:
        prompt = f"bench {tag} {i}"
        request = {"model": model, "messages": [{"role": "user", "content": prompt}]}
        started = time.perf_counter()
        first = 0.0
        parts: list[str] = []
        error = "no final frame"
        try:
            async for frame in client.stream(request):
                if isinstance(frame, Delta):
                    first = first or time.perf_counter()
                    parts.append(frame.text)
                elif isinstance(frame, Done):
                    error = ""
                elif isinstance(frame, Error):
                    error = f"{frame.code}: {frame.message[:200]}"
        except Exception as exc:  # the client's own errors (NoRouter, StreamStalled, ...)
            error = f"{type(exc).__name__}: {exc}"
        ended = time.perf_counter()
        if not error and "".join(parts) != answer_text(prompt, tokens):
            error = "wrong text"
        return Sample(first - started if first else math.nan, ended - started, error)

    return probe


# --- load shapes ----------------------------------------------------------------------


async def closed_loop(
    probe: Probe,
    *,
    concurrency: int,
    requests: int | None = None,
    duration_s: float | None = None,
    numbers: Iterator[int],
) -> Batch:
    """``concurrency`` workers back to back, until ``requests`` have started or
    ``duration_s`` has passed (requests in flight then still finish and count)."""
    if (requests is None) == (duration_s is None):
        raise ValueError("give requests or duration_s")
    batch = Batch()
    started = time.perf_counter()
    until = started + duration_s if duration_s is not None else math.inf
    left = [requests if requests is not None else -1]

    async def worker() -> None:
        while left[0] != 0 and time.perf_counter() < until:
            left[0] -= 1
            batch.samples.append(await probe(next(numbers)))

    async with anyio.create_task_group() as tg:
        for _ in range(concurrency):
            tg.start_soon(worker)
    batch.elapsed_s = time.perf_counter() - started
    return batch


async def open_loop(
    probe: Probe,
    *,
    rate: float,
    duration_s: float,
    numbers: Iterator[int],
    max_in_flight: int = 1024,
) -> Batch:
    """A request every ``1/rate`` seconds for ``duration_s``, whatever the answers do.

    A start that would exceed ``max_in_flight`` is an error ("overloaded"), so a
    system that cannot keep up shows errors rather than an unbounded queue.
    """
    batch = Batch()
    in_flight = [0]

    async def one(i: int) -> None:
        in_flight[0] += 1
        try:
            batch.samples.append(await probe(i))
        finally:
            in_flight[0] -= 1

    started = time.perf_counter()
    count = int(rate * duration_s)
    async with anyio.create_task_group() as tg:
        for k in range(count):
            delay = started + k / rate - time.perf_counter()
            if delay > 0:
                await anyio.sleep(delay)
            if in_flight[0] >= max_in_flight:
                batch.samples.append(Sample(math.nan, 0.0, "overloaded"))
                continue
            tg.start_soon(one, next(numbers))
    batch.elapsed_s = time.perf_counter() - started
    return batch
