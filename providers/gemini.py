"""The Google Gemini ``generateContent`` wire family (providers.md §3, §5.5).

Pure translation: a ``ChatRequest`` becomes a ``contents`` body for
``/models/{model}:generateContent`` (or ``:streamGenerateContent?alt=sse``), and response
bodies, stream bytes and error bodies become OmniLLM values. Auth (``x-goog-api-key``),
the base URL (``…/v1beta``), retries and I/O belong to the caller.

What differs from the OpenAI family, and why:

- Gemini answers a function call by *name*, not id. Replaying a conversation maps each
  ``tool_call_id`` back to the name of the earlier assistant call it answers, and puts
  the ``functionResponse`` parts of one batch in the order of the calls.
- Gemini's calls carry no id, so ids are minted: ``call_<responseId>_<n>``, where ``n``
  counts the calls of one response. The response id keeps ids unique across the turns of
  a conversation (Anthropic rejects a conversation with a repeated tool id).
- Gemini 3 refuses a replayed ``functionCall`` without its ``thoughtSignature``. OmniLLM's
  tool calls have no field to carry the signature, so the first call of each assistant
  message gets Google's documented sentinel that skips the check.
- A stream has no terminator: it ends when the connection closes, so ``done`` is never
  set and ``close()`` flushes a last frame.

Errors raised while parsing a stream or a 200 body carry no provider name: the caller
fills ``error.provider`` in.
"""

from __future__ import annotations

import base64
import math
import re
from typing import Any, Final
from urllib.parse import unquote_to_bytes, urlencode, urlsplit

import msgspec
from msgspec import UNSET, Struct

from omnillm.bus.messages import (
    ChatRequest,
    ContentPart,
    FunctionCall,
    ImagePart,
    Message,
    TokenUsage,
    ToolCall,
    ToolCallDelta,
)
from omnillm.errors import (
    AuthenticationFailed,
    ContentPolicy,
    InvalidRequest,
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

__all__ = ["FAMILY", "GeminiFamily", "GeminiStreamParser"]

_MODEL_PATH: Final = "/models/{model}"
_HEADERS: Final = {"Content-Type": "application/json"}
_SYSTEM_ROLES: Final = frozenset({"system", "developer"})
SKIP_SIGNATURE: Final = "skip_thought_signature_validator"
"""Google's documented ``thoughtSignature`` for a function call whose real signature is
not known (history replayed from elsewhere)."""
_DATA_URL: Final = re.compile(r"data:([^;,]*)((?:;[^;,]*)*),(.*)", re.DOTALL)
_IMAGE_TYPES: Final = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".webp": "image/webp",
    ".gif": "image/gif",
    ".heic": "image/heic",
    ".heif": "image/heif",
}
_DEFAULT_IMAGE_TYPE: Final = "image/jpeg"
_TOOL_MODES: Final = {"auto": "AUTO", "required": "ANY", "none": "NONE"}
_UNSAFE_ID_CHARS: Final = re.compile(r"[^A-Za-z0-9_-]")
_RETRY_INFO: Final = "type.googleapis.com/google.rpc.RetryInfo"

FINISH_REASONS: Final = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    "SAFETY": "content_filter",
    "RECITATION": "content_filter",
    "BLOCKLIST": "content_filter",
    "PROHIBITED_CONTENT": "content_filter",
    "SPII": "content_filter",
    "IMAGE_SAFETY": "content_filter",
}
"""Gemini's ``finishReason`` in OmniLLM's terms; a value not listed is kept as sent."""


# --- wire shapes: only the fields we read; unknown fields are ignored ------------------


class _FunctionCall(Struct):
    name: str = ""
    args: dict[str, Any] | None = None
    id: str | None = None


class _Part(Struct, rename="camel"):
    text: str | None = None
    thought: bool | None = None
    function_call: _FunctionCall | None = None


class _Content(Struct):
    parts: list[_Part] | None = None


class _Candidate(Struct, rename="camel"):
    content: _Content | None = None
    finish_reason: str | None = None


