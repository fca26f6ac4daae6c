"""The Anthropic Messages wire family (providers.md §2), spoken by Anthropic and the
Anthropic-format routes of other providers.

Pure translation: a ``ChatRequest`` becomes a ``/messages`` body, and response bodies,
stream bytes and error bodies become OmniLLM values. Auth, the ``anthropic-version``
header (a provider row's fixed header), retries and I/O belong to the caller.

Anthropic's input token count excludes cache reads and writes; the normalised
``TokenUsage.input_tokens`` includes both. Errors raised while parsing a stream or a 200
body carry no provider name: the caller fills ``error.provider`` in.
"""

from __future__ import annotations

import re
from typing import Any, Final
from urllib.parse import urlencode

import msgspec
from msgspec import UNSET, Struct

from omnillm.bus.messages import (
    ChatRequest,
    ContentPart,
    FunctionCall,
    ImagePart,
    Message,
    TokenUsage,
    Tool,
    ToolCall,
    ToolCallDelta,
)
from omnillm.errors import MalformedResponse, ProviderError
from omnillm.providers._errors import DECODE_ERRORS, body_text, decode, make_error
from omnillm.providers.base import (
    ParsedResponse,
    StreamUpdate,
    WireFamily,
    WireOptions,
    WireRequest,
)
from omnillm.providers.sse import SSEDecoder, SSEEvent

__all__ = ["FAMILY", "AnthropicMessagesFamily", "AnthropicStreamParser"]

_PATH: Final = "/messages"
_HEADERS: Final = {"Content-Type": "application/json"}
DEFAULT_MAX_TOKENS: Final = 4096
"""Anthropic requires ``max_tokens``; this is sent when the request sets none."""
MAX_TEMPERATURE: Final = 1.0
"""Anthropic rejects a temperature above 1 (OpenAI allows 2), so higher values are capped."""
_SYSTEM_ROLES: Final = frozenset({"system", "developer"})
_DATA_URL: Final = re.compile(r"data:([^;,]+)(?:;[^;,]*)*;base64,(.*)", re.DOTALL)
_BAD_TOOL_ID_CHARS: Final = re.compile(r"[^a-zA-Z0-9_-]")
_EMPTY_SCHEMA: Final = {"type": "object", "properties": {}}
_TOOL_CHOICE: Final = {"auto": "auto", "required": "any", "none": "none"}

FINISH_REASONS: Final = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
"""Anthropic ``stop_reason`` to the normalised finish reason; others pass as they are."""

STATUS_FOR_TYPE: Final = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}
"""The HTTP status an error type stands for when it arrives inside a 200 stream (§2.6)."""


# --- wire shapes: only the fields we read; unknown fields are ignored ------------------


class _Usage(Struct):
    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_read_input_tokens: int | None = None
    cache_creation_input_tokens: int | None = None


class _Block(Struct):
    type: str = ""
    text: str | None = None
    id: str | None = None
    name: str | None = None
    input: Any = None


class _Delta(Struct):
    type: str | None = None
    text: str | None = None
    partial_json: str | None = None
    stop_reason: str | None = None


class _ErrorDetails(Struct):
    error_code: str | None = None


class _ErrorDetail(Struct):
    type: str | None = None
    message: str | None = None
    details: _ErrorDetails | None = None


class _StartMessage(Struct):
    usage: _Usage | None = None


class _Event(Struct):
    type: str = ""
    message: _StartMessage | None = None
    index: int | None = None
    content_block: _Block | None = None
    delta: _Delta | None = None
    usage: _Usage | None = None
    error: _ErrorDetail | None = None


class _Response(Struct):
    type: str = ""
    content: list[_Block] | None = None
    stop_reason: str | None = None
    usage: _Usage | None = None
    model: str | None = None
    error: _ErrorDetail | None = None


class _ErrorBody(Struct):
    error: _ErrorDetail | str | None = None
    message: str | None = None


