"""``omni up --workers N``: the router in the main process, the gateway in N-1 worker
processes on one port (the main one answers HTTP only while no worker listens)."""

from __future__ import annotations

import json
import math
import os
import re
import signal
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from anyio.abc import Process
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from anyio.streams.text import TextReceiveStream

from omnillm import workers
from omnillm.bus.messages import Delta, Done
from omnillm.embedded import EmbeddedNats
from omnillm.supervisor import WORKER_KINDS, Stack
from omnillm.testing.mock_provider import MockProvider, answer_tokens
from tests.conftest import SERVING, client_for, mock_settings
from tests.e2e.test_cli import (
    OMNI,
    UP_LINE,
    nats_servers_using,
    port_is_closed,
    read_lines,
    without_keys,
    write_config,
)

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]

Log = dict[str, Any]


@dataclass
class Up:
    """A running ``omni up --workers N``, its addresses and its log lines as they come."""

    process: Process
    line: str
    nats_url: str
    api: str
    data_dir: Path
    logs: MemoryObjectReceiveStream[Log]

    @property
    def port(self) -> int:
        return int(self.api.rsplit(":", 1)[1].split("/", 1)[0])

    def workers(self) -> list[int]:
        """Pids of its worker processes (its children running ``omnillm.workers``)."""
        return [pid for pid in children(self.process.pid) if "omnillm.workers" in cmdline(pid)]

    async def log_line(self, wanted: Callable[[Log], bool]) -> Log:
        with anyio.fail_after(30):
            async for entry in self.logs:
                if wanted(entry):
                    return entry
        raise AssertionError("omni up ended without that log line")

    async def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        with anyio.fail_after(30):
            return await self.process.wait()


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def gone(pid: int) -> bool:
    return not Path(f"/proc/{pid}").exists()


async def _read_logs(process: Process, into: MemoryObjectSendStream[Log]) -> None:
    assert process.stderr is not None
    buffer = ""
    async with into:
        async for text in TextReceiveStream(process.stderr):
            buffer += text
            while "\n" in buffer:
                line, buffer = buffer.split("\n", 1)
                if line.startswith("{"):
                    await into.send(json.loads(line))


@asynccontextmanager
async def omni_up(tmp_path: Path, mock: MockProvider, workers: int = 2) -> AsyncIterator[Up]:
    data_dir = tmp_path / "data"
    write_config(tmp_path, data_dir, mock)
    process = await anyio.open_process(
        [*OMNI, "up", "--workers", str(workers)], cwd=tmp_path, env=without_keys()
    )
    send, receive = anyio.create_memory_object_stream[Log](math.inf)
    try:
        async with anyio.create_task_group() as tg, receive:
            tg.start_soon(_read_logs, process, send)
            with anyio.fail_after(60):
                line = await anext(read_lines(process))
            match = UP_LINE.match(line)
            api = re.search(
                rf"OpenAI-compatible API: (http://\S+/v1) \({workers} processes\)\.", line
            )
            assert match and api, line
            try:
                yield Up(process, line, match.group(1), api.group(1), data_dir, receive)
            finally:
                if process.returncode is None:
                    process.kill()
                    await process.wait()
                tg.cancel_scope.cancel()  # its workers may hold stderr open a little longer
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


def chat(prompt: str, *, stream: bool = False) -> dict[str, Any]:
    return {
        "model": "mock/mock-small",
        "messages": [{"role": "user", "content": prompt}],
        "stream": stream,
    }


async def answered_by(api: str, prompt: str) -> str:
    """One request on a new connection (so the kernel picks a process); its worker."""
    async with httpx.AsyncClient() as http:
        response = await http.post(f"{api}/chat/completions", json=chat(prompt))
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"] == expected(prompt)
    return response.headers["x-omnillm-worker"]


async def ok_requests(api: str) -> tuple[str, float]:
    """``/metrics`` on a new connection: which process answered, and its count of
    requests answered in full."""
    async with httpx.AsyncClient() as http:
        response = await http.get(api.removesuffix("/v1") + "/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    found = re.search(
        r'^omnillm_requests_total\{outcome="ok",tier="simple"\} (\S+)$', response.text, re.M
    )
    return response.headers["x-omnillm-worker"], float(found.group(1)) if found else 0.0