class _PromptFeedback(Struct, rename="camel"):
    block_reason: str | None = None


class _UsageMetadata(Struct, rename="camel"):
    prompt_token_count: int | None = None
    cached_content_token_count: int | None = None
    candidates_token_count: int | None = None
    thoughts_token_count: int | None = None


class _Detail(Struct, rename="camel"):
    type: str | None = msgspec.field(default=None, name="@type")
    retry_delay: str | None = None
    reason: str | None = None


class _Status(Struct):
    """A google.rpc ``Status``: ``code`` is the HTTP status, ``status`` its canonical name."""

    code: int | None = None
    message: str | None = None
    status: str | None = None
    details: list[_Detail] | None = None


class _Response(Struct, rename="camel"):
    """A ``GenerateContentResponse``: a whole answer, or one chunk of a stream."""

    candidates: list[_Candidate] | None = None
    prompt_feedback: _PromptFeedback | None = None
    usage_metadata: _UsageMetadata | None = None
    model_version: str | None = None
    response_id: str | None = None
    error: _Status | None = None


class _ErrorBody(Struct):
    error: _Status | None = None


_encoder: Final = msgspec.json.Encoder()
_any_decoder: Final = msgspec.json.Decoder()
_response_decoder: Final = msgspec.json.Decoder(_Response)
_error_decoder: Final = msgspec.json.Decoder(_ErrorBody)


# --- request: parts -------------------------------------------------------------------


def _image_type(url: str) -> str:
    path = urlsplit(url).path.lower()
    suffix = path[path.rfind(".") :] if "." in path else ""
    return _IMAGE_TYPES.get(suffix, _DEFAULT_IMAGE_TYPE)


def _image(part: ImagePart) -> dict[str, Any]:
    """``inlineData`` for a ``data:`` URL (percent-encoded data is base64-encoded here),
    ``fileData`` with a type guessed from the extension for any other URL."""
    url = part.image_url.url
    match = _DATA_URL.fullmatch(url)
    if match is None:
        return {"fileData": {"mimeType": _image_type(url), "fileUri": url}}
    data = match[3]
    if ";base64" not in match[2].lower():
        data = base64.b64encode(unquote_to_bytes(data)).decode("ascii")
    return {"inlineData": {"mimeType": match[1] or _DEFAULT_IMAGE_TYPE, "data": data}}


def _part(part: ContentPart) -> dict[str, Any] | None:
    if isinstance(part, ImagePart):
        return _image(part)
    return {"text": part.text} if part.text else None


def _parts(content: str | list[ContentPart] | None) -> list[dict[str, Any]]:
    """Content as parts; empty text is dropped (Gemini rejects an empty text part)."""
    if content is None or isinstance(content, str):
        return [{"text": content}] if content else []
    return [wire for part in content if (wire := _part(part)) is not None]


def _decode_object(text: str) -> dict[str, Any] | None:
    try:
        parsed = _any_decoder.decode(text)
    except DECODE_ERRORS:
        return None
    return parsed if isinstance(parsed, dict) else None


def _function_call(call: ToolCall, first: bool) -> dict[str, Any]:
    """A ``functionCall`` part; arguments that are not a JSON object become ``{}``."""
    args = _decode_object(call.function.arguments) or {}
    part: dict[str, Any] = {"functionCall": {"name": call.function.name, "args": args}}
    if first:
        part["thoughtSignature"] = SKIP_SIGNATURE
    return part


def _function_response(name: str, result: str) -> dict[str, Any]:
    """A ``functionResponse`` part; ``response`` must be an object, so any result that is
    not JSON object text is wrapped as ``{"result": text}``."""
    response = _decode_object(result)
    if response is None:
        response = {"result": result}
    return {"functionResponse": {"name": name, "response": response}}


# --- request: turns -------------------------------------------------------------------


