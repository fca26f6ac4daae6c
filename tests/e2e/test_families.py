"""Every wire family end to end: ``omni up`` against the mock provider speaking that family.

Each provider row is a built-in one (anthropic, google, cohere, opencode, openai) pointed
at the mock by ``base_url``, with its key from an environment variable, so the test
also proves the key goes where it should and nowhere else.
"""

from __future__ import annotations

import json
import signal
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import nats
import pytest

from omnillm.testing.mock_provider import MockProvider, answer_tokens, count_prompt_tokens
from tests.conftest import client_for
from tests.e2e.test_cli import OMNI, read_lines, without_keys

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]

SECRET = "sk-e2e-do-not-leak-7f3a9c"
FAMILIES = {
    # provider row: (path on the mock, model the mock serves, key variable)
    "openai": ("/v1", "mock-small", "OPENAI_API_KEY"),
    "anthropic": ("/v1", "claude-mock", "ANTHROPIC_API_KEY"),
    "google": ("/v1beta", "gemini-mock", "GEMINI_API_KEY"),
    "cohere": ("/v2", "command-mock", "CO_API_KEY"),
    "opencode": ("/zen/v1", "big-pickle", "OPENCODE_API_KEY"),
}
ZEN_ROUTES = ["big-pickle", "gpt-mock", "claude-mock", "gemini-mock"]
"""One OpenCode model per route: chat completions, responses, messages, gemini."""


def config_for(provider: str, model: str, mock: MockProvider, data_dir: Path) -> str:
    path = FAMILIES[provider][0]
    return (
        f"nats: {{embedded: {{port: 0, data_dir: {data_dir}}}}}\n"
        "gateway: {port: 0}\n"
        f"log: {{level: debug}}\n"
        f"providers: {{{provider}: {{base_url: 'http://127.0.0.1:{mock.port}{path}'}}}}\n"
        f"models: [{{id: {provider}/{model}, tier: simple, capabilities: [tools],"
        f" price: {{input: 1, output: 2}}}}]\n"
    )


@asynccontextmanager
async def omni_up(directory: Path, env: dict[str, str]) -> AsyncIterator[str]:
    """``omni up`` in ``directory``, its log in ``directory/omni.log``; yields its NATS URL."""
    with (directory / "omni.log").open("wb") as log:
        process = await anyio.open_process([*OMNI, "up"], cwd=directory, env=env, stderr=log)
        try:
            with anyio.fail_after(30):
                line = await anext(read_lines(process))
            yield line.split("NATS ", 1)[1].split(" ", 1)[0]
            process.send_signal(signal.SIGTERM)
            with anyio.fail_after(20):
                assert await process.wait() == 0
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()


def environment(key_variable: str) -> dict[str, str]:
    return {**without_keys(), key_variable: SECRET}


async def tap(url: str, seen: list[bytes]) -> Any:
    """Record every message on the bus, as an auditor would."""
    nc = await nats.connect(url)

    async def record(msg: Any) -> None:
        seen.append(
            msg.subject.encode() + b" " + json.dumps(msg.headers or {}).encode() + b" " + msg.data
        )

    await nc.subscribe(">", cb=record)
    await nc.flush()
    return nc


@pytest.mark.parametrize("provider", list(FAMILIES))
async def test_a_request_through_nats_returns_the_exact_text_and_usage(
    provider: str, tmp_path: Path
) -> None:
    _, model, key_variable = FAMILIES[provider]
    prompt = f"Hello through {provider}"
    async with MockProvider() as mock:
        mock.settings.models = [model, *ZEN_ROUTES]
        mock.settings.api_key = SECRET
        (tmp_path / "omnillm.yaml").write_text(config_for(provider, model, mock, tmp_path / "d"))
        seen: list[bytes] = []
        async with omni_up(tmp_path, environment(key_variable)) as url:
            auditor = await tap(url, seen)
            async with client_for(url) as client:
                done = await client.complete(
                    {
                        "model": f"{provider}/{model}",
                        "messages": [{"role": "user", "content": prompt}],
                    }
                )
            await auditor.close()
    assert done.text == "".join(answer_tokens(prompt, 20))
    assert (done.provider, done.model, done.finish_reason) == (provider, model, "stop")
    assert done.usage.output_tokens == 20
    assert done.usage.input_tokens == count_prompt_tokens([{"role": "user", "content": prompt}])
    assert done.cost_usd == pytest.approx((done.usage.input_tokens * 1 + 20 * 2) / 1e6)
    assert seen and not any(SECRET.encode() in message for message in seen)
    log = (tmp_path / "omni.log").read_text()
    assert '"level":"debug"' in log.replace(" ", "") and SECRET not in log


