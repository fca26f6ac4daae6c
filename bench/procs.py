"""Processes for the benchmark: start, wait for, measure (from ``/proc``) and stop.

Every process is started in its own session (so its process group is its own) with
its output in a log file, and is stopped on every exit path: SIGTERM to the group and
to every descendant found in ``/proc`` (``omni up`` starts nats-server in a session
of its own), then SIGKILL to whatever is left. CPU time is ``utime + stime`` of
``/proc/<pid>/stat``; memory is ``VmRSS``/``VmHWM`` of ``/proc/<pid>/status``.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Final

__all__ = [
    "Proc",
    "StartError",
    "cpu_seconds",
    "descendants",
    "exit_on_sigterm",
    "free_port",
    "load_average",
    "memory_kb",
    "process_name",
    "wait_http",
    "work_dir",
]

_TICKS: Final = os.sysconf("SC_CLK_TCK")
_REPO: Final = Path(__file__).resolve().parent.parent


class StartError(RuntimeError):
    """A process did not come up; the message says why and where its log is."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _stat_fields(pid: int) -> list[str] | None:
    """``/proc/<pid>/stat`` from field 3 on (after the parenthesised command name)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()


def _start_time(pid: int) -> str | None:
    fields = _stat_fields(pid)
    return fields[19] if fields else None


def descendants(pid: int) -> list[int]:
    """Every live process below ``pid`` (children, their children, ...)."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name))
        if fields:
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    found: list[int] = []
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def cpu_seconds(pids: Iterable[int]) -> float:
    """User plus system CPU seconds of ``pids`` (every thread, dead threads included)."""
    total = 0
    for pid in pids:
        fields = _stat_fields(pid)
        if fields:
            total += int(fields[11]) + int(fields[12])
    return total / _TICKS


def memory_kb(pid: int, field: str) -> int:
    """``VmRSS``, ``VmHWM``... of ``pid`` in KiB (0 if it is gone)."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    match = re.search(rf"^{field}:\s+(\d+) kB", text, re.MULTILINE)
    return int(match.group(1)) if match else 0


def process_name(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return str(pid)


def load_average() -> tuple[float, float, float]:
    one, five, fifteen = os.getloadavg()
    return one, five, fifteen


def wait_http(url: str, timeout_s: float, proc: Proc | None = None) -> None:
    """Poll ``url`` until it answers 200, for at most ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    last = ""
    while time.monotonic() < deadline:
        if proc is not None and proc.popen.poll() is not None:
            raise StartError(f"{proc.name} exited ({proc.popen.returncode}); log: {proc.log}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
                last = f"HTTP {response.status}"
        except (urllib.error.URLError, OSError) as exc:
            last = str(exc)
        time.sleep(0.2)
    where = f"; log: {proc.log}" if proc else ""
    raise StartError(f"{url} did not answer within {timeout_s:g}s ({last}){where}")


class Proc:
    """One started process (in its own session), its log file, and its stop."""

    def __init__(
        self,
        name: str,
        args: Sequence[str],
        log: Path,
        *,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
        this_checkout: bool = True,
    ) -> None:
        """``this_checkout``: put this repository on ``PYTHONPATH`` (for ``-m bench.…``).
        Not for a build of another checkout, which would then import this one's code."""
        self.name = name
        self.log = log
        base = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
        if this_checkout:
            paths = [str(_REPO), base.get("PYTHONPATH")]
            base["PYTHONPATH"] = os.pathsep.join(filter(None, paths))
        program = Path(args[0])
        if len(program.parts) > 1 and not program.is_absolute():  # relative to here, not cwd
            args = [os.path.abspath(program), *args[1:]]
        try:
            with log.open("wb") as out:
                self.popen = subprocess.Popen(
                    list(args),
                    cwd=cwd or _REPO,
                    env={**base, **(env or {})},
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
        except OSError as exc:
            raise StartError(f"cannot start {name}: {exc}") from exc
        self.pid = self.popen.pid
        self._tree: dict[int, str | None] = {}

    def wait_line(self, pattern: str, timeout_s: float) -> re.Match[str]:
        """The first log line matching ``pattern``, waiting at most ``timeout_s``."""
        compiled = re.compile(pattern)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            text = self.log.read_text(errors="replace")
            for line in text.splitlines():
                if match := compiled.search(line):
                    return match
            if self.popen.poll() is not None:
                tail = "\n".join(text.splitlines()[-15:])
                raise StartError(f"{self.name} exited ({self.popen.returncode}):\n{tail}")
            time.sleep(0.05)
        raise StartError(f"{self.name} printed no {pattern!r} within {timeout_s:g}s: {self.log}")

    def pids(self) -> list[int]:
        """This process and every live descendant (remembered, so stop() finds them)."""
        pids = [self.pid, *descendants(self.pid)]
        for pid in pids:
            self._tree.setdefault(pid, _start_time(pid))
        return pids

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.pids())

    def memory_kb(self, field: str = "VmRSS") -> dict[str, int]:
        """``field`` (``VmRSS``, ``VmHWM``) in KiB by process: this one under its own
        name, descendants under their command names (summed per name)."""
        memory: dict[str, int] = {}
        for pid in self.pids():
            name = self.name if pid == self.pid else process_name(pid)
            memory[name] = memory.get(name, 0) + memory_kb(pid, field)
        return memory

    def stop(self, timeout_s: float = 20.0) -> None:
        """SIGTERM to the group and every descendant; SIGKILL what is left after ``timeout_s``."""
        self._signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and (self.popen.poll() is None or self._alive()):
            time.sleep(0.05)
        self._signal(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(5)

    def _signal(self, signum: signal.Signals) -> None:
        """``signum`` to the group while its leader (ours, not yet reaped, so its pid
        cannot have been reused) lives, and to every remembered descendant still alive."""
        if self.popen.poll() is None:
            self.pids()
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, signum)
        self._signal_tree(signum)

    def _alive(self) -> list[int]:
        """Remembered descendants still running as the same process (not a reused pid)."""
        return [
            pid
            for pid, started in self._tree.items()
            if pid != self.pid and started is not None and _start_time(pid) == started
            if (_stat_fields(pid) or ["Z"])[0] != "Z"
        ]

    def _signal_tree(self, signum: signal.Signals) -> None:
        for pid in self._alive():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signum)


def exit_on_sigterm() -> None:
    """SIGTERM unwinds like Ctrl-C (``SystemExit``), so every ``ExitStack`` callback, and
    with it every started process's stop, still runs."""
    signal.signal(signal.SIGTERM, _terminate)


def _terminate(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def work_dir(stack: contextlib.ExitStack, keep: Path | None, prefix: str) -> Path:
    """``keep`` (made if missing), or a temporary folder removed when ``stack`` closes."""
    if keep is None:
        return Path(stack.enter_context(tempfile.TemporaryDirectory(prefix=prefix)))
    work = keep.resolve()
    work.mkdir(parents=True, exist_ok=True)
    return work
