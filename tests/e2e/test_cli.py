"""``omni up``, ``omni chat`` and ``omni demo`` as a user runs them: real subprocesses."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import httpx
import pytest
from anyio.abc import Process
from anyio.streams.text import TextReceiveStream

from omnillm.bus.messages import Delta, Done
from omnillm.errors import OmniLLMError
from omnillm.testing.mock_provider import MockProvider, answer_tokens
from tests.conftest import client_for

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]

OMNI = [sys.executable, "-m", "omnillm.cli"]
UP_LINE = re.compile(
    r"OmniLLM up: NATS (nats://127\.0\.0\.1:(\d+)) \(embedded, data in (\S+)\); "
    r"providers: mock\."
)


def nats_servers_using(marker: str) -> list[int]:
    """Pids of nats-server processes whose command line mentions ``marker``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if "nats-server" in cmdline and marker in cmdline:
            found.append(int(entry.name))
    return found


def port_is_closed(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def without_keys() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}


def write_config(directory: Path, data_dir: Path, mock: MockProvider) -> None:
    (directory / "omnillm.yaml").write_text(
        f"nats:\n  embedded: {{port: 0, data_dir: {data_dir}}}\n"
        "gateway: {port: 0}\n"
        f"providers:\n"
        f"  mock: {{family: openai, base_url: '{mock.base_url}', api_key: none}}\n"
        f"models:\n"
        f"  - {{id: mock/mock-small, tier: simple, price: {{input: 0.05, output: 0.2}}}}\n"
    )


async def read_lines(process: Process) -> AsyncIterator[str]:
    assert process.stdout is not None
    buffer = ""
    async for text in TextReceiveStream(process.stdout):
        buffer += text
        while "\n" in buffer:
            line, buffer = buffer.split("\n", 1)
            yield line


async def test_omni_up_serves_chat_and_stops_cleanly_on_sigterm(
    tmp_path: Path, mock_provider: MockProvider
) -> None:
    data_dir = tmp_path / "data"
    write_config(tmp_path, data_dir, mock_provider)
    env = without_keys()
    process = await anyio.open_process([*OMNI, "up"], cwd=tmp_path, env=env)
    try:
        with anyio.fail_after(30):
            lines = read_lines(process)
            first = await anext(lines)
        match = UP_LINE.match(first)
        assert match, first
        url, port = match.group(1), int(match.group(2))
        assert nats_servers_using(str(data_dir))

        async with client_for(url) as client:
            completion = await client.complete(
                {"messages": [{"role": "user", "content": "from the sdk"}]}
            )
        assert completion.text == "".join(answer_tokens("from the sdk", 20))

        chat = await anyio.run_process(
            [*OMNI, "chat", "from the command line", "--nats-url", url], check=False, env=env
        )
        assert chat.returncode == 0, chat.stderr
        assert chat.stdout.decode().strip() == "".join(answer_tokens("from the command line", 20))
        summary = chat.stderr.decode()
        assert re.search(
            r"-- mock · mock-small · \d+ in / 20 out tokens · \$0\.0000\d+ · "
            r"first token \d+ ms · attempts 1 · stop",
            summary,
        ), summary

        process.send_signal(signal.SIGTERM)
        with anyio.fail_after(20):
            assert await process.wait() == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert port_is_closed(port)
    assert nats_servers_using(str(data_dir)) == []


async def test_sigterm_lets_an_answer_in_flight_finish_before_stopping(
    tmp_path: Path, mock_provider: MockProvider
) -> None:
    mock_provider.settings.token_delay_s = 0.02  # a 20-token answer takes about 0.4 s
    data_dir = tmp_path / "data"
    write_config(tmp_path, data_dir, mock_provider)
    process = await anyio.open_process([*OMNI, "up"], cwd=tmp_path, env=without_keys())
    try:
        with anyio.fail_after(30):
            match = UP_LINE.match(await anext(read_lines(process)))
        assert match
        text: list[str] = []
        async with client_for(match.group(1)) as client:
            request = {"messages": [{"role": "user", "content": "long answer"}]}
            async for frame in client.stream(request):
                if isinstance(frame, Delta):
                    if not text:
                        process.send_signal(signal.SIGTERM)
                    text.append(frame.text)
                last = frame
        assert isinstance(last, Done)
        assert "".join(text) == "".join(answer_tokens("long answer", 20))
        with anyio.fail_after(20):
            assert await process.wait() == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert nats_servers_using(str(data_dir)) == []


async def test_omni_chat_without_a_router_says_so(tmp_path: Path) -> None:
    from omnillm.embedded import EmbeddedNats

    with EmbeddedNats(tmp_path / "nats", port=0) as server:
        result = await anyio.run_process(
            [*OMNI, "chat", "anyone?", "--nats-url", server.url], check=False, cwd=tmp_path
        )
    assert result.returncode == 1
    assert "no_router: no router is running" in result.stderr.decode()