class _Conversation:
    """Messages as Gemini ``contents`` and ``systemInstruction`` parts, in one pass.

    Each assistant tool call is remembered (id -> name, position) as it passes, so a tool
    result can only answer a call made before it, and a repeated id answers the latest.
    Consecutive tool results become one ``user`` turn, ordered as their calls were;
    consecutive turns of one role merge; messages with nothing to send are dropped.
    """

    def __init__(self) -> None:
        self.system: list[dict[str, Any]] = []
        self.contents: list[dict[str, Any]] = []
        self._calls: dict[str, tuple[str, int]] = {}
        self._results: list[tuple[int, dict[str, Any]]] = []

    def add(self, message: Message) -> None:
        if message.role == "tool":
            self._results.append(self._result(message))
            return
        self._flush_results()
        if message.role in _SYSTEM_ROLES:
            self.system.extend(_parts(message.text()))
        elif message.role == "assistant":
            self._push("model", self._assistant(message))
        else:
            self._push("user", _parts(message.content))

    def finish(self) -> list[dict[str, Any]]:
        self._flush_results()
        return self.contents

    def _assistant(self, message: Message) -> list[dict[str, Any]]:
        calls = message.tool_calls if message.tool_calls is not UNSET else []
        for position, call in enumerate(calls):
            self._calls[call.id] = (call.function.name, position)
        called = [_function_call(call, first=i == 0) for i, call in enumerate(calls)]
        return _parts(message.content) + called

    def _result(self, message: Message) -> tuple[int, dict[str, Any]]:
        call_id = message.tool_call_id if message.tool_call_id is not UNSET else ""
        found = self._calls.get(call_id)
        if found is None and message.name is UNSET:
            raise InvalidRequest(
                f"tool result {call_id!r} answers no earlier assistant tool call "
                "(Gemini needs the function's name)"
            )
        name, position = found or (str(message.name), len(self._calls))
        return position, _function_response(name, message.text())

    def _flush_results(self) -> None:
        if self._results:
            self._results.sort(key=lambda result: result[0])
            self._push("user", [part for _, part in self._results])
            self._results = []

    def _push(self, role: str, parts: list[dict[str, Any]]) -> None:
        if not parts:
            return
        if self.contents and self.contents[-1]["role"] == role:
            self.contents[-1]["parts"].extend(parts)
        else:
            self.contents.append({"role": role, "parts": parts})


def _calling_config(choice: str | dict[str, Any]) -> dict[str, Any]:
    """OpenAI's ``tool_choice`` as ``functionCallingConfig``; a named function is ``ANY``
    restricted to it. Other values pass through for Gemini to judge."""
    if isinstance(choice, str):
        return {"mode": _TOOL_MODES.get(choice, choice.upper())}
    function = choice.get("function")
    if choice.get("type") == "function" and isinstance(function, dict):
        return {"mode": "ANY", "allowedFunctionNames": [function.get("name", "")]}
    return choice


def _generation_config(request: ChatRequest) -> dict[str, Any]:
    config: dict[str, Any] = {}
    if request.temperature is not UNSET:
        config["temperature"] = request.temperature
    if request.max_tokens is not UNSET:
        config["maxOutputTokens"] = request.max_tokens
    if request.stop is not UNSET:
        config["stopSequences"] = [request.stop] if isinstance(request.stop, str) else request.stop
    return config


def _body(request: ChatRequest) -> dict[str, Any]:
    conversation = _Conversation()
    for message in request.messages:
        conversation.add(message)
    contents = conversation.finish()
    body: dict[str, Any] = {}
    if conversation.system:
        body["systemInstruction"] = {"parts": conversation.system}
    body["contents"] = contents
    if request.tools is not UNSET and request.tools:
        declarations = [msgspec.to_builtins(tool.function) for tool in request.tools]
        body["tools"] = [{"functionDeclarations": declarations}]
    if request.tool_choice is not UNSET:
        body["toolConfig"] = {"functionCallingConfig": _calling_config(request.tool_choice)}
    if config := _generation_config(request):
        body["generationConfig"] = config
    return body


