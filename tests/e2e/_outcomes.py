"""How one request of a kill test ended, in a word the test can count."""

from __future__ import annotations

from typing import Any

from omnillm.bus.messages import Delta, Done, Error
from omnillm.errors import OmniLLMError
from omnillm.testing.mock_provider import answer_tokens


def ask(prompt: str) -> dict[str, Any]:
    return {"model": "mock/mock-small", "messages": [{"role": "user", "content": prompt}]}


async def outcome_of(client: Any, prompt: str, tokens: int) -> str:
    """``answer`` (the mock's whole answer), ``SHORT``, ``error <code>`` or
    ``ENDED WITHOUT DONE``."""
    text: list[str] = []
    try:
        async for frame in client.stream(ask(prompt)):
            if isinstance(frame, Delta):
                text.append(frame.text)
            elif isinstance(frame, Done):
                full = "".join(text) == "".join(answer_tokens(prompt, tokens))
                return "answer" if full else "SHORT"
            elif isinstance(frame, Error):
                return f"error {frame.code}"
    except OmniLLMError as exc:
        return f"error {exc.code}"
    return "ENDED WITHOUT DONE"
