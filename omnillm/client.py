"""The Python client: publish a chat request, read its token stream.

::

    async with omnillm.Client("nats://127.0.0.1:4222") as client:
        async for frame in client.stream({"messages": [{"role": "user", "content": "hi"}]}):
            ...
        completion = await client.complete(request)

One wildcard subscription serves every request of a client (a mux inbox, like
nats-py's own ``request``); frames are routed to each request's reader by the last
subject token, the request id.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncGenerator, Mapping
from contextlib import aclosing
from types import TracebackType
from typing import Any, Final, Self

import anyio
import msgspec
from anyio.streams.memory import MemoryObjectSendStream
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from omnillm.bus import subjects
from omnillm.bus.connection import RID_HEADER, Bus
from omnillm.bus.messages import (
    ChatRequest,
    Delta,
    Done,
    Error,
    Frame,
    FunctionCall,
    Reset,
    Start,
    TokenUsage,
    ToolCall,
    encode,
)
from omnillm.bus.stream import read_frames
from omnillm.errors import InvalidRequest, OmniLLMError, StreamError, from_code

__all__ = ["DEFAULT_NATS_URL", "Client", "Completion", "to_request"]

DEFAULT_NATS_URL: Final = "nats://127.0.0.1:4222"
_STREAM_BUFFER: Final = 4096
_GRACE_S: Final = 2.0
"""How long past the request's deadline the client waits for the router's own error."""


class Completion(msgspec.Struct, kw_only=True):
    """A whole answer: what ``complete`` returns."""

    rid: str
    text: str
    finish_reason: str
    provider: str
    model: str
    usage: TokenUsage
    cost_usd: float
    attempts: int
    tool_calls: list[ToolCall] = []
    ttft_ms: float | None = None


def to_request(request: ChatRequest | Mapping[str, Any]) -> ChatRequest:
    """Validate a mapping into a ``ChatRequest``; the error names the bad field."""
    if isinstance(request, ChatRequest):
        return request
    try:
        return msgspec.convert(request, ChatRequest)
    except msgspec.ValidationError as exc:
        raise InvalidRequest(f"invalid chat request: {exc}") from exc


class Client:
    """Requests over one NATS connection (or ``bus``, shared).

    ``user`` and ``password`` log in as a NATS user; by default the URL's
    (``nats://user:password@host``), else ``OMNI_NATS_USER`` and ``OMNI_NATS_PASSWORD``.
    Answers come to ``inbox_prefix`` (default ``_INBOX.<user>``, else ``_INBOX``): the
    only place a client user of ``nats.conf`` may subscribe, under ``_INBOX.``, the only
    place the router streams to.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        bus: Bus | None = None,
        inbox_prefix: str | None = None,
        user: str | None = None,
        password: str | None = None,
        timeout_s: float = 120.0,
        first_frame_s: float = 30.0,
        stall_s: float = 60.0,
        connect_wait_s: float = 5.0,
        subject: str = subjects.REQUEST,
    ) -> None:
        self._url = url or DEFAULT_NATS_URL
        self._subject = subject
        """Where requests go; the gateway's is one only actors may publish to."""
        self._bus = bus
        self._owns_bus = bus is None
        self._inbox_prefix = inbox_prefix
        self._user = user
        self._password = password
        self._connect_wait_s = connect_wait_s
        self.timeout_s = timeout_s
        self.first_frame_s = first_frame_s
        self.stall_s = stall_s
        self._streams: dict[str, MemoryObjectSendStream[Msg]] = {}
        self._sub: Subscription | None = None
        self._prefix = ""

    async def __aenter__(self) -> Self:
        if self._bus is None:
            self._bus = await Bus.connect(
                self._url,
                name="omnillm-client",
                inbox_prefix=self._inbox_prefix,
                user=self._user,
                password=self._password,
                connect_wait_s=self._connect_wait_s,
            )
        try:
            await self._open_inbox(self._bus)
        except BaseException:
            await self.__aexit__(None, None, None)
            raise
        return self

    async def _open_inbox(self, bus: Bus) -> None:
        """Subscribe to this client's inbox, and make sure the server allowed it: a
        refused subscription would otherwise look like a router that never answers."""
        self._prefix = bus.new_inbox()
        if not subjects.is_inbox(self._prefix):
            prefix = self._prefix.rpartition(".")[0]
            raise InvalidRequest(
                f"inbox prefix {prefix!r}: the router streams only to inboxes under "
                f"{subjects.INBOX}. (such as {subjects.INBOX}.<user>)"
            )
        subject = f"{self._prefix}.*"
        self._sub = await bus.subscribe(subject, self._on_message)
        await bus.confirm_subscription(subject)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._sub is not None:
            await self._sub.unsubscribe()
            self._sub = None
        if self._owns_bus and self._bus is not None:
            await self._bus.close()
            self._bus = None

    async def _on_message(self, msg: Msg) -> None:
        rid = msg.subject[len(self._prefix) + 1 :]
        send = self._streams.get(rid)
        if send is None:
            return  # a late frame of a finished or abandoned request
        try:
            send.send_nowait(msg)
        except anyio.WouldBlock:
            # The reader fell behind: fail this request rather than the connection.
            self._streams.pop(rid, None)
            send.close()

    async def stream(self, request: ChatRequest | Mapping[str, Any]) -> AsyncGenerator[Frame, None]:
        """Yield the frames of one request: ``Start``, ``Delta``..., ``Done`` or ``Error``.

        ``Reset`` means the frames before it are void (a new attempt started over).
        Transport failures raise: ``NoRouter``, ``FirstFrameTimeout``,
        ``StreamStalled``, ``DeadlineExceeded``, ``StreamGap``.
        """
        bus = self._require_bus()
        chat = to_request(request)
        if chat.timeout_s is msgspec.UNSET:
            chat.timeout_s = self.timeout_s
        rid = os.urandom(16).hex()  # as random as uuid4, a quarter of its cost
        payload = encode(chat)
        headers = {RID_HEADER: rid}
        bus.check_size(payload, headers)
        send, receive = anyio.create_memory_object_stream[Msg](_STREAM_BUFFER)
        self._streams[rid] = send
        try:
            await bus.publish(
                self._subject, payload, headers=headers, reply=f"{self._prefix}.{rid}"
            )
            frames = read_frames(
                receive,
                first_frame_s=self.first_frame_s,
                stall_s=self.stall_s,
                deadline=time.time() + float(chat.timeout_s) + _GRACE_S,
            )
            async with aclosing(frames):
                async for frame in frames:
                    yield frame
        finally:
            self._streams.pop(rid, None)
            send.close()
            receive.close()

    async def complete(self, request: ChatRequest | Mapping[str, Any]) -> Completion:
        """The whole answer, or the error the router reported, raised."""
        collector = _Collector()
        frames = self.stream(request)
        async with aclosing(frames):
            async for frame in frames:
                collector.add(frame)
        return collector.result()

    def _require_bus(self) -> Bus:
        if self._bus is None or self._sub is None:
            raise OmniLLMError("use the client as `async with Client(...) as client`")
        return self._bus


