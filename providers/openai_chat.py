"""The OpenAI chat-completions wire family, spoken by OpenAI and every compatible provider.

Pure translation (providers.md §1): a ``ChatRequest`` becomes a ``/chat/completions``
body, and response bodies, stream bytes and error bodies become OmniLLM values. Auth
headers, base URLs, retries and I/O belong to the caller.

Errors raised while parsing a stream or a 200 body carry no provider name: the parser
is not told whose stream it reads, so the caller fills ``error.provider`` in.
"""

from __future__ import annotations

import hashlib
from typing import Any, Final
from urllib.parse import urlencode

import msgspec
from msgspec import UNSET, Struct

from omnillm.bus.messages import (
    ChatRequest,
    FunctionCall,
    Message,
    TokenUsage,
    ToolCall,
    ToolCallDelta,
)
from omnillm.errors import (
    MalformedResponse,
    ProviderError,
)
from omnillm.providers._errors import DECODE_ERRORS, body_text, decode, make_error
from omnillm.providers.base import (
    ParsedResponse,
    StreamUpdate,
    WireFamily,
    WireOptions,
    WireRequest,
)
from omnillm.providers.sse import SSEDecoder, SSEEvent

__all__ = ["FAMILY", "OpenAIChatFamily", "OpenAIChatStreamParser", "mistral_tool_id"]

_PATH: Final = "/chat/completions"
_HEADERS: Final = {"Content-Type": "application/json"}
_OPTIONAL_FIELDS: Final = ("tools", "tool_choice", "temperature", "stop")
_DONE: Final = b"[DONE]"
_BASE62: Final = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
"""How much of a bad body or frame an error message quotes."""


# --- wire shapes: only the fields we read; unknown fields are ignored ------------------


class _PromptDetails(Struct):
    cached_tokens: int | None = None


class _CompletionDetails(Struct):
    reasoning_tokens: int | None = None


class _Usage(Struct):
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    prompt_tokens_details: _PromptDetails | None = None
    completion_tokens_details: _CompletionDetails | None = None


class _ErrorDetail(Struct):
    message: str | None = None
    type: str | None = None
    code: str | int | None = None


class _FunctionFragment(Struct):
    name: str | None = None
    arguments: str | None = None


class _ToolCallFragment(Struct):
    index: int | None = None
    id: str | None = None
    function: _FunctionFragment | None = None


class _Delta(Struct):
    content: str | None = None
    tool_calls: list[_ToolCallFragment] | None = None


class _ChunkChoice(Struct):
    delta: _Delta | None = None
    finish_reason: str | None = None


class _Chunk(Struct):
    choices: list[_ChunkChoice] | None = None
    usage: _Usage | None = None
    error: _ErrorDetail | None = None


class _ResponseMessage(Struct):
    content: str | None = None
    tool_calls: list[_ToolCallFragment] | None = None


class _ResponseChoice(Struct):
    message: _ResponseMessage
    finish_reason: str | None = None


class _Response(Struct):
    choices: list[_ResponseChoice] | None = None
    usage: _Usage | None = None
    model: str | None = None
    error: _ErrorDetail | None = None


class _ErrorBody(Struct):
    """OpenAI's ``{"error": {...}}`` and the shapes compatible servers send instead."""

    error: _ErrorDetail | str | None = None
    message: str | None = None
    detail: Any = None
    code: str | int | None = None


_encoder: Final = msgspec.json.Encoder()
_chunk_decoder: Final = msgspec.json.Decoder(_Chunk)
_response_decoder: Final = msgspec.json.Decoder(_Response)
_error_decoder: Final = msgspec.json.Decoder(_ErrorBody)


# --- request --------------------------------------------------------------------------


def _path(model: str, options: WireOptions) -> str:
    path = options.chat_path.format(model=model) if options.chat_path else _PATH
    return f"{path}?{urlencode(options.query)}" if options.query else path


def mistral_tool_id(tool_id: str) -> str:
    """A stable 9-character alphanumeric id for ``tool_id`` (Mistral rejects others)."""
    if len(tool_id) == 9 and tool_id.isascii() and tool_id.isalnum():
        return tool_id
    number = int.from_bytes(hashlib.sha256(tool_id.encode()).digest()[:8], "big")
    digits = []
    for _ in range(9):
        number, digit = divmod(number, 62)
        digits.append(_BASE62[digit])
    return "".join(digits)


