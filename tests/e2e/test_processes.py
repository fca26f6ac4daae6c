"""Actors in separate processes: shared circuit state, and a caller killed mid-run."""

from __future__ import annotations

import signal
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from anyio.abc import Process

from omnillm.bus.breaker import BreakerPolicy
from omnillm.bus.breakers import BreakerBoard
from omnillm.bus.connection import Bus
from omnillm.bus.messages import Delta, Done, Error
from omnillm.config import load_config, resolve
from omnillm.embedded import EmbeddedNats
from omnillm.errors import OmniLLMError
from omnillm.testing.mock_provider import MockProvider, answer_tokens
from tests.conftest import client_for, running
from tests.e2e.test_cli import OMNI, read_lines, without_keys

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]


def write_config(directory: Path, mock: MockProvider) -> Path:
    path = directory / "omnillm.yaml"
    path.write_text(
        "log: {level: warning}\n"
        "reliability: {probe_interval_s: 0, stall_timeout_s: 5, heartbeat_s: 0.5}\n"
        f"providers:\n"
        f"  primary: {{family: openai, base_url: '{mock.base_url}', api_key: none}}\n"
        f"  backup: {{family: openai, base_url: '{mock.base_url}', api_key: none}}\n"
        "models:\n"
        "  - {id: primary/mock-small, tier: simple, price: {input: 1, output: 1},"
        " fallbacks: [backup/mock-medium]}\n"
        "  - {id: backup/mock-medium, tier: simple, price: {input: 2, output: 2}}\n"
    )
    return path


@asynccontextmanager
async def actor(directory: Path, *args: str) -> AsyncIterator[Process]:
    """``omni actor ...`` as a subprocess, once its subscriptions are live."""
    process = await anyio.open_process([*OMNI, "actor", *args], cwd=directory, env=without_keys())
    try:
        with anyio.fail_after(30):
            line = await anext(read_lines(process))
        assert line.startswith("OmniLLM actor"), line
        yield process
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            with anyio.move_on_after(20):
                await process.wait()
        if process.returncode is None:
            process.kill()
            await process.wait()


def ask(prompt: str) -> dict[str, Any]:
    return {"model": "primary/mock-small", "messages": [{"role": "user", "content": prompt}]}


async def test_a_circuit_opened_by_one_process_is_honoured_by_a_planner_in_another(
    nats_server: EmbeddedNats, mock_provider: MockProvider, tmp_path: Path
) -> None:
    write_config(tmp_path, mock_provider)
    url = nats_server.url
    async with (
        actor(tmp_path, "classifier", "--nats-url", url),
        actor(tmp_path, "planner", "--nats-url", url),
        actor(
            tmp_path, "caller", "--provider", "primary", "--provider", "backup", "--nats-url", url
        ),
    ):
        async with client_for(url) as client:
            before = await client.complete(ask("before"))
            bus = await Bus.connect(url)
            try:  # another process sees primary fail five times in a row
                board = BreakerBoard(bus, BreakerPolicy())
                for _ in range(5):
                    await board.record("primary", "primary/mock-small", success=False)
            finally:
                await bus.close()
            tries = 0
            with anyio.fail_after(1.0):  # the planners' watchers see it within a second
                while (after := await client.complete(ask("after"))).provider != "backup":
                    tries += 1  # each try is a whole request: no idle wait
    assert before.provider == "primary"
    assert (after.provider, after.attempts) == ("backup", 1)  # primary not even tried


