"""The Cohere v2 chat wire family (providers.md §4, §5.14).

Pure translation: a ``ChatRequest`` becomes a ``POST /chat`` body for a base URL ending
in ``/v2``, and Cohere's responses, event streams and error bodies become OmniLLM
values. Auth headers, base URLs, retries and I/O belong to the caller.

Where Cohere differs from OpenAI:

- ``stop`` is ``stop_sequences``; ``tool_choice`` is ``REQUIRED``/``NONE`` or omitted
  (auto). Cohere cannot name one tool, so a named choice sends ``REQUIRED`` with only
  that tool, which means the same thing.
- An assistant turn with tool calls carries its text as ``tool_plan``, not ``content``.
  Only user turns may hold images; other turns are sent as their text.
- A tool that takes no arguments comes back with the arguments ``"null"``; they are
  reported as ``"{}"``, streamed or not, so every consumer can parse them as an object.
- ``finish_reason: ERROR`` is the model failing mid-answer: it raises
  ``ProviderUnavailable`` (retryable) rather than ending the answer as if complete.

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
    Message,
    TokenUsage,
    Tool,
    ToolCall,
    ToolCallDelta,
)
from omnillm.errors import BadUpstreamRequest, MalformedResponse, ProviderError
from omnillm.providers._errors import DECODE_ERRORS, body_text, decode, make_error
from omnillm.providers.base import (
    ParsedResponse,
    StreamUpdate,
    WireFamily,
    WireOptions,
    WireRequest,
)
from omnillm.providers.sse import SSEDecoder, SSEEvent

__all__ = ["FAMILY", "CohereChatFamily", "CohereStreamParser"]

_PATH: Final = "/chat"
_HEADERS: Final = {"Content-Type": "application/json"}
_DONE: Final = b"[DONE]"
_FINISH_REASONS: Final = {
    "COMPLETE": "stop",
    "STOP_SEQUENCE": "stop",
    "MAX_TOKENS": "length",
    "TOOL_CALL": "tool_calls",
    "ERROR_TOXIC": "content_filter",
}
_FINISH_ERROR: Final = "ERROR"
_TOOL_CHOICES: Final = {"required": "REQUIRED", "none": "NONE"}
_NO_ARGUMENTS: Final = "null"
_EMPTY_ARGUMENTS: Final = "{}"
_CODE_FOR_STATUS: Final = {402: "insufficient_quota"}
"""Cohere's error bodies carry no code; its 402 means the billing limit was reached."""


# --- wire shapes: only the fields we read; unknown fields are ignored ------------------


class _Tokens(Struct):
    # Cohere's schema types these as numbers, not integers.
    input_tokens: float | None = None
    output_tokens: float | None = None


class _Usage(Struct):
    billed_units: _Tokens | None = None
    tokens: _Tokens | None = None
    cached_tokens: float | None = None


class _FunctionFragment(Struct):
    name: str | None = None
    arguments: str | None = None


class _ToolCallFragment(Struct):
    id: str | None = None
    function: _FunctionFragment | None = None


class _ContentFragment(Struct):
    text: str | None = None


class _DeltaMessage(Struct):
    # ``message-start`` sends empty lists here; the other events send one object.
    content: _ContentFragment | list[Any] | None = None
    tool_calls: _ToolCallFragment | list[Any] | None = None


class _EventDelta(Struct):
    message: _DeltaMessage | None = None
    finish_reason: str | None = None
    usage: _Usage | None = None
    error: str | None = None


class _Event(Struct):
    type: str | None = None
    index: int | None = None
    delta: _EventDelta | None = None


class _ContentBlock(Struct):
    type: str | None = None
    text: str | None = None


class _ResponseMessage(Struct):
    content: list[_ContentBlock] | None = None
    tool_calls: list[_ToolCallFragment] | None = None


class _Response(Struct):
    message: _ResponseMessage | None = None
    finish_reason: str | None = None
    usage: _Usage | None = None


class _ErrorBody(Struct):
    message: str | None = None


_encoder: Final = msgspec.json.Encoder()
_event_decoder: Final = msgspec.json.Decoder(_Event)
_response_decoder: Final = msgspec.json.Decoder(_Response)
_error_decoder: Final = msgspec.json.Decoder(_ErrorBody)


