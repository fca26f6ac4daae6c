"""What every wire family of the mock provider shares: the answer, the plan, the frames.

A family module turns its request body into an :class:`Ask` (the conversation as
:class:`Turn` rows, the token cap, the tools on offer) and renders a :class:`Plan`
back in its own shapes. Everything a user could compare across families (the answer
text, the tool-call rule, the token counts) is decided here, once.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass, field
from typing import Any, Final, Literal, Protocol

from aiohttp import web

__all__ = [
    "CONTENT_POLICY_MESSAGE",
    "CONTEXT_LIMIT",
    "CONTEXT_REQUESTED",
    "COST",
    "DEFAULT_MODELS",
    "FAULTS",
    "FAULT_PREFIX",
    "VOCABULARY",
    "Ask",
    "AuthStyle",
    "ErrorKind",
    "Family",
    "Frame",
    "MockError",
    "MockSettings",
    "Plan",
    "Script",
    "ToolCall",
    "Turn",
    "answer_tokens",
    "compact",
    "count_prompt_tokens",
    "invalid",
    "make_plan",
    "model_field",
    "objects",
    "parse_body",
    "pick_tool",
    "positive_int",
    "presented_key",
    "sse",
    "text_of",
]

VOCABULARY: Final[tuple[str, ...]] = (
    "the", "of", "and", "to", "in", "is", "you", "that", "it", "he",
    "was", "for", "on", "are", "as", "with", "his", "they", "at", "be",
    "this", "have", "from", "or", "one", "had", "by", "word", "but", "not",
    "what", "all", "were", "we", "when", "your", "can", "said", "there", "use",
    "each", "which", "she", "do", "how", "their", "if", "will", "up", "other",
)  # fmt: skip
DEFAULT_MODELS: Final[tuple[str, ...]] = ("mock-small", "mock-medium", "mock-large")
COST: Final = "0.0000485"
"""What OpenCode Zen's routes report as the request's cost, in USD, as a string."""
FAULTS: Final[tuple[str, ...]] = (
    "429-retry-after", "429-retry-after-ms", "429", "500-once", "500", "503", "529",
    "reset", "hang", "slow-first-token", "cut", "stall", "malformed", "no-done",
    "context-length", "content-policy", "down-then-up", "auth",
)  # fmt: skip
"""The fault modes (see ``_mock_faults``); a model named ``fault-<name>`` gets one."""
FAULT_PREFIX: Final = "fault-"
CONTEXT_LIMIT: Final = 8192
CONTEXT_REQUESTED: Final = 9000
"""The ``context-length`` fault's numbers: the model's window and what the prompt took."""
CONTENT_POLICY_MESSAGE: Final = "Your request was rejected as a result of our safety system."

AuthStyle = Literal["bearer", "x-api-key", "x-goog-api-key"]
Finish = Literal["stop", "length", "tool_calls"]
ErrorKind = Literal[
    "invalid",
    "auth",
    "model",
    "rate_limit",
    "server",
    "unavailable",
    "overloaded",
    "context_length",
    "content_policy",
]
_STATUS: Final[dict[ErrorKind, int]] = {
    "invalid": 400,
    "auth": 401,
    "model": 404,
    "rate_limit": 429,
    "server": 500,
    "unavailable": 503,
    "overloaded": 529,
    "context_length": 400,
    "content_policy": 400,
}


def answer_tokens(prompt: str, n: int) -> list[str]:
    """Return the ``n`` answer tokens for ``prompt``: the same prompt always gives the
    same tokens, on any machine. The first token has no leading space, later ones do."""
    seed = int.from_bytes(hashlib.sha256(prompt.encode()).digest(), "big")
    rng = random.Random(seed)
    words = [rng.choice(VOCABULARY) for _ in range(n)]
    return [word if i == 0 else f" {word}" for i, word in enumerate(words)]


def text_of(content: object, kinds: tuple[str, ...] = ("text",)) -> str:
    """Text of a message's ``content``: a string, or the ``text`` of the parts whose
    ``type`` is one of ``kinds``, joined with newlines. Other parts (images, audio,
    tool results) and ``None`` contribute nothing."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return ""
    texts = [p.get("text") for p in content if isinstance(p, dict) and p.get("type") in kinds]
    return "\n".join(t for t in texts if isinstance(t, str))


