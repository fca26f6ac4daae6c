"""OmniLLM against a direct call, LiteLLM and a bare pass-through: one interleaved run.

Every system streams the same answers from the same mock upstream, on this machine,
in the same run:

1. ``direct``: the mock itself;
2. ``omni-nats``: OmniLLM through ``omnillm.Client`` (NATS);
3. ``omni-gateway``: OmniLLM through its HTTP gateway (``POST /v1/chat/completions``,
   ``stream: true``);
4. ``litellm``: LiteLLM's proxy, installed by this script into a throwaway virtual
   environment (``--no-litellm`` skips it);
5. ``passthrough``: a bare aiohttp proxy, the yardstick for ratios.

The systems take turns in rounds (the order rotates each round) so that machine noise
hits them alike; warm-up requests are discarded. Each round gives every system a
sequential batch (one stream at a time: time to first token and total time, and
their overhead against ``direct``), a saturation batch (a closed loop of 32 streams:
throughput and CPU per request) and an open-loop batch at a fixed rate. CPU is the
user+system time of the system's own processes across its batches divided by its
requests (for OmniLLM: ``omni up`` and its nats-server); peak RSS is their summed
``VmHWM``. Prints tables and the issue's targets with PASS/FAIL; ``--json PATH``
writes everything. Run from the repository root::

    python -m bench.driver [--no-litellm] [--json PATH] [--rounds 5] [--tokens 20]

``--omni-workers N`` (default 2) also runs ``omni up --workers N`` (``omni-wN-nats``,
``omni-wN-gateway``) and compares it with the one-process build; ``--ab-command CMD``
runs a second ``omni up`` (another build) in the same rounds and compares the two.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import itertools
import os
import platform
import shlex
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import anyio

from bench import systems
from bench.loadgen import (
    Batch,
    HttpStreams,
    Probe,
    closed_loop,
    http_probe,
    nats_probe,
    open_loop,
)
from bench.procs import Proc, StartError, exit_on_sigterm, load_average, work_dir
from bench.report import Phase, SystemResult, ab_table, overhead, tables, verdicts, write_json
from omnillm.client import Client

__all__ = ["main"]

DESCRIPTIONS: Final = {
    "direct": "the mock upstream, called directly",
    "omni-nats": "OmniLLM, omnillm.Client over NATS",
    "omni-gateway": "OmniLLM, HTTP gateway, stream=true",
    "litellm": "LiteLLM proxy, one worker",
    "passthrough": "bare aiohttp pass-through proxy",
}


@dataclass
class Setup:
    """A started system: how to reach it and which processes are its own."""

    name: str
    url: str
    model: str
    procs: list[Proc]
    headers: dict[str, str] = field(default_factory=dict)
    description: str = ""
    nats: bool = False
    """Reached with ``omnillm.Client`` at ``url``, not over HTTP."""
    result: SystemResult = field(init=False)
    probe: Probe | None = None

    def __post_init__(self) -> None:
        description = self.description or DESCRIPTIONS[self.name]
        self.result = SystemResult(self.name, description)

    def cpu_seconds(self) -> float:
        return sum(p.cpu_seconds() for p in self.procs)


@dataclass
class Run:
    args: argparse.Namespace
    mock: Proc
    setups: list[Setup]
    notes: list[str]
    numbers: Iterator[int] = field(default_factory=itertools.count)


# --- starting ---------------------------------------------------------------------------


def _start_all(args: argparse.Namespace, work: Path, stack: contextlib.ExitStack) -> Run:
    notes: list[str] = []
    mock, mock_url = systems.start_mock(
        work, tokens=args.tokens, ttft_ms=args.ttft_ms, token_delay_ms=args.token_delay_ms
    )
    stack.callback(mock.stop)
    setups = [Setup("direct", mock_url, systems.UPSTREAM_MODEL, [mock])]
    setups += _start_omni("omni", work, mock_url, args.omni_command, stack)
    if args.omni_workers > 1:
        name = f"omni-w{args.omni_workers}"
        (work / name).mkdir(exist_ok=True)
        setups += _start_omni(
            name, work / name, mock_url, args.omni_command, stack, workers=args.omni_workers
        )
    if args.ab_command:
        b_work = work / args.ab_name
        b_work.mkdir(exist_ok=True)
        setups += _start_omni(args.ab_name, b_work, mock_url, args.ab_command, stack)
    try:
        passthrough, url = systems.start_passthrough(work, mock_url)
        stack.callback(passthrough.stop)
        setups.append(Setup("passthrough", url, systems.UPSTREAM_MODEL, [passthrough]))
    except StartError as exc:
        notes.append(f"passthrough skipped: {exc}")
    if args.litellm:
        _start_litellm(args, work, mock_url, stack, setups, notes)
    else:
        notes.append("LiteLLM skipped (--no-litellm)")
    return Run(args, mock, setups, notes)


def _start_omni(
    name: str,
    work: Path,
    mock_url: str,
    command: list[str],
    stack: contextlib.ExitStack,
    *,
    workers: int = 1,
) -> list[Setup]:
    """``omni up`` and its two paths (``NAME-nats``, ``NAME-gateway``)."""
    omni, nats_url, gateway_url = systems.start_omni(
        work, mock_url, command=command, workers=workers
    )
    stack.callback(omni.stop)
    how = f"({shlex.join(command)})" if name != "omni" and workers == 1 else ""
    how = f"(--workers {workers})" if workers > 1 else how
    return [
        Setup(
            f"{name}-nats",
            nats_url,
            systems.MODEL,
            [omni],
            description=f"OmniLLM, omnillm.Client over NATS {how}".strip(),
            nats=True,
        ),
        Setup(
            f"{name}-gateway",
            gateway_url,
            systems.MODEL,
            [omni],
            description=f"OmniLLM, HTTP gateway, stream=true {how}".strip(),
        ),
    ]


def _start_litellm(
    args: argparse.Namespace,
    work: Path,
    mock_url: str,
    stack: contextlib.ExitStack,
    setups: list[Setup],
    notes: list[str],
) -> None:
    try:
        binary = systems.ensure_litellm(args.litellm_venv, args.litellm_spec)
        args.litellm_version = systems.litellm_version(args.litellm_venv)
        print(f"starting LiteLLM {args.litellm_version} ...", flush=True)
        proc, url, key = systems.start_litellm(work, binary, mock_url)
    except StartError as exc:
        message = f"LiteLLM skipped: {exc}"
        print(message, file=sys.stderr, flush=True)
        notes.append(message)
        return
    stack.callback(proc.stop)
    auth = {"authorization": f"Bearer {key}"}
    setups.append(Setup("litellm", url, systems.MODEL, [proc], headers=auth))


# --- measuring --------------------------------------------------------------------------


async def _open_probes(run: Run, stack: AsyncExitStack) -> None:
    tokens = run.args.tokens
    for setup in run.setups:
        if setup.nats:
            client = await stack.enter_async_context(Client(setup.url))
            setup.probe = nats_probe(client, setup.model, tokens, tag=setup.name)
        else:
            http = HttpStreams(setup.url)
            stack.callback(http.close)
            setup.probe = http_probe(
                http, setup.model, tokens, tag=setup.name, headers=setup.headers
            )


async def _measured(
    run: Run, setup: Setup, phase: Phase, go: Callable[[Probe], Awaitable[Batch]]
) -> None:
    """One batch, with the CPU it cost the system, the mock and this process.

    The CPU is read ``--settle`` seconds after the batch, so work it left behind (the
    ledger catching up on usage events, connections closing) is counted with it.
    """
    assert setup.probe is not None
    cpu, upstream, client = setup.cpu_seconds(), run.mock.cpu_seconds(), time.process_time()
    batch = await go(setup.probe)
    await anyio.sleep(run.args.settle)
    phase.cpu_s += setup.cpu_seconds() - cpu
    phase.upstream_cpu_s += run.mock.cpu_seconds() - upstream
    phase.client_cpu_s += time.process_time() - client
    phase.samples += batch.samples
    phase.elapsed_s += batch.elapsed_s


async def _warm_up(run: Run) -> None:
    """Discarded requests; a system that answers none of them is dropped."""
    for setup in list(run.setups):
        assert setup.probe is not None
        batch = await closed_loop(
            setup.probe, concurrency=8, requests=run.args.warmup, numbers=run.numbers
        )
        if not batch.ok:
            run.setups.remove(setup)
            first = batch.errors[0] if batch.errors else "no answer"
            run.notes.append(f"{setup.name} dropped: every warm-up request failed ({first})")
        elif batch.errors:
            run.notes.append(
                f"{setup.name}: {len(batch.errors)} warm-up errors ({batch.errors[0]})"
            )


async def _round(run: Run, order: list[Setup]) -> None:
    args = run.args
    for setup in order:
        await _measured(
            run,
            setup,
            setup.result.sequential,
            lambda p: closed_loop(p, concurrency=1, requests=args.sequential, numbers=run.numbers),
        )
    for setup in order:
        await _measured(
            run,
            setup,
            setup.result.saturation,
            lambda p: closed_loop(
                p, concurrency=args.concurrency, duration_s=args.seconds, numbers=run.numbers
            ),
        )
    if args.open_rate > 0:
        for setup in order:
            await _measured(
                run,
                setup,
                setup.result.open_loop,
                lambda p: open_loop(
                    p, rate=args.open_rate, duration_s=args.open_seconds, numbers=run.numbers
                ),
            )


async def _measure(run: Run) -> None:
    async with AsyncExitStack() as stack:
        await _open_probes(run, stack)
        await _warm_up(run)
        if "direct" not in {s.name for s in run.setups}:
            return
        for r in range(run.args.rounds):
            started = time.monotonic()
            shift = r % len(run.setups)
            order = run.setups[shift:] + run.setups[:shift]
            await _round(run, order)
            took = time.monotonic() - started
            load = load_average()[0]
            print(f"round {r + 1}/{run.args.rounds}: {took:.0f} s, load {load:.2f}", flush=True)
    for setup in run.setups:
        setup.result.peak_rss_kb = _peak_rss(setup.procs)


def _peak_rss(procs: list[Proc]) -> dict[str, int]:
    peak: dict[str, int] = {}
    for proc in procs:
        peak.update(proc.memory_kb("VmHWM"))
    return peak


# --- reporting --------------------------------------------------------------------------


def _report(run: Run, started: datetime.datetime, load_before: tuple[float, ...]) -> dict[str, Any]:
    args = run.args
    results = {s.name: s.result for s in run.setups}
    checked = verdicts(results)
    load_after = load_average()
    print()
    print(
        f"{args.tokens} streamed tokens per answer, mock TTFT {args.ttft_ms:g} ms, "
        f"inter-token {args.token_delay_ms:g} ms; {os.cpu_count()} cores; load average "
        f"{_load(load_before)} before, {_load(load_after)} after"
    )
    print(
        f"{args.rounds} interleaved rounds of, per system: {args.sequential} sequential "
        f"requests, {args.seconds:g} s at {args.concurrency} streams"
        + (
            f", {args.open_seconds:g} s open loop at {args.open_rate:g} req/s"
            if args.open_rate
            else ""
        )
        + f"; {args.warmup} warm-up requests discarded. Times in ms."
    )
    print()
    print(tables(results, concurrency=args.concurrency, open_rate=args.open_rate))
    print()
    standard = (args.tokens, args.ttft_ms, args.token_delay_ms) == (20, 0, 0)
    caveat = "" if standard else " - this run's mock differs, so they do not apply as such"
    print(f"targets (2 cores, mock answering 20 tokens with no delay{caveat}):")
    for verdict in checked:
        print(verdict.line())
    if args.omni_workers > 1:
        print()
        print(ab_table(results, f"omni-w{args.omni_workers}"))
    if args.ab_command:
        print()
        print(ab_table(results, args.ab_name))
    for note in run.notes:
        print(f"note: {note}")
    return {
        "started": started.isoformat(timespec="seconds"),
        "machine": {
            "cores": os.cpu_count(),
            "load_average_before": list(load_before),
            "load_average_after": list(load_after),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "systems": {
            name: {**result.summary(), "overhead_vs_direct": overhead(result, results["direct"])}
            for name, result in results.items()
        },
        "targets": [v.summary() for v in checked],
        "notes": run.notes,
    }


def _load(values: tuple[float, ...]) -> str:
    return " ".join(f"{v:.2f}" for v in values)


# --- the command ------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.driver", description=__doc__)
    add = parser.add_argument
    add("--json", type=Path, help="also write the results here, as JSON")
    add("--no-litellm", dest="litellm", action="store_false", help="skip LiteLLM")
    add("--rounds", type=int, default=5, help="interleaved rounds (default 5)")
    add("--sequential", type=int, default=100, help="sequential requests per system and round")
    add("--seconds", type=float, default=3.0, help="saturation seconds per system and round")
    add("--concurrency", type=int, default=32, help="streams in the saturation loop")
    add("--open-rate", type=float, default=50.0, help="open-loop requests/s (0: skip)")
    add("--open-seconds", type=float, default=2.0, help="open-loop seconds per system and round")
    add("--warmup", type=int, default=200, help="discarded requests per system")
    add("--settle", type=float, default=0.5, help="seconds after a batch before reading CPU")
    add("--tokens", type=int, default=20, help="tokens per answer")
    add("--ttft-ms", type=float, default=0.0, help="the mock's time to first token")
    add("--token-delay-ms", type=float, default=0.0, help="the mock's delay between tokens")
    add("--litellm-venv", type=Path, default=systems.DEFAULT_LITELLM_VENV)
    add("--litellm-spec", default=systems.LITELLM_SPEC, help="pip requirement for LiteLLM")
    add(
        "--omni-command",
        type=shlex.split,
        default=[sys.executable, "-m", "omnillm.cli"],
        help="how to run `omni` (default: this Python's omnillm.cli), e.g. another checkout's",
    )
    add(
        "--ab-command",
        type=shlex.split,
        help="also run a second `omni up` started with this command, interleaved with the "
        "first, and compare the two (an A/B test of a change)",
    )
    add("--ab-name", default="omni-b", help="the second build's name in the tables")
    add(
        "--omni-workers",
        type=int,
        default=2,
        help="also run `omni up --workers N` (systems omni-wN-nats, omni-wN-gateway) and "
        "compare it with one process (default 2; 1: skip)",
    )
    add("--work", type=Path, help="keep configs and logs here (default: a temporary folder)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    args.litellm_version = None
    exit_on_sigterm()
    started, load_before = datetime.datetime.now(datetime.UTC), load_average()
    with contextlib.ExitStack() as stack:
        work = work_dir(stack, args.work, "omnillm-bench-")
        try:
            run = _start_all(args, work, stack)
        except StartError as exc:
            print(f"bench: {exc}", file=sys.stderr)
            return 1
        print(f"systems: {', '.join(s.name for s in run.setups)}; logs in {work}", flush=True)
        anyio.run(_measure, run)
        if "direct" not in {s.name for s in run.setups}:
            print("bench: the direct calls to the mock failed; nothing to compare", file=sys.stderr)
            for note in run.notes:
                print(f"note: {note}", file=sys.stderr)
            return 1
        summary = _report(run, started, load_before)
    write_json(args.json, summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
