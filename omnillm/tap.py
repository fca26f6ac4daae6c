"""``omni tap``: watch the bus, one readable line per message.

::

    omni tap                              # omni.v1.>: requests, envelopes, events, usage
    omni tap '>' --request-id abc123      # everything about one request, frames included
    omni tap '_INBOX.>' --json            # the frames clients receive, as JSON lines

What each line says depends on the subject: a request shows its model and the
start of the last user turn; an envelope on ``omni.v1.plan`` or ``omni.v1.call.*``
its attempt and candidate; a frame on an inbox its kind and a summary (provider and
model, text length, usage and cost, error code); an event or usage record its
fields. ``--request-id`` keeps messages with that ``Omni-Request-Id`` header, and
the messages that later arrive on their reply subjects (the end-of-stream message
and handoff answers carry no header).

Frames go to clients' inboxes, ``_INBOX.>`` unless a client chose another prefix,
which are outside ``omni.v1.>``: tap ``>`` or ``_INBOX.>`` to see them. On a server
with authorization that needs a user allowed to subscribe there
(``permissions: {subscribe: [">"]}``); it sees every client's answers, so give it
to operators only.
"""

from __future__ import annotations

import sys
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Final, TextIO

import anyio
import msgspec
import orjson
from anyio.abc import TaskStatus
from nats.aio.msg import Msg

from omnillm.bus import subjects
from omnillm.bus.connection import RID_HEADER, Bus
from omnillm.bus.events import Event
from omnillm.bus.messages import (
    Accepted,
    Busy,
    Delta,
    Done,
    Error,
    Frame,
    Heartbeat,
    Reset,
    Start,
    Usage,
    decode_envelope,
    decode_frame,
    decode_handoff_reply,
    decode_request,
)

__all__ = ["DEFAULT_SUBJECT", "render", "summarize", "tap"]

DEFAULT_SUBJECT: Final = f"{subjects.ROOT}.>"
PREVIEW_CHARS: Final = 60
_REPLIES_KEPT: Final = 1024
_event_decoder: Final = msgspec.json.Decoder(Event)
_usage_decoder: Final = msgspec.json.Decoder(Usage)
_CALL_PREFIX: Final = f"{subjects.ROOT}.call."
_EVENTS_PREFIX: Final = f"{subjects.ROOT}.events."
_USAGE_PREFIX: Final = f"{subjects.ROOT}.usage."
_REPLAY_PREFIX: Final = f"{subjects.ROOT}.replay."


