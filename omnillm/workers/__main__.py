"""A worker process of ``omni up --workers N`` (``python -m omnillm.workers``).

It reads its :class:`~omnillm.workers.WorkerSpec` from stdin, runs the gateway's
:class:`~omnillm.supervisor.Stack` on the main process's NATS and port, says ``ready``
on stdout once live, and drains on SIGTERM. The pool that starts these processes is
:mod:`omnillm.workers`; this module is apart from it so that the supervisor, which uses
the pool, and the worker, which runs the supervisor's stack, import each other nowhere.
"""

from __future__ import annotations

import logging
import os
import pickle
import signal
import sys

import anyio

from omnillm.embedded import die_with_parent
from omnillm.logs import configure_logging
from omnillm.supervisor import Stack
from omnillm.workers import READY, WorkerSpec, tag_logs

log = logging.getLogger("omnillm.workers")


def _die_with_parent(parent: int) -> bool:
    """Linux: SIGTERM when the main process dies, even by SIGKILL. False if it already has."""
    die_with_parent()
    return os.getppid() == parent


def _say_ready() -> None:
    """``ready`` to the main process; then stdout is stderr, so nothing else goes there."""
    os.write(1, READY)
    os.dup2(2, 1)


async def _serve(spec: WorkerSpec) -> None:
    stack = Stack(
        spec.settings(),
        nats_url=spec.nats_url,
        kinds=spec.kinds,
        providers=spec.providers,
        worker=spec.index,
        metrics_subject=spec.metrics_subject,
    )
    # Open for the whole drain: a second SIGTERM (bench tools signal every process of a
    # tree) is absorbed instead of killing the worker mid-answer.
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with anyio.create_task_group() as tg:
            await tg.start(stack.run)
            _say_ready()
            async for signum in signals:
                log.info("%s: draining and stopping", signal.Signals(signum).name)
                stack.stop()
                break


def main() -> int:
    try:
        spec: WorkerSpec = pickle.load(sys.stdin.buffer)
    except EOFError:  # the main process is gone already
        return 1
    if not _die_with_parent(spec.parent):
        return 1
    configure_logging(spec.config.log.level, json=True)
    tag_logs(spec.index)
    try:
        anyio.run(_serve, spec)
    except Exception:  # one tagged log line on the shared stderr, not a bare traceback
        log.exception("worker %d failed", spec.index)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
