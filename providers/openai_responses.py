"""The OpenAI Responses wire family (``POST /responses``).

OpenAI's newer API, the only one some of its newest models speak, and the route
OpenCode Zen uses for GPT, Grok and Muse Spark models. Pure translation, like every
family: a ``ChatRequest`` becomes a ``/responses`` body, and response bodies, stream
bytes and error bodies become OmniLLM values.

Two request choices differ from the API's defaults on purpose:

- ``store: false``: OmniLLM sends the whole conversation every time, so nothing needs
  to be kept upstream, and nothing should be.
- function tools carry ``strict: false``: without it Responses rewrites a schema into
  strict mode, which makes optional parameters required. Chat completions is not strict
  by default, and one tool must mean the same on every family.

Errors raised while parsing a stream or a 200 body carry no provider name: the parser
is not told whose stream it reads, so the caller fills ``error.provider`` in.
"""

from __future__ import annotations

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
from omnillm.providers import openai_chat
from omnillm.providers._errors import decode, make_error
from omnillm.providers.base import (
    ParsedResponse,
    StreamUpdate,
    WireFamily,
    WireOptions,
    WireRequest,
)
from omnillm.providers.sse import SSEDecoder, SSEEvent

__all__ = ["FAMILY", "OpenAIResponsesFamily", "ResponsesStreamParser"]

_PATH: Final = "/responses"
_HEADERS: Final = {"Content-Type": "application/json"}
_INSTRUCTION_ROLES: Final = frozenset({"system", "developer"})
_EMPTY_SCHEMA: Final[dict[str, Any]] = {"type": "object", "properties": {}}
_INCOMPLETE_REASONS: Final = {"max_output_tokens": "length", "content_filter": "content_filter"}
_STATUS_FOR_CODE: Final = {
    "server_error": 500,
    "rate_limit_exceeded": 429,
    "insufficient_quota": 429,
    "vector_store_timeout": 504,
    "invalid_api_key": 401,
    "model_not_found": 404,
}
"""The HTTP status an error code stands for when it arrives inside a 200 stream or body.
The other documented codes (``invalid_prompt``, the ``image_*`` family) are about the
request, so any other code counts as a 400."""


# --- wire shapes: only the fields we read; unknown fields are ignored ------------------


class _InputDetails(Struct):
    cached_tokens: int | None = None
    cache_write_tokens: int | None = None


class _OutputDetails(Struct):
    reasoning_tokens: int | None = None


class _Usage(Struct):
    input_tokens: int | None = None
    output_tokens: int | None = None
    input_tokens_details: _InputDetails | None = None
    output_tokens_details: _OutputDetails | None = None


class _ErrorDetail(Struct):
    message: str | None = None
    code: str | int | None = None
    type: str | None = None


class _Incomplete(Struct):
    reason: str | None = None


class _Content(Struct):
    type: str = ""
    text: str | None = None


class _Item(Struct):
    """An output item. Only ``message`` and ``function_call`` items are read; the
    loose ``arguments`` keeps other item kinds (whose arguments may be objects) decodable."""

    type: str = ""
    id: str | None = None
    call_id: str | None = None
    name: str | None = None
    arguments: Any = None
    content: list[_Content] | None = None


class _Response(Struct):
    status: str | None = None
    output: list[_Item] | None = None
    usage: _Usage | None = None
    incomplete_details: _Incomplete | None = None
    error: _ErrorDetail | None = None
    model: str | None = None


class _Kind(Struct):
    type: str = ""


class _TextDelta(Struct):
    delta: str = ""


class _ItemEvent(Struct):
    item: _Item
    output_index: int | None = None


class _ArgumentsEvent(Struct):
    item_id: str | None = None
    output_index: int | None = None
    delta: str = ""
    arguments: str | None = None


class _ResponseEvent(Struct):
    response: _Response


class _ErrorEvent(Struct):
    """OpenAI documents ``code``/``message`` at the top; captures also nest them in ``error``."""

    code: str | int | None = None
    message: str | None = None
    error: _ErrorDetail | None = None


