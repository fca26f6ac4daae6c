"""``omni up --workers N``: the router in one process, the gateway in N-1 on one port.

The main process runs the embedded NATS server and every actor, as with one worker.
Each of the other N-1 processes runs a gateway (:data:`~omnillm.supervisor.WORKER_KINDS`)
on the same NATS and the same port: the main process binds it first (port 0 becomes a
real one), the workers bind it too with ``SO_REUSEPORT``, and the kernel spreads new
connections over the workers; the main process is sent connections only while none of
them listens (see ``actors.gateway.sockets.steer_to_others``). Every response names its
process in ``x-omnillm-worker`` (0: the main one). A worker's ``/metrics`` asks the main process,
which counts (on a private inbox subject), so a scrape shows the same counts whichever
process it reaches.

A worker process (``python -m omnillm.workers``, :mod:`omnillm.workers.__main__`):

- reads its settings, NATS URL and port from stdin, pickled: keys and passwords never
  go on a command line, where other users of the machine could read them;
- writes ``ready`` on stdout once its actors are live; ``omni up`` announces itself
  only when every worker has;
- dies with the main process (``PR_SET_PDEATHSIG``: SIGTERM, even when the main process
  was killed), and on SIGTERM stops as ``omni up`` does: no new connections, answers
  in flight finish;
- logs to the main process's stderr, every line tagged ``"worker": N``.

A worker that exits on its own is logged and started again. More than
:data:`RESTART_LIMIT` deaths within :data:`RESTART_WINDOW_S` stop ``omni up`` with
:class:`WorkerFailed` (something is wrong that restarting does not fix), and so does a
worker that fails before it is ready.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import pickle
import signal
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable
from typing import Final, Literal

import anyio
import msgspec
from anyio.abc import Process, TaskStatus

from omnillm.config import Config, LiveProvider, Settings
from omnillm.errors import OmniLLMError
from omnillm.providers.catalog import Catalog, ModelSpec

__all__ = [
    "MAX_AUTO_WORKERS",
    "READY",
    "RESTART_LIMIT",
    "RESTART_WINDOW_S",
    "WorkerFailed",
    "WorkerPool",
    "WorkerSpec",
    "tag_logs",
    "worker_count",
]

log = logging.getLogger("omnillm.workers")

MAX_AUTO_WORKERS: Final = 4
"""``auto`` stops here: the classifier, planner and callers stay in the main process,
which a few gateway processes already keep busy; each worker costs about 60 MB."""
RESTART_LIMIT: Final = 5
RESTART_WINDOW_S: Final = 60.0
READY_TIMEOUT_S: Final = 60.0
READY: Final = b"ready\n"


class WorkerFailed(OmniLLMError):
    """A worker process failed to start, or kept dying."""

    code = "worker_failed"


def worker_count(setting: int | Literal["auto"]) -> int:
    """``gateway.workers`` as a number: ``auto`` is one per usable CPU, at most 4."""
    if setting != "auto":
        return setting
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(usable or 1, MAX_AUTO_WORKERS))


class _Tag(logging.Filter):
    def __init__(self, worker: int) -> None:
        super().__init__()
        self.worker = worker

    def filter(self, record: logging.LogRecord) -> bool:
        record.worker = self.worker
        return True


def tag_logs(worker: int) -> None:
    """Every line ``omni``'s log handler writes from now on carries ``"worker": worker``."""
    for handler in logging.getLogger().handlers:
        if handler.get_name() == "omnillm":
            handler.addFilter(_Tag(worker))


@dataclasses.dataclass(frozen=True, slots=True)
class WorkerSpec:
    """What a worker process is told on stdin (pickled: it holds keys)."""

    index: int
    parent: int
    """The main process's pid: a worker whose parent is already gone exits."""
    nats_url: str
    metrics_subject: str
    """Where the main process answers scrapes of ``/metrics``."""
    kinds: tuple[str, ...]
    providers: list[str]
    config: Config
    """With ``gateway.port`` the port the main process bound."""
    models: list[ModelSpec]
    live: dict[str, LiveProvider]

    def settings(self) -> Settings:
        return Settings(self.config, Catalog(self.models), self.live)


def _exit_reason(code: int | None) -> str:
    if code is not None and code < 0:
        with contextlib.suppress(ValueError):
            return f"was killed by {signal.Signals(-code).name}"
    return f"exited with code {code}"


