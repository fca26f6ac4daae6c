"""What every wire family's stream tests share: feeding bytes, merging what came out."""

from __future__ import annotations

import msgspec

from omnillm.bus.messages import TokenUsage
from omnillm.providers.base import StreamUpdate


def one_byte_at_a_time(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


class Collected(msgspec.Struct):
    """What a caller ends up with after a whole stream: the reads merged."""

    text: str
    tool_calls: dict[int, tuple[str | None, str | None, str]]
    finish_reason: str | None
    usage: TokenUsage | None
    done: bool


def collect(updates: list[StreamUpdate]) -> Collected:
    calls: dict[int, tuple[str | None, str | None, str]] = {}
    for update in updates:
        for delta in update.tool_calls:
            call_id, name, arguments = calls.get(delta.index, (None, None, ""))
            call_id = call_id or (delta.id if isinstance(delta.id, str) else None)
            name = name or (delta.name if isinstance(delta.name, str) else None)
            calls[delta.index] = (call_id, name, arguments + delta.arguments)
    finishes = [u.finish_reason for u in updates if u.finish_reason is not None]
    usages = [u.usage for u in updates if u.usage is not None]
    return Collected(
        text="".join(u.text for u in updates),
        tool_calls=calls,
        finish_reason=finishes[-1] if finishes else None,
        usage=usages[-1] if usages else None,
        done=updates[-1].done,
    )
