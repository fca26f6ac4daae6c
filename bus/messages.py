"""Every message that crosses the bus, as msgspec Structs, but for the admin subjects'
queries and answers (:mod:`omnillm.bus.admin`).

Payloads are JSON, so a tap or a client in any language can read them. New fields
always get defaults; ``UNSET`` keeps "not given" apart from ``None`` so adapters
forward only what the caller set.

Families and their decoders (each built once):

- ``ChatRequest``: what a client publishes on ``omni.v1.request``.
- ``CallEnvelope``: what travels between actors (plan and call subjects).
- ``Frame`` union (``Start | Delta | Heartbeat | Reset | Done | Error``): what a
  client reads from its reply inbox. After ``Done`` or ``Error`` comes one empty
  message, the end-of-stream sentinel.
- ``HandoffReply`` union (``Accepted | Busy``): a receiver's immediate answer to a hop.
- ``Failure``: an error as data, for handoff and admin replies.

Every decoder raises ``msgspec.DecodeError`` (``ValidationError`` for a wrong shape) on
any bad input, also for invalid UTF-8 and nesting deeper than msgspec recurses, so a
reader catches one type. :func:`read_request` is the client's edge: it raises the
product's ``InvalidRequest`` or ``RequestTooLarge`` instead.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Final, Literal, TypeVar

import msgspec
from msgspec import UNSET, Meta, Struct, UnsetType

from omnillm.errors import InvalidRequest, RequestTooLarge

__all__ = [
    "END_OF_STREAM",
    "UNSET",
    "Accepted",
    "Busy",
    "CallEnvelope",
    "Candidate",
    "ChatRequest",
    "Classified",
    "ContentPart",
    "Delta",
    "Done",
    "Error",
    "Failure",
    "Frame",
    "FunctionCall",
    "FunctionDef",
    "HandoffReply",
    "HealthState",
    "Heartbeat",
    "ImagePart",
    "ImageUrl",
    "LatencyStat",
    "Message",
    "Metadata",
    "ProviderHealth",
    "Reset",
    "RouteConstraints",
    "Start",
    "TextPart",
    "TokenUsage",
    "Tool",
    "ToolCall",
    "ToolCallDelta",
    "UnsetType",
    "Usage",
    "decode_envelope",
    "decode_frame",
    "decode_handoff_reply",
    "decode_request",
    "encode",
    "read_request",
]

END_OF_STREAM: Final = b""
"""The empty message that follows ``Done`` or ``Error`` on a client's inbox."""

Tier = Literal["simple", "medium", "complex", "reasoning"]
TIERS: Final[tuple[Tier, ...]] = ("simple", "medium", "complex", "reasoning")
Need = Literal["vision", "tools", "long_context"]
Role = Literal["system", "developer", "user", "assistant", "tool"]

MAX_MODEL_CHARS: Final = 256
"""Longer than any catalog id or alias: a longer ``model`` is a mistake or an attack."""
MAX_KEY_BYTES: Final = 255
"""An idempotency key's UTF-8 size (the dedup board's limit; ``max_length`` counts chars)."""
MAX_OUTPUT_TOKENS: Final = 2**31 - 1
"""The largest ``max_tokens`` any wire format takes (Gemini's is an int32)."""
MAX_JSON_DEPTH: Final = 64
"""Nesting allowed in a request's free-form JSON (tool schemas, ``tool_choice``): far
deeper than any real schema, far shallower than the recursion limits of the encoders
every later hop runs it through."""

_T = TypeVar("_T")
_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f]")


def _nests_deeper(value: object, limit: int) -> bool:
    """Whether lists and dicts nest more than ``limit`` levels in ``value``, found level
    by level (no recursion, so no depth can break the check itself)."""
    level = [value] if isinstance(value, dict | list) else []
    for _ in range(limit):
        level = [
            child
            for item in level
            for child in (item.values() if isinstance(item, dict) else item)
            if isinstance(child, dict | list)
        ]
        if not level:
            return False
    return bool(level)


