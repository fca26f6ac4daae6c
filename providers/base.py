"""What every wire-format family provides: pure translation, no I/O.

A family module exposes one object satisfying :class:`WireFamily`. The caller actor
does the I/O: it adds auth headers, sends the :class:`WireRequest` over httpx, feeds
the response bytes to a :class:`StreamParser` (one per stream) and maps an error
response with :meth:`WireFamily.parse_error`.
"""

from __future__ import annotations

from typing import Literal, Protocol

from msgspec import Struct

from omnillm.bus.messages import ChatRequest, TokenUsage, ToolCall, ToolCallDelta
from omnillm.errors import ProviderError

AuthStyle = Literal["bearer", "api-key", "x-api-key", "x-goog-api-key", "none"]

__all__ = [
    "AuthStyle",
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
    chat_path: str | None = None
    """The request path when it differs from the family's; ``{model}`` is filled in
    (Azure: ``/deployments/{model}/chat/completions``)."""
    query: dict[str, str] = {}
    """Query parameters every request carries (Azure: ``api-version``)."""
    tool_id_style: Literal["any", "mistral9"] = "any"
    """Mistral accepts only 9-character alphanumeric tool call ids."""


class WireRequest(Struct):
    path: str
    """Appended to the provider's base URL, e.g. ``/chat/completions``."""
    body: bytes
    headers: dict[str, str] = {}
    method: str = "POST"
    auth: AuthStyle | None = None
    """The auth header this route reads, when it is not the provider's usual one
    (OpenCode Zen's routes differ). The caller adds the key; adapters never see it."""


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

    def stream_parser(self, model: str) -> StreamParser: ...

    def parse_response(self, body: bytes, model: str) -> ParsedResponse: ...

    def parse_error(
        self, status: int, body: bytes, headers: dict[str, str], *, provider: str
    ) -> ProviderError: ...