def _message(message: Message, options: WireOptions) -> dict[str, Any]:
    rename = mistral_tool_id if options.tool_id_style == "mistral9" else str
    wire: dict[str, Any] = {"role": message.role, "content": message.content}
    if message.name is not UNSET:
        wire["name"] = message.name
    if message.tool_calls is not UNSET:
        wire["tool_calls"] = [
            ToolCall(id=rename(call.id), function=call.function) for call in message.tool_calls
        ]
    if message.tool_call_id is not UNSET:
        wire["tool_call_id"] = rename(message.tool_call_id)
    return wire


def _body(request: ChatRequest, model: str, stream: bool, options: WireOptions) -> dict[str, Any]:
    messages = [_message(m, options) for m in request.messages]
    body: dict[str, Any] = {"model": model, "messages": messages}
    for field in _OPTIONAL_FIELDS:
        value = getattr(request, field)
        if value is not UNSET:
            body[field] = value
    if request.max_tokens is not UNSET:
        body[options.max_tokens_field] = request.max_tokens
    body["stream"] = stream
    if stream and options.stream_usage:
        body["stream_options"] = {"include_usage": True}
    return body


# --- responses and streams ------------------------------------------------------------


def _usage(usage: _Usage) -> TokenUsage:
    prompt, completion = usage.prompt_tokens_details, usage.completion_tokens_details
    return TokenUsage(
        input_tokens=usage.prompt_tokens or 0,
        cached_input_tokens=(prompt.cached_tokens or 0) if prompt else 0,
        output_tokens=usage.completion_tokens or 0,
        reasoning_tokens=(completion.reasoning_tokens or 0) if completion else 0,
    )


def _decode_chunk(data: bytes) -> _Chunk:
    return decode(_chunk_decoder, data, "stream frame")


class _ReadMerger:
    """Folds the chunks of one network read into one ``StreamUpdate``."""

    def __init__(self, calls: _ToolCallIndexer) -> None:
        self._calls = calls
        self._text: list[str] = []
        self._tool_calls: dict[int, ToolCallDelta] = {}
        self._finish_reason: str | None = None
        self._usage: TokenUsage | None = None

    def add(self, chunk: _Chunk) -> None:
        if chunk.error is not None:
            raise _in_band_error(chunk.error)
        if chunk.usage is not None:
            self._usage = _usage(chunk.usage)
        for choice in chunk.choices or ():
            self._finish_reason = choice.finish_reason or self._finish_reason
            if choice.delta is not None:
                self._delta(choice.delta)

    def update(self, *, done: bool) -> StreamUpdate:
        return StreamUpdate(
            text="".join(self._text),
            tool_calls=sorted(self._tool_calls.values(), key=lambda call: call.index),
            finish_reason=self._finish_reason,
            usage=self._usage,
            done=done,
        )

    def _delta(self, delta: _Delta) -> None:
        if delta.content:
            self._text.append(delta.content)
        for fragment in delta.tool_calls or ():
            self._tool_call(self._calls.index(fragment), fragment)

    def _tool_call(self, index: int, fragment: _ToolCallFragment) -> None:
        function = fragment.function or _FunctionFragment()
        call = self._tool_calls.setdefault(index, ToolCallDelta(index=index))
        if fragment.id and call.id is UNSET:
            call.id = fragment.id
        if function.name and call.name is UNSET:
            call.name = function.name
        call.arguments += function.arguments or ""


class _ToolCallIndexer:
    """Gives each tool-call fragment its call's index, for the whole stream.

    Servers that omit ``index`` (some compatibility layers) are handled by position: a
    fragment with an ``id`` opens the next call, one without continues the latest.
    """

    def __init__(self) -> None:
        self._count = 0

    def index(self, fragment: _ToolCallFragment) -> int:
        if fragment.index is not None:
            self._count = max(self._count, fragment.index + 1)
            return fragment.index
        if fragment.id or not self._count:
            self._count += 1
        return self._count - 1