# --- request --------------------------------------------------------------------------


def _path(model: str, options: WireOptions) -> str:
    path = options.chat_path.format(model=model) if options.chat_path else _PATH
    return f"{path}?{urlencode(options.query)}" if options.query else path


def _user_content(content: str | list[ContentPart] | None) -> str | list[ContentPart]:
    """Cohere's user content blocks are OpenAI's ``text`` and ``image_url`` parts as-is."""
    return "" if content is None else content


def _assistant(message: Message) -> dict[str, Any]:
    if message.tool_calls is UNSET or not message.tool_calls:
        return {"role": "assistant", "content": message.text()}
    wire: dict[str, Any] = {"role": "assistant", "tool_calls": message.tool_calls}
    if message.text():
        wire["tool_plan"] = message.text()
    return wire


def _tool_result(message: Message) -> dict[str, Any]:
    call_id = message.tool_call_id if isinstance(message.tool_call_id, str) else ""
    return {"role": "tool", "tool_call_id": call_id, "content": message.text()}


def _message(message: Message) -> dict[str, Any]:
    match message.role:
        case "user":
            return {"role": "user", "content": _user_content(message.content)}
        case "assistant":
            return _assistant(message)
        case "tool":
            return _tool_result(message)
        case _:  # system, developer
            return {"role": "system", "content": message.text()}


def _named_tool(choice: str | dict[str, Any]) -> str | None:
    """The function an OpenAI-style ``{"type": "function", "function": {"name": ...}}`` names."""
    function = choice.get("function") if isinstance(choice, dict) else None
    name = function.get("name") if isinstance(function, dict) else None
    return name if isinstance(name, str) else None


def _only_tool(tools: list[Tool], name: str) -> list[Tool]:
    chosen = [tool for tool in tools if tool.function.name == name]
    if not chosen:
        raise BadUpstreamRequest(f"tool_choice names {name!r}, which is not among the tools")
    return chosen


def _tool_fields(request: ChatRequest) -> dict[str, Any]:
    """``tools`` and ``tool_choice`` as Cohere takes them; raises for a choice it cannot express."""
    tools = request.tools if request.tools is not UNSET else None
    choice = request.tool_choice
    fields: dict[str, Any] = {} if tools is None else {"tools": tools}
    if choice is UNSET or choice == "auto":
        return fields
    if isinstance(choice, str) and choice in _TOOL_CHOICES:
        return {**fields, "tool_choice": _TOOL_CHOICES[choice]}
    name = _named_tool(choice)
    if name is None:
        raise BadUpstreamRequest(f"tool_choice {choice!r} has no Cohere equivalent")
    return {"tools": _only_tool(tools or [], name), "tool_choice": "REQUIRED"}


def _body(request: ChatRequest, model: str, stream: bool) -> dict[str, Any]:
    body: dict[str, Any] = {"model": model, "messages": [_message(m) for m in request.messages]}
    body.update(_tool_fields(request))
    if request.temperature is not UNSET:
        body["temperature"] = request.temperature
    if request.max_tokens is not UNSET:
        body["max_tokens"] = request.max_tokens
    if request.stop is not UNSET:
        body["stop_sequences"] = [request.stop] if isinstance(request.stop, str) else request.stop
    body["stream"] = stream
    return body


# --- shared by responses and streams --------------------------------------------------


def _count(*values: float | None) -> int:
    return next((int(value) for value in values if value is not None), 0)


def _usage(usage: _Usage) -> TokenUsage:
    """``billed_units`` first, ``tokens`` failing that.

    Cohere bills ``billed_units``; ``tokens`` also counts its own prompt template (507
    against 12 billed for a short prompt), so costing ``tokens`` would overstate the bill.
    ``cached_tokens`` counts that template too, so it is kept only with ``tokens``.
    """
    tokens, billed = usage.tokens or _Tokens(), usage.billed_units or _Tokens()
    if billed.input_tokens is not None or billed.output_tokens is not None:
        return TokenUsage(
            input_tokens=_count(billed.input_tokens),
            output_tokens=_count(billed.output_tokens),
        )
    return TokenUsage(
        input_tokens=_count(tokens.input_tokens),
        cached_input_tokens=_count(usage.cached_tokens),
        output_tokens=_count(tokens.output_tokens),
    )


