"""What the supervisor refuses to start."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import msgspec
import pytest

from omnillm.config import Config, resolve
from omnillm.embedded import is_loopback
from omnillm.errors import ConfigError
from omnillm.supervisor import build_actors


def test_a_gateway_open_to_the_network_needs_keys() -> None:
    settings = resolve(msgspec.convert({"gateway": {"host": "0.0.0.0"}}, Config), env={})
    with pytest.raises(
        ConfigError, match=r"gateway.host '0.0.0.0' is reachable .* no gateway.keys"
    ):
        build_actors(None, settings, ("gateway",), [], None)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("::1", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("10.1.2.3", False),
    ],
)
def test_loopback_hosts_are_recognised(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


@pytest.mark.parametrize(
    "section",
    [
        {"limits": {"concurrency": 3, "max_request_bytes": 999}},
        {"reliability": {"workers": 3, "max_request_bytes": 999}},  # the old keys
    ],
)
def test_limits_reach_the_actors_that_enforce_them(section: dict[str, Any]) -> None:
    settings = resolve(msgspec.convert(section, Config), env={})
    bus = SimpleNamespace(replicas=lambda replicas: 1)
    boards = SimpleNamespace(health=None, breakers=None, dedup=None)
    kinds = ("classifier", "planner", "gateway")
    built = build_actors(bus, settings, kinds, [], boards)  # type: ignore[arg-type]
    found = {type(actor).__name__: actor for actor in built}
    assert found["ClassifierActor"].concurrency == found["PlannerActor"].concurrency == 3  # type: ignore[attr-defined]
    assert found["ClassifierActor"].max_request_bytes == 999  # type: ignore[attr-defined]
    assert found["GatewayActor"].max_request_bytes == 999  # type: ignore[attr-defined]
