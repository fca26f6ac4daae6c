"""Three caller processes for one provider share the load, and losing one hangs nothing.

Each caller process reads its own config, whose ``mock`` provider points at its own
mock server: the same models, the same answers, one counter per process. So each
mock's count of answered calls is the work its caller did.
"""

from __future__ import annotations

import signal
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pytest
from anyio.abc import Process

from omnillm.embedded import EmbeddedNats
from omnillm.testing.mock_provider import MockProvider, MockSettings
from tests.conftest import client_for, mock_settings, running
from tests.e2e._outcomes import Load
from tests.e2e.test_cli import OMNI, read_lines, without_keys

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]

TOKENS = 20


def write_config(directory: Path, mock: MockProvider) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "omnillm.yaml"
    path.write_text(
        "log: {level: warning}\n"
        "reliability: {probe_interval_s: 0, stall_timeout_s: 5, heartbeat_s: 0.5}\n"
        f"providers: {{mock: {{family: openai, base_url: '{mock.base_url}', api_key: none}}}}\n"
        "models:\n"
        "  - {id: mock/mock-small, tier: simple, price: {input: 1, output: 1}}\n"
    )
    return path


@asynccontextmanager
async def callers(directories: list[Path], url: str) -> AsyncIterator[list[Process]]:
    """``omni actor caller --provider mock`` in each directory, started together, each live
    (its subscription made) on entry; every one stopped on the way out, killed if need be."""
    processes: list[Process] = []
    try:
        for directory in directories:
            with (directory / "stderr.log").open("wb") as stderr:
                command = [*OMNI, "actor", "caller", "--provider", "mock", "--nats-url", url]
                processes.append(
                    await anyio.open_process(
                        command, cwd=directory, env=without_keys(), stderr=stderr
                    )
                )
        with anyio.fail_after(30):
            for process in processes:
                line = await anext(read_lines(process))
                assert line.startswith("OmniLLM actor caller (mock)"), line
        yield processes
    finally:
        for process in processes:
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
        with anyio.move_on_after(20):
            for process in processes:
                await process.wait()
        for process in processes:
            if process.returncode is None:
                process.kill()
                await process.wait()


async def test_three_callers_share_the_work_and_a_killed_one_leaves_no_request_hanging(
    nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    requests, concurrency, kill_after = 150, 24, 45
    timeout_s, silence_s = 15.0, 2.0  # callers send a frame at least every 0.5 s
    url = nats_server.url
    mocks = [MockProvider(MockSettings(tokens=TOKENS, token_delay_s=0.01)) for _ in range(3)]
    outcomes: dict[int, str] = {}
    async with mocks[0], mocks[1], mocks[2]:
        directories = [tmp_path / f"caller{i}" for i in range(3)]
        for directory, mock in zip(directories, mocks, strict=True):
            write_config(directory, mock)
        settings = mock_settings(mocks[0])  # the classifier and planner call no provider
        async with (
            running(settings, url, kinds=("classifier", "planner")),
            callers(directories, url) as processes,
            client_for(url, timeout_s=timeout_s, stall_s=silence_s, first_frame_s=silence_s) as c,
        ):
            load = Load(
                c,
                "job",
                outcomes,
                tokens=TOKENS,
                requests=requests,
                concurrency=concurrency,
                kill_after=kill_after,
                limit_s=timeout_s + 5,
            )
            started = time.monotonic()
            async with anyio.create_task_group() as tg:
                load.start(tg)
                await load.enough.wait()
                with anyio.fail_after(5):  # the next call to reach it streams for 0.2 s
                    seen = len(mocks[0].attempts.get("mock-small", ()))
                    await mocks[0].wait_attempts("mock-small", seen + 1)
                before_kill = [sum(mock.answered.values()) for mock in mocks]
                processes[0].kill()  # SIGKILL, with answers streaming
            took = time.monotonic() - started
    served = [sum(mock.answered.values()) for mock in mocks]
    lost = [o for o in outcomes.values() if o != "answer"]
    print(f"answered per caller before the kill {before_kill}, in all {served}; {took:.1f}s")
    print(f"ended in errors: {lost}")

    assert len(outcomes) == requests
    kinds = {outcome.split(" ")[0] for outcome in outcomes.values()}
    assert kinds <= {"answer", "error"}, outcomes  # never short, never ended without Done
    assert lost, "the killed caller was streaming: its answers cannot have ended well"
    # A clear error: the stream went silent, or the dying caller took the offer with it.
    clear = {"error stream_stalled", "error first_frame_timeout", "error no_caller"}
    assert set(lost) <= clear, lost
    assert all(count >= 5 for count in before_kill), before_kill  # all three took work
    assert all(count >= 10 for count in served[1:]), served  # the survivors took the rest
    assert sum(o == "answer" for o in outcomes.values()) >= requests - concurrency
    assert took < 30