def _check_depth(value: object, name: str) -> None:
    if _nests_deeper(value, MAX_JSON_DEPTH):
        raise ValueError(f"{name}: nested deeper than {MAX_JSON_DEPTH} levels")


# --- chat request -----------------------------------------------------------------


class ImageUrl(Struct, omit_defaults=True):
    url: str
    detail: str | UnsetType = UNSET


class TextPart(Struct, tag="text", tag_field="type"):
    text: str


class ImagePart(Struct, tag="image_url", tag_field="type"):
    image_url: ImageUrl


ContentPart = TextPart | ImagePart


class FunctionCall(Struct):
    name: str
    arguments: str = ""


class ToolCall(Struct):
    id: str
    function: FunctionCall
    type: Literal["function"] = "function"


class Message(Struct, omit_defaults=True):
    role: Role
    content: str | list[ContentPart] | None = None
    name: str | UnsetType = UNSET
    tool_calls: list[ToolCall] | UnsetType = UNSET
    tool_call_id: str | UnsetType = UNSET

    def text(self) -> str:
        """The message's text parts joined; images contribute nothing."""
        if isinstance(self.content, str):
            return self.content
        if not self.content:
            return ""
        return "\n".join(p.text for p in self.content if isinstance(p, TextPart))

    def has_image(self) -> bool:
        return isinstance(self.content, list) and any(
            isinstance(p, ImagePart) for p in self.content
        )


class FunctionDef(Struct, omit_defaults=True):
    name: str
    description: str | UnsetType = UNSET
    parameters: dict[str, Any] | UnsetType = UNSET

    def __post_init__(self) -> None:
        _check_depth(self.parameters, "parameters")


class Tool(Struct):
    function: FunctionDef
    type: Literal["function"] = "function"


class Metadata(Struct, omit_defaults=True):
    user: str | UnsetType = UNSET
    session: str | UnsetType = UNSET
    tags: list[str] = []


class RouteConstraints(Struct, omit_defaults=True):
    """Per-request routing constraints; patterns are ``provider/*`` or ``provider/model``."""

    allow: list[str] = []
    deny: list[str] = []
    max_cost_usd: float | UnsetType = UNSET
    strategy: Literal["cost", "latency", "priority"] | UnsetType = UNSET


