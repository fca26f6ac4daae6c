"""What every wire-format family provides: pure translation, no I/O.

A family module exposes one object satisfying :class:`WireFamily`. The caller actor
does the I/O: it adds auth headers, sends the :class:`WireRequest` over httpx, feeds
the response bytes to a :class:`StreamParser` (one per stream) and maps an error
response with :meth:`WireFamily.parse_error`.
"""

from __future__ import annotations

from typing import Protocol

from msgspec import Struct

from omnillm.bus.messages import ChatRequest, TokenUsage, ToolCall, ToolCallDelta
from omnillm.errors import ProviderError

__all__ = [
    "ParsedResponse",
    "StreamParser",
    "StreamUpdate",
    "WireFamily",
    "WireOptions",
    "WireRequest",
]


class WireOptions(Struct, frozen=True):
    """Per-provider knobs a family honours when building a request."""

    max_tokens_field: str = "max_tokens"
    """``max_tokens`` or ``max_completion_tokens`` (OpenAI and Azure reasoning models)."""
    stream_usage: bool = True
    """Send ``stream_options.include_usage`` (some compatible servers reject it)."""


class WireRequest(Struct):
    path: str
    """Appended to the provider's base URL, e.g. ``/chat/completions``."""
    body: bytes
    headers: dict[str, str] = {}
    method: str = "POST"


class StreamUpdate(Struct):
    """Everything one network read of a stream carried, merged.

    Merging per read is deliberate: one read becomes at most one ``Delta`` frame.
    """

    text: str = ""
    tool_calls: list[ToolCallDelta] = []
    finish_reason: str | None = None
    usage: TokenUsage | None = None
    done: bool = False
    """The stream's explicit terminator was seen (``[DONE]``, ``message_stop``)."""


class ParsedResponse(Struct):
    text: str
    finish_reason: str
    usage: TokenUsage
    tool_calls: list[ToolCall] = []
    model: str = ""


class StreamParser(Protocol):
    def feed(self, data: bytes) -> StreamUpdate:
        """Parse the next bytes; raise a ``ProviderError`` for an error inside the stream."""
        ...

    def close(self) -> StreamUpdate:
        """The connection ended: flush a last event that had no trailing blank line."""
        ...


class WireFamily(Protocol):
    name: str

    def build_request(
        self, request: ChatRequest, *, model: str, stream: bool, options: WireOptions
    ) -> WireRequest: ...

    def stream_parser(self) -> StreamParser: ...

    def parse_response(self, body: bytes) -> ParsedResponse: ...

    def parse_error(
        self, status: int, body: bytes, headers: dict[str, str], *, provider: str
    ) -> ProviderError: ...