_encoder: Final = msgspec.json.Encoder()
_kind_decoder: Final = msgspec.json.Decoder(_Kind)
_text_decoder: Final = msgspec.json.Decoder(_TextDelta)
_item_decoder: Final = msgspec.json.Decoder(_ItemEvent)
_arguments_decoder: Final = msgspec.json.Decoder(_ArgumentsEvent)
_response_event_decoder: Final = msgspec.json.Decoder(_ResponseEvent)
_error_event_decoder: Final = msgspec.json.Decoder(_ErrorEvent)
_response_decoder: Final = msgspec.json.Decoder(_Response)


# --- request --------------------------------------------------------------------------


def _path(model: str, options: WireOptions) -> str:
    path = options.chat_path.format(model=model) if options.chat_path else _PATH
    return f"{path}?{urlencode(options.query)}" if options.query else path


def _input_part(part: ContentPart) -> dict[str, Any]:
    if not isinstance(part, ImagePart):
        return {"type": "input_text", "text": part.text}
    image: dict[str, Any] = {"type": "input_image", "image_url": part.image_url.url}
    if part.image_url.detail is not UNSET:
        image["detail"] = part.image_url.detail
    return image


def _user_content(content: str | list[ContentPart] | None) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "input_text", "text": content}]
    return [_input_part(part) for part in content or ()]


def _function_call(call: ToolCall) -> dict[str, Any]:
    function = call.function
    return {
        "type": "function_call",
        "call_id": call.id,
        "name": function.name,
        "arguments": function.arguments,
    }


def _assistant_items(message: Message) -> list[dict[str, Any]]:
    """An assistant turn: its text as a message, then each tool call as its own item."""
    items: list[dict[str, Any]] = []
    if text := message.text():
        items.append({"role": "assistant", "content": [{"type": "output_text", "text": text}]})
    if message.tool_calls is not UNSET:
        items.extend(_function_call(call) for call in message.tool_calls)
    return items


def _items(message: Message) -> list[dict[str, Any]]:
    match message.role:
        case "assistant":
            return _assistant_items(message)
        case "tool":
            call_id = message.tool_call_id if message.tool_call_id is not UNSET else ""
            return [{"type": "function_call_output", "call_id": call_id, "output": message.text()}]
        case _:
            return [{"role": message.role, "content": _user_content(message.content)}]


def _tool(tool: Tool) -> dict[str, Any]:
    function = tool.function
    wire: dict[str, Any] = {"type": "function", "name": function.name}
    if function.description is not UNSET:
        wire["description"] = function.description
    parameters = function.parameters
    wire["parameters"] = parameters if parameters is not UNSET else _EMPTY_SCHEMA
    wire["strict"] = False
    return wire


def _tool_choice(choice: str | dict[str, Any]) -> str | dict[str, Any]:
    """Chat's ``{"type": "function", "function": {"name": n}}`` becomes the flat form."""
    if isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        return {"type": "function", "name": choice["function"].get("name")}
    return choice


def _body(request: ChatRequest, model: str, stream: bool) -> dict[str, Any]:
    """The body; ``stop`` is not sent: the Responses API has no stop sequences."""
    messages = request.messages
    body: dict[str, Any] = {"model": model}
    instructions = [m.text() for m in messages if m.role in _INSTRUCTION_ROLES]
    if instructions:
        body["instructions"] = "\n\n".join(instructions)
    body["input"] = [
        item for m in messages if m.role not in _INSTRUCTION_ROLES for item in _items(m)
    ]
    if request.tools is not UNSET:
        body["tools"] = [_tool(tool) for tool in request.tools]
    if request.tool_choice is not UNSET:
        body["tool_choice"] = _tool_choice(request.tool_choice)
    if request.temperature is not UNSET:
        body["temperature"] = request.temperature
    if request.max_tokens is not UNSET:
        body["max_output_tokens"] = request.max_tokens
    body["stream"] = stream
    body["store"] = False
    return body


# --- usage, finish reasons, errors in a 200 -------------------------------------------