def _preview(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= PREVIEW_CHARS else text[: PREVIEW_CHARS - 1] + "…"


# --- what one message says (pure) ----------------------------------------------------


def summarize(subject: str, headers: Mapping[str, str] | None, data: bytes) -> dict[str, Any]:
    """The fields worth a line: ``kind`` first, then what that kind of message carries."""
    try:
        if subject in (subjects.REQUEST, subjects.GATEWAY_REQUEST):
            return _request(data)
        if subject == subjects.PLAN or subject.startswith(_CALL_PREFIX):
            return _envelope(data)
        if subject.startswith(_EVENTS_PREFIX):
            return _event(data)
        if subject.startswith(_USAGE_PREFIX):
            return _usage(data)
        if subject.startswith(subjects.ADMIN_PREFIX + "."):
            return {"kind": "admin", "bytes": len(data)}
        if subject.startswith("$"):  # JetStream API and advisories, KV traffic
            return {"kind": "system", "bytes": len(data)}
    except msgspec.DecodeError as exc:  # a tap shows what is there, even when it is wrong
        return {"kind": "invalid", "bytes": len(data), "error": _preview(str(exc))}
    return _reply(headers, data)


def _request(data: bytes) -> dict[str, Any]:
    request = decode_request(data)
    return {
        "kind": "request",
        "model": request.model,
        "messages": len(request.messages),
        "text": _preview(request.last_user_text()),
    }


def _envelope(data: bytes) -> dict[str, Any]:
    envelope = decode_envelope(data)
    fields: dict[str, Any] = {"kind": "envelope", "attempt": envelope.attempt}
    if envelope.classified is not None:
        fields["tier"] = envelope.classified.tier
    if envelope.candidates:
        fields["candidate"] = envelope.candidate.model
        fields["index"] = f"{envelope.index + 1}/{len(envelope.candidates)}"
    if envelope.partial:
        fields["partial_chars"] = len(envelope.partial)
    if envelope.failures:
        fields["failures"] = [f.code for f in envelope.failures]
    return fields


def _event(data: bytes) -> dict[str, Any]:
    event = _event_decoder.decode(data)
    fields: dict[str, Any] = {"kind": f"event.{event.kind}"}
    for name in ("provider", "model", "reason", "attempt"):
        if value := getattr(event, name):
            fields[name] = _preview(value) if name == "reason" else value
    return fields | {k: v for k, v in event.detail.items() if k not in fields}


def _usage(data: bytes) -> dict[str, Any]:
    usage = _usage_decoder.decode(data)
    return {
        "kind": "usage",
        "provider": usage.provider,
        "model": usage.model,
        "outcome": usage.outcome,
        "attempt": usage.attempt,
        "in": usage.tokens.input_tokens,
        "out": usage.tokens.output_tokens,
        "cost_usd": usage.cost_usd,
        "latency_ms": usage.latency_ms,
    }


def _reply(headers: Mapping[str, str] | None, data: bytes) -> dict[str, Any]:
    """An inbox (or replay) message: a frame, the end of a stream, or a handoff answer."""
    if (headers or {}).get("Status") == "503":
        return {"kind": "no_responders"}
    if not data:
        return {"kind": "end"}
    try:
        return _frame(decode_frame(data))
    except msgspec.DecodeError:
        pass
    try:
        answer = decode_handoff_reply(data)
    except msgspec.DecodeError:
        return {"kind": "message", "bytes": len(data)}
    match answer:
        case Accepted():
            return {"kind": "accepted"}
        case Busy():
            return {"kind": "busy", "reason": answer.reason}


def _frame(frame: Frame) -> dict[str, Any]:
    head: dict[str, Any] = {"attempt": frame.attempt, "seq": frame.seq}
    match frame:
        case Start():
            return {"kind": "start", **head, "provider": frame.provider, "model": frame.model}
        case Delta():
            tools = {"tool_calls": len(frame.tool_calls)} if frame.tool_calls else {}
            start = frame.start
            opens = {"provider": start.provider, "model": start.model} if start else {}
            return {"kind": "delta", **head, **opens, "chars": len(frame.text), **tools}
        case Heartbeat():
            return {"kind": "heartbeat", **head}
        case Reset():
            return {"kind": "reset", **head, "reason": _preview(frame.reason)}
        case Done():
            return {
                "kind": "done",
                **head,
                "provider": frame.provider,
                "model": frame.model,
                "finish": frame.finish_reason,
                "in": frame.usage.input_tokens,
                "out": frame.usage.output_tokens,
                "cost_usd": frame.cost_usd,
                "ttft_ms": frame.ttft_ms,
            }
        case Error():
            return {"kind": "error", **head, "code": frame.code, "message": _preview(frame.message)}


def render(subject: str, rid: str | None, summary: Mapping[str, Any], at: float) -> str:
    """One line: time, request id, subject, kind, then ``key=value`` pairs."""
    clock = datetime.fromtimestamp(at).strftime("%H:%M:%S.%f")[:-3]
    pairs = " ".join(f"{key}={_value(value)}" for key, value in summary.items() if key != "kind")
    return f"{clock} {rid or '-'} {subject} {summary['kind']} {pairs}".rstrip()


def _value(value: Any) -> str:
    if isinstance(value, str):
        return repr(value) if not value or " " in value or "=" in value else value
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    return str(value)


# --- the tap ---------------------------------------------------------------------------


class _Printer:
    """Filters by request id, following reply subjects, and writes one line per message."""

    def __init__(self, out: TextIO, rid: str | None, as_json: bool) -> None:
        self.out = out
        self.rid = rid
        self.as_json = as_json
        self.replies: OrderedDict[str, None] = OrderedDict()
        self.closed = anyio.Event()
        """Set when ``out`` cannot be written any more (``omni tap | head``)."""

    def admits(self, msg: Msg) -> bool:
        if self.rid is None:
            return True
        if (msg.headers or {}).get(RID_HEADER) == self.rid:
            if msg.reply:
                self.replies[msg.reply] = None
                if len(self.replies) > _REPLIES_KEPT:
                    self.replies.popitem(last=False)
            return True
        return msg.subject in self.replies

    async def on_message(self, msg: Msg) -> None:
        if not self.admits(msg):
            return
        at = time.time()
        rid = (msg.headers or {}).get(RID_HEADER)
        summary = summarize(msg.subject, msg.headers, msg.data)
        if self.as_json:
            line = orjson.dumps({"at": at, "subject": msg.subject, "rid": rid, **summary}).decode()
        else:
            line = render(msg.subject, rid, summary, at)
        try:
            self.out.write(line + "\n")
            self.out.flush()
        except (OSError, ValueError):  # a closed pipe or file: nobody is reading
            self.closed.set()


async def tap(
    url: str,
    subject: str | Sequence[str] = DEFAULT_SUBJECT,
    *,
    rid: str | None = None,
    as_json: bool = False,
    out: TextIO | None = None,
    stop: anyio.Event | None = None,
    task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Print what crosses ``subject`` (one or several) to ``out`` (default: stdout).

    Reports started once the subscriptions are live on the server; returns when ``stop``
    is set, when ``out`` is closed, or on cancellation.
    """
    printer = _Printer(out or sys.stdout, rid, as_json)
    bus = await Bus.connect(url, name="omni-tap")
    try:
        for one in [subject] if isinstance(subject, str) else subject:
            await bus.subscribe(one, printer.on_message)
        await bus.flush()
        task_status.started()
        async with anyio.create_task_group() as tg:
            for event in (stop, printer.closed):
                if event is not None:
                    tg.start_soon(_cancel_when, event, tg.cancel_scope)
    finally:
        with anyio.CancelScope(shield=True):
            await bus.close()


async def _cancel_when(event: anyio.Event, scope: anyio.CancelScope) -> None:
    await event.wait()
    scope.cancel()