def _path(model: str, stream: bool, options: WireOptions) -> str:
    """``options.chat_path``, when set, replaces ``/models/{model}``; the method follows it."""
    resource = (options.chat_path or _MODEL_PATH).format(model=model.removeprefix("models/"))
    query = {"alt": "sse", **options.query} if stream else options.query
    path = resource + (":streamGenerateContent" if stream else ":generateContent")
    return f"{path}?{urlencode(query)}" if query else path


# --- responses and streams ------------------------------------------------------------


def _usage(usage: _UsageMetadata) -> TokenUsage:
    """Gemini's prompt count already includes cached tokens; thoughts are output too."""
    thoughts = usage.thoughts_token_count or 0
    return TokenUsage(
        input_tokens=usage.prompt_token_count or 0,
        cached_input_tokens=usage.cached_content_token_count or 0,
        output_tokens=(usage.candidates_token_count or 0) + thoughts,
        reasoning_tokens=thoughts,
    )


def _finish_reason(reason: str, called: bool) -> str:
    """Gemini says ``STOP`` after function calls too; the calls make it ``tool_calls``."""
    mapped = FINISH_REASONS.get(reason, reason)
    return "tool_calls" if mapped == "stop" and called else mapped


def _call_id(call: _FunctionCall, response_id: str | None, ordinal: int) -> str:
    if call.id:
        return call.id
    prefix = _UNSAFE_ID_CHARS.sub("", response_id or "")
    return f"call_{prefix}_{ordinal}" if prefix else f"call_{ordinal}"


def _arguments(call: _FunctionCall) -> str:
    return _encoder.encode(call.args or {}).decode()


def _candidate(response: _Response) -> _Candidate | None:
    """The first candidate, after raising what a 200 body can carry instead of one: an
    error, or a blocked prompt."""
    if response.error is not None:
        raise _in_band_error(response.error)
    if response.candidates:
        return response.candidates[0]
    feedback = response.prompt_feedback
    if feedback is not None and feedback.block_reason:
        reason = feedback.block_reason
        raise ContentPolicy(f"the prompt was blocked ({reason})", status_code=200)
    return None


def _answer_parts(candidate: _Candidate | None) -> list[_Part]:
    content = candidate.content if candidate is not None else None
    return (content.parts or []) if content is not None else []


def _is_text(part: _Part) -> bool:
    """Thought parts are reasoning, never answer text."""
    return bool(part.text) and not part.thought


class GeminiStreamParser:
    """Parses one ``streamGenerateContent?alt=sse`` stream.

    Every chunk repeats the cumulative usage, so each update reports the last one it saw.
    Calls arrive whole and are numbered across the stream; a ``STOP`` after any call is
    ``tool_calls``.
    """

    def __init__(self) -> None:
        self._sse = SSEDecoder()
        self._calls = 0

    def feed(self, data: bytes) -> StreamUpdate:
        return self._merge(self._sse.feed(data))

    def close(self) -> StreamUpdate:
        return self._merge(self._sse.close())

    def _merge(self, events: list[SSEEvent]) -> StreamUpdate:
        update = StreamUpdate()
        text: list[str] = []
        for event in events:
            if event.data:
                self._chunk(decode(_response_decoder, event.data, "stream frame"), update, text)
        update.text = "".join(text)
        return update

    def _chunk(self, chunk: _Response, update: StreamUpdate, text: list[str]) -> None:
        candidate = _candidate(chunk)
        if chunk.usage_metadata is not None:
            update.usage = _usage(chunk.usage_metadata)
        for part in _answer_parts(candidate):
            if part.function_call is not None:
                update.tool_calls.append(self._call(part.function_call, chunk.response_id))
            elif _is_text(part):
                text.append(part.text or "")
        if candidate is not None and candidate.finish_reason:
            update.finish_reason = _finish_reason(candidate.finish_reason, self._calls > 0)

    def _call(self, call: _FunctionCall, response_id: str | None) -> ToolCallDelta:
        index, self._calls = self._calls, self._calls + 1
        call_id = _call_id(call, response_id, index)
        return ToolCallDelta(index=index, id=call_id, name=call.name, arguments=_arguments(call))