@pytest.mark.parametrize("model", ZEN_ROUTES)
async def test_every_opencode_route_answers_through_the_router(model: str, tmp_path: Path) -> None:
    prompt = f"Zen route for {model}"
    async with MockProvider() as mock:
        mock.settings.models = ZEN_ROUTES
        mock.settings.api_key = SECRET
        (tmp_path / "omnillm.yaml").write_text(config_for("opencode", model, mock, tmp_path / "d"))
        async with omni_up(tmp_path, environment("OPENCODE_API_KEY")) as url:
            async with client_for(url) as client:
                done = await client.complete(
                    {
                        "model": f"opencode/{model}",
                        "messages": [{"role": "user", "content": prompt}],
                    }
                )
    assert done.text == "".join(answer_tokens(prompt, 20))
    assert done.usage.output_tokens == 20


async def test_a_refused_free_tier_falls_back_and_omni_providers_says_so(tmp_path: Path) -> None:
    async with MockProvider() as mock:
        mock.settings.models = ["big-pickle", "mock-small"]
        mock.settings.free_tier_refused = True
        (tmp_path / "omnillm.yaml").write_text(
            f"nats: {{embedded: {{port: 0, data_dir: {tmp_path / 'd'}}}}}\n"
            "gateway: {port: 0}\n"
            "reliability: {probe_interval_s: 0}\n"  # the user's request meets the refusal
            f"providers:\n"
            f"  opencode: {{base_url: 'http://127.0.0.1:{mock.port}/zen/v1', api_key: public}}\n"
            f"  local: {{family: openai, base_url: '{mock.base_url}', api_key: none}}\n"
            f"models:\n"
            f"  - {{id: opencode/big-pickle, tier: simple, price: {{input: 0, output: 0}},"
            f" fallbacks: [local/mock-small]}}\n"
            f"  - {{id: local/mock-small, tier: simple, price: {{input: 0.1, output: 0.1}}}}\n"
        )
        async with omni_up(tmp_path, without_keys()) as url:
            async with client_for(url) as client:
                request = {
                    "model": "opencode/big-pickle",
                    "messages": [{"role": "user", "content": "free?"}],
                }
                done = await client.complete(request)
                served = mock.requests_served
                again = await client.complete(request)
            listing = await anyio.run_process(
                [*OMNI, "providers", "--json", "--nats-url", url], cwd=tmp_path, check=False
            )
    assert (done.provider, done.attempts) == ("local", 2)
    # Once refused, the free model is no longer tried: one upstream call, one attempt.
    assert (again.provider, again.attempts) == ("local", 1)
    assert mock.requests_served == served + 1
    rows = {row["name"]: row for row in json.loads(listing.stdout)}
    assert rows["opencode"]["state"] == "refused free tier"
    assert "free tier can only be used from within OpenCode" in rows["opencode"]["reason"]
    assert rows["local"]["state"] == "live"
    assert rows["anthropic"]["state"] == "no key"
    assert rows["anthropic"]["reason"] == "set ANTHROPIC_API_KEY"


def test_omni_models_lists_the_catalog_with_prices(tmp_path: Path) -> None:
    result = subprocess.run(
        [*OMNI, "models", "--nats-url", "nats://127.0.0.1:1"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=without_keys(),
    )
    assert result.returncode == 0
    lines = result.stdout.splitlines()
    assert lines[0].split()[:4] == ["model", "tier", "context", "max"]
    assert any(line.startswith("openai/gpt-4.1-mini ") and " 0.4 " in line for line in lines)
    assert "showing the local config" in result.stderr
