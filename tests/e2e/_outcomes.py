"""How one request of a kill test ended, in a word the test can count; the load they run."""

from __future__ import annotations

from typing import Any

import anyio
from anyio.abc import TaskGroup

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


class Load:
    """``requests`` requests through ``client`` (prompts ``f"{prefix} {i}"``), at most
    ``concurrency`` at a time, each failing the test past ``limit_s`` (it hung). Their
    outcomes go into ``outcomes``; ``enough`` is set once ``kill_after`` were answered in
    full, or once every request has ended."""

    def __init__(
        self,
        client: Any,
        prefix: str,
        outcomes: dict[int, str],
        *,
        tokens: int,
        requests: int,
        concurrency: int,
        kill_after: int,
        limit_s: float,
    ) -> None:
        self.client = client
        self.prefix = prefix
        self.outcomes = outcomes
        self.tokens = tokens
        self.requests = requests
        self.kill_after = kill_after
        self.limit_s = limit_s
        self.enough = anyio.Event()
        self._slots = anyio.Semaphore(concurrency)
        self._answered = self._finished = 0

    def start(self, tg: TaskGroup) -> None:
        for i in range(self.requests):
            tg.start_soon(self._one, i)

    async def _one(self, i: int) -> None:
        async with self._slots:
            with anyio.fail_after(self.limit_s):
                self.outcomes[i] = await outcome_of(self.client, f"{self.prefix} {i}", self.tokens)
        self._answered += self.outcomes[i] == "answer"
        self._finished += 1
        if self._answered >= self.kill_after or self._finished == self.requests:
            self.enough.set()