def _finish_reason(reason: str, error: str | None = None) -> str:
    """The normalised reason; ``ERROR`` raises, an unknown reason is kept as sent."""
    if reason == _FINISH_ERROR:
        message = error or "the model stopped with finish_reason ERROR"
        raise make_error(500, _FINISH_ERROR, message, in_band=True)
    return _FINISH_REASONS.get(reason, reason)


def _arguments(arguments: str | None) -> str:
    return _EMPTY_ARGUMENTS if arguments in (None, "", _NO_ARGUMENTS) else str(arguments)


# --- streams --------------------------------------------------------------------------


class _ToolCalls:
    """Numbers tool calls in the order they start and holds back a ``"null"`` argument list.

    Cohere's ``index`` is mapped to the call's ordinal, so deltas find their call even
    if the index counts something else. Arguments that are still a prefix of ``"null"``
    are held until they turn out not to be, or the call ends (and ``"null"`` becomes
    ``"{}"``): without this, a no-argument call would stream ``null``.
    """

    def __init__(self) -> None:
        self._count = 0
        self._ordinals: dict[int | None, int] = {}
        self._held: dict[int, str] = {}

    def start(self, index: int | None) -> int:
        ordinal = self._count
        self._count += 1
        self._ordinals[index] = ordinal
        self._held[ordinal] = ""
        return ordinal

    def find(self, index: int | None) -> int:
        """The call ``index`` started; without an index, the latest; else a new call."""
        ordinal = self._ordinals.get(index)
        if ordinal is not None:
            return ordinal
        return self._count - 1 if index is None and self._count else self.start(index)

    def arguments(self, ordinal: int, fragment: str) -> str:
        """What of ``fragment`` to pass on now."""
        if ordinal not in self._held:
            return fragment
        held = self._held[ordinal] + fragment
        if _NO_ARGUMENTS.startswith(held):
            self._held[ordinal] = held
            return ""
        del self._held[ordinal]
        return held

    def end(self, ordinal: int) -> str:
        """The held-back arguments of a finished call, ``"{}"`` for none or ``"null"``."""
        if ordinal not in self._held:
            return ""
        return _arguments(self._held.pop(ordinal))

    def end_all(self) -> dict[int, str]:
        return {ordinal: self.end(ordinal) for ordinal in list(self._held)}


class _ReadMerger:
    """Folds the events of one network read into one ``StreamUpdate``."""

    def __init__(self) -> None:
        self.text: list[str] = []
        self.calls: dict[int, ToolCallDelta] = {}
        self.finish_reason: str | None = None
        self.usage: TokenUsage | None = None

    def call(self, ordinal: int, arguments: str, fragment: _ToolCallFragment | None) -> None:
        """Merge a fragment into the read's delta for call ``ordinal``; an empty one adds none."""
        function = (fragment.function if fragment else None) or _FunctionFragment()
        if not (arguments or function.name or (fragment and fragment.id)):
            return
        call = self.calls.setdefault(ordinal, ToolCallDelta(index=ordinal))
        if fragment and fragment.id and call.id is UNSET:
            call.id = fragment.id
        if function.name and call.name is UNSET:
            call.name = function.name
        call.arguments += arguments

    def update(self, *, done: bool) -> StreamUpdate:
        return StreamUpdate(
            text="".join(self.text),
            tool_calls=sorted(self.calls.values(), key=lambda call: call.index),
            finish_reason=self.finish_reason,
            usage=self.usage,
            done=done,
        )


def _message_of(event: _Event) -> _DeltaMessage:
    return (event.delta.message if event.delta else None) or _DeltaMessage()


def _tool_fragment(event: _Event) -> _ToolCallFragment | None:
    fragment = _message_of(event).tool_calls
    return fragment if isinstance(fragment, _ToolCallFragment) else None


