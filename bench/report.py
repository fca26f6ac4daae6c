"""Results as numbers, tables and target verdicts (no I/O but ``print``-ready strings)."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.loadgen import Sample, percentile

__all__ = [
    "Phase",
    "SystemResult",
    "Verdict",
    "ab_table",
    "latency",
    "ms",
    "overhead",
    "ratio",
    "table",
    "tables",
    "verdicts",
    "write_json",
]


@dataclass(slots=True)
class Phase:
    """Every batch of one kind (sequential, saturation, open loop) of one system."""

    samples: list[Sample] = field(default_factory=list)
    elapsed_s: float = 0.0
    cpu_s: float = 0.0
    """CPU seconds of the system's own processes during the batches."""
    client_cpu_s: float = 0.0
    """CPU seconds of the benchmark process (the load generator) during the batches."""
    upstream_cpu_s: float = 0.0
    """CPU seconds of the mock upstream during the batches."""

    @property
    def ok(self) -> list[Sample]:
        return [s for s in self.samples if not s.error]

    @property
    def errors(self) -> int:
        return sum(1 for s in self.samples if s.error)

    def per_request_ms(self, seconds: float) -> float:
        return seconds * 1000 / len(self.samples) if self.samples else math.nan

    @property
    def throughput(self) -> float:
        return len(self.ok) / self.elapsed_s if self.elapsed_s else math.nan

    def summary(self) -> dict[str, Any]:
        ok = self.ok
        ttft = [s.ttft_s for s in ok if not math.isnan(s.ttft_s)]
        total = [s.total_s for s in ok]
        errors: dict[str, int] = {}
        for s in self.samples:
            if s.error:
                errors[s.error[:120]] = errors.get(s.error[:120], 0) + 1
        return {
            "requests": len(self.samples),
            "errors": self.errors,
            "error_kinds": errors,
            "elapsed_s": round(self.elapsed_s, 3),
            "throughput_rps": _round(self.throughput, 1),
            "ttft_ms": latency(ttft),
            "total_ms": latency(total),
            "cpu_ms_per_request": _round(self.per_request_ms(self.cpu_s), 3),
            "client_cpu_ms_per_request": _round(self.per_request_ms(self.client_cpu_s), 3),
            "upstream_cpu_ms_per_request": _round(self.per_request_ms(self.upstream_cpu_s), 3),
        }


@dataclass(slots=True)
class SystemResult:
    name: str
    description: str
    sequential: Phase = field(default_factory=Phase)
    saturation: Phase = field(default_factory=Phase)
    open_loop: Phase = field(default_factory=Phase)
    peak_rss_kb: dict[str, int] = field(default_factory=dict)
    """VmHWM by process (name: KiB)."""

    @property
    def peak_rss_mb(self) -> float:
        return sum(self.peak_rss_kb.values()) / 1024 if self.peak_rss_kb else math.nan

    @property
    def errors(self) -> int:
        return self.sequential.errors + self.saturation.errors + self.open_loop.errors

    def summary(self) -> dict[str, Any]:
        return {
            "description": self.description,
            "sequential": self.sequential.summary(),
            "saturation": self.saturation.summary(),
            "open_loop": self.open_loop.summary(),
            "errors": self.errors,
            "peak_rss_mb": _round(self.peak_rss_mb, 1),
            "peak_rss_kb_by_process": self.peak_rss_kb,
        }


@dataclass(frozen=True, slots=True)
class Verdict:
    target: str
    measured: str
    passed: bool | None
    """None: not measured (the reason is in ``measured``)."""

    def line(self) -> str:
        mark = {True: "PASS", False: "FAIL", None: "n/a "}[self.passed]
        return f"  {mark}  {self.target:<58} {self.measured}"

    def summary(self) -> dict[str, Any]:
        return {"target": self.target, "measured": self.measured, "pass": self.passed}


def _round(value: float, digits: int) -> float | None:
    return None if math.isnan(value) else round(value, digits)


