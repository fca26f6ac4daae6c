"""Frames rendered as OpenAI responses, without I/O: SSE chunks or one completion.

A stream, as OpenAI sends it::

    data: {"id":…,"object":"chat.completion.chunk",…,"choices":[{"index":0,
           "delta":{"role":"assistant","content":""},"finish_reason":null}]}
    data: {…"delta":{"content":"Hel"}…}
    data: {…"delta":{"tool_calls":[{"index":0,"id":"call_1","type":"function",
           "function":{"name":"f","arguments":""}}]}…}
    data: {…"delta":{},"finish_reason":"stop"}]}
    data: {…"choices":[],"usage":{…}}          (only with stream_options.include_usage)
    data: [DONE]

An error after the first chunk is one ``data: {"error": {...}}`` event and then the
end of the body: no finish chunk and no ``[DONE]``, so no client mistakes a cut
answer for a whole one.
"""

from __future__ import annotations

import time
from typing import Any, Final

import msgspec

from omnillm.actors.gateway.openai_in import error_body
from omnillm.bus.messages import Delta, Done, Start, TokenUsage, ToolCallDelta

__all__ = ["DONE_EVENT", "ChunkStream", "Folded", "completion_body", "sse", "usage_body"]

DONE_EVENT: Final = b"data: [DONE]\n\n"
_encode: Final = msgspec.json.Encoder().encode


def sse(payload: dict[str, Any]) -> bytes:
    return b"data: " + _encode(payload) + b"\n\n"


def routed_model(provider: str, model: str) -> str:
    return f"{provider}/{model}"


def usage_body(usage: TokenUsage) -> dict[str, Any]:
    return {
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.input_tokens + usage.output_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cached_input_tokens},
        "completion_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
    }


def _tool_call(piece: ToolCallDelta) -> dict[str, Any]:
    """One tool-call fragment: the first carries ``id``, ``type`` and the name."""
    entry: dict[str, Any] = {"index": piece.index}
    if isinstance(piece.id, str):
        entry["id"] = piece.id
        entry["type"] = "function"
    function: dict[str, Any] = {"arguments": piece.arguments}
    if isinstance(piece.name, str):
        function["name"] = piece.name
    entry["function"] = function
    return entry


class ChunkStream:
    """One streamed answer as ``chat.completion.chunk`` events.

    ``model`` follows the newest ``Start``: after a continuation on another model, the
    chunks name the model that wrote them.
    """

    def __init__(self, rid: str, *, include_usage: bool, created: int | None = None) -> None:
        self.id = f"chatcmpl-{rid}"
        self.created = int(time.time()) if created is None else created
        self.model = ""
        self.include_usage = include_usage
        self.opened = False
        """The role chunk went out: from now on an error is an SSE event."""

    def _chunk(self, delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        chunk: dict[str, Any] = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [choice],
        }
        if self.include_usage:
            chunk["usage"] = None
        return sse(chunk)

    def start(self, frame: Start) -> bytes:
        self.model = routed_model(frame.provider, frame.model)
        if self.opened:
            return b""
        self.opened = True
        return self._chunk({"role": "assistant", "content": ""})

    def delta(self, frame: Delta) -> bytes:
        delta: dict[str, Any] = {}
        if frame.text:
            delta["content"] = frame.text
        if frame.tool_calls:
            delta["tool_calls"] = [_tool_call(piece) for piece in frame.tool_calls]
        return self._chunk(delta) if delta else b""

    def done(self, frame: Done) -> bytes:
        """The finish chunk, the usage chunk if asked for, and ``[DONE]``."""
        self.model = routed_model(frame.provider, frame.model)
        out = self._chunk({}, frame.finish_reason)
        if self.include_usage:
            out += sse(
                {
                    "id": self.id,
                    "object": "chat.completion.chunk",
                    "created": self.created,
                    "model": self.model,
                    "choices": [],
                    "usage": usage_body(frame.usage),
                }
            )
        return out + DONE_EVENT

    @staticmethod
    def error(code: str, message: str) -> bytes:
        return sse(error_body(code, message))


class Folded:
    """Frames folded into one answer, for a non-streamed response."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.tools: dict[int, dict[str, Any]] = {}

    def add(self, frame: Delta) -> None:
        self.parts.append(frame.text)
        for piece in frame.tool_calls:
            call = self.tools.setdefault(
                piece.index,
                {"id": "", "type": "function", "function": {"name": "", "arguments": ""}},
            )
            if isinstance(piece.id, str):
                call["id"] = piece.id
            if isinstance(piece.name, str):
                call["function"]["name"] += piece.name
            call["function"]["arguments"] += piece.arguments

    def clear(self) -> None:
        self.parts.clear()
        self.tools.clear()


def completion_body(rid: str, folded: Folded, done: Done, created: int | None = None) -> bytes:
    """A whole ``chat.completion``: the text (``null`` when only tools were called),
    the tool calls, the finish reason and the usage."""
    text = "".join(folded.parts)
    message: dict[str, Any] = {
        "role": "assistant",
        "content": text if text or not folded.tools else None,
        "refusal": None,
    }
    if folded.tools:
        message["tool_calls"] = [folded.tools[i] for i in sorted(folded.tools)]
    choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": done.finish_reason}
    return _encode(
        {
            "id": f"chatcmpl-{rid}",
            "object": "chat.completion",
            "created": int(time.time()) if created is None else created,
            "model": routed_model(done.provider, done.model),
            "choices": [choice],
            "usage": usage_body(done.usage),
        }
    )
