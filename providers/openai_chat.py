"""The OpenAI chat-completions wire family, spoken by OpenAI and every compatible provider.

Pure translation (providers.md §1): a ``ChatRequest`` becomes a ``/chat/completions``
body, and response bodies, stream bytes and error bodies become OmniLLM values. Auth
headers, base URLs, retries and I/O belong to the caller.

Errors raised while parsing a stream or a 200 body carry no provider name: the parser
is not told whose stream it reads, so the caller fills ``error.provider`` in.
"""

from __future__ import annotations

import http
import re
import time
from email.utils import parsedate_to_datetime
from typing import Any, Final

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
    AuthenticationFailed,
    BadUpstreamRequest,
    ContentPolicy,
    ContextLengthExceeded,
    MalformedResponse,
    ModelNotFound,
    ProviderError,
    ProviderUnavailable,
    RateLimited,
)
from omnillm.providers.base import (
    ParsedResponse,
    StreamUpdate,
    WireFamily,
    WireOptions,
    WireRequest,
)
from omnillm.providers.sse import SSEDecoder, SSEEvent

__all__ = ["FAMILY", "OpenAIChatFamily", "OpenAIChatStreamParser"]

_PATH: Final = "/chat/completions"
_HEADERS: Final = {"Content-Type": "application/json"}
_OPTIONAL_FIELDS: Final = ("tools", "tool_choice", "temperature", "stop")
_DONE: Final = b"[DONE]"
_SNIPPET_BYTES: Final = 200
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


def _message(message: Message) -> dict[str, Any]:
    wire: dict[str, Any] = {"role": message.role, "content": message.content}
    if message.name is not UNSET:
        wire["name"] = message.name
    if message.tool_calls is not UNSET:
        wire["tool_calls"] = message.tool_calls
    if message.tool_call_id is not UNSET:
        wire["tool_call_id"] = message.tool_call_id
    return wire


def _body(request: ChatRequest, model: str, stream: bool, options: WireOptions) -> dict[str, Any]:
    body: dict[str, Any] = {"model": model, "messages": [_message(m) for m in request.messages]}
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


def _snippet(data: bytes) -> str:
    return repr(data[:_SNIPPET_BYTES]) + ("..." if len(data) > _SNIPPET_BYTES else "")


def _decode_chunk(data: bytes) -> _Chunk:
    try:
        return _chunk_decoder.decode(data)
    except msgspec.ValidationError as exc:
        raise MalformedResponse(f"stream frame has an unexpected shape ({exc})") from exc
    except msgspec.DecodeError as exc:
        raise MalformedResponse(f"stream frame is not valid JSON: {_snippet(data)}") from exc


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
    try:
        return _response_decoder.decode(body)
    except msgspec.ValidationError as exc:
        raise MalformedResponse(f"response has an unexpected shape ({exc})") from exc
    except msgspec.DecodeError as exc:
        raise MalformedResponse(f"response is not valid JSON: {_snippet(body)}") from exc


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

_CONTEXT_LENGTH: Final = re.compile(
    r"maximum context length is \d+"  # OpenAI, Azure, DeepSeek, OpenRouter
    r"|maximum prompt length is \d+"  # xAI
    r"|exceeded model token limit|input token length too long"  # Moonshot
    r"|prompt contains \d+ tokens.*too large for model"  # Mistral
    r"|too many tokens"  # Cohere
    r"|prompt is too long"  # Anthropic models behind a proxy
    r"|input token count.*exceeds the maximum",  # Gemini
    re.IGNORECASE | re.DOTALL,
)
_CONTENT_POLICY: Final = re.compile(
    r"safety system|content management policy|content_filter", re.IGNORECASE
)
_CONTENT_POLICY_CODES: Final = frozenset({"content_policy_violation", "content_filter"})
_NO_QUOTA: Final = "insufficient_quota"
_STATUS_FOR_CODE: Final = {
    "rate_limit_exceeded": 429,
    _NO_QUOTA: 429,
    "invalid_api_key": 401,
    "model_not_found": 404,
    "context_length_exceeded": 400,
    "content_policy_violation": 400,
    "content_filter": 400,
    "invalid_request_error": 400,
}
"""The HTTP status an error code stands for when it arrives inside a 200 body."""


