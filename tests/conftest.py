"""Shared fixtures: a real nats-server per test on a free port, the mock provider, a stack."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import hypothesis
import pytest

from omnillm.client import Client
from omnillm.config import Settings, resolve
from omnillm.embedded import EmbeddedNats
from omnillm.supervisor import ACTOR_KINDS, Stack
from omnillm.testing.demo import mock_config
from omnillm.testing.mock_provider import MockProvider, MockSettings

# The fuzz tests run the same examples everywhere, so CI is deterministic and fast;
# `pytest --hypothesis-profile=explore` searches wider, at random.
hypothesis.settings.register_profile(
    "omnillm", max_examples=200, deadline=None, derandomize=True, database=None
)
hypothesis.settings.register_profile("explore", max_examples=5000, deadline=None)
hypothesis.settings.load_profile("omnillm")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # nats-py is asyncio-only


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[EmbeddedNats]:
    server = EmbeddedNats(tmp_path / "nats", port=0)
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def mock_provider() -> AsyncIterator[MockProvider]:
    async with MockProvider(MockSettings(tokens=20)) as provider:
        yield provider


def mock_settings(provider: MockProvider, **overrides: Any) -> Settings:
    """The mock as the only provider; no active probes unless a test asks (they would
    add requests the tests count)."""
    reliability = {"probe_interval_s": 0, **overrides.pop("reliability", {})}
    return resolve(mock_config(provider.base_url, reliability=reliability, **overrides), env={})


SERVING: tuple[str, ...] = tuple(kind for kind in ACTOR_KINDS if kind not in ("ledger", "gateway"))
"""Every actor but the ledger (it writes a SQLite file) and the gateway (it takes a TCP
port): tests that want them ask."""


@asynccontextmanager
async def running(
    settings: Settings,
    url: str,
    *,
    kinds: tuple[str, ...] = SERVING,
    providers: list[str] | None = None,
) -> AsyncIterator[Stack]:
    """A stack of actors on ``url`` for the duration of the block, stopped gracefully after."""
    stack = Stack(settings, nats_url=url, kinds=kinds, providers=providers)
    async with anyio.create_task_group() as tg:
        await tg.start(stack.run)
        try:
            yield stack
        finally:
            stack.stop()


@asynccontextmanager
async def client_for(url: str, **options: Any) -> AsyncIterator[Client]:
    async with Client(url, **options) as client:
        yield client