_encoder: Final = msgspec.json.Encoder()
_event_decoder: Final = msgspec.json.Decoder(_Event)
_response_decoder: Final = msgspec.json.Decoder(_Response)
_error_decoder: Final = msgspec.json.Decoder(_ErrorBody)
_arguments_decoder: Final = msgspec.json.Decoder()

_WireBlock = dict[str, Any]
_WireContent = str | list[_WireBlock]


# --- request: content blocks ----------------------------------------------------------


def _tool_id(tool_id: str) -> str:
    """``tool_id`` with the characters Anthropic refuses (``^[a-zA-Z0-9_-]+$``) replaced.

    Ids minted by other providers (Moonshot's ``functions.get_weather:0``) reach here when
    a conversation moves between providers; tool_use and tool_result map alike.
    """
    return _BAD_TOOL_ID_CHARS.sub("_", tool_id)


def _image(part: ImagePart) -> _WireBlock:
    """An image block: inline base64 for a ``data:`` URL, a URL source otherwise."""
    url = part.image_url.url
    match = _DATA_URL.fullmatch(url)
    if match is None:
        return {"type": "image", "source": {"type": "url", "url": url}}
    source = {"type": "base64", "media_type": match[1], "data": match[2]}
    return {"type": "image", "source": source}


def _part(part: ContentPart) -> _WireBlock | None:
    if isinstance(part, ImagePart):
        return _image(part)
    return {"type": "text", "text": part.text} if part.text.strip() else None


def _blocks(content: str | list[ContentPart] | None) -> list[_WireBlock]:
    """Content as blocks; blank text is dropped (Anthropic rejects blank text blocks)."""
    if content is None or isinstance(content, str):
        return [{"type": "text", "text": content}] if content and content.strip() else []
    return [block for part in content if (block := _part(part)) is not None]


def _tool_input(arguments: str) -> dict[str, Any]:
    """JSON arguments as Anthropic's ``input`` object; anything but a JSON object is ``{}``."""
    try:
        parsed = _arguments_decoder.decode(arguments)
    except DECODE_ERRORS:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def _tool_use(call: ToolCall) -> _WireBlock:
    return {
        "type": "tool_use",
        "id": _tool_id(call.id),
        "name": call.function.name,
        "input": _tool_input(call.function.arguments),
    }


def _tool_result(message: Message) -> _WireBlock:
    call_id = message.tool_call_id if message.tool_call_id is not UNSET else ""
    block: _WireBlock = {"type": "tool_result", "tool_use_id": _tool_id(call_id)}
    if isinstance(message.content, str):
        if message.content:
            block["content"] = message.content
    elif content := _blocks(message.content):
        block["content"] = content
    block["is_error"] = False
    return block


def _turn_content(message: Message) -> _WireContent:
    """What one message contributes to its turn; a plain string stays a string."""
    if message.role == "tool":
        return [_tool_result(message)]
    calls = message.tool_calls if message.tool_calls is not UNSET else []
    if isinstance(message.content, str) and message.content.strip() and not calls:
        return message.content
    return _blocks(message.content) + [_tool_use(call) for call in calls]


# --- request: turns -------------------------------------------------------------------


def _as_blocks(content: _WireContent) -> list[_WireBlock]:
    return [{"type": "text", "text": content}] if isinstance(content, str) else content


def _turns(messages: list[Message]) -> list[dict[str, Any]]:
    """User and assistant turns, strictly alternating as Anthropic requires.

    Tool results become user turns; consecutive messages of one role (several tool
    results, or a tool result and the user's next message) merge into one turn, in
    order except that tool results come first. Messages with nothing to send are dropped.
    """
    turns: list[dict[str, Any]] = []
    for message in messages:
        if message.role in _SYSTEM_ROLES:
            continue
        role = "assistant" if message.role == "assistant" else "user"
        content = _turn_content(message)
        if not content:
            continue
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"] = _results_first(
                _as_blocks(turns[-1]["content"]) + _as_blocks(content)
            )
        else:
            turns.append({"role": role, "content": content})
    return _trim_prefill(turns)