class ChatRequest(Struct, omit_defaults=True):
    messages: Annotated[list[Message], Meta(min_length=1)]
    model: Annotated[str, Meta(max_length=MAX_MODEL_CHARS)] = "auto"
    tools: list[Tool] | UnsetType = UNSET
    tool_choice: str | dict[str, Any] | UnsetType = UNSET
    temperature: Annotated[float, Meta(ge=0, le=2)] | UnsetType = UNSET
    max_tokens: Annotated[int, Meta(ge=1, le=MAX_OUTPUT_TOKENS)] | UnsetType = UNSET
    stop: str | list[str] | UnsetType = UNSET
    metadata: Metadata | UnsetType = UNSET
    route: RouteConstraints | UnsetType = UNSET
    idempotency_key: Annotated[str, Meta(min_length=1, max_length=255)] | UnsetType = UNSET
    timeout_s: Annotated[float, Meta(gt=0)] | UnsetType = UNSET

    def __post_init__(self) -> None:
        if _CONTROL.search(self.model):  # a NUL or a newline: it reaches logs and errors
            raise ValueError("model contains a control character")
        _check_depth(self.tool_choice, "tool_choice")
        key = self.idempotency_key
        if isinstance(key, str) and len(key.encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES:
            raise ValueError(f"idempotency_key is over {MAX_KEY_BYTES} bytes of UTF-8")

    def last_user_text(self) -> str:
        for message in reversed(self.messages):
            if message.role == "user":
                return message.text()
        return ""


# --- routing decisions ---------------------------------------------------------------


class Classified(Struct, omit_defaults=True):
    tier: Tier
    needs: list[Need] = []
    input_tokens: int = 0
    output_tokens: int = 0
    confidence: float = 1.0
    reasons: list[str] = []


class Candidate(Struct):
    provider: str
    model: str
    """The catalog id, ``provider/model``."""
    est_cost_usd: float = 0.0


class Failure(Struct, omit_defaults=True):
    """An error as data: a code a program can match and a message a person can read."""

    code: str
    message: str
    retryable: bool = False
    retry_after: float | None = None
    provider: str | None = None


class CallEnvelope(Struct, omit_defaults=True):
    """What travels from actor to actor; the client's reply subject rides inside it."""

    rid: str
    request: ChatRequest
    reply: str
    deadline: float
    """Unix time after which nobody works on this request any more."""
    classified: Classified | None = None
    candidates: list[Candidate] = []
    index: int = 0
    """Position in ``candidates`` of the candidate this envelope is addressed to."""
    attempt: int = 0
    """Incremented on every handoff to a caller; frames carry it for fencing."""
    partial: str = ""
    """Answer text that already reached the client: a continuation prefills it."""
    reset_reason: str = ""
    """Set when an earlier attempt sent frames but no text: the next one starts with Reset."""
    failures: list[Failure] = []
    created_at: float = 0.0
    skipped: list[str] = []
    """Models the planner passed over, and why: shown to the client in ``Start``."""
    key: str = ""
    """The name of the API key the request came in with (gateway), for the ledger."""

    @property
    def candidate(self) -> Candidate:
        return self.candidates[self.index]


# --- handoff -------------------------------------------------------------------------


class Accepted(Struct, tag="accepted", tag_field="type"):
    pass


class Busy(Struct, tag="busy", tag_field="type"):
    reason: str = "worker pool full"


HandoffReply = Accepted | Busy


# --- stream frames -------------------------------------------------------------------


class TokenUsage(Struct):
    """Tokens as the provider reported them, normalised: ``input_tokens`` includes cached."""

    input_tokens: int = 0
    cached_input_tokens: int = 0
    cache_write_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0


class ToolCallDelta(Struct, omit_defaults=True):
    """A fragment of a streamed tool call; fragments with the same index concatenate."""

    index: int
    id: str | UnsetType = UNSET
    name: str | UnsetType = UNSET
    arguments: str = ""


class Start(Struct, tag="start", tag_field="type", omit_defaults=True):
    """An attempt begins: who answers, and why the router chose it."""

    rid: str
    attempt: int
    seq: int
    provider: str
    model: str
    tier: str = ""
    confidence: float = 0.0
    reasons: list[str] = []
    est_cost_usd: float = 0.0
    skipped: list[str] = []


class Delta(Struct, tag="delta", tag_field="type", omit_defaults=True):
    """Text or tool-call pieces. An attempt's first ``Delta`` carries its ``Start``
    (one message instead of two on every answer); ``read_frames`` yields that ``Start``
    first, so readers see ``Start`` then ``Delta`` either way."""

    rid: str
    attempt: int
    seq: int
    text: str = ""
    tool_calls: list[ToolCallDelta] = []
    start: Start | None = None


class Heartbeat(Struct, tag="heartbeat", tag_field="type"):
    rid: str
    attempt: int
    seq: int


class Reset(Struct, tag="reset", tag_field="type"):
    rid: str
    attempt: int
    seq: int
    reason: str


class Done(Struct, tag="done", tag_field="type"):
    rid: str
    attempt: int
    seq: int
    finish_reason: str
    provider: str
    model: str
    usage: TokenUsage = msgspec.field(default_factory=TokenUsage)
    cost_usd: float = 0.0
    attempts: int = 1
    ttft_ms: float | None = None


class Error(Struct, tag="error", tag_field="type"):
    rid: str
    attempt: int
    seq: int
    code: str
    message: str
    retryable: bool = False
    provider: str | None = None


Frame = Start | Delta | Heartbeat | Reset | Done | Error


# --- shared state ---------------------------------------------------------------------


HealthState = Literal["ok", "free_tier_refused", "auth_failed", "model_not_found"]


class ProviderHealth(Struct):
    """What callers learned about a provider, shared through the ``omni_health`` bucket."""

    provider: str
    state: HealthState
    reason: str = ""
    at: float = 0.0
    """Unix time of the observation."""


class LatencyStat(Struct):
    """Observed time to first token of one model, shared for the latency strategy."""

    provider: str
    model: str
    """The catalog id."""
    ttft_ms: float
    """Exponentially weighted moving average of successful calls' time to first token."""
    error_rate: float = 0.0
    """The same average over outcomes, 1 for a failure."""
    samples: int = 0
    at: float = 0.0


# --- ledger event --------------------------------------------------------------------


class Usage(Struct, omit_defaults=True):
    """One attempt's usage, for the ledger. Failed attempts are never billed as completions."""

    rid: str
    attempt: int
    provider: str
    model: str
    outcome: Literal["ok", "error"]
    tier: str = ""
    key: str = ""
    tokens: TokenUsage = msgspec.field(default_factory=TokenUsage)
    cost_usd: float = 0.0
    latency_ms: float = 0.0
    ttft_ms: float | None = None
    tries: int = 1
    """Calls to the provider within this attempt (retries included)."""
    est_input_tokens: int = 0
    """The router's tokenizer-free estimate of the prompt, to calibrate it against
    ``tokens.input_tokens`` (what the provider counted)."""
    run: str = ""
    """Which execution of the attempt this is, a token unique to it. An attempt runs twice
    when a handoff's acceptance is lost (a node dies) and the offer goes to another
    caller: both called the provider, both are billed."""


# --- codecs --------------------------------------------------------------------------

_encoder: Final = msgspec.json.Encoder()
_request_decoder: Final = msgspec.json.Decoder(ChatRequest)
_envelope_decoder: Final = msgspec.json.Decoder(CallEnvelope)
_frame_decoder: Final = msgspec.json.Decoder(Frame)
_handoff_decoder: Final = msgspec.json.Decoder(HandoffReply)


def encode(message: Struct) -> bytes:
    return _encoder.encode(message)


def _decode(decoder: msgspec.json.Decoder[_T], data: bytes) -> _T:
    """``decoder.decode``, with the two failures msgspec reports as foreign exceptions
    (invalid UTF-8, nesting past its recursion limit) raised as ``DecodeError`` too."""
    try:
        return decoder.decode(data)
    except UnicodeDecodeError as exc:
        raise msgspec.DecodeError(f"JSON is not valid UTF-8: {exc.reason}") from exc
    except RecursionError as exc:
        raise msgspec.DecodeError("JSON nests too deeply") from exc


def decode_request(data: bytes) -> ChatRequest:
    return _decode(_request_decoder, data)


def read_request(data: bytes, *, max_bytes: int) -> ChatRequest:
    """A client's request, or ``RequestTooLarge``/``InvalidRequest`` saying what is wrong
    (the field, for a wrong one): the one place bytes from a client become a request."""
    if len(data) > max_bytes:
        raise RequestTooLarge(
            f"request of {len(data)} bytes is over the limit of {max_bytes} bytes "
            "(limits.max_request_bytes)"
        )
    try:
        return decode_request(data)
    except msgspec.ValidationError as exc:
        raise InvalidRequest(f"invalid chat request: {exc}") from exc
    except msgspec.DecodeError as exc:
        raise InvalidRequest(f"request is not valid JSON: {exc}") from exc


def decode_envelope(data: bytes) -> CallEnvelope:
    return _decode(_envelope_decoder, data)


def decode_frame(data: bytes) -> Frame:
    frame: Frame = _decode(_frame_decoder, data)
    return frame


def decode_handoff_reply(data: bytes) -> HandoffReply:
    reply: HandoffReply = _decode(_handoff_decoder, data)
    return reply