def latency(values: list[float]) -> dict[str, float | None]:
    """p50, p90, p99 and max in milliseconds."""
    return {
        "p50": _round(percentile(values, 50) * 1000, 3),
        "p90": _round(percentile(values, 90) * 1000, 3),
        "p99": _round(percentile(values, 99) * 1000, 3),
        "max": _round(max(values) * 1000, 3) if values else None,
    }


def ms(value: float | None, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f}"


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned first column, right-aligned the rest."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = []
    for row in [header, *rows]:
        cells = [
            str(c).ljust(w) if i == 0 else str(c).rjust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells))
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def overhead(result: SystemResult, direct: SystemResult) -> dict[str, float | None]:
    """Sequential percentiles minus the direct call's, in ms."""
    seq, base = result.sequential.summary(), direct.sequential.summary()

    def minus(kind: str, q: str) -> float | None:
        a, b = seq[kind][q], base[kind][q]
        return None if a is None or b is None else round(a - b, 3)

    return {
        "ttft_p50_ms": minus("ttft_ms", "p50"),
        "ttft_p99_ms": minus("ttft_ms", "p99"),
        "total_p50_ms": minus("total_ms", "p50"),
        "total_p99_ms": minus("total_ms", "p99"),
    }


def tables(results: dict[str, SystemResult], *, concurrency: int, open_rate: float) -> str:
    """The sequential table and the under-load table."""
    direct = results["direct"]
    seq_rows = []
    for name, result in results.items():
        s = result.sequential.summary()
        o = overhead(result, direct)
        seq_rows.append(
            [
                name,
                str(s["requests"]),
                ms(s["ttft_ms"]["p50"]),
                ms(s["ttft_ms"]["p99"]),
                ms(o["ttft_p50_ms"]),
                ms(o["ttft_p99_ms"]),
                ms(s["total_ms"]["p50"]),
                ms(o["total_p50_ms"]),
                ms(o["total_p99_ms"]),
                ms(s["cpu_ms_per_request"], 3),
            ]
        )
    seq = table(
        [
            "sequential",
            "n",
            "TTFT p50",
            "p99",
            "TTFT ovh p50",
            "p99",
            "total p50",
            "total ovh p50",
            "p99",
            "CPU ms/req",
        ],
        seq_rows,
    )
    load_rows = []
    for name, result in results.items():
        sat, opn = result.saturation.summary(), result.open_loop.summary()
        load_rows.append(
            [
                name,
                ms(sat["throughput_rps"], 0),
                ms(sat["ttft_ms"]["p50"]),
                ms(sat["ttft_ms"]["p99"]),
                ms(opn["ttft_ms"]["p50"]),
                ms(opn["ttft_ms"]["p99"]),
                str(result.errors),
                ms(sat["cpu_ms_per_request"], 3),
                ms(sat["client_cpu_ms_per_request"], 3),
                ms(sat["upstream_cpu_ms_per_request"], 3),
                ms(result.peak_rss_mb, 1),
            ]
        )
    c, rate = concurrency, f"{open_rate:g}/s"
    load = table(
        [
            "under load",
            f"req/s @{c}",
            f"TTFT p50 @{c}",
            "p99",
            f"TTFT p50 @{rate}",
            "p99",
            "errors",
            f"CPU ms/req @{c}",
            "client CPU",
            "mock CPU",
            "peak RSS MB",
        ],
        load_rows,
    )
    return f"{seq}\n\n{load}"