def _parsed(response: _Response) -> ParsedResponse:
    candidate = _candidate(response)
    if candidate is None:
        raise MalformedResponse("response has no candidates")
    parts = _answer_parts(candidate)
    calls = [part.function_call for part in parts if part.function_call is not None]
    return ParsedResponse(
        text="".join(part.text or "" for part in parts if _is_text(part)),
        finish_reason=_finish_reason(candidate.finish_reason or "", bool(calls)),
        usage=_usage(response.usage_metadata) if response.usage_metadata else TokenUsage(),
        tool_calls=[
            ToolCall(
                id=_call_id(call, response.response_id, ordinal),
                function=FunctionCall(name=call.name, arguments=_arguments(call)),
            )
            for ordinal, call in enumerate(calls)
        ],
        model=response.model_version or "",
    )


# --- errors ---------------------------------------------------------------------------


def _retry_delay(status: _Status) -> float | None:
    """Seconds from a ``RetryInfo`` detail (``"34.4s"``), Gemini's only retry hint."""
    for detail in status.details or ():
        if detail.type == _RETRY_INFO and detail.retry_delay:
            try:
                seconds = float(detail.retry_delay.removesuffix("s"))
            except ValueError:
                return None
            return None if math.isnan(seconds) else max(seconds, 0.0)
    return None


def _code(status: _Status, message: str) -> str | None:
    """The code ``make_error`` classifies by: a 503 that says "overloaded" is capacity."""
    if status.status == "UNAVAILABLE" and "overloaded" in message.lower():
        return "overloaded"
    return status.status


def _refuses_account(status: _Status) -> bool:
    """A 400 that no retry can fix: a bad key (``API_KEY_INVALID``) or a free tier closed
    to this country (``FAILED_PRECONDITION``)."""
    reasons = {detail.reason for detail in status.details or ()}
    return status.status == "FAILED_PRECONDITION" or "API_KEY_INVALID" in reasons


def _status_error(
    http_status: int,
    status: _Status,
    *,
    provider: str | None = None,
    headers: dict[str, str] | None = None,
    in_band: bool = False,
) -> ProviderError:
    message = status.message or status.status or "unknown error"
    code = _code(status, message)
    error = make_error(
        http_status, code, message, provider=provider, headers=headers, in_band=in_band
    )
    if _refuses_account(status):
        error = AuthenticationFailed(
            error.message, provider=provider, status_code=http_status, retry_after=error.retry_after
        )
    if error.retry_after is None:
        error.retry_after = _retry_delay(status)
    return error


def _in_band_error(status: _Status) -> ProviderError:
    """An error sent inside a 200 body or stream; no provider is known here."""
    code = status.code if status.code is not None and 400 <= status.code < 600 else 500
    return _status_error(code, status, in_band=True)


def _error_status(body: bytes) -> _Status | None:
    """The ``Status`` of a Google error body; ``None`` for any other body (HTML, proxies)."""
    try:
        return _error_decoder.decode(body).error
    except DECODE_ERRORS:
        return None


# --- the family -----------------------------------------------------------------------


class GeminiFamily:
    name: str = "gemini"

    def build_request(
        self, request: ChatRequest, *, model: str, stream: bool, options: WireOptions
    ) -> WireRequest:
        body = _encoder.encode(_body(request))
        return WireRequest(path=_path(model, stream, options), body=body, headers=dict(_HEADERS))

    def stream_parser(self, model: str) -> GeminiStreamParser:
        return GeminiStreamParser()

    def parse_response(self, body: bytes, model: str) -> ParsedResponse:
        return _parsed(decode(_response_decoder, body, "response"))

    def parse_error(
        self, status: int, body: bytes, headers: dict[str, str], *, provider: str
    ) -> ProviderError:
        error = _error_status(body)
        if error is None:
            message = body_text(status, body)
            return make_error(status, None, message, provider=provider, headers=headers)
        return _status_error(status, error, provider=provider, headers=headers)


FAMILY: Final[WireFamily] = GeminiFamily()