class _Collector:
    """Folds frames into a ``Completion``; ``Reset`` discards what came before."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.tools: dict[int, ToolCall] = {}
        self.start: Start | None = None
        self.done: Done | None = None

    def add(self, frame: Frame) -> None:
        match frame:
            case Start():
                self.start = frame
            case Delta():
                self.parts.append(frame.text)
                for piece in frame.tool_calls:
                    self._add_tool_piece(piece.index, piece.id, piece.name, piece.arguments)
            case Reset():
                self.parts.clear()
                self.tools.clear()
            case Done():
                self.done = frame
            case Error():
                raise from_code(frame.code, frame.message, provider=frame.provider)

    def _add_tool_piece(self, index: int, id_: object, name: object, arguments: str) -> None:
        call = self.tools.setdefault(index, ToolCall(id="", function=FunctionCall(name="")))
        if isinstance(id_, str):
            call.id = id_
        if isinstance(name, str):
            call.function.name += name
        call.function.arguments += arguments

    def result(self) -> Completion:
        done = self.done
        if done is None:
            raise StreamError("the stream ended without a final frame")
        return Completion(
            rid=done.rid,
            text="".join(self.parts),
            finish_reason=done.finish_reason,
            provider=done.provider,
            model=done.model,
            usage=done.usage,
            cost_usd=done.cost_usd,
            attempts=done.attempts,
            tool_calls=[self.tools[i] for i in sorted(self.tools)],
            ttft_ms=done.ttft_ms,
        )
