"""One request's frames as an HTTP answer in OpenAI's shape: an SSE stream or one body.

**Status first, then tokens.** The frames up to the first ``Start`` (or the end) are
read before any byte of the response is chosen, so an error before any token is a real
HTTP error status with OpenAI's error JSON. An error after the first token is one SSE
``{"error": ...}`` event and the end of the body, with no finish chunk and no
``[DONE]``: a client never takes a cut answer for a whole one.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from contextlib import aclosing
from typing import Final

import msgspec
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from omnillm.actors.gateway.openai_in import error_body, error_status
from omnillm.actors.gateway.openai_out import ChunkStream, Folded, completion_body, routed_model
from omnillm.bus.messages import Delta, Done, Error, Frame, Reset, Start
from omnillm.errors import OmniLLMError, StreamError, from_code

__all__ = ["JSON", "Exchange", "error_response", "rid_header", "streamed", "whole"]

JSON: Final = "application/json"
_SSE_HEADERS: Final = {"cache-control": "no-cache", "x-accel-buffering": "no"}
_encode: Final = msgspec.json.Encoder().encode


def error_response(code: str, message: str, headers: Mapping[str, str] | None = None) -> Response:
    body = _encode(error_body(code, message))
    return Response(body, error_status(code), headers=headers, media_type=JSON)


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


class Exchange:
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


def rid_header(rid: str) -> dict[str, str]:
    return {"x-omnillm-request-id": rid} if rid else {}


class _EventStream(StreamingResponse):
    """An SSE body streamed from this task, without Starlette's second task listening for
    a disconnect (about 40 microseconds a request).

    A client that goes away mid-answer loses nothing it would have kept: the server drops
    what is written to a closed connection, the answer runs to its end (so its tokens
    are counted, as the provider bills them) and the frames are read to the last one."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.stream_response(send)


def streamed(exchange: Exchange, first: Start | Done, include_usage: bool) -> Response:
    headers = {**_start_headers(exchange.rid, first, exchange.received), **_SSE_HEADERS}
    chunks = ChunkStream(exchange.rid, include_usage=include_usage)
    return _EventStream(
        _sse_body(exchange, chunks, first), media_type="text/event-stream", headers=headers
    )


async def _sse_body(
    exchange: Exchange, chunks: ChunkStream, first: Start | Done
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


async def whole(exchange: Exchange, first: Start | Done) -> Response:
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
        return error_response(exc.code, exc.message, rid_header(exchange.rid))
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
    return Response(body, headers=headers, media_type=JSON)
