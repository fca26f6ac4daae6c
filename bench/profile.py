"""Where ``omni up`` spends its CPU under load: py-spy samples, summarised.

Starts the mock upstream and ``omni up``, warms up, then for each path (``gateway``,
``nats``) runs a closed loop of ``--concurrency`` streams for ``--seconds`` while
``py-spy record`` samples the ``omni up`` process (active threads only, so a sample
is CPU time). For each path it writes the collapsed stacks (``<path>.txt``: open it
in https://www.speedscope.app or feed it to flamegraph.pl) and prints the top
functions by self time and by owner, OmniLLM functions by cumulative time, and time
by library. Then it counts the NATS messages one request of that path makes, by
subject, over ``--count-messages`` sequential requests::

    python -m bench.profile [--path gateway|nats|both] [--seconds 20] [--out DIR]

py-spy comes from ``--py-spy``, else ``py-spy`` on PATH, else a virtual environment
under ``~/.cache/omnillm-bench`` that this installs it into (``pip install py-spy``).
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import re
import shlex
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Final

import anyio
from nats.aio.msg import Msg

from bench import systems
from bench.loadgen import HttpStreams, Probe, closed_loop, http_probe, nats_probe
from bench.procs import Proc, StartError, cpu_seconds, exit_on_sigterm, process_name, work_dir
from omnillm.bus.connection import Bus
from omnillm.client import Client

__all__ = ["Profile", "main", "summarise"]

_FRAME: Final = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")
_SITE: Final = re.compile(r"/site-packages/([^/]+)")
_STDLIB: Final = re.compile(r"/lib/python3\.\d+/([^/]+)")
_REPO: Final = str(Path(__file__).resolve().parent.parent) + "/"
_LOOP_RUNNERS: Final = ("AsyncIOBackend.run (", "run (anyio/_core/_eventloop.py)", "main (omnillm/")


class Profile:
    """Collapsed stacks (``a;b;c count`` lines) folded into counts per function.

    - ``self_time``: the innermost frame of each sample;
    - ``by_library``: the same, by the library (or ``omnillm:<folder>``) it belongs to;
    - ``by_caller``: by the library of the innermost frame that is not the standard
      library's, so a socket write is charged to whoever wrote (nats-py, aiohttp, h11);
      what only the event loop was doing is ``event loop``;
    - ``by_owner``: the innermost OmniLLM frame, library calls below it included (a
      sample with no OmniLLM frame goes to its outermost library frame: a task's entry,
      such as nats-py's flusher or uvicorn's protocol);
    - ``cumulative``: every OmniLLM function on the stack (each once per sample), but
      the ``omni`` entry point that wraps everything.
    """

    def __init__(self, lines: list[str]) -> None:
        self.samples = 0
        self.self_time: Counter[str] = Counter()
        self.by_library: Counter[str] = Counter()
        self.by_caller: Counter[str] = Counter()
        self.by_owner: Counter[str] = Counter()
        self.cumulative: Counter[str] = Counter()
        for line in lines:
            stack, _, count = line.rstrip().rpartition(" ")
            if not stack or not count.isdigit():
                continue
            frames = [f for f in map(_function, stack.split(";")) if f is not None]
            if frames:
                self._add(frames, int(count))

    def _add(self, frames: list[tuple[str, str]], n: int) -> None:
        self.samples += n
        self.self_time[frames[-1][0]] += n
        self.by_library[frames[-1][1]] += n
        callers = [f for f in frames if not f[1].startswith(("stdlib:", "<"))]
        loop = not callers or callers[-1][0].startswith(_LOOP_RUNNERS)
        self.by_caller["event loop" if loop else callers[-1][1]] += n
        ours = [name for name, library in frames if library.startswith("omnillm:")]
        ours = [name for name in ours if "omnillm/cli.py" not in name]  # the entry point
        if ours:
            self.by_owner[ours[-1]] += n
        else:
            outer = [
                f for f in frames if not f[1].startswith(("stdlib:", "<", "omnillm:", "anyio"))
            ]
            self.by_owner[(outer[0] if outer else frames[-1])[0]] += n
        for name in set(ours):
            self.cumulative[name] += n

    def top(self, counter: Counter[str], n: int) -> list[tuple[str, int, float]]:
        return [(name, c, c / self.samples * 100) for name, c in counter.most_common(n)]


def _function(frame: str) -> tuple[str, str] | None:
    """``func (path:line)`` -> (``func (short path)``, library)."""
    match = _FRAME.match(frame.strip())
    if match is None:
        return None
    path = match.group("file")
    library, short = _library(path)
    return f"{match.group('func')} ({short})", library


def _library(path: str) -> tuple[str, str]:
    if site := _SITE.search(path):
        short = path[site.start(1) :]
        return site.group(1).removesuffix(".py"), short
    if path.startswith(_REPO):
        short = path.removeprefix(_REPO)
        return "omnillm:" + short.split("/", 1)[0], short
    if std := _STDLIB.search(path):
        short = path[std.start(1) :]
        return "stdlib:" + std.group(1).removesuffix(".py"), short
    return path, path


def summarise(profile: Profile, *, rate: float, seconds: float, top: int) -> str:
    """The tables, in percent of the active samples (a thread that is runnable but
    waiting for a core counts as active, so on a busy machine shares are what matter)."""
    possible = rate * seconds
    lines = [
        f"{profile.samples} active samples, every thread counted, against {possible:.0f} "
        f"ticks ({profile.samples / possible * 100:.0f}% of one core's worth)",
    ]
    sections = [
        ("self time by library", profile.by_library, 20),
        (
            "by calling library (the standard library's work charged to its caller)",
            profile.by_caller,
            20,
        ),
        (f"top {top} functions by self time", profile.self_time, top),
        (
            f"top {top} by owner (innermost OmniLLM frame, library calls included)",
            profile.by_owner,
            top,
        ),
        (f"top {top} OmniLLM functions by cumulative time", profile.cumulative, top),
    ]
    for title, counter, n in sections:
        lines += ["", f"{title}:"]
        lines += [f"  {pct:5.1f}%  {name}" for name, _, pct in profile.top(counter, n)]
    return "\n".join(lines)


def py_spy(given: str | None) -> str:
    """The py-spy binary: ``given``, on PATH, or installed once into a cache venv."""
    if given:
        return given
    found = shutil.which("py-spy")
    if found:
        return found
    venv = systems.DEFAULT_LITELLM_VENV.parent / "py-spy-venv"
    binary = venv / "bin" / "py-spy"
    if not binary.exists():
        print(f"installing py-spy into {venv} (once) ...", flush=True)
        base = getattr(sys, "_base_executable", sys.executable)
        subprocess.run([base, "-m", "venv", str(venv)], check=True)
        pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "py-spy"]
        subprocess.run(pip, check=True)
    return str(binary)


async def _profile_path(
    args: argparse.Namespace, omni: Proc, probe: Probe, path: str, numbers: Iterator[int]
) -> None:
    await closed_loop(probe, concurrency=8, requests=args.warmup, numbers=numbers)
    raw = args.out / f"{path}.txt"
    record = [args.py_spy, "record", "--pid", str(omni.pid), "--rate", str(args.rate)]
    record += ["--duration", str(int(args.seconds)), "--format", "raw", "--full-filenames"]
    record += ["--nonblocking", "--output", str(raw)]
    async with anyio.create_task_group() as tg:
        tg.start_soon(_run_py_spy, record, args.out / f"{path}.py-spy.log")
        await anyio.sleep(0.5)  # py-spy attaches
        cpu = {name: _cpu(omni, name) for name in ("omni up", "nats-server")}
        batch = await closed_loop(
            probe,
            concurrency=args.concurrency,
            duration_s=args.seconds - 1.0,
            numbers=numbers,
        )
        cpu = {name: _cpu(omni, name) - before for name, before in cpu.items()}
    if not raw.exists():
        print(f"{path}: py-spy wrote nothing; see {args.out / f'{path}.py-spy.log'}")
        return
    profile = Profile(raw.read_text().splitlines())
    text = summarise(profile, rate=args.rate, seconds=args.seconds, top=args.top)
    requests = len(batch.samples)
    per_request = ", ".join(f"{name} {s * 1000 / requests:.2f}" for name, s in cpu.items())
    errors = sorted(set(batch.errors))
    header = (
        f"== {path}: {requests} requests at {args.concurrency} streams in "
        f"{batch.elapsed_s:.1f} s ({requests / batch.elapsed_s:.0f} req/s), "
        f"{len(batch.errors)} errors{': ' + '; '.join(errors[:3]) if errors else ''}\n"
        f"CPU ms/request (from /proc, with py-spy attached): {per_request}"
    )
    (args.out / f"{path}-summary.txt").write_text(header + "\n" + text + "\n")
    print(header)
    print(text)
    print()


def _kind(subject: str) -> str:
    """A subject without its per-request tokens: ``_INBOX.abc.def`` -> ``_INBOX.*``."""
    parts = subject.split(".")
    if parts[0] == "_INBOX":
        return "_INBOX.* (frames, handoff and JetStream answers)"
    if parts[0] in ("$JS", "$KV"):
        return ".".join(parts[:3]) + ".*"
    return ".".join(parts[:4])


async def count_messages(nats_url: str, probe: Probe, requests: int, numbers: Iterator[int]) -> str:
    """NATS messages per request, by subject, over ``requests`` sequential requests
    (what one request costs in hops; every message is a write, a server fan-out and a
    read)."""
    bus = await Bus.connect(nats_url, name="bench-count")
    counts: Counter[str] = Counter()

    async def seen(msg: Msg) -> None:
        counts[_kind(msg.subject)] += 1

    try:
        sub = await bus.subscribe(">", seen)
        await bus.flush()
        await closed_loop(probe, concurrency=1, requests=requests, numbers=numbers)
        await anyio.sleep(0.5)  # the last usage acks and events
        await bus.flush()
        await sub.unsubscribe()
    finally:
        await bus.close()
    total = sum(counts.values())
    lines = [f"NATS messages per request: {total / requests:.1f}"]
    lines += [f"  {n / requests:5.1f}  {kind}" for kind, n in counts.most_common()]
    return "\n".join(lines)


def _cpu(omni: Proc, name: str) -> float:
    """CPU seconds of ``omni up`` itself, or of its children named ``name``."""
    if name == "omni up":
        return cpu_seconds([omni.pid])
    return cpu_seconds(p for p in omni.pids() if p != omni.pid and process_name(p) == name)


async def _run_py_spy(command: list[str], log: Path) -> None:
    with log.open("wb") as out:
        await anyio.run_process(command, stdout=out, stderr=out, check=False)


async def _profile(args: argparse.Namespace, omni: Proc, nats_url: str, gateway_url: str) -> None:
    numbers = itertools.count()
    paths = ("gateway", "nats") if args.path == "both" else (args.path,)
    async with contextlib.AsyncExitStack() as stack:
        for path in paths:
            if path == "nats":
                client = await stack.enter_async_context(Client(nats_url))
                probe = nats_probe(client, systems.MODEL, args.tokens, tag="profile")
            else:
                http = HttpStreams(gateway_url)
                stack.callback(http.close)
                probe = http_probe(http, systems.MODEL, args.tokens, tag="profile")
            await _profile_path(args, omni, probe, path, numbers)
            if args.count_messages:
                text = await count_messages(nats_url, probe, args.count_messages, numbers)
                print(f"== {path}: {text}\n")
                with (args.out / f"{path}-summary.txt").open("a") as out:
                    out.write("\n" + text + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__)
    add = parser.add_argument
    add("--path", choices=("gateway", "nats", "both"), default="both")
    add("--seconds", type=float, default=20.0, help="sampling seconds per path")
    add("--concurrency", type=int, default=32)
    add("--rate", type=int, default=250, help="py-spy samples a second")
    add("--top", type=int, default=25, help="functions listed")
    add("--warmup", type=int, default=300)
    add("--count-messages", type=int, default=100, help="sequential requests to count (0: skip)")
    add("--tokens", type=int, default=20)
    add("--token-delay-ms", type=float, default=0.0, help="the mock's delay between tokens")
    add("--out", type=Path, default=Path("bench/.profiles"), help="where the stacks go")
    add("--py-spy", help="the py-spy binary (default: on PATH, else installed once)")
    add("--omni-command", type=shlex.split, default=[sys.executable, "-m", "omnillm.cli"])
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    args.py_spy = py_spy(args.py_spy)
    exit_on_sigterm()
    with contextlib.ExitStack() as stack:
        work = work_dir(stack, None, "omnillm-profile-")
        try:
            omni, nats_url, gateway_url = systems.start_mock_and_omni(
                stack,
                work,
                tokens=args.tokens,
                token_delay_ms=args.token_delay_ms,
                command=args.omni_command,
            )
        except StartError as exc:
            print(f"bench: {exc}", file=sys.stderr)
            return 1
        anyio.run(_profile, args, omni, nats_url, gateway_url)
    print(f"collapsed stacks and summaries in {args.out}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
