"""The ledger as a user relies on it: down while traffic flows, then exact; omni cost/stats."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import nats
import nats.js.errors
import pytest

from omnillm.actors.ledger.actor import CONSUMER
from omnillm.bus.usage import STREAM
from omnillm.client import Completion
from omnillm.config import load_config, resolve
from omnillm.costs import fetch_stats
from omnillm.embedded import EmbeddedNats
from omnillm.testing.mock_provider import MockProvider
from tests.conftest import client_for, running
from tests.e2e.test_cli import OMNI, without_keys
from tests.e2e.test_processes import actor

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]


def write_config(directory: Path, mock: MockProvider) -> Path:
    path = directory / "omnillm.yaml"
    path.write_text(
        "log: {level: warning}\n"
        f"ledger: {{path: {directory / 'ledger.sqlite'}, reference_model: mock/mock-large}}\n"
        "reliability: {probe_interval_s: 0}\n"
        f"providers: {{mock: {{family: openai, base_url: '{mock.base_url}', api_key: none}}}}\n"
        "models:\n"
        "  - {id: mock/mock-small, tier: simple, price: {input: 0.5, output: 2}}\n"
        "  - {id: mock/mock-large, tier: reasoning, price: {input: 5, output: 20}}\n"
    )
    return path


async def ledger_requests(url: str, expected: int) -> int:
    """The ledger's request count once it reaches ``expected`` (or after 20 s, whatever it is)."""
    seen = -1
    for _ in range(200):
        seen = (await fetch_stats(url)).requests
        if seen >= expected:
            break
        await anyio.sleep(0.1)  # the ledger catches up on its own schedule; poll, bounded
    return seen


async def consumed_everything(url: str) -> None:
    """Until the ledger's durable consumer has nothing pending or unacknowledged."""
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        for _ in range(200):
            try:
                info = await js.consumer_info(STREAM, CONSUMER)
            except nats.js.errors.NotFoundError:
                info = None
            if info is not None and info.num_pending == 0 and info.num_ack_pending == 0:
                return
            await anyio.sleep(0.1)  # the ledger fetches on its own schedule; poll, bounded
        raise AssertionError("the ledger did not consume the stream within 20 s")
    finally:
        await nc.close()


async def test_a_ledger_that_was_down_catches_up_exactly_and_never_counts_twice(
    nats_server: EmbeddedNats, mock_provider: MockProvider, tmp_path: Path
) -> None:
    settings = resolve(load_config(write_config(tmp_path, mock_provider)), env={})
    url = nats_server.url
    async with actor(tmp_path, "ledger", "--nats-url", url) as first:
        first.kill()  # the ledger dies (SIGKILL) before the traffic
        await first.wait()
    answers: list[Completion] = []
    async with running(settings, url):
        async with client_for(url) as client:

            async def one(i: int) -> None:
                answers.append(
                    await client.complete(
                        {"messages": [{"role": "user", "content": f"count me {i}"}]}
                    )
                )

            async with anyio.create_task_group() as tg:
                for i in range(200):
                    tg.start_soon(one, i)
    spent = sum(a.cost_usd for a in answers)
    output = sum(a.usage.output_tokens for a in answers)

    async with actor(tmp_path, "ledger", "--nats-url", url):
        assert await ledger_requests(url, 200) == 200
        stats = await fetch_stats(url)
    assert stats.cost_usd == pytest.approx(spent, abs=1e-9)
    assert stats.output_tokens == output == 200 * 20
    assert stats.errors == 0

    nc = await nats.connect(url)  # force a full redelivery: a fresh durable consumer
    try:
        await nc.jetstream().delete_consumer(STREAM, CONSUMER)
    finally:
        await nc.close()
    async with actor(tmp_path, "ledger", "--nats-url", url):
        await consumed_everything(url)  # all 200 events delivered again and acked
        again = await fetch_stats(url)
    assert again.requests == 200  # re-read, nothing added
    assert again.cost_usd == pytest.approx(spent, abs=1e-9)


async def test_omni_cost_and_stats_against_a_running_router(
    mock_provider: MockProvider, tmp_path: Path
) -> None:
    write_config(tmp_path, mock_provider)
    (tmp_path / "omnillm.yaml").write_text(
        (tmp_path / "omnillm.yaml").read_text()
        + "nats: {embedded: {port: 0}}\ngateway: {port: 0}\n"
    )
    from tests.e2e.test_families import omni_up

    async with omni_up(tmp_path, without_keys()) as url:
        async with client_for(url) as client:
            answers = [
                await client.complete({"messages": [{"role": "user", "content": f"hi {i}"}]})
                for i in range(5)
            ]
        assert await ledger_requests(url, 5) == 5

        async def omni(*args: str) -> Any:
            result = await anyio.run_process(
                [*OMNI, *args, "--json", "--nats-url", url], cwd=tmp_path, check=False
            )
            assert result.returncode == 0, result.stderr
            return json.loads(result.stdout)

        by_model = await omni("cost", "--by", "model")
        stats = await omni("stats")
        table = await anyio.run_process(
            [*OMNI, "cost", "--nats-url", url], cwd=tmp_path, check=False
        )
        readable = await anyio.run_process(
            [*OMNI, "stats", "--nats-url", url], cwd=tmp_path, check=False
        )
    spent = sum(a.cost_usd for a in answers)
    [row] = by_model
    assert (row["group"], row["requests"]) == ("mock/mock-small", 5)
    assert row["cost_usd"] == pytest.approx(spent, abs=1e-9)
    assert stats["requests"] == 5 and stats["reference_model"] == "mock/mock-large"
    assert stats["savings_usd"] == pytest.approx(stats["reference_cost_usd"] - spent, abs=1e-9)
    assert stats["savings_usd"] > 0  # the large model costs ten times as much
    assert "mock" in table.stdout.decode()
    shown = readable.stdout.decode()
    assert "real/estimated" in shown and "mock" in shown  # the estimate's error is reported