def _usage(usage: _Usage) -> TokenUsage:
    """Responses counts cached tokens inside ``input_tokens`` already, as OmniLLM does."""
    inputs, outputs = usage.input_tokens_details, usage.output_tokens_details
    return TokenUsage(
        input_tokens=usage.input_tokens or 0,
        cached_input_tokens=(inputs.cached_tokens or 0) if inputs else 0,
        cache_write_tokens=(inputs.cache_write_tokens or 0) if inputs else 0,
        output_tokens=usage.output_tokens or 0,
        reasoning_tokens=(outputs.reasoning_tokens or 0) if outputs else 0,
    )


def _called(response: _Response) -> bool:
    return any(item.type == "function_call" for item in response.output or ())


def _finish_reason(response: _Response, *, called: bool) -> str:
    """``completed`` is ``stop`` (``tool_calls`` when a function was called); an
    ``incomplete`` response says why in ``incomplete_details``; other values are kept."""
    if response.status == "incomplete":
        details = response.incomplete_details
        reason = (details.reason if details else None) or "incomplete"
        return _INCOMPLETE_REASONS.get(reason, reason)
    if response.status in (None, "completed"):
        return "tool_calls" if called or _called(response) else "stop"
    return response.status


def _in_band_error(code: str | int | None, message: str | None) -> ProviderError:
    """An error sent inside a 200 stream or body; no provider is known here."""
    if isinstance(code, int) and 400 <= code < 600:
        status = code
    else:
        status = _STATUS_FOR_CODE.get(str(code), 400) if code is not None else 500
    code_text = None if code is None else str(code)
    return make_error(status, code_text, message or code_text or "unknown error", in_band=True)


def _failed(response: _Response) -> ProviderError:
    error = response.error or _ErrorDetail(message="the response failed without an error")
    return _in_band_error(error.code if error.code is not None else error.type, error.message)


def _error_event(event: _ErrorEvent) -> ProviderError:
    nested = event.error or _ErrorDetail()
    code = event.code if event.code is not None else nested.code
    return _in_band_error(
        code if code is not None else nested.type, event.message or nested.message
    )


# --- streams --------------------------------------------------------------------------


class _Calls:
    """The stream's function calls: each one's ordinal, found by item id or output index,
    and the arguments streamed so far."""

    def __init__(self) -> None:
        self._by_item: dict[str, int] = {}
        self._by_output: dict[int, int] = {}
        self.arguments: list[str] = []

    def open(self, item_id: str | None, output_index: int | None) -> int:
        index = len(self.arguments)
        self.arguments.append("")
        if item_id is not None:
            self._by_item[item_id] = index
        if output_index is not None:
            self._by_output[output_index] = index
        return index

    def find(self, item_id: str | None, output_index: int | None) -> int | None:
        if item_id is not None and item_id in self._by_item:
            return self._by_item[item_id]
        return self._by_output.get(output_index) if output_index is not None else None


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