async def test_omni_chat_with_no_nats_server_names_the_url(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        free = sock.getsockname()[1]
    result = await anyio.run_process(
        [*OMNI, "chat", "anyone?", "--nats-url", f"nats://127.0.0.1:{free}"],
        check=False,
        cwd=tmp_path,
    )
    assert result.returncode == 1
    assert f"cannot reach NATS at nats://127.0.0.1:{free}" in result.stderr.decode()


async def test_omni_demo_answers_with_no_key_and_leaves_nothing_running(tmp_path: Path) -> None:
    question = "What does the demo show?"
    env = without_keys()
    result = await anyio.run_process(
        [*OMNI, "demo", question, "--tokens", "12", "--token-delay-ms", "1"],
        check=False,
        cwd=tmp_path,
        env=env,
    )
    out = result.stdout.decode()
    assert result.returncode == 0, result.stderr.decode()
    assert "".join(answer_tokens(question, 12)) in out
    assert "-- mock · mock-small" in result.stderr.decode()
    assert nats_servers_using("omnillm-demo-") == []


def test_broken_config_fails_at_start_naming_file_and_key(tmp_path: Path) -> None:
    (tmp_path / "omnillm.yaml").write_text(
        "models:\n  - id: mock/x\n    price: {input: cheap, output: 1}\n"
    )
    result = subprocess.run(
        [*OMNI, "up"], cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 2
    assert "omnillm.yaml: models[0].price.input: expected a number" in result.stderr


def test_omni_classify_prints_tier_needs_confidence_and_reasons(tmp_path: Path) -> None:
    result = subprocess.run(
        [*OMNI, "classify", "Prove that the square root of 2 is irrational."],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    lines = dict(line.split(None, 1) for line in result.stdout.splitlines() if " " in line)
    assert lines["tier"].strip() == "reasoning"
    assert "proof" in result.stdout
    as_json = subprocess.run(
        [*OMNI, "classify", "--json", "thanks!"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert '"tier":"simple"' in as_json.stdout


async def test_omni_up_serves_metrics_and_omni_tap_shows_the_traffic(
    tmp_path: Path, mock_provider: MockProvider
) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    write_config(tmp_path, tmp_path / "data", mock_provider)
    process = await anyio.open_process(
        [*OMNI, "up", "--metrics-port", "0"], cwd=tmp_path, env=without_keys()
    )
    try:
        with anyio.fail_after(30):
            line = await anext(read_lines(process))
        url = line.split("NATS ", 1)[1].split(" ", 1)[0]
        found = re.search(r"Metrics: (http://\S+/metrics)\.", line)
        api = re.search(r"OpenAI-compatible API: (http://\S+)/v1\.", line)
        assert found and api, line
        metrics_url = found.group(1)
        tap = await anyio.open_process(
            [*OMNI, "tap", "--nats-url", url], cwd=tmp_path, env=without_keys()
        )
        try:
            assert tap.stderr is not None
            with anyio.fail_after(30):  # "tapping ..." once its subscription is live
                assert b"tapping omni.v1.>" in await tap.stderr.receive()
            async with client_for(url) as client:
                for i in range(3):
                    await client.complete({"messages": [{"role": "user", "content": f"q{i}"}]})
                unknown = {"model": "nobody/knows", "messages": [{"role": "user", "content": "x"}]}
                with pytest.raises(OmniLLMError):
                    await client.complete(unknown)
            seen = []
            with anyio.fail_after(10):
                async for tapped in read_lines(tap):
                    seen.append(tapped)
                    if "event.end" in tapped and "unknown_model" in tapped:
                        break
        finally:
            tap.terminate()
            await tap.wait()
        async with httpx.AsyncClient() as http:
            scraped = (await http.get(metrics_url)).text
            from_gateway = (await http.get(f"{api.group(1)}/metrics")).text
        process.send_signal(signal.SIGTERM)
        with anyio.fail_after(20):
            assert await process.wait() == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    families = {f.name: f for f in text_string_to_metric_families(scraped)}
    requests = {
        (s.labels["tier"], s.labels["outcome"]): s.value
        for s in families["omnillm_requests"].samples
        if s.name == "omnillm_requests_total"
    }
    assert requests[("simple", "ok")] == 3
    assert 'omnillm_requests_total{outcome="ok",tier="simple"} 3.0' in from_gateway
    assert requests[("none", "unknown_model")] == 1
    assert any("omni.v1.request" in t and "q0" in t for t in seen)
    assert any("event.route" in t and "mock/mock-small" in t for t in seen)


def test_omni_openclaw_install_twice_then_uninstall_leaves_the_users_file_as_it_was(
    tmp_path: Path,
) -> None:
    import shutil

    original = Path(__file__).parents[1] / "fixtures" / "openclaw" / "personal.json5"
    config = tmp_path / "openclaw.json"
    shutil.copy(original, config)

    def omni(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*OMNI, "openclaw", *args, "--config-path", str(config)],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env=without_keys(),
        )

    dry = omni("install", "--dry-run")
    assert dry.returncode == 0 and "+" in dry.stdout
    assert config.read_text() == original.read_text()  # a dry run writes nothing
    elsewhere = omni("install", "--dry-run", "--gateway-url", "http://10.0.0.5:4000/v1")
    assert "provider 'omnillm' at http://10.0.0.5:4000/v1" in elsewhere.stdout
    assert '+        baseUrl: "http://10.0.0.5:4000/v1",' in elsewhere.stdout
    first, second = omni("install"), omni("install")
    assert first.returncode == second.returncode == 0
    installed = config.read_text()
    assert '"omnillm"' in installed or "omnillm:" in installed
    assert "nothing to change" in second.stdout
    assert installed.count("openai-completions") >= 1
    for comment in (line for line in original.read_text().splitlines() if "//" in line):
        assert comment in installed  # the user's comments survive
    gone = omni("uninstall")
    assert gone.returncode == 0
    assert config.read_text() == original.read_text()
