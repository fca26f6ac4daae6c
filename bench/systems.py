"""Starting the systems under test, each in its own processes, all against one mock.

- the mock upstream (:mod:`bench.mock_upstream`);
- OmniLLM: ``omni up`` with a custom openai-family provider ``mock`` whose base URL is
  the mock, the model ``mock/bench`` pinned by name, the gateway and the embedded
  nats-server on free ports, the ledger and NATS data in the run's temporary folder
  (and a second one with ``--workers N``, to compare);
- the bare pass-through proxy (:mod:`bench.passthrough`);
- LiteLLM's proxy, from a throwaway virtual environment this module creates
  (``pip install 'litellm[proxy]'``; never a dependency of OmniLLM), one worker,
  its default settings, with the mock as an openai-compatible model.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from bench.procs import Proc, StartError, free_port, wait_http

__all__ = [
    "DEFAULT_LITELLM_VENV",
    "LITELLM_SPEC",
    "MODEL",
    "ensure_litellm",
    "litellm_version",
    "start_litellm",
    "start_mock",
    "start_mock_and_omni",
    "start_omni",
    "start_passthrough",
]

MODEL: Final = "mock/bench"
"""The model every routed request names: OmniLLM's pinned catalog id, LiteLLM's model_name."""
UPSTREAM_MODEL: Final = "bench"
LITELLM_SPEC: Final = "litellm[proxy]"
DEFAULT_LITELLM_VENV: Final = (
    Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    / "omnillm-bench"
    / "litellm-venv"
)
_START_S: Final = 60.0
_LITELLM_START_S: Final = 180.0
_INSTALL_S: Final = 1200.0


def start_mock(
    work: Path, *, tokens: int, ttft_ms: float, token_delay_ms: float
) -> tuple[Proc, str]:
    """The mock upstream; returns it and its base URL (``http://127.0.0.1:P/v1``)."""
    args = [sys.executable, "-m", "bench.mock_upstream", "--port", "0", "--tokens", str(tokens)]
    args += ["--ttft-ms", str(ttft_ms), "--token-delay-ms", str(token_delay_ms)]
    proc = Proc("mock upstream", args, work / "mock.log")
    url = proc.wait_line(r"listening on (\S+)", _START_S).group(1)
    return proc, url


def start_passthrough(work: Path, mock_url: str) -> tuple[Proc, str]:
    origin = mock_url.removesuffix("/v1")
    args = [sys.executable, "-m", "bench.passthrough", "--upstream", origin, "--port", "0"]
    proc = Proc("passthrough", args, work / "passthrough.log")
    url = proc.wait_line(r"listening on (\S+)", _START_S).group(1)
    return proc, url


def omni_config(work: Path, mock_url: str) -> str:
    """``omni up``'s config: the mock as a custom provider, everything on free ports."""
    return (
        f"nats: {{embedded: {{port: 0, data_dir: '{work / 'nats'}'}}}}\n"
        "gateway: {port: 0}\n"
        f"data_dir: '{work / 'omnillm'}'\n"
        f"ledger: {{path: '{work / 'ledger.sqlite'}'}}\n"
        f"providers: {{mock: {{family: openai, base_url: '{mock_url}', api_key: none}}}}\n"
        f"models: [{{id: {MODEL}, tier: simple, price: {{input: 0.05, output: 0.2}}}}]\n"
    )


def start_omni(
    work: Path, mock_url: str, *, command: Sequence[str] | None = None, workers: int = 1
) -> tuple[Proc, str, str]:
    """``omni up``; returns it, its NATS URL and its gateway base URL, once it serves.

    ``command`` runs ``omni`` (default: this Python's ``omnillm.cli``); ``workers`` above
    1 adds ``--workers`` (its worker processes are the ``Proc``'s descendants)."""
    config = work / "omnillm.yaml"
    config.write_text(omni_config(work, mock_url))
    omni = list(command or [sys.executable, "-m", "omnillm.cli"])
    args = [*omni, "--config", str(config), "up"]
    if workers > 1:
        args += ["--workers", str(workers)]
    proc = Proc("omni up", args, work / "omni.log", cwd=work, this_checkout=False)
    line = proc.wait_line(r"OmniLLM up: NATS (\S+) .*OpenAI-compatible API: (\S+?)\.? ", _START_S)
    nats_url, gateway_url = line.group(1), line.group(2)
    wait_http(gateway_url.removesuffix("/v1") + "/healthz", _START_S, proc)
    return proc, nats_url, gateway_url


def start_mock_and_omni(
    stack: contextlib.ExitStack,
    work: Path,
    *,
    tokens: int,
    token_delay_ms: float,
    command: Sequence[str] | None = None,
) -> tuple[Proc, str, str]:
    """The mock (no time to first token) and ``omni up`` on it, each stopped when
    ``stack`` closes: ``omni up``, its NATS URL and its gateway base URL."""
    mock, mock_url = start_mock(work, tokens=tokens, ttft_ms=0, token_delay_ms=token_delay_ms)
    stack.callback(mock.stop)
    omni, nats_url, gateway_url = start_omni(work, mock_url, command=command)
    stack.callback(omni.stop)
    return omni, nats_url, gateway_url


def _litellm_bin(venv: Path) -> Path:
    return venv / "bin" / "litellm"


def ensure_litellm(venv: Path, spec: str = LITELLM_SPEC) -> Path:
    """LiteLLM's proxy in its own virtual environment, installed once (``spec`` is the
    pip requirement). Raises ``StartError`` with the install log's tail on failure."""
    stamp = venv / ".bench-installed"
    if _litellm_bin(venv).exists() and stamp.exists() and stamp.read_text() == spec:
        return _litellm_bin(venv)
    venv.parent.mkdir(parents=True, exist_ok=True)
    log = venv.parent / "litellm-install.log"
    print(f"installing {spec} into {venv} (once; log: {log}) ...", flush=True)
    base = getattr(sys, "_base_executable", sys.executable)
    steps = [
        [base, "-m", "venv", str(venv)],
        [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--upgrade", "pip"],
        [str(venv / "bin" / "python"), "-m", "pip", "install", spec],
    ]
    with log.open("w") as out:
        for step in steps:
            try:
                done = subprocess.run(
                    step, stdout=out, stderr=subprocess.STDOUT, timeout=_INSTALL_S
                )
            except (OSError, subprocess.TimeoutExpired) as exc:
                raise StartError(f"installing LiteLLM failed: {exc} (log: {log})") from exc
            if done.returncode != 0:
                tail = "\n".join(log.read_text(errors="replace").splitlines()[-8:])
                raise StartError(f"installing LiteLLM failed ({' '.join(step[-3:])}):\n{tail}")
    if not _litellm_bin(venv).exists():
        raise StartError(f"the LiteLLM install has no {_litellm_bin(venv)} (log: {log})")
    stamp.write_text(spec)
    return _litellm_bin(venv)


def litellm_version(venv: Path) -> str:
    python = venv / "bin" / "python"
    code = "import importlib.metadata as m; print(m.version('litellm'))"
    try:
        done = subprocess.run([str(python), "-c", code], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return done.stdout.strip() or "unknown"


def litellm_config(mock_url: str, master_key: str) -> str:
    return (
        f"general_settings: {{master_key: {master_key}}}\n"
        "model_list:\n"
        f"  - model_name: {MODEL}\n"
        "    litellm_params:\n"
        f"      model: openai/{UPSTREAM_MODEL}\n"
        f"      api_base: {mock_url}\n"
        "      api_key: none\n"
    )


def start_litellm(work: Path, litellm: Path, mock_url: str) -> tuple[Proc, str, str]:
    """LiteLLM's proxy, one worker, defaults otherwise; returns it, its base URL and
    the master key requests must carry (LiteLLM refuses to start without one).

    ``LITELLM_LOCAL_MODEL_COST_MAP`` keeps it from fetching its price list from the
    internet at start-up (this machine has no internet; the shipped copy is used).
    """
    master_key = "sk-bench-" + secrets.token_hex(16)
    config = work / "litellm.yaml"
    config.write_text(litellm_config(mock_url, master_key))
    port = free_port()
    args = [str(litellm), "--config", str(config), "--host", "127.0.0.1", "--port", str(port)]
    args += ["--num_workers", "1"]
    env = {"LITELLM_LOCAL_MODEL_COST_MAP": "True", "PYTHONPATH": ""}
    proc = Proc("litellm", args, work / "litellm.log", env=env, cwd=work)
    wait_http(f"http://127.0.0.1:{port}/health/liveliness", _LITELLM_START_S, proc)
    return proc, f"http://127.0.0.1:{port}/v1", master_key