class WorkerPool:
    """``count`` worker processes, numbered from 1, kept running until ``stop()``.

    ``on_failure`` is called (once) with a :class:`WorkerFailed` when a worker keeps
    dying; it is expected to stop ``omni up``, which then stops the pool.
    """

    name = "workers"

    def __init__(
        self,
        settings: Settings,
        *,
        count: int,
        nats_url: str,
        gateway_port: int,
        metrics_subject: str,
        kinds: tuple[str, ...],
        providers: list[str],
        on_failure: Callable[[WorkerFailed], None],
    ) -> None:
        config = settings.config
        config = msgspec.structs.replace(
            config, gateway=msgspec.structs.replace(config.gateway, port=gateway_port)
        )
        self._spec = WorkerSpec(
            index=0,
            parent=os.getpid(),
            nats_url=nats_url,
            metrics_subject=metrics_subject,
            kinds=kinds,
            providers=providers,
            config=config,
            models=list(settings.catalog),
            live=settings.providers,
        )
        self.count = count
        self.on_failure = on_failure
        self.processes: dict[int, Process] = {}
        """The live worker processes by number."""
        self._stopping = False
        self._crashes: deque[float] = deque()

    @property
    def pids(self) -> dict[int, int]:
        return {index: process.pid for index, process in self.processes.items()}

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Start every worker, report started once all are ready, and keep them running
        until ``stop()``; returns once they have all exited. Cancelled, it kills them."""
        try:
            async with anyio.create_task_group() as tg:
                for index in range(1, self.count + 1):
                    await self._spawn(index)
                for index in range(1, self.count + 1):
                    await self._ready(index)
                for index in range(1, self.count + 1):
                    tg.start_soon(self._watch, index)
                task_status.started()
        finally:
            with anyio.CancelScope(shield=True):
                await self._kill_all()

    def stop(self) -> None:
        """SIGTERM to every worker: they finish their answers in flight, then exit."""
        self._stopping = True
        for process in self.processes.values():
            if process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    process.terminate()

    async def _spawn(self, index: int) -> None:
        process = await anyio.open_process(
            [sys.executable, "-m", "omnillm.workers"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=None,  # the main process's: one log
            start_new_session=True,  # a Ctrl-C in the terminal is the main process's to handle
        )
        self.processes[index] = process
        if self._stopping:  # stop() came while it started, too early to be signalled
            process.terminate()
        assert process.stdin is not None
        payload = pickle.dumps(dataclasses.replace(self._spec, index=index))
        with contextlib.suppress(anyio.BrokenResourceError):  # it died at once: _ready says why
            await process.stdin.send(payload)
        await process.stdin.aclose()

    async def _ready(self, index: int) -> None:
        """Wait for the worker's ``ready``; raises ``WorkerFailed`` if it dies first."""
        process = self.processes[index]
        assert process.stdout is not None
        said = b""
        with anyio.move_on_after(READY_TIMEOUT_S) as waited:
            with contextlib.suppress(anyio.EndOfStream, anyio.BrokenResourceError):
                while not said.endswith(b"\n"):
                    said += await process.stdout.receive()
        await process.stdout.aclose()
        if said == READY:
            return
        if process.returncode is None:
            process.kill()
        code = await process.wait()
        if waited.cancelled_caught:
            why = f"was not ready within {READY_TIMEOUT_S:g} s"
        else:
            why = f"said {said[:100]!r}" if said else _exit_reason(code)
        raise WorkerFailed(
            f"worker {index} (pid {process.pid}) {why} before it was ready "
            f'(its log lines carry "worker": {index})'
        )

    async def _watch(self, index: int) -> None:
        """Start the worker again whenever it exits on its own, within the restart budget."""
        while True:
            process = self.processes[index]
            code = await process.wait()
            await process.aclose()
            if self._stopping:
                return
            failure = self._crashed(index, process.pid, code)
            if failure is None:
                try:
                    await self._spawn(index)
                    await self._ready(index)
                except WorkerFailed as exc:
                    failure = exc
                else:
                    log.warning("worker %d is back (pid %d)", index, self.processes[index].pid)
                    continue
            if not self._stopping:  # else it was stopped while starting: no failure
                self.on_failure(failure)
            return

    def _crashed(self, index: int, pid: int, code: int | None) -> WorkerFailed | None:
        """Log the crash; a ``WorkerFailed`` if it is one too many."""
        now = time.monotonic()
        self._crashes.append(now)
        while self._crashes and self._crashes[0] < now - RESTART_WINDOW_S:
            self._crashes.popleft()
        what = f"worker {index} (pid {pid}) {_exit_reason(code)}"
        if len(self._crashes) > RESTART_LIMIT:
            log.error("%s; too many restarts, stopping", what)
            return WorkerFailed(
                f"{what}: more than {RESTART_LIMIT} workers died within "
                f"{RESTART_WINDOW_S:g} s, so OmniLLM stopped"
            )
        log.error("%s; restarting it", what)
        return None

    async def _kill_all(self) -> None:
        """SIGKILL whatever still runs (a cancelled drain, a failed start) and reap it."""
        for process in self.processes.values():
            if process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
            await process.wait()
            await process.aclose()
