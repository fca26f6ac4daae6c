"""A three-node NATS cluster losing a node under load: every request ends, billing stays exact.

Three real ``nats-server`` processes on loopback, routed into one cluster with
JetStream; actors connected to different nodes (each learns the other nodes from
the server, so it fails over); the usage stream and every KV bucket at three replicas
because ``nats.replicas`` is ``auto``. The node leading the usage stream is killed
(SIGKILL) partway through the traffic.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from nats.js.api import StreamConfig
from nats.js.errors import BadRequestError

from omnillm.actors.ledger.actor import LedgerActor
from omnillm.bus.admin import Stats
from omnillm.bus.connection import Bus
from omnillm.bus.usage import STREAM, ensure_stream
from omnillm.embedded import find_nats_server
from omnillm.testing.mock_provider import MockProvider, MockSettings
from tests.conftest import client_for, mock_settings, running
from tests.e2e._outcomes import Load

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]

FORM_WITHIN_S = 20.0
TOKENS = 20


@dataclass
class Node:
    """One ``nats-server`` of the cluster: a child process logging to ``<directory>/log``."""

    name: str
    directory: Path
    args: list[str]
    process: subprocess.Popen[bytes] | None = None
    url: str = ""
    monitor: str = ""

    @property
    def log_path(self) -> Path:
        return self.directory / "log"

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [find_nats_server(), *self.args],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log,
                preexec_fn=_die_with_parent,
            )

    async def ready(self) -> None:
        """Until the log says the server is ready; then its client and monitoring URLs."""
        with anyio.fail_after(FORM_WITHIN_S):
            while "Server is ready" not in (text := self.log_path.read_text()):
                assert self.process is not None and self.process.poll() is None, text[-2000:]
                await anyio.sleep(0.02)  # the server starts on its own; poll, bounded
        self.url = "nats://" + _after(text, "Listening for client connections on ")
        self.monitor = "http://" + _after(text, "Starting http monitor on ")

    def kill(self) -> None:
        """SIGKILL: a crash (the data is in the test's directory: nothing to keep clean)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
        if self.process is not None:
            self.process.wait()


def _after(text: str, marker: str) -> str:
    return text.split(marker, 1)[1].split()[0]


def _die_with_parent() -> None:
    """Linux: a server is killed with the test process, even one killed by SIGKILL."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def free_ports(count: int) -> list[int]:
    """Ports nothing listens on now (the route listeners need theirs before they start)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


@asynccontextmanager
async def nats_cluster(directory: Path, size: int = 3) -> AsyncIterator[list[Node]]:
    """``size`` JetStream nodes routed to each other, once each is ready; all killed after."""
    routes = free_ports(size)
    nodes: list[Node] = []
    try:
        for i, port in enumerate(routes):
            name = f"n{i + 1}"
            others = ",".join(f"nats://127.0.0.1:{p}" for p in routes if p != port)
            args = ["-a", "127.0.0.1", "-p", "-1", "-m", "-1", "--server_name", name]
            args += ["-js", "-sd", str(directory / name / "jetstream")]
            args += ["--cluster_name", "omni-test", "--cluster", f"nats://127.0.0.1:{port}"]
            nodes.append(Node(name, directory / name, [*args, "--routes", others]))
            nodes[-1].start()
        for node in nodes:
            await node.ready()
        yield nodes
    finally:
        for node in nodes:
            node.kill()


async def _meta_group(http: httpx.AsyncClient, node: Node) -> dict[str, Any]:
    try:
        answer = await http.get(f"{node.monitor}/jsz")
    except httpx.TransportError:
        return {}
    meta: dict[str, Any] = answer.json().get("meta_cluster") or {}
    return meta


async def cluster_formed(nodes: list[Node]) -> None:
    """Until every node follows one JetStream meta leader that sees all its peers current,
    and a stream can be placed on every node (each has told the leader it has room)."""
    with anyio.fail_after(FORM_WITHIN_S):
        async with httpx.AsyncClient(timeout=2.0) as http:
            while True:
                groups = {node.name: await _meta_group(http, node) for node in nodes}
                leaders = {group.get("leader") for group in groups.values()}
                if len(leaders) == 1 and (leader := leaders.pop()) in groups:
                    peers = groups[leader].get("replicas") or []
                    if len(peers) == len(nodes) - 1 and all(p.get("current") for p in peers):
                        break
                await anyio.sleep(0.05)  # the election runs on the servers' own timers
        bus = await Bus.connect(nodes[0].url)
        try:
            js = bus.nc.jetstream()
            probe = StreamConfig(name="PROBE", subjects=["probe"], num_replicas=len(nodes))
            while True:
                try:
                    await js.add_stream(probe)
                except BadRequestError:  # "no suitable peers for placement": not yet
                    await anyio.sleep(0.05)
                else:
                    await js.delete_stream("PROBE")
                    return
        finally:
            await bus.close()


async def stream_leader(url: str) -> str:
    bus = await Bus.connect(url)
    try:
        info = await bus.nc.jetstream().stream_info(STREAM)
    finally:
        await bus.close()
    assert info.cluster is not None and info.cluster.leader
    return str(info.cluster.leader)


async def replicas_of_every_stream(url: str) -> dict[str, int]:
    """Every stream's replicas, from a listing that misses none: the server leaves out
    (as ``missing``) a stream whose leader was on the lost node until it has a new one,
    and a stream nobody writes to may take a while to elect it."""
    bus = await Bus.connect(url)
    try:
        with anyio.fail_after(30):
            while True:
                reply = await bus.nc.request("$JS.API.STREAM.LIST", b"{}", timeout=5)
                listing = json.loads(reply.data)
                if not listing.get("missing"):
                    break
                await anyio.sleep(0.1)  # polling for the election's end, bounded above
    finally:
        await bus.close()
    return {s["config"]["name"]: s["config"].get("num_replicas") or 1 for s in listing["streams"]}


async def test_losing_a_node_mid_traffic_ends_every_request_and_bills_every_answer(
    tmp_path: Path,
) -> None:
    requests, concurrency, kill_after = 200, 16, 60
    timeout_s, silence_s = 20.0, 5.0
    mock = MockProvider(MockSettings(tokens=TOKENS, token_delay_s=0.004))
    outcomes: dict[int, str] = {}
    started = time.monotonic()
    async with nats_cluster(tmp_path) as nodes:
        await cluster_formed(nodes)
        formed_s = time.monotonic() - started
        n1, n2, n3 = (node.url for node in nodes)
        async with mock:
            settings = mock_settings(
                mock,
                ledger={"path": str(tmp_path / "ledger.sqlite")},
                reliability={"stall_timeout_s": silence_s, "heartbeat_s": 0.5},
            )
            async with running(settings, n3, kinds=("ledger",)) as ledger_stack:
                ledger = ledger_stack.actors[0]
                assert isinstance(ledger, LedgerActor)
                doomed = await stream_leader(n1)  # the ledger made the stream: it has a leader
                survivor = next(node.url for node in nodes if node.name != doomed)
                serving = ("classifier", "planner", "caller")
                async with (
                    running(settings, n1, kinds=serving),
                    running(settings, n2, kinds=serving),
                    running(settings, n3, kinds=serving),
                    client_for(
                        survivor, timeout_s=timeout_s, stall_s=silence_s, first_frame_s=silence_s
                    ) as client,
                ):
                    load = Load(
                        client,
                        "ask",
                        outcomes,
                        tokens=TOKENS,
                        requests=requests,
                        concurrency=concurrency,
                        kill_after=kill_after,
                        limit_s=timeout_s + 5,
                    )
                    async with anyio.create_task_group() as tg:
                        load.start(tg)
                        await load.enough.wait()
                        next(n for n in nodes if n.name == doomed).kill()
                        killed_at = time.monotonic()
                    traffic_s = time.monotonic() - killed_at
                # Every caller has stopped, its usage published: the ledger catches up.
                stopped_s = time.monotonic() - killed_at - traffic_s
                calls = sum(mock.answered.values())
                stats = await billed(ledger, calls)
                replicas = await replicas_of_every_stream(survivor)
    took = time.monotonic() - started
    print(
        f"cluster formed in {formed_s:.1f}s, traffic after the kill {traffic_s:.1f}s, "
        f"actors stopped in {stopped_s:.1f}s, {took:.1f}s in all; {summary(outcomes)}"
    )

    assert len(outcomes) == requests
    kinds = {outcome.split(" ")[0] for outcome in outcomes.values()}
    assert kinds <= {"answer", "error"}, summary(outcomes)  # never short, never without an end
    assert sum(o == "answer" for o in outcomes.values()) >= requests // 2, summary(outcomes)
    assert stats.attempts - stats.failed_attempts == calls  # every answered call billed, once
    assert stats.output_tokens == calls * TOKENS
    assert replicas[STREAM] == 3
    assert replicas["KV_omni_config"] == 3  # the planners' switch bucket
    assert set(replicas.values()) == {3}, replicas


async def billed(ledger: LedgerActor, calls: int) -> Stats:
    """The ledger's figures once it holds ``calls`` answered attempts (after 20 s: as they are)."""
    with anyio.move_on_after(20):
        while True:
            stats = await anyio.to_thread.run_sync(ledger.store.stats)
            if stats.attempts - stats.failed_attempts >= calls:
                return stats
            await anyio.sleep(0.05)  # the ledger fetches on its own schedule; poll, bounded
    return await anyio.to_thread.run_sync(ledger.store.stats)


def summary(outcomes: dict[int, str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for outcome in outcomes.values():
        counts[outcome] = counts.get(outcome, 0) + 1
    return counts


async def test_a_process_that_counts_fewer_nodes_never_shrinks_a_replicated_stream(
    tmp_path: Path,
) -> None:
    async with nats_cluster(tmp_path) as nodes:
        await cluster_formed(nodes)
        bus = await Bus.connect(nodes[0].url)
        try:
            assert bus.replicas() == 3  # auto, on a three-node cluster
            js = bus.nc.jetstream()
            await ensure_stream(js, replicas=bus.replicas())
            await ensure_stream(js, replicas=1)  # as a process that met a lone node would
            info = await js.stream_info(STREAM)
        finally:
            await bus.close()
    assert info.config.num_replicas == 3
