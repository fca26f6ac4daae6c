"""The error registry: every code has one row and one class, and everything that maps a
code (the client's ``from_code``, the gateway's status and error JSON, the metrics'
labels) answers it as its row says."""

from __future__ import annotations

import importlib
import pkgutil
import re
import subprocess
import sys
from collections import defaultdict
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import cast

import pytest
from starlette.testclient import TestClient

import omnillm
import omnillm.actors
import omnillm.bus
import omnillm.providers
from omnillm.actors.gateway.actor import GatewayActor
from omnillm.actors.gateway.openai_in import error_body, error_status
from omnillm.bus.connection import Bus
from omnillm.bus.messages import ChatRequest, Error, Frame
from omnillm.client import Client
from omnillm.config import resolve
from omnillm.errors import CODES, CircuitOpen, OmniLLMError, from_code
from omnillm.metrics import Metrics
from omnillm.testing.demo import mock_config

ROOT = Path(__file__).resolve().parents[2]
CHAT = "/v1/chat/completions"
VALID = b'{"model": "auto", "messages": [{"role": "user", "content": "hi"}]}'


def every_error_class() -> list[type[OmniLLMError]]:
    """Every class of the tree, once every product module is imported (some are defined
    beside the code that raises them)."""
    for package in (omnillm, omnillm.actors, omnillm.bus, omnillm.providers):
        for module in pkgutil.walk_packages(package.__path__, f"{package.__name__}."):
            importlib.import_module(module.name)
    found, pending = [], [OmniLLMError]
    while pending:
        cls = pending.pop()
        found.append(cls)
        pending.extend(cls.__subclasses__())
    return [cls for cls in found if cls.__module__ != __name__]  # refused ones, until collected


def test_no_two_classes_declare_the_same_code_and_every_code_has_a_class() -> None:
    declared: dict[str, list[str]] = defaultdict(list)
    for cls in every_error_class():
        if "code" in vars(cls):
            declared[cls.code].append(cls.__qualname__)
    assert {code: names for code, names in declared.items() if len(names) > 1} == {}
    assert sorted(declared) == sorted(CODES)


@pytest.mark.parametrize("code", sorted(CODES))
def test_every_code_comes_back_from_the_bus_as_its_own_class(code: str) -> None:
    every_error_class()
    error = from_code(code, "it failed", provider="mock")
    assert error.code == code
    assert error.provider == "mock"
    assert error.message == ("internal: it failed" if code == "internal" else "it failed")


@pytest.mark.parametrize("code", sorted(CODES))
def test_the_gateway_answers_every_code_as_its_row_says(code: str) -> None:
    row = CODES[code]
    assert error_status(code) == row.openai_status
    body = error_body(code, "it failed")["error"]
    assert (body["type"], body["param"], body["code"]) == (row.openai_type, row.param, code)


@pytest.mark.parametrize("code", sorted(CODES))
def test_metrics_count_every_code_under_its_own_outcome(code: str) -> None:
    metrics = Metrics()
    metrics.request_done(None, code)
    labels = {"tier": "none", "outcome": code}
    assert metrics.registry.get_sample_value("omnillm_requests_total", labels) == 1


def test_a_code_this_version_does_not_know_is_internal_naming_it() -> None:
    error = from_code("from_a_newer_router", "it failed")
    assert (type(error), error.code) == (OmniLLMError, "internal")
    assert error.message == "from_a_newer_router: it failed"
    assert error_status("from_a_newer_router") == 502
    assert Metrics().outcome_label("from_a_newer_router") == "error"


def test_a_class_naming_a_code_with_no_row_or_another_class_s_code_is_refused() -> None:
    with pytest.raises(TypeError, match="'made_up' has no row"):

        class MadeUp(OmniLLMError):
            code = "made_up"

    with pytest.raises(TypeError, match=r"'circuit_open' is omnillm\.errors\.CircuitOpen's"):

        class SecondCircuitOpen(OmniLLMError):
            code = "circuit_open"

    assert type(from_code("circuit_open", "x")) is CircuitOpen


def test_a_module_run_with_python_m_and_imported_too_declares_its_code_once() -> None:
    """``omni up`` starts its workers with ``python -m omnillm.workers``: the module runs as
    ``__main__`` and again under its name, one class written once."""
    script = (
        "import runpy, sys\n"
        "sys.argv = ['omnillm.costs']\n"
        "runpy.run_module('omnillm.costs', run_name='__main__', alter_sys=True)\n"
        "import omnillm.costs\n"
        "from omnillm.errors import from_code\n"
        "print(from_code('no_ledger', 'm').code)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout == "no_ledger\n"


_SENT: tuple[re.Pattern[str], ...] = (
    re.compile(r'\bcode="(\w+)"'),  # Failure(code=...), Error(code=...)
    re.compile(r'\berror_(?:response|body)\(\s*"(\w+)"'),
    re.compile(r'\.error\(\s*"(\w+)"'),
)


def test_every_code_the_router_sends_is_rebuilt_by_a_class_of_omnillm_errors() -> None:
    """A code written as a literal where the router answers has its class in
    ``omnillm.errors``, so a client rebuilds it whatever else it imported."""
    sent: set[str] = set()
    for folder in ("actors", "bus", "omnillm"):
        for path in (ROOT / folder).rglob("*.py"):
            if "testing" not in path.parts:  # the mock upstream speaks its families' codes
                text = path.read_text()
                sent.update(code for pattern in _SENT for code in pattern.findall(text))
    assert {"busy", "no_router", "internal", "stream_error"} <= sent  # the scan finds them
    assert sent <= set(CODES)
    assert {code: type(from_code(code, "m")).__module__ for code in sent} == {
        code: "omnillm.errors" for code in sent
    }


def test_a_client_that_never_imported_the_caller_rebuilds_circuit_open_and_busy() -> None:
    script = (
        "import sys\n"
        "from omnillm.client import Client\n"
        "from omnillm.errors import from_code\n"
        "assert 'omnillm.actors.caller.actor' not in sys.modules\n"
        "for code in ('circuit_open', 'busy'):\n"
        "    error = from_code(code, 'm')\n"
        "    print(type(error).__name__, error.code)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.split("\n") == ["CircuitOpen circuit_open", "RouterBusy busy", ""]


class ErrorFrameClient:
    """A stand-in for the bus client: every request ends in one ``Error`` frame."""

    def __init__(self, code: str) -> None:
        self.code = code

    async def stream(self, request: ChatRequest) -> AsyncGenerator[Frame, None]:
        yield Error("rid1", 1, 0, code=self.code, message="mock/mock-small: no", provider="mock")


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(("code", "status"), [("circuit_open", 503), ("busy", 503)])
def test_an_error_frame_before_any_token_is_its_codes_http_status(
    code: str, status: int, stream: bool
) -> None:
    settings = resolve(mock_config("http://127.0.0.1:9/v1"), env={})
    gateway = GatewayActor(cast(Bus, None), settings, env={})
    gateway._client = cast(Client, ErrorFrameClient(code))
    body = VALID if not stream else VALID.replace(b"}]}", b'}], "stream": true}')
    with TestClient(gateway.app()) as client:
        response = client.post(CHAT, content=body, headers={"content-type": "application/json"})
    assert response.status_code == status
    assert response.json()["error"] == {
        "message": "mock/mock-small: no",
        "type": "api_error",
        "param": None,
        "code": code,
    }
