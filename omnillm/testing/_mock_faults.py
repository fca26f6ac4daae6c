"""Fault modes: how the mock misbehaves, for the reliability tests.

A generation request's fault comes from its model name (``fault-<name>``, always
served), else from ``settings.faults[model]``, else from ``settings.fault``. The names
are :data:`FAULTS`; they fall in three sorts, all decided here without I/O:

- refusals, answered with an error status in the route's family shape
  (:func:`refuse`): ``429-retry-after`` (``Retry-After: 1``), ``429-retry-after-ms``
  (``retry-after-ms: 200``), ``429``, ``500-once`` (only the model's first request
  under the fault), ``500``, ``503``, ``529``, ``context-length``, ``content-policy``,
  ``auth`` and ``down-then-up`` (503 while down, see :class:`MockSettings`);
- connection faults the server acts out before any header (:data:`DROPS`): ``reset``
  closes the connection, ``hang`` never answers until the server stops;
- delivery faults, which send the planned answer wrongly (:func:`delivery`,
  :func:`json_delivery`): ``slow-first-token``, ``cut``, ``stall``, ``malformed``,
  ``no-done``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

from omnillm.testing._mock_common import (
    FAULT_PREFIX,
    FAULTS,
    ErrorKind,
    Frame,
    MockError,
    MockSettings,
    Script,
    invalid,
)

__all__ = ["DROPS", "FAULTS", "Delivery", "delivery", "fault_for", "json_delivery", "refuse"]

DROPS: Final = frozenset({"reset", "hang"})
_FEW: Final = 3
"""How many content frames ``malformed`` sends before the broken one."""
_GARBAGE: Final = b"{not json"
_REFUSALS: Final[dict[str, tuple[ErrorKind, dict[str, str]]]] = {
    "429-retry-after": ("rate_limit", {"Retry-After": "1"}),
    "429-retry-after-ms": ("rate_limit", {"retry-after-ms": "200"}),
    "429": ("rate_limit", {}),
    "500-once": ("server", {}),
    "500": ("server", {}),
    "503": ("unavailable", {}),
    "529": ("overloaded", {}),
    "context-length": ("context_length", {}),
    "content-policy": ("content_policy", {}),
    "down-then-up": ("unavailable", {}),
    "auth": ("auth", {}),
}

End = Literal["eof", "abort", "stall", "linger"]


def fault_for(model: str, settings: MockSettings) -> str | None:
    """The fault the request for ``model`` gets; a name that is no known fault (in the
    model name, or put in the settings after they were built) is a 400 listing them."""
    if model.startswith(FAULT_PREFIX):
        name: str | None = model.removeprefix(FAULT_PREFIX)
    else:
        name = settings.faults.get(model, settings.fault)
    if name is not None and name not in FAULTS:
        raise invalid(f"unknown mock fault {name!r}; known: {', '.join(FAULTS)}", "model")
    return name


def refuse(fault: str, nth: int, settings: MockSettings, now: float) -> None:
    """Raise the error ``fault`` answers the model's ``nth`` request under it with (1 is
    the first), if it refuses that one; ``now`` is ``time.monotonic()``."""
    if fault not in _REFUSALS:
        return
    if fault == "500-once" and nth > 1:
        return
    if fault == "down-then-up" and now >= settings.down_until and nth > settings.down_requests:
        return
    kind, headers = _REFUSALS[fault]
    raise MockError(kind, "wrong" if kind == "auth" else "", headers=dict(headers))


@dataclass(frozen=True)
class Delivery:
    """How a response body goes out, headers first and at once.

    ``body`` is sent while the response counts as in flight, the first content frame
    after ``first_delay_s`` when it is set (else the settings' pacing); then ``tail``.
    ``end`` says what follows: ``"eof"`` ends the body; ``"abort"`` closes the
    connection mid-body; ``"stall"`` sends nothing more, still in flight, until the
    server stops; ``"linger"`` keeps the finished response's connection open until then.
    ``answered`` says the client got a whole answer (it counts in ``answered``)."""

    body: list[Frame]
    tail: list[bytes]
    content_type: str
    end: End = "eof"
    answered: bool = True
    first_delay_s: float | None = None
    length: int | None = None
    """The ``Content-Length`` to announce, when not chunked."""


def delivery(script: Script, fault: str | None, settings: MockSettings) -> Delivery:
    """A stream under ``fault``. ``cut`` ends the body cleanly after half the content
    frames (no finish reason, no terminator); ``stall`` goes silent there;
    ``malformed`` sends a few content frames then ``data: {not json``; ``no-done``
    sends everything carrying the finish reason and usage, withholds the terminator
    (``[DONE]``, ``message_stop``) and lingers."""
    body, tail, kind = script.body, script.tail, script.content_type
    half = _count_paced(body) // 2
    if fault == "slow-first-token":
        return Delivery(body, tail, kind, first_delay_s=settings.fault_delay_s)
    if fault == "cut":
        return Delivery(_through(body, half), [], kind, answered=False)
    if fault == "stall":
        return Delivery(_through(body, half), [], kind, "stall", answered=False)
    if fault == "malformed":
        few = min(_FEW, _count_paced(body))
        broken = Frame(_garbled(_template(body, few)))
        return Delivery([*_through(body, few), broken], [], kind, answered=False)
    if fault == "no-done":
        return Delivery(body, tail if script.finishes_in_tail else [], kind, "linger")
    return Delivery(body, tail, kind)


def json_delivery(data: bytes, fault: str | None, settings: MockSettings) -> Delivery | None:
    """A non-stream answer under ``fault``, or ``None`` when it goes out as usual:
    ``slow-first-token`` sends the headers at once and the body after the delay; ``cut``
    and ``stall`` announce the whole length, send half, then close or go silent;
    ``malformed`` is a 200 whose body is ``{not json``. ``no-done`` changes nothing
    (a JSON body has no terminator)."""
    kind, half = "application/json", data[: len(data) // 2]
    if fault == "slow-first-token":
        frames = [Frame(data, paced=True)]
        return Delivery(frames, [], kind, first_delay_s=settings.fault_delay_s, length=len(data))
    if fault in ("cut", "stall"):
        end: End = "abort" if fault == "cut" else "stall"
        return Delivery([Frame(half)], [], kind, end, answered=False, length=len(data))
    if fault == "malformed":
        return Delivery([Frame(_GARBAGE)], [], kind, answered=False, length=len(_GARBAGE))
    return None


def _count_paced(frames: list[Frame]) -> int:
    return sum(frame.paced for frame in frames)


def _through(frames: list[Frame], n: int) -> list[Frame]:
    """The frames up to and including the ``n``-th content frame (only the lead-in
    frames, such as the role delta or ``message_start``, when ``n`` is 0)."""
    paced = [i for i, frame in enumerate(frames) if frame.paced]
    if not paced:
        return []
    return frames[: paced[0]] if n == 0 else frames[: paced[n - 1] + 1]


def _template(frames: list[Frame], n: int) -> bytes:
    """The content frame that would have come after the ``n``-th (the last one if none)."""
    paced = [frame.data for frame in frames if frame.paced] or [frames[-1].data]
    return paced[min(n, len(paced) - 1)]


def _garbled(frame: bytes) -> bytes:
    """``frame`` with its JSON replaced by ``{not json``, keeping its ``event:`` line,
    ``data:`` prefix (or the JSON array's comma) and its ending."""
    ending = next((end for end in (b"\r\n\r\n", b"\n\n") if frame.endswith(end)), b"")
    return frame[: frame.index(b"{")] + _GARBAGE + ending