def expected(prompt: str) -> str:
    return "".join(answer_tokens(prompt, 20))


async def test_the_workers_serve_the_gateway_while_the_main_process_routes(
    tmp_path: Path, mock_provider: MockProvider
) -> None:
    async with omni_up(tmp_path, mock_provider, workers=3) as up:
        workers = up.workers()
        assert len(workers) == 2
        async with client_for(up.nats_url) as client:
            for i in range(4):
                completion = await client.complete(chat(f"over nats {i}"))
                assert completion.text == expected(f"over nats {i}")
        seen: list[str] = []
        with anyio.fail_after(30):
            while set(seen) != {"1", "2"}:
                seen.append(await answered_by(up.api, f"over http {len(seen)}"))
        assert "0" not in seen  # the main process answers only while no worker listens
        answered = 4 + len(seen)
        scraped: dict[str, float] = {}
        with anyio.fail_after(30):  # until both have answered, counting every request
            while set(scraped) != {"1", "2"} or set(scraped.values()) != {answered}:
                worker, count = await ok_requests(up.api)
                scraped[worker] = count
        assert await up.stop() == 0
    assert all(gone(pid) for pid in workers)
    assert port_is_closed(up.port)
    assert nats_servers_using(str(up.data_dir)) == []


@dataclass
class Stream:
    worker: str = ""
    text: str = ""
    done: bool = False


async def _stream(api: str, prompt: str, into: Stream, started: anyio.Event) -> None:
    body = chat(prompt, stream=True)
    async with httpx.AsyncClient(timeout=30) as http:
        async with http.stream("POST", f"{api}/chat/completions", json=body) as r:
            assert r.status_code == 200
            into.worker = r.headers["x-omnillm-worker"]
            async for line in r.aiter_lines():
                if line == "data: [DONE]":
                    into.done = True
                elif line.startswith("data: "):
                    choices = json.loads(line[6:]).get("choices") or [{}]
                    into.text += choices[0].get("delta", {}).get("content") or ""
                    if into.text:
                        started.set()


async def test_sigterm_lets_every_answer_in_flight_on_both_workers_finish(
    tmp_path: Path, mock_provider: MockProvider
) -> None:
    mock_provider.settings.token_delay_s = 0.1  # a 20-token answer takes about 2 s
    streams: list[Stream] = []
    nats_texts: dict[int, str] = {}
    in_flight: list[str] = []

    async def over_nats(i: int, started: anyio.Event) -> None:
        async with client_for(up.nats_url) as client:
            text = []
            async for frame in client.stream(chat(f"nats {i}")):
                if isinstance(frame, Delta):
                    text.append(frame.text)
                    started.set()
                elif isinstance(frame, Done):
                    nats_texts[i] = "".join(text)

    async with omni_up(tmp_path, mock_provider, workers=3) as up, anyio.create_task_group() as tg:
        workers = up.workers()
        with anyio.fail_after(30):
            while {s.worker for s in streams} != {"1", "2"}:  # each answer on a new connection
                started = [anyio.Event() for _ in range(8)]
                for event in started[:6]:
                    streams.append(Stream())
                    tg.start_soon(_stream, up.api, f"http {len(streams)}", streams[-1], event)
                for i, event in enumerate(started[6:]):
                    tg.start_soon(over_nats, len(streams) + i, event)
                for event in started:
                    await event.wait()
        in_flight = [s.worker for s in streams if not s.done]
        up.process.send_signal(signal.SIGTERM)
        with anyio.fail_after(30):
            assert await up.process.wait() == 0
    assert {"1", "2"} <= set(in_flight)
    for i, stream in enumerate(streams, start=1):
        assert (stream.text, stream.done) == (expected(f"http {i}"), True)
    assert nats_texts == {i: expected(f"nats {i}") for i in nats_texts}
    assert len(nats_texts) == 2 * len(streams) // 6
    assert all(gone(pid) for pid in workers)
    assert port_is_closed(up.port)
    assert nats_servers_using(str(up.data_dir)) == []