def _results_first(blocks: list[_WireBlock]) -> list[_WireBlock]:
    """Anthropic rejects a user turn with anything before its ``tool_result`` blocks."""
    return sorted(blocks, key=lambda block: block["type"] != "tool_result")


def _trim_prefill(turns: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A last assistant turn is a prefill Anthropic continues; it rejects trailing space there."""
    if not turns or turns[-1]["role"] != "assistant":
        return turns
    content = turns[-1]["content"]
    if isinstance(content, str):
        turns[-1]["content"] = content.rstrip()
    elif content[-1]["type"] == "text":
        content[-1] = {"type": "text", "text": content[-1]["text"].rstrip()}
    return turns


def _system(messages: list[Message]) -> _WireContent | None:
    """System and developer messages as the top-level ``system``, in order.

    Plain strings join into one string; if any message used content parts, every
    message becomes text blocks instead (the shape the caller chose is kept).
    """
    found = [m for m in messages if m.role in _SYSTEM_ROLES and _blocks(m.content)]
    if not found:
        return None
    if all(isinstance(m.content, str) for m in found):
        return "\n\n".join(m.text() for m in found)
    return [block for m in found for block in _blocks(m.content) if block["type"] == "text"]


def _tool(tool: Tool) -> _WireBlock:
    function = tool.function
    wire: _WireBlock = {"name": function.name}
    if function.description is not UNSET:
        wire["description"] = function.description
    schema = function.parameters
    wire["input_schema"] = schema if schema is not UNSET else dict(_EMPTY_SCHEMA)
    return wire


def _tool_choice(choice: str | dict[str, Any]) -> dict[str, Any]:
    """OpenAI's ``tool_choice`` in Anthropic's terms; an Anthropic-shaped dict passes as is."""
    if isinstance(choice, str):
        return {"type": _TOOL_CHOICE.get(choice, choice)}
    function = choice.get("function")
    if choice.get("type") == "function" and isinstance(function, dict):
        return {"type": "tool", "name": function.get("name", "")}
    return choice


def _stop_sequences(stop: str | list[str]) -> list[str]:
    return [stop] if isinstance(stop, str) else list(stop)


def _body(request: ChatRequest, model: str, stream: bool) -> dict[str, Any]:
    max_tokens = request.max_tokens if request.max_tokens is not UNSET else DEFAULT_MAX_TOKENS
    body: dict[str, Any] = {"model": model, "max_tokens": max_tokens}
    system = _system(request.messages)
    if system is not None:
        body["system"] = system
    if request.tools is not UNSET and request.tools:
        body["tools"] = [_tool(tool) for tool in request.tools]
        if request.tool_choice is not UNSET:
            body["tool_choice"] = _tool_choice(request.tool_choice)
    body["messages"] = _turns(request.messages)
    if request.temperature is not UNSET:
        body["temperature"] = min(request.temperature, MAX_TEMPERATURE)
    if request.stop is not UNSET and request.stop:
        body["stop_sequences"] = _stop_sequences(request.stop)
    if stream:
        body["stream"] = True
    return body


def _path(model: str, options: WireOptions) -> str:
    path = options.chat_path.format(model=model) if options.chat_path else _PATH
    return f"{path}?{urlencode(options.query)}" if options.query else path


# --- usage, errors in a 200 -----------------------------------------------------------


class _UsageTotals:
    """The stream's usage so far. Anthropic repeats cumulative totals in ``message_delta``,
    so each field keeps its largest value rather than a sum."""

    def __init__(self) -> None:
        self.fields = {name: 0 for name in _Usage.__struct_fields__}

    def update(self, usage: _Usage) -> TokenUsage:
        for name, value in msgspec.structs.asdict(usage).items():
            if value is not None:
                self.fields[name] = max(self.fields[name], value)
        return _usage(_Usage(**self.fields))


def _usage(usage: _Usage) -> TokenUsage:
    cache_read = usage.cache_read_input_tokens or 0
    cache_write = usage.cache_creation_input_tokens or 0
    return TokenUsage(
        input_tokens=(usage.input_tokens or 0) + cache_read + cache_write,
        cached_input_tokens=cache_read,
        cache_write_tokens=cache_write,
        output_tokens=usage.output_tokens or 0,
    )


def _finish_reason(stop_reason: str) -> str:
    return FINISH_REASONS.get(stop_reason, stop_reason)


def _code(error: _ErrorDetail) -> str | None:
    """The most specific code: ``details.error_code`` (a spend limit) before the type."""
    if error.details is not None and error.details.error_code:
        return error.details.error_code
    return error.type


def _in_band_error(error: _ErrorDetail) -> ProviderError:
    """An ``error`` event in a 200 stream: its type stands in for the missing status."""
    status = STATUS_FOR_TYPE.get(error.type or "", 500)
    message = error.message or error.type or "unknown error"
    return make_error(status, _code(error), message, in_band=True)


# --- streams --------------------------------------------------------------------------


class _ReadMerger:
    """Folds the events of one network read into one ``StreamUpdate``."""

    def __init__(self) -> None:
        self.text: list[str] = []
        self.tool_calls: dict[int, ToolCallDelta] = {}
        self.finish_reason: str | None = None
        self.usage: TokenUsage | None = None

    def tool_call(self, index: int) -> ToolCallDelta:
        return self.tool_calls.setdefault(index, ToolCallDelta(index=index))

    def update(self, *, done: bool) -> StreamUpdate:
        return StreamUpdate(
            text="".join(self.text),
            tool_calls=sorted(self.tool_calls.values(), key=lambda call: call.index),
            finish_reason=self.finish_reason,
            usage=self.usage,
            done=done,
        )


class AnthropicStreamParser:
    """Parses one Messages stream; ``done`` stays true once ``message_stop`` was seen.

    A tool call's index is its ordinal among the stream's ``tool_use`` blocks (0, 1, ...),
    not the content block index, which also counts text and thinking blocks. Events after
    ``message_stop`` (OpenCode Zen's cost ``ping``) are ignored unread.
    """

    def __init__(self) -> None:
        self._sse = SSEDecoder()
        self._usage = _UsageTotals()
        self._tool_index: dict[int, int] = {}
        """Content block index to tool call ordinal, for the ``tool_use`` blocks."""
        self._has_arguments: set[int] = set()
        self._done = False

    def feed(self, data: bytes) -> StreamUpdate:
        return self._merge(self._sse.feed(data))

    def close(self) -> StreamUpdate:
        return self._merge(self._sse.close())

    def _merge(self, events: list[SSEEvent]) -> StreamUpdate:
        merger = _ReadMerger()
        for event in events:
            if self._done:
                break
            if event.data:
                parsed = decode(_event_decoder, event.data, "stream event")
                self._dispatch(parsed.type or event.event or "", parsed, merger)
        return merger.update(done=self._done)

    def _dispatch(self, kind: str, event: _Event, merger: _ReadMerger) -> None:
        match kind:
            case "message_start" if event.message and event.message.usage:
                merger.usage = self._usage.update(event.message.usage)
            case "content_block_start" if event.content_block is not None:
                self._block_start(event.index, event.content_block, merger)
            case "content_block_delta" if event.delta is not None:
                self._block_delta(event.index, event.delta, merger)
            case "content_block_stop":
                self._block_stop(event.index, merger)
            case "message_delta":
                self._message_delta(event, merger)
            case "message_stop":
                self._done = True
            case "error":
                raise _in_band_error(event.error or _ErrorDetail())
            case _:
                pass  # ping, and event types newer than this parser

    def _block_start(self, index: int | None, block: _Block, merger: _ReadMerger) -> None:
        if block.type == "text" and block.text:
            merger.text.append(block.text)
        elif block.type == "tool_use" and index is not None:
            ordinal = self._tool_index.setdefault(index, len(self._tool_index))
            call = merger.tool_call(ordinal)
            call.id, call.name = block.id or "", block.name or ""

    def _block_delta(self, index: int | None, delta: _Delta, merger: _ReadMerger) -> None:
        if delta.type == "text_delta" and delta.text:
            merger.text.append(delta.text)
        elif delta.type == "input_json_delta" and delta.partial_json and index is not None:
            ordinal = self._tool_index.get(index)
            if ordinal is not None:
                self._has_arguments.add(ordinal)
                merger.tool_call(ordinal).arguments += delta.partial_json

    def _block_stop(self, index: int | None, merger: _ReadMerger) -> None:
        """A tool call that streamed no arguments takes none: ``{}``, so they parse as JSON."""
        ordinal = self._tool_index.get(index) if index is not None else None
        if ordinal is not None and ordinal not in self._has_arguments:
            self._has_arguments.add(ordinal)
            merger.tool_call(ordinal).arguments += "{}"

    def _message_delta(self, event: _Event, merger: _ReadMerger) -> None:
        if event.delta is not None and event.delta.stop_reason:
            merger.finish_reason = _finish_reason(event.delta.stop_reason)
        if event.usage is not None:
            merger.usage = self._usage.update(event.usage)


# --- non-streaming responses ----------------------------------------------------------


def _tool_call(block: _Block) -> ToolCall:
    arguments = _encoder.encode(block.input if block.input is not None else {}).decode()
    return ToolCall(id=block.id or "", function=FunctionCall(block.name or "", arguments))


def _parsed(response: _Response) -> ParsedResponse:
    if response.type == "error" or response.error is not None:
        raise _in_band_error(response.error or _ErrorDetail())
    if response.content is None:
        raise MalformedResponse("response has no content")
    blocks = response.content
    return ParsedResponse(
        text="".join(block.text or "" for block in blocks if block.type == "text"),
        finish_reason=_finish_reason(response.stop_reason or ""),
        usage=_usage(response.usage) if response.usage else TokenUsage(),
        tool_calls=[_tool_call(block) for block in blocks if block.type == "tool_use"],
        model=response.model or "",
    )


# --- errors ---------------------------------------------------------------------------


def _error_fields(status: int, body: bytes) -> tuple[str | None, str]:
    """The error code and a readable message from any error body, JSON or not."""
    try:
        parsed = _error_decoder.decode(body)
    except DECODE_ERRORS:
        return None, body_text(status, body)
    error = parsed.error
    if isinstance(error, _ErrorDetail):
        return _code(error), error.message or parsed.message or body_text(status, body)
    return None, error or parsed.message or body_text(status, body)


# --- the family -----------------------------------------------------------------------


class AnthropicMessagesFamily:
    name: str = "anthropic"

    def build_request(
        self, request: ChatRequest, *, model: str, stream: bool, options: WireOptions
    ) -> WireRequest:
        """``options.chat_path`` and ``options.query`` are honoured; the other options
        concern OpenAI-compatible servers only."""
        body = _encoder.encode(_body(request, model, stream))
        return WireRequest(path=_path(model, options), body=body, headers=dict(_HEADERS))

    def stream_parser(self, model: str) -> AnthropicStreamParser:
        return AnthropicStreamParser()

    def parse_response(self, body: bytes, model: str) -> ParsedResponse:
        return _parsed(decode(_response_decoder, body, "response"))

    def parse_error(
        self, status: int, body: bytes, headers: dict[str, str], *, provider: str
    ) -> ProviderError:
        code, message = _error_fields(status, body)
        return make_error(status, code, message, provider=provider, headers=headers)


FAMILY: Final[WireFamily] = AnthropicMessagesFamily()
