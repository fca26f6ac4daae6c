"""Soak: many requests through ``omni up``, its memory sampled all along.

Starts the mock upstream and ``omni up``, warms up, then sends ``--requests``
(default 100,000) through the gateway (``--path gateway``, default) or the NATS client
(``--path nats``) in a closed loop of ``--concurrency`` streams. Every ``--sample-s``
seconds it reads ``VmRSS`` of ``omni up`` and of its nats-server. Growth is the last
sample against the first steady one (the first taken after ``--settle`` of the
requests are done, once caches and pools have filled), and the largest sample
against it too. Prints a table and the target (< 10%); ``--json PATH`` writes it all::

    python -m bench.soak [--requests 100000] [--path gateway|nats] [--json PATH]
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import math
import shlex
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import anyio

from bench import systems
from bench.loadgen import Batch, HttpStreams, Probe, Sample, closed_loop, http_probe, nats_probe
from bench.procs import Proc, StartError, exit_on_sigterm, load_average, work_dir
from bench.report import Phase, Verdict, ms, table, write_json
from omnillm.client import Client

__all__ = ["main"]

GROWTH_LIMIT: Final = 0.10


@dataclass(frozen=True, slots=True)
class RssSample:
    at_s: float
    done: int
    rss_kb: dict[str, int]

    @property
    def total_kb(self) -> int:
        return sum(self.rss_kb.values())


@dataclass
class Soak:
    args: argparse.Namespace
    omni: Proc
    samples: list[RssSample] = field(default_factory=list)
    phase: Phase = field(default_factory=Phase)
    done: int = 0


def _rss(omni: Proc) -> dict[str, int]:
    return omni.memory_kb("VmRSS")


async def _sampler(soak: Soak, started: float) -> None:
    next_line = 0.0
    while True:
        sample = RssSample(time.monotonic() - started, soak.done, _rss(soak.omni))
        soak.samples.append(sample)
        if sample.at_s >= next_line:
            next_line = sample.at_s + 30
            print(
                f"  {sample.at_s:6.0f} s  {sample.done:>8} requests  "
                f"RSS {sample.total_kb / 1024:6.1f} MB  load {load_average()[0]:.2f}",
                flush=True,
            )
        await anyio.sleep(soak.args.sample_s)


def _counting(probe: Probe, soak: Soak) -> Probe:
    async def counted(i: int) -> Sample:
        sample = await probe(i)
        soak.done += 1
        return sample

    return counted


async def _run(soak: Soak, url: str, numbers: Iterator[int]) -> None:
    args = soak.args
    async with contextlib.AsyncExitStack() as stack:
        if args.path == "nats":
            client = await stack.enter_async_context(Client(url))
            probe = nats_probe(client, systems.MODEL, args.tokens, tag="soak")
        else:
            http = HttpStreams(url)
            stack.callback(http.close)
            probe = http_probe(http, systems.MODEL, args.tokens, tag="soak")
        await closed_loop(probe, concurrency=8, requests=args.warmup, numbers=numbers)
        counted = _counting(probe, soak)
        cpu, client_cpu = soak.omni.cpu_seconds(), time.process_time()
        started = time.monotonic()
        batch = Batch()
        async with anyio.create_task_group() as tg:
            tg.start_soon(_sampler, soak, started)
            batch = await closed_loop(
                counted, concurrency=args.concurrency, requests=args.requests, numbers=numbers
            )
            tg.cancel_scope.cancel()
        soak.samples.append(RssSample(time.monotonic() - started, soak.done, _rss(soak.omni)))
        soak.phase.samples, soak.phase.elapsed_s = batch.samples, batch.elapsed_s
        soak.phase.cpu_s = soak.omni.cpu_seconds() - cpu
        soak.phase.client_cpu_s = time.process_time() - client_cpu


def _growth(soak: Soak) -> dict[str, Any]:
    """First steady sample, last, max and growth, per process and in total (KiB)."""
    settle = soak.args.settle * soak.args.requests
    steady = [s for s in soak.samples if s.done >= settle] or soak.samples[-1:]
    first, last = steady[0], steady[-1]
    out: dict[str, Any] = {}
    names = sorted({n for s in steady for n in s.rss_kb})
    for name in [*names, "total"]:

        def kb(s: RssSample, name: str = name) -> int:
            return s.total_kb if name == "total" else s.rss_kb.get(name, 0)

        base, peak = kb(first), max(kb(s) for s in steady)
        out[name] = {
            "first_steady_mb": round(base / 1024, 1),
            "last_mb": round(kb(last) / 1024, 1),
            "max_mb": round(peak / 1024, 1),
            "growth": round((kb(last) - base) / base, 4) if base else None,
            "max_growth": round((peak - base) / base, 4) if base else None,
        }
    out["first_steady_at_requests"] = first.done
    return out


def _report(soak: Soak) -> dict[str, Any]:
    args, phase = soak.args, soak.phase
    summary = phase.summary()
    growth = _growth(soak)
    print()
    print(
        f"soak: {len(phase.samples)} requests via {args.path} at {args.concurrency} streams, "
        f"{args.tokens} tokens each, in {phase.elapsed_s:.0f} s: "
        f"{ms(summary['throughput_rps'], 0)} req/s, {phase.errors} errors, TTFT p50 "
        f"{ms(summary['ttft_ms']['p50'])} ms p99 {ms(summary['ttft_ms']['p99'])} ms, "
        f"CPU {ms(summary['cpu_ms_per_request'], 3)} ms/request (omni up + nats-server)"
    )
    print(
        f"RSS sampled every {args.sample_s:g} s ({len(soak.samples)} samples); first steady "
        f"sample after {growth['first_steady_at_requests']} requests"
    )
    rows = [
        [
            name,
            ms(g["first_steady_mb"], 1),
            ms(g["last_mb"], 1),
            ms(g["max_mb"], 1),
            _percent(g["growth"]),
            _percent(g["max_growth"]),
        ]
        for name, g in growth.items()
        if isinstance(g, dict)
    ]
    print(table(["RSS MB", "first steady", "last", "max", "growth", "max growth"], rows))
    verdicts = [
        _verdict(growth, "omni up", "soak RSS growth < 10%, omni up (the Python process)"),
        _verdict(growth, "total", "soak RSS growth < 10%, omni up + nats-server"),
    ]
    for verdict in verdicts:
        print(verdict.line())
    return {
        "settings": {k: v if not isinstance(v, Path) else str(v) for k, v in vars(args).items()},
        "result": summary,
        "rss": growth,
        "samples": [
            {"at_s": round(s.at_s, 2), "requests": s.done, "rss_kb": s.rss_kb} for s in soak.samples
        ],
        "targets": [v.summary() for v in verdicts],
    }


def _verdict(growth: dict[str, Any], name: str, target: str) -> Verdict:
    """Last against first steady sample; the largest sample's growth beside it."""
    row = growth.get(name)
    if not isinstance(row, dict) or row["growth"] is None:
        return Verdict(target, "not measured", None)
    measured = f"{_percent(row['growth'])} (max {_percent(row['max_growth'])})"
    return Verdict(target, measured, row["growth"] < GROWTH_LIMIT)