def count_prompt_tokens(messages: list[dict[str, Any]]) -> int:
    """Usage's ``prompt_tokens``: per message, ``len(text) // 4 + 4``.

    The other families count their system text as one more message and each turn's
    text the same way (see :class:`Turn`)."""
    return sum(len(text_of(m.get("content"))) // 4 + 4 for m in messages)


@dataclass
class MockSettings:
    """How the mock answers; read per request, so tests may change it between requests.

    ``free_tier_refused`` makes every ``/zen`` route answer OpenCode Zen's 403
    ``FreeTierError``, as Zen does for clients other than OpenCode.

    Faults (names in :data:`FAULTS`): ``fault`` applies to every generation request,
    ``faults`` to the requests for one model; a ``fault-<name>`` model name wins over
    both. ``fault_delay_s`` is how long ``slow-first-token`` keeps the first token
    back; ``down-then-up`` answers 503 while ``time.monotonic() < down_until`` or for
    the model's first ``down_requests`` requests."""

    tokens: int = 20
    first_token_delay_s: float = 0.0
    token_delay_s: float = 0.0
    models: list[str] = field(default_factory=lambda: list(DEFAULT_MODELS))
    api_key: str | None = None
    free_tier_refused: bool = False
    fault: str | None = None
    faults: dict[str, str] = field(default_factory=dict)
    fault_delay_s: float = 5.0
    down_until: float = 0.0
    down_requests: int = 3

    def __post_init__(self) -> None:
        """A misspelt fault fails here, where the test built its settings."""
        for name in [self.fault, *self.faults.values()]:
            if name is not None and name not in FAULTS:
                raise ValueError(f"unknown mock fault {name!r}; known: {', '.join(FAULTS)}")


class MockError(Exception):
    """A rejected request, raised while validating and rendered in the family's shape.

    ``kind`` says what went wrong: ``"auth"`` (401), ``"model"`` (404, ``detail`` is the
    model id) or ``"invalid"`` (400, ``detail`` is the message, ``param`` the field);
    the fault modes add ``"rate_limit"`` (429), ``"server"`` (500), ``"unavailable"``
    (503), ``"overloaded"`` (529), ``"context_length"`` and ``"content_policy"`` (400),
    each family wording them as its upstream does. ``headers`` go on the response
    (``Retry-After``).

    Outside ``OmniLLMError`` on purpose: it is the mock upstream's own refusal, never
    leaving its handler but as an HTTP error in the family's shape, which the caller
    then maps like any upstream's."""

    def __init__(
        self,
        kind: ErrorKind,
        detail: str = "",
        *,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(detail)
        self.kind, self.detail, self.param = kind, detail, param
        self.status = _STATUS[kind]
        self.headers = headers or {}


def invalid(message: str, param: str | None = None) -> MockError:
    return MockError("invalid", message, param=param)


def parse_body(raw: bytes) -> dict[str, Any]:
    """The request body as a JSON object, or a 400."""
    try:
        body = json.loads(raw)
    except ValueError as exc:
        raise invalid(f"Invalid JSON body: {exc}") from exc
    if not isinstance(body, dict):
        raise invalid("The request body must be a JSON object")
    return body


def objects(value: object, name: str) -> list[dict[str, Any]]:
    """A non-empty array of objects (``messages``, ``contents``, ``input``), or a 400."""
    if not isinstance(value, list) or not value:
        raise invalid(f"'{name}' must be a non-empty array", name)
    if not all(isinstance(item, dict) for item in value):
        raise invalid(f"every item of '{name}' must be an object", name)
    return value


def model_field(body: dict[str, Any]) -> str:
    model = body.get("model")
    if not isinstance(model, str):
        raise invalid("you must provide a model parameter", "model")
    return model


def positive_int(value: object, name: str) -> int | None:
    """A token cap: ``None`` when absent, else a positive integer or a 400."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise invalid(f"'{name}' must be a positive integer", name)
    return value


def presented_key(request: web.Request, style: AuthStyle) -> str | None:
    """The key the client sent in the header ``style`` names, or ``None``."""
    if style != "bearer":
        return request.headers.get(style)
    header = request.headers.get("Authorization", "")
    return header.removeprefix("Bearer ") if header.startswith("Bearer ") else None


@dataclass(frozen=True)
class Turn:
    """One message of the conversation, whatever the family called it.

    ``role`` is ``"user"`` only when the user spoke: a user-role message that carries
    nothing but tool results (Anthropic, Gemini) is a ``"tool"`` turn. The system text
    is a ``"system"`` turn. ``text`` is what :func:`count_prompt_tokens` counts."""

    role: str
    text: str


@dataclass(frozen=True)
class Ask:
    """A validated request, in the family-neutral terms the answer depends on."""

    model: str
    turns: list[Turn]
    cap: int | None
    stream: bool
    tools: list[str] = field(default_factory=list)
    """Names of the functions on offer, in order."""
    named_tool: str | None = None
    """The function the tool choice forces, if it names one."""
    tools_refused: bool = False
    """The tool choice is ``none``."""
    include_usage: bool = False
    """OpenAI chat's ``stream_options.include_usage``."""
    sse: bool = True
    """Gemini without ``alt=sse`` streams one JSON array instead."""


@dataclass(frozen=True)
class ToolCall:
    name: str
    arguments: str
    """JSON text of ``{"input": prompt}``."""
    digest: str
    """Eight hex digits of the prompt's hash; families build their call ids from it."""

    @property
    def input(self) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self.arguments)
        return parsed

    @property
    def halves(self) -> tuple[str, str]:
        """The arguments in two pieces, as the families' streams deliver them."""
        half = len(self.arguments) // 2
        return self.arguments[:half], self.arguments[half:]


@dataclass(frozen=True)
class Plan:
    """Everything a response needs, decided before the first byte is sent."""

    ask: Ask
    serial: int
    """This request's number at the server, for ids such as ``chatcmpl-mock-1``."""
    tokens: list[str]
    tool_call: ToolCall | None
    finish: Finish
    prompt_tokens: int
    completion_tokens: int
    zen: bool = False

    @property
    def model(self) -> str:
        return self.ask.model

    @property
    def text(self) -> str:
        return "".join(self.tokens)


def pick_tool(ask: Ask) -> str | None:
    """The function to call, or ``None`` when the answer should be text: tools are
    offered, the tool choice is not ``none``, and the user spoke last."""
    if not ask.tools or ask.tools_refused or not ask.turns or ask.turns[-1].role != "user":
        return None
    return ask.named_tool if ask.named_tool is not None else ask.tools[0]


def make_plan(ask: Ask, settings: MockSettings, serial: int, *, zen: bool = False) -> Plan:
    """Decide the answer to ``ask``: the prompt is the last user turn's text.

    A tool call ignores the token cap and counts ``len(arguments) // 4`` (at least 1)
    completion tokens. A text answer ends with ``"length"`` only when the cap truncated it.
    """
    users = [t.text for t in ask.turns if t.role == "user"]
    prompt = users[-1] if users else ""
    prompt_tokens = count_prompt_tokens([{"content": t.text} for t in ask.turns])
    name = pick_tool(ask)
    if name is not None:
        digest = hashlib.sha256(prompt.encode()).hexdigest()[:8]
        call = ToolCall(name, json.dumps({"input": prompt}), digest)
        used = max(1, len(call.arguments) // 4)
        return Plan(ask, serial, [], call, "tool_calls", prompt_tokens, used, zen)
    n = settings.tokens if ask.cap is None else min(settings.tokens, ask.cap)
    finish: Finish = "length" if n < settings.tokens else "stop"
    return Plan(ask, serial, answer_tokens(prompt, n), None, finish, prompt_tokens, n, zen)


@dataclass(frozen=True)
class Frame:
    data: bytes
    paced: bool = False
    """A content frame: sent after the first-token delay (the first one) or the
    per-token delay (later ones)."""


@dataclass(frozen=True)
class Script:
    """A stream to send: ``body`` while the stream counts as in flight, then ``tail``
    (the terminator and anything after it), so a client that has read the end sees
    ``in_flight`` already decremented."""

    body: list[Frame]
    tail: list[bytes]
    content_type: str = "text/event-stream"
    finishes_in_tail: bool = False
    """The tail carries the finish reason and usage (Gemini's last chunk, Responses'
    ``response.completed``) rather than only ending the stream (``[DONE]``,
    ``message_stop``), so the ``no-done`` fault must still send it."""


def compact(value: object) -> str:
    return json.dumps(value, separators=(",", ":"))


def sse(data: object, event: str | None = None, *, end: str = "\n\n") -> bytes:
    """One SSE frame: an optional ``event:`` line, then ``data:`` with ``data`` as compact
    JSON (or as is when it is a string), ended by ``end`` (Gemini uses ``\\r\\n\\r\\n``)."""
    text = data if isinstance(data, str) else compact(data)
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {text}{end}".encode()


class Family(Protocol):
    """One wire format, as the mock speaks it."""

    auth: tuple[AuthStyle, ...]
    """The headers a key is accepted in; a Zen route accepts only the first."""

    def parse(self, body: dict[str, Any], request: web.Request) -> Ask:
        """Validate ``body`` (and the path, for Gemini); raises :class:`MockError`."""
        ...

    def error(self, error: MockError) -> web.Response: ...

    def response(self, plan: Plan) -> dict[str, Any]:
        """The non-streaming body."""
        ...

    def script(self, plan: Plan) -> Script:
        """The stream, including Zen's cost frames when ``plan.zen``."""
        ...