def ab_table(results: dict[str, SystemResult], name: str) -> str:
    """Each path of the B build against the same path of the A build (``omni``)."""
    direct = results["direct"]
    rows = []
    for path in ("nats", "gateway"):
        a, b = results.get(f"omni-{path}"), results.get(f"{name}-{path}")
        if a is None or b is None:
            continue
        oa, ob = overhead(a, direct), overhead(b, direct)
        cpu_a = a.saturation.per_request_ms(a.saturation.cpu_s)
        cpu_b = b.saturation.per_request_ms(b.saturation.cpu_s)
        rows.append(
            [
                path,
                f"{ms(oa['ttft_p50_ms'])} -> {ms(ob['ttft_p50_ms'])}",
                f"{ms(oa['total_p50_ms'])} -> {ms(ob['total_p50_ms'])}",
                f"{a.saturation.throughput:.0f} -> {b.saturation.throughput:.0f}"
                f" ({ratio(b.saturation.throughput, a.saturation.throughput):.2f}x)",
                f"{cpu_a:.3f} -> {cpu_b:.3f} ({ratio(cpu_b, cpu_a):.2f}x)",
            ]
        )
    header = [f"omni -> {name}", "TTFT ovh p50", "total ovh p50", "req/s @32", "CPU ms/req @32"]
    return table(header, rows)


def ratio(a: float, b: float) -> float:
    return a / b if b and not math.isnan(a) and not math.isnan(b) else math.nan


def verdicts(results: dict[str, SystemResult]) -> list[Verdict]:
    """The issue's targets against a run's results (soak growth is `bench.soak`'s)."""
    direct = results["direct"]
    verdicts: list[Verdict] = []

    def check(target: str, value: float, limit: float, unit: str, *, above: bool = False) -> None:
        if math.isnan(value):
            verdicts.append(Verdict(target, "not measured", None))
            return
        passed = value >= limit if above else value < limit
        verdicts.append(Verdict(target, f"{value:.2f}{unit}", passed))

    def ttft_overhead(name: str) -> float:
        if name not in results:
            return math.nan
        value = overhead(results[name], direct)["ttft_p50_ms"]
        return math.nan if value is None else value

    def rps(name: str) -> float:
        return results[name].saturation.throughput if name in results else math.nan

    def cpu(name: str) -> float:
        if name not in results:
            return math.nan
        return results[name].saturation.per_request_ms(results[name].saturation.cpu_s)

    check("gateway TTFT overhead p50 < 3 ms (sequential)", ttft_overhead("omni-gateway"), 3, " ms")
    check("NATS client TTFT overhead p50 < 2 ms (sequential)", ttft_overhead("omni-nats"), 2, " ms")
    check("CPU/request < 3 ms, gateway path (omni up + nats-server)", cpu("omni-gateway"), 3, " ms")
    check("CPU/request < 3 ms, NATS path (omni up + nats-server)", cpu("omni-nats"), 3, " ms")
    several = sorted(k for k in results if k.startswith("omni-w") and k.endswith("-gateway"))
    for name in ["omni-gateway", *several]:
        how = (
            f"gateway, --workers {name[len('omni-w') : -len('-gateway')]}"
            if name in several
            else "gateway"
        )
        for yardstick, limit, times in (
            ("litellm", 20, "20x LiteLLM's"),
            ("passthrough", 0.25, "1/4 of the pass-through's"),
        ):
            target = f"throughput @32 >= {times} ({how})"
            check(target, ratio(rps(name), rps(yardstick)), limit, "x", above=True)
    omni = results.get("omni-gateway")
    peak = omni.peak_rss_mb if omni else math.nan
    check("peak RSS of omni up (+ nats-server) under load < 150 MB", peak, 150, " MB")
    if omni and not math.isnan(peak):
        parts = ", ".join(f"{k} {v / 1024:.1f}" for k, v in omni.peak_rss_kb.items())
        verdicts[-1] = Verdict(verdicts[-1].target, f"{peak:.1f} MB ({parts})", peak < 150)
    verdicts.append(Verdict("soak RSS growth < 10%", "run `python -m bench.soak`", None))
    return verdicts


def write_json(path: Path | None, summary: Any) -> None:
    """``summary`` as indented JSON at ``path`` (folders made), if a path was asked for."""
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"wrote {path}")