def _error_class(status: int, code: str | None, message: str) -> type[ProviderError]:
    if code == _NO_QUOTA:
        return AuthenticationFailed
    if status == 429:
        return RateLimited
    if status in (401, 403):
        return AuthenticationFailed
    if status == 404:
        return ModelNotFound
    if status in (408, 409) or status >= 500:
        return ProviderUnavailable
    if code == "context_length_exceeded" or _CONTEXT_LENGTH.search(message):
        return ContextLengthExceeded
    if code in _CONTENT_POLICY_CODES or _CONTENT_POLICY.search(message):
        return ContentPolicy
    return BadUpstreamRequest if status >= 400 else ProviderUnavailable


def _describe(status: int, code: str | None, message: str) -> str:
    if code == _NO_QUOTA:
        return f"{status} the account has no quota left: {message}"
    return f"{status} {message}"


def _in_band_error(error: _ErrorDetail) -> ProviderError:
    """An error sent inside a 200 body or stream (OpenRouter style); no provider is known here."""
    code = None if error.code is None else str(error.code)
    if isinstance(error.code, int) and 400 <= error.code < 600:
        status = error.code
    else:
        status = _STATUS_FOR_CODE.get(code or error.type or "", 500)
    message = error.message or code or "unknown error"
    cls = _error_class(status, code, message)
    return cls(f"{_describe(status, code, message)} (inside a 200 response)", status_code=status)


def _error_fields(status: int, body: bytes) -> tuple[str | None, str]:
    """The error code and a readable message from any error body, JSON or not."""
    try:
        parsed = _error_decoder.decode(body)
    except msgspec.DecodeError:
        return None, _body_text(status, body)
    error, code = parsed.error, parsed.code
    if isinstance(error, _ErrorDetail):
        code = error.code if error.code is not None else code
        message: Any = error.message or parsed.message or parsed.detail
    else:
        message = error or parsed.message or parsed.detail
    code_text = None if code is None else str(code)
    return code_text, str(message) if message else _body_text(status, body)


def _body_text(status: int, body: bytes) -> str:
    text = body[:_SNIPPET_BYTES].decode("utf-8", "replace").strip()
    if text:
        return text + ("..." if len(body) > _SNIPPET_BYTES else "")
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "error"


def _retry_after(headers: dict[str, str]) -> float | None:
    """Seconds to wait, from ``retry-after-ms`` first, then ``retry-after`` (seconds or date)."""
    lower = {name.lower(): value for name, value in headers.items()}
    try:
        if "retry-after-ms" in lower:
            return max(float(lower["retry-after-ms"]) / 1000, 0.0)
        if "retry-after" in lower:
            return _seconds_or_date(lower["retry-after"])
    except (ValueError, TypeError, OverflowError):
        return None
    return None


def _seconds_or_date(value: str) -> float:
    try:
        return max(float(value), 0.0)
    except ValueError:
        return max(parsedate_to_datetime(value).timestamp() - time.time(), 0.0)


# --- the family -----------------------------------------------------------------------


class OpenAIChatFamily:
    name: str = "openai"

    def build_request(
        self, request: ChatRequest, *, model: str, stream: bool, options: WireOptions
    ) -> WireRequest:
        body = _encoder.encode(_body(request, model, stream, options))
        return WireRequest(path=_PATH, body=body, headers=dict(_HEADERS))

    def stream_parser(self) -> OpenAIChatStreamParser:
        return OpenAIChatStreamParser()

    def parse_response(self, body: bytes) -> ParsedResponse:
        return _parsed(_decode_response(body))

    def parse_error(
        self, status: int, body: bytes, headers: dict[str, str], *, provider: str
    ) -> ProviderError:
        code, message = _error_fields(status, body)
        cls = _error_class(status, code, message)
        return cls(
            f"{provider}: {_describe(status, code, message)}",
            provider=provider,
            status_code=status,
            retry_after=_retry_after(headers),
        )


FAMILY: Final[WireFamily] = OpenAIChatFamily()
