"""What the NATS path costs: time to first token through OmniLLM against calling the mock directly.

Three processes, as deployed on one machine: the mock provider, ``omni up`` (embedded
nats-server, classifier, planner, caller) and this client. The baseline is the same
client calling the mock directly over httpx on the aiohttp transport (what the caller
uses), measured in the same run. Run with ``make bench`` or::

    python -m bench.overhead [--requests 300] [--concurrency 32] [--tokens 20]
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio
import httpx
import orjson

from omnillm.bus.messages import Delta
from omnillm.client import Client
from omnillm.testing.mock_provider import answer_tokens

Probe = Callable[[int], Awaitable[tuple[float, float]]]
"""One request: returns (time to first token, time to the whole answer), in seconds."""


def start(args: list[str], pattern: str, cwd: Path) -> tuple[subprocess.Popen[str], str]:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    process = subprocess.Popen(args, cwd=cwd, env=env, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    line = process.stdout.readline()
    match = re.search(pattern, line)
    if not match:
        process.kill()
        raise SystemExit(f"could not start {args[2:]}: {line!r}")
    return process, match.group(1)


def direct_probe(http: httpx.AsyncClient, base_url: str) -> Probe:
    async def probe(i: int) -> tuple[float, float]:
        body = orjson.dumps(
            {
                "model": "mock-small",
                "stream": True,
                "stream_options": {"include_usage": True},
                "messages": [{"role": "user", "content": f"bench {i}"}],
            }
        )
        started = time.perf_counter()
        first = 0.0
        headers = {"content-type": "application/json"}
        url = f"{base_url}/chat/completions"
        async with http.stream("POST", url, content=body, headers=headers) as response:
            async for chunk in response.aiter_raw():
                if not first and b'"content":"' in chunk.replace(b'"content":""', b""):
                    first = time.perf_counter()
        return first - started, time.perf_counter() - started

    return probe


def routed_probe(client: Client, tokens: int) -> Probe:
    async def probe(i: int) -> tuple[float, float]:
        prompt = f"bench {i}"
        request = {"model": "mock/mock-small", "messages": [{"role": "user", "content": prompt}]}
        started = time.perf_counter()
        first = 0.0
        text = []
        async for frame in client.stream(request):
            if isinstance(frame, Delta):
                first = first or time.perf_counter()
                text.append(frame.text)
        if "".join(text) != "".join(answer_tokens(prompt, tokens)):
            raise SystemExit(f"request {i}: wrong answer through OmniLLM")
        return first - started, time.perf_counter() - started

    return probe


async def measure(probe: Probe, requests: int, concurrency: int) -> list[tuple[float, float]]:
    results: list[tuple[float, float]] = []
    counter = iter(range(requests))

    async def worker() -> None:
        for i in counter:
            results.append(await probe(i))

    async with anyio.create_task_group() as tg:
        for _ in range(concurrency):
            tg.start_soon(worker)
    return results


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))] * 1000


async def run(args: argparse.Namespace, mock_url: str, nats_url: str) -> None:
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    from httpx_aiohttp import AiohttpTransport

    http = httpx.AsyncClient(transport=AiohttpTransport(limits=limits), trust_env=False)
    async with http, Client(nats_url) as client:
        direct, routed = direct_probe(http, mock_url), routed_probe(client, args.tokens)
        await measure(direct, 50, 4)  # warm up connections and code paths
        await measure(routed, 50, 4)
        print(f"{args.tokens} streamed tokens per answer, {os.cpu_count()} cores")
        header = f"{'':<24}{'direct p50':>11}{'p99':>8}{'omni p50':>10}{'p99':>8}"
        print(header + f"{'overhead p50':>14}{'p99':>8}{'omni/direct p50':>17}")
        for concurrency in (1, args.concurrency):
            started = time.perf_counter()
            base = await measure(direct, args.requests, concurrency)
            base_s = time.perf_counter() - started
            started = time.perf_counter()
            omni = await measure(routed, args.requests, concurrency)
            omni_s = time.perf_counter() - started
            report(f"TTFT, {concurrency} stream(s)", [b[0] for b in base], [o[0] for o in omni])
            report(f"full answer, {concurrency}", [b[1] for b in base], [o[1] for o in omni])
            print(
                f"{'':<24}throughput: direct {args.requests / base_s:.0f} req/s, "
                f"omni {args.requests / omni_s:.0f} req/s"
            )


def report(label: str, base: list[float], omni: list[float]) -> None:
    b50, b99, o50, o99 = pct(base, 50), pct(base, 99), pct(omni, 50), pct(omni, 99)
    print(
        f"{label:<24}{b50:>9.2f}ms{b99:>6.2f}ms{o50:>8.2f}ms{o99:>6.2f}ms"
        f"{o50 - b50:>12.2f}ms{o99 - b99:>6.2f}ms{o50 / b50:>16.1f}x"
    )
    assert statistics.fmean(omni) > 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--tokens", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="omnillm-bench-") as tmp:
        work = Path(tmp)
        mock, mock_url = start(
            [
                sys.executable,
                "-m",
                "omnillm.testing.mock_provider",
                "--port",
                "0",
                "--tokens",
                str(args.tokens),
            ],
            r"listening on (\S+)",
            work,
        )
        (work / "omnillm.yaml").write_text(
            f"nats: {{embedded: {{port: 0, data_dir: {work / 'nats'}}}}}\n"
            "gateway: {port: 0}\n"
            f"log: {{level: warning}}\n"
            f"providers: {{mock: {{family: openai, base_url: '{mock_url}', api_key: none}}}}\n"
            "models: [{id: mock/mock-small, tier: simple, price: {input: 0.05, output: 0.2}}]\n"
        )
        up, nats_url = start([sys.executable, "-m", "omnillm.cli", "up"], r"NATS (\S+) ", work)
        try:
            anyio.run(run, args, mock_url, nats_url)
        finally:
            for process in (up, mock):
                process.terminate()
                process.wait(30)


if __name__ == "__main__":
    main()
