"""A sans-IO Server-Sent Events decoder over raw bytes, shared by every wire family.

Feed it whatever the network read returned; it hands back the events completed by
those bytes and keeps the rest. The rules are the parts of the WHATWG SSE grammar
that LLM providers exercise (see providers.md §0.2):

- a line ends in ``\\n``, ``\\r\\n`` or ``\\r``, and a ``\\r\\n`` may be split across reads;
- a blank line ends an event; an event with no ``data:`` line is dropped;
- a line starting with ``:`` is a comment (keep-alives such as ``: OPENROUTER PROCESSING``);
- ``data:`` lines are joined with ``\\n``; one space after the colon is dropped;
- ``event:`` names the event; ``id:``, ``retry:`` and unknown fields are ignored.

The work is done by ``bytes.splitlines`` and ``bytes.partition`` on whole buffers, so
the Python-level cost is per line, never per byte, and data stays ``bytes``. A line that
spans many reads is kept as its pieces and joined once, when it ends, so a long line
costs its length, not its length times the reads.

Garbage is bounded too: a line over ``MAX_LINE_BYTES`` or an event over
``MAX_EVENT_BYTES`` is a ``MalformedResponse``, never an unbounded buffer.
"""

from __future__ import annotations

from typing import Final

from msgspec import Struct

from omnillm.errors import MalformedResponse

__all__ = ["MAX_EVENT_BYTES", "MAX_LINE_BYTES", "SSEDecoder", "SSEEvent"]

MAX_LINE_BYTES: Final = 16 * 1024 * 1024
"""A line longer than this is not a provider's event: an upstream that never ends a line
would otherwise grow the buffer without bound."""
MAX_EVENT_BYTES: Final = MAX_LINE_BYTES
"""The same bound for the ``data:`` lines of one event (an upstream that never sends the
blank line ending an event)."""


class SSEEvent(Struct, frozen=True, gc=False):
    event: str | None
    """The ``event:`` field, or ``None`` when the event had none."""
    data: bytes
    """The event's ``data:`` lines joined with ``\\n``."""


class SSEDecoder:
    """Turns a byte stream into :class:`SSEEvent` values; one decoder per stream."""

    def __init__(self) -> None:
        self._tail: list[bytes] = []
        """The pieces of a line whose terminator has not arrived yet."""
        self._tail_size = 0
        self._skip_lf = False
        """The last read ended in ``\\r``: a ``\\n`` opening the next read belongs to it."""
        self._event: str | None = None
        self._data: list[bytes] = []
        self._data_size = 0

    def feed(self, data: bytes) -> list[SSEEvent]:
        """Decode the next bytes; return the events they completed, in order."""
        if self._skip_lf and data:
            self._skip_lf = False
            if data[:1] == b"\n":
                data = data[1:]
        if not data:
            return []
        if b"\n" not in data and b"\r" not in data:  # the line goes on: keep the piece
            self._keep(data)
            return []
        buffer = b"".join([*self._tail, data]) if self._tail else data
        self._tail, self._tail_size = [], 0
        lines = buffer.splitlines()
        last = buffer[-1:]
        if last == b"\r":
            self._skip_lf = True
        if last not in (b"\n", b"\r"):
            self._keep(lines.pop())
        return self._lines(lines)

    def close(self) -> list[SSEEvent]:
        """The stream ended: treat an unterminated last line and event as complete."""
        lines = [b"".join(self._tail), b""] if self._tail else [b""]
        self._tail, self._tail_size = [], 0
        self._skip_lf = False
        return self._lines(lines)

    def _keep(self, piece: bytes) -> None:
        self._tail.append(piece)
        self._tail_size += len(piece)
        if self._tail_size > MAX_LINE_BYTES:
            raise MalformedResponse(f"an SSE line is over {MAX_LINE_BYTES} bytes with no end")

    def _lines(self, lines: list[bytes]) -> list[SSEEvent]:
        events: list[SSEEvent] = []
        for line in lines:
            if line:
                self._field(line)
                continue
            if self._data:
                events.append(SSEEvent(self._event, b"\n".join(self._data)))
            self._event = None
            self._data, self._data_size = [], 0
        return events

    def _field(self, line: bytes) -> None:
        # A comment line (":...") has an empty field name, so it falls through unread.
        name, _, value = line.partition(b":")
        if value[:1] == b" ":
            value = value[1:]
        if name == b"data":
            self._data.append(value)
            self._data_size += len(value) + 1
            if self._data_size > MAX_EVENT_BYTES:
                raise MalformedResponse(f"an SSE event is over {MAX_EVENT_BYTES} bytes with no end")
        elif name == b"event":
            self._event = value.decode("utf-8", "replace")