def _percent(value: float | None) -> str:
    return "-" if value is None or math.isnan(value) else f"{value * 100:+.1f}%"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__)
    add = parser.add_argument
    add("--requests", type=int, default=100_000)
    add("--path", choices=("gateway", "nats"), default="gateway")
    add("--concurrency", type=int, default=32)
    add("--sample-s", type=float, default=2.0, help="seconds between RSS samples")
    add("--settle", type=float, default=0.1, help="share of requests before the steady sample")
    add("--warmup", type=int, default=500)
    add("--tokens", type=int, default=20)
    add("--json", type=Path)
    add("--omni-command", type=shlex.split, default=[sys.executable, "-m", "omnillm.cli"])
    add("--work", type=Path, help="keep configs and logs here (default: a temporary folder)")
    args = parser.parse_args(argv)
    exit_on_sigterm()
    with contextlib.ExitStack() as stack:
        work = work_dir(stack, args.work, "omnillm-soak-")
        try:
            omni, nats_url, gateway_url = systems.start_mock_and_omni(
                stack, work, tokens=args.tokens, token_delay_ms=0, command=args.omni_command
            )
        except StartError as exc:
            print(f"bench: {exc}", file=sys.stderr)
            return 1
        print(f"soak: {args.requests} requests via {args.path}; logs in {work}", flush=True)
        soak = Soak(args, omni)
        url = nats_url if args.path == "nats" else gateway_url
        anyio.run(_run, soak, url, itertools.count())
        summary = _report(soak)
    write_json(args.json, summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