async def test_a_caller_killed_mid_run_leaves_no_request_hanging(
    nats_server: EmbeddedNats, mock_provider: MockProvider, tmp_path: Path
) -> None:
    mock_provider.settings.token_delay_s = 0.02  # each answer streams for about 0.4 s
    settings = resolve(load_config(write_config(tmp_path, mock_provider)), env={})
    url = nats_server.url
    outcomes: dict[int, str] = {}
    begun: set[int] = set()
    timeout_s, silence_s = 15.0, 2.0  # callers send a frame at least every 0.5 s
    async with running(settings, url, kinds=("classifier", "planner")):
        async with (
            actor(tmp_path, "caller", "--provider", "primary", "--nats-url", url) as doomed,
            actor(tmp_path, "caller", "--provider", "primary", "--nats-url", url),
            client_for(
                url, timeout_s=timeout_s, stall_s=silence_s, first_frame_s=silence_s
            ) as client,
        ):
            streaming = anyio.Event()
            started = time.monotonic()

            async def one(i: int) -> None:
                text = []
                try:
                    async for frame in client.stream(ask(f"request {i}")):
                        if isinstance(frame, Delta):
                            text.append(frame.text)
                            begun.add(i)
                            if len(begun) >= 30:  # a good number of answers mid-stream
                                streaming.set()
                        elif isinstance(frame, Done):
                            full = "".join(text) == "".join(answer_tokens(f"request {i}", 20))
                            outcomes[i] = "answer" if full else "SHORT"
                            return
                        elif isinstance(frame, Error):
                            outcomes[i] = f"error {frame.code}: {frame.message}"
                            return
                    outcomes[i] = "ENDED WITHOUT DONE"
                except OmniLLMError as exc:
                    outcomes[i] = f"error {exc.code}"

            async with anyio.create_task_group() as tg:
                for i in range(100):
                    tg.start_soon(one, i)
                await streaming.wait()
                doomed.kill()  # SIGKILL, mid-stream
            took = time.monotonic() - started
    assert len(outcomes) == 100
    kinds = {outcome.split(" ")[0] for outcome in outcomes.values()}
    assert kinds <= {"answer", "error"}, outcomes  # never short, never ended without Done
    answered = sum(outcome == "answer" for outcome in outcomes.values())
    lost = {o.split(":")[0] for o in outcomes.values() if o != "answer"}
    # A clear error: the stream went silent, or the dying caller took the offer with it
    # and no other candidate had a caller.
    assert lost <= {"error stream_stalled", "error first_frame_timeout", "error no_caller"}, lost
    assert answered >= 30  # the surviving caller's share at least
    assert took < 3 * silence_s + 1  # the lost ones noticed within their silence limits


async def test_omni_switch_changes_the_next_requests_provider_without_a_restart(
    nats_server: EmbeddedNats, mock_provider: MockProvider, tmp_path: Path
) -> None:
    write_config(tmp_path, mock_provider)
    url = nats_server.url
    auto = {"model": "auto", "messages": [{"role": "user", "content": "hi there"}]}

    async def switch(*args: str) -> str:
        result = await anyio.run_process(
            [*OMNI, "switch", *args, "--nats-url", url], cwd=tmp_path, check=False
        )
        assert result.returncode == 0, result.stderr
        return result.stdout.decode()

    async with (
        actor(tmp_path, "classifier", "--nats-url", url),
        actor(tmp_path, "planner", "--nats-url", url),
        actor(tmp_path, "admin", "--nats-url", url),
        actor(
            tmp_path, "caller", "--provider", "primary", "--provider", "backup", "--nats-url", url
        ),
    ):
        async with client_for(url) as client:
            before = await client.complete(auto)
            said = await switch("backup")
            with anyio.fail_after(1.5):  # planners re-read the switch at least every second
                while (switched := await client.complete(auto)).provider != "backup":
                    pass
            cleared = await switch("--clear")
            with anyio.fail_after(1.5):
                while (after := await client.complete(auto)).provider != "primary":
                    pass
    assert before.provider == "primary"  # the cheaper one
    assert "preferring backup" in said
    assert switched.provider == "backup"
    assert "no provider preference" in cleared
    assert after.provider == "primary"


async def test_an_unknown_provider_cannot_be_switched_to(
    nats_server: EmbeddedNats, mock_provider: MockProvider, tmp_path: Path
) -> None:
    write_config(tmp_path, mock_provider)
    async with actor(tmp_path, "admin", "--nats-url", nats_server.url):
        result = await anyio.run_process(
            [*OMNI, "switch", "nowhere", "--nats-url", nats_server.url],
            cwd=tmp_path,
            check=False,
        )
    assert result.returncode == 1
    assert "provider 'nowhere' is not live here (live: backup, primary)" in result.stderr.decode()