async def test_a_killed_worker_is_reported_and_started_again(
    tmp_path: Path, mock_provider: MockProvider
) -> None:
    async with omni_up(tmp_path, mock_provider) as up:
        [killed] = up.workers()
        pidfd = os.pidfd_open(killed)
        try:
            os.kill(killed, signal.SIGKILL)
            with anyio.fail_after(20):
                await anyio.wait_readable(pidfd)  # gone, and its socket closed
        finally:
            os.close(pidfd)
        # Until it is back, the main process answers (this one may also reach the new one).
        assert await answered_by(up.api, "during the restart") in {"0", "1"}
        crash = await up.log_line(lambda entry: entry["logger"] == "omnillm.workers")
        back = await up.log_line(lambda entry: "is back" in entry["message"])
        [restarted] = up.workers()
        seen: set[str] = set()
        with anyio.fail_after(30):
            while "1" not in seen:
                seen.add(await answered_by(up.api, f"after the crash {len(seen)}"))
        assert await up.stop() == 0
    assert (crash["level"], crash["worker"]) == ("error", 0)
    assert crash["message"] == f"worker 1 (pid {killed}) was killed by SIGKILL; restarting it"
    assert back["message"] == f"worker 1 is back (pid {restarted})"
    assert gone(restarted)
    assert port_is_closed(up.port)


async def test_workers_die_with_a_killed_omni_up_and_leave_no_port_open(
    tmp_path: Path, mock_provider: MockProvider
) -> None:
    async with omni_up(tmp_path, mock_provider) as up:
        [worker] = up.workers()
        [server] = nats_servers_using(str(up.data_dir))
        watched = [os.pidfd_open(worker), os.pidfd_open(server)]
        try:
            up.process.kill()  # SIGKILL: no chance to stop anything itself
            await up.process.wait()
            with anyio.fail_after(20):
                for pidfd in watched:
                    await anyio.wait_readable(pidfd)  # readable once the process has exited
        finally:
            for pidfd in watched:
                os.close(pidfd)
    assert port_is_closed(up.port)


async def test_a_worker_that_keeps_dying_stops_omni_up_saying_why(
    nats_server: EmbeddedNats, mock_provider: MockProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(workers, "RESTART_LIMIT", 0)  # the first death is one too many
    settings = mock_settings(mock_provider, gateway={"port": 0})
    stack = Stack(settings, nats_url=nats_server.url, kinds=SERVING + WORKER_KINDS, workers=2)
    async with anyio.create_task_group() as tg:
        await tg.start(stack.run)
        assert stack.pool is not None
        [pid] = stack.pool.pids.values()
        os.kill(pid, signal.SIGKILL)
    # stack.run has returned on its own: no stop() was called
    assert stack.failure is not None
    assert stack.failure.code == "worker_failed"
    assert stack.failure.message.startswith(f"worker 1 (pid {pid}) was killed by SIGKILL: ")
    assert gone(pid)


@pytest.mark.parametrize("workers", ["1", "2"])
async def test_sigterm_the_moment_omni_up_announces_itself_stops_it_cleanly(
    tmp_path: Path, workers: str
) -> None:
    """The line promises that Ctrl-C and SIGTERM drain: they must not kill it outright."""
    (tmp_path / "omnillm.yaml").write_text(
        f"log: {{level: warning}}\nnats: {{embedded: {{port: 0, data_dir: {tmp_path / 'd'}}}}}\n"
        "gateway: {port: 0}\n"
    )
    process = await anyio.open_process(
        [*OMNI, "up", "--workers", workers], cwd=tmp_path, env=without_keys(), stderr=None
    )
    try:
        with anyio.fail_after(60):
            assert "OmniLLM up:" in await anext(read_lines(process))
            process.send_signal(signal.SIGTERM)
            assert await process.wait() == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