class ResponsesStreamParser:
    """Parses one Responses stream; ``done`` stays true once the response ended.

    The end is ``response.completed`` or ``response.incomplete``; ``response.failed`` and
    ``error`` raise the mapped error. A tool call's index is its ordinal among the
    stream's function calls, not the output index, which also counts messages and
    reasoning. Events after the end (OpenCode Zen's cost ``ping``) are ignored unread,
    and so are event kinds this parser does not use (reasoning summaries, part markers).
    """

    def __init__(self) -> None:
        self._sse = SSEDecoder()
        self._calls = _Calls()
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
                kind = decode(_kind_decoder, event.data, "stream event").type
                self._dispatch(kind or event.event or "", event.data, merger)
        return merger.update(done=self._done)

    def _dispatch(self, kind: str, data: bytes, merger: _ReadMerger) -> None:
        match kind:
            case "response.output_text.delta":
                merger.text.append(decode(_text_decoder, data, kind).delta)
            case "response.output_item.added" | "response.output_item.done":
                self._item(decode(_item_decoder, data, kind), merger)
            case "response.function_call_arguments.delta":
                self._arguments(decode(_arguments_decoder, data, kind), merger)
            case "response.function_call_arguments.done":
                self._arguments_done(decode(_arguments_decoder, data, kind), merger)
            case "response.completed" | "response.incomplete":
                self._end(decode(_response_event_decoder, data, kind).response, merger)
            case "response.failed":
                raise _failed(decode(_response_event_decoder, data, kind).response)
            case "error":
                raise _error_event(decode(_error_event_decoder, data, kind))
            case _:
                pass

    def _item(self, event: _ItemEvent, merger: _ReadMerger) -> None:
        """A function call opens at ``added``; ``done`` opens one never announced and
        completes its arguments, for servers that send whole items without deltas."""
        item = event.item
        if item.type != "function_call":
            return
        index = self._calls.find(item.id, event.output_index)
        if index is None:
            index = self._calls.open(item.id, event.output_index)
            call = merger.tool_call(index)
            call.id, call.name = item.call_id or item.id or "", item.name or ""
        if isinstance(item.arguments, str):
            self._complete(index, item.arguments, merger)

    def _arguments(self, event: _ArgumentsEvent, merger: _ReadMerger) -> None:
        index = self._calls.find(event.item_id, event.output_index)
        if index is None:
            raise MalformedResponse(
                f"function call arguments for an item never announced ({event.item_id!r})"
            )
        self._calls.arguments[index] += event.delta
        merger.tool_call(index).arguments += event.delta

    def _arguments_done(self, event: _ArgumentsEvent, merger: _ReadMerger) -> None:
        index = self._calls.find(event.item_id, event.output_index)
        if index is not None and event.arguments is not None:
            self._complete(index, event.arguments, merger)

    def _complete(self, index: int, full: str, merger: _ReadMerger) -> None:
        """Send whatever of ``full`` the deltas have not sent yet."""
        sent = self._calls.arguments[index]
        if len(full) > len(sent) and full.startswith(sent):
            self._calls.arguments[index] = full
            merger.tool_call(index).arguments += full[len(sent) :]

    def _end(self, response: _Response, merger: _ReadMerger) -> None:
        called = bool(self._calls.arguments)
        merger.finish_reason = _finish_reason(response, called=called)
        if response.usage is not None:
            merger.usage = _usage(response.usage)
        self._done = True


# --- non-streaming responses ----------------------------------------------------------


def _text(response: _Response) -> str:
    return "".join(
        part.text or ""
        for item in response.output or ()
        if item.type == "message"
        for part in item.content or ()
        if part.type == "output_text"
    )


def _tool_call(item: _Item) -> ToolCall:
    arguments = item.arguments if isinstance(item.arguments, str) else ""
    return ToolCall(
        id=item.call_id or item.id or "",
        function=FunctionCall(name=item.name or "", arguments=arguments),
    )


def _parsed(response: _Response) -> ParsedResponse:
    if response.status == "failed" or response.error is not None:
        raise _failed(response)
    if response.output is None:
        raise MalformedResponse("response has no output")
    calls = [_tool_call(item) for item in response.output if item.type == "function_call"]
    return ParsedResponse(
        text=_text(response),
        finish_reason=_finish_reason(response, called=bool(calls)),
        usage=_usage(response.usage) if response.usage else TokenUsage(),
        tool_calls=calls,
        model=response.model or "",
    )


# --- the family -----------------------------------------------------------------------


class OpenAIResponsesFamily:
    name: str = "responses"

    def build_request(
        self, request: ChatRequest, *, model: str, stream: bool, options: WireOptions
    ) -> WireRequest:
        body = _encoder.encode(_body(request, model, stream))
        return WireRequest(path=_path(model, options), body=body, headers=dict(_HEADERS))

    def stream_parser(self, model: str) -> ResponsesStreamParser:
        return ResponsesStreamParser()

    def parse_response(self, body: bytes, model: str) -> ParsedResponse:
        return _parsed(decode(_response_decoder, body, "response"))

    def parse_error(
        self, status: int, body: bytes, headers: dict[str, str], *, provider: str
    ) -> ProviderError:
        """HTTP errors are OpenAI's ``{"error": {...}}``, the same as chat completions'."""
        return openai_chat.FAMILY.parse_error(status, body, headers, provider=provider)


FAMILY: Final[WireFamily] = OpenAIResponsesFamily()