class CohereStreamParser:
    """Parses one Cohere v2 chat stream; ``done`` stays true once ``message-end`` or
    ``[DONE]`` was seen, and later frames are ignored unread."""

    def __init__(self) -> None:
        self._sse = SSEDecoder()
        self._calls = _ToolCalls()
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
            if event.data == _DONE:
                self._done = True
            elif event.data:
                parsed = decode(_event_decoder, event.data, "stream frame")
                self._dispatch(parsed, parsed.type or event.event, merger)
        return merger.update(done=self._done)

    def _dispatch(self, event: _Event, kind: str | None, merger: _ReadMerger) -> None:
        """Dispatch on the JSON ``type`` (the ``event:`` line is only a fallback)."""
        match kind:
            case "content-delta":
                content = _message_of(event).content
                if isinstance(content, _ContentFragment) and content.text:
                    merger.text.append(content.text)
            case "tool-call-start":
                self._tool_call(self._calls.start(event.index), _tool_fragment(event), merger)
            case "tool-call-delta":
                self._tool_call(self._calls.find(event.index), _tool_fragment(event), merger)
            case "tool-call-end":
                ordinal = self._calls.find(event.index)
                merger.call(ordinal, self._calls.end(ordinal), None)
            case "message-end":
                self._message_end(event.delta or _EventDelta(), merger)
            case _:  # message-start, content-start/end, tool-plan-delta, citations, debug
                pass

    def _tool_call(
        self, ordinal: int, fragment: _ToolCallFragment | None, merger: _ReadMerger
    ) -> None:
        function = (fragment.function if fragment else None) or _FunctionFragment()
        merger.call(ordinal, self._calls.arguments(ordinal, function.arguments or ""), fragment)

    def _message_end(self, delta: _EventDelta, merger: _ReadMerger) -> None:
        for ordinal, arguments in self._calls.end_all().items():
            merger.call(ordinal, arguments, None)
        if delta.usage is not None:
            merger.usage = _usage(delta.usage)
        if delta.finish_reason is not None:
            merger.finish_reason = _finish_reason(delta.finish_reason, delta.error)
        self._done = True


# --- non-streaming responses ----------------------------------------------------------


def _tool_call(fragment: _ToolCallFragment) -> ToolCall:
    function = fragment.function or _FunctionFragment()
    return ToolCall(
        id=fragment.id or "",
        function=FunctionCall(name=function.name or "", arguments=_arguments(function.arguments)),
    )


def _parsed(response: _Response, model: str) -> ParsedResponse:
    """Cohere does not echo the model, so the one asked for is reported."""
    if response.message is None:
        raise MalformedResponse("response has no message")
    message = response.message
    blocks = message.content or ()
    return ParsedResponse(
        text="".join(block.text or "" for block in blocks if block.type in (None, "text")),
        finish_reason=_finish_reason(response.finish_reason or ""),
        usage=_usage(response.usage) if response.usage else TokenUsage(),
        tool_calls=[_tool_call(call) for call in message.tool_calls or ()],
        model=model,
    )


# --- errors ---------------------------------------------------------------------------


def _error_message(status: int, body: bytes) -> str:
    """``message`` from Cohere's ``{"id": ..., "message": ...}``, else the body itself."""
    try:
        message = _error_decoder.decode(body).message
    except DECODE_ERRORS:
        message = None
    return message or body_text(status, body)


# --- the family -----------------------------------------------------------------------


class CohereChatFamily:
    name: str = "cohere"

    def build_request(
        self, request: ChatRequest, *, model: str, stream: bool, options: WireOptions
    ) -> WireRequest:
        body = _encoder.encode(_body(request, model, stream))
        return WireRequest(path=_path(model, options), body=body, headers=dict(_HEADERS))

    def stream_parser(self, model: str) -> CohereStreamParser:
        return CohereStreamParser()

    def parse_response(self, body: bytes, model: str) -> ParsedResponse:
        return _parsed(decode(_response_decoder, body, "response"), model)

    def parse_error(
        self, status: int, body: bytes, headers: dict[str, str], *, provider: str
    ) -> ProviderError:
        message = _error_message(status, body)
        code = _CODE_FOR_STATUS.get(status)
        return make_error(status, code, message, provider=provider, headers=headers)


FAMILY: Final[WireFamily] = CohereChatFamily()