class OpenAIChatStreamParser:
    """Parses one chat-completions stream; ``done`` stays true once ``[DONE]`` was seen.

    Frames after ``[DONE]`` (OpenCode Zen's cost frame) are ignored unread.
    """

    def __init__(self) -> None:
        self._sse = SSEDecoder()
        self._calls = _ToolCallIndexer()
        self._done = False

    def feed(self, data: bytes) -> StreamUpdate:
        return self._merge(self._sse.feed(data))

    def close(self) -> StreamUpdate:
        return self._merge(self._sse.close())

    def _merge(self, events: list[SSEEvent]) -> StreamUpdate:
        merger = _ReadMerger(self._calls)
        for event in events:
            if self._done:
                break
            if event.data == _DONE:
                self._done = True
            elif event.data:
                merger.add(_decode_chunk(event.data))
        return merger.update(done=self._done)


def _decode_response(body: bytes) -> _Response:
    return decode(_response_decoder, body, "response")


def _tool_call(fragment: _ToolCallFragment) -> ToolCall:
    function = fragment.function or _FunctionFragment()
    return ToolCall(
        id=fragment.id or "",
        function=FunctionCall(name=function.name or "", arguments=function.arguments or ""),
    )


def _parsed(response: _Response) -> ParsedResponse:
    if response.error is not None:
        raise _in_band_error(response.error)
    if not response.choices:
        raise MalformedResponse("response has no choices")
    choice = response.choices[0]
    return ParsedResponse(
        text=choice.message.content or "",
        finish_reason=choice.finish_reason or "",
        usage=_usage(response.usage) if response.usage else TokenUsage(),
        tool_calls=[_tool_call(call) for call in choice.message.tool_calls or ()],
        model=response.model or "",
    )


# --- errors ---------------------------------------------------------------------------

_STATUS_FOR_CODE: Final = {
    "rate_limit_exceeded": 429,
    "insufficient_quota": 429,
    "invalid_api_key": 401,
    "model_not_found": 404,
    "context_length_exceeded": 400,
    "content_policy_violation": 400,
    "content_filter": 400,
    "invalid_request_error": 400,
}
"""The HTTP status an error code stands for when it arrives inside a 200 body."""


def _in_band_error(error: _ErrorDetail) -> ProviderError:
    """An error sent inside a 200 body or stream (OpenRouter style); no provider is known here."""
    code = None if error.code is None else str(error.code)
    if isinstance(error.code, int) and 400 <= error.code < 600:
        status = error.code
    else:
        status = _STATUS_FOR_CODE.get(code or error.type or "", 500)
    message = error.message or code or "unknown error"
    return make_error(status, code, message, in_band=True)


def _error_fields(status: int, body: bytes) -> tuple[str | None, str]:
    """The error code and a readable message from any error body, JSON or not."""
    try:
        parsed = _error_decoder.decode(body)
    except DECODE_ERRORS:
        return None, body_text(status, body)
    error, code = parsed.error, parsed.code
    if isinstance(error, _ErrorDetail):
        code = error.code if error.code is not None else code
        message: Any = error.message or parsed.message or parsed.detail
    else:
        message = error or parsed.message or parsed.detail
    code_text = None if code is None else str(code)
    return code_text, str(message) if message else body_text(status, body)


# --- the family -----------------------------------------------------------------------


class OpenAIChatFamily:
    name: str = "openai"

    def build_request(
        self, request: ChatRequest, *, model: str, stream: bool, options: WireOptions
    ) -> WireRequest:
        body = _encoder.encode(_body(request, model, stream, options))
        return WireRequest(path=_path(model, options), body=body, headers=dict(_HEADERS))

    def stream_parser(self, model: str) -> OpenAIChatStreamParser:
        return OpenAIChatStreamParser()

    def parse_response(self, body: bytes, model: str) -> ParsedResponse:
        return _parsed(_decode_response(body))

    def parse_error(
        self, status: int, body: bytes, headers: dict[str, str], *, provider: str
    ) -> ProviderError:
        code, message = _error_fields(status, body)
        return make_error(status, code, message, provider=provider, headers=headers)


FAMILY: Final[WireFamily] = OpenAIChatFamily()
